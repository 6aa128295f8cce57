//! The dispatcher loop: claim due deliveries ahead of need into per-endpoint buffers,
//! start attempts as slots free up, and wait for work.
//!
//! Claims are batched: an endpoint is refilled only once its buffer has drained below
//! its concurrency limit, and the store is asked again only when something may be due
//! (a publish, a notification from another node, the poll timer, or an endpoint that
//! needs refilling). Buffered deliveries are leased like running ones.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{dispatch, record, Engine};
use crate::domain::Timestamp;
use crate::store::{ClaimRequest, Claimed};

/// Most deliveries claimed in one go.
const CLAIM_BATCH: usize = 512;
/// An endpoint whose slots are all taken by attempts older than this is parked.
const SLOW_ATTEMPT: Duration = Duration::from_secs(1);

/// Work held by this process: attempts in flight and claimed deliveries waiting.
struct Load {
    limit: u32,
    /// delivery id -> (claim token, endpoint uid, started), attempts in flight
    running: HashMap<i64, (String, i64, Instant)>,
    /// endpoint uid -> attempts in flight
    per_endpoint: HashMap<i64, u32>,
    /// endpoint uid -> claimed deliveries waiting for a slot, with when they were claimed
    buffered: HashMap<i64, VecDeque<(Claimed, String, Instant)>>,
    buffered_total: usize,
    /// endpoint uid -> parked until
    parked: HashMap<i64, Instant>,
}

impl Load {
    fn new(limit: u32) -> Self {
        Self {
            limit,
            running: HashMap::new(),
            per_endpoint: HashMap::new(),
            buffered: HashMap::new(),
            buffered_total: 0,
            parked: HashMap::new(),
        }
    }

    fn held(&self, uid: i64) -> u32 {
        self.per_endpoint.get(&uid).copied().unwrap_or(0)
            + self.buffered.get(&uid).map_or(0, |q| q.len() as u32)
    }

    /// What to tell the claim about each endpoint: an endpoint holding at least its
    /// limit is reported full (not refilled yet), the others as they are.
    fn snapshot(&self) -> Vec<(i64, u32)> {
        let uids = self.per_endpoint.keys().chain(self.buffered.keys());
        let mut out: Vec<(i64, u32)> = uids
            .map(|&uid| {
                let held = self.held(uid);
                (
                    uid,
                    if held >= self.limit {
                        2 * self.limit
                    } else {
                        held
                    },
                )
            })
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    fn buffer(&mut self, c: Claimed, token: &str, claimed_at: Instant) {
        self.buffered.entry(c.endpoint_uid).or_default().push_back((
            c,
            token.to_owned(),
            claimed_at,
        ));
        self.buffered_total += 1;
    }

    /// Buffered deliveries whose endpoint has a free slot, up to `room` of them. One
    /// that waited longer than `max_wait` is dropped instead: its lease could end
    /// before its attempt does, and another node could then make it too; it becomes due
    /// again when the lease ends.
    ///
    /// Endpoints parked as slow share at most `slow_budget` slots, so that many hanging
    /// endpoints together cannot take every slot from the healthy ones.
    fn startable(
        &mut self,
        mut room: usize,
        max_wait: Duration,
        slow_budget: usize,
    ) -> Vec<(Claimed, String)> {
        let mut out = Vec::new();
        let mut dropped = 0;
        let now = Instant::now();
        let mut slow_running: usize = self
            .running
            .values()
            .filter(|(_, uid, _)| self.parked.contains_key(uid))
            .count();
        for (uid, queue) in self.buffered.iter_mut() {
            let running = self.per_endpoint.entry(*uid).or_default();
            let slow = self.parked.contains_key(uid);
            while room > 0 && *running < self.limit && (!slow || slow_running < slow_budget) {
                let Some((c, token, claimed_at)) = queue.pop_front() else {
                    break;
                };
                if now.duration_since(claimed_at) > max_wait {
                    dropped += 1;
                    continue;
                }
                *running += 1;
                room -= 1;
                slow_running += usize::from(slow);
                self.running
                    .insert(c.delivery_id, (token.clone(), *uid, now));
                out.push((c, token));
            }
        }
        self.buffered.retain(|_, q| !q.is_empty());
        self.per_endpoint.retain(|_, n| *n > 0);
        self.buffered_total -= out.len() + dropped;
        if dropped > 0 {
            tracing::debug!(
                dropped,
                "claimed deliveries waited too long; left for their leases to end"
            );
        }
        out
    }

    /// Marks an attempt done; true when its endpoint now needs refilling.
    fn finish(&mut self, delivery_id: i64) -> bool {
        let Some((_, uid, _)) = self.running.remove(&delivery_id) else {
            return false;
        };
        if let Some(n) = self.per_endpoint.get_mut(&uid) {
            *n -= 1;
            if *n == 0 {
                self.per_endpoint.remove(&uid);
            }
        }
        self.held(uid) + 1 == self.limit
    }

    /// Endpoints whose every slot is held by a slow attempt, with how long to park them
    /// (until the oldest of those attempts must have ended).
    fn slow_saturated(&mut self, timeout: Duration) -> Vec<(i64, Duration)> {
        let now = Instant::now();
        self.parked.retain(|_, until| *until > now);
        let mut ages: HashMap<i64, (Duration, Duration)> = HashMap::new();
        for (_, uid, started) in self.running.values() {
            let age = now.duration_since(*started);
            let e = ages.entry(*uid).or_insert((age, age));
            e.0 = e.0.min(age);
            e.1 = e.1.max(age);
        }
        let mut out = Vec::new();
        for (uid, (newest, oldest)) in ages {
            let full = self.per_endpoint.get(&uid).copied().unwrap_or(0) >= self.limit;
            if full && newest >= SLOW_ATTEMPT && !self.parked.contains_key(&uid) {
                let park = timeout.saturating_sub(oldest).max(SLOW_ATTEMPT);
                self.parked.insert(uid, now + park);
                out.push((uid, park));
            }
        }
        out
    }

    /// Everything held, by claim token (to release at shutdown).
    fn held_by_token(self) -> HashMap<String, Vec<i64>> {
        let mut by_token: HashMap<String, Vec<i64>> = HashMap::new();
        for (id, (token, _, _)) in self.running {
            by_token.entry(token).or_default().push(id);
        }
        for (c, token, _) in self.buffered.into_values().flatten() {
            by_token.entry(token).or_default().push(c.delivery_id);
        }
        by_token
    }
}

fn after(now: Timestamp, d: Duration) -> Timestamp {
    Timestamp::from_millis(now.millis() + d.as_millis() as i64)
}

fn spawn_attempt(
    tasks: &mut JoinSet<i64>,
    engine: &Arc<Engine>,
    done: &mpsc::Sender<record::Outcome>,
    c: Claimed,
    token: String,
) {
    let (engine, done) = (engine.clone(), done.clone());
    tasks.spawn(async move {
        let record = dispatch::attempt(&engine, &c, &token).await;
        engine.metrics.observe_attempt(&record, c.event_created);
        let (written, is_written) = tokio::sync::oneshot::channel();
        if done.send((record, written)).await.is_ok() {
            // The slot stays taken until the outcome is in the store.
            let _ = is_written.await;
        }
        c.delivery_id
    });
}

pub(super) async fn run(engine: Arc<Engine>, shutdown: CancellationToken, grace: Duration) {
    let (done_tx, done_rx) = mpsc::channel(engine.config.max_in_flight.max(1) as usize);
    let recorder = tokio::spawn(record::run(engine.clone(), done_rx));
    let mut tasks: JoinSet<i64> = JoinSet::new();
    let limit = engine.config.max_in_flight_per_endpoint.max(1);
    let mut load = Load::new(limit);
    let max = engine.config.max_in_flight.max(1) as usize;
    let mut claims = 0u64;
    // Something may be due: claim before waiting.
    let mut maybe_due = true;
    let mut timer = tokio::time::Instant::now();

    while !shutdown.is_cancelled() {
        while let Some(done) = tasks.try_join_next() {
            if let Ok(id) = done {
                maybe_due |= load.finish(id);
            }
        }
        let room = (2 * max)
            .saturating_sub(tasks.len() + load.buffered_total)
            .min(CLAIM_BATCH);
        if maybe_due && room > 0 {
            claims += 1;
            let token = format!("{}.{claims}", engine.node_id);
            let now = Timestamp::now();
            let request = ClaimRequest {
                now,
                lease_until: after(now, engine.lease()),
                limit: room as u32,
                per_endpoint: 2 * limit,
                in_flight: load.snapshot(),
                token: token.clone(),
            };
            match engine.store.claim_due(&request).await {
                Ok(claimed) => {
                    maybe_due = claimed.len() == room;
                    let claimed_at = Instant::now();
                    for c in claimed {
                        load.buffer(c, &token, claimed_at);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = crate::error::chain(&e), "cannot claim deliveries");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            }
        }
        // An attempt starts only while its lease has the attempt timeout and half the
        // margin left: it ends, and its outcome is written, before another node may
        // take the delivery over.
        let max_wait = engine.config.lease_margin / 2;
        for (c, token) in load.startable(max.saturating_sub(tasks.len()), max_wait, max / 4) {
            spawn_attempt(&mut tasks, &engine, &done_tx, c, token);
        }
        engine.metrics.set_in_flight(tasks.len());
        if maybe_due && room > 0 {
            continue;
        }
        let now = Timestamp::now();
        for (uid, park) in load.slow_saturated(engine.attempt_timeout) {
            tracing::info!(
                endpoint.uid = uid,
                park_ms = park.as_millis() as u64,
                "endpoint is slow; parking its queue"
            );
            if let Err(e) = engine.store.park_endpoint(uid, now, after(now, park)).await {
                tracing::warn!(error = crate::error::chain(&e), "cannot park endpoint");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = engine.wake.notified() => maybe_due = true,
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                if let Ok(id) = done {
                    maybe_due |= load.finish(id);
                }
            }
            _ = tokio::time::sleep_until(timer) => {
                maybe_due = true;
                let poll = engine.config.poll_interval;
                // Sleep until the next retry is due, at most a poll interval. Work that
                // is due already but was not claimable (its endpoint is full here) is
                // taken when a slot frees up, not by polling for it.
                let now = Timestamp::now();
                let wait = match engine.store.next_due().await {
                    Ok(Some(due)) if due > now => Duration::from_millis(
                        (due.millis() - now.millis()).min(poll.as_millis() as i64) as u64,
                    ),
                    _ => poll,
                };
                timer = tokio::time::Instant::now() + wait;
            }
        }
    }
    let load = finish_in_flight(tasks, load, grace).await;
    // Outcomes already made are written before anything is released, so that a
    // release never makes a delivered delivery due again.
    drop(done_tx);
    let _ = tokio::time::timeout(grace.max(Duration::from_secs(5)), recorder).await;
    release_held(&engine, load).await;
}

/// Lets attempts in flight finish within `grace`, then stops the rest.
async fn finish_in_flight(mut tasks: JoinSet<i64>, mut load: Load, grace: Duration) -> Load {
    let deadline = tokio::time::Instant::now() + grace;
    while !tasks.is_empty() {
        tokio::select! {
            Some(done) = tasks.join_next() => {
                if let Ok(id) = done {
                    load.finish(id);
                }
            }
            _ = tokio::time::sleep_until(deadline) => break,
        }
    }
    tasks.abort_all();
    while let Some(done) = tasks.join_next().await {
        if let Ok(id) = done {
            load.finish(id);
        }
    }
    load
}

/// Releases what this process still holds (running or buffered) so that it is due again
/// at once; an outcome already written has cleared its claim token, so it is untouched.
async fn release_held(engine: &Engine, load: Load) {
    let now = Timestamp::now();
    for (token, ids) in load.held_by_token() {
        if let Err(e) = engine.store.release(&token, &ids, now).await {
            tracing::warn!(
                error = crate::error::chain(&e),
                "cannot release deliveries; they are retried when their leases end"
            );
        }
    }
}
