//! `/api/v1/api-keys`: list, create and revoke keys (full_access only).

use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;
use serde_json::json;

use super::{entity_ref, required_json, route, RouteEntry};
use crate::auth::Auth;
use crate::db::api_keys;
use crate::domain::api_key::{ApiKey, CreateApiKey, Scope};
use crate::domain::time;
use crate::error::ApiError;
use crate::server::AppState;

/// The routes of this module.
pub fn routes() -> Vec<RouteEntry> {
    vec![
        route(Method::GET, "/api-keys", list_api_keys),
        route(Method::POST, "/api-keys", create_api_key),
        route(Method::DELETE, "/api-keys/{id}", revoke_api_key),
    ]
}

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

async fn list_api_keys(auth: Auth, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    auth.require(Scope::FullAccess)?;
    let list = state.db.read_async(api_keys::list).await?;
    Ok(HttpResponse::Ok().json(json!({ "api_keys": list })))
}

async fn create_api_key(
    auth: Auth,
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    auth.require(Scope::FullAccess)?;
    let body: CreateApiKey = required_json(&req, payload).await?;
    let (name, scope) = body.validate().map_err(ApiError::Validation)?;
    let (key, plain) = state
        .db
        .write_checked_async(move |tx| {
            if crate::db::count_capped(tx, "api_keys", MAX_API_KEYS)? >= MAX_API_KEYS {
                return Ok(Err(ApiError::LimitReached(format!(
                    "this server keeps at most {MAX_API_KEYS} API keys (revoked ones included)"
                ))));
            }
            api_keys::insert(tx, &name, scope, time::now()).map(Ok)
        })
        .await??;
    Ok(HttpResponse::Created().json(CreatedKey {
        key: &key,
        plain: plain.expose(),
    }))
}

async fn revoke_api_key(
    auth: Auth,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    auth.require(Scope::FullAccess)?;
    let r = entity_ref(&path, "API key")?;
    let key = state
        .db
        .write_async(move |tx| api_keys::revoke(tx, &r, time::now()))
        .await?
        .ok_or_else(|| ApiError::NotFound("API key".into()))?;
    Ok(HttpResponse::Ok().json(key))
}

/// Most API keys the API creates, revoked ones included, so `GET /api-keys`
/// (one page, no cursor) stays small (issue 8, "bounded input").
pub const MAX_API_KEYS: u32 = 500;
