//! Facts about the database itself.

use rusqlite::{OptionalExtension, Transaction};

use super::DbResult;

/// A stored value.
pub fn get(tx: &Transaction, key: &str) -> DbResult<Option<Vec<u8>>> {
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
