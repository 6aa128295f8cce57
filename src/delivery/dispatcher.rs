//! The dispatcher: takes the deliveries publishes hand over and claims due ones from
//! the store onto the lanes (per-endpoint queues with their workers, `lanes.rs`), parks
//! slow endpoints, and waits for work. [`Dispatcher::step`] is one round of that, so
//! tests can drive it.
//!
//! The store is asked for work only when something may be due: a wake-up (work queued
//! without a lease, here or on another node), the poll timer, a claim that came back
//! full, or room freed up for a backlog. What is held here (waiting or in flight) is
//! leased.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::lanes::Lanes;
use super::load::Budget;
use super::recorder::Recorder;
use super::Engine;
use crate::domain::{ClaimToken, EndpointUid, Timestamp};
use crate::store::{ClaimRequest, Claimed, HealthPolicy};

/// Most deliveries claimed in one go.
const CLAIM_BATCH: usize = 512;

/// What one [`Dispatcher::step`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// Deliveries taken from publishes.
    pub handed_over: usize,
    pub claimed: usize,
}

pub struct Dispatcher {
    engine: Arc<Engine>,
    budget: Arc<Budget>,
    handed: mpsc::UnboundedReceiver<Vec<Claimed>>,
    lanes: Lanes,
    recorder: Recorder,
    recorder_task: tokio::task::JoinHandle<()>,
    /// Something may be due in the store.
    maybe_due: bool,
    /// The last claim may have left due work behind for want of room: claim again as
    /// room comes back.
    backlog: bool,
    next_poll: tokio::time::Instant,
}

/// Whether some endpoint had no room left for more in this claim, which returned
/// deliveries for the endpoints `claimed`.
fn endpoint_room_ran_out(
    request: &ClaimRequest,
    claimed: impl Iterator<Item = EndpointUid>,
) -> bool {
    if request.held.iter().any(|(_, n)| *n >= request.per_endpoint) {
        return true;
    }
    let mut got: HashMap<EndpointUid, u32> = HashMap::new();
    for uid in claimed {
        *got.entry(uid).or_default() += 1;
    }
    got.into_iter().any(|(uid, n)| n >= request.room(uid))
}

impl Dispatcher {
    pub(super) fn new(
        engine: Arc<Engine>,
        budget: Arc<Budget>,
        handed: mpsc::UnboundedReceiver<Vec<Claimed>>,
    ) -> Self {
        let config = &engine.config;
        let (recorder, recorder_task) = Recorder::start(
            engine.store.clone(),
            config.max_in_flight.max(1) as usize,
            HealthPolicy {
                disable_after: config.auto_disable_after,
                recovered_after: config.recovered_after,
            },
        );
        Self {
            lanes: Lanes::new(engine.clone(), budget.clone(), recorder.clone()),
            engine,
            budget,
            handed,
            recorder,
            recorder_task,
            maybe_due: true,
            backlog: false,
            next_poll: tokio::time::Instant::now(),
        }
    }

    /// Attempts in flight.
    pub fn in_flight(&self) -> usize {
        self.lanes.in_flight()
    }

    /// One round: take handed-over deliveries, and claim if something may be due and
    /// there is room. Attempts start on the lanes as deliveries arrive.
    pub async fn step(&mut self) -> Step {
        let mut step = Step::default();
        self.lanes.reap();
        while let Ok(batch) = self.handed.try_recv() {
            step.handed_over += self.lanes.add(batch);
        }
        let room = self.budget.snapshot().0.min(CLAIM_BATCH);
        if self.maybe_due && room > 0 {
            step.claimed = self.claim(room).await;
        } else if self.maybe_due {
            self.backlog = true;
        }
        step
    }

    async fn claim(&mut self, room: usize) -> usize {
        let now = Timestamp::now();
        let request = ClaimRequest {
            now,
            lease_until: self.engine.lease_until(now),
            limit: room as u32,
            per_endpoint: self.budget.per_endpoint(),
            held: self.budget.snapshot().1,
            token: ClaimToken::generate(),
        };
        // Room freed while the claim runs counts towards the next one.
        self.lanes.shared.freed.store(0, Ordering::Relaxed);
        match self.engine.store.claim_due(&request).await {
            Ok(claimed) => {
                // What flow queues released comes on top of the due rows asked for.
                let due = claimed.iter().filter(|c| !c.endpoint.flow.queued()).count();
                self.maybe_due = due >= room;
                for c in &claimed {
                    self.budget.take(c.endpoint.uid, c.endpoint.flow.queued());
                }
                // Due work may be left behind where the claim ran out of room: in all,
                // or for an endpoint that was full, or that got all the room it had.
                // (Asking the budget afterwards would race with attempts finishing
                // meanwhile, and leave a backlog to the poll timer.)
                self.backlog = self.maybe_due
                    || endpoint_room_ran_out(&request, claimed.iter().map(|c| c.endpoint.uid));
                self.lanes.add(claimed)
            }
            Err(e) => {
                tracing::warn!(error = crate::error::chain(&e), "cannot claim deliveries");
                // Asked again at the next poll.
                self.maybe_due = false;
                0
            }
        }
    }

    /// Room came back: with a backlog, claim again once half an endpoint's room has come
    /// back since the last claim (not after every attempt).
    fn room_came_back(&mut self) {
        let freed = self.lanes.shared.freed.load(Ordering::Relaxed);
        if self.backlog && freed >= (self.budget.per_endpoint() / 2).max(1) as usize {
            self.maybe_due = true;
        }
    }

    /// Parks endpoints whose every slot is held by a slow attempt.
    async fn park_slow(&mut self) {
        let now = Timestamp::now();
        for (uid, park) in self.lanes.park_slow(self.engine.attempt_timeout) {
            self.park(uid, now, park).await;
        }
    }

    async fn park(&self, uid: EndpointUid, now: Timestamp, park: Duration) {
        tracing::info!(
            endpoint.uid = uid.0,
            park_ms = park.as_millis() as u64,
            "endpoint is slow; parking its queue"
        );
        let until = now.plus(park);
        if let Err(e) = self.engine.store.park_endpoint(uid, now, until).await {
            tracing::warn!(error = crate::error::chain(&e), "cannot park endpoint");
        }
    }

    /// Waits until there may be something to do.
    async fn wait(&mut self, shutdown: &CancellationToken) {
        let wake = self.engine.store.wakeups();
        let shared = self.lanes.shared.clone();
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = wake.notified() => self.maybe_due = true,
            Some(batch) = self.handed.recv() => {
                self.lanes.add(batch);
            }
            _ = shared.room.notified() => self.room_came_back(),
            _ = tokio::time::sleep_until(self.next_poll) => {
                self.maybe_due = true;
                self.next_poll = tokio::time::Instant::now() + self.poll_wait().await;
            }
        }
    }

    /// Until the next retry is due, at most a poll interval. Work that is due already
    /// but was not claimable (its endpoint is full here) is taken when room comes back,
    /// not by polling for it.
    async fn poll_wait(&self) -> Duration {
        let poll = self.engine.config.poll_interval;
        let now = Timestamp::now();
        match self.engine.store.next_due().await {
            Ok(Some(due)) if due > now => {
                Duration::from_millis((due.millis() - now.millis()) as u64).min(poll)
            }
            _ => poll,
        }
    }

    /// Steps until nothing is held and nothing is due (for tests that drive the
    /// engine); attempts made meanwhile are recorded by then.
    pub async fn run_until_idle(&mut self) {
        let never = CancellationToken::new();
        loop {
            let step = self.step().await;
            if self.lanes.is_idle() && step.claimed == 0 && step.handed_over == 0 {
                break;
            }
            if step.claimed == 0 {
                tokio::select! {
                    _ = self.wait(&never) => {}
                    _ = tokio::time::sleep(Duration::from_millis(10)) => {}
                }
            }
        }
        self.recorder.flushed().await;
    }

    /// Runs until `shutdown`, then gives attempts in flight `grace` to finish, writes
    /// their outcomes, and releases everything else held here.
    pub async fn run(mut self, shutdown: CancellationToken, grace: Duration) {
        let mut parking = tokio::time::interval(super::lanes::SLOW_ATTEMPT / 2);
        while !shutdown.is_cancelled() {
            let step = self.step().await;
            if self.maybe_due && step.claimed > 0 {
                continue;
            }
            tokio::select! {
                _ = self.wait(&shutdown) => {}
                _ = parking.tick() => self.park_slow().await,
            }
        }
        self.stop(grace).await;
    }

    async fn stop(self, grace: Duration) {
        let Self {
            engine,
            mut handed,
            lanes,
            recorder,
            recorder_task,
            ..
        } = self;
        let mut held = lanes.stop(grace).await;
        // Outcomes already made are written before anything is released, so that a
        // release never makes a delivered delivery due again.
        drop(recorder);
        let _ = tokio::time::timeout(grace.max(Duration::from_secs(5)), recorder_task).await;
        // Deliveries handed over but not taken yet are held too.
        handed.close();
        while let Ok(batch) = handed.try_recv() {
            for c in batch {
                held.entry(c.token).or_default().push(c.delivery);
            }
        }
        let now = Timestamp::now();
        for (token, ids) in held {
            if let Err(e) = engine.store.release(token, ids, now).await {
                tracing::warn!(
                    error = crate::error::chain(&e),
                    "cannot release deliveries; they are retried when their leases end"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(held: Vec<(EndpointUid, u32)>) -> ClaimRequest {
        ClaimRequest {
            now: Timestamp::from_millis(0),
            lease_until: Timestamp::from_millis(1),
            limit: 100,
            per_endpoint: 4,
            held,
            token: ClaimToken(1),
        }
    }

    #[test]
    fn a_backlog_is_marked_where_an_endpoint_got_all_its_room() {
        let (a, b) = (EndpointUid(1), EndpointUid(2));
        // Less than the room of each: nothing was left behind for want of room.
        assert!(!endpoint_room_ran_out(
            &request(vec![]),
            [a, a, b].into_iter()
        ));
        // All four `a` had room for.
        assert!(endpoint_room_ran_out(
            &request(vec![]),
            [a, a, a, a, b].into_iter()
        ));
        // `a` held one already: three used up its room.
        assert!(endpoint_room_ran_out(
            &request(vec![(a, 1)]),
            [a, a, a].into_iter()
        ));
        // An endpoint that was full was not asked for at all.
        assert!(endpoint_room_ran_out(
            &request(vec![(b, 4)]),
            [a].into_iter()
        ));
    }
}
