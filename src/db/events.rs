//! The audit timeline of a link session.

use rusqlite::{Connection, Transaction};
use serde::Serialize;

use super::DbResult;
use crate::domain::ids::new_uuid;
use crate::domain::time::{self, Timestamp};

/// One timeline entry.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// UUID.
    pub id: String,
    /// e.g. `session.created`.
    #[serde(rename = "type")]
    pub kind: String,
    /// When it happened.
    #[serde(serialize_with = "time::ser")]
    pub at: Timestamp,
    /// Small JSON object.
    pub detail: serde_json::Value,
}

const INSERT_SQL: &str = "INSERT INTO link_session_events (id, session_seq, type, at, detail)
    VALUES (?1, (SELECT seq FROM link_sessions WHERE id = ?2), ?3, ?4, ?5)";
const INSERT_AT_SQL: &str = "INSERT INTO link_session_events (id, session_seq, type, at, detail)
    VALUES (?1, ?2, ?3, ?4, ?5)";

/// Append an event to session `session_id` (UUID).
pub fn insert(
    tx: &Transaction,
    session_id: &str,
    kind: &str,
    at: Timestamp,
    detail: &serde_json::Value,
) -> DbResult<()> {
    tx.prepare_cached(INSERT_SQL)?.execute((
        new_uuid(),
        session_id,
        kind,
        at,
        detail.to_string(),
    ))?;
    Ok(())
}

/// Append an event to the session at position `session_seq` (its `seq`),
/// when the caller has it already (a mint: the row it just inserted).
pub fn insert_at(
    tx: &Transaction,
    session_seq: i64,
    kind: &str,
    at: Timestamp,
    detail: &serde_json::Value,
) -> DbResult<()> {
    tx.prepare_cached(INSERT_AT_SQL)?.execute((
        new_uuid(),
        session_seq,
        kind,
        at,
        detail.to_string(),
    ))?;
    Ok(())
}

const LIST_SQL: &str = "SELECT id, type, at, detail, seq FROM link_session_events
    WHERE session_seq = (SELECT seq FROM link_sessions WHERE id = ?1) AND seq > ?2
    ORDER BY seq LIMIT ?3";

/// A page of a session's events, oldest first: at most `limit` after the
/// position `after_seq` (from a cursor), and the position to continue after
/// when more remain.
pub fn list(
    conn: &Connection,
    session_id: &str,
    after_seq: Option<i64>,
    limit: u32,
) -> DbResult<(Vec<Event>, Option<i64>)> {
    let mut stmt = conn.prepare_cached(LIST_SQL)?;
    let rows = stmt.query_map(
        (session_id, after_seq.unwrap_or(0), i64::from(limit) + 1),
        event_with_seq,
    )?;
    Ok(super::split_page(rows.collect::<Result<_, _>>()?, limit))
}

/// An event and its `seq` from a row of `id, type, at, detail, seq` (the
/// columns both timelines select).
pub(super) fn event_with_seq(r: &rusqlite::Row) -> rusqlite::Result<(Event, i64)> {
    let detail: String = r.get(3)?;
    Ok((
        Event {
            id: r.get(0)?,
            kind: r.get(1)?,
            at: r.get(2)?,
            detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::Null),
        },
        r.get(4)?,
    ))
}

const COUNT_SQL: &str = "SELECT COUNT(*) FROM (SELECT 1 FROM link_session_events
    WHERE session_seq = (SELECT seq FROM link_sessions WHERE id = ?1)
    AND type IN (SELECT value FROM json_each(?2)) LIMIT ?3)";

/// How many events of the given types a session has, counting at most `cap`
/// (so the cost stays bounded whatever the session holds).
pub fn count_capped(
    conn: &Connection,
    session_id: &str,
    types: &[&str],
    cap: u32,
) -> DbResult<u32> {
    let mut stmt = conn.prepare_cached(COUNT_SQL)?;
    let types = serde_json::to_string(types).map_err(|e| super::DbError::Corrupt(e.to_string()))?;
    Ok(stmt.query_row((session_id, types, cap), |r| r.get(0))?)
}

/// Every statement this module runs, as `(name, sql)`, for the query-plan
/// test (`db::queries`).
pub fn queries() -> Vec<(String, String)> {
    [
        ("events.insert", INSERT_SQL),
        ("events.insert_at", INSERT_AT_SQL),
        ("events.list", LIST_SQL),
        ("events.count_capped", COUNT_SQL),
    ]
    .into_iter()
    .map(|(n, s)| (n.to_owned(), s.to_owned()))
    .collect()
}
