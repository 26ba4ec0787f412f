//! Dedicated SQLite threads, so no async worker ever blocks on SQLite and the
//! thread count stays fixed: one writer that owns the only write connection
//! and group-commits whatever is queued, and a few readers.
//!
//! Group commit: the writer takes every queued change (up to a batch), runs
//! each in its own SAVEPOINT inside one `BEGIN IMMEDIATE` transaction, and
//! commits once — one fsync for the batch. A change that is refused or fails
//! rolls back to its savepoint alone. Nobody hears "done" before the commit.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;

use r2d2::Pool;
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{Connection, Transaction, TransactionBehavior};

use super::{DbError, DbResult};

/// Most changes committed together.
const MAX_BATCH: usize = 64;

/// Where a result goes: the task awaiting it.
pub(super) type Reply<T> = tokio::sync::oneshot::Sender<T>;

/// A queued change.
pub(super) trait WriteJob: Send {
    /// Run inside the batch transaction; true to keep what it wrote.
    fn run(&mut self, tx: &Transaction) -> bool;
    /// The storage fault (disk full, read-only, I/O error, corruption) the
    /// change failed with, if any.
    fn fault(&self) -> Option<String>;
    /// Report the outcome once the batch is committed (or failed).
    fn finish(self: Box<Self>, committed: Result<(), String>);
}

/// A change whose closure returns `Ok(Ok(_))` to be kept.
pub(super) struct Job<T, E, F> {
    pub f: Option<F>,
    pub out: Option<DbResult<Result<T, E>>>,
    pub reply: Option<Reply<DbResult<Result<T, E>>>>,
}

impl<T, E, F> WriteJob for Job<T, E, F>
where
    T: Send,
    E: Send,
    F: FnOnce(&Transaction) -> DbResult<Result<T, E>> + Send,
{
    fn run(&mut self, tx: &Transaction) -> bool {
        let Some(f) = self.f.take() else { return false };
        let out = catch_unwind(AssertUnwindSafe(|| f(tx)))
            .unwrap_or_else(|_| Err(DbError::Task("a database change panicked".into())));
        let keep = matches!(out, Ok(Ok(_)));
        self.out = Some(out);
        keep
    }

    fn fault(&self) -> Option<String> {
        match &self.out {
            Some(Err(DbError::Sqlite(e))) => storage_fault(e),
            _ => None,
        }
    }

    fn finish(mut self: Box<Self>, committed: Result<(), String>) {
        let result = match (self.out.take(), committed) {
            (Some(Ok(Ok(v))), Ok(())) => Ok(Ok(v)),
            (Some(Ok(Ok(_))) | None, Err(e)) => Err(DbError::Task(format!("commit failed: {e}"))),
            (None, Ok(())) => Err(DbError::Task("the change never ran".into())),
            // Refused or failed: rolled back to its savepoint, reported as is.
            (Some(other), _) => other,
        };
        if let Some(reply) = self.reply.take() {
            // The asker may have gone away (a dropped request); nothing to do then.
            drop(reply.send(result));
        }
    }
}

/// Whether `e` means the storage itself is failing (rather than one change
/// being refused), and how to say so.
pub(super) fn storage_fault(e: &rusqlite::Error) -> Option<String> {
    use rusqlite::ErrorCode::{
        CannotOpen, DatabaseCorrupt, DiskFull, NotADatabase, PermissionDenied, ReadOnly,
        SystemIoFailure,
    };
    let rusqlite::Error::SqliteFailure(f, _) = e else {
        return None;
    };
    let what = match f.code {
        DiskFull => "the disk is full",
        ReadOnly => "the database is read-only",
        SystemIoFailure => "the disk reported an I/O error",
        DatabaseCorrupt | NotADatabase => "the database file is damaged",
        CannotOpen | PermissionDenied => "the database file cannot be opened for writing",
        _ => return None,
    };
    Some(format!("{what} ({e})"))
}

/// The writer's last word on whether writes work: `None` while they do, else
/// why the last write failed. Cleared by the next committed change.
pub(super) type WriteFault = Arc<Mutex<Option<String>>>;

/// Start the writer thread on `conn`; returns its queue. The thread records
/// storage faults in `fault`.
pub(super) fn spawn_writer(
    conn: Connection,
    fault: WriteFault,
) -> std::io::Result<mpsc::Sender<Box<dyn WriteJob>>> {
    let (tx, rx) = mpsc::channel::<Box<dyn WriteJob>>();
    thread::Builder::new()
        .name("sqlite-writer".into())
        .spawn(move || writer_loop(conn, &rx, &fault))?;
    Ok(tx)
}

fn writer_loop(
    mut conn: Connection,
    rx: &mpsc::Receiver<Box<dyn WriteJob>>,
    fault: &Mutex<Option<String>>,
) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let outcome = run_batch(&mut conn, &mut batch);
        let now_failing = match &outcome {
            Err(e) => Some(storage_fault(e).unwrap_or_else(|| format!("a write failed ({e})"))),
            Ok(kept) => batch.iter().find_map(|job| job.fault()).or_else(|| {
                if *kept {
                    None
                } else {
                    fault_of(fault)
                }
            }),
        };
        if let Some(reason) = &now_failing {
            log::error!("database write failed: {reason}");
        }
        *fault.lock().unwrap_or_else(|p| p.into_inner()) = now_failing;
        let committed = outcome.map(|_| ()).map_err(|e| e.to_string());
        for job in batch {
            job.finish(committed.clone());
        }
    }
}

/// The fault recorded so far (kept when a batch proves nothing either way).
fn fault_of(fault: &Mutex<Option<String>>) -> Option<String> {
    fault.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Run and commit a batch; `Ok(true)` when at least one change was written.
fn run_batch(conn: &mut Connection, batch: &mut [Box<dyn WriteJob>]) -> rusqlite::Result<bool> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if let [only] = batch {
        // One change: no savepoint needed; an unkept change rolls back whole.
        if only.run(&tx) {
            return tx.commit().map(|()| true);
        }
        return tx.rollback().map(|()| false);
    }
    let mut kept = false;
    for job in batch.iter_mut() {
        tx.execute_batch("SAVEPOINT change")?;
        if job.run(&tx) {
            tx.execute_batch("RELEASE change")?;
            kept = true;
        } else {
            tx.execute_batch("ROLLBACK TO change; RELEASE change")?;
        }
    }
    tx.commit().map(|()| kept)
}

/// A read to run on a reader thread.
pub(super) type ReadJob = Box<dyn FnOnce(&Connection) + Send>;

/// Start `n` reader threads drawing connections from `pool`.
pub(super) fn spawn_readers(
    n: usize,
    pool: Pool<SqliteConnectionManager>,
) -> std::io::Result<mpsc::Sender<ReadJob>> {
    let (tx, rx) = mpsc::channel::<ReadJob>();
    let rx = Arc::new(Mutex::new(rx));
    for i in 0..n {
        let rx = Arc::clone(&rx);
        let pool = pool.clone();
        thread::Builder::new()
            .name(format!("sqlite-reader-{i}"))
            .spawn(move || loop {
                let job = {
                    let queue = rx.lock().unwrap_or_else(|p| p.into_inner());
                    match queue.recv() {
                        Ok(job) => job,
                        Err(_) => return,
                    }
                };
                // A failed or panicking job drops its reply: the asker sees an error.
                match pool.get() {
                    Ok(conn) => {
                        if catch_unwind(AssertUnwindSafe(|| job(&conn))).is_err() {
                            log::error!("a database read panicked");
                        }
                    }
                    Err(e) => log::error!("no read connection: {e}"),
                }
            })?;
    }
    Ok(tx)
}
