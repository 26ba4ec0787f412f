//! SQLite storage: a read pool, one writer connection, migrations, and the
//! helpers that move blocking work off the async workers.

pub mod api_keys;
pub mod check;
pub mod connection_events;
pub mod connections;
pub mod events;
pub mod idempotency;
pub mod link_sessions;
pub mod meta;
mod migrate;
pub mod outbox;
pub mod queries;
pub mod retention;
pub mod users;
mod worker;

use std::convert::Infallible;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use r2d2::{Pool, PooledConnection};
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{Connection, Transaction, TransactionBehavior};

/// A storage failure. Never shown to clients: it becomes a 500 whose detail is logged.
#[derive(Debug)]
pub enum DbError {
    /// SQLite said no.
    Sqlite(rusqlite::Error),
    /// No connection could be had.
    Pool(r2d2::Error),
    /// The blocking task died.
    Task(String),
    /// A stored value was not what the schema promises.
    Corrupt(String),
}

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DbError::Sqlite(e) => write!(f, "sqlite: {e}"),
            DbError::Pool(e) => write!(f, "connection pool: {e}"),
            DbError::Task(e) => write!(f, "blocking task: {e}"),
            DbError::Corrupt(e) => write!(f, "unexpected stored value: {e}"),
        }
    }
}

impl std::error::Error for DbError {}

impl From<rusqlite::Error> for DbError {
    fn from(e: rusqlite::Error) -> Self {
        DbError::Sqlite(e)
    }
}

impl From<r2d2::Error> for DbError {
    fn from(e: r2d2::Error) -> Self {
        DbError::Pool(e)
    }
}

/// Result of a storage call.
pub type DbResult<T> = Result<T, DbError>;

/// Handle to the database: cheap to clone. Async callers hand their work to
/// dedicated SQLite threads (see [`worker`]); sync callers (the CLI) block.
#[derive(Clone)]
pub struct Db {
    read: Pool<SqliteConnectionManager>,
    readers: mpsc::Sender<worker::ReadJob>,
    writer: mpsc::Sender<Box<dyn worker::WriteJob>>,
    fault: worker::WriteFault,
    /// When readiness last wrote a probe (unix seconds).
    probed_at: std::sync::Arc<std::sync::atomic::AtomicI64>,
    emit: Emit,
}

/// What a state change must write besides itself (passed to every transition,
/// so no caller can forget it).
#[derive(Debug, Clone, Copy, Default)]
pub struct Emit {
    /// Queue outbound webhooks in the same transaction.
    pub webhooks: bool,
}

/// How long a connection waits on another process's lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Reader threads (and read connections).
const READERS: u32 = 4;

fn stopped() -> DbError {
    DbError::Task("the database threads have stopped".into())
}

impl Db {
    /// Open (creating if needed) the database at `path`, apply pragmas and migrations.
    /// `synchronous` is `"FULL"` or `"NORMAL"`.
    pub fn open(path: &Path, synchronous: &'static str) -> DbResult<Db> {
        let init = move |c: &mut Connection| {
            c.busy_timeout(BUSY_TIMEOUT)?;
            c.execute_batch(&format!(
                "PRAGMA foreign_keys = ON; PRAGMA synchronous = {synchronous};"
            ))
        };
        // WAL is a property of the file; set it on the writer before anything else.
        let mut writer = Connection::open(path)?;
        init(&mut writer)?;
        let mode: String = writer.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        // Each change in a batch runs in a SAVEPOINT, whose statement journal
        // keeps a copy of every page the change touches; in a temporary file
        // (the default) that doubled the writer's system calls.
        writer.execute_batch("PRAGMA temp_store = MEMORY")?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(DbError::Corrupt(format!("journal_mode is {mode}, not wal")));
        }
        let mut checkpointer = Connection::open(path)?;
        init(&mut checkpointer)?;
        let read = Pool::builder()
            .max_size(READERS)
            .min_idle(Some(1))
            .test_on_check_out(false)
            .connection_timeout(Duration::from_secs(30))
            .build(SqliteConnectionManager::file(path).with_init(init))?;
        let spawn_failed =
            |e: std::io::Error| DbError::Task(format!("starting database threads: {e}"));
        let fault = worker::WriteFault::default();
        let db = Db {
            readers: worker::spawn_readers(READERS as usize, read.clone()).map_err(spawn_failed)?,
            writer: worker::spawn_writer(writer, checkpointer, fault.clone())
                .map_err(spawn_failed)?,
            fault,
            probed_at: Default::default(),
            read,
            emit: Emit::default(),
        };
        db.write(migrate::run)?;
        Ok(db)
    }

    /// Why writes are failing (disk full, read-only, I/O error, damaged
    /// file), as the writer thread last saw it; `None` while they work.
    pub fn write_fault(&self) -> Option<String> {
        self.fault.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether a readiness write probe is due at `now` (unix seconds): at most
    /// one a second, however often readiness is asked; claims it when due.
    pub fn claim_write_probe(&self, now: i64) -> bool {
        use std::sync::atomic::Ordering;
        let last = self.probed_at.load(Ordering::Relaxed);
        now > last
            && self
                .probed_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// Copy everything in the `-wal` into the database file and truncate the
    /// `-wal` to zero bytes, so the database file alone is the whole state
    /// (run once the server has stopped; blocking). Returns false when a
    /// reader kept part of the log busy.
    pub fn checkpoint(&self) -> DbResult<bool> {
        let conn = self.read.get()?;
        let busy: i64 = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
        Ok(busy == 0)
    }

    /// This handle, queueing webhooks for state changes when `on`.
    pub fn with_webhooks(mut self, on: bool) -> Self {
        self.emit.webhooks = on;
        self
    }

    /// What state changes made through this handle emit.
    pub fn emit(&self) -> Emit {
        self.emit
    }

    /// Run `f` on a read connection, on the calling thread (blocking).
    pub fn read<T>(&self, f: impl FnOnce(&Connection) -> DbResult<T>) -> DbResult<T> {
        let conn: PooledConnection<_> = self.read.get()?;
        f(&conn)
    }

    /// Run `f` on a reader thread and await the result.
    pub async fn read_async<T, F>(&self, f: F) -> DbResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> DbResult<T> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: worker::ReadJob = Box::new(move |conn| drop(tx.send(f(conn))));
        self.readers.send(job).map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    fn queue<T, E, F>(&self, f: F, reply: worker::Reply<DbResult<Result<T, E>>>) -> DbResult<()>
    where
        T: Send + 'static,
        E: Send + 'static,
        F: FnOnce(&Transaction) -> DbResult<Result<T, E>> + Send + 'static,
    {
        let job = worker::Job {
            f: Some(f),
            out: None,
            reply: Some(reply),
        };
        self.writer.send(Box::new(job)).map_err(|_| stopped())
    }

    /// Run `f` in a `BEGIN IMMEDIATE` transaction on the calling thread
    /// (blocking; for the CLI, start-up and tests — the server's requests go
    /// through the writer thread) and commit when it returns `Ok`.
    pub fn write<T>(&self, f: impl FnOnce(&Transaction) -> DbResult<T>) -> DbResult<T> {
        self.write_checked(|tx| f(tx).map(Ok::<T, Infallible>))
            .map(|r| r.unwrap_or_else(|never| match never {}))
    }

    /// Like [`Db::write`], but commits only when `f` returns `Ok(Ok(_))`: an
    /// inner `Err` (a refused change) rolls back everything `f` wrote.
    pub fn write_checked<T, E>(
        &self,
        f: impl FnOnce(&Transaction) -> DbResult<Result<T, E>>,
    ) -> DbResult<Result<T, E>> {
        let mut conn = self.read.get()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        if out.is_ok() {
            tx.commit()?;
        }
        Ok(out)
    }

    /// [`Db::write_checked`], awaited.
    pub async fn write_checked_async<T, E, F>(&self, f: F) -> DbResult<Result<T, E>>
    where
        T: Send + 'static,
        E: Send + 'static,
        F: FnOnce(&Transaction) -> DbResult<Result<T, E>> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.queue(f, tx)?;
        rx.await.map_err(|_| stopped())?
    }

    /// [`Db::write`], awaited.
    pub async fn write_async<T, F>(&self, f: F) -> DbResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction) -> DbResult<T> + Send + 'static,
    {
        self.write_checked_async(move |tx| f(tx).map(Ok::<T, Infallible>))
            .await
            .map(|r| r.unwrap_or_else(|never| match never {}))
    }
}

/// Read an enum column through its `parse` function.
pub(crate) fn parse_col<T>(
    raw: String,
    parse: impl FnOnce(&str) -> Option<T>,
    what: &str,
) -> rusqlite::Result<T> {
    parse(&raw).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            format!("bad {what}: {raw}").into(),
        )
    })
}

/// Whether a row with this short id already exists in `table` (a fixed name).
pub(crate) fn short_id_taken(tx: &Transaction, table: &str, short_id: &str) -> DbResult<bool> {
    let sql = format!("SELECT EXISTS(SELECT 1 FROM {table} WHERE short_id = ?1)");
    Ok(tx.query_row(&sql, [short_id], |r| r.get(0))?)
}

/// A fresh short id not yet used in `table`. Runs inside the write
/// transaction, so no other writer can take it in between.
pub(crate) fn unique_short_id(tx: &Transaction, table: &str) -> DbResult<String> {
    loop {
        let s = crate::domain::ids::new_short_id();
        if !short_id_taken(tx, table, &s)? {
            return Ok(s);
        }
    }
}

/// The SQL condition and parameter for looking a row up by UUID or short id.
pub(crate) fn ref_clause(r: &crate::domain::ids::EntityRef) -> (&'static str, &str) {
    use crate::domain::ids::EntityRef;
    match r {
        EntityRef::Uuid(u) => ("id = ?1", u.as_str()),
        EntityRef::Short(s) => ("short_id = ?1", s.as_str()),
    }
}

/// Rows in `table` (a fixed name), counting at most `cap` so the cost stays
/// bounded however large the table grows.
pub fn count_capped(conn: &Connection, table: &str, cap: u32) -> DbResult<u32> {
    let sql = format!("SELECT COUNT(*) FROM (SELECT 1 FROM {table} LIMIT ?1)");
    Ok(conn.prepare_cached(&sql)?.query_row([cap], |r| r.get(0))?)
}

/// A page from rows fetched with `LIMIT limit + 1` (each with its `seq`):
/// the first `limit` rows, and the `seq` to continue from when there were
/// more (the next page's cursor position).
pub(crate) fn split_page<T>(mut rows: Vec<(T, i64)>, limit: u32) -> (Vec<T>, Option<i64>) {
    let next = if rows.len() > limit as usize {
        rows.truncate(limit as usize);
        rows.last().map(|(_, seq)| *seq)
    } else {
        None
    };
    (rows.into_iter().map(|(row, _)| row).collect(), next)
}
