-- Breadbox schema, version 1. Timestamps are unix seconds (UTC).

CREATE TABLE users (
    seq        INTEGER PRIMARY KEY,
    id         TEXT NOT NULL UNIQUE,
    short_id   TEXT NOT NULL UNIQUE,
    name       TEXT NOT NULL,
    email      TEXT,
    created_at INTEGER NOT NULL
);

CREATE TABLE api_keys (
    seq          INTEGER PRIMARY KEY,
    id           TEXT NOT NULL UNIQUE,
    short_id     TEXT NOT NULL UNIQUE,
    name         TEXT NOT NULL,
    scope        TEXT NOT NULL CHECK (scope IN ('read_only', 'full_access')),
    key_hash     TEXT NOT NULL UNIQUE,
    prefix       TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER,
    revoked_at   INTEGER
);

CREATE TABLE connections (
    seq              INTEGER PRIMARY KEY,
    id               TEXT NOT NULL UNIQUE,
    short_id         TEXT NOT NULL UNIQUE,
    user_id          TEXT NOT NULL REFERENCES users (id),
    provider         TEXT NOT NULL CHECK (provider IN ('plaid', 'teller')),
    institution_id   TEXT NOT NULL DEFAULT '',
    institution_name TEXT NOT NULL DEFAULT '',
    external_id      TEXT NOT NULL,
    credential       BLOB,
    status           TEXT NOT NULL
        CHECK (status IN ('active', 'pending_reauth', 'error', 'disconnected')),
    error_code       TEXT,
    error_message    TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);
CREATE INDEX connections_user ON connections (user_id, seq);

CREATE TABLE link_sessions (
    seq                   INTEGER PRIMARY KEY,
    id                    TEXT NOT NULL UNIQUE,
    short_id              TEXT NOT NULL UNIQUE,
    token_hash            TEXT NOT NULL UNIQUE,
    user_id               TEXT NOT NULL REFERENCES users (id),
    provider              TEXT NOT NULL DEFAULT '' CHECK (provider IN ('', 'plaid', 'teller')),
    action                TEXT NOT NULL CHECK (action IN ('link', 'relink')),
    connection_id         TEXT REFERENCES connections (id),
    single_use            INTEGER NOT NULL CHECK (single_use IN (0, 1)),
    redirect_url          TEXT NOT NULL DEFAULT '',
    label                 TEXT NOT NULL DEFAULT '',
    status                TEXT NOT NULL
        CHECK (status IN ('pending', 'active', 'completed', 'consumed', 'failed', 'expired')),
    error_code            TEXT,
    error_message         TEXT,
    result_connection_ids TEXT NOT NULL DEFAULT '[]',
    expires_at            INTEGER NOT NULL,
    started_at            INTEGER,
    completed_at          INTEGER,
    created_at            INTEGER NOT NULL,
    api_key_id            TEXT
);
CREATE INDEX link_sessions_live ON link_sessions (expires_at) WHERE status IN ('pending', 'active');
CREATE INDEX link_sessions_status ON link_sessions (status, seq);
CREATE INDEX link_sessions_user ON link_sessions (user_id, seq);

CREATE TABLE link_session_events (
    seq        INTEGER PRIMARY KEY,
    id         TEXT NOT NULL UNIQUE,
    session_id TEXT NOT NULL REFERENCES link_sessions (id),
    type       TEXT NOT NULL,
    at         INTEGER NOT NULL,
    detail     TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX link_session_events_session ON link_session_events (session_id, seq);
