//! The recorder: writes attempt outcomes in batches (one transaction per batch), then
//! tells each attempt its outcome is written: an attempt holds its in-flight slot until
//! then, so a killed process can have made at most POSTHORN_MAX_IN_FLIGHT attempts
//! whose outcome is lost (and that are made again).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::Receiver;
use tokio::sync::oneshot;

use super::Engine;
use crate::domain::Timestamp;
use crate::store::AttemptRecord;

const BATCH: usize = 512;
/// Tries per batch while the store is unreachable; after that the leases run out and
/// the deliveries are attempted again (at-least-once).
const TRIES: u32 = 30;

/// An outcome to write, and whom to tell once it is written.
pub(super) type Outcome = (AttemptRecord, oneshot::Sender<()>);

pub(super) async fn run(engine: Arc<Engine>, mut rx: Receiver<Outcome>) {
    let mut queued: Vec<Outcome> = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut queued, BATCH).await > 0 {
        let (batch, acks): (Vec<AttemptRecord>, Vec<oneshot::Sender<()>>) =
            queued.drain(..).unzip();
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
        for ack in acks {
            let _ = ack.send(());
        }
    }
}
