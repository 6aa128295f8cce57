//! The integration suite (tests/api) on the embedded SQLite store.

pub const BACKEND: api::helpers::Backend = api::helpers::Backend::Sqlite;

#[path = "api/mod.rs"]
mod api;
