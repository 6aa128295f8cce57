//! The event catalog on SQLite (written once in `store/shared_catalog.rs`).

use sqlx::sqlite::SqliteRow;
use sqlx::SqlitePool;

use super::{is_unique_violation, map_err};

catalog_queries!(SqlitePool, SqliteRow);
