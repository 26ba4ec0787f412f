//! `breadbox mcp`: the MCP server on stdin/stdout, working on the database
//! file like the admin commands and acting as one API key.

use std::sync::Arc;

use rmcp::ServiceExt as _;

use super::{key_hash, Breadbox};
use crate::app::AppState;
use crate::config::Config;
use crate::db::Db;
use crate::error::ApiError;

/// Serve MCP on stdio until the client closes it, as the API key `raw`
/// (checked against the database first: unknown or revoked keys stop here).
/// Links point at `server.public_url`, else at `server.listen`.
pub async fn serve(config: Config, db: Db, raw_key: &str) -> Result<(), String> {
    let hash = key_hash(raw_key).map_err(|e| e.message())?;
    let bank = crate::app::bank::setup(&config, &db, &crate::providers::ClientOptions::default())?;
    // The same base `links create` uses: never a wildcard host; a loopback
    // one is flagged in the log the MCP client shows (stderr).
    let (public_base, warning) = config.server.link_base();
    if let Some(w) = warning {
        eprintln!("breadbox mcp: {w}");
    }
    let state = Arc::new(AppState::new(config, db, bank));
    let key = crate::app::api_keys::find_by_hash(&state, hash.clone())
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| ApiError::InvalidApiKey.message())?;
    if key.revoked_at.is_some() {
        return Err(ApiError::RevokedApiKey.message());
    }
    log::info!("MCP on stdio as API key {} ({})", key.name, key.short_id);
    // Wake waiters when the server (another process) changes a session.
    crate::waiters::spawn_cross_process_watch(state.waiters.clone(), state.db.clone());
    let server = Breadbox::fixed(state, hash, public_base)
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| format!("MCP start failed: {e}"))?;
    server
        .waiting()
        .await
        .map_err(|e| format!("MCP stopped: {e}"))?;
    Ok(())
}
