//! Group commit of publishes.
//!
//! Policy: publish requests hand their validated events to one committer task per
//! process, which stores everything that is waiting in one transaction (one fsync, one
//! round of statements) and answers each request from its share of the result. A
//! request is answered only after that commit, so a 202 still means durable; and the
//! commit does not depend on the request, so a client that hangs up leaves either
//! nothing or a fully queued event.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Notify};

use crate::domain::Timestamp;
use crate::error::ApiError;
use crate::store::{DynStore, NewEvent, Published, StoreError};

/// A repeated idempotency key is answered from the first event for this long.
pub const IDEMPOTENCY_WINDOW_MS: i64 = 24 * 60 * 60 * 1000;
/// Most events committed in one transaction.
const MAX_GROUP: usize = 2000;

type Reply = oneshot::Sender<Result<Vec<Published>, ApiError>>;

#[derive(Clone)]
pub struct Publisher {
    jobs: mpsc::Sender<(Vec<NewEvent>, Reply)>,
}

impl Publisher {
    /// Starts the committer; it ends when the last `Publisher` clone is dropped.
    pub fn start(store: DynStore, wake: Arc<Notify>) -> Self {
        let (jobs, rx) = mpsc::channel(4096);
        tokio::spawn(commit_loop(store, wake, rx));
        Self { jobs }
    }

    /// Stores `events` with their deliveries; answers once they are durable.
    pub async fn publish(&self, events: Vec<NewEvent>) -> Result<Vec<Published>, ApiError> {
        let (reply, answer) = oneshot::channel();
        let stopped = || ApiError::Unavailable(anyhow::anyhow!("the publisher has stopped"));
        self.jobs
            .send((events, reply))
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// The same failure for every request of a group.
fn share(err: &StoreError) -> ApiError {
    let cause = anyhow::anyhow!(crate::error::chain(err));
    match err {
        StoreError::Unavailable(_) => ApiError::Unavailable(cause),
        StoreError::Conflict(what) => ApiError::AlreadyExists(what.clone()),
        _ => ApiError::Internal(cause),
    }
}

async fn commit_loop(
    store: DynStore,
    wake: Arc<Notify>,
    mut rx: mpsc::Receiver<(Vec<NewEvent>, Reply)>,
) {
    let mut waiting = std::collections::VecDeque::new();
    loop {
        if waiting.is_empty() {
            let mut arrived = Vec::new();
            if rx.recv_many(&mut arrived, 256).await == 0 {
                return;
            }
            waiting.extend(arrived);
        }
        // Everything waiting, up to MAX_GROUP events (at least one request).
        let mut events = Vec::new();
        let mut replies = Vec::new();
        while let Some((batch, reply)) = waiting.pop_front() {
            replies.push((batch.len(), reply));
            events.extend(batch);
            if events.len() >= MAX_GROUP {
                break;
            }
        }
        let result = store
            .publish(&events, Timestamp::now(), IDEMPOTENCY_WINDOW_MS)
            .await;
        match result {
            Ok(published) => {
                wake.notify_one();
                let mut published = published.into_iter();
                for (n, reply) in replies {
                    let _ = reply.send(Ok(published.by_ref().take(n).collect()));
                }
            }
            // Something in one request failed the group: commit each request on its
            // own, so that only the request at fault fails. (When the store is down,
            // every request gets the 503 at once.)
            Err(e) if replies.len() > 1 && !matches!(e, StoreError::Unavailable(_)) => {
                let mut events = events.into_iter();
                for (n, reply) in replies {
                    let own: Vec<NewEvent> = events.by_ref().take(n).collect();
                    let answer = store
                        .publish(&own, Timestamp::now(), IDEMPOTENCY_WINDOW_MS)
                        .await
                        .map_err(|e| share(&e));
                    if answer.is_ok() {
                        wake.notify_one();
                    }
                    let _ = reply.send(answer);
                }
            }
            Err(e) => {
                for (_, reply) in replies {
                    let _ = reply.send(Err(share(&e)));
                }
            }
        }
    }
}
