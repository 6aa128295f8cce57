//! The dispatcher: takes deliveries handed over by publishes and claims due ones from
//! the store into per-endpoint queues, starts attempts as slots free up, and waits for
//! work. [`Dispatcher::step`] is one round of that, so tests can drive it.
//!
//! The store is asked for work only when something may be due: a wake-up (work queued
//! without a lease, here or on another node), the poll timer, a claim that came back
//! full, or room freed up. What is held here (waiting or in flight) is leased.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::load::{Budget, Load};
use super::recorder::Recorder;
use super::{attempt, Engine};
use crate::domain::{ClaimToken, DeliveryId, EndpointUid, Timestamp};
use crate::store::{ClaimRequest, Claimed, LeaseBudget};

/// Most deliveries claimed in one go.
const CLAIM_BATCH: usize = 512;
/// Free room at which a backlog is claimed again.
const REFILL_ROOM: usize = 128;

/// An attempt that ended (its outcome is with the recorder).
struct Finished {
    delivery: DeliveryId,
}

/// What one [`Dispatcher::step`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// Deliveries taken from publishes.
    pub handed_over: usize,
    pub claimed: usize,
    pub started: usize,
    pub finished: usize,
    /// Deliveries that waited too long for a slot and were left to their leases.
    pub expired: usize,
}

pub struct Dispatcher {
    engine: Arc<Engine>,
    budget: Arc<Budget>,
    handed: mpsc::UnboundedReceiver<Vec<Claimed>>,
    load: Load,
    tasks: JoinSet<Finished>,
    recorder: Recorder,
    recorder_task: tokio::task::JoinHandle<()>,
    /// Something may be due in the store.
    maybe_due: bool,
    /// The last claim may have left due work behind for want of room: claim again as
    /// room comes back.
    backlog: bool,
    next_poll: tokio::time::Instant,
}

impl Dispatcher {
    pub(super) fn new(
        engine: Arc<Engine>,
        budget: Arc<Budget>,
        handed: mpsc::UnboundedReceiver<Vec<Claimed>>,
    ) -> Self {
        let config = &engine.config;
        let max = config.max_in_flight.max(1) as usize;
        let (recorder, recorder_task) =
            Recorder::start(engine.store.clone(), max, config.auto_disable_after);
        Self {
            load: Load::new(max, config.max_in_flight_per_endpoint.max(1)),
            engine,
            budget,
            handed,
            tasks: JoinSet::new(),
            recorder,
            recorder_task,
            maybe_due: true,
            backlog: false,
            next_poll: tokio::time::Instant::now(),
        }
    }

    /// Attempts in flight.
    pub fn in_flight(&self) -> usize {
        self.load.in_flight()
    }

    /// Nothing held and nothing known to be due.
    pub fn is_idle(&self) -> bool {
        self.load.is_idle() && !self.maybe_due
    }

    fn finished(&mut self, done: Result<Finished, tokio::task::JoinError>) -> bool {
        let Ok(done) = done else { return false };
        let Some(endpoint) = self.load.finish(done.delivery) else {
            return false;
        };
        self.budget.give_back(endpoint);
        // Room came back for what a claim left behind: claim again once an endpoint is
        // down to half its room, or a batch's worth of room is free in all (not after
        // every attempt).
        if self.backlog {
            let (room, here) = self.budget.room_and_held(endpoint);
            if here == self.budget.per_endpoint() / 2 || room >= REFILL_ROOM {
                self.maybe_due = true;
            }
        }
        true
    }

    fn take_handed(&mut self, batch: Vec<Claimed>) -> usize {
        let now = Instant::now();
        let n = batch.len();
        for c in batch {
            self.load.add(c, now);
        }
        n
    }

    /// One round: collect finished attempts and handed-over deliveries, claim if
    /// something may be due and there is room, and start what may start.
    pub async fn step(&mut self) -> Step {
        let mut step = Step::default();
        while let Some(done) = self.tasks.try_join_next() {
            step.finished += usize::from(self.finished(done));
        }
        while let Ok(batch) = self.handed.try_recv() {
            step.handed_over += self.take_handed(batch);
        }
        let (room, held) = self.budget.snapshot();
        let room = room.min(CLAIM_BATCH);
        if self.maybe_due && room > 0 {
            step.claimed = self.claim(room, held).await;
        } else if self.maybe_due {
            self.backlog = true;
        }
        let max_wait = self.engine.config.lease_margin / 2;
        let (start, expired) = self.load.startable(max_wait);
        step.expired = expired.len();
        for c in &expired {
            self.budget.give_back(c.endpoint.uid);
        }
        if !expired.is_empty() {
            tracing::debug!(
                expired = expired.len(),
                "claimed deliveries waited too long; left for their leases to end"
            );
        }
        step.started = start.len();
        for c in start {
            self.spawn_attempt(c);
        }
        self.engine.metrics.set_in_flight(self.load.in_flight());
        step
    }

    async fn claim(&mut self, room: usize, held: Vec<(EndpointUid, u32)>) -> usize {
        let now = Timestamp::now();
        let request = ClaimRequest {
            now,
            lease_until: self.engine.lease_until(now),
            limit: room as u32,
            per_endpoint: self.budget.per_endpoint(),
            held,
            token: ClaimToken::generate(),
        };
        match self.engine.store.claim_due(&request).await {
            Ok(claimed) => {
                self.maybe_due = claimed.len() == room;
                let n = claimed.len();
                let now = Instant::now();
                for c in claimed {
                    self.budget.take(c.endpoint.uid);
                    self.load.add(c, now);
                }
                // Due work may be left behind where the claim ran out of room: in all,
                // or for an endpoint that is full now.
                self.backlog = self.maybe_due || self.budget.any_full();
                n
            }
            Err(e) => {
                tracing::warn!(error = crate::error::chain(&e), "cannot claim deliveries");
                // Asked again at the next poll.
                self.maybe_due = false;
                0
            }
        }
    }

    fn spawn_attempt(&mut self, c: Claimed) {
        let (engine, recorder) = (self.engine.clone(), self.recorder.clone());
        self.tasks.spawn(async move {
            let record = attempt::make(&engine, &c).await;
            engine.metrics.observe_attempt(&record, c.event.created);
            recorder.submit(record).await;
            Finished {
                delivery: c.delivery,
            }
        });
    }

    /// Parks endpoints whose every slot is held by a slow attempt.
    async fn park_slow(&mut self) {
        let now = Timestamp::now();
        for (uid, park) in self.load.slow_saturated(self.engine.attempt_timeout) {
            tracing::info!(
                endpoint.uid = uid.0,
                park_ms = park.as_millis() as u64,
                "endpoint is slow; parking its queue"
            );
            let until = Timestamp::from_millis(now.millis() + park.as_millis() as i64);
            if let Err(e) = self.engine.store.park_endpoint(uid, now, until).await {
                tracing::warn!(error = crate::error::chain(&e), "cannot park endpoint");
            }
        }
    }

    /// Waits until there may be something to do.
    async fn wait(&mut self, shutdown: &CancellationToken) {
        let wake = self.engine.store.wakeups();
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = wake.notified() => self.maybe_due = true,
            Some(batch) = self.handed.recv() => {
                self.take_handed(batch);
            }
            Some(done) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                self.finished(done);
            }
            _ = tokio::time::sleep_until(self.next_poll) => {
                self.maybe_due = true;
                self.next_poll = tokio::time::Instant::now() + self.poll_wait().await;
            }
        }
    }

    /// Until the next retry is due, at most a poll interval. Work that is due already
    /// but was not claimable (its endpoint is full here) is taken when a slot frees up,
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
            if self.load.is_idle() && step.claimed == 0 && step.handed_over == 0 {
                break;
            }
            if step.claimed == 0 && step.started == 0 {
                self.wait(&never).await;
            }
        }
        self.recorder.flushed().await;
    }

    /// Runs until `shutdown`, then gives attempts in flight `grace` to finish, writes
    /// their outcomes, and releases everything else held here.
    pub async fn run(mut self, shutdown: CancellationToken, grace: Duration) {
        while !shutdown.is_cancelled() {
            let step = self.step().await;
            if self.maybe_due && step.claimed > 0 {
                continue;
            }
            self.park_slow().await;
            self.wait(&shutdown).await;
        }
        self.stop(grace).await;
    }

    async fn stop(mut self, grace: Duration) {
        let deadline = tokio::time::Instant::now() + grace;
        while !self.tasks.is_empty() {
            tokio::select! {
                Some(done) = self.tasks.join_next() => { self.finished(done); }
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        self.tasks.abort_all();
        while let Some(done) = self.tasks.join_next().await {
            self.finished(done);
        }
        // Outcomes already made are written before anything is released, so that a
        // release never makes a delivered delivery due again.
        drop(self.recorder);
        let _ = tokio::time::timeout(grace.max(Duration::from_secs(5)), self.recorder_task).await;
        // Deliveries handed over but not taken yet are held too.
        self.handed.close();
        let now = Instant::now();
        while let Ok(batch) = self.handed.try_recv() {
            for c in batch {
                self.load.add(c, now);
            }
        }
        let now = Timestamp::now();
        for (token, held) in self.load.held_by_token() {
            let ids = held.iter().map(|(id, _)| *id).collect();
            if let Err(e) = self.engine.store.release(token, ids, now).await {
                tracing::warn!(
                    error = crate::error::chain(&e),
                    "cannot release deliveries; they are retried when their leases end"
                );
            }
        }
    }
}
