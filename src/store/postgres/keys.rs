//! Orgs, API keys and the shared rate-limit windows.

use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};

use super::{map_err, org};
use crate::domain::{KeyHash, OrgId, Timestamp};
use crate::store::{ApiKeyRecord, StoreError, StoreResult, DEFAULT_CATALOG};

pub(super) async fn ensure_org(pool: &PgPool, org: &OrgId, now: Timestamp) -> StoreResult<()> {
    let mut tx = pool.begin().await.map_err(map_err)?;
    let inserted =
        sqlx::query("INSERT INTO orgs (id, created_ms) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(org.as_str())
            .bind(now.millis())
            .execute(&mut *tx)
            .await
            .map_err(map_err)?
            .rows_affected();
    if inserted == 1 {
        for (name, display, has_sub) in DEFAULT_CATALOG {
            sqlx::query(
                "INSERT INTO event_types (org_id, name, display_name, has_subcategories, created_ms) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(org.as_str())
            .bind(name)
            .bind(display)
            .bind(has_sub)
            .bind(now.millis())
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        }
    }
    tx.commit().await.map_err(map_err)
}

fn from_row(row: &PgRow) -> StoreResult<ApiKeyRecord> {
    let hash: Vec<u8> = row.get("hash");
    let role: String = row.get("role");
    Ok(ApiKeyRecord {
        id: row.get("id"),
        org_id: org(row.get("org_id"))?,
        role: role
            .parse()
            .map_err(|e: String| StoreError::Other(anyhow::anyhow!(e)))?,
        name: row.get("name"),
        hash: KeyHash(
            hash.try_into().map_err(|_| {
                StoreError::Other(anyhow::anyhow!("stored key hash is not 32 bytes"))
            })?,
        ),
        created: Timestamp::from_millis(row.get("created_ms")),
        revoked: row
            .get::<Option<i64>, _>("revoked_ms")
            .map(Timestamp::from_millis),
    })
}

pub(super) async fn count_active(pool: &PgPool) -> StoreResult<u64> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM api_keys WHERE revoked_ms IS NULL")
        .fetch_one(pool)
        .await
        .map_err(map_err)?;
    Ok(n.max(0) as u64)
}

pub(super) async fn insert(pool: &PgPool, key: &ApiKeyRecord) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO api_keys (id, org_id, hash, role, name, created_ms) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&key.id)
    .bind(key.org_id.as_str())
    .bind(key.hash.0.as_slice())
    .bind(key.role.as_str())
    .bind(&key.name)
    .bind(key.created.millis())
    .execute(pool)
    .await
    .map_err(|e| {
        if super::is_unique_violation(&e) {
            StoreError::Conflict("that API key already exists".into())
        } else {
            map_err(e)
        }
    })?;
    Ok(())
}

pub(super) async fn upsert_admin(pool: &PgPool, key: &ApiKeyRecord) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO api_keys (id, org_id, hash, role, name, created_ms) VALUES ($1, $2, $3, 'admin', $4, $5) \
         ON CONFLICT (hash) DO UPDATE SET org_id = excluded.org_id, role = 'admin', revoked_ms = NULL",
    )
    .bind(&key.id)
    .bind(key.org_id.as_str())
    .bind(key.hash.0.as_slice())
    .bind(&key.name)
    .bind(key.created.millis())
    .execute(pool)
    .await
    .map_err(map_err)?;
    Ok(())
}

pub(super) async fn find(pool: &PgPool, hash: &KeyHash) -> StoreResult<Option<ApiKeyRecord>> {
    let row = sqlx::query("SELECT * FROM api_keys WHERE hash = $1")
        .bind(hash.0.as_slice())
        .fetch_optional(pool)
        .await
        .map_err(map_err)?;
    row.as_ref().map(from_row).transpose()
}

pub(super) async fn list(pool: &PgPool, org: &OrgId) -> StoreResult<Vec<ApiKeyRecord>> {
    let rows = sqlx::query("SELECT * FROM api_keys WHERE org_id = $1 ORDER BY created_ms, id")
        .bind(org.as_str())
        .fetch_all(pool)
        .await
        .map_err(map_err)?;
    rows.iter().map(from_row).collect()
}

pub(super) async fn revoke(
    pool: &PgPool,
    org: &OrgId,
    id: &str,
    now: Timestamp,
) -> StoreResult<()> {
    let found = sqlx::query(
        "UPDATE api_keys SET revoked_ms = COALESCE(revoked_ms, $1) WHERE org_id = $2 AND id = $3",
    )
    .bind(now.millis())
    .bind(org.as_str())
    .bind(id)
    .execute(pool)
    .await
    .map_err(map_err)?
    .rows_affected();
    if found == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

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
    if window_ms % 256 == 0 {
        sqlx::query("DELETE FROM rate_windows WHERE window_ms < $1")
            .bind(window_ms - 60_000)
            .execute(pool)
            .await
            .map_err(map_err)?;
    }
    Ok(hits.max(0) as u32)
}
