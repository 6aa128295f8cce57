//! The per-org event catalog, written once for both stores (see `store/operator.rs`
//! for how the shared queries are expanded into each backend).

/// Expands to the catalog queries for one backend; the calling module provides
/// `map_err` and `is_unique_violation`.
macro_rules! catalog_queries {
    ($pool:ty, $row:ty) => {
        use sqlx::Row as _;

        use crate::domain::{OrgId, Timestamp};
        use crate::store::{EventTypeRecord, Page, StoreError, StoreResult, SubcategoryRecord};

        fn type_from_row(row: &$row) -> EventTypeRecord {
            EventTypeRecord {
                name: row.get("name"),
                display_name: row.get("display_name"),
                has_subcategories: row.get("has_subcategories"),
            }
        }

        fn sub_from_row(row: &$row) -> SubcategoryRecord {
            SubcategoryRecord {
                seq: row.get("seq"),
                event_name: row.get("event_name"),
                token: row.get("token"),
                display_name: row.get("display_name"),
            }
        }

        pub(super) async fn list_types(pool: &$pool, org: &OrgId) -> StoreResult<Vec<EventTypeRecord>> {
            let rows = sqlx::query("SELECT * FROM event_types WHERE org_id = $1 ORDER BY created_ms, name")
                .bind(org.as_str())
                .fetch_all(pool)
                .await
                .map_err(map_err)?;
            Ok(rows.iter().map(type_from_row).collect())
        }

        pub(super) async fn get_type(
            pool: &$pool,
            org: &OrgId,
            name: &str,
        ) -> StoreResult<Option<EventTypeRecord>> {
            let row = sqlx::query("SELECT * FROM event_types WHERE org_id = $1 AND name = $2")
                .bind(org.as_str())
                .bind(name)
                .fetch_optional(pool)
                .await
                .map_err(map_err)?;
            Ok(row.as_ref().map(type_from_row))
        }

        pub(super) async fn create_type(
            pool: &$pool,
            org: &OrgId,
            t: &EventTypeRecord,
            now: Timestamp,
        ) -> StoreResult<()> {
            sqlx::query(
                "INSERT INTO event_types (org_id, name, display_name, has_subcategories, created_ms) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(org.as_str())
            .bind(&t.name)
            .bind(&t.display_name)
            .bind(t.has_subcategories)
            .bind(now.millis())
            .execute(pool)
            .await
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::Conflict(format!("event type {} already exists", t.name))
                } else {
                    map_err(e)
                }
            })?;
            Ok(())
        }

        pub(super) async fn list_subcategories(
            pool: &$pool,
            org: &OrgId,
            event_name: &str,
            after: Option<i64>,
            limit: u32,
        ) -> StoreResult<Page<SubcategoryRecord>> {
            let rows = sqlx::query(
                "SELECT * FROM subcategories WHERE org_id = $1 AND event_name = $2 AND seq > $3 \
                 ORDER BY seq LIMIT $4",
            )
            .bind(org.as_str())
            .bind(event_name)
            .bind(after.unwrap_or(0))
            .bind(i64::from(limit) + 1)
            .fetch_all(pool)
            .await
            .map_err(map_err)?;
            let mut items: Vec<_> = rows.iter().map(sub_from_row).collect();
            Ok(crate::store::paginate(&mut items, limit, |s| s.seq))
        }

        pub(super) async fn subcategory_exists(
            pool: &$pool,
            org: &OrgId,
            event_name: &str,
            token: &str,
        ) -> StoreResult<bool> {
            let found: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM subcategories WHERE org_id = $1 AND event_name = $2 AND token = $3",
            )
            .bind(org.as_str())
            .bind(event_name)
            .bind(token)
            .fetch_one(pool)
            .await
            .map_err(map_err)?;
            Ok(found > 0)
        }

        pub(super) async fn create_subcategory(
            pool: &$pool,
            org: &OrgId,
            event_name: &str,
            token: &str,
            display_name: Option<&str>,
            now: Timestamp,
        ) -> StoreResult<SubcategoryRecord> {
            let row = sqlx::query(
                "INSERT INTO subcategories (org_id, event_name, token, display_name, created_ms) \
                 VALUES ($1, $2, $3, $4, $5) RETURNING *",
            )
            .bind(org.as_str())
            .bind(event_name)
            .bind(token)
            .bind(display_name)
            .bind(now.millis())
            .fetch_one(pool)
            .await
            .map_err(map_err)?;
            Ok(sub_from_row(&row))
        }
    };
}
