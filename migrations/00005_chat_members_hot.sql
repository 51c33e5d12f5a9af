-- +goose Up
-- A message no longer rewrites every member's row in an indexed column: the chat list orders by the
-- chat's own activity (a join, sorted per user), and a member row's per-message change (its unread
-- count) touches no indexed column, so it is a HOT update that page pruning reclaims without vacuum.
DROP INDEX chat_members_by_user;
ALTER TABLE chat_members DROP COLUMN last_activity_at;
CREATE INDEX chat_members_by_user ON chat_members (user_id, chat_id);
-- Room on each page for the new versions of HOT-updated rows.
ALTER TABLE chat_members SET (fillfactor = 70);

-- +goose Down
ALTER TABLE chat_members RESET (fillfactor);
DROP INDEX chat_members_by_user;
ALTER TABLE chat_members ADD COLUMN last_activity_at timestamptz NOT NULL DEFAULT now();
UPDATE chat_members m SET last_activity_at = c.last_activity_at FROM chats c WHERE c.id = m.chat_id;
CREATE INDEX chat_members_by_user ON chat_members (user_id, last_activity_at, chat_id);
