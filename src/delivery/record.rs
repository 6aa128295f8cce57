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
use crate::store::{AttemptRecord, StoreError};

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
        write(&engine, &batch).await;
        for ack in acks {
            let _ = ack.send(());
        }
    }
}

/// Writes a batch, waiting out an unreachable store. A batch the store refuses for
/// another reason is written record by record, so that one bad record costs only
/// itself (its delivery is made again when its lease ends).
async fn write(engine: &Engine, batch: &[AttemptRecord]) {
    let disable_after = engine.config.auto_disable_after.as_millis() as i64;
    let mut backoff = Duration::from_millis(50);
    for tries in 1..=TRIES {
        match engine
            .store
            .record_attempts(batch, Timestamp::now(), disable_after)
            .await
        {
            Ok(()) => return,
            Err(StoreError::Unavailable(_)) if tries < TRIES => {
                tracing::warn!("store unavailable; outcomes wait to be written");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            Err(e) if batch.len() > 1 && !matches!(e, StoreError::Unavailable(_)) => {
                tracing::warn!(
                    error = crate::error::chain(&e),
                    "a batch of outcomes was refused; writing them one by one"
                );
                for record in batch {
                    let one = std::slice::from_ref(record);
                    if let Err(e) = engine
                        .store
                        .record_attempts(one, Timestamp::now(), disable_after)
                        .await
                    {
                        tracing::error!(error = crate::error::chain(&e), delivery.id = record.delivery_id, "cannot record an attempt; the delivery is made again when its lease ends");
                    }
                }
                return;
            }
            Err(e) => {
                tracing::error!(error = crate::error::chain(&e), records = batch.len(), "giving up recording attempts; their deliveries are made again when their leases end");
                return;
            }
        }
    }
}
