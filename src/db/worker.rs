//! Dedicated SQLite threads, so no async worker ever blocks on SQLite and the
//! thread count stays fixed: one writer that owns the only write connection
//! and group-commits whatever is queued, its checkpointer, and a few readers.
//!
//! Group commit: the writer takes every queued change (up to a batch), runs
//! each in its own SAVEPOINT inside one `BEGIN IMMEDIATE` transaction, and
//! commits once — one fsync for the batch. A change that is refused or fails
//! rolls back to its savepoint alone. Nobody hears "done" before the commit.
//!
//! Checkpoints run mostly on their own thread. SQLite's automatic checkpoint
//! copies the log into the database file (and fsyncs it) inside the
//! writer's commit, stalling every queued change; on a large database most
//! of a change's pages are random index leaves that no later change
//! rewrites, so the copy is about as large as the commits it follows
//! (moving it off the writer raised mint throughput by 7 % at both 10 k and
//! 1 M sessions, `benches/growth.rs`). So the writer only notes how long the log has grown (a `sqlite3_wal_hook`,
//! which also turns the automatic checkpoint off) and, past
//! [`CHECKPOINT_FRAMES`], asks the checkpointer thread for a `PASSIVE`
//! checkpoint, which blocks neither the writer nor the readers. When that is
//! done the writer copies the few frames committed meanwhile itself, so the
//! whole log is in the database file and the next write starts it over:
//! SQLite restarts the log only when every frame has been copied, which a
//! checkpointer running beside a busy writer never sees.

use std::cell::Cell;
use std::ffi::c_int;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;

use r2d2::Pool;
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{Connection, Transaction, TransactionBehavior};

use super::{DbError, DbResult};

/// Most changes committed together.
const MAX_BATCH: usize = 64;

/// Log length (frames, one page each) at which the writer asks for a
/// checkpoint: SQLite's own default for `wal_autocheckpoint`.
const CHECKPOINT_FRAMES: c_int = 1000;

thread_local! {
    /// Frames in the write-ahead log after this thread's last commit (set by
    /// [`note_wal_frames`]; only the writer thread commits).
    static WAL_FRAMES: Cell<c_int> = const { Cell::new(0) };
}

/// The writer connection's `sqlite3_wal_hook`: called inside each commit
/// with the log's length in frames. Registering it turns SQLite's automatic
/// checkpoint off. (A plain function: rusqlite takes no closure here.)
fn note_wal_frames(_: &rusqlite::hooks::Wal, frames: c_int) -> rusqlite::Result<()> {
    WAL_FRAMES.with(|f| f.set(frames));
    Ok(())
}

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

/// Start the writer thread on `conn` and the checkpointer on `checkpointer`
/// (a second connection to the same file); returns the writer's queue. The
/// writer records storage faults in `fault`. The checkpointer stops when the
/// writer does.
pub(super) fn spawn_writer(
    conn: Connection,
    checkpointer: Connection,
    fault: WriteFault,
) -> std::io::Result<mpsc::Sender<Box<dyn WriteJob>>> {
    let (tx, rx) = mpsc::channel::<Box<dyn WriteJob>>();
    // One pending request is enough: a checkpoint copies the whole log.
    let (wanted, requests) = mpsc::sync_channel::<()>(1);
    let copied = Arc::new(AtomicBool::new(false));
    let checkpoints = Checkpoints {
        wanted,
        copied: Arc::clone(&copied),
        asked_at: 0,
    };
    thread::Builder::new()
        .name("sqlite-checkpoint".into())
        .spawn(move || {
            while requests.recv().is_ok() {
                checkpoint(&checkpointer);
                copied.store(true, Ordering::Release);
            }
        })?;
    conn.wal_hook(Some(note_wal_frames));
    thread::Builder::new()
        .name("sqlite-writer".into())
        .spawn(move || writer_loop(conn, &rx, &fault, checkpoints))?;
    Ok(tx)
}

/// The writer's side of checkpointing.
struct Checkpoints {
    /// Asks the checkpointer thread for a checkpoint.
    wanted: mpsc::SyncSender<()>,
    /// Set by the checkpointer when it has copied the log as it was asked.
    copied: Arc<AtomicBool>,
    /// The log's length when a checkpoint was last asked for (frames).
    asked_at: c_int,
}

impl Checkpoints {
    /// After a commit that left the log `frames` long: finish a copy the
    /// checkpointer has done, or ask for one once the log has grown by
    /// [`CHECKPOINT_FRAMES`].
    fn after_commit(&mut self, conn: &Connection, frames: c_int) {
        if self.copied.swap(false, Ordering::Acquire) {
            checkpoint(conn); // only what was committed during the copy
        }
        if frames < self.asked_at {
            self.asked_at = 0; // the log started over
        }
        if frames >= self.asked_at + CHECKPOINT_FRAMES {
            self.asked_at = frames;
            if let Err(mpsc::TrySendError::Disconnected(())) = self.wanted.try_send(()) {
                checkpoint(conn); // the checkpointer is gone: do it all here
            }
        }
    }
}

/// Copy the log into the database file as far as no reader still needs it
/// (`PASSIVE`: waits on no lock; while a checkpoint is already running on
/// the other connection, SQLite makes this one a no-op that reports busy).
fn checkpoint(conn: &Connection) {
    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
        log::warn!("checkpoint failed (the next one retries): {e}");
    }
}

fn writer_loop(
    mut conn: Connection,
    rx: &mpsc::Receiver<Box<dyn WriteJob>>,
    fault: &Mutex<Option<String>>,
    mut checkpoints: Checkpoints,
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
        checkpoints.after_commit(&conn, WAL_FRAMES.with(Cell::get));
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
    // Cached statements: parsing these three again for every change cost
    // the writer a twentieth of its time.
    let step = |sql: &str| tx.prepare_cached(sql)?.execute([]).map(drop);
    let mut kept = false;
    for job in batch.iter_mut() {
        step("SAVEPOINT change")?;
        if job.run(&tx) {
            kept = true;
        } else {
            step("ROLLBACK TO change")?;
        }
        step("RELEASE change")?;
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

#[cfg(test)]
mod tests {
    use super::CHECKPOINT_FRAMES;
    use crate::db::Db;

    /// The writer no longer checkpoints (its WAL hook turns SQLite's
    /// automatic checkpoint off), so without the checkpointer thread and the
    /// writer's finishing copy the log would grow by every frame written.
    #[tokio::test]
    async fn the_checkpointer_keeps_the_log_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.db");
        let db = Db::open(&path, "NORMAL").expect("open");
        db.write_async(|tx| Ok(tx.execute_batch("CREATE TABLE filler (b BLOB)")?))
            .await
            .expect("create");
        // Each change fills a page of its own: 6,000 changes write more than
        // 6,000 frames. Eight writers at a time, so batches commit while a
        // checkpoint runs.
        let changes = 6 * CHECKPOINT_FRAMES as usize;
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let db = db.clone();
            tasks.spawn(async move {
                for _ in 0..changes / 8 {
                    db.write_async(|tx| {
                        Ok(tx.execute("INSERT INTO filler VALUES (zeroblob(3000))", [])?)
                    })
                    .await
                    .expect("insert");
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.expect("writer task");
        }
        let frame = 4096 + 24;
        let wal = std::fs::metadata(dir.path().join("t.db-wal"))
            .expect("wal")
            .len();
        assert!(
            wal < 3 * CHECKPOINT_FRAMES as u64 * frame,
            "the log holds {} frames after {changes} changes",
            wal / frame
        );
        let rows: i64 = db
            .read(|c| Ok(c.query_row("SELECT COUNT(*) FROM filler", [], |r| r.get(0))?))
            .expect("count");
        assert_eq!(rows, changes as i64);
    }
}
