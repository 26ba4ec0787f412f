//! Bank-linking flows that span the providers and the database.

use crate::domain::connection::Connection;
use crate::server::AppState;

/// Tell the provider, best-effort and in the background, that a connection
/// is gone (Plaid `/item/remove`, Teller enrollment delete).
pub fn forget_at_provider(_state: &AppState, _conn: &Connection, _credential: Vec<u8>) {}
