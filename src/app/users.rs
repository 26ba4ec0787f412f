//! Household members: list, create, get.

use super::{entity_ref, require, AppState};
use crate::db::users;
use crate::domain::api_key::{ApiKey, Scope};
use crate::domain::time;
use crate::domain::user::{CreateUser, User};
use crate::error::ApiError;

/// Most household members the API creates: far above any household, low
/// enough that `GET /users` (one page, no cursor) stays small (issue 8,
/// "bounded input").
pub const MAX_USERS: u32 = 1000;

/// Every member, oldest first.
pub async fn list(state: &AppState) -> Result<Vec<User>, ApiError> {
    Ok(state.db.read_async(users::list).await?)
}

/// Add a member as `caller` (full_access); `LIMIT_REACHED` past [`MAX_USERS`].
pub async fn create(state: &AppState, caller: &ApiKey, body: CreateUser) -> Result<User, ApiError> {
    require(caller, Scope::FullAccess)?;
    let body = body.validate().map_err(ApiError::Validation)?;
    state
        .db
        .write_checked_async(move |tx| {
            if crate::db::count_capped(tx, "users", MAX_USERS)? >= MAX_USERS {
                return Ok(Err(ApiError::LimitReached(format!(
                    "this server keeps at most {MAX_USERS} household members"
                ))));
            }
            users::insert(tx, &body.name, body.email.as_deref(), time::now()).map(Ok)
        })
        .await?
}

/// One member by UUID or short id.
pub async fn get(state: &AppState, raw: &str) -> Result<User, ApiError> {
    let r = entity_ref(raw, "user")?;
    state
        .db
        .read_async(move |c| users::get(c, &r))
        .await?
        .ok_or_else(|| ApiError::NotFound("user".into()))
}
