//! Events and the delivery queue on PostgreSQL.

use std::collections::HashMap;

use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};

use super::{map_err, org, WORK_CHANNEL};
use crate::domain::Timestamp;
use crate::store::{
    resolve, Answer, AttemptRecord, ClaimRequest, Claimed, NewEvent, Outcome, Published,
    StoreResult,
};

/// The live, enabled endpoints of an org subscribed to (event name, subcategory) or to
/// everything (the wildcard row), through the route index.
const ROUTE: &str =
    "SELECT e.uid FROM endpoint_event_types t JOIN endpoints e ON e.uid = t.endpoint_uid \
    WHERE t.org_id = $1 AND ((t.event_name = $2 AND t.subcategory = $3) \
                             OR (t.event_name = '*' AND t.subcategory = '')) \
      AND e.enabled AND e.deleted_ms IS NULL";

/// Stores a group of events in one transaction: a route lookup per distinct (event
/// type, subcategory), one `UNNEST` insert of the events, one of their deliveries, one
/// notify; plus a lock and a lookup per idempotency key, which serialise publishers of
/// the same key across nodes until commit.
pub(super) async fn publish(
    pool: &PgPool,
    events: &[NewEvent],
    now: Timestamp,
    window_ms: i64,
) -> Result<Vec<Published>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let mut answers = Vec::with_capacity(events.len());
    let mut fresh: Vec<&NewEvent> = Vec::with_capacity(events.len());
    let mut keys_here: HashMap<(&str, &str), usize> = HashMap::new();
    for ev in events {
        if let Some(key) = &ev.idempotency_key {
            if let Some(&n) = keys_here.get(&(ev.org_id.as_str(), key.as_str())) {
                answers.push(Answer::Fresh(n));
                continue;
            }
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1), hashtext($2))")
                .bind(ev.org_id.as_str())
                .bind(key)
                .execute(&mut *tx)
                .await?;
            let prior = sqlx::query(
                "SELECT seq, id, deliveries, created_ms FROM events WHERE org_id = $1 AND idempotency_key = $2",
            )
            .bind(ev.org_id.as_str())
            .bind(key)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(row) = prior {
                if row.get::<i64, _>("created_ms") >= now.millis() - window_ms {
                    answers.push(Answer::Repeat(Published {
                        id: row.get("id"),
                        deliveries: row.get::<i64, _>("deliveries").max(0) as u64,
                    }));
                    continue;
                }
                sqlx::query("UPDATE events SET idempotency_key = NULL WHERE seq = $1")
                    .bind(row.get::<i64, _>("seq"))
                    .execute(&mut *tx)
                    .await?;
            }
            keys_here.insert((ev.org_id.as_str(), key.as_str()), fresh.len());
        }
        answers.push(Answer::Fresh(fresh.len()));
        fresh.push(ev);
    }
    let mut counts: HashMap<String, u64> = HashMap::with_capacity(fresh.len());
    if !fresh.is_empty() {
        // The endpoints each distinct route fans out to (one indexed lookup per route,
        // usually one or two per group); then two plain inserts. No statement joins the
        // growing events or deliveries tables, so no plan can turn into a scan of them.
        let mut routes: HashMap<(&str, &str, &str), Vec<i64>> = HashMap::new();
        for ev in &fresh {
            let route = (
                ev.org_id.as_str(),
                ev.event_name.as_str(),
                ev.subcategory.as_deref().unwrap_or(""),
            );
            if routes.contains_key(&route) {
                continue;
            }
            let uids: Vec<i64> = sqlx::query_scalar(ROUTE)
                .bind(route.0)
                .bind(route.1)
                .bind(route.2)
                .fetch_all(&mut *tx)
                .await?;
            routes.insert(route, uids);
        }
        let route_of = |ev: &NewEvent| -> usize {
            routes[&(
                ev.org_id.as_str(),
                ev.event_name.as_str(),
                ev.subcategory.as_deref().unwrap_or(""),
            )]
                .len()
        };
        let inserted = sqlx::query(
            "INSERT INTO events (id, org_id, event_name, subcategory, body, idempotency_key, deliveries, created_ms) \
             SELECT id, org_id, event_name, subcategory, body, idempotency_key, deliveries, $8 \
             FROM UNNEST($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::BYTEA[], $6::TEXT[], $7::BIGINT[]) \
               AS e(id, org_id, event_name, subcategory, body, idempotency_key, deliveries) \
             RETURNING seq, id",
        )
        .bind(fresh.iter().map(|e| e.id.as_str()).collect::<Vec<_>>())
        .bind(fresh.iter().map(|e| e.org_id.as_str()).collect::<Vec<_>>())
        .bind(fresh.iter().map(|e| e.event_name.as_str()).collect::<Vec<_>>())
        .bind(fresh.iter().map(|e| e.subcategory.as_deref()).collect::<Vec<_>>())
        .bind(fresh.iter().map(|e| e.body.as_slice()).collect::<Vec<_>>())
        .bind(fresh.iter().map(|e| e.idempotency_key.as_deref()).collect::<Vec<_>>())
        .bind(fresh.iter().map(|e| route_of(e) as i64).collect::<Vec<_>>())
        .bind(now.millis())
        .fetch_all(&mut *tx)
        .await?;
        let seq_of: HashMap<String, i64> = inserted
            .iter()
            .map(|row| (row.get::<String, _>("id"), row.get::<i64, _>("seq")))
            .collect();
        let (mut seqs, mut uids, mut orgs) = (Vec::new(), Vec::new(), Vec::new());
        for ev in &fresh {
            let uids_here = &routes[&(
                ev.org_id.as_str(),
                ev.event_name.as_str(),
                ev.subcategory.as_deref().unwrap_or(""),
            )];
            counts.insert(ev.id.clone(), uids_here.len() as u64);
            for uid in uids_here {
                seqs.push(seq_of[&ev.id]);
                uids.push(*uid);
                orgs.push(ev.org_id.as_str());
            }
        }
        if !seqs.is_empty() {
            sqlx::query(
                "INSERT INTO deliveries (event_seq, endpoint_uid, org_id, state, attempts, next_attempt_ms, \
                   created_ms, updated_ms) \
                 SELECT s, u, o, 'pending', 0, $4, $4, $4 FROM UNNEST($1::BIGINT[], $2::BIGINT[], $3::TEXT[]) AS x(s, u, o)",
            )
            .bind(&seqs)
            .bind(&uids)
            .bind(&orgs)
            .bind(now.millis())
            .execute(&mut *tx)
            .await?;
        }
    }
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(WORK_CHANNEL)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(resolve(answers, &fresh, &counts))
}

/// Claims in one statement: lock due rows (skipping rows other nodes hold and
/// endpoints at their limit here), keep at most the endpoint's free slots, lease them,
/// and return what the attempts need.
pub(super) async fn claim_due(
    pool: &PgPool,
    req: &ClaimRequest,
) -> Result<Vec<PgRow>, sqlx::Error> {
    sqlx::query(
        "WITH busy AS (SELECT key::BIGINT AS uid, value::BIGINT AS n FROM jsonb_each_text($1::jsonb)), \
         due AS (SELECT id, endpoint_uid, next_attempt_ms FROM deliveries \
                 WHERE state = 'pending' AND next_attempt_ms <= $2 \
                   AND endpoint_uid NOT IN (SELECT uid FROM busy WHERE n >= $3) \
                 ORDER BY next_attempt_ms LIMIT $4 FOR UPDATE SKIP LOCKED), \
         ranked AS (SELECT id, endpoint_uid, \
                      ROW_NUMBER() OVER (PARTITION BY endpoint_uid ORDER BY next_attempt_ms, id) AS rn \
                    FROM due), \
         picked AS (SELECT r.id FROM ranked r LEFT JOIN busy b ON b.uid = r.endpoint_uid \
                    WHERE r.rn <= $3 - COALESCE(b.n, 0) LIMIT $7) \
         UPDATE deliveries d SET next_attempt_ms = $5, claim_token = $6 \
         FROM picked p, events ev, endpoints e \
         WHERE d.id = p.id AND ev.seq = d.event_seq AND e.uid = d.endpoint_uid \
         RETURNING d.id, d.attempts, d.retry_base, d.endpoint_uid, ev.id AS event_id, \
                   ev.created_ms AS event_created, ev.body, e.org_id, e.url, e.secret, \
                   CASE WHEN e.old_secret_expires_ms > $2 THEN e.old_secret END AS old_secret, \
                   (e.enabled AND e.deleted_ms IS NULL) AS live",
    )
    .bind(req.in_flight_json())
    .bind(req.now.millis())
    .bind(i64::from(req.per_endpoint))
    .bind(i64::from(req.limit) * 4)
    .bind(req.lease_until.millis())
    .bind(&req.token)
    .bind(i64::from(req.limit))
    .fetch_all(pool)
    .await
}

pub(super) fn claimed(row: PgRow) -> StoreResult<Claimed> {
    Ok(Claimed {
        delivery_id: row.get("id"),
        attempts: row.get::<i64, _>("attempts").max(0) as u32,
        event_id: row.get("event_id"),
        event_created: Timestamp::from_millis(row.get("event_created")),
        body: row.get("body"),
        org_id: org(row.get("org_id"))?,
        endpoint_uid: row.get("endpoint_uid"),
        url: row.get("url"),
        sealed_secret: row.get("secret"),
        old_sealed_secret: row.get("old_secret"),
        retry_base: row.get::<i64, _>("retry_base").max(0) as u32,
        endpoint_live: row.get("live"),
    })
}

pub(super) async fn record_attempts(
    pool: &PgPool,
    records: &[AttemptRecord],
    now: Timestamp,
    disable_after_ms: i64,
) -> Result<(), sqlx::Error> {
    let made: Vec<&AttemptRecord> = records.iter().filter(|r| r.attempt_no.is_some()).collect();
    let mut tx = pool.begin().await?;
    if !made.is_empty() {
        sqlx::query(
            "INSERT INTO attempts (delivery_id, attempt_no, started_ms, latency_ms, status_code, error, \
             response_body, error_class) SELECT * FROM UNNEST($1::BIGINT[], $2::BIGINT[], $3::BIGINT[], \
             $4::BIGINT[], $5::BIGINT[], $6::TEXT[], $7::TEXT[], $8::TEXT[])",
        )
        .bind(made.iter().map(|r| r.delivery_id).collect::<Vec<_>>())
        .bind(made.iter().map(|r| r.attempt_no.map_or(0, i64::from)).collect::<Vec<_>>())
        .bind(made.iter().map(|r| r.started.millis()).collect::<Vec<_>>())
        .bind(made.iter().map(|r| r.latency_ms as i64).collect::<Vec<_>>())
        .bind(made.iter().map(|r| r.status_code.map(i64::from)).collect::<Vec<_>>())
        .bind(made.iter().map(|r| r.error.clone()).collect::<Vec<_>>())
        .bind(made.iter().map(|r| r.response_body.clone()).collect::<Vec<_>>())
        .bind(made.iter().map(|r| r.error_class.map(str::to_owned)).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }
    let (state, next): (Vec<&str>, Vec<Option<i64>>) = records
        .iter()
        .map(|r| match r.outcome {
            Outcome::Delivered => ("delivered", None),
            Outcome::Failed => ("failed", None),
            Outcome::Retry { at } => ("pending", Some(at.millis())),
        })
        .unzip();
    sqlx::query(
        "UPDATE deliveries d SET state = u.state, next_attempt_ms = COALESCE(u.next, d.next_attempt_ms), \
           attempts = COALESCE(u.attempt_no, d.attempts), claim_token = NULL, last_status = u.status, \
           last_error = u.error, updated_ms = $8 \
         FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::BIGINT[], $4::BIGINT[], $5::BIGINT[], $6::TEXT[], $7::TEXT[]) \
           AS u(id, state, next, attempt_no, status, error, token) \
         WHERE d.id = u.id AND d.claim_token = u.token",
    )
    .bind(records.iter().map(|r| r.delivery_id).collect::<Vec<_>>())
    .bind(state)
    .bind(next)
    .bind(records.iter().map(|r| r.attempt_no.map(i64::from)).collect::<Vec<_>>())
    .bind(records.iter().map(|r| r.status_code.map(i64::from)).collect::<Vec<_>>())
    .bind(records.iter().map(|r| r.error.clone()).collect::<Vec<_>>())
    .bind(records.iter().map(|r| r.claim_token.clone()).collect::<Vec<_>>())
    .bind(now.millis())
    .execute(&mut *tx)
    .await?;
    super::operator::apply_endpoint_health(&mut tx, records, now, disable_after_ms).await?;
    tx.commit().await
}

pub(super) async fn release(
    pool: &PgPool,
    token: &str,
    ids: &[i64],
    at: Timestamp,
) -> StoreResult<()> {
    sqlx::query(
        "WITH released AS (UPDATE deliveries SET next_attempt_ms = $1, claim_token = NULL \
           WHERE claim_token = $2 AND state = 'pending' AND id = ANY($3) RETURNING 1) \
         SELECT pg_notify($4, '') WHERE EXISTS (SELECT 1 FROM released)",
    )
    .bind(at.millis())
    .bind(token)
    .bind(ids)
    .bind(WORK_CHANNEL)
    .execute(pool)
    .await
    .map_err(map_err)?;
    Ok(())
}

pub(super) async fn park_endpoint(
    pool: &PgPool,
    uid: i64,
    now: Timestamp,
    until: Timestamp,
) -> StoreResult<()> {
    sqlx::query(
        "UPDATE deliveries SET next_attempt_ms = $1 \
         WHERE state = 'pending' AND endpoint_uid = $2 AND next_attempt_ms <= $3",
    )
    .bind(until.millis())
    .bind(uid)
    .bind(now.millis())
    .execute(pool)
    .await
    .map_err(map_err)?;
    Ok(())
}
