-- +goose Up
-- The event log is also the watermill-sql topic "events": the publisher inserts rows in the command's
-- transaction (the row is the outbox) and consumer groups read it in (transaction_id, offset) order, which
-- never skips a row committed late by a slow writer.
CREATE TABLE events (
    "offset"        BIGSERIAL,
    transaction_id  xid8        NOT NULL,
    event_id        uuid        NOT NULL,
    stream_id       uuid        NOT NULL,
    stream_type     text        NOT NULL,
    version         bigint      NOT NULL CHECK (version > 0),
    event_type      text        NOT NULL,
    schema_version  int         NOT NULL,
    occurred_at     timestamptz NOT NULL,
    payload         json        NOT NULL,
    metadata        json        NOT NULL,
    PRIMARY KEY (transaction_id, "offset"),
    -- Catches concurrent writers of one stream: the loser gets a unique violation, surfaced as a conflict.
    CONSTRAINT events_stream_version UNIQUE (stream_id, version)
);
-- No other index: every index costs each append, and readers go by position (primary key) or by
-- stream (the unique constraint). Filtering the log by type scans it in position order.

-- Offsets of the consumer groups (projections), in watermill-sql's default PostgreSQL offsets layout.
CREATE TABLE events_offsets (
    consumer_group                varchar(255) NOT NULL PRIMARY KEY,
    offset_acked                  bigint,
    last_processed_transaction_id xid8 NOT NULL
);

-- Aggregate snapshots: loading reads the snapshot plus the events after it, never the whole stream.
CREATE TABLE snapshots (
    stream_id      uuid        NOT NULL PRIMARY KEY,
    stream_type    text        NOT NULL,
    version        bigint      NOT NULL,
    schema_version int         NOT NULL,
    state          jsonb       NOT NULL,
    -- Log position of the snapshot's last event: what a command answering from it reflects.
    position_tx     xid8       NOT NULL,
    position_offset bigint     NOT NULL,
    taken_at       timestamptz NOT NULL DEFAULT now()
);

-- Write-side uniqueness (one account per email) claimed in the same transaction as the events that need it.
CREATE TABLE unique_claims (
    kind       text        NOT NULL,
    value      text        NOT NULL,
    stream_id  uuid        NOT NULL,
    claimed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, value)
);

-- +goose Down
DROP TABLE unique_claims;
DROP TABLE snapshots;
DROP TABLE events_offsets;
DROP TABLE events;
