//! Breadbox: hands out short-lived links that let a household member connect
//! a bank through Plaid or Teller, for agents holding an API key.
#![forbid(unsafe_code)]

pub mod api;
pub mod auth;
pub mod cli;
pub mod config;
pub mod db;
pub mod domain;
pub mod error;
pub mod hosted;
pub mod server;
pub mod waiters;

pub use server::build;
