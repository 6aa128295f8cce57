//! Flow queues on PostgreSQL (see `store/flow.rs`). A pump locks the endpoint rows it
//! works on (`FOR UPDATE SKIP LOCKED`), so the nodes sharing the database take turns
//! per endpoint and one limiter counts what all of them send.

use std::collections::HashMap;

use sqlx::{PgConnection, PgPool};

use crate::domain::{EndpointUid, Timestamp};
use crate::store::flow::{FlowRow, Wanted, DROPPED, FLOW_COLUMNS, PUMP_BATCH};
use crate::store::rows::ClaimRow;
use crate::store::rules::{self, Health};
use crate::store::{AttemptRecord, ClaimRequest};

/// Whether the delivery's endpoint has a flow queue (in an UPDATE of `deliveries d`).
pub(super) const QUEUED: &str = "(SELECT e.fifo OR e.rate_limit IS NOT NULL FROM endpoints e \
    WHERE e.uid = d.endpoint_uid)";

/// Leases what the flow queues due now may send, with the instant each may go.
pub(super) async fn pump(
    pool: &PgPool,
    req: &ClaimRequest,
) -> Result<Vec<(ClaimRow, Option<i64>)>, sqlx::Error> {
    let now = req.now.millis();
    // Most claims find no queue due: one cheap look before a transaction.
    let any: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM endpoints WHERE flow_next_ms <= $1)")
            .bind(now)
            .fetch_one(pool)
            .await?;
    if !any {
        return Ok(Vec::new());
    }
    let mut tx = pool.begin().await?;
    let ready = sqlx::query_as::<_, FlowRow>(&format!(
        "SELECT {FLOW_COLUMNS} FROM endpoints e WHERE e.flow_next_ms <= $1 \
         ORDER BY e.flow_next_ms LIMIT $2 FOR UPDATE OF e SKIP LOCKED"
    ))
    .bind(now)
    .bind(PUMP_BATCH)
    .fetch_all(&mut *tx)
    .await?;
    let mut room: HashMap<i64, u32> = HashMap::new();
    let mut released: Vec<(i64, Option<i64>)> = Vec::new();
    for e in ready {
        if !e.live {
            drop_held(&mut tx, e.uid, req.now).await?;
            continue;
        }
        let left = room
            .entry(e.uid)
            .or_insert_with(|| req.room(EndpointUid(e.uid)));
        let plan = match e.wanted(now, *left) {
            Wanted::Nothing { look_at } => {
                sqlx::query("UPDATE endpoints SET flow_next_ms = $2 WHERE uid = $1")
                    .bind(e.uid)
                    .bind(look_at)
                    .execute(&mut *tx)
                    .await?;
                continue;
            }
            Wanted::Head => {
                let head = held(&mut tx, e.uid, None, 1).await?;
                e.plan(now, &head, false, None)
            }
            Wanted::Due(most) => {
                let due = held(&mut tx, e.uid, Some(now), most).await?;
                let full = due.len() as i64 == most;
                let later = match full {
                    true => None,
                    false => {
                        sqlx::query_scalar::<_, Option<i64>>(
                            "SELECT MIN(next_attempt_ms) FROM deliveries \
                         WHERE endpoint_uid = $1 AND held AND next_attempt_ms > $2",
                        )
                        .bind(e.uid)
                        .bind(now)
                        .fetch_one(&mut *tx)
                        .await?
                    }
                };
                e.plan(now, &due, full, later)
            }
        };
        *left = left.saturating_sub(plan.release.len() as u32);
        sqlx::query(
            "UPDATE endpoints SET flow_tat_us = $2, flow_busy = $3, flow_next_ms = $4 WHERE uid = $1",
        )
        .bind(e.uid)
        .bind(plan.tat_us)
        .bind(plan.busy)
        .bind(plan.look_at)
        .execute(&mut *tx)
        .await?;
        released.extend(plan.release);
    }
    let rows = lease(&mut tx, req, released.iter().map(|(id, _)| *id).collect()).await?;
    tx.commit().await?;
    let at: HashMap<i64, Option<i64>> = released.into_iter().collect();
    Ok(rows
        .into_iter()
        .map(|row| {
            let not_before = at.get(&row.id).copied().flatten();
            (row, not_before)
        })
        .collect())
}

/// Fails at once what waits in the flow queue of `uid`, an endpoint switched off (see
/// `store/flow.rs`): its held deliveries (none of them is out), counted as failed in
/// its statistics; they can be recovered. Its queue has nothing more to do. How many.
pub(super) async fn drop_held(
    tx: &mut PgConnection,
    uid: i64,
    now: Timestamp,
) -> Result<u64, sqlx::Error> {
    let dropped: i64 = sqlx::query_scalar(
        "WITH f AS (UPDATE deliveries SET state = 'failed', held = FALSE, last_error = $3, updated_ms = $2 \
               WHERE endpoint_uid = $1 AND held AND state = 'pending' RETURNING 1), \
         n AS (SELECT COUNT(*) AS n FROM f), \
         s AS (INSERT INTO endpoint_stats (endpoint_uid, bucket_ms, delivered, failed) \
               SELECT $1, $4, 0, n FROM n WHERE n > 0 \
               ON CONFLICT (endpoint_uid, bucket_ms) DO UPDATE SET \
                 failed = endpoint_stats.failed + excluded.failed), \
         e AS (UPDATE endpoints SET flow_next_ms = NULL, flow_busy = NULL WHERE uid = $1) \
         SELECT n FROM n",
    )
    .bind(uid)
    .bind(now.millis())
    .bind(DROPPED)
    .bind(rules::stats_bucket(now))
    .fetch_one(&mut *tx)
    .await?;
    Ok(u64::try_from(dropped).unwrap_or(0))
}

/// An endpoint's held deliveries in id order: `(id, not before)`, only those due by
/// `due_by` if given.
async fn held(
    tx: &mut PgConnection,
    uid: i64,
    due_by: Option<i64>,
    limit: i64,
) -> Result<Vec<(i64, i64)>, sqlx::Error> {
    sqlx::query_as::<_, (i64, i64)>(
        "SELECT id, next_attempt_ms FROM deliveries \
         WHERE endpoint_uid = $1 AND held AND ($2::BIGINT IS NULL OR next_attempt_ms <= $2) \
         ORDER BY id LIMIT $3",
    )
    .bind(uid)
    .bind(due_by)
    .bind(limit)
    .fetch_all(tx)
    .await
}

/// Leases the released deliveries and reads what their attempts need.
async fn lease(
    tx: &mut PgConnection,
    req: &ClaimRequest,
    ids: Vec<i64>,
) -> Result<Vec<ClaimRow>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query_as::<_, ClaimRow>(&format!(
        "UPDATE deliveries d SET next_attempt_ms = $2, claim_token = $3, held = FALSE \
         FROM events ev, endpoints e \
         WHERE d.id = ANY($1) AND d.held AND d.state = 'pending' AND ev.seq = d.event_seq \
           AND e.uid = d.endpoint_uid \
         RETURNING d.id, d.attempts, d.retry_base, ev.id AS event_id, ev.created_ms AS event_created_ms, \
                   ev.body, {}",
        crate::store::rows::TARGET_COLUMNS
    ))
    .bind(ids)
    .bind(req.lease_until.millis())
    .bind(req.token.0)
    .fetch_all(tx)
    .await
}

/// After an endpoint's flow settings changed: its waiting deliveries move to the queue
/// it now has, or out of the one it no longer has.
pub(super) async fn settings_changed(
    conn: &mut PgConnection,
    uid: i64,
    queued: bool,
    now: Timestamp,
) -> Result<(), sqlx::Error> {
    if queued {
        sqlx::query(
            "UPDATE deliveries SET held = TRUE WHERE endpoint_uid = $1 AND state = 'pending' AND NOT held \
               AND (claim_token IS NULL OR next_attempt_ms <= $2)",
        )
        .bind(uid)
        .bind(now.millis())
        .execute(&mut *conn)
        .await?;
        sqlx::query("UPDATE endpoints SET flow_next_ms = $2 WHERE uid = $1")
            .bind(uid)
            .bind(now.millis())
            .execute(&mut *conn)
            .await?;
    } else {
        sqlx::query("UPDATE deliveries SET held = FALSE WHERE endpoint_uid = $1 AND held")
            .bind(uid)
            .execute(&mut *conn)
            .await?;
        sqlx::query("UPDATE endpoints SET flow_next_ms = NULL, flow_busy = NULL WHERE uid = $1")
            .bind(uid)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// What receivers said of their endpoints: overloaded ones are held back, gone ones
/// disabled (returned).
pub(super) async fn signals(
    tx: &mut sqlx::PgConnection,
    health: &[Health],
    now: Timestamp,
) -> Result<Vec<i64>, sqlx::Error> {
    let paused: Vec<(i64, i64)> = health
        .iter()
        .filter_map(|h| h.paused_until.map(|u| (h.endpoint.0, u.millis())))
        .collect();
    if !paused.is_empty() {
        let (uids, until): (Vec<i64>, Vec<i64>) = paused.into_iter().unzip();
        sqlx::query(
            "UPDATE endpoints e SET paused_until_ms = GREATEST(COALESCE(e.paused_until_ms, 0), p.until) \
             FROM UNNEST($1::BIGINT[], $2::BIGINT[]) AS p(uid, until) WHERE e.uid = p.uid",
        )
        .bind(uids)
        .bind(until)
        .execute(&mut *tx)
        .await?;
    }
    let gone: Vec<i64> = health
        .iter()
        .filter(|h| h.gone)
        .map(|h| h.endpoint.0)
        .collect();
    if gone.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query_scalar(
        "UPDATE endpoints SET enabled = FALSE, disabled_ms = $2, disabled_reason = $3 \
         WHERE uid = ANY($1) AND enabled RETURNING uid",
    )
    .bind(gone)
    .bind(now.millis())
    .bind(rules::GONE_REASON)
    .fetch_all(&mut *tx)
    .await
}

/// Tells the flow queues of the batch when to look again: a FIFO queue now (its head is
/// no longer out), any queue by the time a retry that waits in it is due.
pub(super) async fn outcomes(
    tx: &mut sqlx::PgConnection,
    records: &[AttemptRecord],
    now: Timestamp,
) -> Result<(), sqlx::Error> {
    let queued: Vec<&AttemptRecord> = records.iter().filter(|r| r.tells_flow()).collect();
    if queued.is_empty() {
        return Ok(());
    }
    // Every node is woken: a FIFO queue's next is ready now.
    sqlx::query(
        "WITH f AS (UPDATE endpoints e SET flow_next_ms = CASE WHEN e.fifo OR x.retry \
           THEN LEAST(COALESCE(e.flow_next_ms, x.look), x.look) ELSE e.flow_next_ms END \
         FROM (SELECT uid, MIN(look) AS look, BOOL_OR(retry) AS retry \
               FROM UNNEST($1::BIGINT[], $2::BIGINT[], $3::BOOL[]) AS t(uid, look, retry) GROUP BY uid) x \
         WHERE e.uid = x.uid RETURNING e.fifo) \
         SELECT pg_notify($4, '') FROM (SELECT 1 FROM f WHERE fifo LIMIT 1) AS ready",
    )
    .bind(queued.iter().map(|r| r.endpoint.0).collect::<Vec<_>>())
    .bind(
        queued
            .iter()
            .map(|r| r.outcome.next_attempt().unwrap_or(now).millis())
            .collect::<Vec<_>>(),
    )
    .bind(
        queued
            .iter()
            .map(|r| r.outcome.next_attempt().is_some())
            .collect::<Vec<_>>(),
    )
    .bind(super::WORK_CHANNEL)
    .execute(&mut *tx)
    .await?;
    Ok(())
}
