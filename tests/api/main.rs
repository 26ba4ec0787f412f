//! The one integration test binary: black-box tests that start the server on
//! port 0 with a temporary database and talk HTTP to it.

mod helpers;

mod agent;
mod bank_flows;
mod browser;
mod cli;
mod concurrency;
mod crash;
mod fakes;
mod growth;
mod hosted;
mod hostile;
mod limits;
mod link_sessions;
mod openapi;
mod provider_clients;
mod users_keys;
mod webhooks_worker;
