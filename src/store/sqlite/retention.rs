//! Retention on SQLite, on the writer thread.
//!
//! Policy: what goes is chosen by age through indexes of what may go, never by walking
//! the tables from their oldest rows, so pending work (however much, in whichever org)
//! holds back nothing but itself. Finished deliveries go by when they finished
//! (`deliveries_finished`), an event with the last of its deliveries, and an event that
//! made no delivery by when it was published (`events_undelivered`).

use rusqlite::params;
use serde::Deserialize;

use super::sql::{execute, rows};
use super::thread::Write;
use crate::domain::Timestamp;
use crate::store::{StoreError, StoreResult};

fn json_ids(ids: impl Iterator<Item = i64>) -> StoreResult<String> {
    serde_json::to_string(&ids.collect::<Vec<_>>()).map_err(|e| StoreError::Other(e.into()))
}

#[derive(Deserialize)]
struct FinishedRow {
    id: i64,
    event_seq: i64,
}

/// Deletes up to `batch` deliveries finished before `cutoff` (oldest first) with their
/// attempts, the events among theirs left with no delivery, up to `batch` events
/// published before `cutoff` that made none, and statistics older than `cutoff`.
/// Returns the larger count of deliveries or of those events, so the caller goes on
/// while either may have more.
pub(super) fn prune(w: &mut Write<'_>, cutoff: Timestamp, batch: u32) -> StoreResult<u64> {
    let tx = w.conn;
    let old = rows::<FinishedRow>(
        tx,
        "SELECT id, event_seq FROM deliveries INDEXED BY deliveries_finished \
         WHERE state <> 'pending' AND updated_ms < ?1 ORDER BY updated_ms LIMIT ?2",
        params![cutoff.millis(), batch],
    )?;
    let ids = json_ids(old.iter().map(|r| r.id))?;
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
    // An event goes with its last delivery (its deliveries are its id range).
    let mut seqs: Vec<i64> = old.iter().map(|r| r.event_seq).collect();
    seqs.sort_unstable();
    seqs.dedup();
    execute(
        tx,
        "DELETE FROM events WHERE seq IN (SELECT value FROM json_each(?1)) \
           AND NOT EXISTS (SELECT 1 FROM deliveries d \
             WHERE d.id BETWEEN events.first_delivery AND events.last_delivery AND d.event_seq = events.seq)",
        [json_ids(seqs.into_iter())?],
    )?;
    let undelivered = execute(
        tx,
        "DELETE FROM events WHERE seq IN (SELECT seq FROM events INDEXED BY events_undelivered \
           WHERE deliveries = 0 AND created_ms < ?1 ORDER BY created_ms LIMIT ?2)",
        params![cutoff.millis(), batch],
    )?;
    execute(
        tx,
        "DELETE FROM endpoint_stats WHERE bucket_ms < ?1",
        [cutoff.millis()],
    )?;
    Ok(pruned.max(undelivered) as u64)
}
