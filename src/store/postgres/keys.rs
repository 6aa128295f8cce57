//! Orgs and API keys on PostgreSQL (written once in `store/shared_keys.rs`), and the
//! shared rate-limit windows.

use sqlx::postgres::PgRow;
use sqlx::PgPool;

use super::map_err;

keys_queries!(PgPool, PgRow);

pub(super) async fn hit_rate_window(
    pool: &PgPool,
    key_id: &str,
    window_ms: i64,
) -> StoreResult<u32> {
    let hits: i64 = sqlx::query_scalar(
        "INSERT INTO rate_windows (key_id, window_ms, hits) VALUES ($1, $2, 1) \
         ON CONFLICT (key_id, window_ms) DO UPDATE SET hits = rate_windows.hits + 1 RETURNING hits",
    )
    .bind(key_id)
    .bind(window_ms)
    .fetch_one(pool)
    .await
    .map_err(map_err)?;
    // Windows are one second long; drop the old ones now and then (1 call in 256).
    if rand::random::<u8>() == 0 {
        sqlx::query("DELETE FROM rate_windows WHERE window_ms < $1")
            .bind(window_ms - 60_000)
            .execute(pool)
            .await
            .map_err(map_err)?;
    }
    Ok(hits.max(0) as u32)
}
