//! The operations layer: every thing an agent, the page, the CLI or an AI
//! assistant can do, as plain async functions over [`AppState`]. Each
//! front-end (REST handlers in `api/`, MCP tools in `mcp/`, …) parses its own
//! wire form, calls these, and maps [`ApiError`](crate::error::ApiError) back
//! to its own (HTTP status + envelope, MCP tool error, CLI exit code).
//!
//! Nothing here imports actix or rmcp (a test checks): the layer sits below
//! every front-end, so no module imports a module that imports it back.

pub mod api_keys;
pub mod bank;
pub mod connections;
pub mod idempotency;
pub mod link_sessions;
pub mod page;
pub mod paging;
pub mod users;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::config::Config;
use crate::db::Db;
use crate::domain::api_key::{ApiKey, Scope};
use crate::domain::link_session::{Provider, Rules};
use crate::error::ApiError;
use crate::limits::Limits;
use crate::waiters::Waiters;
use crate::webhooks::WorkerHandle;
use bank::Bank;

/// Shared state of every front-end: storage, rules, wake-ups, providers.
pub struct AppState {
    /// Storage.
    pub db: Db,
    /// Effective configuration.
    pub config: Config,
    /// Rules for new sessions.
    pub rules: Rules,
    /// Long-poll wake-ups.
    pub waiters: Arc<Waiters>,
    /// When each key's use was last written (throttles `last_used_at`).
    pub key_touches: Mutex<HashMap<String, i64>>,
    /// The outbound webhook worker, when `[webhooks] url` is set.
    pub webhooks: Option<WorkerHandle>,
    /// Provider clients and the credential cipher.
    pub bank: Bank,
    /// Rate limits.
    pub limits: Limits,
}

impl AppState {
    /// State for `config` over `db`.
    pub fn new(config: Config, db: Db, bank: Bank) -> Self {
        AppState {
            bank,
            limits: Limits::new(&config.limits, config.server.trust_forwarded_headers),
            rules: rules(&config),
            db,
            config,
            waiters: Arc::new(Waiters::default()),
            key_touches: Mutex::new(HashMap::new()),
            webhooks: None,
        }
    }

    /// A session changed: wake its long-poll waiters and the webhook worker.
    pub fn changed(&self, session_id: &str) {
        self.waiters.notify(session_id);
        if let Some(w) = &self.webhooks {
            w.wake();
        }
    }
}

/// Fail with `INSUFFICIENT_SCOPE` unless `caller`'s scope allows `needed`.
pub fn require(caller: &ApiKey, needed: Scope) -> Result<(), ApiError> {
    if caller.scope.allows(needed) {
        Ok(())
    } else {
        Err(ApiError::InsufficientScope)
    }
}

/// Session rules from the configuration.
pub fn rules(config: &Config) -> Rules {
    Rules {
        default_ttl: i64::from(config.link.default_ttl_seconds),
        max_ttl: i64::from(config.link.max_ttl_seconds),
        allowed_redirect_origins: config.link.allowed_redirect_origins.clone(),
        configured: configured_providers(config),
    }
}

/// Providers that have credentials in `config`.
pub fn configured_providers(config: &Config) -> Vec<Provider> {
    let mut out = Vec::new();
    if config.plaid.is_configured() {
        out.push(Provider::Plaid);
    }
    if config.teller.is_configured() {
        out.push(Provider::Teller);
    }
    out
}

/// The environment `provider` runs in (`sandbox`, `development`, `production`).
pub fn provider_environment(config: &Config, provider: Provider) -> &'static str {
    match provider {
        Provider::Plaid => config.plaid.environment.as_str(),
        Provider::Teller => config.teller.environment.as_str(),
    }
}

/// An `{id}` argument: UUID or short id, else `NOT_FOUND` naming `what`.
pub fn entity_ref(raw: &str, what: &str) -> Result<crate::domain::ids::EntityRef, ApiError> {
    crate::domain::ids::EntityRef::parse(raw).ok_or_else(|| ApiError::NotFound(what.into()))
}
