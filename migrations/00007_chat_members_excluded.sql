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
ALTER TABLE chat_members DROP COLUMN unread_count;

-- +goose Down
ALTER TABLE chat_members ADD COLUMN unread_count bigint NOT NULL DEFAULT 0;
UPDATE chat_members m SET unread_count = GREATEST(c.last_seq - m.last_read_seq - m.excluded_count, 0)
FROM chats c WHERE c.id = m.chat_id;
ALTER TABLE chat_members DROP COLUMN excluded_count;
