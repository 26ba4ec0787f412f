//! `/api/v1/connections`: list, read, disconnect, and mint relink sessions.

use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::{entity_ref, parse_json, parse_query, read_body, route, RouteEntry};
use crate::auth::Auth;
use crate::db::link_sessions::NewSession;
use crate::db::{connection_events, connections, users};
use crate::domain::api_key::Scope;
use crate::domain::connection::ConnectionStatus;
use crate::domain::ids::EntityRef;
use crate::domain::link_session::{Action, RelinkRequest};
use crate::domain::time;
use crate::error::ApiError;
use crate::server::AppState;

/// The routes of this module.
pub fn routes() -> Vec<RouteEntry> {
    vec![
        route(Method::GET, "/connections", list_connections),
        route(Method::GET, "/connections/{id}", get_connection),
        route(Method::DELETE, "/connections/{id}", delete_connection),
        route(Method::POST, "/connections/{id}/relink", relink_connection),
        route(
            Method::GET,
            "/connections/{id}/events",
            list_connection_events,
        ),
    ]
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    limit: Option<String>,
    cursor: Option<String>,
}

const EVENTS_CURSOR_PREFIX: &str = "ce1:";

fn encode_events_cursor(seq: i64) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{EVENTS_CURSOR_PREFIX}{seq}"))
}

fn decode_events_cursor(raw: &str) -> Option<i64> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(raw)
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    text.strip_prefix(EVENTS_CURSOR_PREFIX)?.parse().ok()
}

/// `GET /connections/{id}/events`: the health timeline, oldest first, a
/// page at a time (`limit` 1–200, default 50; `cursor` = `next_cursor`).
async fn list_connection_events(
    _auth: Auth,
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let q: EventsQuery = parse_query(&req)?;
    let limit = match q.limit.as_deref() {
        None => 50,
        Some(l) => l
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=200).contains(n))
            .ok_or_else(|| ApiError::Validation(format!("limit: must be 1 to 200, got {l:?}")))?,
    };
    let after = q
        .cursor
        .as_deref()
        .filter(|c| !c.is_empty())
        .map(|c| {
            decode_events_cursor(c)
                .ok_or_else(|| ApiError::Validation("cursor: not a valid cursor".into()))
        })
        .transpose()?;
    let r = entity_ref(&path, "connection")?;
    let page = state
        .db
        .read_async(move |c| match connections::get(c, &r)? {
            Some(conn) => connection_events::page(c, &conn.id, after, limit).map(Some),
            None => Ok(None),
        })
        .await?
        .ok_or_else(|| ApiError::NotFound("connection".into()))?;
    let (events, next) = page;
    Ok(HttpResponse::Ok().json(json!({
        "events": events,
        "next_cursor": next.map(encode_events_cursor),
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    user_id: Option<String>,
    status: Option<String>,
}

async fn list_connections(
    _auth: Auth,
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let q: ListQuery = parse_query(&req)?;
    let status = q
        .status
        .map(|s| {
            ConnectionStatus::parse(&s).ok_or_else(|| {
                ApiError::Validation(format!(
                    "status: must be one of active, pending_reauth, error, disconnected; got {s:?}"
                ))
            })
        })
        .transpose()?;
    let user = q
        .user_id
        .map(|u| {
            EntityRef::parse(&u)
                .ok_or_else(|| ApiError::Validation("user_id: must be a UUID or short_id".into()))
        })
        .transpose()?;
    let list = state
        .db
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
        .await?;
    Ok(HttpResponse::Ok().json(json!({ "connections": list })))
}

async fn get_connection(
    _auth: Auth,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let r = entity_ref(&path, "connection")?;
    let conn = state
        .db
        .read_async(move |c| connections::get(c, &r))
        .await?
        .ok_or_else(|| ApiError::NotFound("connection".into()))?;
    Ok(HttpResponse::Ok().json(conn))
}

async fn delete_connection(
    auth: Auth,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    auth.require(Scope::FullAccess)?;
    let r = entity_ref(&path, "connection")?;
    let (conn, credential) = state
        .db
        .write_async(move |tx| connections::disconnect(tx, &r, time::now()))
        .await?
        .ok_or_else(|| ApiError::NotFound("connection".into()))?;
    if let Some(credential) = credential {
        crate::bank::forget_at_provider(&state, &conn, credential);
    }
    Ok(HttpResponse::Ok().json(conn))
}

async fn relink_connection(
    auth: Auth,
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    auth.require(Scope::FullAccess)?;
    let body = read_body(&req, payload).await?;
    let parsed: RelinkRequest = parse_json(&req, &body)?.unwrap_or_default();
    let mut valid = state.rules.check_relink(&parsed)?;
    let r = entity_ref(&path, "connection")?;
    let conn = state
        .db
        .read_async(move |c| connections::get(c, &r))
        .await?
        .ok_or_else(|| ApiError::NotFound("connection".into()))?;
    if conn.status == ConnectionStatus::Disconnected {
        return Err(ApiError::ConnectionDisconnected);
    }
    let provider =
        crate::domain::link_session::Provider::parse(&conn.provider).ok_or_else(|| {
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
        &state,
        &req,
        &auth,
        &body,
        new,
        EntityRef::Uuid(conn.user_id),
    )
    .await
}
