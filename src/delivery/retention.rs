//! Retention: finished deliveries, their attempts and their events are deleted once
//! they are older than `POSTHORN_RETENTION`, in small batches with pauses between, so
//! the job never holds the store for long. Pending deliveries are never deleted, and
//! hold back nothing else: what goes is found by age (finished deliveries by when they
//! finished), not by walking from the oldest rows, so one org's stuck backlog does not
//! stop retention for the others.
//! Expired and revoked web sessions go on the same schedule.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Engine;
use crate::domain::Timestamp;

const BATCH: u32 = 500;
const PAUSE: Duration = Duration::from_millis(20);

pub(super) async fn run(engine: Arc<Engine>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(engine.config.retention_interval) => {}
        }
        let cutoff =
            Timestamp::from_millis(Timestamp::now().minus(engine.config.retention).millis());
        let mut pruned = 0;
        loop {
            match engine.store.prune(cutoff, BATCH).await {
                Ok(n) => {
                    pruned += n;
                    if n < u64::from(BATCH) || shutdown.is_cancelled() {
                        break;
                    }
                    tokio::time::sleep(PAUSE).await;
                }
                Err(e) => {
                    tracing::warn!(error = crate::error::chain(&e), "retention pass failed");
                    break;
                }
            }
        }
        if pruned > 0 {
            tracing::info!(deliveries = pruned, "retention pruned old deliveries");
        }
        // Web sessions that can let no one in any more.
        if let Err(e) = engine.store.prune_web_sessions(Timestamp::now()).await {
            tracing::warn!(
                error = crate::error::chain(&e),
                "pruning web sessions failed"
            );
        }
    }
}
