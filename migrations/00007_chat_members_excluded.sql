-- +goose Up
-- A message no longer writes every other member's row. A member's unread count is derived instead:
-- the chat's last_seq minus the member's last_read_seq, less excluded_count, the messages above the
-- cursor that are not unread for that member (its own, and others' deleted ones). Seqs are gapless,
-- so that is exact. A message then writes its sender's row only; a deletion, a read and a join still
-- write the members they concern. Before, a message into a group of a thousand rewrote a thousand
-- rows, and a busy group's chats projection fell tens of thousands of events behind.
ALTER TABLE chat_members ADD COLUMN excluded_count bigint NOT NULL DEFAULT 0;
UPDATE chat_members m SET excluded_count = c.last_seq - m.last_read_seq - m.unread_count
FROM chats c WHERE c.id = m.chat_id;

-- unread_count stays while a rolling deploy runs binaries that predate this migration: they still read
-- it (the counts as of the migration), so their chat reads keep working. Their writes are refused: a
-- chats projection led by such a binary stops and retries (logging this error) until an instance of
-- this version leads, rather than applying events that excluded_count would not follow. A binary of
-- this version never writes unread_count, and a later migration drops it with this trigger.
-- +goose StatementBegin
CREATE FUNCTION chat_members_refuse_unread_count() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' OR NEW.unread_count <> 0 THEN
        RAISE EXCEPTION 'chat_members.unread_count is no longer kept (migration 7): this binary predates the schema; an instance of the current version takes over';
    END IF;
    RETURN NEW;
END
$$;
-- +goose StatementEnd
CREATE TRIGGER chat_members_refuse_unread_count BEFORE INSERT OR UPDATE OF unread_count ON chat_members
    FOR EACH ROW EXECUTE FUNCTION chat_members_refuse_unread_count();

-- +goose Down
DROP TRIGGER chat_members_refuse_unread_count ON chat_members;
DROP FUNCTION chat_members_refuse_unread_count();
UPDATE chat_members m SET unread_count = GREATEST(c.last_seq - m.last_read_seq - m.excluded_count, 0)
FROM chats c WHERE c.id = m.chat_id;
ALTER TABLE chat_members DROP COLUMN excluded_count;
