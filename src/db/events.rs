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

/// Append an event.
pub fn insert(
    tx: &Transaction,
    session_id: &str,
    kind: &str,
    at: Timestamp,
    detail: &serde_json::Value,
) -> DbResult<()> {
    tx.prepare_cached(
        "INSERT INTO link_session_events (id, session_id, type, at, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute((new_uuid(), session_id, kind, at, detail.to_string()))?;
    Ok(())
}

/// A session's events, oldest first.
pub fn list(conn: &Connection, session_id: &str) -> DbResult<Vec<Event>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, type, at, detail FROM link_session_events WHERE session_id = ?1 ORDER BY seq",
    )?;
    let rows = stmt.query_map([session_id], |r| {
        let detail: String = r.get(3)?;
        Ok(Event {
            id: r.get(0)?,
            kind: r.get(1)?,
            at: r.get(2)?,
            detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::Null),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}
