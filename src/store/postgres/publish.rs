//! Publishing on PostgreSQL: events and their deliveries.
//!
//! A publish is three statements at most, none in an explicit transaction: the routes
//! of the group's event types; one statement that inserts the events and their
//! deliveries (atomic on its own, and durable when it returns); and, only for
//! idempotency keys that were used before, their first answers. Idempotency keys are
//! unique per org in the database, so two nodes publishing one key at once store it
//! once (the second insert waits for the first and skips).

use std::collections::HashMap;
use std::sync::Arc;

use sqlx::PgPool;

use super::{map_err, retrying, WORK_CHANNEL};
use crate::domain::{ClaimToken, DeliveryId, EventId, OrgId};
use crate::store::rows::{TargetRow, TARGET_COLUMNS};
use crate::store::rules::Deduped;
use crate::store::{
    Claimed, NewEvent, Payload, PublishBatch, PublishResult, Published, StoreError, StoreResult,
    Target,
};

/// A live, enabled endpoint of one route of the group (`route` indexes the group's
/// distinct routes).
#[derive(Debug, sqlx::FromRow)]
struct RoutedRow {
    route: i64,
    #[sqlx(flatten)]
    target: TargetRow,
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
    let rows = sqlx::query_as::<_, RoutedRow>(&format!(
        "SELECT r.n - 1 AS route, {TARGET_COLUMNS} \
         FROM UNNEST($1::TEXT[], $2::TEXT[], $3::TEXT[]) WITH ORDINALITY AS r(org_id, event_name, subcategory, n) \
         JOIN endpoint_event_types t ON t.org_id = r.org_id \
           AND ((t.event_name = r.event_name AND t.subcategory = r.subcategory) \
                OR (t.event_name = '*' AND t.subcategory = '')) \
         JOIN endpoints e ON e.uid = t.endpoint_uid \
         WHERE e.enabled AND e.deleted_ms IS NULL ORDER BY r.n, e.uid"
    ))
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
        out.entry(*key)
            .or_default()
            .push(Arc::new(row.target.into_target()?));
    }
    Ok(out)
}

/// How many deliveries an event of each route (type, subcategory) of `org` would make,
/// as [`routes`] finds them (endpoints subscribed to everything, one wildcard row each,
/// plus those subscribed to the route): one statement, counted in the database.
pub(super) async fn fan_out(
    pool: &PgPool,
    org: &OrgId,
    routes: &[(String, String)],
) -> StoreResult<Vec<u64>> {
    let counts: Vec<i64> = sqlx::query_scalar(
        "WITH everything AS (SELECT COUNT(*) AS n FROM endpoint_event_types t \
                 JOIN endpoints e ON e.uid = t.endpoint_uid \
                 WHERE t.org_id = $1 AND t.event_name = '*' AND t.subcategory = '' \
                   AND e.enabled AND e.deleted_ms IS NULL) \
         SELECT everything.n + (SELECT COUNT(*) FROM endpoint_event_types t \
                  JOIN endpoints e ON e.uid = t.endpoint_uid \
                  WHERE t.org_id = $1 AND t.event_name = r.event_name AND t.subcategory = r.subcategory \
                    AND e.enabled AND e.deleted_ms IS NULL) \
         FROM UNNEST($2::TEXT[], $3::TEXT[]) WITH ORDINALITY AS r(event_name, subcategory, n), everything \
         ORDER BY r.n",
    )
    .bind(org.as_str())
    .bind(routes.iter().map(|r| r.0.as_str()).collect::<Vec<_>>())
    .bind(routes.iter().map(|r| r.1.as_str()).collect::<Vec<_>>())
    .fetch_all(pool)
    .await
    .map_err(map_err)?;
    Ok(counts
        .into_iter()
        .map(|n| u64::try_from(n).unwrap_or(0))
        .collect())
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
            // An endpoint with a flow queue gets its deliveries there, in publish order.
            let leased = !target.flow.queued()
                && batch
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
    let mut flowing: Vec<i64> = planned
        .iter()
        .filter(|p| p.target.flow.queued())
        .map(|p| p.target.uid.0)
        .collect();
    flowing.sort_unstable();
    flowing.dedup();
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
                 claim_token, created_ms, updated_ms, held) \
               SELECT ev.seq, y.uid, y.org_id, 'pending', 0, \
                 CASE WHEN y.leased THEN $12 ELSE $8 END, CASE WHEN y.leased THEN $13::BIGINT END, $8, $8, y.held \
               FROM UNNEST($9::TEXT[], $10::BIGINT[], $11::TEXT[], $14::BOOL[], $17::BOOL[]) \
                 WITH ORDINALITY AS y(event_id, uid, org_id, leased, held, n) \
               JOIN ev ON ev.id = y.event_id ORDER BY y.n \
               RETURNING id, event_seq, endpoint_uid), \
             f AS ( \
               UPDATE endpoints SET flow_next_ms = LEAST(COALESCE(flow_next_ms, $8), $8) WHERE uid = ANY($18)) \
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
        .bind(planned.iter().map(|p| p.target.flow.queued()).collect::<Vec<_>>())
        .bind(&flowing)
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
                    not_before: None,
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
