//! Wake-ups for long-poll waiters: one `Notify` per watched session, no
//! thread and no database connection held while waiting. Changes made by
//! another process (the CLI) are noticed through SQLite's `data_version`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

/// Registry of sessions somebody is waiting on.
#[derive(Default)]
pub struct Waiters {
    map: Mutex<HashMap<String, Arc<Notify>>>,
    closing: AtomicBool,
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

    /// Wake everybody waiting on `session_id`.
    pub fn notify(&self, session_id: &str) {
        if let Some(n) = self.lock().get(session_id) {
            n.notify_waiters();
        }
    }

    /// Wake every waiter (another process changed the database).
    pub fn notify_all(&self) {
        for n in self.lock().values() {
            n.notify_waiters();
        }
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

/// Watch the database file for commits by other processes and wake all
/// waiters when one happens. Costs nothing while nobody waits.
pub fn spawn_cross_process_watch(waiters: Arc<Waiters>, db_path: &Path) {
    let path = db_path.to_owned();
    tokio::spawn(async move {
        let mut conn: Option<Arc<Mutex<rusqlite::Connection>>> = None;
        let mut last: Option<i64> = None;
        let mut tick = tokio::time::interval(DATA_VERSION_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if waiters.is_empty() {
                continue;
            }
            let c = match &conn {
                Some(c) => c.clone(),
                None => match rusqlite::Connection::open(&path) {
                    Ok(c) => {
                        let c = Arc::new(Mutex::new(c));
                        conn = Some(c.clone());
                        c
                    }
                    Err(e) => {
                        log::warn!("cannot watch the database for other writers: {e}");
                        continue;
                    }
                },
            };
            let version = tokio::task::spawn_blocking(move || {
                let c = c.lock().unwrap_or_else(|p| p.into_inner());
                c.query_row("PRAGMA data_version", [], |r| r.get::<_, i64>(0))
            })
            .await;
            match version {
                Ok(Ok(v)) => {
                    if last.is_some_and(|l| l != v) {
                        waiters.notify_all();
                    }
                    last = Some(v);
                }
                Ok(Err(e)) => log::warn!("data_version check failed: {e}"),
                Err(e) => log::warn!("data_version task failed: {e}"),
            }
        }
    });
}
