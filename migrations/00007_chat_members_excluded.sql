-- +goose Up
-- A message no longer writes every other member's row. A member's unread count is derived instead:
-- the chat's last_seq minus the member's last_read_seq, less excluded_count, the messages above the
-- cursor that are not unread for that member (its own, and others' deleted ones). Seqs are gapless,
-- so that is exact. A message then writes its sender's row only; a deletion, a read and a join still
-- write the members they concern. Before, a message into a group of a thousand rewrote a thousand
-- rows, and a busy group's chats projection fell tens of thousands of events behind.
--
-- During a rolling deploy, binaries that predate this migration still read these tables: unread_count
-- stays, at 0 (so that a verify compares equal), and their chat reads keep working. Their projection
-- writes are refused, so a chats projection they still lead stops and retries until an instance of
-- this version leads, instead of applying events that excluded_count would not follow:
--   - their member inserts name no excluded_count, which has no default;
--   - their message inserts name no format, which has no default (the read model now keeps message.sent's
--     format);
--   - their unread_count updates (deletes, reads, messages) are refused by a trigger.
-- A later migration drops unread_count and the trigger.
ALTER TABLE chat_members ADD COLUMN excluded_count bigint NOT NULL DEFAULT 0;
UPDATE chat_members m SET excluded_count = c.last_seq - m.last_read_seq - m.unread_count, unread_count = 0
FROM chats c WHERE c.id = m.chat_id;
ALTER TABLE chat_members ALTER COLUMN excluded_count DROP DEFAULT;
ALTER TABLE chat_messages ADD COLUMN format text NOT NULL DEFAULT 'plain';
ALTER TABLE chat_messages ALTER COLUMN format DROP DEFAULT;

-- +goose StatementBegin
CREATE FUNCTION chat_members_refuse_unread_count() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'chat_members.unread_count is no longer kept (migration 7): this binary predates the schema; an instance of the current version takes over';
END
$$;
-- +goose StatementEnd
CREATE TRIGGER chat_members_refuse_unread_count BEFORE UPDATE OF unread_count ON chat_members
    FOR EACH ROW EXECUTE FUNCTION chat_members_refuse_unread_count();

-- +goose Down
DROP TRIGGER chat_members_refuse_unread_count ON chat_members;
DROP FUNCTION chat_members_refuse_unread_count();
ALTER TABLE chat_messages DROP COLUMN format;
UPDATE chat_members m SET unread_count = GREATEST(c.last_seq - m.last_read_seq - m.excluded_count, 0)
FROM chats c WHERE c.id = m.chat_id;
ALTER TABLE chat_members DROP COLUMN excluded_count;
