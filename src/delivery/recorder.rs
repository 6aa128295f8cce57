//! The recorder: writes attempt outcomes in batches (one store operation per batch).
//!
//! An attempt hands its outcome over and gives up its slot at once; the outcome holds
//! one of `POSTHORN_MAX_IN_FLIGHT` permits until it is written, and an attempt waits for
//! a permit when all are taken. So at any moment at most `POSTHORN_MAX_IN_FLIGHT`
//! attempts are in flight and at most as many outcomes unwritten: a killed process
//! makes at most twice `POSTHORN_MAX_IN_FLIGHT` deliveries again.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::domain::Timestamp;
use crate::store::{AttemptRecord, DynStore, HealthPolicy, StoreError};

/// Tries per batch while the store is unreachable; after that the leases run out and
/// the deliveries are attempted again (at-least-once).
const TRIES: u32 = 30;

type Outcome = (AttemptRecord, OwnedSemaphorePermit);

/// Hands outcomes to the recorder task.
#[derive(Clone)]
pub struct Recorder {
    outcomes: mpsc::UnboundedSender<Outcome>,
    unwritten: Arc<Semaphore>,
    max_unwritten: u32,
}

impl Recorder {
    /// Starts the recorder task; it ends once every `Recorder` is dropped and what was
    /// handed over is written.
    pub fn start(
        store: DynStore,
        max_unwritten: usize,
        policy: HealthPolicy,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (outcomes, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(store, rx, max_unwritten, policy));
        (
            Self {
                outcomes,
                unwritten: Arc::new(Semaphore::new(max_unwritten.max(1))),
                max_unwritten: u32::try_from(max_unwritten.max(1)).unwrap_or(u32::MAX),
            },
            task,
        )
    }

    /// Queues an outcome, waiting while too many are unwritten.
    pub async fn submit(&self, record: AttemptRecord) {
        let Ok(permit) = self.unwritten.clone().acquire_owned().await else {
            return;
        };
        let _ = self.outcomes.send((record, permit));
    }
}

impl Recorder {
    /// Waits until every outcome handed over so far is written.
    pub async fn flushed(&self) {
        let _ = self.unwritten.acquire_many(self.max_unwritten).await;
    }
}

async fn run(
    store: DynStore,
    mut rx: mpsc::UnboundedReceiver<Outcome>,
    batch: usize,
    policy: HealthPolicy,
) {
    // Batches written at once: as many as the store says are worth it.
    let writers = Arc::new(Semaphore::new(store.write_concurrency().max(1)));
    let mut writing = tokio::task::JoinSet::new();
    loop {
        let Ok(writer) = writers.clone().acquire_owned().await else {
            break;
        };
        let mut queued: Vec<Outcome> = Vec::with_capacity(batch);
        if rx.recv_many(&mut queued, batch.max(1)).await == 0 {
            break;
        }
        let (records, permits): (Vec<AttemptRecord>, Vec<OwnedSemaphorePermit>) =
            queued.into_iter().unzip();
        let store = store.clone();
        writing.spawn(async move {
            write(&store, records, policy).await;
            drop((permits, writer));
        });
        while writing.try_join_next().is_some() {}
    }
    while writing.join_next().await.is_some() {}
}

/// Writes a batch, waiting out an unreachable store. A batch the store refuses for
/// another reason is written record by record, so that one bad record costs only
/// itself (its delivery is made again when its lease ends).
async fn write(store: &DynStore, batch: Vec<AttemptRecord>, policy: HealthPolicy) {
    let batch: Arc<[AttemptRecord]> = batch.into();
    let mut backoff = Duration::from_millis(50);
    for tries in 1..=TRIES {
        match store
            .record_attempts(batch.clone(), Timestamp::now(), policy)
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
                for record in batch.iter() {
                    let delivery = record.delivery;
                    if let Err(e) = store
                        .record_attempts(Arc::from([record.clone()]), Timestamp::now(), policy)
                        .await
                    {
                        tracing::error!(error = crate::error::chain(&e), delivery.row = delivery.0, "cannot record an attempt; the delivery is made again when its lease ends");
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
