//! API keys: list, create (the key is shown once), revoke. full_access only.

use serde::Serialize;

use super::{entity_ref, require, AppState};
use crate::db::{api_keys, Db};
use crate::domain::api_key::{ApiKey, CreateApiKey, PlainKey, Scope};
use crate::domain::ids::EntityRef;
use crate::domain::time;
use crate::error::ApiError;

/// Most API keys the API creates, revoked ones included, so `GET /api-keys`
/// (one page, no cursor) stays small (issue 8, "bounded input").
pub const MAX_API_KEYS: u32 = 500;

/// A key as created: the listing shape plus the key, shown once.
#[derive(Serialize)]
pub struct CreatedKey<'a> {
    /// The key's record.
    #[serde(flatten)]
    pub key: &'a ApiKey,
    /// The plaintext key.
    #[serde(rename = "key")]
    pub plain: &'a str,
}

/// Every key (prefix only, never the key), for a full_access `caller`.
pub async fn list(state: &AppState, caller: &ApiKey) -> Result<Vec<ApiKey>, ApiError> {
    require(caller, Scope::FullAccess)?;
    all(&state.db).await
}

/// Every key in `db` (prefix only, never the key).
pub async fn all(db: &Db) -> Result<Vec<ApiKey>, ApiError> {
    Ok(db.read_async(api_keys::list).await?)
}

/// Create a key; returns its record and the plaintext (shown once).
pub async fn create(
    state: &AppState,
    caller: &ApiKey,
    body: &CreateApiKey,
) -> Result<(ApiKey, PlainKey), ApiError> {
    require(caller, Scope::FullAccess)?;
    add(&state.db, body, Some(MAX_API_KEYS)).await
}

/// Check `body` and create a key in `db`; with `cap`, `LIMIT_REACHED` once
/// that many exist, revoked ones included (the API caps; the admin at the
/// command line does not). Returns its record and the plaintext.
pub async fn add(
    db: &Db,
    body: &CreateApiKey,
    cap: Option<u32>,
) -> Result<(ApiKey, PlainKey), ApiError> {
    let (name, scope) = body.validate().map_err(ApiError::Validation)?;
    db.write_checked_async(move |tx| {
        if let Some(cap) = cap {
            if crate::db::count_capped(tx, "api_keys", cap)? >= cap {
                return Ok(Err(ApiError::LimitReached(format!(
                    "this server keeps at most {cap} API keys (revoked ones included)"
                ))));
            }
        }
        api_keys::insert(tx, &name, scope, time::now()).map(Ok)
    })
    .await?
}

/// Revoke a key at once; returns the updated record.
pub async fn revoke(state: &AppState, caller: &ApiKey, raw: &str) -> Result<ApiKey, ApiError> {
    require(caller, Scope::FullAccess)?;
    revoke_in(&state.db, entity_ref(raw, "API key")?).await
}

/// Revoke the key `r` in `db` at once; returns the updated record.
pub async fn revoke_in(db: &Db, r: EntityRef) -> Result<ApiKey, ApiError> {
    db.write_async(move |tx| api_keys::revoke(tx, &r, time::now()))
        .await?
        .ok_or_else(|| ApiError::NotFound("API key".into()))
}

/// The key whose SHA-256 is `hash`, if any (revoked ones too: the caller
/// judges).
pub async fn find_by_hash(state: &AppState, hash: String) -> Result<Option<ApiKey>, ApiError> {
    Ok(state
        .db
        .read_async(move |c| api_keys::find_by_hash(c, &hash))
        .await?)
}

/// How often `last_used_at` is written for one key, at most.
const TOUCH_EVERY_SECS: i64 = 60;

/// Record use of a key, writing at most once a minute per key and never on
/// the caller's path (the write runs in the background; needs a Tokio
/// runtime).
pub fn record_use(state: &AppState, key: &ApiKey) {
    let now = time::now();
    if key.last_used_at.is_some_and(|t| now - t < TOUCH_EVERY_SECS) {
        return;
    }
    {
        let Ok(mut seen) = state.key_touches.lock() else {
            return;
        };
        if seen
            .get(&key.id)
            .is_some_and(|&t| now - t < TOUCH_EVERY_SECS)
        {
            return;
        }
        if seen.len() > 10_000 {
            seen.clear();
        }
        seen.insert(key.id.clone(), now);
    }
    let db = state.db.clone();
    let id = key.id.clone();
    tokio::spawn(async move {
        if let Err(e) = db
            .write_async(move |tx| api_keys::touch(tx, &id, now))
            .await
        {
            log::warn!("could not record API key use: {e}");
        }
    });
}
