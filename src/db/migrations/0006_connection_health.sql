-- Connection lifecycle (CONTRACT §10): accounts, health fields, the
-- connection timeline, and receipts of verified provider webhooks.

ALTER TABLE connections ADD COLUMN accounts TEXT NOT NULL DEFAULT '[]';
ALTER TABLE connections ADD COLUMN access_expires_at INTEGER;
ALTER TABLE connections ADD COLUMN new_accounts_available INTEGER NOT NULL DEFAULT 0
    CHECK (new_accounts_available IN (0, 1));
ALTER TABLE connections ADD COLUMN last_checked_at INTEGER;
CREATE INDEX connections_external ON connections (provider, external_id);

CREATE TABLE connection_events (
    seq           INTEGER PRIMARY KEY,
    id            TEXT NOT NULL UNIQUE,
    connection_id TEXT NOT NULL REFERENCES connections (id),
    type          TEXT NOT NULL,
    at            INTEGER NOT NULL,
    detail        TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX connection_events_connection ON connection_events (connection_id, seq);

-- One row per verified inbound provider webhook (Plaid: SHA-256 of its JWT;
-- Teller: its `id`), so a replay or redelivery changes nothing twice.
CREATE TABLE provider_webhook_receipts (
    provider    TEXT NOT NULL,
    receipt     TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (provider, receipt)
);
CREATE INDEX provider_webhook_receipts_age ON provider_webhook_receipts (received_at);
