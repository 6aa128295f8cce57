//! Tests of PostgreSQL whatever store the suite runs on: the throwaway cluster itself,
//! and many `posthorn serve` nodes on one database.

mod cluster;
mod scale;
