//! Queries of the operator API and of endpoint health, written once in the SQL that
//! SQLite and PostgreSQL share (`$n` parameters, `TRUE`/`FALSE`, no dialect
//! functions) and expanded into each backend by [`operator_queries!`] with its own
//! pool, row and connection types.

/// Expands to the shared query functions for one backend. The calling module provides
/// `map_err(sqlx::Error) -> StoreError`.
macro_rules! operator_queries {
    ($pool:ty, $row:ty, $conn:ty) => {
        use std::collections::HashMap;

        use sqlx::Row as _;

        use crate::store::{
            AttemptRecord, AttemptView, DeliveryFilter, DeliveryRecord, EventRecord, Outcome,
            Page, StoreError, StoreResult, WindowCounts,
        };
        use crate::domain::{OrgId, Timestamp};

        const DELIVERY_SELECT: &str = "SELECT d.id, ev.id AS event_id, ev.event_name, \
            e.url AS endpoint_url, (e.deleted_ms IS NOT NULL) AS endpoint_deleted, d.state, \
            d.attempts, d.next_attempt_ms, d.last_status, d.last_error, d.created_ms, d.updated_ms \
            FROM deliveries d JOIN events ev ON ev.seq = d.event_seq \
            JOIN endpoints e ON e.uid = d.endpoint_uid";

        fn delivery_from_row(row: &$row) -> DeliveryRecord {
            let state: String = row.get("state");
            let next: i64 = row.get("next_attempt_ms");
            DeliveryRecord {
                id: row.get("id"),
                event_id: row.get("event_id"),
                event_name: row.get("event_name"),
                endpoint_url: row.get("endpoint_url"),
                endpoint_deleted: row.get("endpoint_deleted"),
                next_attempt: (state == "pending").then(|| Timestamp::from_millis(next)),
                state,
                attempts: row.get::<i64, _>("attempts").max(0) as u32,
                last_status: row.get::<Option<i64>, _>("last_status").map(|s| s as u16),
                last_error: row.get("last_error"),
                created: Timestamp::from_millis(row.get("created_ms")),
                updated: Timestamp::from_millis(row.get("updated_ms")),
            }
        }

        pub(super) async fn next_due(pool: &$pool) -> StoreResult<Option<Timestamp>> {
            let ms: Option<i64> =
                sqlx::query_scalar("SELECT MIN(next_attempt_ms) FROM deliveries WHERE state = 'pending'")
                    .fetch_one(pool)
                    .await
                    .map_err(map_err)?;
            Ok(ms.map(Timestamp::from_millis))
        }

        pub(super) async fn pending_count(pool: &$pool) -> StoreResult<u64> {
            let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM deliveries WHERE state = 'pending'")
                .fetch_one(pool)
                .await
                .map_err(map_err)?;
            Ok(n.max(0) as u64)
        }

        pub(super) async fn get_event(pool: &$pool, org: &OrgId, id: &str) -> StoreResult<EventRecord> {
            let row = sqlx::query(
                "SELECT id, event_name, subcategory, body, created_ms FROM events WHERE org_id = $1 AND id = $2",
            )
            .bind(org.as_str())
            .bind(id)
            .fetch_optional(pool)
            .await
            .map_err(map_err)?
            .ok_or(StoreError::NotFound)?;
            Ok(EventRecord {
                id: row.get("id"),
                event_name: row.get("event_name"),
                subcategory: row.get("subcategory"),
                body: row.get("body"),
                created: Timestamp::from_millis(row.get("created_ms")),
            })
        }

        pub(super) async fn event_deliveries(pool: &$pool, org: &OrgId, id: &str) -> StoreResult<Vec<DeliveryRecord>> {
            let rows = sqlx::query(&format!("{DELIVERY_SELECT} WHERE d.org_id = $1 AND ev.id = $2 ORDER BY d.id"))
                .bind(org.as_str())
                .bind(id)
                .fetch_all(pool)
                .await
                .map_err(map_err)?;
            Ok(rows.iter().map(delivery_from_row).collect())
        }

        pub(super) async fn list_deliveries(
            pool: &$pool,
            org: &OrgId,
            endpoint_uid: i64,
            f: &DeliveryFilter,
        ) -> StoreResult<Page<DeliveryRecord>> {
            let rows = sqlx::query(&format!(
                "{DELIVERY_SELECT} WHERE d.org_id = $1 AND d.endpoint_uid = $2 \
                 AND ($3 IS NULL OR d.state = $3) AND d.created_ms >= $4 AND d.created_ms < $5 \
                 AND d.id < $6 ORDER BY d.id DESC LIMIT $7"
            ))
            .bind(org.as_str())
            .bind(endpoint_uid)
            .bind(f.state.as_deref())
            .bind(f.since.map_or(i64::MIN, Timestamp::millis))
            .bind(f.until.map_or(i64::MAX, Timestamp::millis))
            .bind(f.before.unwrap_or(i64::MAX))
            .bind(i64::from(f.limit) + 1)
            .fetch_all(pool)
            .await
            .map_err(map_err)?;
            let mut items: Vec<_> = rows.iter().map(delivery_from_row).collect();
            Ok(crate::store::paginate(&mut items, f.limit, |d| d.id))
        }

        pub(super) async fn get_delivery(pool: &$pool, org: &OrgId, id: i64) -> StoreResult<DeliveryRecord> {
            let row = sqlx::query(&format!("{DELIVERY_SELECT} WHERE d.org_id = $1 AND d.id = $2"))
                .bind(org.as_str())
                .bind(id)
                .fetch_optional(pool)
                .await
                .map_err(map_err)?
                .ok_or(StoreError::NotFound)?;
            Ok(delivery_from_row(&row))
        }

        pub(super) async fn list_attempts(pool: &$pool, org: &OrgId, id: i64) -> StoreResult<Vec<AttemptView>> {
            let rows = sqlx::query(
                "SELECT a.attempt_no, a.started_ms, a.latency_ms, a.status_code, a.error, a.error_class, \
                 a.response_body FROM attempts a JOIN deliveries d ON d.id = a.delivery_id \
                 WHERE d.org_id = $1 AND a.delivery_id = $2 ORDER BY a.id",
            )
            .bind(org.as_str())
            .bind(id)
            .fetch_all(pool)
            .await
            .map_err(map_err)?;
            Ok(rows
                .iter()
                .map(|row| AttemptView {
                    attempt_no: row.get::<i64, _>("attempt_no").max(0) as u32,
                    started: Timestamp::from_millis(row.get("started_ms")),
                    latency_ms: row.get::<i64, _>("latency_ms").max(0) as u64,
                    status_code: row.get::<Option<i64>, _>("status_code").map(|s| s as u16),
                    error: row.get("error"),
                    error_class: row.get("error_class"),
                    response_body: row.get("response_body"),
                })
                .collect())
        }

        pub(super) async fn retry_delivery(pool: &$pool, org: &OrgId, id: i64, now: Timestamp) -> StoreResult<()> {
            // Not while an attempt is in flight, and not again within DOUBLE_CLICK_MS
            // of the last manual retry: a second click is the same request, even when
            // the first one's attempt has already been made.
            sqlx::query(
                "UPDATE deliveries SET \
                   retry_base = CASE WHEN state = 'pending' THEN retry_base ELSE attempts END, \
                   state = 'pending', next_attempt_ms = $3, claim_token = NULL, updated_ms = $3, \
                   retried_ms = $3 \
                 WHERE org_id = $1 AND id = $2 \
                   AND NOT (state = 'pending' AND claim_token IS NOT NULL AND next_attempt_ms > $3) \
                   AND (retried_ms IS NULL OR retried_ms < $4)",
            )
            .bind(org.as_str())
            .bind(id)
            .bind(now.millis())
            .bind(now.millis() - crate::store::DOUBLE_CLICK_MS)
            .execute(pool)
            .await
            .map_err(map_err)?;
            Ok(())
        }

        pub(super) async fn recover_failed(
            pool: &$pool,
            org: &OrgId,
            endpoint_uid: i64,
            since: Timestamp,
            until: Option<Timestamp>,
            now: Timestamp,
        ) -> StoreResult<u64> {
            let done = sqlx::query(
                "UPDATE deliveries SET state = 'pending', next_attempt_ms = $5, retry_base = attempts, \
                   claim_token = NULL, updated_ms = $5 \
                 WHERE org_id = $1 AND endpoint_uid = $2 AND state = 'failed' \
                   AND created_ms >= $3 AND created_ms < $4",
            )
            .bind(org.as_str())
            .bind(endpoint_uid)
            .bind(since.millis())
            .bind(until.map_or(i64::MAX, Timestamp::millis))
            .bind(now.millis())
            .execute(pool)
            .await
            .map_err(map_err)?;
            Ok(done.rows_affected())
        }

        pub(super) async fn rotate_secret(
            pool: &$pool,
            org: &OrgId,
            url: &str,
            sealed: &[u8],
            old_expires: Timestamp,
            now: Timestamp,
        ) -> StoreResult<()> {
            let done = sqlx::query(
                "UPDATE endpoints SET old_secret = secret, old_secret_expires_ms = $4, secret = $3, \
                   modified_ms = $5 WHERE org_id = $1 AND url = $2 AND deleted_ms IS NULL",
            )
            .bind(org.as_str())
            .bind(url)
            .bind(sealed)
            .bind(old_expires.millis())
            .bind(now.millis())
            .execute(pool)
            .await
            .map_err(map_err)?;
            if done.rows_affected() == 0 {
                return Err(StoreError::NotFound);
            }
            Ok(())
        }

        pub(super) async fn endpoint_stats(pool: &$pool, uid: i64, since: &[Timestamp]) -> StoreResult<Vec<WindowCounts>> {
            let mut out = Vec::with_capacity(since.len());
            for from in since {
                let row = sqlx::query(
                    "SELECT COALESCE(SUM(CASE WHEN state = 'delivered' THEN 1 ELSE 0 END), 0) AS delivered, \
                            COALESCE(SUM(CASE WHEN state = 'failed' THEN 1 ELSE 0 END), 0) AS failed \
                     FROM deliveries WHERE endpoint_uid = $1 AND state <> 'pending' AND updated_ms >= $2",
                )
                .bind(uid)
                .bind(from.millis())
                .fetch_one(pool)
                .await
                .map_err(map_err)?;
                out.push(WindowCounts {
                    delivered: row.get::<i64, _>("delivered").max(0) as u64,
                    failed: row.get::<i64, _>("failed").max(0) as u64,
                });
            }
            Ok(out)
        }

        pub(super) async fn prune(pool: &$pool, cutoff: Timestamp, batch: u32) -> StoreResult<u64> {
            let mut tx = pool.begin().await.map_err(map_err)?;
            let last: Option<i64> = sqlx::query_scalar(
                "SELECT MAX(id) FROM (SELECT id FROM deliveries WHERE state <> 'pending' \
                 AND updated_ms < $1 ORDER BY id LIMIT $2) AS batch",
            )
            .bind(cutoff.millis())
            .bind(i64::from(batch))
            .fetch_one(&mut *tx)
            .await
            .map_err(map_err)?;
            let mut pruned = 0;
            if let Some(last) = last {
                sqlx::query(
                    "DELETE FROM attempts WHERE delivery_id IN (SELECT id FROM deliveries \
                     WHERE state <> 'pending' AND updated_ms < $1 AND id <= $2)",
                )
                .bind(cutoff.millis())
                .bind(last)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
                pruned = sqlx::query(
                    "DELETE FROM deliveries WHERE state <> 'pending' AND updated_ms < $1 AND id <= $2",
                )
                .bind(cutoff.millis())
                .bind(last)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?
                .rows_affected();
            }
            sqlx::query(
                "DELETE FROM events WHERE seq IN (SELECT ev.seq FROM events ev WHERE ev.created_ms < $1 \
                 AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_seq = ev.seq) \
                 ORDER BY ev.seq LIMIT $2)",
            )
            .bind(cutoff.millis())
            .bind(i64::from(batch))
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
            tx.commit().await.map_err(map_err)?;
            Ok(pruned)
        }

        /// Keeps each endpoint's last success and failure, and disables an endpoint
        /// whose attempts have all failed for `disable_after_ms`.
        pub(super) async fn apply_endpoint_health(
            conn: &mut $conn,
            records: &[AttemptRecord],
            now: Timestamp,
            disable_after_ms: i64,
        ) -> Result<(), sqlx::Error> {
            // endpoint -> (succeeded, earliest failed attempt)
            let mut health: HashMap<i64, (bool, Option<i64>)> = HashMap::new();
            for r in records.iter().filter(|r| r.attempt_no.is_some()) {
                let entry = health.entry(r.endpoint_uid).or_default();
                if r.outcome == Outcome::Delivered {
                    entry.0 = true;
                } else {
                    let started = r.started.millis();
                    entry.1 = Some(entry.1.map_or(started, |s: i64| s.min(started)));
                }
            }
            for (uid, (succeeded, failed_from)) in health {
                if succeeded {
                    sqlx::query("UPDATE endpoints SET last_success_ms = $2, failing_since_ms = NULL WHERE uid = $1")
                        .bind(uid)
                        .bind(now.millis())
                        .execute(&mut *conn)
                        .await?;
                } else if let Some(from) = failed_from {
                    sqlx::query(
                        "UPDATE endpoints SET last_failure_ms = $2, \
                           failing_since_ms = COALESCE(failing_since_ms, $3) WHERE uid = $1",
                    )
                    .bind(uid)
                    .bind(now.millis())
                    .bind(from)
                    .execute(&mut *conn)
                    .await?;
                    sqlx::query(
                        "UPDATE endpoints SET enabled = FALSE, disabled_ms = $2, disabled_reason = $3 \
                         WHERE uid = $1 AND enabled = TRUE AND failing_since_ms <= $4",
                    )
                    .bind(uid)
                    .bind(now.millis())
                    .bind(format!(
                        "disabled automatically: every delivery attempt failed for {}",
                        humantime::format_duration(std::time::Duration::from_millis(disable_after_ms.max(0) as u64))
                    ))
                    .bind(now.millis() - disable_after_ms)
                    .execute(&mut *conn)
                    .await?;
                }
            }
            Ok(())
        }
    };
}
