//! The integration suite (tests/api) on the embedded SQLite store.

/// Items only meaningful on the embedded SQLite store.
macro_rules! sqlite_only {
    ($($i:item)*) => { $($i)* };
}

/// Items only meaningful on PostgreSQL: left out here.
macro_rules! postgres_only {
    ($($i:item)*) => {};
}

pub const BACKEND: api::helpers::Backend = api::helpers::Backend::Sqlite;

#[path = "api/mod.rs"]
mod api;
