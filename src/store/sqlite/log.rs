//! Reading the delivery log on SQLite.

use rusqlite::{params, Connection};

use super::sql::{first, rows};
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

pub(super) fn get_event(conn: &Connection, org: &OrgId, id: &EventId) -> StoreResult<EventRecord> {
    first::<EventRow>(
        conn,
        "SELECT id, event_name, subcategory, body, created_ms FROM events WHERE org_id = ?1 AND id = ?2",
        params![org.as_str(), id.as_str()],
    )?
    .map(EventRecord::from)
    .ok_or(StoreError::NotFound)
}

pub(super) fn event_deliveries(
    conn: &Connection,
    org: &OrgId,
    id: &EventId,
) -> StoreResult<Vec<DeliveryRecord>> {
    rows::<DeliveryRow>(
        conn,
        &format!(
            "SELECT {DELIVERY_COLUMNS} FROM events ev \
             JOIN deliveries d ON d.id BETWEEN ev.first_delivery AND ev.last_delivery AND d.event_seq = ev.seq \
             JOIN endpoints e ON e.uid = d.endpoint_uid \
             WHERE ev.org_id = ?1 AND ev.id = ?2 ORDER BY d.id"
        ),
        params![org.as_str(), id.as_str()],
    )?
    .into_iter()
    .map(DeliveryRow::into_record)
    .collect()
}

pub(super) fn list_deliveries(
    conn: &Connection,
    org: &OrgId,
    uid: EndpointUid,
    f: &DeliveryFilter,
) -> StoreResult<Page<DeliveryRecord>> {
    // `+d.org_id`: read by `deliveries_endpoint`, not `deliveries_org` (the org's other
    // endpoints' rows would be walked past); SQLite cannot tell the two apart unaided.
    let items = rows::<DeliveryRow>(
        conn,
        &delivery_select(
            "d.endpoint_uid = ?2 AND +d.org_id = ?1 AND (?3 IS NULL OR d.state = ?3) \
             AND d.created_ms >= ?4 AND d.created_ms < ?5 AND d.id < ?6 ORDER BY d.id DESC LIMIT ?7",
        ),
        params![
            org.as_str(),
            uid.0,
            f.state.map(|s| s.as_str()),
            f.since.map_or(i64::MIN, Timestamp::millis),
            f.until.map_or(i64::MAX, Timestamp::millis),
            f.before.map_or(i64::MAX, |d| d.0),
            i64::from(f.limit) + 1
        ],
    )?
    .into_iter()
    .map(DeliveryRow::into_record)
    .collect::<StoreResult<Vec<_>>>()?;
    Ok(Page::from_overfetch(items, f.limit, |d| d.id.0))
}

pub(super) fn get_delivery(
    conn: &Connection,
    org: &OrgId,
    id: DeliveryId,
) -> StoreResult<DeliveryRecord> {
    first::<DeliveryRow>(
        conn,
        &delivery_select("d.id = ?2 AND d.org_id = ?1"),
        params![org.as_str(), id.0],
    )?
    .ok_or(StoreError::NotFound)?
    .into_record()
}

pub(super) fn list_attempts(
    conn: &Connection,
    org: &OrgId,
    id: DeliveryId,
) -> StoreResult<Vec<AttemptView>> {
    Ok(rows::<AttemptRow>(
        conn,
        "SELECT a.attempt_no, a.started_ms, a.latency_ms, a.status_code, a.error, a.error_class, \
           a.response_body FROM attempts a JOIN deliveries d ON d.id = a.delivery_id \
         WHERE a.delivery_id = ?2 AND d.org_id = ?1 ORDER BY a.id",
        params![org.as_str(), id.0],
    )?
    .into_iter()
    .map(AttemptRow::into_view)
    .collect())
}

pub(super) fn endpoint_stats(
    conn: &Connection,
    uid: EndpointUid,
    since: &[Timestamp],
) -> StoreResult<Vec<WindowCounts>> {
    since
        .iter()
        .map(|from| {
            first::<CountsRow>(
                conn,
                "SELECT COALESCE(SUM(delivered), 0) AS delivered, COALESCE(SUM(failed), 0) AS failed \
                 FROM endpoint_stats WHERE endpoint_uid = ?1 AND bucket_ms >= ?2",
                params![uid.0, stats_bucket(*from)],
            )
            .map(|row| row.map(WindowCounts::from).unwrap_or_default())
        })
        .collect()
}
