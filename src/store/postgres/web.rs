//! The web console's and portal's sessions and org-wide reads on PostgreSQL.

use sqlx::PgPool;

use super::log::delivery_select;
use super::{is_unique_violation, map_err};
use crate::domain::{EndpointUid, KeyHash, OrgId, Timestamp};
use crate::store::rows::{BucketRow, DeliveryRow, SessionRow, SESSION_COLUMNS};
use crate::store::web::go_on_from;
use crate::store::{
    BucketCounts, DeliveryRecord, OrgDeliveryFilter, Page, StoreError, StoreResult,
    WebSessionRecord,
};

pub(super) async fn insert_session(pool: &PgPool, s: &WebSessionRecord) -> StoreResult<()> {
    sqlx::query(&format!(
        "INSERT INTO web_sessions ({SESSION_COLUMNS}) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
    ))
    .bind(s.hash.0.to_vec())
    .bind(s.org_id.as_str())
    .bind(s.kind.as_str())
    .bind(&s.capabilities)
    .bind(s.read_only)
    .bind(&s.csrf)
    .bind(s.key_hash.as_ref().map(|h| h.0.to_vec()))
    .bind(s.grant_hash.as_ref().map(|h| h.0.to_vec()))
    .bind(s.created.millis())
    .bind(s.expires.millis())
    .bind(s.revoked.map(Timestamp::millis))
    .execute(pool)
    .await
    .map_err(|e| {
        if is_unique_violation(&e) {
            StoreError::Conflict("that web session already exists".into())
        } else {
            map_err(e)
        }
    })?;
    Ok(())
}

pub(super) async fn find_session(
    pool: &PgPool,
    hash: &KeyHash,
) -> StoreResult<Option<WebSessionRecord>> {
    sqlx::query_as::<_, SessionRow>(&format!(
        "SELECT {SESSION_COLUMNS} FROM web_sessions WHERE hash = $1"
    ))
    .bind(hash.0.to_vec())
    .fetch_optional(pool)
    .await
    .map_err(map_err)?
    .map(SessionRow::into_record)
    .transpose()
}

/// The session and the sessions made from it (by the `grant_hash` index).
pub(super) async fn revoke_session(
    pool: &PgPool,
    hash: &KeyHash,
    now: Timestamp,
) -> StoreResult<()> {
    sqlx::query(
        "UPDATE web_sessions SET revoked_ms = $2 \
         WHERE (hash = $1 OR grant_hash = $1) AND revoked_ms IS NULL",
    )
    .bind(hash.0.to_vec())
    .bind(now.millis())
    .execute(pool)
    .await
    .map_err(map_err)?;
    Ok(())
}

/// The grant's sessions but its `keep` newest live ones (by the `grant_hash` index).
pub(super) async fn trim_grant_sessions(
    pool: &PgPool,
    grant: &KeyHash,
    keep: u32,
    now: Timestamp,
) -> StoreResult<u64> {
    let done = sqlx::query(
        "UPDATE web_sessions SET revoked_ms = $3 \
         WHERE grant_hash = $1 AND revoked_ms IS NULL AND hash NOT IN ( \
           SELECT hash FROM web_sessions \
           WHERE grant_hash = $1 AND revoked_ms IS NULL AND expires_ms > $3 \
           ORDER BY created_ms DESC, hash DESC LIMIT $2)",
    )
    .bind(grant.0.to_vec())
    .bind(i64::from(keep))
    .bind(now.millis())
    .execute(pool)
    .await
    .map_err(map_err)?;
    Ok(done.rows_affected())
}

pub(super) async fn prune_sessions(pool: &PgPool, now: Timestamp) -> StoreResult<u64> {
    let done = sqlx::query("DELETE FROM web_sessions WHERE expires_ms < $1 OR revoked_ms < $1")
        .bind(now.millis())
        .execute(pool)
        .await
        .map_err(map_err)?;
    Ok(done.rows_affected())
}

/// Read by `(org_id, id)`, or `(endpoint_uid, id)` for one endpoint, newest first from
/// the keyset position. With a filter and a `scan` bound, only that many ids of the
/// index are looked at: the page names the oldest of them to go on from.
pub(super) async fn list_org_deliveries(
    pool: &PgPool,
    org: &OrgId,
    f: &OrgDeliveryFilter,
) -> StoreResult<Page<DeliveryRecord>> {
    // ($2, the endpoint, is NULL without one and $9, the scan bound, is bound either
    // way: every statement binds the same parameters.)
    let (window, key) = if f.endpoint.is_some() {
        // The window by `deliveries_endpoint` alone (index-only; the page checks the org).
        (
            "endpoint_uid = $2 AND $1::TEXT IS NOT NULL",
            "d.endpoint_uid = $2 AND d.org_id = $1",
        )
    } else {
        (
            "org_id = $1 AND $2::BIGINT IS NULL",
            "d.org_id = $1 AND $2::BIGINT IS NULL",
        )
    };
    let bounded = f.scan > 0 && f.is_filtered();
    let position = if bounded {
        format!(
            "d.id IN (SELECT id FROM deliveries WHERE {window} AND id < $8 \
             ORDER BY id DESC LIMIT $9) AND d.org_id = $1"
        )
    } else {
        format!("{key} AND d.id < $8 AND $9::BIGINT >= 0")
    };
    let condition = format!(
        "{position} AND ($3::TEXT IS NULL OR d.state = $3) AND ($4::TEXT IS NULL OR ev.event_name = $4) \
         AND d.created_ms >= $5 AND d.created_ms < $6 ORDER BY d.id DESC LIMIT $7"
    );
    let before = f.before.unwrap_or(i64::MAX);
    let items = sqlx::query_as::<_, DeliveryRow>(&delivery_select(&condition))
        .bind(org.as_str())
        .bind(f.endpoint.map(|e| e.0))
        .bind(f.state.map(|s| s.as_str()))
        .bind(f.event_name.as_deref())
        .bind(f.since.map_or(i64::MIN, Timestamp::millis))
        .bind(f.until.map_or(i64::MAX, Timestamp::millis))
        .bind(i64::from(f.limit) + 1)
        .bind(before)
        .bind(i64::from(f.scan))
        .fetch_all(pool)
        .await
        .map_err(map_err)?
        .into_iter()
        .map(DeliveryRow::into_record)
        .collect::<StoreResult<Vec<_>>>()?;
    let mut page = Page::from_overfetch(items, f.limit, |d| d.id.0);
    if bounded && page.next_after.is_none() {
        // Short: the window's oldest delivery, if the window was full, and whether
        // anything older is left.
        let last: Option<(i64, i64, bool)> = sqlx::query_as(&format!(
            "SELECT w.id, d.created_ms, \
               EXISTS (SELECT 1 FROM deliveries WHERE {window} AND id < w.id) \
             FROM (SELECT id FROM deliveries WHERE {window} AND id < $3 \
                   ORDER BY id DESC LIMIT 1 OFFSET $4 - 1) w \
             JOIN deliveries d ON d.id = w.id"
        ))
        .bind(org.as_str())
        .bind(f.endpoint.map(|e| e.0))
        .bind(before)
        .bind(i64::from(f.scan))
        .fetch_optional(pool)
        .await
        .map_err(map_err)?;
        page.next_after = go_on_from(last, f);
    }
    Ok(page)
}

pub(super) async fn stats_series(
    pool: &PgPool,
    org: &OrgId,
    endpoint: Option<EndpointUid>,
    from: Timestamp,
    until: Timestamp,
) -> StoreResult<Vec<BucketCounts>> {
    let found = match endpoint {
        Some(uid) => sqlx::query_as::<_, BucketRow>(
            "SELECT s.bucket_ms, s.delivered, s.failed FROM endpoint_stats s \
             JOIN endpoints e ON e.uid = s.endpoint_uid AND e.org_id = $1 \
             WHERE s.endpoint_uid = $2 AND s.bucket_ms >= $3 AND s.bucket_ms < $4 \
             ORDER BY s.bucket_ms",
        )
        .bind(org.as_str())
        .bind(uid.0)
        .bind(from.millis())
        .bind(until.millis())
        .fetch_all(pool)
        .await,
        None => sqlx::query_as::<_, BucketRow>(
            "SELECT s.bucket_ms, SUM(s.delivered)::BIGINT AS delivered, SUM(s.failed)::BIGINT AS failed \
             FROM endpoints e JOIN endpoint_stats s ON s.endpoint_uid = e.uid \
             WHERE e.org_id = $1 AND s.bucket_ms >= $2 AND s.bucket_ms < $3 \
             GROUP BY s.bucket_ms ORDER BY s.bucket_ms",
        )
        .bind(org.as_str())
        .bind(from.millis())
        .bind(until.millis())
        .fetch_all(pool)
        .await,
    }
    .map_err(map_err)?;
    Ok(found.into_iter().map(BucketCounts::from).collect())
}

/// The conditions of `queue::recover_failed`, counted.
pub(super) async fn count_failed(
    pool: &PgPool,
    org: &OrgId,
    uid: EndpointUid,
    since: Timestamp,
    until: Option<Timestamp>,
) -> StoreResult<u64> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM deliveries \
         WHERE org_id = $1 AND endpoint_uid = $2 AND state = 'failed' AND created_ms >= $3 AND created_ms < $4",
    )
    .bind(org.as_str())
    .bind(uid.0)
    .bind(since.millis())
    .bind(until.map_or(i64::MAX, Timestamp::millis))
    .fetch_one(pool)
    .await
    .map_err(map_err)?;
    Ok(u64::try_from(n).unwrap_or(0))
}
