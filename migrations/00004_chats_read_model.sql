-- +goose Up
-- Read model of the chats projection. No foreign keys: the projection is the only writer, applies the
-- log in order, and replay truncates the three tables together.
CREATE TABLE chats (
    id               uuid        PRIMARY KEY,
    type             text        NOT NULL,
    title            text        NOT NULL,
    created_at       timestamptz NOT NULL,
    -- seq of the newest message, 0 before the first one.
    last_seq         bigint      NOT NULL DEFAULT 0,
    -- Creation, then the sent time of the newest message.
    last_activity_at timestamptz NOT NULL
);

-- One row per current member; a removed member's row is deleted, so the chat vanishes from its list.
CREATE TABLE chat_members (
    chat_id          uuid        NOT NULL,
    user_id          uuid        NOT NULL,
    role             text        NOT NULL,
    last_read_seq    bigint      NOT NULL DEFAULT 0,
    -- Non-deleted messages of others above last_read_seq.
    unread_count     bigint      NOT NULL DEFAULT 0,
    -- The chat's last_activity_at, copied to every member so a user's chat list is one index range.
    last_activity_at timestamptz NOT NULL,
    CONSTRAINT chat_members_pkey PRIMARY KEY (chat_id, user_id)
);
-- A user's chats, most recent activity first: a backward keyset scan on (last_activity_at, chat_id).
CREATE INDEX chat_members_by_user ON chat_members (user_id, last_activity_at, chat_id);

-- A chat's history; pages are primary-key range scans on (chat_id, seq).
CREATE TABLE chat_messages (
    chat_id       uuid        NOT NULL,
    seq           bigint      NOT NULL,
    id            uuid        NOT NULL,
    sender_id     uuid        NOT NULL,
    -- '' once deleted.
    text          text        NOT NULL,
    client_msg_id text,
    sent_at       timestamptz NOT NULL,
    edited_at     timestamptz,
    deleted       boolean     NOT NULL DEFAULT false,
    CONSTRAINT chat_messages_pkey PRIMARY KEY (chat_id, seq)
);
-- Lookup by message id.
CREATE UNIQUE INDEX chat_messages_id ON chat_messages (id);

-- +goose Down
DROP TABLE chat_messages;
DROP TABLE chat_members;
DROP TABLE chats;
