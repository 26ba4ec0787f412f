//! The hosted page's operations (`/link/{token}` and `/_link/{token}/…`):
//! the path token is the credential, so every call starts from
//! [`live`], which turns a token into a [`LiveSession`] or the error its
//! state calls for. The page's handlers (`hosted.rs`) only parse requests,
//! call these, and render the answers.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::bank::{self, AddConnection, AddOutcome};
use super::link_sessions::failure;
use super::AppState;
use crate::db::link_sessions::{self as store, Change};
use crate::db::{connections, events, users};
use crate::domain::ids::{self, EntityRef};
use crate::domain::link_session::{Action, LinkSession, Provider, Status, Transition};
use crate::domain::time::{self, Timestamp};
use crate::error::ApiError;

/// Most widget events (`exit`, `error`) one session records: a person retries
/// a handful of times; a script posting in a loop must not fill the disk
/// (issue 8, "bounded input").
pub const MAX_WIDGET_EVENTS: u32 = 200;

/// Most provider calls one session makes on a person's behalf (widget starts
/// and exchanges, counted by their `provider.started` and `provider.error`
/// events): far above a person's retries, low enough that a script holding
/// the link cannot make the server call Plaid or Teller without end.
pub const MAX_PROVIDER_ATTEMPTS: u32 = 100;

/// `TOO_MANY_EVENTS` once the session has used up [`MAX_PROVIDER_ATTEMPTS`].
async fn check_provider_attempts(state: &AppState, session: &LiveSession) -> Result<(), ApiError> {
    let id = session.id.clone();
    let kinds = ["provider.started", "provider.error"];
    let used = state
        .db
        .read_async(move |c| events::count_capped(c, &id, &kinds, MAX_PROVIDER_ATTEMPTS))
        .await?;
    if used >= MAX_PROVIDER_ATTEMPTS {
        return Err(ApiError::TooManyEvents(MAX_PROVIDER_ATTEMPTS));
    }
    Ok(())
}

/// A session whose token was presented and that has not ended, as it reads
/// now. Only [`live`] makes one, so holding it proves the token gate passed.
#[derive(Debug, Clone)]
pub struct LiveSession(LinkSession);

impl LiveSession {
    /// The session.
    pub fn session(&self) -> &LinkSession {
        &self.0
    }

    /// The session, by value.
    pub fn into_session(self) -> LinkSession {
        self.0
    }
}

impl std::ops::Deref for LiveSession {
    type Target = LinkSession;

    fn deref(&self) -> &LinkSession {
        &self.0
    }
}

/// Look `token` up for a client at `ip`; unknown → `None`. No database work
/// for a malformed token. A client that guessed too many unknown tokens is
/// refused (`RATE_LIMITED`) whatever it presents, until its bucket refills.
pub async fn find(
    state: &AppState,
    ip: IpAddr,
    token: &str,
) -> Result<Option<LinkSession>, ApiError> {
    if let Some(wait) = state.limits.token_locked(ip) {
        return Err(ApiError::RateLimited(wait));
    }
    let found = if ids::is_link_token(token) {
        let hash = ids::sha256_hex(token);
        state
            .db
            .read_async(move |c| store::get_by_token_hash(c, &hash))
            .await?
    } else {
        None
    };
    if found.is_none() {
        if let Some(wait) = state.limits.unknown_token(ip) {
            return Err(ApiError::RateLimited(wait));
        }
    }
    Ok(found)
}

/// The status of `token`'s session now, for the page itself (`/link/{token}`,
/// which answers every state with a page of its own); `None` when unknown.
pub async fn status(state: &AppState, ip: IpAddr, token: &str) -> Result<Option<Status>, ApiError> {
    Ok(find(state, ip, token)
        .await?
        .map(|s| s.status_at(time::now())))
}

/// The token gate for `/_link`: the live session, or the error its state
/// calls for (`INVALID_TOKEN`, `EXPIRED`, `CONSUMED`, …, `RATE_LIMITED`).
pub async fn live(state: &AppState, ip: IpAddr, token: &str) -> Result<LiveSession, ApiError> {
    let session = find(state, ip, token)
        .await?
        .ok_or(ApiError::InvalidToken)?;
    let now = time::now();
    let status = session.status_at(now);
    if status.is_terminal() {
        return Err(ApiError::ended(status));
    }
    Ok(LiveSession(session.at(now)))
}

/// What `GET /_link/{token}/session` returns (no user or connection ids).
#[derive(Debug, Serialize)]
pub struct PageSession {
    /// The session's UUID.
    pub id: String,
    /// The session's short id.
    pub short_id: String,
    /// The member's name only, so a forwarded link is noticed.
    pub for_name: String,
    /// The pinned provider, or `""` when the person picks.
    pub provider: &'static str,
    /// `link` or `relink`.
    pub action: Action,
    /// Burned after the first connection.
    pub single_use: bool,
    /// The agent's label.
    pub label: String,
    /// Where the page sends the person afterwards.
    pub redirect_url: String,
    /// The status after opening.
    pub status: Status,
    /// Connections this session made.
    pub result_connection_ids: Vec<String>,
    /// Their summaries, in the same order.
    pub connections: Vec<connections::Summary>,
    /// When the link stops working.
    #[serde(serialize_with = "time::ser")]
    pub expires_at: Timestamp,
    /// When the page was first opened.
    #[serde(serialize_with = "time::ser_opt")]
    pub started_at: Option<Timestamp>,
}

/// Open the page: a `pending` session becomes `active` (unless `start` is
/// false, as for `HEAD`), then the page's view of it. When another tab
/// opened it first, the session is read again through the gate (`ip`,
/// `token`).
pub async fn open(
    state: &AppState,
    ip: IpAddr,
    token: &str,
    session: LiveSession,
    start: bool,
) -> Result<PageSession, ApiError> {
    let mut session = session.into_session();
    if session.status == Status::Pending && start {
        match apply(state, &session.id, Transition::Open, Change::default()).await {
            Ok(s) => session = s,
            Err(ApiError::InvalidState(_)) => {
                session = live(state, ip, token).await?.into_session();
            }
            Err(e) => return Err(e),
        }
    }
    let ids = session.result_connection_ids.clone();
    let member = EntityRef::Uuid(session.user_id.clone());
    let (conns, user) = state
        .db
        .read_async(move |c| Ok((connections::summaries(c, &ids)?, users::get(c, &member)?)))
        .await?;
    Ok(PageSession {
        id: session.id,
        short_id: session.short_id,
        for_name: user.map(|u| u.name).unwrap_or_default(),
        provider: crate::domain::link_session::provider_str(session.provider),
        action: session.action,
        single_use: session.single_use,
        label: session.label,
        redirect_url: session.redirect_url,
        status: session.status,
        result_connection_ids: session.result_connection_ids,
        connections: conns,
        expires_at: session.expires_at,
        started_at: session.started_at,
    })
}

/// Providers this session may use: configured here, and the pinned one only.
pub fn allowed_providers(state: &AppState, session: &LiveSession) -> Vec<Provider> {
    state
        .rules
        .configured
        .iter()
        .copied()
        .filter(|p| session.provider.is_none_or(|pinned| pinned == *p))
        .collect()
}

/// Start `provider`'s widget: what it needs to open.
pub async fn start(
    state: &AppState,
    session: &LiveSession,
    provider: Provider,
) -> Result<serde_json::Value, ApiError> {
    check_provider_attempts(state, session).await?;
    bank::start(state, session, provider).await
}

/// Store the connection the widget made (or recognise a duplicate, §10).
pub async fn add_connection(
    state: &AppState,
    session: &LiveSession,
    add: AddConnection,
) -> Result<AddOutcome, ApiError> {
    check_provider_attempts(state, session).await?;
    bank::add_connection(state, session, add).await
}

/// The relinked connection works again.
pub async fn reauth_complete(state: &AppState, session: &LiveSession) -> Result<(), ApiError> {
    bank::reauth_complete(state, session).await
}

/// `POST /_link/{token}/events` body: what the provider's widget reported.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WidgetEvent {
    /// `exit` or `error`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `plaid` or `teller`.
    pub provider: String,
    /// The widget's code, at most 100 characters.
    #[serde(default)]
    pub code: Option<String>,
    /// The widget's message, at most 500 characters.
    #[serde(default)]
    pub message: Option<String>,
}

/// `v` (empty when absent), or a validation error naming `field` when it is
/// longer than `max` characters.
fn bounded(field: &str, v: Option<String>, max: usize) -> Result<String, ApiError> {
    let v = v.unwrap_or_default();
    if v.chars().count() > max {
        return Err(ApiError::Validation(format!(
            "{field}: must be at most {max} characters"
        )));
    }
    Ok(v)
}

/// Record a widget event in the audit timeline (`widget.exit`,
/// `widget.error`); `TOO_MANY_EVENTS` past [`MAX_WIDGET_EVENTS`].
pub async fn record_event(
    state: &AppState,
    session: &LiveSession,
    ev: WidgetEvent,
) -> Result<(), ApiError> {
    let kind = match ev.kind.as_str() {
        "exit" => "widget.exit",
        "error" => "widget.error",
        other => {
            return Err(ApiError::Validation(format!(
                "type: must be \"exit\" or \"error\", got {other:?}"
            )))
        }
    };
    let provider = Provider::parse(&ev.provider).ok_or_else(|| {
        ApiError::Validation(format!(
            "provider: must be \"plaid\" or \"teller\", got {:?}",
            ev.provider
        ))
    })?;
    let detail = json!({
        "provider": provider.as_str(),
        "code": bounded("code", ev.code, 100)?,
        "message": bounded("message", ev.message, 500)?,
    });
    let id = session.id.clone();
    state
        .db
        .write_checked_async(move |tx| {
            let kinds = ["widget.exit", "widget.error"];
            if events::count_capped(tx, &id, &kinds, MAX_WIDGET_EVENTS)? >= MAX_WIDGET_EVENTS {
                return Ok(Err(ApiError::TooManyEvents(MAX_WIDGET_EVENTS)));
            }
            events::insert(tx, &id, kind, time::now(), &detail).map(Ok)
        })
        .await??;
    Ok(())
}

/// The person declined: the session fails with `USER_CANCELED` and their
/// `reason` (at most 200 characters) or "the person declined".
pub async fn cancel(
    state: &AppState,
    session: &LiveSession,
    reason: Option<String>,
) -> Result<(), ApiError> {
    let reason = bounded("reason", reason, 200)?;
    let mut detail = serde_json::Map::new();
    detail.insert("by".into(), json!("person"));
    let message = if reason.is_empty() {
        "the person declined".to_owned()
    } else {
        reason
    };
    let change = failure("USER_CANCELED", message, detail);
    apply(state, &session.id, Transition::Fail, change).await?;
    Ok(())
}

/// The person is done: the session completes.
pub async fn complete(state: &AppState, session: &LiveSession) -> Result<(), ApiError> {
    apply(state, &session.id, Transition::Complete, Change::default()).await?;
    Ok(())
}

/// Run a transition as one compare-and-set; wake waiters and webhooks on
/// success, or answer the error the session's state calls for.
pub async fn apply(
    state: &AppState,
    session_id: &str,
    t: Transition,
    change: Change,
) -> Result<LinkSession, ApiError> {
    let id = session_id.to_owned();
    let emit = state.db.emit();
    let s = state
        .db
        .write_async(move |tx| store::transition(tx, &id, t, change, time::now(), emit))
        .await?
        .map_err(ApiError::from_refusal)?;
    state.changed(&s.id);
    Ok(s)
}
