//! Stored first responses for `Idempotency-Key` retries. The body is stored
//! sealed (it may carry a link token): this module only moves bytes; the
//! caller seals and opens them (CONTRACT §2 "At rest").

use rusqlite::{OptionalExtension, Transaction};

use super::DbResult;
use crate::domain::time::Timestamp;

/// How long a key is remembered.
pub const RETENTION_SECS: i64 = 24 * 3600;

/// A remembered response.
#[derive(Debug, Clone)]
pub struct Stored {
    /// Hash of the request that produced it.
    pub fingerprint: String,
    /// HTTP status.
    pub status: u16,
    /// The exact response body, sealed with the credential key.
    pub sealed_body: Vec<u8>,
}

/// The live (under 24 h) response stored for this API key and idempotency key.
pub fn get(
    tx: &Transaction,
    api_key_id: &str,
    key: &str,
    now: Timestamp,
) -> DbResult<Option<Stored>> {
    Ok(tx
        .prepare_cached(
            "SELECT fingerprint, status, body FROM idempotency_keys
             WHERE api_key_id = ?1 AND key = ?2 AND created_at > ?3
               AND typeof(body) = 'blob'",
        )?
        .query_row((api_key_id, key, now - RETENTION_SECS), |r| {
            Ok(Stored {
                fingerprint: r.get(0)?,
                status: r.get(1)?,
                sealed_body: r.get(2)?,
            })
        })
        .optional()?)
}

/// Remember a response (replacing an expired one under the same key).
pub fn put(
    tx: &Transaction,
    api_key_id: &str,
    key: &str,
    stored: &Stored,
    now: Timestamp,
) -> DbResult<()> {
    tx.prepare_cached(
        "INSERT OR REPLACE INTO idempotency_keys (api_key_id, key, fingerprint, status, body, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute((
        api_key_id,
        key,
        &stored.fingerprint,
        stored.status,
        &stored.sealed_body,
        now,
    ))?;
    Ok(())
}

/// Forget keys older than the retention period.
pub fn prune(tx: &Transaction, now: Timestamp) -> DbResult<usize> {
    Ok(tx.execute(
        "DELETE FROM idempotency_keys WHERE created_at <= ?1",
        [now - RETENTION_SECS],
    )?)
}
