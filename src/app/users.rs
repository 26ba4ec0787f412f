//! Household members: list, create, get.

use super::{entity_ref, require, AppState};
use crate::db::{users, Db};
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
    all(&state.db).await
}

/// Every member in `db`, oldest first.
pub async fn all(db: &Db) -> Result<Vec<User>, ApiError> {
    Ok(db.read_async(users::list).await?)
}

/// Add a member as `caller` (full_access); `LIMIT_REACHED` past [`MAX_USERS`].
pub async fn create(state: &AppState, caller: &ApiKey, body: CreateUser) -> Result<User, ApiError> {
    require(caller, Scope::FullAccess)?;
    add(&state.db, body, Some(MAX_USERS)).await
}

/// Check `body` and add the member to `db`; with `cap`, `LIMIT_REACHED`
/// once that many exist (the API caps; the admin at the command line does
/// not).
pub async fn add(db: &Db, body: CreateUser, cap: Option<u32>) -> Result<User, ApiError> {
    let body = body.validate().map_err(ApiError::Validation)?;
    db.write_checked_async(move |tx| {
        if let Some(cap) = cap {
            if crate::db::count_capped(tx, "users", cap)? >= cap {
                return Ok(Err(ApiError::LimitReached(format!(
                    "this server keeps at most {cap} household members"
                ))));
            }
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
