//! What this process holds: the room it has for deliveries ([`Budget`], shared with
//! publishes that hand their deliveries straight over), and the dispatcher's view of
//! them ([`Load`]: waiting per endpoint, in flight, parked).

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::domain::{ClaimToken, DeliveryId, EndpointUid};
use crate::store::{Claimed, LeaseBudget};

/// Room for deliveries held here (waiting or in flight), in all and per endpoint: a
/// publish leases its deliveries to this process only while there is room, and a claim
/// asks for no more than the room left.
pub struct Budget {
    total: usize,
    per_endpoint: u32,
    held: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    total: usize,
    by_endpoint: HashMap<EndpointUid, u32>,
}

impl Budget {
    pub fn new(total: usize, per_endpoint: u32) -> Self {
        Self {
            total,
            per_endpoint,
            held: Mutex::default(),
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn per_endpoint(&self) -> u32 {
        self.per_endpoint
    }

    /// Takes room whether or not there is any (for what a claim returned).
    pub fn take(&self, endpoint: EndpointUid) {
        let mut held = self.held();
        held.total += 1;
        *held.by_endpoint.entry(endpoint).or_default() += 1;
    }

    /// The room left in all, and what `endpoint` holds.
    pub fn room_and_held(&self, endpoint: EndpointUid) -> (usize, u32) {
        let held = self.held();
        (
            self.total.saturating_sub(held.total),
            held.by_endpoint.get(&endpoint).copied().unwrap_or(0),
        )
    }

    /// Whether some endpoint holds all the room it may.
    pub fn any_full(&self) -> bool {
        self.held()
            .by_endpoint
            .values()
            .any(|n| *n >= self.per_endpoint)
    }

    /// The room left, and what each endpoint holds.
    pub fn snapshot(&self) -> (usize, Vec<(EndpointUid, u32)>) {
        let held = self.held();
        let mut by_endpoint: Vec<_> = held.by_endpoint.iter().map(|(u, n)| (*u, *n)).collect();
        by_endpoint.sort_unstable();
        (self.total.saturating_sub(held.total), by_endpoint)
    }
}

impl LeaseBudget for Budget {
    fn try_take(&self, endpoint: EndpointUid) -> bool {
        let mut held = self.held();
        let here = held.by_endpoint.get(&endpoint).copied().unwrap_or(0);
        if held.total >= self.total || here >= self.per_endpoint {
            return false;
        }
        held.total += 1;
        held.by_endpoint.insert(endpoint, here + 1);
        true
    }

    fn give_back(&self, endpoint: EndpointUid) {
        let mut held = self.held();
        held.total = held.total.saturating_sub(1);
        if let Some(n) = held.by_endpoint.get_mut(&endpoint) {
            *n -= 1;
            if *n == 0 {
                held.by_endpoint.remove(&endpoint);
            }
        }
    }
}

/// A delivery leased here, waiting for a slot of its endpoint.
pub(super) struct Waiting {
    pub claimed: Claimed,
    pub since: Instant,
}

/// An attempt in flight.
pub(super) struct Running {
    pub endpoint: EndpointUid,
    pub token: ClaimToken,
    pub started: Instant,
}

/// An attempt may start while this share of the slots is taken by parked endpoints.
const PARKED_SHARE: usize = 4;
/// An endpoint whose slots are all taken by attempts older than this is parked.
pub(super) const SLOW_ATTEMPT: Duration = Duration::from_secs(1);

/// The dispatcher's state: what waits, what runs, which endpoints are parked.
pub(super) struct Load {
    /// Attempts in flight at once in this process, and to one endpoint.
    max: usize,
    per_endpoint: u32,
    waiting: HashMap<EndpointUid, VecDeque<Waiting>>,
    running: HashMap<DeliveryId, Running>,
    running_by_endpoint: HashMap<EndpointUid, u32>,
    /// Endpoints whose attempts hang, until when.
    parked: HashMap<EndpointUid, Instant>,
}

impl Load {
    pub fn new(max: usize, per_endpoint: u32) -> Self {
        Self {
            max,
            per_endpoint,
            waiting: HashMap::new(),
            running: HashMap::new(),
            running_by_endpoint: HashMap::new(),
            parked: HashMap::new(),
        }
    }

    pub fn in_flight(&self) -> usize {
        self.running.len()
    }

    pub fn is_idle(&self) -> bool {
        self.running.is_empty() && self.waiting.is_empty()
    }

    pub fn add(&mut self, claimed: Claimed, since: Instant) {
        self.waiting
            .entry(claimed.endpoint.uid)
            .or_default()
            .push_back(Waiting { claimed, since });
    }

    /// Takes the waiting deliveries that may start now: while there are free slots and
    /// their endpoint has a free slot; endpoints parked as slow share at most a quarter
    /// of the slots, so that many hanging endpoints cannot take every slot from the
    /// healthy ones. A delivery that waited longer than `max_wait` is returned in
    /// `expired` instead: its lease could end before its attempt does.
    pub fn startable(&mut self, max_wait: Duration) -> (Vec<Claimed>, Vec<Claimed>) {
        let now = Instant::now();
        self.parked.retain(|_, until| *until > now);
        let mut room = self.max.saturating_sub(self.running.len());
        let slow_budget = (self.max / PARKED_SHARE).max(1);
        let mut slow_running = self
            .running
            .values()
            .filter(|r| self.parked.contains_key(&r.endpoint))
            .count();
        let (mut start, mut expired) = (Vec::new(), Vec::new());
        for (uid, queue) in self.waiting.iter_mut() {
            let running = self.running_by_endpoint.entry(*uid).or_default();
            let slow = self.parked.contains_key(uid);
            while let Some(front) = queue.front() {
                if now.duration_since(front.since) > max_wait {
                    expired.extend(queue.pop_front().map(|w| w.claimed));
                    continue;
                }
                if room == 0
                    || *running >= self.per_endpoint
                    || (slow && slow_running >= slow_budget)
                {
                    break;
                }
                let Some(w) = queue.pop_front() else { break };
                *running += 1;
                room -= 1;
                slow_running += usize::from(slow);
                self.running.insert(
                    w.claimed.delivery,
                    Running {
                        endpoint: *uid,
                        token: w.claimed.token,
                        started: now,
                    },
                );
                start.push(w.claimed);
            }
        }
        self.waiting.retain(|_, q| !q.is_empty());
        self.running_by_endpoint.retain(|_, n| *n > 0);
        (start, expired)
    }

    /// Marks an attempt done; returns its endpoint.
    pub fn finish(&mut self, delivery: DeliveryId) -> Option<EndpointUid> {
        let run = self.running.remove(&delivery)?;
        if let Some(n) = self.running_by_endpoint.get_mut(&run.endpoint) {
            *n -= 1;
            if *n == 0 {
                self.running_by_endpoint.remove(&run.endpoint);
            }
        }
        Some(run.endpoint)
    }

    /// Endpoints whose every slot is held by a slow attempt, with how long to park them
    /// (until the oldest of those attempts must have ended).
    pub fn slow_saturated(&mut self, timeout: Duration) -> Vec<(EndpointUid, Duration)> {
        let now = Instant::now();
        let mut ages: HashMap<EndpointUid, (Duration, Duration)> = HashMap::new();
        for r in self.running.values() {
            let age = now.duration_since(r.started);
            let e = ages.entry(r.endpoint).or_insert((age, age));
            e.0 = e.0.min(age);
            e.1 = e.1.max(age);
        }
        let mut out = Vec::new();
        for (uid, (newest, oldest)) in ages {
            let full =
                self.running_by_endpoint.get(&uid).copied().unwrap_or(0) >= self.per_endpoint;
            if full && newest >= SLOW_ATTEMPT && !self.parked.contains_key(&uid) {
                let park = timeout.saturating_sub(oldest).max(SLOW_ATTEMPT);
                self.parked.insert(uid, now + park);
                out.push((uid, park));
            }
        }
        out
    }

    /// Everything still held, by claim token (to release at shutdown): waiting
    /// deliveries, and attempts that did not finish.
    pub fn held_by_token(self) -> HashMap<ClaimToken, Vec<(DeliveryId, EndpointUid)>> {
        let mut by_token: HashMap<ClaimToken, Vec<(DeliveryId, EndpointUid)>> = HashMap::new();
        for (id, r) in self.running {
            by_token.entry(r.token).or_default().push((id, r.endpoint));
        }
        for w in self.waiting.into_values().flatten() {
            by_token
                .entry(w.claimed.token)
                .or_default()
                .push((w.claimed.delivery, w.claimed.endpoint.uid));
        }
        by_token
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_holds_per_endpoint_and_in_all() {
        let b = Budget::new(3, 2);
        let (e1, e2) = (EndpointUid(1), EndpointUid(2));
        assert!(b.try_take(e1) && b.try_take(e1));
        assert!(!b.try_take(e1), "per endpoint");
        assert!(b.try_take(e2));
        assert!(!b.try_take(EndpointUid(3)), "in all");
        b.give_back(e1);
        assert!(b.try_take(EndpointUid(3)));
        assert_eq!(b.snapshot().0, 0);
    }
}
