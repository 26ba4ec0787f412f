//! The one integration test binary: black-box tests that start the server on
//! port 0 with a temporary database and talk HTTP to it.

mod helpers;

mod agent;
mod bank_flows;
mod browser;
mod chromium;
mod cli;
mod concurrency;
mod connection_lifecycle;
mod crash;
mod fakes;
mod growth;
mod hosted;
mod hostile;
mod hygiene;
mod limits;
mod link_sessions;
mod mcp;
mod openapi;
mod page_a11y;
mod page_oauth;
mod provider_clients;
mod provider_webhooks;
mod readme_walkthrough;
mod restore;
mod safety;
mod secrets_at_rest;
mod storage_faults;
mod users_keys;
mod webhooks_worker;
mod ws;
