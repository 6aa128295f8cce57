//! Endpoints and their subscriptions, written once for both stores (see
//! `store/operator.rs` for how the shared queries are expanded into each backend).

/// Expands to the endpoint queries for one backend; the calling module provides
/// `map_err`, `is_unique_violation` and `begin` (a write transaction).
macro_rules! endpoint_queries {
    ($pool:ty, $row:ty, $db:ty) => {
        use std::collections::HashMap;

        use sqlx::Row as _;

        use crate::domain::{EventTypeRef, OrgId, Timestamp};
        use crate::store::{EndpointPatch, EndpointRecord, NewEndpoint, Page, StoreError, StoreResult};

        fn conflict(url: &str) -> StoreError {
            StoreError::Conflict(format!("an endpoint with url {url} already exists"))
        }

        fn from_row(row: &$row, org: &OrgId) -> EndpointRecord {
            EndpointRecord {
                uid: row.get("uid"),
                org_id: org.clone(),
                url: row.get("url"),
                enabled: row.get("enabled"),
                event_types: Vec::new(),
                sealed_secret: row.get("secret"),
                created: Timestamp::from_millis(row.get("created_ms")),
                modified: Timestamp::from_millis(row.get("modified_ms")),
                disabled_reason: row.get("disabled_reason"),
                disabled_at: row
                    .get::<Option<i64>, _>("disabled_ms")
                    .map(Timestamp::from_millis),
                old_secret: match (
                    row.get::<Option<Vec<u8>>, _>("old_secret"),
                    row.get::<Option<i64>, _>("old_secret_expires_ms"),
                ) {
                    (Some(sealed), Some(until)) => Some((sealed, Timestamp::from_millis(until))),
                    _ => None,
                },
                last_success: row
                    .get::<Option<i64>, _>("last_success_ms")
                    .map(Timestamp::from_millis),
                last_failure: row
                    .get::<Option<i64>, _>("last_failure_ms")
                    .map(Timestamp::from_millis),
            }
        }

        async fn write_event_types(
            tx: &mut sqlx::Transaction<'_, $db>,
            org: &OrgId,
            uid: i64,
            event_types: &[EventTypeRef],
        ) -> StoreResult<()> {
            sqlx::query("DELETE FROM endpoint_event_types WHERE endpoint_uid = $1")
                .bind(uid)
                .execute(&mut **tx)
                .await
                .map_err(map_err)?;
            // An endpoint without subscriptions takes every event: one wildcard row stands
            // for that, so fan-out is an index lookup either way.
            let wildcard = [EventTypeRef {
                event_name: crate::store::WILDCARD.to_owned(),
                subcategory: None,
            }];
            let rows = if event_types.is_empty() {
                &wildcard[..]
            } else {
                event_types
            };
            for (position, et) in rows.iter().enumerate() {
                sqlx::query(
                    "INSERT INTO endpoint_event_types (endpoint_uid, position, org_id, event_name, subcategory) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                )
                .bind(uid)
                .bind(position as i64)
                .bind(org.as_str())
                .bind(&et.event_name)
                .bind(et.subcategory.as_deref().unwrap_or(""))
                .execute(&mut **tx)
                .await
                .map_err(map_err)?;
            }
            Ok(())
        }

        /// Fills in the subscriptions of `endpoints` with one query.
        async fn load_event_types<'e>(
            exec: impl sqlx::Executor<'e, Database = $db>,
            org: &OrgId,
            endpoints: &mut [EndpointRecord],
        ) -> StoreResult<()> {
            let (Some(lo), Some(hi)) = (
                endpoints.iter().map(|e| e.uid).min(),
                endpoints.iter().map(|e| e.uid).max(),
            ) else {
                return Ok(());
            };
            let rows = sqlx::query(
                "SELECT endpoint_uid, event_name, subcategory FROM endpoint_event_types \
                 WHERE org_id = $1 AND endpoint_uid BETWEEN $2 AND $3 ORDER BY endpoint_uid, position",
            )
            .bind(org.as_str())
            .bind(lo)
            .bind(hi)
            .fetch_all(exec)
            .await
            .map_err(map_err)?;
            let mut by_uid: HashMap<i64, Vec<EventTypeRef>> = HashMap::new();
            for row in rows {
                let name: String = row.get("event_name");
                if name == crate::store::WILDCARD {
                    continue;
                }
                let sub: String = row.get("subcategory");
                by_uid
                    .entry(row.get("endpoint_uid"))
                    .or_default()
                    .push(EventTypeRef {
                        event_name: name,
                        subcategory: (!sub.is_empty()).then_some(sub),
                    });
            }
            for endpoint in endpoints {
                endpoint.event_types = by_uid.remove(&endpoint.uid).unwrap_or_default();
            }
            Ok(())
        }

        async fn fetch_live<'e>(
            exec: impl sqlx::Executor<'e, Database = $db>,
            org: &OrgId,
            url: &str,
        ) -> StoreResult<EndpointRecord> {
            let row = sqlx::query(
                "SELECT * FROM endpoints WHERE org_id = $1 AND url = $2 AND deleted_ms IS NULL",
            )
            .bind(org.as_str())
            .bind(url)
            .fetch_optional(exec)
            .await
            .map_err(map_err)?
            .ok_or(StoreError::NotFound)?;
            Ok(from_row(&row, org))
        }

        pub(super) async fn create(pool: &$pool, new: &NewEndpoint) -> StoreResult<EndpointRecord> {
            let mut tx = super::begin(pool).await.map_err(map_err)?;
            let row = sqlx::query(
                "INSERT INTO endpoints (org_id, url, enabled, secret, created_ms, modified_ms) \
                 VALUES ($1, $2, TRUE, $3, $4, $5) RETURNING *",
            )
            .bind(new.org_id.as_str())
            .bind(&new.url)
            .bind(&new.sealed_secret)
            .bind(new.now.millis())
            .bind(new.now.millis())
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| {
                if is_unique_violation(&e) {
                    conflict(&new.url)
                } else {
                    map_err(e)
                }
            })?;
            let mut endpoint = from_row(&row, &new.org_id);
            write_event_types(&mut tx, &new.org_id, endpoint.uid, &new.event_types).await?;
            tx.commit().await.map_err(map_err)?;
            endpoint.event_types = dedup(&new.event_types);
            Ok(endpoint)
        }

        fn dedup(refs: &[EventTypeRef]) -> Vec<EventTypeRef> {
            let mut out: Vec<EventTypeRef> = Vec::with_capacity(refs.len());
            for r in refs {
                if !out.contains(r) {
                    out.push(r.clone());
                }
            }
            out
        }

        pub(super) async fn get(pool: &$pool, org: &OrgId, url: &str) -> StoreResult<EndpointRecord> {
            let mut endpoint = fetch_live(pool, org, url).await?;
            load_event_types(pool, org, std::slice::from_mut(&mut endpoint)).await?;
            Ok(endpoint)
        }

        pub(super) async fn list(
            pool: &$pool,
            org: &OrgId,
            after: Option<i64>,
            limit: u32,
        ) -> StoreResult<Page<EndpointRecord>> {
            let rows = sqlx::query(
                "SELECT * FROM endpoints WHERE org_id = $1 AND deleted_ms IS NULL AND uid > $2 \
                 ORDER BY uid LIMIT $3",
            )
            .bind(org.as_str())
            .bind(after.unwrap_or(0))
            .bind(i64::from(limit) + 1)
            .fetch_all(pool)
            .await
            .map_err(map_err)?;
            let mut items: Vec<_> = rows.iter().map(|r| from_row(r, org)).collect();
            let mut page = crate::store::paginate(&mut items, limit, |e| e.uid);
            load_event_types(pool, org, &mut page.items).await?;
            Ok(page)
        }

        pub(super) async fn update(
            pool: &$pool,
            org: &OrgId,
            url: &str,
            patch: &EndpointPatch,
        ) -> StoreResult<EndpointRecord> {
            let mut tx = super::begin(pool).await.map_err(map_err)?;
            let current = fetch_live(&mut *tx, org, url).await?;
            let new_url = patch.url.as_deref().unwrap_or(url);
            sqlx::query(
                "UPDATE endpoints SET url = $1, enabled = $2, secret = COALESCE($3, secret), modified_ms = $4, \
                   old_secret = CASE WHEN $6 THEN NULL ELSE old_secret END, \
                   old_secret_expires_ms = CASE WHEN $6 THEN NULL ELSE old_secret_expires_ms END, \
                   disabled_reason = NULL, disabled_ms = CASE WHEN $2 THEN NULL ELSE COALESCE(disabled_ms, $4) END, \
                   failing_since_ms = CASE WHEN $2 THEN NULL ELSE failing_since_ms END \
                 WHERE uid = $5",
            )
            .bind(new_url)
            .bind(patch.enabled)
            .bind(patch.sealed_secret.as_deref())
            .bind(patch.now.millis())
            .bind(current.uid)
            .bind(patch.sealed_secret.is_some())
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                if is_unique_violation(&e) {
                    conflict(new_url)
                } else {
                    map_err(e)
                }
            })?;
            if let Some(event_types) = &patch.event_types {
                write_event_types(&mut tx, org, current.uid, event_types).await?;
            }
            let mut endpoint = fetch_live(&mut *tx, org, new_url).await?;
            load_event_types(&mut *tx, org, std::slice::from_mut(&mut endpoint)).await?;
            tx.commit().await.map_err(map_err)?;
            Ok(endpoint)
        }

        pub(super) async fn delete(
            pool: &$pool,
            org: &OrgId,
            url: &str,
            now: Timestamp,
        ) -> StoreResult<()> {
            let done = sqlx::query(
                "UPDATE endpoints SET deleted_ms = $1, enabled = FALSE WHERE org_id = $2 AND url = $3 AND deleted_ms IS NULL",
            )
            .bind(now.millis())
            .bind(org.as_str())
            .bind(url)
            .execute(pool)
            .await
            .map_err(map_err)?
            .rows_affected();
            if done == 0 {
                return Err(StoreError::NotFound);
            }
            Ok(())
        }
    };
}
