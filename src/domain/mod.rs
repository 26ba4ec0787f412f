//! Pure domain types and rules: no actix, no rusqlite.

pub mod api_key;
pub mod connection;
pub mod ids;
pub mod link_session;
pub mod time;
pub mod user;
