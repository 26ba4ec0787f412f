//! `/api/v1/connections/link`: mint, read, list, cancel and audit sessions.

use std::time::Duration;

use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::idempotency::Produced;
use super::{entity_ref, parse_query, parse_required_json, read_body, route, RouteEntry};
use crate::auth::{Auth, Presented};
use crate::db::link_sessions::{self as store, Change, ListFilter, Minter, NewSession};
use crate::db::{events, users};
use crate::domain::api_key::Scope;
use crate::domain::ids::{self, EntityRef};
use crate::domain::link_session::{
    Action, CreateRequest, LinkSession, Refusal, Status, Transition,
};
use crate::domain::time;
use crate::error::ApiError;
use crate::server::AppState;

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

/// Mint a session and answer 201 with token and url (idempotently when the
/// request carries an `Idempotency-Key`).
pub async fn mint(
    state: &AppState,
    req: &HttpRequest,
    auth: &Auth,
    body: &[u8],
    mut new: NewSession,
    user: EntityRef,
) -> Result<HttpResponse, ApiError> {
    let idem = super::idempotency::from_request(req, body)?;
    let token = ids::new_link_token();
    new.token_hash = ids::sha256_hex(&token);
    let url = format!("{}/link/{token}", state.public_base(req));
    let minter = Minter {
        api_key_id: Some(auth.key.id.clone()),
        name: auth.key.name.clone(),
    };
    super::idempotency::run(state, &auth.key.id, idem, move |tx| {
        let Some(u) = users::get(tx, &user)? else {
            return Ok(Err(ApiError::NotFound("user".into())));
        };
        new.user_id = u.id;
        let session = store::insert(tx, new, &minter, time::now())?;
        let body = serde_json::to_string(&Created {
            token: &token,
            url,
            session: &session,
        })
        .map_err(|e| crate::db::DbError::Corrupt(e.to_string()))?;
        Ok(Ok(Produced {
            status: StatusCode::CREATED,
            body,
            session_id: session.id,
        }))
    })
    .await
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
    let valid = state.rules.check_create(&parsed)?;
    let user = EntityRef::parse(&parsed.user_id)
        .ok_or_else(|| ApiError::Validation("user_id: must be a user's UUID or short_id".into()))?;
    let new = NewSession {
        valid,
        user_id: String::new(),
        action: Action::Link,
        connection_id: None,
        token_hash: String::new(),
    };
    mint(&state, &req, &auth, &body, new, user).await
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetQuery {
    wait: Option<String>,
}

/// Longest long-poll, in seconds.
const MAX_WAIT: u64 = 60;

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
    let hash = presented.hash()?;
    let r = EntityRef::parse(&path);
    let (key, found) = state
        .db
        .read_async(move |c| {
            // One read transaction: one shared lock for both look-ups.
            let tx = c.unchecked_transaction()?;
            let key = crate::db::api_keys::find_by_hash(&tx, &hash)?;
            let session = match &r {
                Some(r) => store::get(&tx, r)?,
                None => None,
            };
            tx.commit()?;
            Ok((key, session))
        })
        .await?;
    presented.accept(key)?;
    let wait = wait?;
    let session = found
        .map(|s| s.at(time::now()))
        .ok_or_else(|| ApiError::NotFound("link session".into()))?;
    let session = match wait {
        Some(secs) if !session.status.is_terminal() => {
            long_poll(&state, session, Duration::from_secs(secs)).await?
        }
        _ => session,
    };
    Ok(HttpResponse::Ok().json(session))
}

/// Hold until the session's status or connections change, it expires, the
/// server shuts down, or `wait` passes; then answer the current session.
/// Only a `Notify` registration is held while waiting.
async fn long_poll(
    state: &AppState,
    first: LinkSession,
    wait: Duration,
) -> Result<LinkSession, ApiError> {
    let deadline = tokio::time::Instant::now() + wait;
    let sub = state.waiters.subscribe(&first.id);
    let id = first.id.clone();
    loop {
        let notified = sub.notify().notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        // Read after registering, so a change in between is not missed.
        let current = find(state, &id).await?;
        let changed = current.status != first.status
            || current.result_connection_ids != first.result_connection_ids;
        if changed || current.status.is_terminal() || state.waiters.is_closing() {
            return Ok(current);
        }
        let until_expiry = u64::try_from(current.expires_at - time::now()).unwrap_or(0);
        let expiry = tokio::time::Instant::now() + Duration::from_secs(until_expiry);
        tokio::select! {
            () = &mut notified => {}
            () = tokio::time::sleep_until(deadline.min(expiry)) => {
                if tokio::time::Instant::now() >= deadline {
                    return find(state, &id).await;
                }
            }
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    user_id: Option<String>,
    status: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// Cursor prefixes: a session-list cursor is refused by the event list and
/// the other way round.
const SESSIONS_CURSOR: &str = "ls1:";
const EVENTS_CURSOR: &str = "ev1:";

fn encode_cursor(prefix: &str, seq: i64) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{prefix}{seq}"))
}

fn decode_cursor(prefix: &str, raw: &str) -> Option<i64> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(raw)
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    text.strip_prefix(prefix)?.parse().ok()
}

/// `limit`: 1 to 200, default 50 (CONTRACT §4).
fn parse_limit(limit: Option<&str>) -> Result<u32, ApiError> {
    match limit {
        None => Ok(50),
        Some(l) => l
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=200).contains(n))
            .ok_or_else(|| ApiError::Validation(format!("limit: must be 1 to 200, got {l:?}"))),
    }
}

/// `cursor`: a `next_cursor` this server issued with `prefix`; an empty
/// cursor is no cursor (as a client building URLs may send it).
fn parse_cursor(prefix: &str, cursor: Option<&str>) -> Result<Option<i64>, ApiError> {
    cursor
        .filter(|c| !c.is_empty())
        .map(|c| {
            decode_cursor(prefix, c)
                .ok_or_else(|| ApiError::Validation("cursor: not a valid cursor".into()))
        })
        .transpose()
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
    let limit = parse_limit(limit)?;
    let before_seq = parse_cursor(SESSIONS_CURSOR, cursor)?;
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
        "next_cursor": next.map(|seq| encode_cursor(SESSIONS_CURSOR, seq)),
    })))
}

/// The change that fails a session with `code`.
pub fn failure(
    code: &str,
    message: String,
    detail: serde_json::Map<String, serde_json::Value>,
) -> Change {
    Change {
        error: Some((code.into(), message)),
        detail,
        ..Change::default()
    }
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
    let id = find(&state, &path).await?.id;
    let mut detail = serde_json::Map::new();
    detail.insert("by".into(), json!("agent"));
    detail.insert("api_key_id".into(), json!(auth.key.id));
    let change = failure("CANCELED", "canceled by the agent".into(), detail);
    let emit = state.db.emit();
    super::idempotency::run(&state, &auth.key.id, idem, move |tx| {
        let s = match store::transition(tx, &id, Transition::Fail, change, time::now(), emit)? {
            Ok(s) => s,
            Err(Refusal::Ended(st) | Refusal::WrongState(st)) => {
                return Ok(Err(ApiError::InvalidState(format!(
                    "the session has already ended ({})",
                    st.as_str()
                ))))
            }
        };
        let body =
            serde_json::to_string(&s).map_err(|e| crate::db::DbError::Corrupt(e.to_string()))?;
        Ok(Ok(Produced {
            status: StatusCode::OK,
            body,
            session_id: s.id,
        }))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    limit: Option<String>,
    cursor: Option<String>,
}

async fn list_link_session_events(
    _auth: Auth,
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let q: EventsQuery = parse_query(&req)?;
    let limit = parse_limit(q.limit.as_deref())?;
    let after = parse_cursor(EVENTS_CURSOR, q.cursor.as_deref())?;
    let session = find(&state, &path).await?;
    let (list, next) = state
        .db
        .read_async(move |c| events::list(c, &session.id, after, limit))
        .await?;
    Ok(HttpResponse::Ok().json(json!({
        "events": list,
        "next_cursor": next.map(|seq| encode_cursor(EVENTS_CURSOR, seq)),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trip_and_rejects_garbage() {
        assert_eq!(
            decode_cursor(SESSIONS_CURSOR, &encode_cursor(SESSIONS_CURSOR, 42)),
            Some(42)
        );
        assert_eq!(
            decode_cursor(EVENTS_CURSOR, &encode_cursor(SESSIONS_CURSOR, 42)),
            None
        );
        assert_eq!(decode_cursor(SESSIONS_CURSOR, "nope"), None);
        assert_eq!(decode_cursor(SESSIONS_CURSOR, ""), None);
    }
}
