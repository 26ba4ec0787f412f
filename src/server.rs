//! Application state, routes, middleware and the HTTP server.

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::dev::{Server, ServiceRequest};
use actix_web::middleware::Logger;
use actix_web::{web, App, HttpRequest, HttpServer};

use crate::bank::Bank;
use crate::config::Config;
use crate::db::Db;
use crate::domain::link_session::{Provider, Rules};
use crate::limits::Limits;
use crate::providers::ClientOptions;
use crate::waiters::Waiters;
use crate::webhooks::{self, WorkerHandle, WorkerOptions};
use crate::{api, hosted};

/// Shared state of every worker.
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

    /// `scheme://host[:port]` (no trailing slash) that links are built on.
    pub fn public_base(&self, req: &HttpRequest) -> String {
        if let Some(base) = self.config.server.public_base() {
            return base;
        }
        let headers = req.headers();
        let first = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(',').next())
                .map(|v| v.trim().to_owned())
        };
        let trust = self.config.server.trust_forwarded_headers;
        let scheme = trust
            .then(|| first("x-forwarded-proto"))
            .flatten()
            .filter(|s| s == "http" || s == "https")
            .unwrap_or_else(|| "http".to_owned());
        let host = trust
            .then(|| first("x-forwarded-host"))
            .flatten()
            .or_else(|| first("host"))
            .filter(|h| valid_host(h))
            .unwrap_or_else(|| self.config.server.listen.to_string());
        format!("{scheme}://{host}")
    }
}

/// A Host header value safe to put in a URL: name or address, optional port.
fn valid_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 255
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
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

/// Every route of the app.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.configure(api::health::configure)
        .configure(api::configure)
        .configure(hosted::configure)
        .default_service(web::to(api::not_found));
}

/// A request path fit for logs: tokens in `/link/…` and `/_link/…` are hidden.
pub fn redact_path(path: &str) -> String {
    for prefix in ["/link/", "/_link/"] {
        if let Some(rest) = path.strip_prefix(prefix) {
            let tail = rest.find('/').map_or("", |i| &rest[i..]);
            return format!("{prefix}[redacted]{tail}");
        }
    }
    path.to_owned()
}

/// The access log: method, redacted path (no query), status, size, time.
fn access_log() -> Logger {
    Logger::new("%a \"%{line}xi\" %s %b %Dms")
        .custom_request_replace("line", |req: &ServiceRequest| {
            format!("{} {}", req.method(), redact_path(req.path()))
        })
}

/// Build the server on an already bound listener (port 0 in tests) and start
/// its background tasks. Must be called inside a Tokio runtime.
pub fn build(config: Config, db: Db, listener: TcpListener) -> std::io::Result<Server> {
    build_with(config, db, listener, &ClientOptions::default())
}

/// [`build`] with provider client options (tests trust a test CA or use a
/// short timeout).
pub fn build_with(
    config: Config,
    db: Db,
    listener: TcpListener,
    provider_options: &ClientOptions,
) -> std::io::Result<Server> {
    let db = db.with_webhooks(config.webhooks.url.is_some());
    let bank = crate::bank::setup(&config, &db, provider_options).map_err(std::io::Error::other)?;
    let mut state = AppState::new(config, db, bank);
    if let (Some(url), Some(secret)) = (
        &state.config.webhooks.url,
        state.config.webhooks.secret_bytes(),
    ) {
        let worker = webhooks::spawn(
            state.db.clone(),
            url.clone(),
            secret,
            WorkerOptions::default(),
        )
        .map_err(std::io::Error::other)?;
        state.webhooks = Some(worker);
    }
    let state = web::Data::new(state);
    spawn_maintenance(state.clone().into_inner());
    crate::waiters::spawn_cross_process_watch(state.waiters.clone(), state.db.clone());
    let data = state.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .wrap(access_log())
            .configure(routes)
    })
    .listen(listener)?
    .client_request_timeout(Duration::from_secs(10))
    .client_disconnect_timeout(Duration::from_secs(2))
    .keep_alive(Duration::from_secs(30))
    .shutdown_timeout(5)
    .disable_signals()
    .run();
    spawn_signal_handler(server.handle(), state.waiters.clone());
    Ok(server)
}

/// On SIGTERM or SIGINT: answer every long-poll waiter, then stop gracefully
/// (in-flight requests finish; at most 5 s).
fn spawn_signal_handler(handle: actix_web::dev::ServerHandle, waiters: Arc<Waiters>) {
    tokio::spawn(async move {
        let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            log::warn!("cannot listen for SIGTERM");
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        log::info!("shutting down");
        waiters.close();
        handle.stop(true).await;
    });
}

/// The expiry sweeper and retention (see [`crate::maintenance`]).
fn spawn_maintenance(state: Arc<AppState>) {
    let changed = state.clone();
    let m = crate::maintenance::Maintenance::new(
        state.db.clone(),
        state.config.retention.clone(),
        Arc::new(move |id: &str| changed.changed(id)),
    )
    .converting(state.config.database.path.clone());
    crate::maintenance::spawn(m, move || state.limits.prune());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_tokens() {
        assert_eq!(
            redact_path("/link/abcdefghijklmnopqrstuv"),
            "/link/[redacted]"
        );
        assert_eq!(
            redact_path("/_link/abcdefghijklmnopqrstuv/session"),
            "/_link/[redacted]/session"
        );
        assert_eq!(redact_path("/api/v1/users"), "/api/v1/users");
    }

    #[test]
    fn hosts() {
        assert!(valid_host("example.com:8080"));
        assert!(valid_host("[::1]:80"));
        assert!(!valid_host("evil.com/path"));
        assert!(!valid_host("a b"));
        assert!(!valid_host(""));
    }
}
