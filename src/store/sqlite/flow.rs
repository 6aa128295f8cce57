//! Flow queues on SQLite (see `store/flow.rs`): pumping them at a claim, and putting
//! deliveries back in them. Every function runs on the writer thread, inside its
//! transaction (one writer: nothing else counts a limit meanwhile).

use std::collections::HashMap;

use rusqlite::{params, Connection};

use super::sql::{execute, pairs, rows, scalar};
use crate::domain::EndpointUid;
use crate::store::flow::{FlowRow, Wanted, DROPPED, FLOW_COLUMNS, PUMP_BATCH};
use crate::store::{rules, ClaimRequest, StoreResult};

/// Whether the delivery's endpoint has a flow queue (in an UPDATE of `deliveries`).
pub(super) const QUEUED: &str = "(SELECT e.fifo OR e.rate_limit IS NOT NULL FROM endpoints e \
    WHERE e.uid = deliveries.endpoint_uid)";

/// Releases what the flow queues due now may send: `(delivery, not before)`. `room`
/// holds what each endpoint may still take here, and is used up.
pub(super) fn pump(
    tx: &Connection,
    req: &ClaimRequest,
    room: &mut HashMap<i64, u32>,
) -> StoreResult<Vec<(i64, Option<i64>)>> {
    let now = req.now.millis();
    let ready = rows::<FlowRow>(
        tx,
        &format!(
            "SELECT {FLOW_COLUMNS} FROM endpoints e WHERE e.flow_next_ms <= ?1 \
             ORDER BY e.flow_next_ms LIMIT ?2"
        ),
        params![now, PUMP_BATCH],
    )?;
    let mut out = Vec::new();
    for e in ready {
        if !e.live {
            drop_held(tx, e.uid, now)?;
            continue;
        }
        let left = room
            .entry(e.uid)
            .or_insert_with(|| req.room(EndpointUid(e.uid)));
        let (candidates, full, later) = match e.wanted(now, *left) {
            Wanted::Nothing { look_at } => {
                execute(
                    tx,
                    "UPDATE endpoints SET flow_next_ms = ?2 WHERE uid = ?1",
                    params![e.uid, look_at],
                )?;
                continue;
            }
            Wanted::Head => (
                pairs(
                    tx,
                    "SELECT id, next_attempt_ms FROM deliveries WHERE endpoint_uid = ?1 AND held \
                     ORDER BY id LIMIT 1",
                    [e.uid],
                )?,
                false,
                None,
            ),
            Wanted::Due(most) => {
                let due = pairs(
                    tx,
                    "SELECT id, next_attempt_ms FROM deliveries \
                     WHERE endpoint_uid = ?1 AND held AND next_attempt_ms <= ?2 ORDER BY id LIMIT ?3",
                    params![e.uid, now, most],
                )?;
                let full = due.len() as i64 == most;
                let later = match full {
                    true => None,
                    false => scalar::<Option<i64>>(
                        tx,
                        "SELECT MIN(next_attempt_ms) FROM deliveries \
                         WHERE endpoint_uid = ?1 AND held AND next_attempt_ms > ?2",
                        params![e.uid, now],
                    )?,
                };
                (due, full, later)
            }
        };
        let plan = e.plan(now, &candidates, full, later);
        *left = left.saturating_sub(plan.release.len() as u32);
        execute(
            tx,
            "UPDATE endpoints SET flow_tat_us = ?2, flow_busy = ?3, flow_next_ms = ?4 WHERE uid = ?1",
            params![e.uid, plan.tat_us, plan.busy, plan.look_at],
        )?;
        out.extend(plan.release);
    }
    Ok(out)
}

/// Fails at once what waits in the flow queue of `uid`, an endpoint switched off (see
/// `store/flow.rs`): its held deliveries (none of them is out), counted as failed in
/// its statistics; they can be recovered. Its queue has nothing more to do. How many.
pub(super) fn drop_held(tx: &Connection, uid: i64, now: i64) -> StoreResult<u64> {
    let dropped = execute(
        tx,
        "UPDATE deliveries SET state = 'failed', held = 0, last_error = ?3, updated_ms = ?2 \
         WHERE endpoint_uid = ?1 AND held AND state = 'pending'",
        params![uid, now, DROPPED],
    )?;
    if dropped > 0 {
        execute(
            tx,
            "INSERT INTO endpoint_stats (endpoint_uid, bucket_ms, delivered, failed) VALUES (?1, ?2, 0, ?3) \
             ON CONFLICT (endpoint_uid, bucket_ms) DO UPDATE SET failed = failed + excluded.failed",
            params![
                uid,
                rules::stats_bucket(crate::domain::Timestamp::from_millis(now)),
                dropped as i64
            ],
        )?;
    }
    execute(
        tx,
        "UPDATE endpoints SET flow_next_ms = NULL, flow_busy = NULL WHERE uid = ?1",
        [uid],
    )?;
    Ok(dropped as u64)
}

/// Tells the flow queue of `uid` (if it has one) to be looked at by `at` at the latest.
pub(super) fn look_by(tx: &Connection, uid: i64, at: i64) -> StoreResult<()> {
    execute(
        tx,
        "UPDATE endpoints SET flow_next_ms = MIN(COALESCE(flow_next_ms, ?2), ?2) \
         WHERE uid = ?1 AND (fifo OR rate_limit IS NOT NULL)",
        params![uid, at],
    )?;
    Ok(())
}

/// After an endpoint's flow settings changed: its waiting deliveries move to the queue
/// it now has, or out of the one it no longer has.
pub(super) fn settings_changed(
    tx: &Connection,
    uid: i64,
    queued: bool,
    now: i64,
) -> StoreResult<()> {
    if queued {
        execute(
            tx,
            "UPDATE deliveries SET held = 1 WHERE endpoint_uid = ?1 AND state = 'pending' AND NOT held \
               AND (claim_token IS NULL OR next_attempt_ms <= ?2)",
            params![uid, now],
        )?;
        execute(
            tx,
            "UPDATE endpoints SET flow_next_ms = ?2 WHERE uid = ?1",
            params![uid, now],
        )?;
    } else {
        execute(
            tx,
            "UPDATE deliveries SET held = 0 WHERE endpoint_uid = ?1 AND held",
            [uid],
        )?;
        execute(
            tx,
            "UPDATE endpoints SET flow_next_ms = NULL, flow_busy = NULL WHERE uid = ?1",
            [uid],
        )?;
    }
    Ok(())
}
