//! The one integration test binary: black-box tests that start the server on
//! port 0 with a temporary database and talk HTTP to it.

mod helpers;

mod cli;
mod concurrency;
mod fakes;
mod hosted;
mod link_sessions;
mod provider_clients;
mod users_keys;
mod webhooks_worker;
