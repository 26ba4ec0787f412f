//! The webhook outbox: messages are enqueued in the transaction that makes
//! the state change they report, and the webhook worker delivers them.

use rusqlite::{Connection, Transaction};
use serde_json::json;

use super::DbResult;
use crate::domain::ids::random_base62;
use crate::domain::time::{rfc3339, Timestamp};

// Undelivered rows are found through the partial index `webhook_outbox_pending`.
const ENQUEUE_SQL: &str =
    "INSERT INTO webhook_outbox (id, event_type, payload, created_at, next_attempt_at)
    VALUES (?1, ?2, ?3, ?4, ?4)";
const DUE_SQL: &str = "SELECT id, event_type, payload, created_at, attempts FROM webhook_outbox
    WHERE delivered_at IS NULL AND dead_at IS NULL AND next_attempt_at <= ?1
    ORDER BY seq LIMIT ?2";
const DELIVERED_SQL: &str = "UPDATE webhook_outbox SET delivered_at = ?2, attempts = attempts + 1
    WHERE id = ?1 AND delivered_at IS NULL AND dead_at IS NULL";
const FAILED_SQL: &str =
    "UPDATE webhook_outbox SET attempts = ?2, next_attempt_at = ?3, last_error = ?4
    WHERE id = ?1 AND delivered_at IS NULL AND dead_at IS NULL";
const DEAD_SQL: &str =
    "UPDATE webhook_outbox SET dead_at = ?2, attempts = attempts + 1, last_error = ?3
    WHERE id = ?1 AND delivered_at IS NULL AND dead_at IS NULL";
const PENDING_COUNT_SQL: &str = "SELECT COUNT(*) FROM webhook_outbox
    WHERE delivered_at IS NULL AND dead_at IS NULL";

/// One message waiting to be delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Standard Webhooks message id (`webhook-id`), fixed for every attempt.
    pub id: String,
    /// Event type, e.g. `link_session.completed`.
    pub event_type: String,
    /// The exact JSON body to send.
    pub payload: String,
    /// When the message was enqueued (unix seconds).
    pub created_at: Timestamp,
    /// Attempts made so far.
    pub attempts: u32,
}

/// A new message id: `msg_` + 27 random base62 characters.
fn new_message_id() -> String {
    format!("msg_{}", random_base62(27))
}

/// Queue a `{"type","timestamp","data"}` message for delivery, due at once.
/// Call it inside the transaction that makes the change it reports.
/// Returns the message id.
pub fn enqueue(
    tx: &Transaction,
    event_type: &str,
    data: &serde_json::Value,
    now: Timestamp,
) -> DbResult<String> {
    let id = new_message_id();
    let body = json!({"type": event_type, "timestamp": rfc3339(now), "data": data});
    tx.prepare_cached(ENQUEUE_SQL)?.execute(rusqlite::params![
        id,
        event_type,
        body.to_string(),
        now
    ])?;
    Ok(id)
}

/// Up to `limit` undelivered, live messages due at `now`, oldest first.
pub fn due(conn: &Connection, now: Timestamp, limit: u32) -> DbResult<Vec<Delivery>> {
    let mut stmt = conn.prepare_cached(DUE_SQL)?;
    let rows = stmt.query_map(rusqlite::params![now, limit], |r| {
        Ok(Delivery {
            id: r.get(0)?,
            event_type: r.get(1)?,
            payload: r.get(2)?,
            created_at: r.get(3)?,
            attempts: r.get(4)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Record a successful attempt. False when the message was already finished.
pub fn mark_delivered(tx: &Transaction, id: &str, now: Timestamp) -> DbResult<bool> {
    let n = tx
        .prepare_cached(DELIVERED_SQL)?
        .execute(rusqlite::params![id, now])?;
    Ok(n == 1)
}

/// Record a failed attempt: `attempts` made so far, when to try again, and why.
/// False when the message was already finished.
pub fn mark_failed(
    tx: &Transaction,
    id: &str,
    attempts: u32,
    next_attempt_at: Timestamp,
    error: &str,
) -> DbResult<bool> {
    let n = tx.prepare_cached(FAILED_SQL)?.execute(rusqlite::params![
        id,
        attempts,
        next_attempt_at,
        error
    ])?;
    Ok(n == 1)
}

/// Give up on a message after a last failed attempt.
/// False when the message was already finished.
pub fn mark_dead(tx: &Transaction, id: &str, now: Timestamp, error: &str) -> DbResult<bool> {
    let n = tx
        .prepare_cached(DEAD_SQL)?
        .execute(rusqlite::params![id, now, error])?;
    Ok(n == 1)
}

/// How many messages still wait for delivery (neither delivered nor dead).
pub fn pending_count(conn: &Connection) -> DbResult<i64> {
    Ok(conn
        .prepare_cached(PENDING_COUNT_SQL)?
        .query_row([], |r| r.get(0))?)
}

/// Every statement this module runs, as `(name, sql)`, for the query-plan
/// test (`db::queries`).
pub fn queries() -> Vec<(String, String)> {
    [
        ("outbox.enqueue", ENQUEUE_SQL),
        ("outbox.due", DUE_SQL),
        ("outbox.mark_delivered", DELIVERED_SQL),
        ("outbox.mark_failed", FAILED_SQL),
        ("outbox.mark_dead", DEAD_SQL),
        ("outbox.pending_count", PENDING_COUNT_SQL),
    ]
    .into_iter()
    .map(|(n, s)| (n.to_owned(), s.to_owned()))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::Db;

    fn db() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(&dir.path().join("t.db"), "NORMAL").expect("open");
        (dir, db)
    }

    #[test]
    fn enqueue_builds_the_body_once() {
        let (_dir, db) = db();
        let id = db
            .write(|tx| {
                enqueue(
                    tx,
                    "link_session.active",
                    &json!({"id": "s1"}),
                    1_699_335_116,
                )
            })
            .expect("enqueue");
        assert!(id.starts_with("msg_") && id.len() == 31, "{id}");
        let due = db.read(|c| due(c, 1_699_335_116, 10)).expect("due");
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].id, id);
        assert_eq!(
            due[0].payload,
            r#"{"type":"link_session.active","timestamp":"2023-11-07T05:31:56Z","data":{"id":"s1"}}"#
        );
        assert_eq!(due[0].attempts, 0);
    }

    #[test]
    fn lifecycle() {
        let (_dir, db) = db();
        let now = 1_000_000;
        let a = db.write(|tx| enqueue(tx, "a", &json!({}), now)).expect("a");
        let b = db.write(|tx| enqueue(tx, "b", &json!({}), now)).expect("b");
        let ids = |t| -> Vec<String> {
            let due = db.read(|c| due(c, t, 10)).expect("due");
            due.into_iter().map(|d| d.id).collect()
        };
        assert_eq!(ids(now), [a.as_str(), b.as_str()]);
        assert!(ids(now - 1).is_empty());

        assert!(db
            .write(|tx| mark_failed(tx, &a, 1, now + 10, "HTTP 500"))
            .expect("fail"));
        assert_eq!(ids(now), [b.as_str()]);
        assert_eq!(ids(now + 10), [a.as_str(), b.as_str()]);

        assert!(db.write(|tx| mark_delivered(tx, &b, now)).expect("ok"));
        assert!(!db.write(|tx| mark_delivered(tx, &b, now)).expect("again"));
        assert!(db
            .write(|tx| mark_dead(tx, &a, now + 20, "x"))
            .expect("dead"));
        assert!(ids(now + 1_000_000).is_empty());
        assert_eq!(db.read(pending_count).expect("count"), 0);

        let keep = db.write(|tx| enqueue(tx, "c", &json!({}), now)).expect("c");
        assert_eq!(db.read(pending_count).expect("count"), 1);
        assert_eq!(ids(now), [keep.as_str()]);
    }
}
