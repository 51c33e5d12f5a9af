-- +goose Up
-- Server-side sessions. The cookie carries a random 256-bit id; only its SHA-256 is stored, so a leak of
-- this table yields no cookie that works. public_id names a session in listings and revocations.
-- user_id has no foreign key: users live in the event log and its projections, not in a table here.
CREATE TABLE sessions (
    token_hash          bytea       NOT NULL,
    public_id           uuid        NOT NULL,
    user_id             uuid        NOT NULL,
    role                text        NOT NULL,
    csrf_token          text        NOT NULL,
    created_at          timestamptz NOT NULL,
    last_seen_at        timestamptz NOT NULL,
    -- Capped at absolute_expires_at, so it is the moment the session ends unless it is used before.
    idle_expires_at     timestamptz NOT NULL,
    absolute_expires_at timestamptz NOT NULL,
    user_agent          text        NOT NULL DEFAULT '',
    ip                  inet,
    CONSTRAINT sessions_pkey PRIMARY KEY (token_hash),
    CONSTRAINT sessions_public_id UNIQUE (public_id),
    CONSTRAINT sessions_token_hash_len CHECK (octet_length(token_hash) = 32),
    CONSTRAINT sessions_expiry_order CHECK (idle_expires_at <= absolute_expires_at)
);
-- A user's sessions: listing, revoking all of them on password or role change.
CREATE INDEX sessions_user_created ON sessions (user_id, created_at);
-- Pruning expired sessions.
CREATE INDEX sessions_idle_expires_at ON sessions (idle_expires_at);

-- Failed (and in-flight) logins per email, for throttling. The email is stored as the SHA-256 of its
-- normalised form: the key has a fixed size whatever a client sends, and the table holds no addresses.
-- A row is written when an attempt is admitted (settled = false) and settled when it fails; a success
-- deletes the email's rows.
CREATE TABLE login_failures (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email_hash bytea       NOT NULL,
    failed_at  timestamptz NOT NULL,
    settled    boolean     NOT NULL DEFAULT false
);
-- Counting one email's attempts inside the window.
CREATE INDEX login_failures_email_failed_at ON login_failures (email_hash, failed_at);
-- Pruning rows older than the window across all emails.
CREATE INDEX login_failures_failed_at ON login_failures (failed_at);

-- +goose Down
DROP TABLE login_failures;
DROP TABLE sessions;
