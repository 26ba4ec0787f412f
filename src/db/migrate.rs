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
    include_str!("migrations/0005_growth.sql"),
];

/// Apply whatever migrations this database has not seen yet.
pub fn run(tx: &Transaction) -> DbResult<()> {
    let current: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let known = MIGRATIONS.len() as i64;
    if current > known {
        return Err(DbError::Corrupt(format!(
            "database schema version {current} is newer than this program ({known}); upgrade breadbox"
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
    }
    Ok(())
}
