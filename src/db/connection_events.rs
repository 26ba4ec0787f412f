//! The health timeline of a connection (`GET /api/v1/connections/{id}/events`)
//! and the receipts that make inbound provider webhooks count once.

use rusqlite::{Connection, Transaction};

use super::events::Event;
use super::DbResult;
use crate::domain::ids::new_uuid;
use crate::domain::time::Timestamp;

/// Receipts of verified provider webhooks are kept this long (seconds): far
/// longer than the 5-minute (Plaid) and 3-minute (Teller) freshness windows,
/// after which a replay is refused as stale anyway.
pub const RECEIPT_KEEP_SECS: i64 = 24 * 60 * 60;

/// Append an event to a connection's timeline.
pub fn insert(
    tx: &Transaction,
    connection_id: &str,
    kind: &str,
    at: Timestamp,
    detail: &serde_json::Value,
) -> DbResult<()> {
    tx.prepare_cached(
        "INSERT INTO connection_events (id, connection_id, type, at, detail)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute((new_uuid(), connection_id, kind, at, detail.to_string()))?;
    Ok(())
}

/// Up to `limit` events of a connection, oldest first, after `after_seq`;
/// with the seq to continue from when more remain.
pub fn page(
    conn: &Connection,
    connection_id: &str,
    after_seq: Option<i64>,
    limit: u32,
) -> DbResult<(Vec<Event>, Option<i64>)> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, type, at, detail, seq FROM connection_events
         WHERE connection_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
    )?;
    let rows = stmt.query_map(
        rusqlite::params![connection_id, after_seq.unwrap_or(0), i64::from(limit) + 1],
        super::events::event_with_seq,
    )?;
    let page: Vec<(Event, i64)> = rows.collect::<Result<_, _>>()?;
    Ok(super::split_page(page, limit))
}

/// Record a verified provider webhook; false when it was seen before (a
/// replay or redelivery), in which case it must change nothing. Old
/// receipts are pruned on the way.
pub fn first_receipt(
    tx: &Transaction,
    provider: &str,
    receipt: &str,
    now: Timestamp,
) -> DbResult<bool> {
    tx.prepare_cached("DELETE FROM provider_webhook_receipts WHERE received_at < ?1")?
        .execute([now - RECEIPT_KEEP_SECS])?;
    let n = tx
        .prepare_cached(
            "INSERT OR IGNORE INTO provider_webhook_receipts (provider, receipt, received_at)
             VALUES (?1, ?2, ?3)",
        )?
        .execute((provider, receipt, now))?;
    Ok(n == 1)
}
