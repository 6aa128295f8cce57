//! Events and the delivery queue on SQLite. Every function runs on the writer thread,
//! one call per message.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{params, Connection, Transaction, TransactionBehavior};
use serde::Deserialize;

use super::sql::{execute, first, map_err, rows, scalar};
use super::thread::{Caches, RouteKey, WriterState};
use crate::domain::{ClaimToken, DeliveryId, EndpointUid, OrgId, Timestamp};
use crate::store::rows::{PriorEventRow, TargetRow, TARGET_COLUMNS};
use crate::store::rules::{self, Deduped};
use crate::store::{
    AttemptRecord, ClaimRequest, Claimed, DeliveryRecord, NewEvent, Outcome, Payload, PublishBatch,
    PublishResult, Published, StoreError, StoreResult, Target, DOUBLE_CLICK_MS,
};

fn immediate(conn: &mut Connection) -> StoreResult<Transaction<'_>> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(map_err)
}

/// The live, enabled endpoints a route fans out to (subscribed to the event type, or
/// to everything through the wildcard row), from the writer's cache.
fn route(conn: &Connection, caches: &mut Caches, ev: &NewEvent) -> StoreResult<Arc<[Arc<Target>]>> {
    let key: RouteKey = (
        ev.org_id.as_str().to_owned(),
        ev.event_name.clone(),
        ev.subcategory.clone().unwrap_or_default(),
    );
    if let Some(targets) = caches.routes.get(&key) {
        return Ok(targets.clone());
    }
    let targets: Arc<[Arc<Target>]> = rows::<TargetRow>(
        conn,
        &format!(
            "SELECT {TARGET_COLUMNS} FROM endpoint_event_types t JOIN endpoints e ON e.uid = t.endpoint_uid \
             WHERE t.org_id = ?1 AND ((t.event_name = ?2 AND t.subcategory = ?3) \
                                      OR (t.event_name = '*' AND t.subcategory = '')) \
               AND e.enabled = 1 AND e.deleted_ms IS NULL ORDER BY e.uid"
        ),
        params![key.0, key.1, key.2],
    )?
    .into_iter()
    .map(|row| row.into_target().map(Arc::new))
    .collect::<StoreResult<_>>()?;
    caches.routes.insert(key, targets.clone());
    Ok(targets)
}

/// An earlier event with this idempotency key still inside the window: its answer.
/// One outside the window loses its key, so the key starts a new event.
fn earlier_use(
    tx: &Connection,
    ev: &NewEvent,
    key: &str,
    oldest_ms: i64,
) -> StoreResult<Option<Published>> {
    let Some(prior) = first::<PriorEventRow>(
        tx,
        "SELECT seq, id, deliveries, created_ms FROM events WHERE org_id = ?1 AND idempotency_key = ?2",
        params![ev.org_id.as_str(), key],
    )?
    else {
        return Ok(None);
    };
    if prior.created_ms >= oldest_ms {
        return Ok(Some(Published {
            id: crate::domain::EventId::from_raw(prior.id),
            deliveries: u64::try_from(prior.deliveries).unwrap_or(0),
        }));
    }
    execute(
        tx,
        "UPDATE events SET idempotency_key = NULL WHERE seq = ?1",
        [prior.seq],
    )?;
    Ok(None)
}

/// Stores a group of events and their deliveries in one durable transaction. Deliveries
/// the lease's budget has room for are stored leased to the caller and returned; the
/// others are due now, and the dispatcher is woken for them. The deliveries of an event
/// get consecutive ids, kept on the event as its delivery range.
pub(super) fn publish(w: &mut WriterState, batch: PublishBatch) -> StoreResult<PublishResult> {
    w.durable(true)?;
    let WriterState {
        conn, caches, wake, ..
    } = w;
    let now = batch.now;
    let deduped = Deduped::new(&batch.events);
    let mut answers = Vec::with_capacity(deduped.unique.len());
    let mut leased: Vec<Claimed> = Vec::new();
    let mut unleased = 0usize;
    let result = (|| {
        let tx = immediate(conn)?;
        let mut next_id: i64 = scalar::<i64>(
            &tx,
            "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'deliveries'), 0)",
            [],
        )? + 1;
        for ev in &deduped.unique {
            if let Some(key) = &ev.idempotency_key {
                if let Some(answer) =
                    earlier_use(&tx, ev, key, now.millis() - batch.idempotency_window_ms)?
                {
                    answers.push(answer);
                    continue;
                }
            }
            let targets = route(&tx, caches, ev)?;
            let fan_out = targets.len() as i64;
            let range = (fan_out > 0).then(|| (next_id, next_id + fan_out - 1));
            execute(
                &tx,
                "INSERT INTO events (id, org_id, event_name, subcategory, body, idempotency_key, deliveries, \
                   created_ms, first_delivery, last_delivery) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    ev.id.as_str(),
                    ev.org_id.as_str(),
                    ev.event_name,
                    ev.subcategory,
                    ev.body.as_ref(),
                    ev.idempotency_key,
                    fan_out,
                    now.millis(),
                    range.map(|r| r.0),
                    range.map(|r| r.1)
                ],
            )?;
            let seq = tx.last_insert_rowid();
            let payload = Arc::new(Payload {
                id: ev.id.clone(),
                created: now,
                body: ev.body.clone(),
            });
            for target in targets.iter() {
                let lease = batch
                    .lease
                    .as_ref()
                    .filter(|l| l.budget.try_take(target.uid));
                execute(
                    &tx,
                    "INSERT INTO deliveries (id, event_seq, endpoint_uid, org_id, state, attempts, next_attempt_ms, \
                       claim_token, created_ms, updated_ms) VALUES (?1, ?2, ?3, ?4, 'pending', 0, ?5, ?6, ?7, ?7)",
                    params![
                        next_id,
                        seq,
                        target.uid.0,
                        ev.org_id.as_str(),
                        lease.map_or(now, |l| l.until).millis(),
                        lease.map(|l| l.token.0),
                        now.millis()
                    ],
                )?;
                match lease {
                    Some(l) => leased.push(Claimed {
                        delivery: DeliveryId(next_id),
                        token: l.token,
                        attempts: 0,
                        retry_base: 0,
                        event: payload.clone(),
                        endpoint: target.clone(),
                    }),
                    None => unleased += 1,
                }
                next_id += 1;
            }
            answers.push(Published {
                id: ev.id.clone(),
                deliveries: fan_out as u64,
            });
        }
        tx.commit().map_err(map_err)
    })();
    if let Err(e) = result {
        if let Some(lease) = &batch.lease {
            for c in &leased {
                lease.budget.give_back(c.endpoint.uid);
            }
        }
        return Err(e);
    }
    if unleased > 0 {
        wake.notify_one();
    }
    Ok(PublishResult {
        answers: deduped.answers(&answers),
        leased,
    })
}

#[derive(Deserialize)]
struct DueRow {
    id: i64,
}

#[derive(Deserialize)]
struct LeasedRow {
    id: i64,
    event_seq: i64,
    endpoint_uid: i64,
    attempts: i64,
    retry_base: i64,
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

/// Leases due deliveries: in due order, skipping endpoints that hold their limit here
/// and taking at most each endpoint's room; three statements whatever the size.
pub(super) fn claim_due(w: &mut WriterState, req: &ClaimRequest) -> StoreResult<Vec<Claimed>> {
    w.durable(false)?;
    let WriterState { conn, caches, .. } = w;
    let full = json_ids(req.full().iter().map(|u| u.0))?;
    let held = serde_json::to_string(
        &req.held
            .iter()
            .map(|(u, n)| (u.0.to_string(), *n))
            .collect::<HashMap<_, _>>(),
    )
    .map_err(|e| StoreError::Other(e.into()))?;
    let tx = immediate(conn)?;
    // Due rows in due order, skipping full endpoints, at most each endpoint's room.
    let picked: Vec<i64> = rows::<DueRow>(
        &tx,
        "WITH held(uid, n) AS (SELECT CAST(key AS INTEGER), value FROM json_each(?4)), \
         due AS (SELECT id, endpoint_uid, next_attempt_ms FROM deliveries \
                 WHERE state = 'pending' AND next_attempt_ms <= ?1 \
                   AND endpoint_uid NOT IN (SELECT value FROM json_each(?2)) \
                 ORDER BY next_attempt_ms LIMIT ?3), \
         ranked AS (SELECT id, endpoint_uid, next_attempt_ms, \
                      ROW_NUMBER() OVER (PARTITION BY endpoint_uid ORDER BY next_attempt_ms, id) AS rn FROM due) \
         SELECT r.id, r.endpoint_uid FROM ranked r LEFT JOIN held h ON h.uid = r.endpoint_uid \
         WHERE r.rn <= ?5 - COALESCE(h.n, 0) ORDER BY r.next_attempt_ms LIMIT ?6",
        params![
            req.now.millis(),
            full,
            i64::from(req.limit) * 4,
            held,
            i64::from(req.per_endpoint),
            i64::from(req.limit)
        ],
    )?
    .into_iter()
    .map(|d| d.id)
    .collect();
    if picked.is_empty() {
        tx.commit().map_err(map_err)?;
        return Ok(Vec::new());
    }
    let leased = rows::<LeasedRow>(
        &tx,
        "UPDATE deliveries SET next_attempt_ms = ?1, claim_token = ?2 \
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
        &tx,
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
            endpoint: target_by_uid(&tx, caches, EndpointUid(l.endpoint_uid))?,
        });
    }
    tx.commit().map_err(map_err)?;
    Ok(claimed)
}

/// Records a batch of attempts, the deliveries' new states (where the claim token still
/// matches), the statistics of what finished, and the endpoints' health.
pub(super) fn record_attempts(
    w: &mut WriterState,
    records: &[AttemptRecord],
    now: Timestamp,
    disable_after: Duration,
) -> StoreResult<()> {
    w.durable(false)?;
    let WriterState { conn, caches, .. } = w;
    let tx = immediate(conn)?;
    let mut finished: HashMap<EndpointUid, (i64, i64)> = HashMap::new();
    for r in records {
        if let Some(n) = r.attempt_no {
            execute(
                &tx,
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
        let changed = execute(
            &tx,
            "UPDATE deliveries SET state = ?1, next_attempt_ms = COALESCE(?2, next_attempt_ms), \
               attempts = COALESCE(?3, attempts), claim_token = NULL, last_status = ?4, last_error = ?5, \
               updated_ms = ?6 WHERE id = ?7 AND claim_token = ?8",
            params![
                r.outcome.state().as_str(),
                r.outcome.next_attempt().map(Timestamp::millis),
                r.attempt_no,
                r.status_code,
                r.error,
                now.millis(),
                r.delivery.0,
                r.token.0
            ],
        )?;
        if changed == 1 && !matches!(r.outcome, Outcome::Retry { .. }) {
            let counts = finished.entry(r.endpoint).or_default();
            if r.outcome == Outcome::Delivered {
                counts.0 += 1;
            } else {
                counts.1 += 1;
            }
        }
    }
    let bucket = rules::stats_bucket(now);
    for (uid, (delivered, failed)) in finished {
        execute(
            &tx,
            "INSERT INTO endpoint_stats (endpoint_uid, bucket_ms, delivered, failed) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (endpoint_uid, bucket_ms) DO UPDATE SET \
               delivered = delivered + excluded.delivered, failed = failed + excluded.failed",
            params![uid.0, bucket, delivered, failed],
        )?;
    }
    let mut disabled = false;
    for h in rules::health(records) {
        if h.succeeded {
            execute(
                &tx,
                "UPDATE endpoints SET last_success_ms = ?2, failing_since_ms = NULL WHERE uid = ?1",
                params![h.endpoint.0, now.millis()],
            )?;
        } else if let Some(from) = h.failing_from {
            execute(
                &tx,
                "UPDATE endpoints SET last_failure_ms = ?2, failing_since_ms = COALESCE(failing_since_ms, ?3) \
                 WHERE uid = ?1",
                params![h.endpoint.0, now.millis(), from.millis()],
            )?;
            let cutoff =
                now.millis() - i64::try_from(disable_after.as_millis()).unwrap_or(i64::MAX);
            disabled |= execute(
                &tx,
                "UPDATE endpoints SET enabled = 0, disabled_ms = ?2, disabled_reason = ?3 \
                 WHERE uid = ?1 AND enabled = 1 AND failing_since_ms <= ?4",
                params![
                    h.endpoint.0,
                    now.millis(),
                    rules::auto_disable_reason(disable_after),
                    cutoff
                ],
            )? > 0;
        }
    }
    tx.commit().map_err(map_err)?;
    if disabled {
        caches.endpoints_changed();
    }
    Ok(())
}

pub(super) fn release(
    w: &mut WriterState,
    token: ClaimToken,
    deliveries: &[DeliveryId],
    at: Timestamp,
) -> StoreResult<()> {
    w.durable(false)?;
    let tx = immediate(&mut w.conn)?;
    let mut released = 0;
    for id in deliveries {
        released += execute(
            &tx,
            "UPDATE deliveries SET next_attempt_ms = ?1, claim_token = NULL \
             WHERE id = ?2 AND claim_token = ?3 AND state = 'pending'",
            params![at.millis(), id.0, token.0],
        )?;
    }
    tx.commit().map_err(map_err)?;
    if released > 0 {
        w.wake.notify_one();
    }
    Ok(())
}

pub(super) fn park_endpoint(
    w: &mut WriterState,
    uid: EndpointUid,
    now: Timestamp,
    until: Timestamp,
) -> StoreResult<()> {
    w.durable(false)?;
    // Through the due index: what is due now, of this endpoint.
    execute(
        &w.conn,
        "UPDATE deliveries SET next_attempt_ms = ?1 \
         WHERE state = 'pending' AND next_attempt_ms <= ?3 AND endpoint_uid = ?2",
        params![until.millis(), uid.0, now.millis()],
    )?;
    Ok(())
}

/// Ends every lease: at start, the process that held them is gone (one process serves
/// a file), so its work is taken up at once instead of after the lease.
pub(super) fn expire_leases(conn: &Connection, now: Timestamp) -> StoreResult<()> {
    execute(
        conn,
        "UPDATE deliveries SET next_attempt_ms = ?1, claim_token = NULL \
         WHERE state = 'pending' AND claim_token IS NOT NULL",
        [now.millis()],
    )?;
    Ok(())
}

pub(super) fn retry_delivery(
    w: &mut WriterState,
    org: &OrgId,
    id: DeliveryId,
    now: Timestamp,
) -> StoreResult<DeliveryRecord> {
    w.durable(true)?;
    // Not while an attempt is in flight, and not again within DOUBLE_CLICK_MS of the
    // last manual retry: a second click is the same request, even when the first one's
    // attempt has already been made.
    let queued = execute(
        &w.conn,
        "UPDATE deliveries SET \
           retry_base = CASE WHEN state = 'pending' THEN retry_base ELSE attempts END, \
           state = 'pending', next_attempt_ms = ?3, claim_token = NULL, updated_ms = ?3, retried_ms = ?3 \
         WHERE org_id = ?1 AND id = ?2 \
           AND NOT (state = 'pending' AND claim_token IS NOT NULL AND next_attempt_ms > ?3) \
           AND (retried_ms IS NULL OR retried_ms < ?4)",
        params![org.as_str(), id.0, now.millis(), now.millis() - DOUBLE_CLICK_MS],
    )?;
    if queued > 0 {
        w.wake.notify_one();
    }
    super::log::get_delivery(&w.conn, org, id)
}

pub(super) fn recover_failed(
    w: &mut WriterState,
    org: &OrgId,
    uid: EndpointUid,
    since: Timestamp,
    until: Option<Timestamp>,
    now: Timestamp,
) -> StoreResult<u64> {
    w.durable(true)?;
    let queued = execute(
        &w.conn,
        "UPDATE deliveries SET state = 'pending', next_attempt_ms = ?5, retry_base = attempts, \
           claim_token = NULL, updated_ms = ?5 \
         WHERE org_id = ?1 AND endpoint_uid = ?2 AND state = 'failed' AND created_ms >= ?3 AND created_ms < ?4",
        params![org.as_str(), uid.0, since.millis(), until.map_or(i64::MAX, Timestamp::millis), now.millis()],
    )?;
    if queued > 0 {
        w.wake.notify_one();
    }
    Ok(queued as u64)
}

#[derive(Deserialize)]
struct AgeRow {
    id: i64,
    finished: bool,
    created_ms: i64,
    updated_ms: i64,
}

/// Retention in id order: rows are created in id order, so the walk from the oldest
/// stops at the first row created after `cutoff`. What it keeps on the way (pending,
/// or finished recently) is walked again next time; everything older is deleted.
pub(super) fn prune(w: &mut WriterState, cutoff: Timestamp, batch: u32) -> StoreResult<u64> {
    w.durable(false)?;
    let tx = immediate(&mut w.conn)?;
    let scan = i64::from(batch) * 4;
    let old: Vec<i64> = rows::<AgeRow>(
        &tx,
        "SELECT id, state <> 'pending' AS finished, created_ms, updated_ms FROM deliveries ORDER BY id LIMIT ?1",
        [scan],
    )?
    .into_iter()
    .take_while(|r| r.created_ms < cutoff.millis())
    .filter(|r| r.finished && r.updated_ms < cutoff.millis())
    .map(|r| r.id)
    .take(batch as usize)
    .collect();
    let ids = json_ids(old.iter().copied())?;
    execute(
        &tx,
        "DELETE FROM attempts WHERE delivery_id IN (SELECT value FROM json_each(?1))",
        [&ids],
    )?;
    let pruned = execute(
        &tx,
        "DELETE FROM deliveries WHERE id IN (SELECT value FROM json_each(?1))",
        [&ids],
    )?;
    let events: Vec<i64> = rows::<AgeRow>(
        &tx,
        "SELECT ev.seq AS id, NOT EXISTS (SELECT 1 FROM deliveries d \
             WHERE d.id BETWEEN ev.first_delivery AND ev.last_delivery AND d.event_seq = ev.seq) AS finished, \
           ev.created_ms, ev.created_ms AS updated_ms \
         FROM events ev ORDER BY ev.seq LIMIT ?1",
        [scan],
    )?
    .into_iter()
    .take_while(|r| r.created_ms < cutoff.millis())
    .filter(|r| r.finished)
    .map(|r| r.id)
    .take(batch as usize)
    .collect();
    execute(
        &tx,
        "DELETE FROM events WHERE seq IN (SELECT value FROM json_each(?1))",
        [json_ids(events.into_iter())?],
    )?;
    execute(
        &tx,
        "DELETE FROM endpoint_stats WHERE bucket_ms < ?1",
        [cutoff.millis()],
    )?;
    tx.commit().map_err(map_err)?;
    Ok(pruned as u64)
}
