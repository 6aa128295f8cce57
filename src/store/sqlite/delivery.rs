//! Events and the delivery queue on SQLite.

use std::collections::HashMap;

use sqlx::{Connection, Row, SqliteConnection, SqlitePool};

use super::map_err;
use crate::domain::{OrgId, Timestamp};
use crate::store::{
    resolve, Answer, AttemptRecord, ClaimRequest, Claimed, NewEvent, Outcome, Published,
    StoreError, StoreResult,
};

/// A delivery for every event with `seq` in `[?1, ?2]` to every live, enabled endpoint
/// of its org subscribed to it or to everything (the wildcard row), found through the
/// route index.
const FAN_OUT: &str = "INSERT INTO deliveries \
    (event_seq, endpoint_uid, org_id, state, attempts, next_attempt_ms, created_ms, updated_ms) \
    SELECT ev.seq, e.uid, e.org_id, 'pending', 0, ?3, ?3, ?3 \
    FROM events ev \
    JOIN endpoint_event_types t ON t.org_id = ev.org_id \
      AND ((t.event_name = ev.event_name AND t.subcategory = COALESCE(ev.subcategory, '')) \
           OR (t.event_name = '*' AND t.subcategory = '')) \
    JOIN endpoints e ON e.uid = t.endpoint_uid \
    WHERE ev.seq BETWEEN ?1 AND ?2 AND e.enabled = 1 AND e.deleted_ms IS NULL";

/// Stores a group of events in one transaction and a handful of statements, whatever
/// its size: one multi-row insert of the events, one fan-out insert of their
/// deliveries (through the route index), one count. Keys already used within the
/// idempotency window (also earlier in the same group) answer like their first use.
pub(super) async fn publish(
    pool: &SqlitePool,
    events: &[NewEvent],
    now: Timestamp,
    window_ms: i64,
) -> StoreResult<Vec<Published>> {
    // Durable: the 202 waits for this commit to reach the disk.
    sqlx::query("PRAGMA synchronous = FULL")
        .execute(pool)
        .await
        .map_err(map_err)?;
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(map_err)?;
    let mut answers = Vec::with_capacity(events.len());
    let mut fresh: Vec<&NewEvent> = Vec::with_capacity(events.len());
    let mut keys_here: HashMap<(&str, &str), usize> = HashMap::new();
    for ev in events {
        if let Some(key) = &ev.idempotency_key {
            if let Some(&n) = keys_here.get(&(ev.org_id.as_str(), key.as_str())) {
                answers.push(Answer::Fresh(n));
                continue;
            }
            let prior = sqlx::query(
                "SELECT seq, id, deliveries, created_ms FROM events WHERE org_id = ? AND idempotency_key = ?",
            )
            .bind(ev.org_id.as_str())
            .bind(key)
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_err)?;
            if let Some(row) = prior {
                if row.get::<i64, _>("created_ms") >= now.millis() - window_ms {
                    answers.push(Answer::Repeat(Published {
                        id: row.get("id"),
                        deliveries: row.get::<i64, _>("deliveries").max(0) as u64,
                    }));
                    continue;
                }
                sqlx::query("UPDATE events SET idempotency_key = NULL WHERE seq = ?")
                    .bind(row.get::<i64, _>("seq"))
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
            }
            keys_here.insert((ev.org_id.as_str(), key.as_str()), fresh.len());
        }
        answers.push(Answer::Fresh(fresh.len()));
        fresh.push(ev);
    }
    let mut counts: HashMap<String, u64> = HashMap::with_capacity(fresh.len());
    if !fresh.is_empty() {
        let mut insert = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT INTO events (id, org_id, event_name, subcategory, body, idempotency_key, deliveries, created_ms) ",
        );
        insert.push_values(&fresh, |mut row, ev| {
            row.push_bind(&ev.id)
                .push_bind(ev.org_id.as_str())
                .push_bind(&ev.event_name)
                .push_bind(&ev.subcategory)
                .push_bind(&ev.body)
                .push_bind(&ev.idempotency_key)
                .push_bind(0i64)
                .push_bind(now.millis());
        });
        insert.push(" RETURNING seq");
        let seqs: Vec<i64> = insert
            .build_query_scalar()
            .fetch_all(&mut *tx)
            .await
            .map_err(map_err)?;
        let (lo, hi) = (
            seqs.iter().copied().min().unwrap_or(0),
            seqs.iter().copied().max().unwrap_or(0),
        );
        sqlx::query(FAN_OUT)
            .bind(lo)
            .bind(hi)
            .bind(now.millis())
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        let rows = sqlx::query(
            "UPDATE events SET deliveries = (SELECT COUNT(*) FROM deliveries d WHERE d.event_seq = events.seq) \
             WHERE seq BETWEEN ? AND ? RETURNING id, deliveries",
        )
        .bind(lo)
        .bind(hi)
        .fetch_all(&mut *tx)
        .await
        .map_err(map_err)?;
        for row in rows {
            counts.insert(row.get("id"), row.get::<i64, _>("deliveries").max(0) as u64);
        }
    }
    tx.commit().await.map_err(map_err)?;
    Ok(resolve(answers, &fresh, &counts))
}

pub(super) async fn claim_due(
    conn: &mut SqliteConnection,
    req: &ClaimRequest,
) -> StoreResult<Vec<Claimed>> {
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.map_err(map_err)?;
    // Due rows, skipping endpoints already at their limit here, at most `per_endpoint -
    // in flight` per endpoint.
    let claimed = sqlx::query(
        "WITH busy(uid, n) AS (SELECT CAST(key AS INTEGER), value FROM json_each(?1)), \
         due AS (SELECT d.id, d.endpoint_uid, \
                   ROW_NUMBER() OVER (PARTITION BY d.endpoint_uid ORDER BY d.next_attempt_ms, d.id) AS rn \
                 FROM (SELECT id, endpoint_uid, next_attempt_ms FROM deliveries \
                       WHERE state = 'pending' AND next_attempt_ms <= ?2 \
                         AND endpoint_uid NOT IN (SELECT uid FROM busy WHERE n >= ?3) \
                       ORDER BY next_attempt_ms LIMIT ?4) d) \
         UPDATE deliveries SET next_attempt_ms = ?5, claim_token = ?6 \
         WHERE id IN (SELECT due.id FROM due LEFT JOIN busy ON busy.uid = due.endpoint_uid \
                      WHERE due.rn <= ?3 - COALESCE(busy.n, 0) LIMIT ?7)",
    )
    .bind(req.in_flight_json())
    .bind(req.now.millis())
    .bind(i64::from(req.per_endpoint))
    .bind(i64::from(req.limit) * 4)
    .bind(req.lease_until.millis())
    .bind(&req.token)
    .bind(i64::from(req.limit))
    .execute(&mut *tx)
    .await
    .map_err(map_err)?
    .rows_affected();
    if claimed == 0 {
        tx.commit().await.map_err(map_err)?;
        return Ok(Vec::new());
    }
    let rows = sqlx::query(
        "SELECT d.id, d.attempts, d.retry_base, d.endpoint_uid, ev.id AS event_id, \
                ev.created_ms AS event_created, ev.body, e.org_id, e.url, e.secret, \
                CASE WHEN e.old_secret_expires_ms > $2 THEN e.old_secret END AS old_secret, \
                (e.enabled = 1 AND e.deleted_ms IS NULL) AS live \
         FROM deliveries d JOIN events ev ON ev.seq = d.event_seq JOIN endpoints e ON e.uid = d.endpoint_uid \
         WHERE d.claim_token = $1",
    )
    .bind(&req.token)
    .bind(req.now.millis())
    .fetch_all(&mut *tx)
    .await
    .map_err(map_err)?;
    tx.commit().await.map_err(map_err)?;
    rows.iter()
        .map(|row| {
            let org: String = row.get("org_id");
            Ok(Claimed {
                delivery_id: row.get("id"),
                attempts: row.get::<i64, _>("attempts").max(0) as u32,
                event_id: row.get("event_id"),
                event_created: Timestamp::from_millis(row.get("event_created")),
                body: row.get("body"),
                org_id: OrgId::parse(&org).map_err(|e| StoreError::Other(anyhow::anyhow!(e)))?,
                endpoint_uid: row.get("endpoint_uid"),
                url: row.get("url"),
                sealed_secret: row.get("secret"),
                old_sealed_secret: row.get("old_secret"),
                retry_base: row.get::<i64, _>("retry_base").max(0) as u32,
                endpoint_live: row.get("live"),
            })
        })
        .collect()
}

/// Records a batch of attempts with two statements whatever its size (the batch
/// travels as one JSON array), then the endpoints' health.
pub(super) async fn record_attempts(
    conn: &mut SqliteConnection,
    records: &[AttemptRecord],
    now: Timestamp,
    disable_after_ms: i64,
) -> StoreResult<()> {
    let rows: Vec<serde_json::Value> = records
        .iter()
        .map(|r| {
            let (state, next) = match r.outcome {
                Outcome::Delivered => ("delivered", None),
                Outcome::Failed => ("failed", None),
                Outcome::Retry { at } => ("pending", Some(at.millis())),
            };
            serde_json::json!({
                "d": r.delivery_id, "t": r.claim_token, "n": r.attempt_no, "s": r.started.millis(),
                "l": r.latency_ms, "c": r.status_code, "e": r.error, "k": r.error_class,
                "b": r.response_body, "st": state, "x": next,
            })
        })
        .collect();
    let batch = serde_json::Value::Array(rows).to_string();
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.map_err(map_err)?;
    sqlx::query(
        "INSERT INTO attempts (delivery_id, attempt_no, started_ms, latency_ms, status_code, error, \
           error_class, response_body) \
         SELECT value->>'d', value->>'n', value->>'s', value->>'l', value->>'c', value->>'e', \
           value->>'k', value->>'b' FROM json_each(?1) WHERE value->>'n' IS NOT NULL",
    )
    .bind(&batch)
    .execute(&mut *tx)
    .await
    .map_err(map_err)?;
    sqlx::query(
        "UPDATE deliveries SET state = u.state, next_attempt_ms = COALESCE(u.next, deliveries.next_attempt_ms), \
           attempts = COALESCE(u.n, deliveries.attempts), claim_token = NULL, last_status = u.c, \
           last_error = u.e, updated_ms = ?2 \
         FROM (SELECT value->>'d' AS id, value->>'st' AS state, value->>'x' AS next, value->>'n' AS n, \
                 value->>'c' AS c, value->>'e' AS e, value->>'t' AS token FROM json_each(?1)) AS u \
         WHERE deliveries.id = u.id AND deliveries.claim_token = u.token",
    )
    .bind(&batch)
    .bind(now.millis())
    .execute(&mut *tx)
    .await
    .map_err(map_err)?;
    super::operator::apply_endpoint_health(&mut tx, records, now, disable_after_ms)
        .await
        .map_err(map_err)?;
    tx.commit().await.map_err(map_err)
}

pub(super) async fn release(
    conn: &mut SqliteConnection,
    token: &str,
    ids: &[i64],
    at: Timestamp,
) -> StoreResult<()> {
    let ids = serde_json::to_string(ids).map_err(|e| StoreError::Other(e.into()))?;
    sqlx::query(
        "UPDATE deliveries SET next_attempt_ms = ?, claim_token = NULL \
         WHERE claim_token = ? AND state = 'pending' AND id IN (SELECT value FROM json_each(?))",
    )
    .bind(at.millis())
    .bind(token)
    .bind(ids)
    .execute(&mut *conn)
    .await
    .map_err(map_err)?;
    Ok(())
}

pub(super) async fn park_endpoint(
    conn: &mut SqliteConnection,
    uid: i64,
    now: Timestamp,
    until: Timestamp,
) -> StoreResult<()> {
    sqlx::query(
        "UPDATE deliveries SET next_attempt_ms = ? \
         WHERE state = 'pending' AND endpoint_uid = ? AND next_attempt_ms <= ?",
    )
    .bind(until.millis())
    .bind(uid)
    .bind(now.millis())
    .execute(&mut *conn)
    .await
    .map_err(map_err)?;
    Ok(())
}

pub(super) async fn expire_leases(pool: &SqlitePool, now: Timestamp) -> StoreResult<()> {
    sqlx::query(
        "UPDATE deliveries SET next_attempt_ms = ?, claim_token = NULL \
         WHERE state = 'pending' AND claim_token IS NOT NULL",
    )
    .bind(now.millis())
    .execute(pool)
    .await
    .map_err(map_err)?;
    Ok(())
}
