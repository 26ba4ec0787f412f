//! Wake-ups for long-poll waiters: one `Notify` per watched session, no
//! thread and no database connection held while waiting.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// Registry of sessions somebody is waiting on.
#[derive(Default)]
pub struct Waiters {
    map: Mutex<HashMap<String, Arc<Notify>>>,
}

impl Waiters {
    /// The notifier for `session_id` (registered until the last holder drops it).
    pub fn subscribe(&self, session_id: &str) -> Arc<Notify> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(session_id.to_owned()).or_default().clone()
    }

    /// Forget `session_id` if nobody but the registry holds its notifier.
    pub fn release(&self, session_id: &str) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map
            .get(session_id)
            .is_some_and(|n| Arc::strong_count(n) == 1)
        {
            map.remove(session_id);
        }
    }

    /// Wake everybody waiting on `session_id`.
    pub fn notify(&self, session_id: &str) {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get(session_id) {
            n.notify_waiters();
        }
    }

    /// Wake every waiter (another process changed the database).
    pub fn notify_all(&self) {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        for n in map.values() {
            n.notify_waiters();
        }
    }

    /// How many sessions are being watched.
    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether nobody waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
