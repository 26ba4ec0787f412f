//! Link sessions: mint, read, wait (long-poll), list, cancel, audit timeline.

use std::time::Duration;

use serde::Serialize;
use serde_json::json;

use super::idempotency::{self, IdemKey, Produced, Reply};
use super::paging;
use super::{entity_ref, require, AppState};
use crate::db::events::Event;
use crate::db::link_sessions::{self as store, Change, ListFilter, Minter, NewSession};
use crate::db::{users, Db};
use crate::domain::api_key::{ApiKey, Scope};
use crate::domain::ids::{self, EntityRef};
use crate::domain::link_session::{
    Action, CreateRequest, LinkSession, Refusal, Status, Transition,
};
use crate::domain::time;
use crate::error::ApiError;

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

/// Longest long-poll, in seconds.
pub const MAX_WAIT: u64 = 60;

/// Mint a session for `user` as `caller`; the reply (201) is the create
/// response JSON (`Created`), replayed as is for a repeated `idem` key.
/// `idem` is the front-end's parse of its idempotency key, judged only here
/// so that every earlier check answers first. `public_base` is
/// `scheme://host[:port]` that the URL is built on.
pub async fn mint(
    state: &AppState,
    caller: &ApiKey,
    idem: Result<Option<IdemKey>, ApiError>,
    mut new: NewSession,
    user: EntityRef,
    public_base: &str,
) -> Result<Reply, ApiError> {
    let idem = idem?;
    let token = ids::new_link_token();
    new.token_hash = ids::sha256_hex(&token);
    let url = format!("{public_base}/link/{token}");
    let minter = Minter {
        api_key_id: Some(caller.id.clone()),
        name: caller.name.clone(),
    };
    idempotency::run(state, &caller.id, idem, move |tx| {
        let session = match insert_for(tx, new, &user, &minter)? {
            Ok(s) => s,
            Err(e) => return Ok(Err(e)),
        };
        let body = serde_json::to_string(&Created {
            token: &token,
            url,
            session: &session,
        })
        .map_err(|e| crate::db::DbError::Corrupt(e.to_string()))?;
        Ok(Ok(Produced {
            reply: Reply { status: 201, body },
            session_id: session.id,
        }))
    })
    .await
}

/// Insert `new` for member `user` (`NOT_FOUND` when unknown) in `tx`.
fn insert_for(
    tx: &rusqlite::Transaction,
    mut new: NewSession,
    user: &EntityRef,
    minter: &Minter,
) -> Result<Result<LinkSession, ApiError>, crate::db::DbError> {
    let Some(u) = users::get(tx, user)? else {
        return Ok(Err(ApiError::NotFound("user".into())));
    };
    new.user_id = u.id;
    Ok(Ok(store::insert(tx, new, minter, time::now())?))
}

/// Mint a session for member `user` in `db` as `minter`, with no
/// idempotency (the admin command line); returns the plaintext token
/// (shown once) and the session.
pub async fn mint_in(
    db: &Db,
    minter: Minter,
    mut new: NewSession,
    user: EntityRef,
) -> Result<(String, LinkSession), ApiError> {
    let token = ids::new_link_token();
    new.token_hash = ids::sha256_hex(&token);
    let session = db
        .write_checked_async(move |tx| insert_for(tx, new, &user, &minter))
        .await??;
    Ok((token, session))
}

/// `POST /connections/link`: check the §4 create body and mint (full_access).
pub async fn create(
    state: &AppState,
    caller: &ApiKey,
    req: &CreateRequest,
    idem: Result<Option<IdemKey>, ApiError>,
    public_base: &str,
) -> Result<Reply, ApiError> {
    require(caller, Scope::FullAccess)?;
    let valid = state.rules.check_create(req)?;
    let user = EntityRef::parse(&req.user_id)
        .ok_or_else(|| ApiError::Validation("user_id: must be a user's UUID or short_id".into()))?;
    let new = NewSession {
        valid,
        user_id: String::new(),
        action: Action::Link,
        connection_id: None,
        token_hash: String::new(),
    };
    mint(state, caller, idem, new, user, public_base).await
}

/// One session by UUID or short id, as it reads now (expired when past due).
pub async fn get(state: &AppState, raw: &str) -> Result<LinkSession, ApiError> {
    get_in(&state.db, entity_ref(raw, "link session")?).await
}

/// The session `r` in `db`, as it reads now (expired when past due).
pub async fn get_in(db: &Db, r: EntityRef) -> Result<LinkSession, ApiError> {
    db.read_async(move |c| store::get(c, &r))
        .await?
        .map(|s| s.at(time::now()))
        .ok_or_else(|| ApiError::NotFound("link session".into()))
}

/// The hot path of polling agents: the API key whose SHA-256 is `key_hash`
/// and the session `raw` (UUID or short id) in one read transaction (one
/// shared lock for both look-ups). The caller judges the key.
pub async fn get_with_key(
    state: &AppState,
    key_hash: String,
    raw: &str,
) -> Result<(Option<ApiKey>, Option<LinkSession>), ApiError> {
    let r = EntityRef::parse(raw);
    let (key, session) = state
        .db
        .read_async(move |c| {
            let tx = c.unchecked_transaction()?;
            let key = crate::db::api_keys::find_by_hash(&tx, &key_hash)?;
            let session = match &r {
                Some(r) => store::get(&tx, r)?,
                None => None,
            };
            tx.commit()?;
            Ok((key, session))
        })
        .await?;
    Ok((key, session.map(|s| s.at(time::now()))))
}

/// Hold until the session's status or connections change, it expires, the
/// server shuts down, or `wait` passes; then return the current session.
/// Returns at once for a terminal session. Only a `Notify` registration is
/// held while waiting: no thread, no database connection.
pub async fn wait(
    state: &AppState,
    first: LinkSession,
    wait: Duration,
) -> Result<LinkSession, ApiError> {
    if first.status.is_terminal() {
        return Ok(first);
    }
    let deadline = tokio::time::Instant::now() + wait;
    let sub = state.waiters.subscribe(&first.id);
    let id = first.id.clone();
    loop {
        let notified = sub.notify().notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        // Read after registering, so a change in between is not missed.
        let current = get(state, &id).await?;
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
                    return get(state, &id).await;
                }
            }
        }
    }
}

/// Parse list parameters shared by the API, the CLI and MCP.
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
    let limit = paging::parse_limit(limit)?;
    let before_seq = paging::SESSIONS.parse(cursor)?;
    Ok(ListFilter {
        user_id: None,
        status,
        before_seq,
        limit,
    })
}

/// List parameters as they arrive (text, checked here so every front-end
/// gives the same messages).
#[derive(Debug, Default, Clone)]
pub struct ListParams {
    /// Only this member (UUID or short id).
    pub user_id: Option<String>,
    /// Only this effective status.
    pub status: Option<String>,
    /// Page size, 1–200 (default 50).
    pub limit: Option<String>,
    /// A `next_cursor` from an earlier page.
    pub cursor: Option<String>,
}

/// One page of sessions: `{"sessions":[…],"next_cursor":…}`.
pub async fn list(state: &AppState, p: ListParams) -> Result<serde_json::Value, ApiError> {
    let filter = list_filter(p.status.as_deref(), p.limit.as_deref(), p.cursor.as_deref())?;
    let user = p
        .user_id
        .map(|u| {
            EntityRef::parse(&u)
                .ok_or_else(|| ApiError::Validation("user_id: must be a UUID or short_id".into()))
        })
        .transpose()?;
    let (sessions, next) = list_in(&state.db, filter, user).await?;
    Ok(json!({
        "sessions": sessions,
        "next_cursor": next.map(|seq| paging::SESSIONS.encode(seq)),
    }))
}

/// One page of sessions in `db` matching `filter`, only member `user`'s
/// when given (an unknown member has none); the `seq` to continue before
/// when there are more.
pub async fn list_in(
    db: &Db,
    mut filter: ListFilter,
    user: Option<EntityRef>,
) -> Result<(Vec<LinkSession>, Option<i64>), ApiError> {
    Ok(db
        .read_async(move |c| {
            if let Some(r) = user {
                match users::get(c, &r)? {
                    Some(u) => filter.user_id = Some(u.id),
                    None => return Ok((Vec::new(), None)),
                }
            }
            store::list(c, &filter, time::now())
        })
        .await?)
}

/// Fail the session `r` in `db` with `change` (one transaction for the
/// look-up and the transition): `NOT_FOUND` when unknown, the refusal when
/// it has already ended.
pub async fn cancel_in(
    db: &Db,
    r: EntityRef,
    change: Change,
) -> Result<Result<LinkSession, Refusal>, ApiError> {
    let emit = db.emit();
    db.write_async(move |tx| {
        let Some(s) = store::get(tx, &r)? else {
            return Ok(None);
        };
        store::transition(tx, &s.id, Transition::Fail, change, time::now(), emit).map(Some)
    })
    .await?
    .ok_or_else(|| ApiError::NotFound("link session".into()))
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

/// Cancel a live session as `caller` (full_access): it becomes `failed` /
/// `CANCELED`; the reply (200) is the session JSON. `INVALID_STATE` when it
/// has already ended.
pub async fn cancel(
    state: &AppState,
    caller: &ApiKey,
    raw: &str,
    idem: Option<IdemKey>,
) -> Result<Reply, ApiError> {
    require(caller, Scope::FullAccess)?;
    let id = get(state, raw).await?.id;
    let mut detail = serde_json::Map::new();
    detail.insert("by".into(), json!("agent"));
    detail.insert("api_key_id".into(), json!(caller.id));
    let change = failure("CANCELED", "canceled by the agent".into(), detail);
    let emit = state.db.emit();
    idempotency::run(state, &caller.id, idem, move |tx| {
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
            reply: Reply { status: 200, body },
            session_id: s.id,
        }))
    })
    .await
}

/// One page of a session's audit timeline, oldest first:
/// `{"events":[…],"next_cursor":…}`.
pub async fn events(
    state: &AppState,
    raw: &str,
    limit: Option<&str>,
    cursor: Option<&str>,
) -> Result<serde_json::Value, ApiError> {
    let limit = paging::parse_limit(limit)?;
    let after = paging::SESSION_EVENTS.parse(cursor)?;
    let session = get(state, raw).await?;
    let (list, next): (Vec<Event>, Option<i64>) = state
        .db
        .read_async(move |c| crate::db::events::list(c, &session.id, after, limit))
        .await?;
    Ok(json!({
        "events": list,
        "next_cursor": next.map(|seq| paging::SESSION_EVENTS.encode(seq)),
    }))
}

/// A short plain text an assistant can send the person as is: whom the
/// link is for, what to do, and when it stops working (`now` and
/// `expires_at` in Unix seconds; shown in UTC).
pub fn relay_message(for_name: &str, url: &str, relink: bool, expires_at: i64, now: i64) -> String {
    let minutes = ((expires_at - now).max(0) + 59) / 60;
    let what = if relink {
        "reconnect your bank account"
    } else {
        "connect your bank account"
    };
    let at = time::rfc3339(expires_at);
    let clock = at.get(11..16).unwrap_or(&at);
    let unit = if minutes == 1 { "minute" } else { "minutes" };
    format!(
        "Hi {for_name}, please open this link to {what}: {url}\n\
         Pick your bank and sign in on the bank's own page (your password is never shared with us). \
         This link is only for {for_name} (if you are not {for_name}, don't continue) and it expires in \
         {minutes} {unit} (at {clock} UTC)."
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_message_says_who_what_and_when() {
        let m = relay_message("Ana", "http://x/link/t", false, 1_000_900, 1_000_000);
        assert!(m.contains("Hi Ana"), "{m}");
        assert!(m.contains("http://x/link/t"), "{m}");
        assert!(m.contains("expires in 15 minutes"), "{m}");
        assert!(m.contains("UTC"), "{m}");
    }
}
