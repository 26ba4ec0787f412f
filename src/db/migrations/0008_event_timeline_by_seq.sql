-- Mint cost independent of history (issue 9), version 8: the timeline is
-- keyed by its session's integer `seq`, not its UUID. A new session's events
-- then land at the right-hand end of the (session_seq, seq) index, where a
-- mint's neighbours write too, instead of on a random leaf among millions;
-- and the event UUID, which nothing looks up by, loses its UNIQUE index (a
-- second random leaf per event). Every event keeps its id, its position
-- (`seq`, hence its order) and its session.
CREATE TABLE link_session_events_v8 (
    seq         INTEGER PRIMARY KEY,
    id          TEXT NOT NULL,
    session_seq INTEGER NOT NULL REFERENCES link_sessions (seq),
    type        TEXT NOT NULL,
    at          INTEGER NOT NULL,
    detail      TEXT NOT NULL DEFAULT '{}'
);
INSERT INTO link_session_events_v8 (seq, id, session_seq, type, at, detail)
    SELECT e.seq, e.id, s.seq, e.type, e.at, e.detail
    FROM link_session_events e JOIN link_sessions s ON s.id = e.session_id
    ORDER BY e.seq;
DROP TABLE link_session_events;
ALTER TABLE link_session_events_v8 RENAME TO link_session_events;
CREATE INDEX link_session_events_session ON link_session_events (session_seq, seq);
