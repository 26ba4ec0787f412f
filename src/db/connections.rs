//! Bank connections.

use rusqlite::Connection as SqlConnection;
use serde::Serialize;

use super::DbResult;
use crate::domain::connection::{Connection, ConnectionStatus};

/// What the hosted page may show of a connection.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// UUID.
    pub id: String,
    /// `plaid` or `teller`.
    pub provider: String,
    /// The bank's name.
    pub institution_name: String,
}

/// Summaries of the given connections, in the given order.
pub fn summaries(conn: &SqlConnection, ids: &[String]) -> DbResult<Vec<Summary>> {
    let mut stmt = conn
        .prepare_cached("SELECT id, provider, institution_name FROM connections WHERE id = ?1")?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let mut rows = stmt.query_map([id], |r| {
            Ok(Summary {
                id: r.get(0)?,
                provider: r.get(1)?,
                institution_name: r.get(2)?,
            })
        })?;
        if let Some(s) = rows.next() {
            out.push(s?);
        }
    }
    Ok(out)
}

const COLS: &str = "id, short_id, user_id, provider, institution_id, institution_name, status, \
    error_code, error_message, created_at, updated_at";

fn from_row(r: &rusqlite::Row) -> rusqlite::Result<Connection> {
    Ok(Connection {
        id: r.get(0)?,
        short_id: r.get(1)?,
        user_id: r.get(2)?,
        provider: r.get(3)?,
        institution_id: r.get(4)?,
        institution_name: r.get(5)?,
        status: super::parse_col(r.get(6)?, ConnectionStatus::parse, "connection status")?,
        error_code: r.get(7)?,
        error_message: r.get(8)?,
        created_at: r.get(9)?,
        updated_at: r.get(10)?,
    })
}

/// Connections, oldest first, optionally for one user and/or in one status.
pub fn list(
    conn: &SqlConnection,
    user_id: Option<&str>,
    status: Option<ConnectionStatus>,
) -> DbResult<Vec<Connection>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLS} FROM connections
         WHERE (?1 IS NULL OR user_id = ?1) AND (?2 IS NULL OR status = ?2) ORDER BY seq"
    ))?;
    let rows = stmt.query_map((user_id, status.map(ConnectionStatus::as_str)), from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// One connection by UUID or short id.
pub fn get(
    conn: &SqlConnection,
    r: &crate::domain::ids::EntityRef,
) -> DbResult<Option<Connection>> {
    use rusqlite::OptionalExtension as _;
    let (cond, val) = super::ref_clause(r);
    Ok(conn
        .query_row(
            &format!("SELECT {COLS} FROM connections WHERE {cond}"),
            [val],
            from_row,
        )
        .optional()?)
}

/// Mark a connection disconnected and wipe its credential, returning the
/// updated connection and the credential it had (for telling the provider).
pub fn disconnect(
    tx: &rusqlite::Transaction,
    r: &crate::domain::ids::EntityRef,
    now: crate::domain::time::Timestamp,
) -> DbResult<Option<(Connection, Option<Vec<u8>>)>> {
    use rusqlite::OptionalExtension as _;
    let (cond, val) = super::ref_clause(r);
    let Some((id, credential)) = tx
        .query_row(
            &format!("SELECT id, credential FROM connections WHERE {cond}"),
            [val],
            |row| Ok((row.get::<_, String>(0)?, row.get::<_, Option<Vec<u8>>>(1)?)),
        )
        .optional()?
    else {
        return Ok(None);
    };
    tx.execute(
        "UPDATE connections SET status = 'disconnected', credential = NULL, updated_at = ?2
         WHERE id = ?1 AND status != 'disconnected'",
        (&id, now),
    )?;
    let conn = get(tx, &crate::domain::ids::EntityRef::Uuid(id))?
        .ok_or_else(|| super::DbError::Corrupt("connection vanished".into()))?;
    Ok(Some((conn, credential)))
}
