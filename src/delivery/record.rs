//! The recorder: writes attempt outcomes in batches (one transaction per batch).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::Receiver;

use super::Engine;
use crate::domain::Timestamp;
use crate::store::AttemptRecord;

const BATCH: usize = 512;
/// Tries per batch while the store is unreachable; after that the leases run out and
/// the deliveries are attempted again (at-least-once).
const TRIES: u32 = 30;

pub(super) async fn run(engine: Arc<Engine>, mut rx: Receiver<AttemptRecord>) {
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        let mut backoff = Duration::from_millis(50);
        for tries in 1..=TRIES {
            let disable_after = engine.config.auto_disable_after.as_millis() as i64;
            match engine
                .store
                .record_attempts(&batch, Timestamp::now(), disable_after)
                .await
            {
                Ok(()) => break,
                Err(e) if tries == TRIES => {
                    tracing::error!(error = crate::error::chain(&e), records = batch.len(), "giving up recording attempts; their deliveries will be retried when their leases end");
                }
                Err(e) => {
                    tracing::warn!(
                        error = crate::error::chain(&e),
                        "cannot record attempts yet"
                    );
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
        batch.clear();
    }
}
