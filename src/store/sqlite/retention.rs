//! Retention on SQLite, on the writer thread.

use serde::Deserialize;

use super::sql::{execute, rows};
use super::thread::Write;
use crate::domain::Timestamp;
use crate::store::{StoreError, StoreResult};

fn json_ids(ids: impl Iterator<Item = i64>) -> StoreResult<String> {
    serde_json::to_string(&ids.collect::<Vec<_>>()).map_err(|e| StoreError::Other(e.into()))
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
pub(super) fn prune(w: &mut Write<'_>, cutoff: Timestamp, batch: u32) -> StoreResult<u64> {
    let tx = w.conn;
    let scan = i64::from(batch) * 4;
    let old: Vec<i64> = rows::<AgeRow>(
        tx,
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
        tx,
        "DELETE FROM attempts WHERE delivery_id IN (SELECT value FROM json_each(?1))",
        [&ids],
    )?;
    let pruned = execute(
        tx,
        "DELETE FROM deliveries WHERE id IN (SELECT value FROM json_each(?1))",
        [&ids],
    )?;
    let events: Vec<i64> = rows::<AgeRow>(
        tx,
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
        tx,
        "DELETE FROM events WHERE seq IN (SELECT value FROM json_each(?1))",
        [json_ids(events.into_iter())?],
    )?;
    execute(
        tx,
        "DELETE FROM endpoint_stats WHERE bucket_ms < ?1",
        [cutoff.millis()],
    )?;
    Ok(pruned as u64)
}
