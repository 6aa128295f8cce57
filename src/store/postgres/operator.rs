//! The operator queries on PostgreSQL (written once in `store/operator.rs`).

use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool};

use super::map_err;

operator_queries!(PgPool, PgRow, PgConnection);
