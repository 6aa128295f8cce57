//! The event catalog on PostgreSQL (written once in `store/shared_catalog.rs`).

use sqlx::postgres::PgRow;
use sqlx::PgPool;

use super::{is_unique_violation, map_err};

catalog_queries!(PgPool, PgRow);
