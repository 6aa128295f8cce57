//! The delivery queue on SQLite: claims, outcomes, and what moves deliveries. Every
//! function runs on the writer thread, inside its transaction.

use std::collections::HashMap;
use std::sync::Arc;

use rusqlite::{params, Connection};
use serde::Deserialize;

use super::sql::{execute, first, pairs, rows};
use super::thread::{Caches, Write};
use super::{flow, notices};
use crate::domain::notice::Notice;
use crate::domain::{ClaimToken, DeliveryId, EndpointUid, OrgId, PublicIds, Timestamp};
use crate::store::notices::{FailedRow, StandingRow, FAILED_COLUMNS};
use crate::store::rows::{TargetRow, TARGET_COLUMNS};
use crate::store::rules;
use crate::store::{
    AttemptRecord, ClaimRequest, Claimed, DeliveryRecord, HealthPolicy, Outcome, Payload,
    StoreError, StoreResult, Target, DOUBLE_CLICK_MS,
};

#[derive(Deserialize)]
struct LeasedRow {
    id: i64,
    event_seq: i64,
    endpoint_uid: i64,
    attempts: i64,
    retry_base: i64,
}

/// A delivery made pending again, and whether into its endpoint's flow queue.
#[derive(Deserialize)]
struct Requeued {
    endpoint_uid: i64,
    held: bool,
}

#[derive(Deserialize)]
struct PayloadRow {
    seq: i64,
    id: String,
    created_ms: i64,
    body: Vec<u8>,
}

fn target_by_uid(
    conn: &Connection,
    caches: &mut Caches,
    uid: EndpointUid,
) -> StoreResult<Arc<Target>> {
    if let Some(t) = caches.targets.get(&uid) {
        return Ok(t.clone());
    }
    let target = Arc::new(
        first::<TargetRow>(
            conn,
            &format!("SELECT {TARGET_COLUMNS} FROM endpoints e WHERE e.uid = ?1"),
            [uid.0],
        )?
        .ok_or(StoreError::NotFound)?
        .into_target()?,
    );
    caches.targets.insert(uid, target.clone());
    Ok(target)
}

fn json_ids(ids: impl Iterator<Item = i64>) -> StoreResult<String> {
    serde_json::to_string(&ids.collect::<Vec<_>>()).map_err(|e| StoreError::Other(e.into()))
}

/// Leases due deliveries: first what the flow queues due now release (see
/// `store/flow.rs`), then due ones in due order, skipping endpoints that hold their
/// limit here and taking at most each endpoint's room.
pub(super) fn claim_due(w: &mut Write<'_>, req: &ClaimRequest) -> StoreResult<Vec<Claimed>> {
    let (tx, caches) = (w.conn, &mut *w.caches);
    let mut room: HashMap<i64, u32> = HashMap::new();
    let released = flow::pump(tx, req, &mut room)?;
    let not_before: HashMap<i64, i64> = released
        .iter()
        .filter_map(|(id, at)| at.map(|at| (*id, at)))
        .collect();
    let mut picked: Vec<i64> = released.into_iter().map(|(id, _)| id).collect();
    // What flow queues released comes on top of the due rows asked for.
    let limit = picked.len() + req.limit as usize;
    // Due rows in due order (the due index covers both columns), then, here, at most
    // each endpoint's room: rows of endpoints that are full are passed over.
    let due = pairs(
        tx,
        "SELECT id, endpoint_uid FROM deliveries \
         WHERE state = 'pending' AND NOT held AND next_attempt_ms <= ?1 ORDER BY next_attempt_ms LIMIT ?2",
        params![req.now.millis(), i64::from(req.limit) * 2],
    )?;
    for (id, endpoint) in due {
        if picked.len() >= limit {
            break;
        }
        let left = room
            .entry(endpoint)
            .or_insert_with(|| req.room(EndpointUid(endpoint)));
        if *left > 0 {
            *left -= 1;
            picked.push(id);
        }
    }
    if picked.is_empty() {
        return Ok(Vec::new());
    }
    let leased = rows::<LeasedRow>(
        tx,
        "UPDATE deliveries SET next_attempt_ms = ?1, claim_token = ?2, held = 0 \
         WHERE id IN (SELECT value FROM json_each(?3)) \
         RETURNING id, event_seq, endpoint_uid, attempts, retry_base",
        params![
            req.lease_until.millis(),
            req.token.0,
            json_ids(picked.into_iter())?
        ],
    )?;
    let seqs = json_ids(leased.iter().map(|l| l.event_seq))?;
    let payloads: HashMap<i64, Arc<Payload>> = rows::<PayloadRow>(
        tx,
        "SELECT seq, id, created_ms, body FROM events WHERE seq IN (SELECT value FROM json_each(?1))",
        [seqs],
    )?
    .into_iter()
    .map(|p| {
        let payload = Payload {
            id: crate::domain::EventId::from_raw(p.id),
            created: Timestamp::from_millis(p.created_ms),
            body: p.body.into(),
        };
        (p.seq, Arc::new(payload))
    })
    .collect();
    let mut claimed = Vec::with_capacity(leased.len());
    for l in leased {
        claimed.push(Claimed {
            delivery: DeliveryId(l.id),
            token: req.token,
            attempts: u32::try_from(l.attempts).unwrap_or(0),
            retry_base: u32::try_from(l.retry_base).unwrap_or(0),
            event: payloads
                .get(&l.event_seq)
                .cloned()
                .ok_or(StoreError::NotFound)?,
            endpoint: target_by_uid(tx, caches, EndpointUid(l.endpoint_uid))?,
            not_before: not_before.get(&l.id).copied().map(Timestamp::from_millis),
        });
    }
    Ok(claimed)
}

/// A healthy endpoint's last success is written at most this often.
const HEALTH_EVERY_MS: i64 = 1000;

/// Records a batch of attempts, the deliveries' new states (where the claim token still
/// matches), the statistics of what finished, and the endpoints' health.
pub(super) fn record_attempts(
    w: &mut Write<'_>,
    records: &[AttemptRecord],
    now: Timestamp,
    policy: &HealthPolicy,
    operator: Option<&OrgId>,
    ids: &PublicIds,
) -> StoreResult<()> {
    let tx = w.conn;
    let mut finished: HashMap<EndpointUid, (i64, i64)> = HashMap::new();
    let mut made: Vec<Notice> = Vec::new();
    for r in records {
        if let Some(n) = r.attempt_no {
            execute(
                tx,
                "INSERT INTO attempts (delivery_id, attempt_no, started_ms, latency_ms, status_code, error, \
                   error_class, response_body) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    r.delivery.0,
                    n,
                    r.started.millis(),
                    i64::try_from(r.latency_ms).unwrap_or(i64::MAX),
                    r.status_code,
                    r.error,
                    r.error_class.map(|c| c.as_str()),
                    r.response_body
                ],
            )?;
        }
        // A retry of an endpoint with a flow queue waits in it.
        let retry_at = r.outcome.next_attempt().map(Timestamp::millis);
        let changed = execute(
            tx,
            "UPDATE deliveries SET state = ?1, next_attempt_ms = COALESCE(?2, next_attempt_ms), \
               attempts = COALESCE(?3, attempts), claim_token = NULL, last_status = ?4, last_error = ?5, \
               updated_ms = ?6, held = ?9 WHERE id = ?7 AND claim_token = ?8",
            params![
                r.outcome.state().as_str(),
                retry_at,
                r.attempt_no,
                r.status_code,
                r.error,
                now.millis(),
                r.delivery.0,
                r.token.0,
                r.queued && retry_at.is_some()
            ],
        )?;
        if changed == 1 && r.tells_flow() {
            // A FIFO head's outcome frees its queue (it is no longer out: see
            // `FLOW_COLUMNS`); a retry is looked for when due.
            let look = retry_at.unwrap_or(now.millis());
            execute(
                tx,
                "UPDATE endpoints SET flow_next_ms = MIN(COALESCE(flow_next_ms, ?2), ?2) \
                 WHERE uid = ?1 AND (fifo OR ?3)",
                params![r.endpoint.0, look, retry_at.is_some()],
            )?;
            // The dispatcher claims again (a FIFO queue's next is ready now).
            w.wake = true;
        }
        if changed == 1 && !matches!(r.outcome, Outcome::Retry { .. }) {
            let counts = finished.entry(r.endpoint).or_default();
            if r.outcome == Outcome::Delivered {
                counts.0 += 1;
            } else {
                counts.1 += 1;
            }
        }
        // A schedule used up (not a delivery dropped for a disabled endpoint).
        if changed == 1 && r.outcome == Outcome::Failed && r.attempt_no.is_some() {
            let failed = first::<FailedRow>(
                tx,
                &format!(
                    "SELECT {FAILED_COLUMNS} FROM deliveries d JOIN events ev ON ev.seq = d.event_seq \
                     JOIN endpoints e ON e.uid = d.endpoint_uid WHERE d.id = ?1"
                ),
                [r.delivery.0],
            )?;
            if let Some(notice) = failed.map(|f| f.notice(ids, now)).transpose()?.flatten() {
                made.push(notice);
            }
        }
    }
    let bucket = rules::stats_bucket(now);
    for (uid, (delivered, failed)) in finished {
        execute(
            tx,
            "INSERT INTO endpoint_stats (endpoint_uid, bucket_ms, delivered, failed) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (endpoint_uid, bucket_ms) DO UPDATE SET \
               delivered = delivered + excluded.delivered, failed = failed + excluded.failed",
            params![uid.0, bucket, delivered, failed],
        )?;
    }
    let mut disabled = false;
    for h in rules::health(records) {
        if let Some(until) = h.paused_until {
            execute(
                tx,
                "UPDATE endpoints SET paused_until_ms = MAX(COALESCE(paused_until_ms, 0), ?2) WHERE uid = ?1",
                params![h.endpoint.0, until.millis()],
            )?;
        }
        if h.gone {
            let switched_off = first::<StandingRow>(
                tx,
                "UPDATE endpoints SET enabled = 0, disabled_ms = ?2, disabled_reason = ?3 \
                 WHERE uid = ?1 AND enabled = 1 RETURNING uid, org_id, url, enabled, failing_since_ms",
                params![h.endpoint.0, now.millis(), rules::GONE_REASON],
            )?;
            if let Some(row) = switched_off {
                made.push(row.disabled(rules::GONE_REASON, now)?);
                disabled = true;
            }
        }
        if h.succeeded {
            let written = w.caches.healthy_since.get(&h.endpoint).copied();
            if written.is_some_and(|ms| ms > now.millis() - HEALTH_EVERY_MS) {
                continue;
            }
            w.caches.healthy_since.insert(h.endpoint, now.millis());
            if let Some(before) = standing(tx, h.endpoint)? {
                made.extend(before.recovered(&h, now, policy)?);
            }
            execute(
                tx,
                "UPDATE endpoints SET last_success_ms = ?2, failing_since_ms = NULL WHERE uid = ?1",
                params![h.endpoint.0, now.millis()],
            )?;
        } else if let Some(from) = h.failing_from {
            w.caches.healthy_since.remove(&h.endpoint);
            execute(
                tx,
                "UPDATE endpoints SET last_failure_ms = ?2, failing_since_ms = COALESCE(failing_since_ms, ?3) \
                 WHERE uid = ?1",
                params![h.endpoint.0, now.millis(), from.millis()],
            )?;
            let cutoff = now.minus(policy.disable_after).millis();
            let reason = rules::auto_disable_reason(policy.disable_after);
            let switched_off = first::<StandingRow>(
                tx,
                "UPDATE endpoints SET enabled = 0, disabled_ms = ?2, disabled_reason = ?3 \
                 WHERE uid = ?1 AND enabled = 1 AND failing_since_ms <= ?4 \
                 RETURNING uid, org_id, url, enabled, failing_since_ms",
                params![h.endpoint.0, now.millis(), reason, cutoff],
            )?;
            if let Some(row) = switched_off {
                made.push(row.disabled(&reason, now)?);
                disabled = true;
            }
        }
    }
    if disabled {
        w.caches.endpoints_changed();
    }
    notices::store(w, &made, operator, now)
}

/// An endpoint's standing before this batch's outcomes are written.
fn standing(conn: &Connection, uid: EndpointUid) -> StoreResult<Option<StandingRow>> {
    first::<StandingRow>(
        conn,
        "SELECT uid, org_id, url, enabled, failing_since_ms FROM endpoints WHERE uid = ?1",
        [uid.0],
    )
}

pub(super) fn release(
    w: &mut Write<'_>,
    token: ClaimToken,
    deliveries: &[DeliveryId],
    at: Timestamp,
) -> StoreResult<()> {
    let tx = w.conn;
    let mut released = 0;
    for id in deliveries {
        // Back in its flow queue, if its endpoint has one.
        let back = first::<Requeued>(
            tx,
            &format!(
                "UPDATE deliveries SET next_attempt_ms = ?1, claim_token = NULL, held = {} \
                 WHERE id = ?2 AND claim_token = ?3 AND state = 'pending' RETURNING endpoint_uid, held",
                flow::QUEUED
            ),
            params![at.millis(), id.0, token.0],
        )?;
        if let Some(back) = back {
            released += 1;
            if back.held {
                flow::look_by(tx, back.endpoint_uid, at.millis())?;
            }
        }
    }
    w.wake |= released > 0;
    Ok(())
}

pub(super) fn park_endpoint(
    w: &mut Write<'_>,
    uid: EndpointUid,
    now: Timestamp,
    until: Timestamp,
) -> StoreResult<()> {
    // Through the due index: what is due now, of this endpoint.
    execute(
        w.conn,
        "UPDATE deliveries SET next_attempt_ms = ?1 \
         WHERE state = 'pending' AND NOT held AND next_attempt_ms <= ?3 AND endpoint_uid = ?2 \
           AND (claim_token IS NULL OR next_attempt_ms <= ?1)",
        params![until.millis(), uid.0, now.millis()],
    )?;
    Ok(())
}

/// Ends every lease: at start, the process that held them is gone (one process serves
/// a file), so its work is taken up at once instead of after the lease. What a flow
/// queue had released goes back to it (a FIFO head stays the head: it has the lowest
/// id), so a limit is not skipped after a restart.
pub(super) fn expire_leases(conn: &Connection, now: Timestamp) -> StoreResult<()> {
    execute(
        conn,
        &format!(
            "UPDATE deliveries SET next_attempt_ms = ?1, claim_token = NULL, held = {} \
             WHERE state = 'pending' AND claim_token IS NOT NULL",
            flow::QUEUED
        ),
        [now.millis()],
    )?;
    execute(
        conn,
        "UPDATE endpoints SET flow_next_ms = ?1 WHERE fifo OR rate_limit IS NOT NULL",
        [now.millis()],
    )?;
    Ok(())
}

pub(super) fn retry_delivery(
    w: &mut Write<'_>,
    org: &OrgId,
    id: DeliveryId,
    now: Timestamp,
) -> StoreResult<DeliveryRecord> {
    // Not while an attempt is in flight, and not again within DOUBLE_CLICK_MS of the
    // last manual retry: a second click is the same request, even when the first one's
    // attempt has already been made.
    // An endpoint with a flow queue takes it back there, in its place by id.
    let queued = first::<Requeued>(
        w.conn,
        &format!(
            "UPDATE deliveries SET \
               retry_base = CASE WHEN state = 'pending' THEN retry_base ELSE attempts END, \
               state = 'pending', next_attempt_ms = ?3, claim_token = NULL, updated_ms = ?3, retried_ms = ?3, \
               held = {} \
             WHERE org_id = ?1 AND id = ?2 \
               AND NOT (state = 'pending' AND claim_token IS NOT NULL AND next_attempt_ms > ?3) \
               AND (retried_ms IS NULL OR retried_ms < ?4) RETURNING endpoint_uid, held",
            flow::QUEUED
        ),
        params![org.as_str(), id.0, now.millis(), now.millis() - DOUBLE_CLICK_MS],
    )?;
    if let Some(Requeued {
        endpoint_uid,
        held: true,
    }) = queued
    {
        flow::look_by(w.conn, endpoint_uid, now.millis())?;
    }
    w.wake |= queued.is_some();
    super::log::get_delivery(w.conn, org, id)
}

pub(super) fn recover_failed(
    w: &mut Write<'_>,
    org: &OrgId,
    uid: EndpointUid,
    since: Timestamp,
    until: Option<Timestamp>,
    now: Timestamp,
) -> StoreResult<u64> {
    let queued = execute(
        w.conn,
        &format!(
            "UPDATE deliveries SET state = 'pending', next_attempt_ms = ?5, retry_base = attempts, \
               claim_token = NULL, updated_ms = ?5, held = {} \
             WHERE org_id = ?1 AND endpoint_uid = ?2 AND state = 'failed' AND created_ms >= ?3 AND created_ms < ?4",
            flow::QUEUED
        ),
        params![org.as_str(), uid.0, since.millis(), until.map_or(i64::MAX, Timestamp::millis), now.millis()],
    )?;
    flow::look_by(w.conn, uid.0, now.millis())?;
    w.wake |= queued > 0;
    Ok(queued as u64)
}
