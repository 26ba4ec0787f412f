//! Background maintenance (CONTRACT §3 expiry, §11 "Growth"): writes
//! `expired` on sessions whose time has passed, forgets idempotency keys
//! after 24 h, prunes finished history after its `[retention]` period and
//! hands freed pages back to the file system.
//!
//! Every step is a run of small writes (one batch each, a few milliseconds
//! of the writer), queued behind whatever the API has queued and each
//! followed by a pause as long as itself, so a backlog never stalls minting:
//! a server that was off for a day drains its expired sessions at start in
//! seconds, in between the requests.
//! [`Maintenance::run_once`] is one full pass; tests step it directly.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::RetentionConfig;
use crate::db::{idempotency, link_sessions, retention, Db, DbResult};
use crate::domain::time::Timestamp;

/// Sessions expired per write (each a compare-and-set with its event): a
/// few milliseconds of the writer, even with a million sessions.
pub const EXPIRE_BATCH: u32 = 64;

/// Sessions (with their events) or webhook rows examined per pruning write.
pub const PRUNE_BATCH: u32 = 32;

/// Free pages handed back per `incremental_vacuum` write (4 KiB each).
pub const VACUUM_PAGES: u32 = 128;

/// How often a pass runs.
pub const EVERY: Duration = Duration::from_secs(10);

/// A database created before `auto_vacuum` was set is converted (a full
/// `VACUUM` at start) only up to this size; a bigger one keeps reusing its
/// free pages, so it stops growing but does not shrink.
pub const CONVERT_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// Called with the id of every session a pass changed (to wake its
/// long-poll waiters and the webhook worker).
pub type OnChanged = Arc<dyn Fn(&str) + Send + Sync>;

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Sessions written `expired`.
    pub expired: usize,
    /// Idempotency keys forgotten.
    pub idempotency_keys: usize,
    /// Terminal sessions deleted.
    pub sessions: usize,
    /// Their events deleted.
    pub events: usize,
    /// Webhook messages deleted.
    pub webhooks: usize,
    /// Pages still free after the vacuum steps (0 when all were returned).
    pub free_pages: i64,
    /// Writes made.
    pub writes: usize,
    /// The longest single write, queueing excluded (milliseconds).
    pub longest_write_ms: u64,
}

/// The maintenance task's state; cheap to share.
pub struct Maintenance {
    db: Db,
    retention: RetentionConfig,
    on_changed: OnChanged,
    /// The database file, to convert an old one to incremental vacuum once.
    convert: Option<PathBuf>,
    converted: AtomicBool,
}

impl Maintenance {
    /// Maintenance of `db` under `retention`; `on_changed` hears every
    /// session it expires.
    pub fn new(db: Db, retention: RetentionConfig, on_changed: OnChanged) -> Self {
        Maintenance {
            db,
            retention,
            on_changed,
            convert: None,
            converted: AtomicBool::new(false),
        }
    }

    /// Also convert the database at `path` to `auto_vacuum = INCREMENTAL` on
    /// the first pass when it is an old one of at most [`CONVERT_MAX_BYTES`].
    pub fn converting(mut self, path: PathBuf) -> Self {
        self.convert = Some(path);
        self
    }

    /// Run one full pass at `now` (unix seconds): expire, forget, prune,
    /// vacuum, each in small writes until nothing is left to do.
    pub async fn run_once(&self, now: Timestamp) -> DbResult<Report> {
        let mut report = Report::default();
        // Expiry first: at start it is what clients can notice.
        let emit = self.db.emit();
        loop {
            let ids = self
                .timed(&mut report, move |tx| {
                    link_sessions::expire_due(tx, now, EXPIRE_BATCH, emit)
                })
                .await?;
            for id in &ids {
                (self.on_changed)(id);
            }
            report.expired += ids.len();
            if ids.len() < EXPIRE_BATCH as usize {
                break;
            }
        }

        report.idempotency_keys = self
            .timed(&mut report, move |tx| idempotency::prune(tx, now))
            .await?;

        let cutoff = now.saturating_sub(secs(self.retention.link_sessions));
        let mut after = 0;
        loop {
            let step = self
                .timed(&mut report, move |tx| {
                    retention::prune_sessions(tx, cutoff, after, PRUNE_BATCH)
                })
                .await?;
            report.sessions += step.deleted;
            report.events += step.events;
            match step.next_after {
                Some(a) => after = a,
                None => break,
            }
        }

        let cutoff = now.saturating_sub(secs(self.retention.webhook_deliveries));
        let undelivered = cutoff.min(now.saturating_sub(secs(crate::webhooks::MAX_AGE)));
        let mut after = 0;
        loop {
            let step = self
                .timed(&mut report, move |tx| {
                    retention::prune_webhooks(tx, cutoff, undelivered, after, PRUNE_BATCH)
                })
                .await?;
            report.webhooks += step.deleted;
            match step.next_after {
                Some(a) => after = a,
                None => break,
            }
        }

        self.convert_once().await;
        report.free_pages = self.db.read_async(retention::free_pages).await?;
        // Stops when all came back, or when a step frees nothing (a database
        // without incremental vacuum keeps its free pages for reuse).
        while report.free_pages > 0 {
            let before = report.free_pages;
            report.free_pages = self
                .timed(&mut report, |tx| retention::vacuum_step(tx, VACUUM_PAGES))
                .await?;
            if report.free_pages >= before {
                break;
            }
        }
        Ok(report)
    }

    /// One write through the writer thread, its run time recorded; then a
    /// pause as long as the whole write took (queueing and commit included),
    /// so the API always has at least half of the writer while a backlog
    /// drains.
    async fn timed<T, F>(&self, report: &mut Report, f: F) -> DbResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Transaction) -> DbResult<T> + Send + 'static,
    {
        let asked = Instant::now();
        let (out, took) = self
            .db
            .write_async(move |tx| {
                let start = Instant::now();
                let out = f(tx)?;
                Ok((out, start.elapsed()))
            })
            .await?;
        report.writes += 1;
        let ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
        report.longest_write_ms = report.longest_write_ms.max(ms);
        tokio::time::sleep(asked.elapsed()).await;
        Ok(out)
    }

    async fn convert_once(&self) {
        let Some(path) = self.convert.clone() else {
            return;
        };
        if self.converted.swap(true, Ordering::SeqCst) {
            return;
        }
        let done = tokio::task::spawn_blocking(move || {
            retention::convert_to_incremental(&path, CONVERT_MAX_BYTES)
        })
        .await;
        match done {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => log::info!(
                "the database file was created without incremental vacuum and is larger than \
                 {} MiB: pruned space is reused but the file will not shrink",
                CONVERT_MAX_BYTES >> 20
            ),
            Ok(Err(e)) => log::warn!("could not switch the database to incremental vacuum: {e}"),
            Err(e) => log::warn!("incremental vacuum conversion task failed: {e}"),
        }
    }
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// Run a pass now and then every [`EVERY`], forever; `tick` runs before each
/// pass (the server prunes its rate limiters there).
pub fn spawn(m: Maintenance, tick: impl Fn() + Send + 'static) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            tick();
            let started = Instant::now();
            match m.run_once(crate::domain::time::now()).await {
                Ok(r) => {
                    if r.expired > 0 || r.sessions > 0 || r.webhooks > 0 {
                        log::info!(
                            "maintenance: {} sessions expired, {} sessions ({} events) and {} \
                             webhook messages pruned, in {} ms ({} writes, longest {} ms)",
                            r.expired,
                            r.sessions,
                            r.events,
                            r.webhooks,
                            started.elapsed().as_millis(),
                            r.writes,
                            r.longest_write_ms
                        );
                    }
                }
                Err(e) => log::error!("maintenance pass failed: {e}"),
            }
        }
    });
}
