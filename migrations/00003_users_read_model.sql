-- +goose Up
-- Read model of the users projection.
CREATE TABLE user_profiles (
    id           uuid        PRIMARY KEY,
    email        text        NOT NULL,
    display_name text        NOT NULL,
    -- lower(display_name) in the C collation: one btree serves both the prefix LIKE and the keyset order.
    name_key     text        COLLATE "C" NOT NULL,
    avatar_url   text,
    role         text        NOT NULL,
    created_at   timestamptz NOT NULL,
    login_count  bigint      NOT NULL DEFAULT 0
);
CREATE INDEX user_profiles_directory ON user_profiles (name_key, id);

-- +goose Down
DROP TABLE user_profiles;
