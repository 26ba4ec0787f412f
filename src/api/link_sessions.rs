//! `/api/v1/connections/link`: mint, read, list, cancel and audit sessions.

use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{entity_ref, parse_query, required_json};
use crate::auth::Auth;
use crate::db::link_sessions::{self as store, Change, ListFilter, Minter, NewSession};
use crate::db::{events, users};
use crate::domain::api_key::Scope;
use crate::domain::ids::{self, EntityRef};
use crate::domain::link_session::{Action, CreateRequest, LinkSession, Status, Transition};
use crate::domain::time;
use crate::error::ApiError;
use crate::server::AppState;

/// Register the routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/connections/link")
            .route(web::post().to(create_link_session))
            .route(web::get().to(list_link_sessions)),
    )
    .route("/connections/link/{id}", web::get().to(get_link_session))
    .route(
        "/connections/link/{id}/cancel",
        web::post().to(cancel_link_session),
    )
    .route(
        "/connections/link/{id}/events",
        web::get().to(list_link_session_events),
    );
}

/// The create response: the session plus its one-time `token` and `url`.
#[derive(Serialize)]
pub struct Created<'a> {
    /// Plaintext bearer token, shown once.
    pub token: &'a str,
    /// `<public base>/link/<token>`.
    pub url: String,
    /// The session.
    #[serde(flatten)]
    pub session: &'a LinkSession,
}

/// Mint a session for `new` and answer 201 with token and url.
pub async fn mint(
    state: &web::Data<AppState>,
    req: &HttpRequest,
    new: impl FnOnce(String) -> NewSession + Send + 'static,
    user: EntityRef,
    minter: Minter,
) -> Result<HttpResponse, ApiError> {
    let token = ids::new_link_token();
    let mut new = new(ids::sha256_hex(&token));
    let session = state
        .db
        .write_async(move |tx| {
            let Some(u) = users::get(tx, &user)? else {
                return Ok(Err(ApiError::NotFound("user".into())));
            };
            new.user_id = u.id;
            store::insert(tx, new, &minter, time::now()).map(Ok)
        })
        .await??;
    state.waiters.notify(&session.id);
    let url = format!("{}/link/{token}", state.public_base(req));
    Ok(HttpResponse::Created().json(Created {
        token: &token,
        url,
        session: &session,
    }))
}

async fn create_link_session(
    auth: Auth,
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    auth.require(Scope::FullAccess)?;
    let body: CreateRequest = required_json(&req, payload).await?;
    let valid = state.rules.check_create(&body)?;
    let user = EntityRef::parse(&body.user_id)
        .ok_or_else(|| ApiError::Validation("user_id: must be a user's UUID or short_id".into()))?;
    let minter = Minter {
        api_key_id: Some(auth.key.id.clone()),
        name: auth.key.name.clone(),
    };
    mint(
        &state,
        &req,
        move |token_hash| NewSession {
            valid,
            user_id: String::new(),
            action: Action::Link,
            connection_id: None,
            token_hash,
        },
        user,
        minter,
    )
    .await
}

async fn find(state: &AppState, raw: &str) -> Result<LinkSession, ApiError> {
    let r = entity_ref(raw, "link session")?;
    state
        .db
        .read_async(move |c| store::get(c, &r))
        .await?
        .map(|s| s.at(time::now()))
        .ok_or_else(|| ApiError::NotFound("link session".into()))
}

async fn get_link_session(
    _auth: Auth,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(find(&state, &path).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    user_id: Option<String>,
    status: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

const CURSOR_PREFIX: &str = "ls1:";

fn encode_cursor(seq: i64) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{CURSOR_PREFIX}{seq}"))
}

fn decode_cursor(raw: &str) -> Option<i64> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(raw)
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    text.strip_prefix(CURSOR_PREFIX)?.parse().ok()
}

/// Parse list parameters shared by the API and the CLI.
pub fn list_filter(
    status: Option<&str>,
    limit: Option<&str>,
    cursor: Option<&str>,
) -> Result<ListFilter, ApiError> {
    let status = status
        .map(|s| {
            Status::parse(s).ok_or_else(|| {
                ApiError::Validation(format!(
                    "status: must be one of pending, active, completed, consumed, failed, expired; got {s:?}"
                ))
            })
        })
        .transpose()?;
    let limit = match limit {
        None => 50,
        Some(l) => l
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=200).contains(n))
            .ok_or_else(|| ApiError::Validation(format!("limit: must be 1 to 200, got {l:?}")))?,
    };
    let before_seq = cursor
        .map(|c| {
            decode_cursor(c)
                .ok_or_else(|| ApiError::Validation("cursor: not a valid cursor".into()))
        })
        .transpose()?;
    Ok(ListFilter {
        user_id: None,
        status,
        before_seq,
        limit,
    })
}

async fn list_link_sessions(
    _auth: Auth,
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let q: ListQuery = parse_query(&req)?;
    let mut filter = list_filter(q.status.as_deref(), q.limit.as_deref(), q.cursor.as_deref())?;
    let user = q
        .user_id
        .map(|u| {
            EntityRef::parse(&u)
                .ok_or_else(|| ApiError::Validation("user_id: must be a UUID or short_id".into()))
        })
        .transpose()?;
    let (sessions, next) = state
        .db
        .read_async(move |c| {
            if let Some(r) = user {
                match users::get(c, &r)? {
                    Some(u) => filter.user_id = Some(u.id),
                    None => return Ok((Vec::new(), None)),
                }
            }
            store::list(c, &filter, time::now())
        })
        .await?;
    Ok(HttpResponse::Ok().json(json!({
        "sessions": sessions,
        "next_cursor": next.map(encode_cursor),
    })))
}

/// Fail a live session with `code`; 409 when it has already ended.
pub async fn fail_session(
    state: &AppState,
    id: String,
    code: &'static str,
    message: String,
    detail: serde_json::Map<String, serde_json::Value>,
) -> Result<Result<LinkSession, crate::domain::link_session::Refusal>, ApiError> {
    let change = Change {
        error: Some((code.into(), message)),
        detail,
        ..Change::default()
    };
    let out = state
        .db
        .write_async(move |tx| store::transition(tx, &id, Transition::Fail, change, time::now()))
        .await?;
    if let Ok(s) = &out {
        state.waiters.notify(&s.id);
    }
    Ok(out)
}

async fn cancel_link_session(
    auth: Auth,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    auth.require(Scope::FullAccess)?;
    let current = find(&state, &path).await?;
    let mut detail = serde_json::Map::new();
    detail.insert("by".into(), json!("agent"));
    detail.insert("api_key_id".into(), json!(auth.key.id));
    match fail_session(
        &state,
        current.id,
        "CANCELED",
        "canceled by the agent".into(),
        detail,
    )
    .await?
    {
        Ok(s) => Ok(HttpResponse::Ok().json(s)),
        Err(r) => {
            let status = match r {
                crate::domain::link_session::Refusal::Ended(s)
                | crate::domain::link_session::Refusal::WrongState(s) => s,
            };
            Err(ApiError::InvalidState(format!(
                "the session has already ended ({})",
                status.as_str()
            )))
        }
    }
}

async fn list_link_session_events(
    _auth: Auth,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let session = find(&state, &path).await?;
    let list = state
        .db
        .read_async(move |c| events::list(c, &session.id))
        .await?;
    Ok(HttpResponse::Ok().json(json!({ "events": list })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trip_and_rejects_garbage() {
        assert_eq!(decode_cursor(&encode_cursor(42)), Some(42));
        assert_eq!(decode_cursor("nope"), None);
        assert_eq!(decode_cursor(""), None);
    }
}
