//! Orgs and API keys, written once for both stores (see `store/operator.rs` for how
//! the shared queries are expanded into each backend).

/// Expands to the org and key queries for one backend; the calling module provides
/// `map_err`, `is_unique_violation`, `org` and `begin` (a write transaction).
macro_rules! keys_queries {
    ($pool:ty, $row:ty) => {
        use sqlx::Row as _;

        use crate::domain::{KeyHash, OrgId, Timestamp};
        use crate::store::{ApiKeyRecord, StoreError, StoreResult, DEFAULT_CATALOG};

        pub(super) async fn ensure_org(pool: &$pool, org: &OrgId, now: Timestamp) -> StoreResult<()> {
            let mut tx = super::begin(pool).await.map_err(map_err)?;
            let inserted =
                sqlx::query("INSERT INTO orgs (id, created_ms) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                    .bind(org.as_str())
                    .bind(now.millis())
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?
                    .rows_affected();
            if inserted == 1 {
                // One millisecond apart, so listing by creation keeps the catalog's order.
                for (i, (name, display, has_sub)) in DEFAULT_CATALOG.iter().enumerate() {
                    sqlx::query(
                        "INSERT INTO event_types (org_id, name, display_name, has_subcategories, created_ms) \
                         VALUES ($1, $2, $3, $4, $5)",
                    )
                    .bind(org.as_str())
                    .bind(name)
                    .bind(display)
                    .bind(has_sub)
                    .bind(now.millis() + i as i64)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                }
            }
            tx.commit().await.map_err(map_err)
        }

        fn from_row(row: &$row) -> StoreResult<ApiKeyRecord> {
            let hash: Vec<u8> = row.get("hash");
            let role: String = row.get("role");
            Ok(ApiKeyRecord {
                id: row.get("id"),
                org_id: super::org(row.get("org_id"))?,
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

        pub(super) async fn count_active(pool: &$pool) -> StoreResult<u64> {
            let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM api_keys WHERE revoked_ms IS NULL")
                .fetch_one(pool)
                .await
                .map_err(map_err)?;
            Ok(n.max(0) as u64)
        }

        pub(super) async fn insert(pool: &$pool, key: &ApiKeyRecord) -> StoreResult<()> {
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

        pub(super) async fn upsert_admin(pool: &$pool, key: &ApiKeyRecord) -> StoreResult<()> {
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

        pub(super) async fn find(pool: &$pool, hash: &KeyHash) -> StoreResult<Option<ApiKeyRecord>> {
            let row = sqlx::query("SELECT * FROM api_keys WHERE hash = $1")
                .bind(hash.0.as_slice())
                .fetch_optional(pool)
                .await
                .map_err(map_err)?;
            row.as_ref().map(from_row).transpose()
        }

        pub(super) async fn list(pool: &$pool, org: &OrgId) -> StoreResult<Vec<ApiKeyRecord>> {
            let rows = sqlx::query("SELECT * FROM api_keys WHERE org_id = $1 ORDER BY created_ms, id")
                .bind(org.as_str())
                .fetch_all(pool)
                .await
                .map_err(map_err)?;
            rows.iter().map(from_row).collect()
        }

        pub(super) async fn revoke(
            pool: &$pool,
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
    };
}
