//! Group commit of publishes.
//!
//! Policy: publish requests hand their validated events to committer tasks (as many
//! per process as the store says are worth running at once: on SQLite a few, so one
//! gathers a group while another commits), which store everything
//! that is waiting in one store operation (one transaction, one fsync) and answer each
//! request from its share of the result. A
//! request is answered only after that commit, so a 202 still means durable; and the
//! commit does not depend on the request, so a client that hangs up leaves either
//! nothing or a fully queued event. The deliveries of a commit go straight to this
//! process's dispatcher, as far as it has room ([`Intake`]). A group holds at most
//! `POSTHORN_MAX_DELIVERIES_PER_REQUEST` deliveries (as counted when each request was
//! admitted, `fan_out.rs`): a request that does not fit goes in the next group, so a
//! big fan-out is never in the transaction of other orgs' small publishes.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::delivery::Intake;
use crate::domain::Timestamp;
use crate::fan_out::Admitted;
use crate::store::{DynStore, NewEvent, PublishBatch, Published, StoreError};

/// A repeated idempotency key is answered from the first event for this long.
pub const IDEMPOTENCY_WINDOW_MS: i64 = 24 * 60 * 60 * 1000;
/// Most events committed in one transaction.
const MAX_GROUP: usize = 2000;

/// Why a publish was not stored.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The store cannot take it now (unreachable, disk full): nothing was stored.
    #[error("the store cannot take events now")]
    Unavailable(#[source] anyhow::Error),
    /// The process is shutting down.
    #[error("the publisher has stopped")]
    Stopped,
    #[error("storing the events failed")]
    Failed(#[source] anyhow::Error),
}

impl PublishError {
    /// The same failure for every request of a group.
    fn of(err: &StoreError) -> Self {
        let cause = anyhow::anyhow!(crate::error::chain(err));
        match err {
            StoreError::Unavailable(_) => Self::Unavailable(cause),
            _ => Self::Failed(cause),
        }
    }
}

type Reply = oneshot::Sender<Result<Vec<Published>, PublishError>>;

/// A request's events, its place in its org's budget (given back once its commit has
/// ended), and where its answer goes.
type Job = (Vec<NewEvent>, Admitted, Reply);

#[derive(Clone)]
pub struct Publisher {
    jobs: mpsc::Sender<Job>,
}

impl Publisher {
    /// Starts the committer; it ends when the last `Publisher` clone is dropped.
    /// `intake`: this process's dispatcher (none on an API-only node).
    pub fn start(store: DynStore, intake: Option<Intake>) -> Self {
        Self::start_bounded(store, intake, u64::MAX)
    }

    /// [`Self::start`] with at most `group_deliveries` deliveries in one commit (one
    /// request's own are committed even when they are more).
    pub fn start_bounded(store: DynStore, intake: Option<Intake>, group_deliveries: u64) -> Self {
        let (jobs, rx) = mpsc::channel(4096);
        let rx: Jobs = Arc::new(tokio::sync::Mutex::new(Waiting { rx, carried: None }));
        for _ in 0..store.write_concurrency().max(1) {
            tokio::spawn(commit_loop(
                store.clone(),
                intake.clone(),
                rx.clone(),
                group_deliveries,
            ));
        }
        Self { jobs }
    }

    /// Stores `events` with their deliveries; answers once they are durable.
    pub async fn publish(&self, events: Vec<NewEvent>) -> Result<Vec<Published>, PublishError> {
        self.publish_admitted(events, Admitted::uncounted()).await
    }

    /// [`Self::publish`] of a request admitted to its org's budget (`fan_out.rs`),
    /// which is given back when its commit has ended.
    pub async fn publish_admitted(
        &self,
        events: Vec<NewEvent>,
        admitted: Admitted,
    ) -> Result<Vec<Published>, PublishError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send((events, admitted, reply))
            .await
            .map_err(|_| PublishError::Stopped)?;
        answer.await.map_err(|_| PublishError::Stopped)?
    }
}

/// Stores one group; its leased deliveries go to the dispatcher.
async fn commit(
    store: &DynStore,
    intake: Option<&Intake>,
    events: Arc<[NewEvent]>,
) -> Result<Vec<Published>, StoreError> {
    let now = Timestamp::now();
    let result = store
        .publish(PublishBatch {
            events,
            now,
            idempotency_window_ms: IDEMPOTENCY_WINDOW_MS,
            lease: intake.map(|i| i.lease(now)),
        })
        .await?;
    if let Some(intake) = intake {
        intake.hand_over(result.leased);
    }
    Ok(result.answers)
}

/// The requests waiting, and the one that did not fit the last group (it starts the
/// next).
struct Waiting {
    rx: mpsc::Receiver<Job>,
    carried: Option<Job>,
}

type Jobs = Arc<tokio::sync::Mutex<Waiting>>;

/// One committer: takes everything waiting (up to MAX_GROUP events and
/// `group_deliveries` deliveries, at least one request), commits it, answers, and
/// again. Several run at once, so a group can be gathered while the previous one
/// commits.
async fn commit_loop(store: DynStore, intake: Option<Intake>, jobs: Jobs, group_deliveries: u64) {
    loop {
        let mut events = Vec::new();
        let mut replies = Vec::new();
        // Given back to their orgs' budgets once this group's commit has ended.
        let mut admitted = Vec::new();
        {
            let mut waiting = jobs.lock().await;
            let first = match waiting.carried.take() {
                Some(job) => job,
                None => match waiting.rx.recv().await {
                    Some(job) => job,
                    None => return,
                },
            };
            let mut deliveries = first.1.deliveries;
            let (batch, place, reply) = first;
            replies.push((batch.len(), reply));
            events.extend(batch);
            admitted.push(place);
            while events.len() < MAX_GROUP {
                let Ok(job) = waiting.rx.try_recv() else {
                    break;
                };
                if deliveries.saturating_add(job.1.deliveries) > group_deliveries {
                    waiting.carried = Some(job);
                    break;
                }
                deliveries += job.1.deliveries;
                let (batch, place, reply) = job;
                replies.push((batch.len(), reply));
                events.extend(batch);
                admitted.push(place);
            }
        }
        let events: Arc<[NewEvent]> = events.into();
        match commit(&store, intake.as_ref(), events.clone()).await {
            Ok(published) => {
                let mut published = published.into_iter();
                for (n, reply) in replies {
                    let _ = reply.send(Ok(published.by_ref().take(n).collect()));
                }
            }
            // Something in one request failed the group: commit each request on its
            // own, so that only the request at fault fails. (When the store is down,
            // every request gets the 503 at once.)
            Err(e) if replies.len() > 1 && !matches!(e, StoreError::Unavailable(_)) => {
                let mut from = 0;
                for (n, reply) in replies {
                    let own: Arc<[NewEvent]> = events[from..from + n].into();
                    from += n;
                    let answer = commit(&store, intake.as_ref(), own)
                        .await
                        .map_err(|e| PublishError::of(&e));
                    let _ = reply.send(answer);
                }
            }
            Err(e) => {
                for (_, reply) in replies {
                    let _ = reply.send(Err(PublishError::of(&e)));
                }
            }
        }
    }
}
