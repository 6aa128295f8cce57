//! The delivery queue on PostgreSQL: claims, outcomes, releases, parking, retries,
//! recovery, retention. (Publishing is in `publish.rs`.)

use std::collections::HashSet;

use sqlx::PgPool;

use super::flow::{self, QUEUED};
use super::notices;
use super::{map_err, retrying, WORK_CHANNEL};
use crate::domain::{ClaimToken, DeliveryId, EndpointUid, OrgId, PublicIds, Timestamp};
use crate::store::notices::{FailedRow, StandingRow, FAILED_COLUMNS};
use crate::store::rows::{ClaimRow, TARGET_COLUMNS};
use crate::store::rules::{self, Health};
use crate::store::{
    AttemptRecord, ClaimRequest, HealthPolicy, Outcome, StoreError, StoreResult, DOUBLE_CLICK_MS,
};

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
    sqlx::query_as::<_, ClaimRow>(&format!(
        "WITH busy AS (SELECT * FROM UNNEST($1::BIGINT[], $2::BIGINT[]) AS b(uid, n)), \
         due AS (SELECT id, endpoint_uid, next_attempt_ms FROM deliveries \
                 WHERE state = 'pending' AND NOT held AND next_attempt_ms <= $3 \
                   AND endpoint_uid <> ALL($4::BIGINT[]) \
                 ORDER BY next_attempt_ms LIMIT $5 FOR UPDATE SKIP LOCKED), \
         ranked AS (SELECT id, endpoint_uid, \
                      ROW_NUMBER() OVER (PARTITION BY endpoint_uid ORDER BY next_attempt_ms, id) AS rn FROM due), \
         picked AS (SELECT r.id FROM ranked r LEFT JOIN busy b ON b.uid = r.endpoint_uid \
                    WHERE r.rn <= $6 - COALESCE(b.n, 0) LIMIT $7) \
         UPDATE deliveries d SET next_attempt_ms = $8, claim_token = $9 \
         FROM events ev, endpoints e \
         WHERE d.id = ANY(ARRAY(SELECT id FROM picked)) AND ev.seq = d.event_seq AND e.uid = d.endpoint_uid \
         RETURNING d.id, d.attempts, d.retry_base, ev.id AS event_id, ev.created_ms AS event_created_ms, ev.body, \
                   {TARGET_COLUMNS}"
    ))
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

/// Records a batch in one statement: the attempts, the deliveries' new states (where
/// the claim token still matches; `d.id = ANY($1)` keeps every plan on the primary key,
/// where a generic plan would otherwise hash-join a scan of the whole table), the
/// statistics of what finished, and the endpoints' health with auto-disable. One
/// statement, so a reader never sees a delivery finished and not yet counted.
///
/// The outcomes of endpoints that make an operational event (a schedule used up, an
/// endpoint disabled or recovered), have a flow queue, or were told something by their
/// receiver (410, overloaded) are written in a transaction with what follows from them.
/// Most make none, so the rest goes to the statement alone, with a guard (`$19` false):
/// if, as it finds the endpoints, one would be disabled or recovered, it writes nothing
/// and says so, and those outcomes are written the slow way too.
pub(super) async fn record_attempts(
    pool: &PgPool,
    records: &[AttemptRecord],
    now: Timestamp,
    policy: &HealthPolicy,
    operator: Option<&OrgId>,
    ids: &PublicIds,
) -> StoreResult<()> {
    // Used-up schedules, flow queues to tell and receivers' signals take the
    // transaction, with every outcome of their endpoints (its health is decided from
    // all of them); the other endpoints' outcomes the one statement.
    let telling: HashSet<EndpointUid> = records
        .iter()
        .filter(|r| {
            let used_up = r.outcome == Outcome::Failed && r.attempt_no.is_some();
            used_up || r.tells_flow() || r.signal.is_some()
        })
        .map(|r| r.endpoint)
        .collect();
    if telling.is_empty() {
        // The common case: no copies of the batch.
        let health = rules::health(records);
        let written =
            retrying(|| outcomes(records, &health, now, policy, false).fetch_one(pool)).await?;
        if written.0 {
            return Ok(());
        }
        return retrying(|| record_telling(pool, records, &health, now, policy, operator, ids))
            .await;
    }
    let (mut slow, fast): (Vec<AttemptRecord>, Vec<AttemptRecord>) = records
        .iter()
        .cloned()
        .partition(|r| telling.contains(&r.endpoint));
    if !fast.is_empty() {
        let health = rules::health(&fast);
        let written =
            retrying(|| outcomes(&fast, &health, now, policy, false).fetch_one(pool)).await?;
        if !written.0 {
            slow.extend(fast);
        }
    }
    let health = rules::health(&slow);
    retrying(|| record_telling(pool, &slow, &health, now, policy, operator, ids)).await
}

/// What the outcome statement returns: whether it wrote anything, the deliveries whose
/// schedule it used up, and the endpoints it left disabled.
type Written = (bool, Vec<i64>, Vec<i64>);

/// The batch and its operational events, in one transaction.
async fn record_telling(
    pool: &PgPool,
    records: &[AttemptRecord],
    health: &[Health],
    now: Timestamp,
    policy: &HealthPolicy,
    operator: Option<&OrgId>,
    ids: &PublicIds,
) -> Result<(), sqlx::Error> {
    let corrupt = |e: StoreError| sqlx::Error::Decode(e.into());
    let mut tx = pool.begin().await?;
    let before = sqlx::query_as::<_, StandingRow>(
        "SELECT uid, org_id, url, enabled, failing_since_ms FROM endpoints \
         WHERE uid = ANY($1) ORDER BY uid FOR UPDATE",
    )
    .bind(health.iter().map(|h| h.endpoint.0).collect::<Vec<_>>())
    .fetch_all(&mut *tx)
    .await?;
    let (_, used_up, mut disabled): Written = outcomes(records, health, now, policy, true)
        .fetch_one(&mut *tx)
        .await?;
    disabled.extend(flow::signals(&mut tx, health, now).await?);
    flow::outcomes(&mut tx, records, now).await?;
    let mut made = Vec::new();
    if !used_up.is_empty() {
        let failed = sqlx::query_as::<_, FailedRow>(&format!(
            "SELECT {FAILED_COLUMNS} FROM deliveries d JOIN events ev ON ev.seq = d.event_seq \
             JOIN endpoints e ON e.uid = d.endpoint_uid WHERE d.id = ANY($1) ORDER BY d.id"
        ))
        .bind(&used_up)
        .fetch_all(&mut *tx)
        .await?;
        for f in &failed {
            made.extend(f.notice(ids, now).map_err(corrupt)?);
        }
    }
    let reason = rules::auto_disable_reason(policy.disable_after);
    for b in &before {
        let Some(h) = health.iter().find(|h| h.endpoint.0 == b.uid) else {
            continue;
        };
        if b.enabled && disabled.contains(&b.uid) {
            let reason = if h.gone { rules::GONE_REASON } else { &reason };
            made.push(b.disabled(reason, now).map_err(corrupt)?);
        }
        made.extend(b.recovered(h, now, policy).map_err(corrupt)?);
    }
    notices::store(&mut tx, &made, operator, now).await?;
    tx.commit().await
}

/// The outcome statement; with `telling` false it writes nothing when an endpoint of
/// the batch would be disabled or recovered (see [`record_attempts`]).
fn outcomes<'q>(
    records: &'q [AttemptRecord],
    health: &'q [Health],
    now: Timestamp,
    policy: &HealthPolicy,
    telling: bool,
) -> sqlx::query::QueryAs<'q, sqlx::Postgres, Written, sqlx::postgres::PgArguments> {
    let cutoff = now.minus(policy.disable_after).millis();
    let recovered_by = now.minus(policy.recovered_after).millis();
    sqlx::query_as::<_, Written>(
        "WITH h AS (SELECT * FROM UNNEST($14::BIGINT[], $15::BOOL[], $16::BIGINT[]) AS h(uid, ok, failing_from)), \
         go AS (SELECT $19 OR NOT EXISTS ( \
                  SELECT 1 FROM h JOIN endpoints e ON e.uid = h.uid \
                  WHERE (h.ok AND e.failing_since_ms <= $20) \
                     OR (NOT h.ok AND e.enabled AND COALESCE(e.failing_since_ms, h.failing_from) <= $17)) AS go), \
         x AS (SELECT * FROM UNNEST($1::BIGINT[], $2::BIGINT[], $3::BIGINT[], $4::BIGINT[], $5::BIGINT[], \
                          $6::BIGINT[], $7::TEXT[], $8::TEXT[], $9::TEXT[], $10::TEXT[], $11::BIGINT[], $21::BOOL[]) \
                        AS x(delivery_id, token, attempt_no, started_ms, latency_ms, status_code, error, error_class, \
                             response_body, state, next_ms, held) \
               WHERE (SELECT go FROM go)), \
         a AS (INSERT INTO attempts (delivery_id, attempt_no, started_ms, latency_ms, status_code, error, \
                 error_class, response_body) \
               SELECT delivery_id, attempt_no, started_ms, latency_ms, status_code, error, error_class, response_body \
               FROM x WHERE attempt_no IS NOT NULL), \
         u AS (UPDATE deliveries d SET state = x.state, next_attempt_ms = COALESCE(x.next_ms, d.next_attempt_ms), \
                 attempts = COALESCE(x.attempt_no, d.attempts), claim_token = NULL, last_status = x.status_code, \
                 last_error = x.error, updated_ms = $12, held = x.held \
               FROM x WHERE d.id = ANY($1::BIGINT[]) AND d.id = x.delivery_id AND d.claim_token = x.token \
               RETURNING d.id, d.endpoint_uid, d.state, x.attempt_no), \
         s AS (INSERT INTO endpoint_stats (endpoint_uid, bucket_ms, delivered, failed) \
               SELECT endpoint_uid, $13, COUNT(*) FILTER (WHERE state = 'delivered'), \
                      COUNT(*) FILTER (WHERE state = 'failed') \
               FROM u WHERE state <> 'pending' GROUP BY endpoint_uid \
               ON CONFLICT (endpoint_uid, bucket_ms) DO UPDATE SET \
                 delivered = endpoint_stats.delivered + excluded.delivered, \
                 failed = endpoint_stats.failed + excluded.failed), \
         e AS (UPDATE endpoints e SET \
                 last_success_ms = CASE WHEN h.ok THEN $12 ELSE e.last_success_ms END, \
                 last_failure_ms = CASE WHEN h.ok THEN e.last_failure_ms ELSE $12 END, \
                 failing_since_ms = CASE WHEN h.ok THEN NULL ELSE COALESCE(e.failing_since_ms, h.failing_from) END, \
                 enabled = e.enabled AND (h.ok OR COALESCE(e.failing_since_ms, h.failing_from) > $17), \
                 disabled_ms = CASE WHEN e.enabled AND NOT h.ok AND COALESCE(e.failing_since_ms, h.failing_from) <= $17 \
                                    THEN $12 ELSE e.disabled_ms END, \
                 disabled_reason = CASE WHEN e.enabled AND NOT h.ok AND COALESCE(e.failing_since_ms, h.failing_from) <= $17 \
                                        THEN $18 ELSE e.disabled_reason END \
               FROM h WHERE e.uid = h.uid AND (SELECT go FROM go) \
               RETURNING e.uid, e.enabled) \
         SELECT (SELECT go FROM go), \
                ARRAY(SELECT id FROM u WHERE state = 'failed' AND attempt_no IS NOT NULL), \
                ARRAY(SELECT uid FROM e WHERE NOT enabled)",
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
    .bind(rules::stats_bucket(now))
    .bind(health.iter().map(|h| h.endpoint.0).collect::<Vec<_>>())
    .bind(health.iter().map(|h| h.succeeded).collect::<Vec<_>>())
    .bind(health.iter().map(|h| h.failing_from.map(Timestamp::millis)).collect::<Vec<_>>())
    .bind(cutoff)
    .bind(rules::auto_disable_reason(policy.disable_after))
    .bind(telling)
    .bind(recovered_by)
    .bind(
        records
            .iter()
            .map(|r| r.queued && r.outcome.next_attempt().is_some())
            .collect::<Vec<_>>(),
    )
}

/// Makes claimed deliveries due at `at`; returns how many were released.
pub(super) async fn release(
    pool: &PgPool,
    token: ClaimToken,
    ids: &[DeliveryId],
    at: Timestamp,
) -> StoreResult<u64> {
    let released: i64 = sqlx::query_scalar(
        &format!(
            "WITH released AS (UPDATE deliveries d SET next_attempt_ms = $1, claim_token = NULL, held = {QUEUED} \
               WHERE claim_token = $2 AND state = 'pending' AND id = ANY($3) RETURNING endpoint_uid, held), \
             f AS (UPDATE endpoints SET flow_next_ms = LEAST(COALESCE(flow_next_ms, $1), $1) \
               WHERE uid IN (SELECT endpoint_uid FROM released WHERE held)) \
         SELECT COUNT(*) FROM released LEFT JOIN LATERAL (SELECT pg_notify($4, '')) n ON TRUE"
        ),
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
         WHERE state = 'pending' AND NOT held AND next_attempt_ms <= $3 AND endpoint_uid = $2 \
           AND (claim_token IS NULL OR next_attempt_ms <= $1)",
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
        &format!(
            "WITH q AS (UPDATE deliveries d SET \
                 retry_base = CASE WHEN state = 'pending' THEN retry_base ELSE attempts END, \
                 state = 'pending', next_attempt_ms = $3, claim_token = NULL, updated_ms = $3, retried_ms = $3, \
                 held = {QUEUED} \
               WHERE org_id = $1 AND id = $2 \
                 AND NOT (state = 'pending' AND claim_token IS NOT NULL AND next_attempt_ms > $3) \
                 AND (retried_ms IS NULL OR retried_ms < $4) RETURNING endpoint_uid, held), \
             f AS (UPDATE endpoints SET flow_next_ms = LEAST(COALESCE(flow_next_ms, $3), $3) \
               WHERE uid IN (SELECT endpoint_uid FROM q WHERE held)) \
         SELECT COUNT(*) FROM q LEFT JOIN LATERAL (SELECT pg_notify($5, '')) n ON TRUE"
        ),
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
        &format!(
            "WITH q AS (UPDATE deliveries d SET state = 'pending', next_attempt_ms = $5, retry_base = attempts, \
                 claim_token = NULL, updated_ms = $5, held = {QUEUED} \
               WHERE org_id = $1 AND endpoint_uid = $2 AND state = 'failed' AND created_ms >= $3 AND created_ms < $4 \
               RETURNING endpoint_uid, held), \
             f AS (UPDATE endpoints SET flow_next_ms = LEAST(COALESCE(flow_next_ms, $5), $5) \
               WHERE uid IN (SELECT endpoint_uid FROM q WHERE held)) \
         SELECT COUNT(*) FROM q LEFT JOIN LATERAL (SELECT pg_notify($6, '') WHERE EXISTS (SELECT 1 FROM q)) n ON TRUE"
        ),
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

/// Retention by age through indexes of what may go (see `store/sqlite/retention.rs`
/// for the policy): up to `batch` deliveries finished before `cutoff`, oldest first,
/// with their attempts; the events among theirs left with no delivery; up to `batch`
/// events published before `cutoff` that made none; statistics older than `cutoff`.
/// One transaction, so an event never outlives its last delivery's deletion. Returns
/// the larger count of deliveries or of those events.
pub(super) async fn prune(pool: &PgPool, cutoff: Timestamp, batch: u32) -> StoreResult<u64> {
    let mut tx = pool.begin().await.map_err(map_err)?;
    let seqs: Vec<i64> = sqlx::query_scalar(
        "WITH old AS (SELECT id FROM deliveries \
                 WHERE state <> 'pending' AND updated_ms < $1 ORDER BY updated_ms LIMIT $2), \
         d AS (DELETE FROM deliveries WHERE id IN (SELECT id FROM old) AND state <> 'pending' \
               RETURNING id, event_seq), \
         a AS (DELETE FROM attempts WHERE delivery_id IN (SELECT id FROM d)) \
         SELECT event_seq FROM d",
    )
    .bind(cutoff.millis())
    .bind(i64::from(batch))
    .fetch_all(&mut *tx)
    .await
    .map_err(map_err)?;
    let pruned = seqs.len();
    // The statement above has deleted them, so this one sees which events have none left.
    sqlx::query(
        "DELETE FROM events ev WHERE ev.seq = ANY($1) \
           AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_seq = ev.seq)",
    )
    .bind(&seqs)
    .execute(&mut *tx)
    .await
    .map_err(map_err)?;
    let undelivered = sqlx::query(
        "DELETE FROM events WHERE seq IN (SELECT seq FROM events \
           WHERE deliveries = 0 AND created_ms < $1 ORDER BY created_ms LIMIT $2)",
    )
    .bind(cutoff.millis())
    .bind(i64::from(batch))
    .execute(&mut *tx)
    .await
    .map_err(map_err)?
    .rows_affected();
    sqlx::query("DELETE FROM endpoint_stats WHERE bucket_ms < $1")
        .bind(cutoff.millis())
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
    tx.commit().await.map_err(map_err)?;
    Ok((pruned as u64).max(undelivered))
}

pub(super) async fn next_due(pool: &PgPool) -> StoreResult<Option<Timestamp>> {
    // Due deliveries, and flow queues to look at.
    let ms: Option<i64> = sqlx::query_scalar(
        "SELECT LEAST((SELECT MIN(next_attempt_ms) FROM deliveries WHERE state = 'pending' AND NOT held), \
                      (SELECT MIN(flow_next_ms) FROM endpoints WHERE flow_next_ms IS NOT NULL))",
    )
    .fetch_one(pool)
    .await
    .map_err(map_err)?;
    Ok(ms.map(Timestamp::from_millis))
}

pub(super) async fn pending_count(pool: &PgPool) -> StoreResult<u64> {
    // Through the due and held indexes (held ones are pending).
    let n: i64 = sqlx::query_scalar(
        "SELECT (SELECT COUNT(*) FROM deliveries WHERE state = 'pending' AND NOT held) \
           + (SELECT COUNT(*) FROM deliveries WHERE held)",
    )
    .fetch_one(pool)
    .await
    .map_err(map_err)?;
    Ok(u64::try_from(n).unwrap_or(0))
}
