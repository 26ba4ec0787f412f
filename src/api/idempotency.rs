//! `Idempotency-Key` for the POSTs that create or change sessions: the first
//! successful response is stored in the same transaction as the change and
//! replayed byte for byte for 24 h. The stored body is sealed with the
//! credential key, bound to the API key and idempotency key, because a create
//! response carries the link token and URL (CONTRACT §2 "At rest").

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};
use rusqlite::Transaction;

use crate::db::idempotency::{self, Stored};
use crate::db::DbResult;
use crate::domain::time;
use crate::error::ApiError;
use crate::server::AppState;

/// A presented idempotency key and the request it came with.
#[derive(Debug, Clone)]
pub struct IdemKey {
    key: String,
    fingerprint: String,
}

/// Read the `Idempotency-Key` header (1–255 printable ASCII characters).
pub fn from_request(req: &HttpRequest, body: &[u8]) -> Result<Option<IdemKey>, ApiError> {
    let Some(raw) = req.headers().get("idempotency-key") else {
        return Ok(None);
    };
    let key = raw
        .to_str()
        .ok()
        .filter(|k| (1..=255).contains(&k.len()) && k.bytes().all(|b| (0x20..0x7f).contains(&b)))
        .ok_or_else(|| {
            ApiError::Validation(
                "Idempotency-Key: must be 1 to 255 printable ASCII characters".into(),
            )
        })?;
    let mut material = format!("{} {}\n", req.method(), req.path()).into_bytes();
    material.extend_from_slice(body);
    Ok(Some(IdemKey {
        key: key.to_owned(),
        fingerprint: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&material)),
    }))
}

/// A response an operation produced: status and exact JSON body.
pub struct Produced {
    /// HTTP status.
    pub status: StatusCode,
    /// JSON text.
    pub body: String,
    /// The session that changed, to wake waiters and the webhook worker.
    pub session_id: String,
}

enum Outcome {
    Fresh(Produced),
    Replay(Stored),
}

/// Run `op` in one write transaction, unless this API key already used this
/// idempotency key: then answer the stored response (or 409 for another body).
pub async fn run<F>(
    state: &AppState,
    api_key_id: &str,
    idem: Option<IdemKey>,
    op: F,
) -> Result<HttpResponse, ApiError>
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
                    status: produced.status.as_u16(),
                    sealed_body: cipher
                        .encrypt(produced.body.as_bytes(), &seal_context(&owner, &k.key)),
                };
                idempotency::put(tx, &owner, &k.key, &stored, now)?;
            }
            Ok(Ok(Outcome::Fresh(produced)))
        })
        .await??;
    match outcome {
        Outcome::Fresh(p) => {
            state.changed(&p.session_id);
            Ok(respond(p.status, p.body))
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
            let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
            Ok(respond(status, body))
        }
    }
}

/// Associated data binding a sealed response to its API key and idempotency
/// key, so a row copied under another key does not open.
fn seal_context(api_key_id: &str, key: &str) -> Vec<u8> {
    format!("idempotency\0{api_key_id}\0{key}").into_bytes()
}

fn respond(status: StatusCode, body: String) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("application/json")
        .body(body)
}
