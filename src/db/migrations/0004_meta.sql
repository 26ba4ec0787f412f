-- Small facts about the database itself, e.g. a value encrypted with the
-- credential key, to recognise a wrong key before any credential is touched.

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
