//! Facts about the database itself.

use rusqlite::{Connection, OptionalExtension, Transaction};

use super::DbResult;

/// A stored value.
pub fn get(tx: &Connection, key: &str) -> DbResult<Option<Vec<u8>>> {
    Ok(tx
        .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()?)
}

/// Store a value (replacing any previous one).
pub fn put(tx: &Transaction, key: &str, value: &[u8]) -> DbResult<()> {
    tx.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
        (key, value),
    )?;
    Ok(())
}

/// Readiness: one read that touches the schema (`SELECT` from `meta`), so a
/// file that lost its tables or cannot be read fails.
pub fn ping(conn: &rusqlite::Connection) -> DbResult<()> {
    conn.query_row("SELECT COUNT(*) FROM meta", [], |r| r.get::<_, i64>(0))?;
    Ok(())
}

/// Readiness: one small real write (the time of the probe, unix seconds), so
/// a full disk or a read-only file shows up even when nothing else writes.
pub fn write_probe(tx: &Transaction, now: crate::domain::time::Timestamp) -> DbResult<()> {
    put(tx, "ready_probe", &now.to_be_bytes())
}

/// A stored value, or None also when the database predates the meta table
/// (a file not yet migrated, e.g. an old backup).
pub fn get_if_present(c: &Connection, key: &str) -> DbResult<Option<Vec<u8>>> {
    let has_table: bool = c.query_row(
        "SELECT EXISTS(SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta')",
        [],
        |r| r.get(0),
    )?;
    if has_table {
        get(c, key)
    } else {
        Ok(None)
    }
}

/// Write a consistent copy of the whole database to the new file `dest`
/// (`VACUUM INTO`; safe while other connections write).
pub fn vacuum_into(c: &Connection, dest: &str) -> DbResult<()> {
    c.execute("VACUUM INTO ?1", [dest])?;
    Ok(())
}
