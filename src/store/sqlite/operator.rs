//! The operator queries on SQLite (written once in `store/operator.rs`).

use sqlx::sqlite::SqliteRow;
use sqlx::{SqliteConnection, SqlitePool};

use super::map_err;

operator_queries!(SqlitePool, SqliteRow, SqliteConnection);
