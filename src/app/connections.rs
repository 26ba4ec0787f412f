//! Bank connections: list, get, relink (mint a relink session), disconnect.

use super::idempotency::{IdemKey, Reply};
use super::{entity_ref, paging, require, AppState};
use crate::db::connection_events;
use crate::db::connections::{self, Credential};
use crate::db::link_sessions::NewSession;
use crate::db::{users, Db};
use crate::domain::api_key::{ApiKey, Scope};
use crate::domain::connection::{Connection, ConnectionStatus};
use crate::domain::ids::EntityRef;
use crate::domain::link_session::{Action, Provider, RelinkRequest};
use crate::domain::time;
use crate::error::ApiError;

/// Connections, optionally only one member's (UUID or short id; an unknown
/// member has none) and only one status.
pub async fn list(
    state: &AppState,
    user_id: Option<String>,
    status: Option<String>,
) -> Result<Vec<Connection>, ApiError> {
    let status = status
        .map(|s| {
            ConnectionStatus::parse(&s).ok_or_else(|| {
                ApiError::Validation(format!(
                    "status: must be one of active, pending_reauth, error, disconnected; got {s:?}"
                ))
            })
        })
        .transpose()?;
    let user = user_id
        .map(|u| {
            EntityRef::parse(&u)
                .ok_or_else(|| ApiError::Validation("user_id: must be a UUID or short_id".into()))
        })
        .transpose()?;
    list_in(&state.db, user, status).await
}

/// Connections in `db`, optionally only member `user`'s (an unknown member
/// has none) and only one status.
pub async fn list_in(
    db: &Db,
    user: Option<EntityRef>,
    status: Option<ConnectionStatus>,
) -> Result<Vec<Connection>, ApiError> {
    Ok(db
        .read_async(move |c| {
            let user_id = match &user {
                None => None,
                Some(r) => match users::get(c, r)? {
                    Some(u) => Some(u.id),
                    None => return Ok(Vec::new()),
                },
            };
            connections::list(c, user_id.as_deref(), status)
        })
        .await?)
}

/// One page of a connection's health timeline, oldest first
/// (CONTRACT §10): `{"events":[…],"next_cursor":…}`.
pub async fn events(
    state: &AppState,
    raw: &str,
    limit: Option<&str>,
    cursor: Option<&str>,
) -> Result<serde_json::Value, ApiError> {
    let limit = paging::parse_limit(limit)?;
    let after = paging::CONNECTION_EVENTS.parse(cursor)?;
    let conn = get(state, raw).await?;
    let (events, next) = state
        .db
        .read_async(move |c| connection_events::page(c, &conn.id, after, limit))
        .await?;
    Ok(serde_json::json!({
        "events": events,
        "next_cursor": next.map(|seq| paging::CONNECTION_EVENTS.encode(seq)),
    }))
}

/// One connection by UUID or short id (never any credential).
pub async fn get(state: &AppState, raw: &str) -> Result<Connection, ApiError> {
    get_in(&state.db, entity_ref(raw, "connection")?).await
}

/// The connection `r` in `db` (never any credential).
pub async fn get_in(db: &Db, r: EntityRef) -> Result<Connection, ApiError> {
    db.read_async(move |c| connections::get(c, &r))
        .await?
        .ok_or_else(|| ApiError::NotFound("connection".into()))
}

/// Mark a connection disconnected and wipe its credential (full_access).
/// Returns the updated connection and the credential it had; the caller
/// tells the provider with [`crate::app::bank::forget_at_provider`].
pub async fn disconnect(
    state: &AppState,
    caller: &ApiKey,
    raw: &str,
) -> Result<(Connection, Option<Credential>), ApiError> {
    require(caller, Scope::FullAccess)?;
    let r = entity_ref(raw, "connection")?;
    state
        .db
        .write_async(move |tx| connections::disconnect(tx, &r, time::now()))
        .await?
        .ok_or_else(|| ApiError::NotFound("connection".into()))
}

/// Mint a relink session for a connection (full_access); the reply (201) is
/// the create response JSON. `CONNECTION_DISCONNECTED` for a disconnected one.
pub async fn relink(
    state: &AppState,
    caller: &ApiKey,
    raw: &str,
    body: &RelinkRequest,
    idem: Result<Option<IdemKey>, ApiError>,
    public_base: &str,
) -> Result<Reply, ApiError> {
    require(caller, Scope::FullAccess)?;
    let mut valid = state.rules.check_relink(body)?;
    let conn = get(state, raw).await?;
    if conn.status == ConnectionStatus::Disconnected {
        return Err(ApiError::ConnectionDisconnected);
    }
    let provider = Provider::parse(&conn.provider).ok_or_else(|| {
        ApiError::Internal(format!(
            "connection {} has provider {}",
            conn.id, conn.provider
        ))
    })?;
    if !state.rules.configured.contains(&provider) {
        return Err(ApiError::ProviderNotConfigured(provider.as_str().into()));
    }
    valid.provider = Some(provider);
    let new = NewSession {
        valid,
        user_id: String::new(),
        action: Action::Relink,
        connection_id: Some(conn.id.clone()),
        token_hash: String::new(),
    };
    super::link_sessions::mint(
        state,
        caller,
        idem,
        new,
        EntityRef::Uuid(conn.user_id),
        public_base,
    )
    .await
}
