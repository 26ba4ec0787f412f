//! Checks on a database file before it is used: at server start
//! (`quick_check`, schema version) and on a copy about to be restored
//! (`integrity_check`, schema version), without creating anything.

use std::path::Path;

use rusqlite::{Connection, ErrorCode, OpenFlags};

use super::migrate;

/// What is wrong with a database file.
#[derive(Debug)]
pub enum FileProblem {
    /// Damaged pages, or not a SQLite database at all.
    Corrupt(String),
    /// Written by a newer breadbox.
    TooNew(String),
    /// It could not be read (permissions, I/O).
    Unreadable(String),
}

impl std::fmt::Display for FileProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FileProblem::Corrupt(m) | FileProblem::TooNew(m) | FileProblem::Unreadable(m) => {
                f.write_str(m)
            }
        }
    }
}

impl std::error::Error for FileProblem {}

fn from_sqlite(e: rusqlite::Error) -> FileProblem {
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => {
            FileProblem::Corrupt(e.to_string())
        }
        _ => FileProblem::Unreadable(e.to_string()),
    }
}

/// Open an existing database file read-write without creating it.
pub fn open_existing(path: &Path) -> Result<Connection, FileProblem> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let c = Connection::open_with_flags(path, flags).map_err(from_sqlite)?;
    c.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(from_sqlite)?;
    Ok(c)
}

/// Run `PRAGMA quick_check` (`full = false`, fast enough for every start) or
/// `PRAGMA integrity_check`; also the schema version must be one this build
/// can use.
pub fn check(conn: &Connection, full: bool) -> Result<(), FileProblem> {
    let pragma = if full {
        "PRAGMA integrity_check(5)"
    } else {
        "PRAGMA quick_check(5)"
    };
    let mut stmt = conn.prepare(pragma).map_err(from_sqlite)?;
    let found: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .and_then(|rows| rows.collect())
        .map_err(from_sqlite)?;
    if found != ["ok"] {
        return Err(FileProblem::Corrupt(found.join("; ")));
    }
    let version = schema_version(conn)?;
    if version > migrate::latest() {
        return Err(FileProblem::TooNew(migrate::too_new(version)));
    }
    Ok(())
}

/// The schema version in `PRAGMA user_version` (0 for a new file).
pub fn schema_version(conn: &Connection) -> Result<i64, FileProblem> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(from_sqlite)
}

/// Switch a private copy to a rollback journal so closing it leaves no
/// `-wal`/`-shm` beside it (the server turns WAL back on when it opens it).
pub fn leave_wal(conn: &Connection) -> Result<(), FileProblem> {
    let _: String = conn
        .query_row("PRAGMA journal_mode = DELETE", [], |r| r.get(0))
        .map_err(from_sqlite)?;
    Ok(())
}

/// Move everything in `path`'s `-wal` into the database file and empty the
/// `-wal` (best effort; returns false when another connection kept it busy).
pub fn checkpoint_file(path: &Path) -> Result<bool, FileProblem> {
    let c = open_existing(path)?;
    let busy: i64 = c
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))
        .map_err(from_sqlite)?;
    Ok(busy == 0)
}
