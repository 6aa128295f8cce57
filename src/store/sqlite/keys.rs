//! Orgs and API keys on SQLite (written once in `store/shared_keys.rs`).

use sqlx::sqlite::SqliteRow;
use sqlx::SqlitePool;

use super::map_err;

keys_queries!(SqlitePool, SqliteRow);
