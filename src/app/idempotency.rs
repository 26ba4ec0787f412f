//! `Idempotency-Key` for the operations that create or change sessions: the
//! first successful reply is stored in the same transaction as the change and
//! replayed byte for byte for 24 h. The stored body is sealed with the
//! credential key, bound to the API key and idempotency key, because a create
//! reply carries the link token and URL (CONTRACT §2 "At rest").

use rusqlite::Transaction;

use super::AppState;
use crate::db::idempotency::{self, Stored};
use crate::db::DbResult;
use crate::domain::time;
use crate::error::ApiError;

/// A presented idempotency key and a fingerprint of the request it came with.
#[derive(Debug, Clone)]
pub struct IdemKey {
    key: String,
    fingerprint: String,
}

impl IdemKey {
    /// Check `raw` (1–255 printable ASCII characters) and fingerprint the
    /// request as `method`, `path` and `body` bytes.
    pub fn new(raw: &str, method: &str, path: &str, body: &[u8]) -> Result<Self, ApiError> {
        if !((1..=255).contains(&raw.len()) && raw.bytes().all(|b| (0x20..0x7f).contains(&b))) {
            return Err(ApiError::Validation(
                "Idempotency-Key: must be 1 to 255 printable ASCII characters".into(),
            ));
        }
        let mut material = format!("{method} {path}\n").into_bytes();
        material.extend_from_slice(body);
        Ok(IdemKey {
            key: raw.to_owned(),
            fingerprint: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&material)),
        })
    }
}

/// A reply an operation produced: HTTP-style status and the exact JSON text
/// (replays must be byte for byte the same).
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status code (201 created, 200 changed).
    pub status: u16,
    /// JSON text.
    pub body: String,
}

/// What an operation made inside its transaction.
pub struct Produced {
    /// The reply.
    pub reply: Reply,
    /// The session that changed, to wake waiters and the webhook worker.
    pub session_id: String,
}

enum Outcome {
    Fresh(Produced),
    Replay(Stored),
}

/// Run `op` in one write transaction, unless this API key already used this
/// idempotency key: then answer the stored reply (or `IDEMPOTENCY_CONFLICT`
/// for another request).
pub async fn run<F>(
    state: &AppState,
    api_key_id: &str,
    idem: Option<IdemKey>,
    op: F,
) -> Result<Reply, ApiError>
where
    F: FnOnce(&Transaction) -> DbResult<Result<Produced, ApiError>> + Send + 'static,
{
    let owner = api_key_id.to_owned();
    let check = idem.clone();
    let cipher = state.bank.cipher.clone();
    let outcome = state
        .db
        .write_async(move |tx| {
            let now = time::now();
            if let Some(k) = &check {
                if let Some(stored) = idempotency::get(tx, &owner, &k.key, now)? {
                    return Ok(Ok(Outcome::Replay(stored)));
                }
            }
            let produced = match op(tx)? {
                Ok(p) => p,
                Err(e) => return Ok(Err(e)),
            };
            if let Some(k) = &check {
                let stored = Stored {
                    fingerprint: k.fingerprint.clone(),
                    status: produced.reply.status,
                    sealed_body: cipher.encrypt(
                        produced.reply.body.as_bytes(),
                        &seal_context(&owner, &k.key),
                    ),
                };
                idempotency::put(tx, &owner, &k.key, &stored, now)?;
            }
            Ok(Ok(Outcome::Fresh(produced)))
        })
        .await??;
    match outcome {
        Outcome::Fresh(p) => {
            state.changed(&p.session_id);
            Ok(p.reply)
        }
        Outcome::Replay(stored) => {
            let Some(k) = idem else {
                return Err(ApiError::Internal("replay without a key".into()));
            };
            if k.fingerprint != stored.fingerprint {
                return Err(ApiError::IdempotencyConflict);
            }
            let body = state
                .bank
                .cipher
                .decrypt(&stored.sealed_body, &seal_context(api_key_id, &k.key))
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| {
                    ApiError::Internal("stored idempotent response unreadable".into())
                })?;
            Ok(Reply {
                status: stored.status,
                body,
            })
        }
    }
}

/// Associated data binding a sealed reply to its API key and idempotency
/// key, so a row copied under another key does not open.
fn seal_context(api_key_id: &str, key: &str) -> Vec<u8> {
    format!("idempotency\0{api_key_id}\0{key}").into_bytes()
}
