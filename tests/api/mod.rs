//! The integration suite: real HTTP against real servers. It is compiled twice, as
//! `tests/sqlite.rs` and `tests/postgres.rs`, each naming the store it runs on.

mod auth;
mod catalog;
mod cli;
mod delivery;
mod endpoints;
mod engine;
mod errors;
pub mod helpers;
mod operator;
mod ops;
mod process;
mod receiver;
mod smoke;
mod subscriptions;
