//! The integration suite: real HTTP against real servers and processes.
//!
//! The suite runs on the store `POSTHORN_TEST_STORE` names (`sqlite`, the default, or
//! `postgres`); `scripts/test` runs it on both. Tests of one store in particular live
//! in modules named `on_sqlite` and `on_postgres` and use that store whatever the
//! variable says, so the second run skips them (`--skip on_sqlite --skip on_postgres`).

mod auth;
mod catalog;
mod cli;
mod connections;
mod delivery;
mod disk;
mod endpoints;
mod engine;
mod errors;
mod flow;
pub mod helpers;
mod hostile;
mod on_postgres;
mod operator;
mod ops;
mod process;
mod receiver;
mod schemas;
mod smoke;
mod store;
mod subscriptions;
mod upgrade;
mod web;
