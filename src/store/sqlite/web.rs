//! The web console's and portal's sessions and org-wide reads on SQLite.

use rusqlite::{params, Connection, OptionalExtension};

use super::log::delivery_select;
use super::sql::{execute, first, is_unique_violation, map_err, rows, scalar};
use crate::domain::{EndpointUid, KeyHash, OrgId, Timestamp};
use crate::store::rows::{BucketRow, DeliveryRow, SessionRow, SESSION_COLUMNS};
use crate::store::web::go_on_from;
use crate::store::{
    BucketCounts, DeliveryRecord, OrgDeliveryFilter, Page, StoreError, StoreResult,
    WebSessionRecord,
};

pub(super) fn insert_session(conn: &Connection, s: &WebSessionRecord) -> StoreResult<()> {
    conn.prepare_cached(&format!(
        "INSERT INTO web_sessions ({SESSION_COLUMNS}) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
    ))
    .and_then(|mut stmt| {
        stmt.execute(params![
            s.hash.0.as_slice(),
            s.org_id.as_str(),
            s.kind.as_str(),
            s.capabilities,
            s.read_only,
            s.csrf,
            s.key_hash.as_ref().map(|h| h.0.to_vec()),
            s.grant_hash.as_ref().map(|h| h.0.to_vec()),
            s.created.millis(),
            s.expires.millis(),
            s.revoked.map(Timestamp::millis),
        ])
    })
    .map_err(|e| {
        if is_unique_violation(&e) {
            StoreError::Conflict("that web session already exists".into())
        } else {
            map_err(e)
        }
    })?;
    Ok(())
}

pub(super) fn find_session(
    conn: &Connection,
    hash: &KeyHash,
) -> StoreResult<Option<WebSessionRecord>> {
    first::<SessionRow>(
        conn,
        &format!("SELECT {SESSION_COLUMNS} FROM web_sessions WHERE hash = ?1"),
        params![hash.0.as_slice()],
    )?
    .map(SessionRow::into_record)
    .transpose()
}

/// The session and the sessions made from it (by the `grant_hash` index).
pub(super) fn revoke_session(conn: &Connection, hash: &KeyHash, now: Timestamp) -> StoreResult<()> {
    execute(
        conn,
        "UPDATE web_sessions SET revoked_ms = ?2 \
         WHERE (hash = ?1 OR grant_hash = ?1) AND revoked_ms IS NULL",
        params![hash.0.as_slice(), now.millis()],
    )?;
    Ok(())
}

/// The grant's sessions but its `keep` newest live ones (by the `grant_hash` index).
pub(super) fn trim_grant_sessions(
    conn: &Connection,
    grant: &KeyHash,
    keep: u32,
    now: Timestamp,
) -> StoreResult<u64> {
    let n = execute(
        conn,
        "UPDATE web_sessions SET revoked_ms = ?3 \
         WHERE grant_hash = ?1 AND revoked_ms IS NULL AND hash NOT IN ( \
           SELECT hash FROM web_sessions \
           WHERE grant_hash = ?1 AND revoked_ms IS NULL AND expires_ms > ?3 \
           ORDER BY created_ms DESC, hash DESC LIMIT ?2)",
        params![grant.0.as_slice(), i64::from(keep), now.millis()],
    )?;
    Ok(n as u64)
}

pub(super) fn prune_sessions(conn: &Connection, now: Timestamp) -> StoreResult<u64> {
    let n = execute(
        conn,
        "DELETE FROM web_sessions WHERE expires_ms < ?1 OR revoked_ms < ?1",
        params![now.millis()],
    )?;
    Ok(n as u64)
}

/// Read by `(org_id, id)`, or `(endpoint_uid, id)` for one endpoint, newest first from
/// the keyset position. With a filter and a `scan` bound, only that many ids of the
/// index are looked at: the page names the oldest of them to go on from.
pub(super) fn list_org_deliveries(
    conn: &Connection,
    org: &OrgId,
    f: &OrgDeliveryFilter,
) -> StoreResult<Page<DeliveryRecord>> {
    // (?2, the endpoint, is NULL without one and ?9, the scan bound, is bound either
    // way: every statement binds the same parameters.)
    let (window, key) = if f.endpoint.is_some() {
        // The window by `deliveries_endpoint` alone (the page checks the org); the page
        // with `+`, never by `deliveries_org` (SQLite rates the two alike).
        (
            "endpoint_uid = ?2 AND ?1 IS NOT NULL",
            "d.endpoint_uid = ?2 AND +d.org_id = ?1",
        )
    } else {
        ("org_id = ?1 AND ?2 IS NULL", "d.org_id = ?1 AND ?2 IS NULL")
    };
    let bounded = f.scan > 0 && f.is_filtered();
    let position = if bounded {
        format!(
            "d.id IN (SELECT id FROM deliveries WHERE {window} AND id < ?8 \
             ORDER BY id DESC LIMIT ?9) AND +d.org_id = ?1"
        )
    } else {
        format!("{key} AND d.id < ?8 AND ?9 >= 0")
    };
    let condition = format!(
        "{position} AND (?3 IS NULL OR d.state = ?3) AND (?4 IS NULL OR ev.event_name = ?4) \
         AND d.created_ms >= ?5 AND d.created_ms < ?6 ORDER BY d.id DESC LIMIT ?7"
    );
    let before = f.before.unwrap_or(i64::MAX);
    let items = rows::<DeliveryRow>(
        conn,
        &delivery_select(&condition),
        params![
            org.as_str(),
            f.endpoint.map(|e| e.0),
            f.state.map(|s| s.as_str()),
            f.event_name,
            f.since.map_or(i64::MIN, Timestamp::millis),
            f.until.map_or(i64::MAX, Timestamp::millis),
            i64::from(f.limit) + 1,
            before,
            i64::from(f.scan),
        ],
    )?
    .into_iter()
    .map(DeliveryRow::into_record)
    .collect::<StoreResult<Vec<_>>>()?;
    let mut page = Page::from_overfetch(items, f.limit, |d| d.id.0);
    if bounded && page.next_after.is_none() {
        // Short: the window's oldest delivery, if the window was full, and whether
        // anything older is left.
        let last: Option<(i64, i64, bool)> = conn
            .prepare_cached(&format!(
                "SELECT w.id, d.created_ms, \
                   EXISTS (SELECT 1 FROM deliveries WHERE {window} AND id < w.id) \
                 FROM (SELECT id FROM deliveries WHERE {window} AND id < ?3 \
                       ORDER BY id DESC LIMIT 1 OFFSET ?4 - 1) w \
                 JOIN deliveries d ON d.id = w.id"
            ))
            .and_then(|mut stmt| {
                stmt.query_row(
                    params![
                        org.as_str(),
                        f.endpoint.map(|e| e.0),
                        before,
                        i64::from(f.scan)
                    ],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()
            })
            .map_err(map_err)?;
        page.next_after = go_on_from(last, f);
    }
    Ok(page)
}

pub(super) fn stats_series(
    conn: &Connection,
    org: &OrgId,
    endpoint: Option<EndpointUid>,
    from: Timestamp,
    until: Timestamp,
) -> StoreResult<Vec<BucketCounts>> {
    let found = match endpoint {
        Some(uid) => rows::<BucketRow>(
            conn,
            "SELECT s.bucket_ms, s.delivered, s.failed FROM endpoint_stats s \
             JOIN endpoints e ON e.uid = s.endpoint_uid AND e.org_id = ?1 \
             WHERE s.endpoint_uid = ?2 AND s.bucket_ms >= ?3 AND s.bucket_ms < ?4 \
             ORDER BY s.bucket_ms",
            params![org.as_str(), uid.0, from.millis(), until.millis()],
        )?,
        None => rows::<BucketRow>(
            conn,
            "SELECT s.bucket_ms, SUM(s.delivered) AS delivered, SUM(s.failed) AS failed \
             FROM endpoints e JOIN endpoint_stats s ON s.endpoint_uid = e.uid \
             WHERE e.org_id = ?1 AND s.bucket_ms >= ?2 AND s.bucket_ms < ?3 \
             GROUP BY s.bucket_ms ORDER BY s.bucket_ms",
            params![org.as_str(), from.millis(), until.millis()],
        )?,
    };
    Ok(found.into_iter().map(BucketCounts::from).collect())
}

/// The conditions of `queue::recover_failed`, counted.
pub(super) fn count_failed(
    conn: &Connection,
    org: &OrgId,
    uid: EndpointUid,
    since: Timestamp,
    until: Option<Timestamp>,
) -> StoreResult<u64> {
    let n: i64 = scalar(
        conn,
        "SELECT COUNT(*) FROM deliveries \
         WHERE org_id = ?1 AND endpoint_uid = ?2 AND state = 'failed' AND created_ms >= ?3 AND created_ms < ?4",
        params![
            org.as_str(),
            uid.0,
            since.millis(),
            until.map_or(i64::MAX, Timestamp::millis)
        ],
    )?;
    Ok(u64::try_from(n).unwrap_or(0))
}
