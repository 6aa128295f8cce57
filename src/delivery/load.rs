//! The room this process has for deliveries ([`Budget`]), shared with publishes that
//! hand their deliveries straight over.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use crate::domain::EndpointUid;
use crate::store::LeaseBudget;

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

    /// Takes room whether or not there is any (for what a claim returned). A delivery of
    /// a flow-queued endpoint (`queued`) counts for its endpoint only: deliveries
    /// waiting for their slot take nothing from the others.
    pub fn take(&self, endpoint: EndpointUid, queued: bool) {
        let mut held = self.held();
        if !queued {
            held.total += 1;
        }
        *held.by_endpoint.entry(endpoint).or_default() += 1;
    }

    /// Gives back what [`Self::take`] took.
    pub fn give_back_taken(&self, endpoint: EndpointUid, queued: bool) {
        let mut held = self.held();
        if !queued {
            held.total = held.total.saturating_sub(1);
        }
        Self::release_one(&mut held, endpoint);
    }

    fn release_one(held: &mut Held, endpoint: EndpointUid) {
        if let Some(n) = held.by_endpoint.get_mut(&endpoint) {
            *n -= 1;
            if *n == 0 {
                held.by_endpoint.remove(&endpoint);
            }
        }
    }

    /// The room left in all, and what `endpoint` holds.
    pub fn room_and_held(&self, endpoint: EndpointUid) -> (usize, u32) {
        let held = self.held();
        (
            self.total.saturating_sub(held.total),
            held.by_endpoint.get(&endpoint).copied().unwrap_or(0),
        )
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
        self.give_back_taken(endpoint, false);
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

    #[test]
    fn deliveries_waiting_for_their_slot_count_for_their_endpoint_only() {
        let b = Budget::new(2, 8);
        let limited = EndpointUid(7);
        for _ in 0..5 {
            b.take(limited, true);
        }
        assert_eq!(b.snapshot(), (2, vec![(limited, 5)]));
        assert!(b.try_take(EndpointUid(1)));
        b.give_back_taken(limited, true);
        assert_eq!(b.snapshot(), (1, vec![(EndpointUid(1), 1), (limited, 4)]));
    }
}
