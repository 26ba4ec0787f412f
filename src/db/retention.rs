//! Retention (CONTRACT §11 "Growth"): finished history is deleted in small
//! batches, each its own short write, so the writer is never held for more
//! than a few milliseconds; the freed pages go back to the file system
//! through `incremental_vacuum`. Connections are never pruned.
//!
//! Old rows are found from the oldest `seq` forwards (a rowid range, never a
//! scan): rows are written in time order, so the walk stops at the first row
//! that is too young.

use std::path::Path;

use rusqlite::{Connection, Transaction};

use super::DbResult;
use crate::domain::link_session::Status;
use crate::domain::time::Timestamp;

/// Where a pruning walk stands after one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Step {
    /// Rows deleted by this batch (sessions, or webhook messages).
    pub deleted: usize,
    /// Event rows deleted with the sessions.
    pub events: usize,
    /// The `seq` to continue after, or `None` when nothing older is left.
    pub next_after: Option<i64>,
}

const OLDEST_SESSIONS_SQL: &str = "SELECT seq, status, created_at FROM link_sessions
    WHERE seq > ?1 ORDER BY seq LIMIT ?2";
const DELETE_EVENTS_SQL: &str = "DELETE FROM link_session_events WHERE session_seq = ?1";
// The status guard makes the delete a compare-and-set: only a terminal session goes.
const DELETE_SESSION_SQL: &str = "DELETE FROM link_sessions
    WHERE seq = ?1 AND status IN ('completed', 'consumed', 'failed', 'expired')";

/// Delete up to `batch` terminal sessions created before `cutoff` (unix
/// seconds), with their events, looking at sessions after `after` (a `seq`;
/// 0 to start). A session still stored as live is left for the sweeper.
pub fn prune_sessions(
    tx: &Transaction,
    cutoff: Timestamp,
    after: i64,
    batch: u32,
) -> DbResult<Step> {
    let rows: Vec<(i64, String, Timestamp)> = tx
        .prepare_cached(OLDEST_SESSIONS_SQL)?
        .query_map((after, batch), |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    let mut step = Step::default();
    let full = rows.len() == batch as usize;
    for (seq, status, created_at) in rows {
        if created_at >= cutoff {
            // Everything older is done: the walk ends here.
            step.next_after = None;
            return Ok(step);
        }
        step.next_after = Some(seq);
        if !Status::parse(&status).is_some_and(Status::is_terminal) {
            continue;
        }
        step.events += tx.prepare_cached(DELETE_EVENTS_SQL)?.execute([seq])?;
        step.deleted += tx.prepare_cached(DELETE_SESSION_SQL)?.execute([seq])?;
    }
    if !full {
        step.next_after = None;
    }
    Ok(step)
}

const OLDEST_WEBHOOKS_SQL: &str =
    "SELECT seq, created_at, delivered_at, dead_at FROM webhook_outbox
    WHERE seq > ?1 ORDER BY seq LIMIT ?2";
const DELETE_WEBHOOK_SQL: &str = "DELETE FROM webhook_outbox WHERE seq = ?1";

/// Delete up to `batch` webhook messages, looking after `after` (a `seq`; 0
/// to start): delivered or dead ones that finished before `cutoff`, and
/// undelivered ones created before `undelivered_cutoff` (past the retry
/// window, so no worker would send them any more: with webhooks turned off
/// nobody ever will).
pub fn prune_webhooks(
    tx: &Transaction,
    cutoff: Timestamp,
    undelivered_cutoff: Timestamp,
    after: i64,
    batch: u32,
) -> DbResult<Step> {
    type Row = (i64, Timestamp, Option<Timestamp>, Option<Timestamp>);
    let rows: Vec<Row> = tx
        .prepare_cached(OLDEST_WEBHOOKS_SQL)?
        .query_map((after, batch), |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?
        .collect::<Result<_, _>>()?;
    let mut step = Step::default();
    let full = rows.len() == batch as usize;
    for (seq, created_at, delivered_at, dead_at) in rows {
        // A message finishes after it was created: none younger can qualify.
        if created_at >= cutoff.max(undelivered_cutoff) {
            step.next_after = None;
            return Ok(step);
        }
        step.next_after = Some(seq);
        let old = match delivered_at.or(dead_at) {
            Some(finished) => finished < cutoff,
            None => created_at < undelivered_cutoff,
        };
        if old {
            step.deleted += tx.prepare_cached(DELETE_WEBHOOK_SQL)?.execute([seq])?;
        }
    }
    if !full {
        step.next_after = None;
    }
    Ok(step)
}

/// Pages on the free list (space a vacuum could hand back).
pub fn free_pages(conn: &Connection) -> DbResult<i64> {
    Ok(conn.query_row("PRAGMA freelist_count", [], |r| r.get(0))?)
}

/// Whether the file can shrink in steps (`auto_vacuum = INCREMENTAL`).
pub fn incremental(conn: &Connection) -> DbResult<bool> {
    // A read refreshes this connection's view of the header, which another
    // connection's VACUUM may have changed.
    conn.query_row("SELECT COUNT(*) FROM sqlite_schema", [], |r| {
        r.get::<_, i64>(0)
    })?;
    let mode: i64 = conn.query_row("PRAGMA auto_vacuum", [], |r| r.get(0))?;
    Ok(mode == 2)
}

/// Hand up to `pages` free pages back to the file system (takes effect in
/// the file at the next checkpoint). Returns the pages still free.
pub fn vacuum_step(tx: &Transaction, pages: u32) -> DbResult<i64> {
    tx.execute_batch(&format!("PRAGMA incremental_vacuum({pages})"))?;
    free_pages(tx)
}

/// Switch a database to `auto_vacuum = INCREMENTAL`. In WAL mode (which
/// `Db::open` sets first) that takes a full `VACUUM`, even on a new file; it
/// rewrites the file and holds the write lock while it runs, so it is done
/// only when the file is at most `max_bytes` (a new database: instantly). Runs on its own connection, blocking; returns whether
/// the database is incremental now.
pub fn convert_to_incremental(path: &Path, max_bytes: u64) -> DbResult<bool> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    if incremental(&conn)? {
        return Ok(true);
    }
    let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    let page_size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    if u64::try_from(pages * page_size).unwrap_or(u64::MAX) > max_bytes {
        return Ok(false);
    }
    conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL; VACUUM;")?;
    incremental(&conn)
}

/// Every statement this module runs, as `(name, sql)`, for the query-plan
/// test (`db::queries`).
pub fn queries() -> Vec<(String, String)> {
    [
        ("retention.oldest_sessions", OLDEST_SESSIONS_SQL),
        ("retention.delete_events", DELETE_EVENTS_SQL),
        ("retention.delete_session", DELETE_SESSION_SQL),
        ("retention.oldest_webhooks", OLDEST_WEBHOOKS_SQL),
        ("retention.delete_webhook", DELETE_WEBHOOK_SQL),
    ]
    .into_iter()
    .map(|(n, s)| (n.to_owned(), s.to_owned()))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::Db;

    fn session(tx: &Transaction, user: &str, status: &str, created: Timestamp) -> DbResult<()> {
        let id = crate::domain::ids::new_uuid();
        tx.execute(
            "INSERT INTO link_sessions (id, short_id, token_hash, user_id, action, single_use,
                status, expires_at, created_at)
             VALUES (?1, ?2, ?1, ?3, 'link', 0, ?4, ?5 + 900, ?5)",
            rusqlite::params![
                id,
                crate::domain::ids::new_short_id(),
                user,
                status,
                created
            ],
        )?;
        crate::db::events::insert(tx, &id, "session.created", created, &serde_json::json!({}))
    }

    #[test]
    fn the_walk_deletes_old_terminal_rows_only_and_stops_at_young_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(&dir.path().join("walk.db"), "NORMAL").expect("open");
        db.write(|tx| {
            let u = crate::db::users::insert(tx, "Ana", None, 0)?;
            session(tx, &u.id, "completed", 100)?;
            session(tx, &u.id, "pending", 110)?; // stored live: left for the sweeper
            session(tx, &u.id, "expired", 120)?;
            session(tx, &u.id, "failed", 1_000)?; // young
            Ok(())
        })
        .expect("rows");
        let step = db
            .write(|tx| prune_sessions(tx, 500, 0, 10))
            .expect("prune");
        assert_eq!((step.deleted, step.events, step.next_after), (2, 2, None));
        let left: Vec<String> = db
            .read(|c| {
                let mut q = c.prepare("SELECT status FROM link_sessions ORDER BY seq")?;
                let rows = q.query_map([], |r| r.get(0))?;
                Ok(rows.collect::<Result<_, _>>()?)
            })
            .expect("left");
        assert_eq!(left, ["pending", "failed"]);

        // Webhooks: finished before the cutoff go; undelivered only past the window.
        let ids: Vec<String> = [100, 200, 300, 9_000]
            .into_iter()
            .map(|at| {
                db.write(|tx| crate::db::outbox::enqueue(tx, "t", &serde_json::json!({}), at))
                    .expect("enqueue")
            })
            .collect();
        let first = ids[0].clone();
        db.write(move |tx| crate::db::outbox::mark_delivered(tx, &first, 150))
            .expect("delivered");
        let step = db
            .write(move |tx| prune_webhooks(tx, 5_000, 250, 0, 2))
            .expect("prune");
        assert_eq!(
            (step.deleted, step.next_after),
            (2, Some(2)),
            "a full batch"
        );
        let step = db
            .write(move |tx| prune_webhooks(tx, 5_000, 250, 2, 2))
            .expect("prune");
        assert_eq!(
            (step.deleted, step.next_after),
            (0, None),
            "300 is in its window"
        );
        assert_eq!(db.read(crate::db::outbox::pending_count).expect("n"), 2);
    }

    #[test]
    fn a_small_database_is_switched_to_incremental_vacuum() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("new.db");
        let db = Db::open(&path, "NORMAL").expect("open");
        assert!(!db.read(incremental).expect("mode"), "WAL first: off");
        assert!(!convert_to_incremental(&path, 1024).expect("too big"));
        assert!(convert_to_incremental(&path, 1 << 20).expect("convert"));
        assert!(
            db.read(incremental).expect("mode"),
            "auto_vacuum = INCREMENTAL"
        );
        assert!(convert_to_incremental(&path, 0).expect("already"));
    }
}
