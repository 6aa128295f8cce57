//! Reading the delivery log on PostgreSQL.

use sqlx::PgPool;

use super::map_err;
use crate::domain::{DeliveryId, EndpointUid, EventId, OrgId, Timestamp};
use crate::store::rows::{AttemptRow, CountsRow, DeliveryRow, EventRow, DELIVERY_COLUMNS};
use crate::store::rules::stats_bucket;
use crate::store::{
    AttemptView, DeliveryFilter, DeliveryRecord, EventRecord, Page, StoreError, StoreResult,
    WindowCounts,
};

pub(super) fn delivery_select(condition: &str) -> String {
    format!(
        "SELECT {DELIVERY_COLUMNS} FROM deliveries d JOIN events ev ON ev.seq = d.event_seq \
         JOIN endpoints e ON e.uid = d.endpoint_uid WHERE {condition}"
    )
}

pub(super) async fn get_event(
    pool: &PgPool,
    org: &OrgId,
    id: &EventId,
) -> StoreResult<EventRecord> {
    sqlx::query_as::<_, EventRow>(
        "SELECT id, event_name, subcategory, body, created_ms FROM events WHERE org_id = $1 AND id = $2",
    )
    .bind(org.as_str())
    .bind(id.as_str())
    .fetch_optional(pool)
    .await
    .map_err(map_err)?
    .map(EventRecord::from)
    .ok_or(StoreError::NotFound)
}

pub(super) async fn event_deliveries(
    pool: &PgPool,
    org: &OrgId,
    id: &EventId,
) -> StoreResult<Vec<DeliveryRecord>> {
    sqlx::query_as::<_, DeliveryRow>(&delivery_select(
        "ev.org_id = $1 AND ev.id = $2 ORDER BY d.id",
    ))
    .bind(org.as_str())
    .bind(id.as_str())
    .fetch_all(pool)
    .await
    .map_err(map_err)?
    .into_iter()
    .map(DeliveryRow::into_record)
    .collect()
}

pub(super) async fn list_deliveries(
    pool: &PgPool,
    org: &OrgId,
    uid: EndpointUid,
    f: &DeliveryFilter,
) -> StoreResult<Page<DeliveryRecord>> {
    let items = sqlx::query_as::<_, DeliveryRow>(&delivery_select(
        "d.endpoint_uid = $2 AND d.org_id = $1 AND ($3::TEXT IS NULL OR d.state = $3) \
         AND d.created_ms >= $4 AND d.created_ms < $5 AND d.id < $6 ORDER BY d.id DESC LIMIT $7",
    ))
    .bind(org.as_str())
    .bind(uid.0)
    .bind(f.state.map(|s| s.as_str()))
    .bind(f.since.map_or(i64::MIN, Timestamp::millis))
    .bind(f.until.map_or(i64::MAX, Timestamp::millis))
    .bind(f.before.map_or(i64::MAX, |d| d.0))
    .bind(i64::from(f.limit) + 1)
    .fetch_all(pool)
    .await
    .map_err(map_err)?
    .into_iter()
    .map(DeliveryRow::into_record)
    .collect::<StoreResult<Vec<_>>>()?;
    Ok(Page::from_overfetch(items, f.limit, |d| d.id.0))
}

pub(super) async fn get_delivery(
    pool: &PgPool,
    org: &OrgId,
    id: DeliveryId,
) -> StoreResult<DeliveryRecord> {
    sqlx::query_as::<_, DeliveryRow>(&delivery_select("d.id = $2 AND d.org_id = $1"))
        .bind(org.as_str())
        .bind(id.0)
        .fetch_optional(pool)
        .await
        .map_err(map_err)?
        .ok_or(StoreError::NotFound)?
        .into_record()
}

pub(super) async fn list_attempts(
    pool: &PgPool,
    org: &OrgId,
    id: DeliveryId,
) -> StoreResult<Vec<AttemptView>> {
    Ok(sqlx::query_as::<_, AttemptRow>(
        "SELECT a.attempt_no, a.started_ms, a.latency_ms, a.status_code, a.error, a.error_class, \
           a.response_body FROM attempts a JOIN deliveries d ON d.id = a.delivery_id \
         WHERE a.delivery_id = $2 AND d.org_id = $1 ORDER BY a.id",
    )
    .bind(org.as_str())
    .bind(id.0)
    .fetch_all(pool)
    .await
    .map_err(map_err)?
    .into_iter()
    .map(AttemptRow::into_view)
    .collect())
}

pub(super) async fn endpoint_stats(
    pool: &PgPool,
    uid: EndpointUid,
    since: &[Timestamp],
) -> StoreResult<Vec<WindowCounts>> {
    let mut out = Vec::with_capacity(since.len());
    for from in since {
        let row = sqlx::query_as::<_, CountsRow>(
            "SELECT COALESCE(SUM(delivered), 0)::BIGINT AS delivered, COALESCE(SUM(failed), 0)::BIGINT AS failed \
             FROM endpoint_stats WHERE endpoint_uid = $1 AND bucket_ms >= $2",
        )
        .bind(uid.0)
        .bind(stats_bucket(*from))
        .fetch_one(pool)
        .await
        .map_err(map_err)?;
        out.push(row.into());
    }
    Ok(out)
}
