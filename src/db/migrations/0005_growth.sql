-- Growth, version 5: indexes that keep every list filter and background job
-- off full scans and temporary sorts, however long the history grows
-- (CONTRACT §11 "Growth", §4 list filters).

-- A member's sessions in one status, newest first: `user_id` + `status`
-- filters, and the per-status arms of the derived `expired` filter.
CREATE INDEX link_sessions_user_status ON link_sessions (user_id, status, seq);

-- The webhook worker reads undelivered messages oldest first; the old index
-- was ordered by due time, which forced a sort of every pending row.
DROP INDEX webhook_outbox_due;
CREATE INDEX webhook_outbox_pending ON webhook_outbox (seq)
    WHERE delivered_at IS NULL AND dead_at IS NULL;
