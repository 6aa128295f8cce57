//! Publishing on SQLite: a group of events and their deliveries, inside the writer's
//! transaction.

use std::sync::Arc;

use rusqlite::{params, Connection};

use super::flow;
use super::sql::{execute, first, rows, scalar};
use super::thread::{Caches, RouteKey, Write};
use crate::domain::{DeliveryId, EventId, OrgId};
use crate::store::rows::{PriorEventRow, TargetRow, TARGET_COLUMNS};
use crate::store::rules::Deduped;
use crate::store::{
    Claimed, NewEvent, Payload, PublishBatch, PublishResult, Published, StoreResult, Target,
    WILDCARD,
};

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

/// How many deliveries an event of each route (type, subcategory) of `org` would make:
/// its endpoints subscribed to everything (one wildcard row each, never beside rows of
/// their own types: `endpoints.rs`) plus those subscribed to it, as [`route`] finds
/// them. On a read connection, so a count never waits for the writer.
pub(super) fn fan_out(
    conn: &Connection,
    org: &OrgId,
    routes: &[(String, String)],
) -> StoreResult<Vec<u64>> {
    const COUNT: &str =
        "SELECT COUNT(*) FROM endpoint_event_types t JOIN endpoints e ON e.uid = t.endpoint_uid \
        WHERE t.org_id = ?1 AND t.event_name = ?2 AND t.subcategory = ?3 \
          AND e.enabled = 1 AND e.deleted_ms IS NULL";
    let everything: i64 = scalar(conn, COUNT, params![org.as_str(), WILDCARD, ""])?;
    routes
        .iter()
        .map(|(name, sub)| {
            let own: i64 = scalar(conn, COUNT, params![org.as_str(), name, sub])?;
            Ok(u64::try_from(everything + own).unwrap_or(0))
        })
        .collect()
}

/// An earlier event with this idempotency key still inside the window: its answer.
/// One outside the window loses its key, so the key starts a new event.
fn earlier_use(
    conn: &Connection,
    ev: &NewEvent,
    key: &str,
    oldest_ms: i64,
) -> StoreResult<Option<Published>> {
    let Some(prior) = first::<PriorEventRow>(
        conn,
        "SELECT seq, id, deliveries, created_ms FROM events WHERE org_id = ?1 AND idempotency_key = ?2",
        params![ev.org_id.as_str(), key],
    )?
    else {
        return Ok(None);
    };
    if prior.created_ms >= oldest_ms {
        return Ok(Some(Published {
            id: EventId::from_raw(prior.id),
            deliveries: u64::try_from(prior.deliveries).unwrap_or(0),
        }));
    }
    execute(
        conn,
        "UPDATE events SET idempotency_key = NULL WHERE seq = ?1",
        [prior.seq],
    )?;
    Ok(None)
}

/// Stores a group of events and their deliveries. Deliveries the lease's budget has
/// room for are stored leased to the caller and returned; the others are due now, and
/// the dispatcher is woken for them. The deliveries of an event get consecutive ids,
/// kept on the event as its delivery range. If this fails, the room taken is given back
/// here; if the commit fails, by the caller.
pub(super) fn publish(w: &mut Write<'_>, batch: PublishBatch) -> StoreResult<PublishResult> {
    let mut leased: Vec<Claimed> = Vec::new();
    let stored = store(w, &batch, &mut leased);
    if stored.is_err() {
        if let Some(lease) = &batch.lease {
            for c in &leased {
                lease.budget.give_back(c.endpoint.uid);
            }
        }
    }
    let (answers, unleased) = stored?;
    w.wake |= unleased > 0;
    Ok(PublishResult { answers, leased })
}

/// The answers, and how many deliveries were stored without a lease.
fn store(
    w: &mut Write<'_>,
    batch: &PublishBatch,
    leased: &mut Vec<Claimed>,
) -> StoreResult<(Vec<Published>, usize)> {
    let (conn, caches) = (w.conn, &mut *w.caches);
    let now = batch.now;
    let deduped = Deduped::new(&batch.events);
    let mut answers = Vec::with_capacity(deduped.unique.len());
    let mut unleased = 0;
    let mut flowing = std::collections::HashSet::new();
    let mut next_id: i64 = scalar::<i64>(
        conn,
        "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'deliveries'), 0)",
        [],
    )? + 1;
    for ev in &deduped.unique {
        if let Some(key) = &ev.idempotency_key {
            if let Some(answer) =
                earlier_use(conn, ev, key, now.millis() - batch.idempotency_window_ms)?
            {
                answers.push(answer);
                continue;
            }
        }
        let targets = route(conn, caches, ev)?;
        let fan_out = targets.len() as i64;
        let range = (fan_out > 0).then(|| (next_id, next_id + fan_out - 1));
        execute(
            conn,
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
        let seq = conn.last_insert_rowid();
        let payload = Arc::new(Payload {
            id: ev.id.clone(),
            created: now,
            body: ev.body.clone(),
        });
        for target in targets.iter() {
            // An endpoint with a flow queue gets its deliveries there, in publish order.
            let queued = target.flow.queued();
            let lease = batch
                .lease
                .as_ref()
                .filter(|l| !queued && l.budget.try_take(target.uid));
            execute(
                conn,
                "INSERT INTO deliveries (id, event_seq, endpoint_uid, org_id, state, attempts, next_attempt_ms, \
                   claim_token, created_ms, updated_ms, held) VALUES (?1, ?2, ?3, ?4, 'pending', 0, ?5, ?6, ?7, ?7, ?8)",
                params![
                    next_id,
                    seq,
                    target.uid.0,
                    ev.org_id.as_str(),
                    lease.map_or(now, |l| l.until).millis(),
                    lease.map(|l| l.token.0),
                    now.millis(),
                    queued
                ],
            )?;
            if queued && flowing.insert(target.uid.0) {
                flow::look_by(conn, target.uid.0, now.millis())?;
            }
            match lease {
                Some(l) => leased.push(Claimed {
                    delivery: DeliveryId(next_id),
                    token: l.token,
                    attempts: 0,
                    retry_base: 0,
                    event: payload.clone(),
                    endpoint: target.clone(),
                    not_before: None,
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
    Ok((deduped.answers(&answers), unleased))
}
