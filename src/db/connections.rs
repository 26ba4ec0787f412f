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
) -> DbResult<Option<(Connection, Option<Credential>)>> {
    let Some(conn) = get(tx, r)? else {
        return Ok(None);
    };
    let id = conn.id.clone();
    let credential = credential(tx, &id)?;
    tx.execute(
        "UPDATE connections SET status = 'disconnected', credential = NULL, updated_at = ?2
         WHERE id = ?1 AND status != 'disconnected'",
        (&id, now),
    )?;
    let conn = get(tx, &crate::domain::ids::EntityRef::Uuid(id))?
        .ok_or_else(|| super::DbError::Corrupt("connection vanished".into()))?;
    Ok(Some((conn, credential)))
}

/// A connection's sealed provider credential and the provider's id for it
/// (Plaid item id, Teller enrollment id).
#[derive(Clone)]
pub struct Credential {
    /// AEAD ciphertext of the access token (associated data: the connection id).
    pub sealed: Vec<u8>,
    /// Plaid `item_id` or Teller `enrollment_id`.
    pub external_id: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("external_id", &self.external_id)
            .finish_non_exhaustive()
    }
}

/// The sealed credential of a connection, if it still has one.
pub fn credential(conn: &SqlConnection, id: &str) -> DbResult<Option<Credential>> {
    use rusqlite::OptionalExtension as _;
    Ok(conn
        .query_row(
            "SELECT credential, external_id FROM connections WHERE id = ?1 AND credential IS NOT NULL",
            [id],
            |r| Ok(Credential { sealed: r.get(0)?, external_id: r.get(1)? }),
        )
        .optional()?)
}

/// A connection about to be stored.
#[derive(Debug, Clone)]
pub struct NewConnection {
    /// Pre-generated UUID (the credential is sealed to it).
    pub id: String,
    /// Owner's UUID.
    pub user_id: String,
    /// `plaid` or `teller`.
    pub provider: &'static str,
    /// Provider's institution id.
    pub institution_id: String,
    /// Bank name.
    pub institution_name: String,
    /// Sealed credential and provider id.
    pub credential: Credential,
}

/// Store a new active connection.
pub fn insert(
    tx: &rusqlite::Transaction,
    new: &NewConnection,
    now: crate::domain::time::Timestamp,
) -> DbResult<Connection> {
    let short_id = super::unique_short_id(tx, "connections")?;
    tx.prepare_cached(
        "INSERT INTO connections (id, short_id, user_id, provider, institution_id, institution_name,
            external_id, credential, status, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'active', ?9, ?9)",
    )?
    .execute(rusqlite::params![
        new.id,
        short_id,
        new.user_id,
        new.provider,
        new.institution_id,
        new.institution_name,
        new.credential.external_id,
        new.credential.sealed,
        now,
    ])?;
    get(tx, &crate::domain::ids::EntityRef::Uuid(new.id.clone()))?
        .ok_or_else(|| super::DbError::Corrupt("connection vanished".into()))
}

/// A re-authenticated connection works again: `active`, errors cleared.
/// Returns false when it is disconnected (or gone).
pub fn reactivate(
    tx: &rusqlite::Transaction,
    id: &str,
    now: crate::domain::time::Timestamp,
) -> DbResult<bool> {
    Ok(tx.execute(
        "UPDATE connections SET status = 'active', error_code = NULL, error_message = NULL, updated_at = ?2
         WHERE id = ?1 AND status != 'disconnected'",
        (id, now),
    )? == 1)
}

/// A connection (not disconnected) holding this provider id, other than `except`.
pub fn live_with_external_id(
    conn: &SqlConnection,
    provider: &str,
    external_id: &str,
    except: Option<&str>,
) -> DbResult<Option<String>> {
    use rusqlite::OptionalExtension as _;
    Ok(conn
        .query_row(
            "SELECT id FROM connections
             WHERE provider = ?1 AND external_id = ?2 AND status != 'disconnected'
               AND id IS NOT ?3 LIMIT 1",
            (provider, external_id, except),
            |r| r.get(0),
        )
        .optional()?)
}
