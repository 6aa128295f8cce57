//! Events and the delivery queue on PostgreSQL.
//!
//! A publish is three statements at most, none in an explicit transaction: the routes
//! of the group's event types; one statement that inserts the events and their
//! deliveries (atomic on its own, and durable when it returns); and, only for
//! idempotency keys that were used before, their first answers. Idempotency keys are
//! unique per org in the database, so two nodes publishing one key at once store it
//! once (the second insert waits for the first and skips).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use sqlx::PgPool;

use super::{map_err, retrying, WORK_CHANNEL};
use crate::domain::{ClaimToken, DeliveryId, EndpointUid, EventId, OrgId, Timestamp};
use crate::store::rows::ClaimRow;
use crate::store::rules::{self, Deduped};
use crate::store::{
    AttemptRecord, ClaimRequest, Claimed, NewEvent, Payload, PublishBatch, PublishResult,
    Published, StoreError, StoreResult, Target, DOUBLE_CLICK_MS,
};

/// A live, enabled endpoint of one route of the group (`route` indexes the group's
/// distinct routes).
#[derive(Debug, Deserialize, sqlx::FromRow)]
struct RoutedRow {
    route: i64,
    uid: i64,
    org_id: String,
    url: String,
    secret: Vec<u8>,
    old_secret: Option<Vec<u8>>,
    old_secret_expires_ms: Option<i64>,
}

type Route<'a> = (&'a str, &'a str, &'a str);

fn route_of(ev: &NewEvent) -> Route<'_> {
    (
        ev.org_id.as_str(),
        ev.event_name.as_str(),
        ev.subcategory.as_deref().unwrap_or(""),
    )
}

/// The targets of every distinct route of `events`.
async fn routes<'a>(
    pool: &PgPool,
    events: &[&'a NewEvent],
) -> StoreResult<HashMap<Route<'a>, Vec<Arc<Target>>>> {
    let mut index: HashMap<Route<'a>, usize> = HashMap::new();
    let mut keys: Vec<Route<'a>> = Vec::new();
    for ev in events {
        let r = route_of(ev);
        if let std::collections::hash_map::Entry::Vacant(slot) = index.entry(r) {
            slot.insert(keys.len());
            keys.push(r);
        }
    }
    let rows = sqlx::query_as::<_, RoutedRow>(
        "SELECT r.n - 1 AS route, e.uid, e.org_id, e.url, e.secret, e.old_secret, e.old_secret_expires_ms \
         FROM UNNEST($1::TEXT[], $2::TEXT[], $3::TEXT[]) WITH ORDINALITY AS r(org_id, event_name, subcategory, n) \
         JOIN endpoint_event_types t ON t.org_id = r.org_id \
           AND ((t.event_name = r.event_name AND t.subcategory = r.subcategory) \
                OR (t.event_name = '*' AND t.subcategory = '')) \
         JOIN endpoints e ON e.uid = t.endpoint_uid \
         WHERE e.enabled AND e.deleted_ms IS NULL ORDER BY r.n, e.uid",
    )
    .bind(keys.iter().map(|k| k.0).collect::<Vec<_>>())
    .bind(keys.iter().map(|k| k.1).collect::<Vec<_>>())
    .bind(keys.iter().map(|k| k.2).collect::<Vec<_>>())
    .fetch_all(pool)
    .await
    .map_err(map_err)?;
    let mut out: HashMap<Route<'a>, Vec<Arc<Target>>> =
        keys.iter().map(|k| (*k, Vec::new())).collect();
    for row in rows {
        let key = usize::try_from(row.route)
            .ok()
            .and_then(|i| keys.get(i))
            .ok_or_else(|| StoreError::corrupt("route index"))?;
        let target = Target {
            uid: EndpointUid(row.uid),
            org_id: OrgId::parse(&row.org_id).map_err(StoreError::corrupt)?,
            url: row.url,
            sealed_secret: row.secret,
            old_secret: row
                .old_secret
                .zip(row.old_secret_expires_ms.map(Timestamp::from_millis)),
            live: true,
        };
        out.entry(*key).or_default().push(Arc::new(target));
    }
    Ok(out)
}

#[derive(Debug, sqlx::FromRow)]
struct StoredRow {
    event_id: String,
    delivery_id: Option<i64>,
    endpoint_uid: Option<i64>,
}

#[derive(Debug, sqlx::FromRow)]
struct KeyedRow {
    org_id: String,
    idempotency_key: String,
    id: String,
    deliveries: i64,
}

/// A delivery to store: its event, its endpoint, and whether it is leased.
struct Planned {
    event: usize,
    target: Arc<Target>,
    leased: bool,
}

pub(super) async fn publish(pool: &PgPool, batch: PublishBatch) -> StoreResult<PublishResult> {
    let now = batch.now;
    let deduped = Deduped::new(&batch.events);
    let unique = &deduped.unique;
    // Keys whose earlier use is outside the window start over.
    let keyed: Vec<&NewEvent> = unique
        .iter()
        .copied()
        .filter(|e| e.idempotency_key.is_some())
        .collect();
    if !keyed.is_empty() {
        retrying(|| {
            sqlx::query(
                "UPDATE events SET idempotency_key = NULL \
                 WHERE (org_id, idempotency_key) IN (SELECT * FROM UNNEST($1::TEXT[], $2::TEXT[])) AND created_ms < $3",
            )
            .bind(keyed.iter().map(|e| e.org_id.as_str()).collect::<Vec<_>>())
            .bind(keyed.iter().map(|e| e.idempotency_key.as_deref()).collect::<Vec<_>>())
            .bind(now.millis() - batch.idempotency_window_ms)
            .execute(pool)
        })
        .await?;
    }
    let routes = routes(pool, unique).await?;
    let mut planned: Vec<Planned> = Vec::new();
    for (i, ev) in unique.iter().enumerate() {
        for target in &routes[&route_of(ev)] {
            let leased = batch
                .lease
                .as_ref()
                .is_some_and(|l| l.budget.try_take(target.uid));
            planned.push(Planned {
                event: i,
                target: target.clone(),
                leased,
            });
        }
    }
    let give_back = |planned: &[Planned]| {
        if let Some(lease) = &batch.lease {
            for p in planned.iter().filter(|p| p.leased) {
                lease.budget.give_back(p.target.uid);
            }
        }
    };
    let (token, until) = batch
        .lease
        .as_ref()
        .map_or((None, now), |l| (Some(l.token.0), l.until));
    let unleased = planned.iter().any(|p| !p.leased);
    let stored = retrying(|| {
        sqlx::query_as::<_, StoredRow>(
            "WITH ev AS ( \
               INSERT INTO events (id, org_id, event_name, subcategory, body, idempotency_key, deliveries, created_ms) \
               SELECT x.id, x.org_id, x.event_name, x.subcategory, x.body, x.idempotency_key, x.deliveries, $8 \
               FROM UNNEST($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::BYTEA[], $6::TEXT[], $7::BIGINT[]) \
                 AS x(id, org_id, event_name, subcategory, body, idempotency_key, deliveries) \
               ON CONFLICT (org_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING \
               RETURNING seq, id), \
             d AS ( \
               INSERT INTO deliveries (event_seq, endpoint_uid, org_id, state, attempts, next_attempt_ms, \
                 claim_token, created_ms, updated_ms) \
               SELECT ev.seq, y.uid, y.org_id, 'pending', 0, \
                 CASE WHEN y.leased THEN $12 ELSE $8 END, CASE WHEN y.leased THEN $13::BIGINT END, $8, $8 \
               FROM UNNEST($9::TEXT[], $10::BIGINT[], $11::TEXT[], $14::BOOL[]) AS y(event_id, uid, org_id, leased) \
               JOIN ev ON ev.id = y.event_id \
               RETURNING id, event_seq, endpoint_uid) \
             SELECT ev.id AS event_id, d.id AS delivery_id, d.endpoint_uid, \
               (SELECT COUNT(*) FROM (SELECT pg_notify($15, '') WHERE $16) n) AS notified \
             FROM ev LEFT JOIN d ON d.event_seq = ev.seq",
        )
        .bind(unique.iter().map(|e| e.id.as_str()).collect::<Vec<_>>())
        .bind(unique.iter().map(|e| e.org_id.as_str()).collect::<Vec<_>>())
        .bind(unique.iter().map(|e| e.event_name.as_str()).collect::<Vec<_>>())
        .bind(unique.iter().map(|e| e.subcategory.as_deref()).collect::<Vec<_>>())
        .bind(unique.iter().map(|e| e.body.as_ref()).collect::<Vec<_>>())
        .bind(unique.iter().map(|e| e.idempotency_key.as_deref()).collect::<Vec<_>>())
        .bind(unique.iter().map(|e| routes[&route_of(e)].len() as i64).collect::<Vec<_>>())
        .bind(now.millis())
        .bind(planned.iter().map(|p| unique[p.event].id.as_str()).collect::<Vec<_>>())
        .bind(planned.iter().map(|p| p.target.uid.0).collect::<Vec<_>>())
        .bind(planned.iter().map(|p| unique[p.event].org_id.as_str()).collect::<Vec<_>>())
        .bind(until.millis())
        .bind(token)
        .bind(planned.iter().map(|p| p.leased).collect::<Vec<_>>())
        .bind(WORK_CHANNEL)
        .bind(unleased)
        .fetch_all(pool)
    })
    .await;
    let stored = match stored {
        Ok(rows) => rows,
        Err(e) => {
            give_back(&planned);
            return Err(e);
        }
    };
    // Deliveries by (event, endpoint), and which events were stored now.
    let mut ids: HashMap<(&str, i64), DeliveryId> = HashMap::new();
    let mut fresh: std::collections::HashSet<&str> = std::collections::HashSet::new();
    for row in &stored {
        fresh.insert(row.event_id.as_str());
        if let (Some(id), Some(uid)) = (row.delivery_id, row.endpoint_uid) {
            ids.insert((row.event_id.as_str(), uid), DeliveryId(id));
        }
    }
    let mut leased = Vec::new();
    let mut payloads: HashMap<usize, Arc<Payload>> = HashMap::new();
    for p in &planned {
        let ev = unique[p.event];
        match ids.get(&(ev.id.as_str(), p.target.uid.0)) {
            Some(&delivery) if p.leased => {
                let event = payloads
                    .entry(p.event)
                    .or_insert_with(|| {
                        Arc::new(Payload {
                            id: ev.id.clone(),
                            created: now,
                            body: ev.body.clone(),
                        })
                    })
                    .clone();
                leased.push(Claimed {
                    delivery,
                    token: ClaimToken(token.unwrap_or_default()),
                    attempts: 0,
                    retry_base: 0,
                    event,
                    endpoint: p.target.clone(),
                });
            }
            Some(_) => {}
            None => give_back(std::slice::from_ref(p)),
        }
    }
    // Events not stored now repeat an idempotency key used within the window.
    let repeats: Vec<&NewEvent> = unique
        .iter()
        .copied()
        .filter(|e| !fresh.contains(e.id.as_str()))
        .collect();
    let mut first: HashMap<(String, String), Published> = HashMap::new();
    if !repeats.is_empty() {
        let rows = sqlx::query_as::<_, KeyedRow>(
            "SELECT org_id, idempotency_key, id, deliveries FROM events \
             WHERE (org_id, idempotency_key) IN (SELECT * FROM UNNEST($1::TEXT[], $2::TEXT[]))",
        )
        .bind(
            repeats
                .iter()
                .map(|e| e.org_id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            repeats
                .iter()
                .map(|e| e.idempotency_key.as_deref())
                .collect::<Vec<_>>(),
        )
        .fetch_all(pool)
        .await
        .map_err(map_err)?;
        for r in rows {
            first.insert(
                (r.org_id, r.idempotency_key),
                Published {
                    id: EventId::from_raw(r.id),
                    deliveries: u64::try_from(r.deliveries).unwrap_or(0),
                },
            );
        }
    }
    let answers = unique
        .iter()
        .map(|ev| {
            if fresh.contains(ev.id.as_str()) {
                return Ok(Published {
                    id: ev.id.clone(),
                    deliveries: routes[&route_of(ev)].len() as u64,
                });
            }
            let key = (
                ev.org_id.as_str().to_owned(),
                ev.idempotency_key.clone().unwrap_or_default(),
            );
            first.get(&key).cloned().ok_or_else(|| {
                StoreError::Other(anyhow::anyhow!(
                    "an event was neither stored nor found by its idempotency key"
                ))
            })
        })
        .collect::<StoreResult<Vec<_>>>()?;
    Ok(PublishResult {
        answers: deduped.answers(&answers),
        leased,
    })
}

/// Claims in one statement: lock due rows (skipping rows other nodes hold and
/// endpoints full here), keep at most each endpoint's room, lease them, and return
/// what the attempts need. The leased rows are found by `id = ANY(...)`, so the plan
/// stays on the primary key (a join with the picked rows can turn into a scan of the
/// whole table).
pub(super) async fn claim_due(
    pool: &PgPool,
    req: &ClaimRequest,
) -> Result<Vec<ClaimRow>, sqlx::Error> {
    let (held_uids, held_n): (Vec<i64>, Vec<i64>) =
        req.held.iter().map(|(u, n)| (u.0, i64::from(*n))).unzip();
    let full: Vec<i64> = req.full().iter().map(|u| u.0).collect();
    sqlx::query_as::<_, ClaimRow>(
        "WITH busy AS (SELECT * FROM UNNEST($1::BIGINT[], $2::BIGINT[]) AS b(uid, n)), \
         due AS (SELECT id, endpoint_uid, next_attempt_ms FROM deliveries \
                 WHERE state = 'pending' AND next_attempt_ms <= $3 AND endpoint_uid <> ALL($4::BIGINT[]) \
                 ORDER BY next_attempt_ms LIMIT $5 FOR UPDATE SKIP LOCKED), \
         ranked AS (SELECT id, endpoint_uid, \
                      ROW_NUMBER() OVER (PARTITION BY endpoint_uid ORDER BY next_attempt_ms, id) AS rn FROM due), \
         picked AS (SELECT r.id FROM ranked r LEFT JOIN busy b ON b.uid = r.endpoint_uid \
                    WHERE r.rn <= $6 - COALESCE(b.n, 0) LIMIT $7) \
         UPDATE deliveries d SET next_attempt_ms = $8, claim_token = $9 \
         FROM events ev, endpoints e \
         WHERE d.id = ANY(ARRAY(SELECT id FROM picked)) AND ev.seq = d.event_seq AND e.uid = d.endpoint_uid \
         RETURNING d.id, d.attempts, d.retry_base, ev.id AS event_id, ev.created_ms AS event_created_ms, ev.body, \
                   e.uid, e.org_id, e.url, e.secret, e.old_secret, e.old_secret_expires_ms, \
                   (e.enabled AND e.deleted_ms IS NULL) AS live",
    )
    .bind(held_uids)
    .bind(held_n)
    .bind(req.now.millis())
    .bind(full)
    .bind(i64::from(req.limit) * 2)
    .bind(i64::from(req.per_endpoint))
    .bind(i64::from(req.limit))
    .bind(req.lease_until.millis())
    .bind(req.token.0)
    .fetch_all(pool)
    .await
}

#[derive(Debug, sqlx::FromRow)]
struct ChangedRow {
    endpoint_uid: i64,
    state: String,
}

/// Records a batch in two statements: the attempts and the deliveries' new states
/// (where the claim token still matches; `d.id = ANY($1)` keeps every plan on the
/// primary key, where a generic plan would otherwise hash-join a scan of the whole
/// table), which batches written in parallel do not contend on; then the statistics of what finished and the endpoints' health with
/// auto-disable, short, on the endpoints' rows (in endpoint order, so parallel
/// batches cannot deadlock on them).
pub(super) async fn record_attempts(
    pool: &PgPool,
    records: &[AttemptRecord],
    now: Timestamp,
    disable_after: Duration,
) -> StoreResult<()> {
    let changed = retrying(|| {
        sqlx::query_as::<_, ChangedRow>(
            "WITH x AS (SELECT * FROM UNNEST($1::BIGINT[], $2::BIGINT[], $3::BIGINT[], $4::BIGINT[], $5::BIGINT[], \
                          $6::BIGINT[], $7::TEXT[], $8::TEXT[], $9::TEXT[], $10::TEXT[], $11::BIGINT[]) \
                        AS x(delivery_id, token, attempt_no, started_ms, latency_ms, status_code, error, error_class, \
                             response_body, state, next_ms)), \
             a AS (INSERT INTO attempts (delivery_id, attempt_no, started_ms, latency_ms, status_code, error, \
                     error_class, response_body) \
                   SELECT delivery_id, attempt_no, started_ms, latency_ms, status_code, error, error_class, response_body \
                   FROM x WHERE attempt_no IS NOT NULL) \
             UPDATE deliveries d SET state = x.state, next_attempt_ms = COALESCE(x.next_ms, d.next_attempt_ms), \
               attempts = COALESCE(x.attempt_no, d.attempts), claim_token = NULL, last_status = x.status_code, \
               last_error = x.error, updated_ms = $12 \
             FROM x WHERE d.id = ANY($1::BIGINT[]) AND d.id = x.delivery_id AND d.claim_token = x.token \
             RETURNING d.endpoint_uid, d.state",
        )
        .bind(records.iter().map(|r| r.delivery.0).collect::<Vec<_>>())
        .bind(records.iter().map(|r| r.token.0).collect::<Vec<_>>())
        .bind(records.iter().map(|r| r.attempt_no.map(i64::from)).collect::<Vec<_>>())
        .bind(records.iter().map(|r| r.started.millis()).collect::<Vec<_>>())
        .bind(records.iter().map(|r| i64::try_from(r.latency_ms).unwrap_or(i64::MAX)).collect::<Vec<_>>())
        .bind(records.iter().map(|r| r.status_code.map(i64::from)).collect::<Vec<_>>())
        .bind(records.iter().map(|r| r.error.as_deref()).collect::<Vec<_>>())
        .bind(records.iter().map(|r| r.error_class.map(|c| c.as_str())).collect::<Vec<_>>())
        .bind(records.iter().map(|r| r.response_body.as_deref()).collect::<Vec<_>>())
        .bind(records.iter().map(|r| r.outcome.state().as_str()).collect::<Vec<_>>())
        .bind(records.iter().map(|r| r.outcome.next_attempt().map(Timestamp::millis)).collect::<Vec<_>>())
        .bind(now.millis())
        .fetch_all(pool)
    })
    .await?;
    // What finished, per endpoint (in endpoint order).
    let mut finished: std::collections::BTreeMap<i64, (i64, i64)> = Default::default();
    for row in changed.iter().filter(|r| r.state != "pending") {
        let counts = finished.entry(row.endpoint_uid).or_default();
        if row.state == "delivered" {
            counts.0 += 1;
        } else {
            counts.1 += 1;
        }
    }
    let health = rules::health(records);
    if finished.is_empty() && health.is_empty() {
        return Ok(());
    }
    let cutoff = now.millis() - i64::try_from(disable_after.as_millis()).unwrap_or(i64::MAX);
    retrying(|| {
        sqlx::query(
            "WITH s AS (INSERT INTO endpoint_stats (endpoint_uid, bucket_ms, delivered, failed) \
                   SELECT uid, $1, d, f FROM UNNEST($2::BIGINT[], $3::BIGINT[], $4::BIGINT[]) AS s(uid, d, f) \
                   ORDER BY uid \
                   ON CONFLICT (endpoint_uid, bucket_ms) DO UPDATE SET \
                     delivered = endpoint_stats.delivered + excluded.delivered, \
                     failed = endpoint_stats.failed + excluded.failed), \
             h AS (SELECT * FROM UNNEST($5::BIGINT[], $6::BOOL[], $7::BIGINT[]) AS h(uid, ok, failing_from)) \
             UPDATE endpoints e SET \
               last_success_ms = CASE WHEN h.ok THEN $8 ELSE e.last_success_ms END, \
               last_failure_ms = CASE WHEN h.ok THEN e.last_failure_ms ELSE $8 END, \
               failing_since_ms = CASE WHEN h.ok THEN NULL ELSE COALESCE(e.failing_since_ms, h.failing_from) END, \
               enabled = e.enabled AND (h.ok OR COALESCE(e.failing_since_ms, h.failing_from) > $9), \
               disabled_ms = CASE WHEN e.enabled AND NOT h.ok AND COALESCE(e.failing_since_ms, h.failing_from) <= $9 \
                                  THEN $8 ELSE e.disabled_ms END, \
               disabled_reason = CASE WHEN e.enabled AND NOT h.ok AND COALESCE(e.failing_since_ms, h.failing_from) <= $9 \
                                      THEN $10 ELSE e.disabled_reason END \
             FROM h WHERE e.uid = h.uid",
        )
        .bind(rules::stats_bucket(now))
        .bind(finished.keys().copied().collect::<Vec<_>>())
        .bind(finished.values().map(|c| c.0).collect::<Vec<_>>())
        .bind(finished.values().map(|c| c.1).collect::<Vec<_>>())
        .bind(health.iter().map(|h| h.endpoint.0).collect::<Vec<_>>())
        .bind(health.iter().map(|h| h.succeeded).collect::<Vec<_>>())
        .bind(health.iter().map(|h| h.failing_from.map(Timestamp::millis)).collect::<Vec<_>>())
        .bind(now.millis())
        .bind(cutoff)
        .bind(rules::auto_disable_reason(disable_after))
        .execute(pool)
    })
    .await?;
    Ok(())
}

/// Makes claimed deliveries due at `at`; returns how many were released.
pub(super) async fn release(
    pool: &PgPool,
    token: ClaimToken,
    ids: &[DeliveryId],
    at: Timestamp,
) -> StoreResult<u64> {
    let released: i64 = sqlx::query_scalar(
        "WITH released AS (UPDATE deliveries SET next_attempt_ms = $1, claim_token = NULL \
           WHERE claim_token = $2 AND state = 'pending' AND id = ANY($3) RETURNING 1) \
         SELECT COUNT(*) FROM released LEFT JOIN LATERAL (SELECT pg_notify($4, '')) n ON TRUE",
    )
    .bind(at.millis())
    .bind(token.0)
    .bind(ids.iter().map(|d| d.0).collect::<Vec<_>>())
    .bind(WORK_CHANNEL)
    .fetch_one(pool)
    .await
    .map_err(map_err)?;
    Ok(u64::try_from(released).unwrap_or(0))
}

pub(super) async fn park_endpoint(
    pool: &PgPool,
    uid: EndpointUid,
    now: Timestamp,
    until: Timestamp,
) -> StoreResult<()> {
    // Through the due index: what is due now, of this endpoint.
    sqlx::query(
        "UPDATE deliveries SET next_attempt_ms = $1 \
         WHERE state = 'pending' AND next_attempt_ms <= $3 AND endpoint_uid = $2",
    )
    .bind(until.millis())
    .bind(uid.0)
    .bind(now.millis())
    .execute(pool)
    .await
    .map_err(map_err)?;
    Ok(())
}

/// See [`crate::store::Queue::retry_delivery`]; returns how many were queued (0 or 1)
/// and notifies the other nodes when one was.
pub(super) async fn retry_delivery(
    pool: &PgPool,
    org: &OrgId,
    id: DeliveryId,
    now: Timestamp,
) -> StoreResult<u64> {
    let queued: i64 = sqlx::query_scalar(
        "WITH q AS (UPDATE deliveries SET \
             retry_base = CASE WHEN state = 'pending' THEN retry_base ELSE attempts END, \
             state = 'pending', next_attempt_ms = $3, claim_token = NULL, updated_ms = $3, retried_ms = $3 \
           WHERE org_id = $1 AND id = $2 \
             AND NOT (state = 'pending' AND claim_token IS NOT NULL AND next_attempt_ms > $3) \
             AND (retried_ms IS NULL OR retried_ms < $4) RETURNING 1) \
         SELECT COUNT(*) FROM q LEFT JOIN LATERAL (SELECT pg_notify($5, '')) n ON TRUE",
    )
    .bind(org.as_str())
    .bind(id.0)
    .bind(now.millis())
    .bind(now.millis() - DOUBLE_CLICK_MS)
    .bind(WORK_CHANNEL)
    .fetch_one(pool)
    .await
    .map_err(map_err)?;
    Ok(u64::try_from(queued).unwrap_or(0))
}

pub(super) async fn recover_failed(
    pool: &PgPool,
    org: &OrgId,
    uid: EndpointUid,
    since: Timestamp,
    until: Option<Timestamp>,
    now: Timestamp,
) -> StoreResult<u64> {
    let queued: i64 = sqlx::query_scalar(
        "WITH q AS (UPDATE deliveries SET state = 'pending', next_attempt_ms = $5, retry_base = attempts, \
             claim_token = NULL, updated_ms = $5 \
           WHERE org_id = $1 AND endpoint_uid = $2 AND state = 'failed' AND created_ms >= $3 AND created_ms < $4 \
           RETURNING 1) \
         SELECT COUNT(*) FROM q LEFT JOIN LATERAL (SELECT pg_notify($6, '') WHERE EXISTS (SELECT 1 FROM q)) n ON TRUE",
    )
    .bind(org.as_str())
    .bind(uid.0)
    .bind(since.millis())
    .bind(until.map_or(i64::MAX, Timestamp::millis))
    .bind(now.millis())
    .bind(WORK_CHANNEL)
    .fetch_one(pool)
    .await
    .map_err(map_err)?;
    Ok(u64::try_from(queued).unwrap_or(0))
}

/// Retention in id order: rows are created in id order, so the walk from the oldest
/// stops at the first row created after `cutoff`. What it keeps on the way (pending,
/// or finished recently) is walked again next time; everything older is deleted.
pub(super) async fn prune(pool: &PgPool, cutoff: Timestamp, batch: u32) -> StoreResult<u64> {
    let pruned: i64 = sqlx::query_scalar(
        "WITH head AS (SELECT id, state, created_ms, updated_ms FROM deliveries ORDER BY id LIMIT $2), \
         young AS (SELECT MIN(id) AS id FROM head WHERE created_ms >= $1), \
         old AS (SELECT h.id FROM head h, young y \
                 WHERE (y.id IS NULL OR h.id < y.id) AND h.state <> 'pending' AND h.updated_ms < $1 \
                 ORDER BY h.id LIMIT $3), \
         a AS (DELETE FROM attempts WHERE delivery_id IN (SELECT id FROM old)), \
         d AS (DELETE FROM deliveries WHERE id IN (SELECT id FROM old) RETURNING 1) \
         SELECT COUNT(*) FROM d",
    )
    .bind(cutoff.millis())
    .bind(i64::from(batch) * 4)
    .bind(i64::from(batch))
    .fetch_one(pool)
    .await
    .map_err(map_err)?;
    sqlx::query(
        "WITH head AS (SELECT seq, created_ms FROM events ORDER BY seq LIMIT $2), \
         young AS (SELECT MIN(seq) AS seq FROM head WHERE created_ms >= $1) \
         DELETE FROM events WHERE seq IN (SELECT h.seq FROM head h, young y \
           WHERE (y.seq IS NULL OR h.seq < y.seq) \
             AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_seq = h.seq) LIMIT $3)",
    )
    .bind(cutoff.millis())
    .bind(i64::from(batch) * 4)
    .bind(i64::from(batch))
    .execute(pool)
    .await
    .map_err(map_err)?;
    sqlx::query("DELETE FROM endpoint_stats WHERE bucket_ms < $1")
        .bind(cutoff.millis())
        .execute(pool)
        .await
        .map_err(map_err)?;
    Ok(u64::try_from(pruned).unwrap_or(0))
}

pub(super) async fn next_due(pool: &PgPool) -> StoreResult<Option<Timestamp>> {
    let ms: Option<i64> =
        sqlx::query_scalar("SELECT MIN(next_attempt_ms) FROM deliveries WHERE state = 'pending'")
            .fetch_one(pool)
            .await
            .map_err(map_err)?;
    Ok(ms.map(Timestamp::from_millis))
}

pub(super) async fn pending_count(pool: &PgPool) -> StoreResult<u64> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM deliveries WHERE state = 'pending'")
        .fetch_one(pool)
        .await
        .map_err(map_err)?;
    Ok(u64::try_from(n).unwrap_or(0))
}
