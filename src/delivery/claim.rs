//! The dispatcher loop: claim what is due, start one task per attempt, wait.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{dispatch, record, Engine};
use crate::domain::Timestamp;
use crate::store::{ClaimRequest, Claimed};

/// Most deliveries claimed in one go.
const CLAIM_BATCH: usize = 256;
/// An endpoint whose slots are all taken by attempts older than this is parked.
const SLOW_ATTEMPT: Duration = Duration::from_secs(1);

/// Work in flight in this process.
#[derive(Default)]
struct Load {
    /// delivery id -> (claim token, endpoint uid, started)
    deliveries: HashMap<i64, (String, i64, Instant)>,
    /// endpoint uid -> attempts in flight
    per_endpoint: HashMap<i64, u32>,
    /// endpoint uid -> parked until
    parked: HashMap<i64, Instant>,
}

impl Load {
    fn start(&mut self, c: &Claimed, token: &str) {
        self.deliveries.insert(
            c.delivery_id,
            (token.to_owned(), c.endpoint_uid, Instant::now()),
        );
        *self.per_endpoint.entry(c.endpoint_uid).or_default() += 1;
    }

    fn finish(&mut self, delivery_id: i64) {
        if let Some((_, uid, _)) = self.deliveries.remove(&delivery_id) {
            if let Some(n) = self.per_endpoint.get_mut(&uid) {
                *n -= 1;
                if *n == 0 {
                    self.per_endpoint.remove(&uid);
                }
            }
        }
    }

    fn snapshot(&self) -> Vec<(i64, u32)> {
        self.per_endpoint.iter().map(|(k, v)| (*k, *v)).collect()
    }

    /// Endpoints whose every slot is held by a slow attempt, with how long to park them
    /// (until the oldest of those attempts must have ended).
    fn slow_saturated(&mut self, per_endpoint: u32, timeout: Duration) -> Vec<(i64, Duration)> {
        let now = Instant::now();
        self.parked.retain(|_, until| *until > now);
        let mut out = Vec::new();
        for (&uid, &n) in &self.per_endpoint {
            if n < per_endpoint || self.parked.contains_key(&uid) {
                continue;
            }
            let newest = self
                .deliveries
                .values()
                .filter(|(_, u, _)| *u == uid)
                .map(|(_, _, started)| now.duration_since(*started))
                .min()
                .unwrap_or_default();
            if newest >= SLOW_ATTEMPT {
                let oldest = self
                    .deliveries
                    .values()
                    .filter(|(_, u, _)| *u == uid)
                    .map(|(_, _, started)| now.duration_since(*started))
                    .max()
                    .unwrap_or_default();
                out.push((uid, timeout.saturating_sub(oldest).max(SLOW_ATTEMPT)));
            }
        }
        for (uid, park) in &out {
            self.parked.insert(*uid, now + *park);
        }
        out
    }
}

fn after(now: Timestamp, d: Duration) -> Timestamp {
    Timestamp::from_millis(now.millis() + d.as_millis() as i64)
}

pub(super) async fn run(engine: Arc<Engine>, shutdown: CancellationToken, grace: Duration) {
    let (done_tx, done_rx) = mpsc::channel(4 * CLAIM_BATCH);
    let recorder = tokio::spawn(record::run(engine.clone(), done_rx));
    let mut tasks: JoinSet<i64> = JoinSet::new();
    let mut load = Load::default();
    let mut claims = 0u64;
    let max = engine.config.max_in_flight.max(1) as usize;
    let per_endpoint = engine.config.max_in_flight_per_endpoint.max(1);

    while !shutdown.is_cancelled() {
        while let Some(done) = tasks.try_join_next() {
            if let Ok(id) = done {
                load.finish(id);
            }
        }
        let free = max.saturating_sub(tasks.len()).min(CLAIM_BATCH);
        let mut more = false;
        if free > 0 {
            claims += 1;
            let token = format!("{}.{claims}", engine.node_id);
            let now = Timestamp::now();
            let request = ClaimRequest {
                now,
                lease_until: after(now, engine.lease()),
                limit: free as u32,
                per_endpoint,
                in_flight: load.snapshot(),
                token: token.clone(),
            };
            match engine.store.claim_due(&request).await {
                Ok(claimed) => {
                    more = claimed.len() == free;
                    for c in claimed {
                        load.start(&c, &token);
                        let (engine, tx, token) = (engine.clone(), done_tx.clone(), token.clone());
                        tasks.spawn(async move {
                            let record = dispatch::attempt(&engine, &c, &token).await;
                            engine.metrics.observe_attempt(&record, c.event_created);
                            let _ = tx.send(record).await;
                            c.delivery_id
                        });
                    }
                    engine.metrics.set_in_flight(tasks.len());
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
        if more {
            continue;
        }
        let now = Timestamp::now();
        for (uid, park) in load.slow_saturated(per_endpoint, engine.attempt_timeout) {
            tracing::info!(
                endpoint.uid = uid,
                park_ms = park.as_millis() as u64,
                "endpoint is slow; parking its queue"
            );
            if let Err(e) = engine.store.park_endpoint(uid, now, after(now, park)).await {
                tracing::warn!(error = crate::error::chain(&e), "cannot park endpoint");
            }
        }
        let poll = engine.config.poll_interval;
        let wait = match engine.store.next_due().await {
            Ok(Some(due)) => Duration::from_millis(
                (due.millis() - now.millis()).clamp(0, poll.as_millis() as i64) as u64,
            ),
            _ => poll,
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = engine.wake.notified() => {}
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                if let Ok(id) = done {
                    load.finish(id);
                }
            }
            _ = tokio::time::sleep(wait) => {}
        }
    }
    drain(&engine, tasks, load, grace).await;
    drop(done_tx);
    let _ = recorder.await;
}

/// Lets attempts in flight finish within `grace`, then releases what is left so that it
/// is due again at once.
async fn drain(engine: &Engine, mut tasks: JoinSet<i64>, mut load: Load, grace: Duration) {
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
    let mut by_token: HashMap<String, Vec<i64>> = HashMap::new();
    for (id, (token, _, _)) in load.deliveries {
        by_token.entry(token).or_default().push(id);
    }
    let now = Timestamp::now();
    for (token, ids) in by_token {
        if let Err(e) = engine.store.release(&token, &ids, now).await {
            tracing::warn!(
                error = crate::error::chain(&e),
                "cannot release deliveries; they are retried when their leases end"
            );
        }
    }
}
