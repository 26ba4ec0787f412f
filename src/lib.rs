//! Breadbox: hands out short-lived links that let a household member connect
//! a bank through Plaid or Teller, for agents holding an API key.
#![forbid(unsafe_code)]

pub mod api;
pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod db;
pub mod domain;
pub mod error;
pub mod files;
pub mod health_check;
pub mod hosted;
pub mod hygiene;
pub mod limits;
pub mod maintenance;
pub mod mcp;
pub mod provider_webhooks;
pub mod providers;
pub mod server;
pub mod start;
pub mod waiters;
pub mod webhooks;

pub use server::{build, build_with};
