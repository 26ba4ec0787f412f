-- Idempotency replays are stored sealed with the credential key from this
-- version on (CONTRACT §2 "At rest"). Rows stored by older versions hold a
-- create response in plain text, link token included: delete them, with
-- their pages overwritten rather than left readable in the free list. A
-- retry of such a request within its 24 h creates a new link instead.
PRAGMA secure_delete = ON;
DELETE FROM idempotency_keys WHERE typeof(body) <> 'blob';
PRAGMA secure_delete = OFF;
