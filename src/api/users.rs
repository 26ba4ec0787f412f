//! `/api/v1/users`: household members.

use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::{entity_ref, required_json, route, RouteEntry};
use crate::auth::Auth;
use crate::db::users;
use crate::domain::api_key::Scope;
use crate::domain::time;
use crate::domain::user::CreateUser;
use crate::error::ApiError;
use crate::server::AppState;

/// The routes of this module.
pub fn routes() -> Vec<RouteEntry> {
    vec![
        route(Method::GET, "/users", list_users),
        route(Method::POST, "/users", create_user),
        route(Method::GET, "/users/{id}", get_user),
    ]
}

async fn list_users(_auth: Auth, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let list = state.db.read_async(users::list).await?;
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
    let body = body.validate().map_err(ApiError::Validation)?;
    let user = state
        .db
        .write_checked_async(move |tx| {
            if crate::db::count_capped(tx, "users", MAX_USERS)? >= MAX_USERS {
                return Ok(Err(ApiError::LimitReached(format!(
                    "this server keeps at most {MAX_USERS} household members"
                ))));
            }
            users::insert(tx, &body.name, body.email.as_deref(), time::now()).map(Ok)
        })
        .await??;
    Ok(HttpResponse::Created().json(user))
}

/// Most household members the API creates: far above any household, low
/// enough that `GET /users` (one page, no cursor) stays small (issue 8,
/// "bounded input").
pub const MAX_USERS: u32 = 1000;

async fn get_user(
    _auth: Auth,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let r = entity_ref(&path, "user")?;
    let user = state
        .db
        .read_async(move |c| users::get(c, &r))
        .await?
        .ok_or_else(|| ApiError::NotFound("user".into()))?;
    Ok(HttpResponse::Ok().json(user))
}
