-- Webhook outbox, version 2: one row per message, written in the same
-- transaction as the state change it reports, so none is lost.

CREATE TABLE webhook_outbox (
    seq             INTEGER PRIMARY KEY,
    -- Standard Webhooks message id (`msg_…`), the same for every attempt.
    id              TEXT NOT NULL UNIQUE,
    event_type      TEXT NOT NULL,
    -- The exact JSON body, built once so every retry sends identical bytes.
    payload         TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    delivered_at    INTEGER,
    last_error      TEXT,
    dead_at         INTEGER
);

-- The worker's question: which undelivered, live messages are due now.
CREATE INDEX webhook_outbox_due ON webhook_outbox (next_attempt_at, seq)
    WHERE delivered_at IS NULL AND dead_at IS NULL;
