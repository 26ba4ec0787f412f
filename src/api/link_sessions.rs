//! `/api/v1/connections/link`: mint, read, list, cancel and audit sessions.
//! Thin adapters over [`crate::app::link_sessions`].

use std::time::Duration;

use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::idempotency::respond;
use super::{parse_query, parse_required_json, read_body, route, RouteEntry};
use crate::app::link_sessions::{self as ops, ListParams, MAX_WAIT};
use crate::app::AppState;
use crate::auth::{Auth, Presented};
use crate::domain::api_key::Scope;
use crate::domain::link_session::CreateRequest;
use crate::error::ApiError;

pub use crate::app::link_sessions::{failure, list_filter, Created};

/// The routes of this module.
pub fn routes() -> Vec<RouteEntry> {
    vec![
        route(Method::POST, "/connections/link", create_link_session),
        route(Method::GET, "/connections/link", list_link_sessions),
        route(Method::GET, "/connections/link/{id}", get_link_session),
        route(
            Method::POST,
            "/connections/link/{id}/cancel",
            cancel_link_session,
        ),
        route(
            Method::GET,
            "/connections/link/{id}/events",
            list_link_session_events,
        ),
    ]
}

async fn create_link_session(
    auth: Auth,
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    auth.require(Scope::FullAccess)?;
    let body = read_body(&req, payload).await?;
    let parsed: CreateRequest = parse_required_json(&req, &body)?;
    let idem = super::idempotency::from_request(&req, &body);
    let base = super::public_base(&state, &req);
    ops::create(&state, &auth.key, &parsed, idem, &base)
        .await
        .map(respond)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetQuery {
    wait: Option<String>,
}

async fn get_link_session(
    presented: Presented,
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    // Checked after the key, so a bad query without a key still answers 401.
    let wait = parse_query::<GetQuery>(&req).and_then(|q| {
        q.wait
            .map(|w| {
                w.parse::<u64>()
                    .ok()
                    .filter(|n| (1..=MAX_WAIT).contains(n))
                    .ok_or_else(|| {
                        ApiError::Validation(format!("wait: must be 1 to 60 seconds, got {w:?}"))
                    })
            })
            .transpose()
    });
    // The hot path of polling agents: the key and the session in one read.
    let (key, found) = ops::get_with_key(&state, presented.hash()?, &path).await?;
    presented.accept(key)?;
    let wait = wait?;
    let session = found.ok_or_else(|| ApiError::NotFound("link session".into()))?;
    let session = match wait {
        Some(secs) => ops::wait(&state, session, Duration::from_secs(secs)).await?,
        None => session,
    };
    Ok(HttpResponse::Ok().json(session))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    user_id: Option<String>,
    status: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

async fn list_link_sessions(
    _auth: Auth,
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let q: ListQuery = parse_query(&req)?;
    let page = ops::list(
        &state,
        ListParams {
            user_id: q.user_id,
            status: q.status,
            limit: q.limit,
            cursor: q.cursor,
        },
    )
    .await?;
    Ok(HttpResponse::Ok().json(page))
}

async fn cancel_link_session(
    auth: Auth,
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    auth.require(Scope::FullAccess)?;
    let body = read_body(&req, payload).await?;
    let idem = super::idempotency::from_request(&req, &body)?;
    ops::cancel(&state, &auth.key, &path, idem)
        .await
        .map(respond)
}

async fn list_link_session_events(
    _auth: Auth,
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let q: super::PageQuery = parse_query(&req)?;
    let page = ops::events(&state, &path, q.limit.as_deref(), q.cursor.as_deref()).await?;
    Ok(HttpResponse::Ok().json(page))
}
