//! Numbered SQL migrations, each applied in the writer's transaction, with
//! the schema version kept in `PRAGMA user_version`.

use rusqlite::Transaction;

use super::{DbError, DbResult};

/// Every migration in order; index + 1 is its version.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_init.sql"),
    include_str!("migrations/0002_outbox.sql"),
    include_str!("migrations/0003_idempotency.sql"),
    include_str!("migrations/0004_meta.sql"),
    // 0005 is reserved for another change; this list, not the file names, sets the version.
    include_str!("migrations/0006_connection_health.sql"),
];

/// The schema version this build writes.
pub fn latest() -> i64 {
    MIGRATIONS.len() as i64
}

/// Why a database of schema version `found` cannot be used by this build.
pub fn too_new(found: i64) -> String {
    format!(
        "the database has schema version {found}, written by a newer breadbox; this build \
         knows schema version {} at most: run the newer breadbox (or restore a backup made \
         by this version with `breadbox restore FILE`)",
        latest()
    )
}

/// Apply whatever migrations this database has not seen yet.
pub fn run(tx: &Transaction) -> DbResult<()> {
    let current: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if current > latest() {
        return Err(DbError::Corrupt(too_new(current)));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
    }
    Ok(())
}
