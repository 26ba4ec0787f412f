//! `/api/v1/users`: household members. Thin adapters over [`crate::app::users`].

use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::{required_json, route, RouteEntry};
use crate::app::users as ops;
use crate::app::AppState;
use crate::auth::Auth;
use crate::domain::api_key::Scope;
use crate::domain::user::CreateUser;
use crate::error::ApiError;

pub use crate::app::users::MAX_USERS;

/// The routes of this module.
pub fn routes() -> Vec<RouteEntry> {
    vec![
        route(Method::GET, "/users", list_users),
        route(Method::POST, "/users", create_user),
        route(Method::GET, "/users/{id}", get_user),
    ]
}

async fn list_users(_auth: Auth, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let list = ops::list(&state).await?;
    Ok(HttpResponse::Ok().json(json!({ "users": list })))
}

async fn create_user(
    auth: Auth,
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    auth.require(Scope::FullAccess)?;
    let body: CreateUser = required_json(&req, payload).await?;
    let user = ops::create(&state, &auth.key, body).await?;
    Ok(HttpResponse::Created().json(user))
}

async fn get_user(
    _auth: Auth,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(ops::get(&state, &path).await?))
}
