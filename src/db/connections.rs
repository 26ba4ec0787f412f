//! Bank connections.

use rusqlite::Connection as SqlConnection;
use serde::Serialize;

use super::{connection_events, outbox, DbError, DbResult, Emit};
use crate::domain::connection::{
    apply_signal, masks_overlap, Account, Connection, ConnectionStatus, Signal,
};
use crate::domain::ids::EntityRef;
use crate::domain::time::Timestamp;

/// What the hosted page may show of a connection.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// UUID.
    pub id: String,
    /// `plaid` or `teller`.
    pub provider: String,
    /// The bank's name.
    pub institution_name: String,
    /// The connection's accounts (`id, name, mask, type, subtype`).
    pub accounts: Vec<Account>,
}

/// Summaries of the given connections, in the given order.
pub fn summaries(conn: &SqlConnection, ids: &[String]) -> DbResult<Vec<Summary>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, provider, institution_name, accounts FROM connections WHERE id = ?1",
    )?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let mut rows = stmt.query_map([id], |r| {
            Ok(Summary {
                id: r.get(0)?,
                provider: r.get(1)?,
                institution_name: r.get(2)?,
                accounts: accounts_col(r.get(3)?),
            })
        })?;
        if let Some(s) = rows.next() {
            out.push(s?);
        }
    }
    Ok(out)
}

const COLS: &str = "id, short_id, user_id, provider, institution_id, institution_name, status, \
    error_code, error_message, created_at, updated_at, accounts, access_expires_at, \
    new_accounts_available, last_checked_at";

/// The stored accounts JSON; a value that does not parse reads as no accounts.
fn accounts_col(raw: String) -> Vec<Account> {
    serde_json::from_str(&raw).unwrap_or_default()
}

fn accounts_json(accounts: &[Account]) -> DbResult<String> {
    serde_json::to_string(accounts).map_err(|e| DbError::Corrupt(e.to_string()))
}

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
        accounts: accounts_col(r.get(11)?),
        access_expires_at: r.get(12)?,
        new_accounts_available: r.get(13)?,
        last_checked_at: r.get(14)?,
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
    let changed = tx.execute(
        "UPDATE connections SET status = 'disconnected', credential = NULL, updated_at = ?2
         WHERE id = ?1 AND status != 'disconnected'",
        (&id, now),
    )?;
    if changed == 1 {
        let detail = serde_json::json!({
            "reason": "disconnected", "source": "api", "from": conn.status.as_str(),
            "to": "disconnected", "error_code": conn.error_code,
        });
        connection_events::insert(tx, &id, "connection.status_changed", now, &detail)?;
    }
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
    /// The accounts the provider reported.
    pub accounts: Vec<Account>,
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
            external_id, credential, status, created_at, updated_at, accounts)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'active', ?9, ?9, ?10)",
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
        accounts_json(&new.accounts)?,
    ])?;
    get(tx, &crate::domain::ids::EntityRef::Uuid(new.id.clone()))?
        .ok_or_else(|| super::DbError::Corrupt("connection vanished".into()))
}

/// A relinked connection works again: its accounts refreshed (when given)
/// and its health cleared, recorded as a change. Returns false when it is
/// disconnected (or gone).
pub fn relinked(
    tx: &rusqlite::Transaction,
    id: &str,
    accounts: Option<&[Account]>,
    now: Timestamp,
    emit: Emit,
) -> DbResult<bool> {
    let live = match get(tx, &EntityRef::Uuid(id.to_owned()))? {
        Some(c) => c.status != ConnectionStatus::Disconnected,
        None => false,
    };
    if !live {
        return Ok(false);
    }
    if let Some(accounts) = accounts {
        tx.execute(
            "UPDATE connections SET accounts = ?2, updated_at = ?3
             WHERE id = ?1 AND status != 'disconnected'",
            (id, accounts_json(accounts)?, now),
        )?;
    }
    apply_health(tx, id, &Signal::Relinked, "relink", now, emit)?;
    Ok(true)
}

/// A health change that was applied.
#[derive(Debug)]
pub struct HealthChanged {
    /// The connection afterwards.
    pub connection: Connection,
    /// The credential wiped by a revocation (to tell the provider), if any.
    pub wiped: Option<Credential>,
}

/// Apply provider news to a connection as one compare-and-set on its health
/// fields, recording the change on its timeline and queueing
/// `connection.status_changed` (and, the first time an end of access is
/// announced, `connection.access_expiring`). `None` when nothing changed:
/// unknown id, disconnected, or the news was already applied.
pub fn apply_health(
    tx: &rusqlite::Transaction,
    id: &str,
    signal: &Signal,
    source: &str,
    now: Timestamp,
    emit: Emit,
) -> DbResult<Option<HealthChanged>> {
    let Some(conn) = get(tx, &EntityRef::Uuid(id.to_owned()))? else {
        return Ok(None);
    };
    let before = conn.health();
    let Some(out) = apply_signal(&before, signal) else {
        return Ok(None);
    };
    let h = &out.health;
    let wiped = if h.status == ConnectionStatus::Disconnected {
        credential(tx, id)?
    } else {
        None
    };
    let changed = tx
        .prepare_cached(
            "UPDATE connections SET status = ?2, error_code = ?3, error_message = ?4,
                access_expires_at = ?5, new_accounts_available = ?6, updated_at = ?7,
                credential = CASE WHEN ?2 = 'disconnected' THEN NULL ELSE credential END
             WHERE id = ?1 AND status = ?8 AND error_code IS ?9 AND error_message IS ?10
               AND access_expires_at IS ?11 AND new_accounts_available = ?12",
        )?
        .execute(rusqlite::params![
            id,
            h.status.as_str(),
            h.error_code,
            h.error_message,
            h.access_expires_at,
            h.new_accounts_available,
            now,
            before.status.as_str(),
            before.error_code,
            before.error_message,
            before.access_expires_at,
            before.new_accounts_available,
        ])?;
    if changed != 1 {
        return Ok(None);
    }
    let conn = get(tx, &EntityRef::Uuid(id.to_owned()))?
        .ok_or_else(|| DbError::Corrupt("connection vanished".into()))?;
    let detail = serde_json::json!({
        "reason": out.reason,
        "source": source,
        "from": before.status.as_str(),
        "to": h.status.as_str(),
        "error_code": h.error_code,
    });
    connection_events::insert(tx, id, "connection.status_changed", now, &detail)?;
    if out.expiring_notice {
        let detail = serde_json::json!({
            "access_expires_at": h.access_expires_at.map(crate::domain::time::rfc3339),
            "source": source,
        });
        connection_events::insert(tx, id, "connection.access_expiring", now, &detail)?;
    }
    if emit.webhooks {
        let mut data = serde_json::to_value(&conn).map_err(|e| DbError::Corrupt(e.to_string()))?;
        data["reason"] = serde_json::json!(out.reason);
        outbox::enqueue(tx, "connection.status_changed", &data, now)?;
        if out.expiring_notice {
            data["reason"] = serde_json::json!("access_expiring");
            outbox::enqueue(tx, "connection.access_expiring", &data, now)?;
        }
    }
    Ok(Some(HealthChanged {
        connection: conn,
        wiped,
    }))
}

/// The member's active connection at the same institution sharing an
/// account mask with `accounts` (the §10 duplicate rule), if any. The
/// institution matches by provider id within one provider, else by name.
pub fn find_duplicate(
    conn: &SqlConnection,
    user_id: &str,
    provider: &str,
    institution_id: &str,
    institution_name: &str,
    accounts: &[Account],
    except: Option<&str>,
) -> DbResult<Option<Connection>> {
    let candidates = list(conn, Some(user_id), Some(ConnectionStatus::Active))?;
    Ok(candidates.into_iter().find(|c| {
        if Some(c.id.as_str()) == except {
            return false;
        }
        let same_id = c.provider == provider
            && !institution_id.is_empty()
            && c.institution_id == institution_id;
        let same_name = !institution_name.trim().is_empty()
            && c.institution_name
                .trim()
                .eq_ignore_ascii_case(institution_name.trim());
        (same_id || same_name) && masks_overlap(&c.accounts, accounts)
    }))
}

/// How many connections a health check can reach (not disconnected, with a credential).
pub fn checkable_count(conn: &SqlConnection) -> DbResult<i64> {
    Ok(conn.query_row(
        "SELECT COUNT(*) FROM connections WHERE status != 'disconnected' AND credential IS NOT NULL",
        [],
        |r| r.get(0),
    )?)
}

/// The checkable connection whose health is oldest news, with when that news
/// was had: its last check, or its creation (linking proves it worked).
pub fn next_to_check(conn: &SqlConnection) -> DbResult<Option<(String, Timestamp)>> {
    use rusqlite::OptionalExtension as _;
    Ok(conn
        .query_row(
            "SELECT id, COALESCE(last_checked_at, created_at) AS seen FROM connections
             WHERE status != 'disconnected' AND credential IS NOT NULL
             ORDER BY seen, last_checked_at IS NOT NULL, seq LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?)
}

/// The checkable connections whose last news (check, else creation) is at
/// or before `seen_before`, oldest news first.
pub fn due_for_check(conn: &SqlConnection, seen_before: Timestamp) -> DbResult<Vec<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id FROM connections
         WHERE status != 'disconnected' AND credential IS NOT NULL
           AND COALESCE(last_checked_at, created_at) <= ?1
         ORDER BY COALESCE(last_checked_at, created_at), seq",
    )?;
    let rows = stmt.query_map([seen_before], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Stamp `last_checked_at` after a health check.
pub fn mark_checked(tx: &rusqlite::Transaction, id: &str, now: Timestamp) -> DbResult<()> {
    tx.execute(
        "UPDATE connections SET last_checked_at = ?2 WHERE id = ?1",
        (id, now),
    )?;
    Ok(())
}

/// The live connection a provider id belongs to (Plaid item, Teller enrollment).
pub fn by_external_id(
    conn: &SqlConnection,
    provider: &str,
    external_id: &str,
) -> DbResult<Option<String>> {
    live_with_external_id(conn, provider, external_id, None)
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
