//! Endpoints on PostgreSQL (written once in `store/shared_endpoints.rs`).

use sqlx::postgres::PgRow;
use sqlx::{PgPool, Postgres};

use super::{is_unique_violation, map_err};

endpoint_queries!(PgPool, PgRow, Postgres);
