//! `/api/v1/connections`: list, read, disconnect, and mint relink sessions.
//! Thin adapters over [`crate::app::connections`].

use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::{parse_json, parse_query, read_body, route, RouteEntry};
use crate::app::connections as ops;
use crate::app::AppState;
use crate::auth::Auth;
use crate::domain::api_key::Scope;
use crate::domain::link_session::RelinkRequest;
use crate::error::ApiError;

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

/// `GET /connections/{id}/events`: the health timeline, oldest first, a
/// page at a time (`limit` 1–200, default 50; `cursor` = `next_cursor`).
async fn list_connection_events(
    _auth: Auth,
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let q: super::PageQuery = parse_query(&req)?;
    let page = ops::events(&state, &path, q.limit.as_deref(), q.cursor.as_deref()).await?;
    Ok(HttpResponse::Ok().json(page))
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
    let list = ops::list(&state, q.user_id, q.status).await?;
    Ok(HttpResponse::Ok().json(json!({ "connections": list })))
}

async fn get_connection(
    _auth: Auth,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(ops::get(&state, &path).await?))
}

async fn delete_connection(
    auth: Auth,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let (conn, credential) = ops::disconnect(&state, &auth.key, &path).await?;
    if let Some(credential) = credential {
        crate::app::bank::forget_at_provider(state.clone().into_inner(), &conn, credential);
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
    let idem = super::idempotency::from_request(&req, &body);
    let base = super::public_base(&state, &req);
    ops::relink(&state, &auth.key, &path, &parsed, idem, &base)
        .await
        .map(super::idempotency::respond)
}
