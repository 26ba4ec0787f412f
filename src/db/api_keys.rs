//! API keys: only the SHA-256 of a key is stored.

use rusqlite::{Connection, OptionalExtension, Row, Transaction};

use super::{parse_col, ref_clause, unique_short_id, DbResult};
use crate::domain::api_key::{ApiKey, PlainKey, Scope};
use crate::domain::ids::{new_uuid, EntityRef};
use crate::domain::time::Timestamp;

const COLS: &str = "id, short_id, name, scope, prefix, created_at, last_used_at, revoked_at";

fn from_row(r: &Row) -> rusqlite::Result<ApiKey> {
    Ok(ApiKey {
        id: r.get(0)?,
        short_id: r.get(1)?,
        name: r.get(2)?,
        scope: parse_col(r.get(3)?, Scope::parse, "scope")?,
        prefix: r.get(4)?,
        created_at: r.get(5)?,
        last_used_at: r.get(6)?,
        revoked_at: r.get(7)?,
    })
}

/// Create a key; the plaintext is returned once and never stored.
pub fn insert(
    tx: &Transaction,
    name: &str,
    scope: Scope,
    now: Timestamp,
) -> DbResult<(ApiKey, PlainKey)> {
    let plain = PlainKey::generate();
    let key = ApiKey {
        id: new_uuid(),
        short_id: unique_short_id(tx, "api_keys")?,
        name: name.to_owned(),
        scope,
        prefix: plain.prefix(),
        created_at: now,
        last_used_at: None,
        revoked_at: None,
    };
    tx.execute(
        "INSERT INTO api_keys (id, short_id, name, scope, key_hash, prefix, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        (
            &key.id,
            &key.short_id,
            &key.name,
            scope.as_str(),
            plain.hash(),
            &key.prefix,
            now,
        ),
    )?;
    Ok((key, plain))
}

/// Whether any key exists (revoked ones included).
pub fn any(conn: &Connection) -> DbResult<bool> {
    Ok(conn.query_row("SELECT EXISTS(SELECT 1 FROM api_keys)", [], |r| r.get(0))?)
}

/// Look a presented key up by its hash.
pub fn find_by_hash(conn: &Connection, hash: &str) -> DbResult<Option<ApiKey>> {
    let mut stmt =
        conn.prepare_cached(&format!("SELECT {COLS} FROM api_keys WHERE key_hash = ?1"))?;
    Ok(stmt.query_row([hash], from_row).optional()?)
}

/// One key by UUID or short id.
pub fn get(conn: &Connection, r: &EntityRef) -> DbResult<Option<ApiKey>> {
    let (cond, val) = ref_clause(r);
    Ok(conn
        .query_row(
            &format!("SELECT {COLS} FROM api_keys WHERE {cond}"),
            [val],
            from_row,
        )
        .optional()?)
}

/// Every key, newest first, revoked ones included.
pub fn list(conn: &Connection) -> DbResult<Vec<ApiKey>> {
    let mut stmt =
        conn.prepare_cached(&format!("SELECT {COLS} FROM api_keys ORDER BY seq DESC"))?;
    let rows = stmt.query_map([], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Revoke a key (idempotent: an already revoked key keeps its first `revoked_at`).
pub fn revoke(tx: &Transaction, r: &EntityRef, now: Timestamp) -> DbResult<Option<ApiKey>> {
    let (cond, val) = ref_clause(r);
    tx.execute(
        &format!("UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?2) WHERE {cond}"),
        (val, now),
    )?;
    Ok(tx
        .query_row(
            &format!("SELECT {COLS} FROM api_keys WHERE {cond}"),
            [val],
            from_row,
        )
        .optional()?)
}

/// Record that a key was used (callers throttle this).
pub fn touch(tx: &Transaction, id: &str, now: Timestamp) -> DbResult<()> {
    tx.execute(
        "UPDATE api_keys SET last_used_at = ?2 WHERE id = ?1",
        (id, now),
    )?;
    Ok(())
}
