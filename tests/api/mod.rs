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
pub mod pg;
mod process;
mod receiver;
mod smoke;
mod store;
mod subscriptions;

// Many nodes on one PostgreSQL database. (`cargo fmt` does not reach a module declared
// in a macro: `rustfmt --edition 2021 tests/api/scale/mod.rs`.)
postgres_only! {
    mod scale;
}
