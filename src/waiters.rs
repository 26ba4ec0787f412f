//! Wake-ups for long-poll waiters: one `Notify` per watched session, no
//! thread and no database connection held while waiting. A change made by
//! this server wakes only the waiters of the sessions it changed; one made by
//! another process (the CLI) is noticed through the writer connection's
//! `PRAGMA data_version` and wakes everyone within [`DATA_VERSION_EVERY`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use crate::db::link_sessions::data_version;
use crate::db::{Db, DbResult};

/// Registry of sessions somebody is waiting on.
#[derive(Default)]
pub struct Waiters {
    map: Mutex<HashMap<String, Arc<Notify>>>,
    closing: AtomicBool,
    wakeups: AtomicU64,
}

/// A registration for one session; unregisters itself when dropped.
pub struct Subscription<'a> {
    waiters: &'a Waiters,
    session_id: String,
    notify: Arc<Notify>,
}

impl Subscription<'_> {
    /// The notifier to wait on.
    pub fn notify(&self) -> &Notify {
        &self.notify
    }
}

impl Drop for Subscription<'_> {
    fn drop(&mut self) {
        let mut map = self.waiters.lock();
        // Two holders left (the map and this subscription): nobody else waits.
        if Arc::strong_count(&self.notify) == 2 {
            map.remove(&self.session_id);
        }
    }
}

impl Waiters {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Notify>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Register interest in `session_id`.
    pub fn subscribe(&self, session_id: &str) -> Subscription<'_> {
        let notify = self
            .lock()
            .entry(session_id.to_owned())
            .or_default()
            .clone();
        Subscription {
            waiters: self,
            session_id: session_id.to_owned(),
            notify,
        }
    }

    /// Wake everybody waiting on `session_id` (this server changed it).
    pub fn notify(&self, session_id: &str) {
        if let Some(n) = self.lock().get(session_id) {
            self.wakeups.fetch_add(1, Ordering::Relaxed);
            log::debug!("waking the waiters of session {session_id}");
            n.notify_waiters();
        }
    }

    /// Wake every waiter (another process changed the database).
    pub fn notify_all(&self) {
        let map = self.lock();
        if !map.is_empty() {
            log::debug!(
                "another process wrote: waking the waiters of {} sessions",
                map.len()
            );
        }
        for n in map.values() {
            self.wakeups.fetch_add(1, Ordering::Relaxed);
            n.notify_waiters();
        }
    }

    /// How many times a watched session's waiters were woken so far (each
    /// wake-up costs each of its waiters one re-read).
    pub fn wakeups(&self) -> u64 {
        self.wakeups.load(Ordering::Relaxed)
    }

    /// Answer every waiter now and make new waits return at once (shutdown).
    pub fn close(&self) {
        self.closing.store(true, Ordering::SeqCst);
        self.notify_all();
    }

    /// Whether the server is shutting down.
    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }

    /// How many sessions are being watched.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nobody waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How often another process's commits are looked for while somebody waits.
const DATA_VERSION_EVERY: Duration = Duration::from_millis(250);

/// Notices commits made by any other connection to the database file (the
/// CLI, another process), and never this server's own: it asks the writer
/// connection itself, whose `PRAGMA data_version` changes only when somebody
/// else committed (CONTRACT §4 long-poll). A dedicated watch connection
/// would see every local commit as foreign and wake every waiter.
pub struct ForeignWrites {
    db: Db,
    last: Option<i64>,
}

impl ForeignWrites {
    /// A watcher of `db`; the first [`ForeignWrites::check`] takes the baseline.
    pub fn new(db: Db) -> Self {
        ForeignWrites { db, last: None }
    }

    /// Whether another connection committed since the previous check (one
    /// tiny job on the writer thread, which writes nothing).
    pub async fn check(&mut self) -> DbResult<bool> {
        let v = self.db.write_async(|tx| data_version(tx)).await?;
        let changed = self.last.is_some_and(|l| l != v);
        self.last = Some(v);
        Ok(changed)
    }
}

/// Watch for commits by other processes and wake all waiters when one
/// happens; this server's own changes wake only their sessions' waiters
/// (through [`Waiters::notify`]). The check runs even while nobody waits (a
/// few microseconds of the writer, nothing written), so the baseline stays
/// fresh: a commit made while nobody waited wakes nobody later, and a commit
/// made after a waiter read its session is never missed.
pub fn spawn_cross_process_watch(waiters: Arc<Waiters>, db: Db) {
    tokio::spawn(async move {
        let mut watch = ForeignWrites::new(db);
        let mut tick = tokio::time::interval(DATA_VERSION_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match watch.check().await {
                Ok(true) => waiters.notify_all(),
                Ok(false) => {}
                Err(e) => log::warn!("data_version check failed: {e}"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_other_connections_count_as_foreign() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("w.db");
        let db = Db::open(&path, "NORMAL").expect("open");
        let mut watch = ForeignWrites::new(db.clone());
        assert!(!watch.check().await.expect("baseline"));
        // This server's own writes go through the writer: not foreign.
        for i in 0..3 {
            db.write_async(move |tx| crate::db::users::insert(tx, "Ana", None, i))
                .await
                .expect("insert");
            assert!(!watch.check().await.expect("check"), "own write {i}");
        }
        // Another process (the CLI) has its own connection.
        let other = rusqlite::Connection::open(&path).expect("other connection");
        other
            .execute_batch("CREATE TABLE elsewhere (x INTEGER); DROP TABLE elsewhere;")
            .expect("foreign write");
        assert!(watch.check().await.expect("check"), "foreign commit seen");
        assert!(!watch.check().await.expect("check"), "seen once");
    }

    #[test]
    fn a_notify_wakes_only_its_session() {
        let w = Waiters::default();
        let a = w.subscribe("a");
        let b = w.subscribe("b");
        let (na, nb) = (a.notify().notified(), b.notify().notified());
        tokio::pin!(na);
        tokio::pin!(nb);
        na.as_mut().enable();
        nb.as_mut().enable();
        w.notify("a");
        use std::future::Future as _;
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(na.as_mut().poll(&mut cx).is_ready());
        assert!(nb.as_mut().poll(&mut cx).is_pending());
        assert_eq!(w.wakeups(), 1);
    }
}
