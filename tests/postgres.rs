//! The integration suite (tests/api) on PostgreSQL: a throwaway cluster is started for
//! this test process (tests/api/pg.rs), with a database per test.

/// Items only meaningful on the embedded SQLite store: left out here.
macro_rules! sqlite_only {
    ($($i:item)*) => {};
}

/// Items only meaningful on PostgreSQL.
macro_rules! postgres_only {
    ($($i:item)*) => { $($i)* };
}

pub const BACKEND: api::helpers::Backend = api::helpers::Backend::Postgres;

#[path = "api/mod.rs"]
mod api;
