//! Application state, routes, middleware and the HTTP server.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, ServiceRequest};
use actix_web::middleware::Logger;
use actix_web::{web, App, HttpServer};

use crate::config::Config;
use crate::db::Db;
use crate::providers::ClientOptions;
use crate::waiters::Waiters;
use crate::webhooks::{self, WorkerOptions};
use crate::{api, hosted};

pub use crate::app::{configured_providers, provider_environment, rules, AppState};

/// Every route of the app.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.configure(api::health::configure)
        .configure(api::configure)
        .configure(crate::provider_webhooks::configure)
        .configure(hosted::configure)
        .default_service(web::to(api::not_found));
}

/// A request path fit for logs: the segment after any `link` or `_link`
/// segment (a link token) is hidden, however the path is spelled
/// (`//link/…`, `/link/…/`).
pub fn redact_path(path: &str) -> String {
    let mut out = Vec::new();
    let mut hide_next = false;
    for segment in path.split('/') {
        if hide_next && !segment.is_empty() {
            out.push("[redacted]");
            hide_next = false;
            continue;
        }
        hide_next = hide_next || segment == "link" || segment == "_link";
        out.push(segment);
    }
    out.join("/")
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
    let bank =
        crate::app::bank::setup(&config, &db, provider_options).map_err(std::io::Error::other)?;
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
    crate::health_check::spawn(state.clone().into_inner());
    crate::waiters::spawn_cross_process_watch(state.waiters.clone(), state.db.clone());
    let data = state.clone();
    let oauth_return = state
        .config
        .plaid
        .redirect_uri
        .as_ref()
        .map(|u| u.path().to_owned());
    // One MCP session table for every worker: a session's requests may land
    // on any of them.
    let mcp_sessions = crate::mcp::http::sessions();
    let server = HttpServer::new(move || {
        let oauth_return = oauth_return.clone();
        App::new()
            .app_data(data.clone())
            .wrap(actix_web::middleware::from_fn(crate::hygiene::middleware))
            .wrap(access_log())
            .configure(|cfg| {
                if data.config.mcp.enabled {
                    cfg.service(crate::mcp::http::service(&data, mcp_sessions.clone()));
                }
            })
            .configure(move |cfg| {
                if let Some(path) = &oauth_return {
                    hosted::configure_oauth_return(cfg, path);
                }
            })
            .configure(routes)
    })
    // MCP answers stream (server-sent events: several small writes per
    // answer); without TCP_NODELAY, Nagle's algorithm holds each later write
    // until the client's delayed ACK (~40 ms).
    .on_connect(|conn, _| {
        if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
            let _ = tcp.set_nodelay(true);
        }
    })
    .listen(listener)?
    .client_request_timeout(Duration::from_secs(10))
    .client_disconnect_timeout(Duration::from_secs(2))
    .keep_alive(Duration::from_secs(30))
    // In-flight requests get 3 s after SIGTERM (long-polls and MCP waits are
    // answered at once; an MCP client's open event stream is cut when the
    // grace ends), so the WAL checkpoint that follows keeps the whole stop
    // within 5 s.
    .shutdown_timeout(3)
    .disable_signals()
    .run();
    spawn_signal_handler(server.handle(), state.waiters.clone());
    Ok(server)
}

/// On SIGTERM or SIGINT: answer every long-poll waiter, then stop gracefully
/// (in-flight requests finish; at most 5 s). The signals are caught from the
/// moment this returns, so a SIGTERM right after start-up also stops cleanly
/// (and the caller checkpoints the database) instead of killing the process.
fn spawn_signal_handler(handle: actix_web::dev::ServerHandle, waiters: Arc<Waiters>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        log::warn!("cannot listen for SIGTERM/SIGINT");
        return;
    };
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
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
        assert_eq!(
            redact_path("//link/abcdefghijklmnopqrstuv"),
            "//link/[redacted]"
        );
        assert_eq!(redact_path("/link//abcdefghij/"), "/link//[redacted]/");
        assert_eq!(
            redact_path("/x/_link/tok/qr.svg"),
            "/x/_link/[redacted]/qr.svg"
        );
    }
}
