//! Lanes: one queue per endpoint of the deliveries leased here, worked by up to
//! `POSTHORN_MAX_IN_FLIGHT_PER_ENDPOINT` worker tasks that each take the next delivery
//! as soon as their attempt is over (no round trip through the dispatcher between two
//! attempts). Workers are started as work arrives and end when their lane is empty.
//!
//! Slots: an attempt needs one of `POSTHORN_MAX_IN_FLIGHT` permits, and an endpoint
//! parked as slow (every slot taken by attempts older than a second) also one of a
//! quarter as many: many hanging endpoints together cannot take every slot from the
//! healthy ones. A delivery that waited longer than `max_wait` for a slot is left to its
//! lease instead (it could end before the attempt does).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;

use super::load::Budget;
use super::pace::{Gate, Pace, PaceRules};
use super::recorder::Recorder;
use super::{attempt, Engine};
use crate::domain::{ClaimToken, DeliveryId, EndpointUid, Timestamp};
use crate::store::Claimed;

/// An endpoint whose slots are all taken by attempts older than this is parked.
pub(super) const SLOW_ATTEMPT: Duration = Duration::from_secs(1);
/// Parked endpoints share this part of the slots.
const PARKED_SHARE: usize = 4;

struct Waiting {
    claimed: Claimed,
    since: Instant,
}

struct Running {
    token: ClaimToken,
    started: Instant,
}

#[derive(Default)]
struct Lane {
    waiting: VecDeque<Waiting>,
    running: HashMap<DeliveryId, Running>,
    workers: u32,
    parked_until: Option<Instant>,
    /// When the last attempt of a rate-limited endpoint started here.
    last_send: Option<Instant>,
}

impl Lane {
    fn parked(&self, now: Instant) -> bool {
        self.parked_until.is_some_and(|until| until > now)
    }
}

/// What workers share.
pub(super) struct Shared {
    pub engine: Arc<Engine>,
    pub budget: Arc<Budget>,
    pub recorder: Recorder,
    lanes: Mutex<HashMap<EndpointUid, Lane>>,
    /// What endpoints' answers said (outlives their lanes; locked after `lanes`).
    paces: Mutex<HashMap<EndpointUid, Pace>>,
    rules: PaceRules,
    slots: Arc<Semaphore>,
    parked_slots: Arc<Semaphore>,
    per_endpoint: u32,
    max_wait: Duration,
    /// Told when room came back (the dispatcher decides whether to claim), and how much
    /// came back since the dispatcher last looked.
    pub room: Notify,
    pub freed: std::sync::atomic::AtomicUsize,
    /// Set at shutdown: workers take nothing more.
    stopping: std::sync::atomic::AtomicBool,
}

/// What the dispatcher holds: the lanes and their workers.
pub(super) struct Lanes {
    pub shared: Arc<Shared>,
    workers: JoinSet<()>,
}

impl Lanes {
    pub fn new(engine: Arc<Engine>, budget: Arc<Budget>, recorder: Recorder) -> Self {
        let config = &engine.config;
        let max = config.max_in_flight.max(1) as usize;
        let shared = Shared {
            per_endpoint: config.max_in_flight_per_endpoint.max(1),
            // An attempt starts only while its lease has the attempt timeout and half the
            // margin left: it ends, and its outcome is written, before another node may
            // take the delivery over.
            max_wait: config.lease_margin / 2,
            rules: PaceRules {
                per_endpoint: config.max_in_flight_per_endpoint.max(1),
                circuit_failures: config.circuit_failures,
                probe_interval: config.circuit_probe_interval,
            },
            paces: Mutex::default(),
            slots: Arc::new(Semaphore::new(max)),
            parked_slots: Arc::new(Semaphore::new((max / PARKED_SHARE).max(1))),
            engine,
            budget,
            recorder,
            lanes: Mutex::default(),
            room: Notify::new(),
            freed: Default::default(),
            stopping: Default::default(),
        };
        Self {
            shared: Arc::new(shared),
            workers: JoinSet::new(),
        }
    }

    /// Queues leased deliveries on their lanes and starts the workers they need.
    pub fn add(&mut self, claimed: impl IntoIterator<Item = Claimed>) -> usize {
        let now = Instant::now();
        let mut start: Vec<EndpointUid> = Vec::new();
        let mut added = 0;
        {
            let mut lanes = self.shared.lanes();
            for c in claimed {
                added += 1;
                let uid = c.endpoint.uid;
                let lane = lanes.entry(uid).or_default();
                lane.waiting.push_back(Waiting {
                    claimed: c,
                    since: now,
                });
                let wanted = (lane.waiting.len() + lane.running.len()) as u32;
                if lane.workers < self.shared.per_endpoint && lane.workers < wanted {
                    lane.workers += 1;
                    start.push(uid);
                }
            }
        }
        for uid in start {
            self.workers.spawn(work(self.shared.clone(), uid));
        }
        added
    }

    /// Collects workers that ended (to keep the set small).
    pub fn reap(&mut self) {
        while self.workers.try_join_next().is_some() {}
    }

    pub fn in_flight(&self) -> usize {
        self.shared.lanes().values().map(|l| l.running.len()).sum()
    }

    pub fn is_idle(&self) -> bool {
        self.shared.lanes().is_empty()
    }

    /// Parks endpoints whose every slot is held by a slow attempt; returns them with how
    /// long (until the oldest of those attempts must have ended).
    pub fn park_slow(&self, timeout: Duration) -> Vec<(EndpointUid, Duration)> {
        let now = Instant::now();
        let mut out = Vec::new();
        for (uid, lane) in self.shared.lanes().iter_mut() {
            if lane.parked(now) || (lane.running.len() as u32) < self.shared.per_endpoint {
                continue;
            }
            let ages = lane.running.values().map(|r| now.duration_since(r.started));
            let (newest, oldest) = ages.fold((Duration::MAX, Duration::ZERO), |(n, o), a| {
                (n.min(a), o.max(a))
            });
            if newest >= SLOW_ATTEMPT {
                let park = timeout.saturating_sub(oldest).max(SLOW_ATTEMPT);
                lane.parked_until = Some(now + park);
                out.push((*uid, park));
            }
        }
        out
    }

    /// Stops the workers: they finish their attempt within `grace`, the rest is
    /// aborted. Returns everything still held, by claim token (to release).
    pub async fn stop(mut self, grace: Duration) -> HashMap<ClaimToken, Vec<DeliveryId>> {
        self.shared
            .stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + grace;
        while !self.workers.is_empty() {
            tokio::select! {
                _ = self.workers.join_next() => {}
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        self.workers.abort_all();
        while self.workers.join_next().await.is_some() {}
        let mut held: HashMap<ClaimToken, Vec<DeliveryId>> = HashMap::new();
        for lane in self.shared.lanes().drain().map(|(_, lane)| lane) {
            for (id, r) in lane.running {
                held.entry(r.token).or_default().push(id);
            }
            for w in lane.waiting {
                held.entry(w.claimed.token)
                    .or_default()
                    .push(w.claimed.delivery);
            }
        }
        held
    }
}

impl Shared {
    fn lanes(&self) -> MutexGuard<'_, HashMap<EndpointUid, Lane>> {
        self.lanes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn paces(&self) -> MutexGuard<'_, HashMap<EndpointUid, Pace>> {
        self.paces.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What the lane's worker does next: attempt its next delivery (leaving expired ones
    /// to their leases), wait for the next one's slot, hand everything back while the
    /// endpoint's pace says wait, or end (nothing to do, or enough in flight).
    fn next(&self, uid: EndpointUid) -> Next {
        let now = Instant::now();
        let mut expired = Vec::new();
        let next = {
            let mut lanes = self.lanes();
            let Some(lane) = lanes.get_mut(&uid) else {
                return Next::Done;
            };
            let gate = match self.paces().get(&uid) {
                Some(pace) => pace.gate(&self.rules, now, lane.running.len()),
                None if lane.running.len() as u32 >= self.per_endpoint => Gate::Exit,
                None => Gate::Go,
            };
            let mut next = Next::Done;
            let stopping = self.stopping.load(std::sync::atomic::Ordering::SeqCst);
            if let (false, Gate::HandBack(until, reason)) = (stopping, gate) {
                let waiting: Vec<Claimed> = lane.waiting.drain(..).map(|w| w.claimed).collect();
                self.engine.metrics.held_back(reason, waiting.len());
                next = Next::HandBack(waiting, until);
            } else if !stopping && gate == Gate::Go {
                while let Some(w) = lane.waiting.front() {
                    if now.duration_since(w.since) > self.max_wait {
                        expired.extend(lane.waiting.pop_front().map(|w| w.claimed));
                        continue;
                    }
                    // Its slot under the endpoint's rate limit, and (should this
                    // process have fallen behind its slots) never closer to the last
                    // send than the limit allows.
                    let spaced = spacing(&w.claimed)
                        .zip(lane.last_send)
                        .and_then(|(gap, last)| (last + gap).checked_duration_since(now));
                    if let Some(wait) = w.claimed.not_before.and_then(until).or(spaced) {
                        next = Next::Wait(wait);
                        break;
                    }
                    next = lane
                        .waiting
                        .pop_front()
                        .map_or(Next::Done, |w| Next::Go(w.claimed, lane.parked(now)));
                    break;
                }
            }
            match &next {
                Next::Go(c, _) => {
                    if spacing(c).is_some() {
                        lane.last_send = Some(now);
                    }
                    lane.running.insert(
                        c.delivery,
                        Running {
                            token: c.token,
                            started: now,
                        },
                    );
                }
                Next::Wait(_) => {}
                Next::Done | Next::HandBack(..) => {
                    lane.workers -= 1;
                    if lane.workers == 0 && lane.waiting.is_empty() && lane.running.is_empty() {
                        lanes.remove(&uid);
                    }
                }
            }
            next
        };
        if !expired.is_empty() {
            tracing::debug!(
                expired = expired.len(),
                "claimed deliveries waited too long; left for their leases to end"
            );
            for c in &expired {
                self.give_back(c);
            }
        }
        next
    }

    /// Takes in an attempt's outcome for the endpoint's pace; true when it closed an
    /// open circuit.
    fn observe(&self, record: &crate::store::AttemptRecord) -> bool {
        let now = Instant::now();
        let mut paces = self.paces();
        let before = match paces.get(&record.endpoint) {
            // A success of a settled endpoint changes nothing (the common case).
            None if record.outcome == crate::store::Outcome::Delivered => return false,
            None => None,
            Some(pace) => pace.state(&self.rules, now),
        };
        let pace = paces
            .entry(record.endpoint)
            .or_insert_with(|| Pace::new(&self.rules));
        let closed = pace.observe(record, &self.rules, now);
        let state = pace.state(&self.rules, now);
        if pace.is_settled(&self.rules, now) {
            paces.remove(&record.endpoint);
        }
        if state != before {
            self.engine.metrics.endpoint_flow(record.endpoint, state);
        }
        closed
    }

    /// Gives deliveries back to the store, due `until`, with the endpoint's other due
    /// deliveries moved there too.
    async fn hand_back(&self, uid: EndpointUid, claimed: Vec<Claimed>, until: Instant) {
        let now = Timestamp::now();
        let at = now.plus(until.saturating_duration_since(Instant::now()));
        let store = &self.engine.store;
        let mut by_token: HashMap<ClaimToken, Vec<DeliveryId>> = HashMap::new();
        for c in &claimed {
            by_token.entry(c.token).or_default().push(c.delivery);
        }
        for (token, ids) in by_token {
            if let Err(e) = store.release(token, ids, at).await {
                tracing::warn!(
                    error = crate::error::chain(&e),
                    "cannot hand deliveries back"
                );
            }
        }
        if let Err(e) = store.park_endpoint(uid, now, at).await {
            tracing::warn!(
                error = crate::error::chain(&e),
                "cannot hold an endpoint back"
            );
        }
        for c in &claimed {
            self.give_back(c);
        }
    }

    /// An open circuit closed: the deliveries it held back are due now.
    async fn resume(&self, uid: EndpointUid) {
        let now = Timestamp::now();
        let held_until = now.plus(self.rules.probe_interval * 2);
        if let Err(e) = self.engine.store.park_endpoint(uid, held_until, now).await {
            tracing::warn!(error = crate::error::chain(&e), "cannot resume an endpoint");
        }
        self.engine.store.wakeups().notify_one();
    }

    fn attempted(&self, c: &Claimed) {
        if let Some(lane) = self.lanes().get_mut(&c.endpoint.uid) {
            lane.running.remove(&c.delivery);
        }
    }

    fn give_back(&self, c: &Claimed) {
        self.budget
            .give_back_taken(c.endpoint.uid, c.endpoint.flow.queued());
        self.freed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.room.notify_one();
    }
}

/// What a worker does next (see [`Shared::next`]).
enum Next {
    Go(Claimed, bool),
    Wait(Duration),
    HandBack(Vec<Claimed>, Instant),
    Done,
}

/// The least time between two sends to a rate-limited endpoint without a burst.
fn spacing(c: &Claimed) -> Option<Duration> {
    let flow = &c.endpoint.flow;
    let rate = flow.rate_limit.filter(|_| flow.burst.unwrap_or(1) <= 1)?;
    Some(Duration::from_micros(
        1_000_000u64.div_ceil(u64::from(rate)),
    ))
}

/// How long until `at`, if it is still ahead.
fn until(at: Timestamp) -> Option<Duration> {
    let ms = at.millis() - Timestamp::now().millis();
    (ms > 0).then(|| Duration::from_millis(ms as u64))
}

/// A worker of one lane: takes the next delivery, waits for a slot, attempts, hands the
/// outcome to the recorder, and so on until the lane is empty.
async fn work(shared: Arc<Shared>, uid: EndpointUid) {
    loop {
        let Ok(slot) = shared.slots.clone().acquire_owned().await else {
            return;
        };
        let (c, parked) = match shared.next(uid) {
            Next::Go(c, parked) => (c, parked),
            Next::Wait(wait) => {
                drop(slot);
                tokio::time::sleep(wait).await;
                continue;
            }
            Next::HandBack(claimed, until) => {
                drop(slot);
                shared.hand_back(uid, claimed, until).await;
                return;
            }
            Next::Done => return,
        };
        let parked_slot = match parked {
            true => shared.parked_slots.clone().acquire_owned().await.ok(),
            false => None,
        };
        shared.engine.metrics.add_in_flight(1);
        let record = attempt::make(&shared.engine, &c).await;
        shared.engine.metrics.add_in_flight(-1);
        shared
            .engine
            .metrics
            .observe_attempt(&record, c.event.created);
        let closed = shared.observe(&record);
        // The attempt is over (parking looks at attempts only); the slot is kept until
        // the recorder has taken the outcome.
        shared.attempted(&c);
        shared.recorder.submit(record).await;
        drop((slot, parked_slot));
        shared.give_back(&c);
        if closed {
            shared.resume(uid).await;
        }
    }
}
