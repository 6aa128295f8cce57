//! Endpoints on SQLite (written once in `store/shared_endpoints.rs`).

use sqlx::sqlite::SqliteRow;
use sqlx::{Sqlite, SqlitePool};

use super::{is_unique_violation, map_err};

endpoint_queries!(SqlitePool, SqliteRow, Sqlite);
