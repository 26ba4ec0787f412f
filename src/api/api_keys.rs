//! `/api/v1/api-keys`: list, create and revoke keys (full_access only).
//! Thin adapters over [`crate::app::api_keys`].

use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::{required_json, route, RouteEntry};
use crate::app::api_keys as ops;
use crate::app::AppState;
use crate::auth::Auth;
use crate::domain::api_key::{CreateApiKey, Scope};
use crate::error::ApiError;

pub use crate::app::api_keys::{CreatedKey, MAX_API_KEYS};

/// The routes of this module.
pub fn routes() -> Vec<RouteEntry> {
    vec![
        route(Method::GET, "/api-keys", list_api_keys),
        route(Method::POST, "/api-keys", create_api_key),
        route(Method::DELETE, "/api-keys/{id}", revoke_api_key),
    ]
}

async fn list_api_keys(auth: Auth, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let list = ops::list(&state, &auth.key).await?;
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
    let (key, plain) = ops::create(&state, &auth.key, &body).await?;
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
    Ok(HttpResponse::Ok().json(ops::revoke(&state, &auth.key, &path).await?))
}
