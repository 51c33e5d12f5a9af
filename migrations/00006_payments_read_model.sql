-- +goose Up
-- Read model of the payments projection. No foreign keys: the projection is the only writer, applies
-- the log in order, and replay truncates the three tables together.
CREATE TABLE payments (
    id                   uuid        PRIMARY KEY,
    user_id              uuid        NOT NULL,
    -- pending, completed, failed, partially_refunded, refunded (API.md).
    status               text        NOT NULL,
    amount_minor         bigint      NOT NULL,
    currency             text        NOT NULL,
    -- Completed refunds.
    refunded_minor       bigint      NOT NULL DEFAULT 0,
    -- Requested refunds the provider has not decided yet.
    pending_refund_minor bigint      NOT NULL DEFAULT 0,
    description          text        NOT NULL,
    failure_code         text,
    provider_payment_id  text,
    created_at           timestamptz NOT NULL,
    -- The time of the last event applied to the payment.
    updated_at           timestamptz NOT NULL
);
-- A user's payments, newest first: one keyset range of the index per page.
CREATE INDEX payments_by_user ON payments (user_id, created_at DESC, id DESC);

-- Every refund, so that its outcome (which carries no amount) is applied once, with its amount.
CREATE TABLE payment_refunds (
    id                 uuid        PRIMARY KEY,
    payment_id         uuid        NOT NULL,
    amount_minor       bigint      NOT NULL,
    -- pending, completed, failed.
    status             text        NOT NULL,
    failure_code       text,
    provider_refund_id text,
    requested_at       timestamptz NOT NULL,
    updated_at         timestamptz NOT NULL
);

-- The billing summary per user and currency, kept as payments complete and refunds complete: the
-- summary is one primary-key range however many payments the user made.
CREATE TABLE billing_summaries (
    user_id        uuid   NOT NULL,
    currency       text   NOT NULL,
    -- Completed payments (also those refunded later) and the sum of their amounts.
    payments_count bigint NOT NULL DEFAULT 0,
    paid_minor     bigint NOT NULL DEFAULT 0,
    -- Completed refunds.
    refunded_minor bigint NOT NULL DEFAULT 0,
    CONSTRAINT billing_summaries_pkey PRIMARY KEY (user_id, currency)
);

-- +goose Down
DROP TABLE billing_summaries;
DROP TABLE payment_refunds;
DROP TABLE payments;
