//! Pulled health checks (CONTRACT §10, "health, pulled"): for homes that no
//! provider webhook can reach. Every `[connections] health_check_interval`
//! each connection that still has a credential is checked once — Plaid
//! `/item/get`, Teller `GET /accounts`: one provider call per connection per
//! interval — one at a time, spread evenly over the interval, backing off
//! when a provider asks to slow down. What a check finds is applied like a
//! provider webhook: an event on the connection's timeline and a
//! `connection.status_changed` webhook through the outbox.

use std::sync::Arc;
use std::time::Duration;

use crate::app::bank::Bank;
use crate::app::AppState;
use crate::db::{connections, Db, DbError};
use crate::domain::connection::{Connection, ConnectionStatus, Signal};
use crate::domain::ids::EntityRef;
use crate::domain::time::{self, Timestamp};
use crate::providers::{plaid, teller, ProviderError};

/// First wait after a provider rate limit; doubles up to [`MAX_BACKOFF`].
pub const MIN_BACKOFF: Duration = Duration::from_secs(60);

/// Longest wait after repeated provider rate limits.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60 * 60);

/// Longest idle wait when there is nothing to check (new connections are
/// noticed at least this often).
const IDLE: Duration = Duration::from_secs(5 * 60);

/// Why a check did not run to the end.
#[derive(Debug)]
pub enum CheckError {
    /// No such connection.
    NotFound,
    /// Disconnected, or without a credential: nothing to ask the provider.
    NotCheckable,
    /// The provider is not configured on this server.
    NotConfigured(&'static str),
    /// The provider asked us to slow down; try again later.
    RateLimited,
    /// The provider failed in a way that says nothing about the connection.
    Provider(ProviderError),
    /// Storage failed.
    Db(DbError),
}

impl std::fmt::Display for CheckError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CheckError::NotFound => write!(f, "no such connection"),
            CheckError::NotCheckable => write!(f, "the connection is disconnected"),
            CheckError::NotConfigured(p) => write!(f, "{p} is not configured on this server"),
            CheckError::RateLimited => write!(f, "the provider asked to slow down"),
            CheckError::Provider(e) => write!(f, "{e}"),
            CheckError::Db(e) => write!(f, "{e}"),
        }
    }
}

impl From<DbError> for CheckError {
    fn from(e: DbError) -> Self {
        CheckError::Db(e)
    }
}

/// Check one connection now (by UUID or short id): ask its provider, apply
/// what it says, stamp `last_checked_at`. Returns the connection afterwards.
pub async fn check_connection(
    db: &Db,
    bank: &Bank,
    r: EntityRef,
) -> Result<Connection, CheckError> {
    let (conn, cred) = db
        .read_async(move |c| {
            let Some(conn) = connections::get(c, &r)? else {
                return Ok(None);
            };
            let cred = connections::credential(c, &conn.id)?;
            Ok(Some((conn, cred)))
        })
        .await?
        .ok_or(CheckError::NotFound)?;
    let Some(cred) = cred.filter(|_| conn.status != ConnectionStatus::Disconnected) else {
        return Err(CheckError::NotCheckable);
    };
    let token = bank
        .cipher
        .decrypt(&cred.sealed, conn.id.as_bytes())
        .ok()
        .and_then(|p| String::from_utf8(p).ok())
        .ok_or_else(|| CheckError::Db(DbError::Corrupt(format!("credential of {}", conn.id))))?;
    let signals = match conn.provider.as_str() {
        "plaid" => plaid_signals(bank, &token).await,
        _ => teller_signals(bank, &token).await,
    };
    let id = conn.id.clone();
    let emit = db.emit();
    let now = time::now();
    match signals {
        Ok(signals) => {
            let (after, wiped) = db
                .write_async(move |tx| {
                    connections::mark_checked(tx, &id, now)?;
                    let mut wiped = None;
                    for s in &signals {
                        if let Some(c) =
                            connections::apply_health(tx, &id, s, "health_check", now, emit)?
                        {
                            wiped = wiped.or(c.wiped);
                        }
                    }
                    Ok((connections::get(tx, &EntityRef::Uuid(id.clone()))?, wiped))
                })
                .await?;
            let after = after.ok_or(CheckError::NotFound)?;
            if let Some(cred) = wiped {
                crate::app::bank::forget_revoked(bank, &after, &cred).await;
            }
            Ok(after)
        }
        Err(CheckError::RateLimited) => Err(CheckError::RateLimited),
        Err(e) => {
            // Checked, but the answer said nothing: do not ask again at once.
            db.write_async(move |tx| connections::mark_checked(tx, &id, now))
                .await?;
            Err(e)
        }
    }
}

fn provider_failure(e: ProviderError) -> CheckError {
    if e.is_rate_limited() {
        CheckError::RateLimited
    } else {
        CheckError::Provider(e)
    }
}

/// Plaid `/item/get`: the Item's standing error and consent end.
async fn plaid_signals(bank: &Bank, token: &str) -> Result<Vec<Signal>, CheckError> {
    let client = bank
        .providers
        .plaid
        .as_ref()
        .ok_or(CheckError::NotConfigured("plaid"))?;
    let item = match client.get_item(token).await {
        Ok(item) => item,
        Err(ProviderError::Api { code, message, .. })
            if plaid::REAUTH_CODES.contains(&code.as_str())
                || plaid::REVOKED_CODES.contains(&code.as_str()) =>
        {
            return Ok(vec![plaid::error_signal(&code, &message)]);
        }
        Err(e) => return Err(provider_failure(e)),
    };
    let mut out = vec![match &item.error {
        Some(e) if !e.error_code.is_empty() => plaid::error_signal(
            &e.error_code,
            e.error_message.as_deref().unwrap_or_default(),
        ),
        _ => Signal::Repaired,
    }];
    // Like Plaid's PENDING_EXPIRATION webhook: only an end within the notice
    // window is news (EU Items carry a consent end months ahead from day one).
    let now = time::now();
    if let Some(at) = item
        .consent_expiration_time
        .as_deref()
        .and_then(crate::provider_webhooks::parse_time)
        .filter(|at| *at - now <= crate::provider_webhooks::EXPIRY_NOTICE_SECS)
    {
        out.push(Signal::Expiring { at });
    }
    Ok(out)
}

/// Teller `GET /accounts`: works, or says the enrollment is disconnected.
async fn teller_signals(bank: &Bank, token: &str) -> Result<Vec<Signal>, CheckError> {
    let client = bank
        .providers
        .teller
        .as_ref()
        .ok_or(CheckError::NotConfigured("teller"))?;
    match client.list_accounts(token).await {
        Ok(_) => Ok(vec![Signal::Repaired]),
        Err(e) if teller::needs_reauth(&e) => Ok(vec![Signal::ReauthRequired {
            code: e.code().to_owned(),
            message: "Teller reports the enrollment disconnected".into(),
        }]),
        Err(e) => Err(provider_failure(e)),
    }
}

/// Check every connection whose last news is at least `interval` old, one
/// at a time, now. Returns how many were checked; stops at a rate limit.
pub async fn run_once(db: &Db, bank: &Bank, interval: Duration) -> Result<usize, CheckError> {
    let cutoff = time::now().saturating_sub(secs(interval));
    let due = db
        .read_async(move |c| connections::due_for_check(c, cutoff))
        .await?;
    let mut done = 0;
    for id in due {
        match check_connection(db, bank, EntityRef::Uuid(id)).await {
            Ok(_) | Err(CheckError::Provider(_) | CheckError::NotConfigured(_)) => done += 1,
            // Disconnected meanwhile: nothing to do.
            Err(CheckError::NotFound | CheckError::NotCheckable) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

fn secs(d: Duration) -> Timestamp {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// Start the background checker (nothing when `[connections]
/// health_check_interval` is 0). Must be called inside a Tokio runtime.
pub fn spawn(state: Arc<AppState>) {
    let interval = state.config.connections.health_check_interval;
    if interval.is_zero() {
        log::info!("pulled connection health checks are off");
        return;
    }
    log::info!(
        "pulled connection health checks: each connection every {}s, one at a time",
        interval.as_secs()
    );
    tokio::spawn(async move {
        let mut backoff = Duration::ZERO;
        loop {
            let wait = match step(&state, interval).await {
                Step::Checked { count } => {
                    backoff = Duration::ZERO;
                    // One at a time, spread evenly over the interval.
                    (interval / u32::try_from(count.max(1)).unwrap_or(u32::MAX))
                        .max(Duration::from_secs(1))
                }
                Step::NotDue(wait) => wait,
                Step::RateLimited => {
                    backoff = (backoff * 2).clamp(MIN_BACKOFF, MAX_BACKOFF);
                    log::warn!(
                        "health check: provider rate limit; waiting {}s",
                        backoff.as_secs()
                    );
                    backoff
                }
            };
            tokio::time::sleep(wait).await;
        }
    });
}

enum Step {
    Checked { count: i64 },
    NotDue(Duration),
    RateLimited,
}

async fn step(state: &AppState, interval: Duration) -> Step {
    let next = state
        .db
        .read_async(|c| {
            Ok((
                connections::next_to_check(c)?,
                connections::checkable_count(c)?,
            ))
        })
        .await;
    let (next, count) = match next {
        Ok(n) => n,
        Err(e) => {
            log::error!("health check: {e}");
            return Step::NotDue(IDLE);
        }
    };
    let Some((id, seen)) = next else {
        return Step::NotDue(IDLE.min(interval));
    };
    let due = seen.saturating_add(secs(interval));
    let now = time::now();
    if due > now {
        let wait = u64::try_from(due - now).unwrap_or(0);
        return Step::NotDue(
            Duration::from_secs(wait)
                .min(IDLE)
                .max(Duration::from_secs(1)),
        );
    }
    match check_connection(&state.db, &state.bank, EntityRef::Uuid(id.clone())).await {
        Ok(conn) => {
            log::debug!("health check: {} is {}", conn.id, conn.status.as_str());
            if let Some(w) = &state.webhooks {
                w.wake();
            }
        }
        Err(CheckError::RateLimited) => return Step::RateLimited,
        Err(e) => log::warn!("health check of {id}: {e}"),
    }
    Step::Checked { count }
}
