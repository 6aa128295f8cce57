//! How fast this process sends to one endpoint, from what the endpoint's answers said:
//! held back after an overloaded answer (`429`, `502`, `503`, `504`) for its
//! `Retry-After` (capped), with the attempts in flight at once halved and then grown back
//! by one per success; and a circuit breaker: after `POSTHORN_CIRCUIT_FAILURES` failed
//! attempts in a row, one probe at a time, every `POSTHORN_CIRCUIT_PROBE_INTERVAL`, until
//! one succeeds.
//!
//! Deliveries that must wait longer than a moment are handed back to the store, due
//! when the wait ends, and the endpoint's other due deliveries are moved there too, so
//! they wait in the queue rather than in this process.

use std::time::{Duration, Instant};

use crate::domain::Timestamp;
use crate::store::{AttemptRecord, Outcome, Signal};

/// One endpoint's pace here.
#[derive(Debug, Clone)]
pub(super) struct Pace {
    /// Attempts in flight at once.
    limit: u32,
    paused_until: Option<Instant>,
    /// Failed attempts in a row.
    failures: u32,
    /// Circuit open: when the next probe may go.
    probe_at: Option<Instant>,
}

/// What a worker may do next with its lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Gate {
    Go,
    /// Enough attempts are in flight: this worker ends.
    Exit,
    /// Everything waiting goes back to the store until then, for this reason.
    HandBack(Instant, &'static str),
}

/// The settings that shape a pace.
#[derive(Debug, Clone, Copy)]
pub(super) struct PaceRules {
    pub per_endpoint: u32,
    /// 0: no circuit breaker.
    pub circuit_failures: u32,
    pub probe_interval: Duration,
}

impl Pace {
    pub fn new(rules: &PaceRules) -> Self {
        Self {
            limit: rules.per_endpoint,
            paused_until: None,
            failures: 0,
            probe_at: None,
        }
    }

    /// Whether it is as if nothing had been said (and can be forgotten).
    pub fn is_settled(&self, rules: &PaceRules, now: Instant) -> bool {
        self.limit >= rules.per_endpoint
            && self.failures == 0
            && self.paused_until.is_none_or(|u| u <= now)
    }

    /// Its state for people (one of `telemetry::FLOW_STATES`), `None` when settled.
    pub fn state(&self, rules: &PaceRules, now: Instant) -> Option<&'static str> {
        if self.paused_until.is_some_and(|u| u > now) {
            Some("paused")
        } else if self.circuit_open(rules) {
            Some("circuit_open")
        } else if self.limit < rules.per_endpoint {
            Some("paced")
        } else {
            None
        }
    }

    pub fn circuit_open(&self, rules: &PaceRules) -> bool {
        rules.circuit_failures > 0 && self.failures >= rules.circuit_failures
    }

    /// Takes in an attempt's outcome; returns true when it closed an open circuit.
    pub fn observe(&mut self, record: &AttemptRecord, rules: &PaceRules, now: Instant) -> bool {
        if record.attempt_no.is_none() {
            return false;
        }
        if record.outcome == Outcome::Delivered {
            let was_open = self.circuit_open(rules);
            self.failures = 0;
            self.probe_at = None;
            self.limit = (self.limit + 1).min(rules.per_endpoint);
            return was_open;
        }
        self.failures = self.failures.saturating_add(1);
        if let Some(Signal::Overloaded { until }) = record.signal {
            let wait = Duration::from_millis(
                u64::try_from(until.millis() - Timestamp::now().millis()).unwrap_or(0),
            );
            let until = now + wait;
            self.paused_until = Some(self.paused_until.map_or(until, |u| u.max(until)));
            self.limit = (self.limit / 2).max(1);
        }
        if self.circuit_open(rules) {
            self.probe_at = Some(now + rules.probe_interval);
        }
        false
    }

    /// What a worker may do, with `running` attempts of the lane in flight.
    pub fn gate(&self, rules: &PaceRules, now: Instant, running: usize) -> Gate {
        if let Some(until) = self.paused_until.filter(|u| *u > now) {
            return Gate::HandBack(until, "pause");
        }
        if self.circuit_open(rules) {
            if running > 0 {
                return Gate::Exit;
            }
            if let Some(at) = self.probe_at.filter(|at| *at > now) {
                return Gate::HandBack(at, "circuit");
            }
            return Gate::Go;
        }
        if running as u32 >= self.limit {
            return Gate::Exit;
        }
        Gate::Go
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::EndpointUid;

    const RULES: PaceRules = PaceRules {
        per_endpoint: 8,
        circuit_failures: 3,
        probe_interval: Duration::from_secs(5),
    };

    fn record(outcome: Outcome, signal: Option<Signal>) -> AttemptRecord {
        AttemptRecord {
            signal,
            ..AttemptRecord::sample(EndpointUid(1), Timestamp::now(), outcome)
        }
    }

    #[test]
    fn an_overloaded_answer_pauses_then_the_pace_grows_back() {
        let now = Instant::now();
        let mut pace = Pace::new(&RULES);
        let until = Timestamp::now().plus(Duration::from_secs(2));
        pace.observe(
            &record(Outcome::Failed, Some(Signal::Overloaded { until })),
            &RULES,
            now,
        );
        match pace.gate(&RULES, now, 0) {
            Gate::HandBack(at, "pause") => assert!(at > now + Duration::from_millis(1500)),
            other => panic!("{other:?}"),
        }
        let later = now + Duration::from_secs(3);
        assert_eq!(pace.gate(&RULES, later, 3), Gate::Go);
        assert_eq!(pace.gate(&RULES, later, 4), Gate::Exit, "halved");
        pace.observe(&record(Outcome::Delivered, None), &RULES, later);
        assert_eq!(
            pace.gate(&RULES, later, 4),
            Gate::Go,
            "one more per success"
        );
    }

    #[test]
    fn failures_in_a_row_open_the_circuit_and_a_success_closes_it() {
        let now = Instant::now();
        let mut pace = Pace::new(&RULES);
        let failed = record(
            Outcome::Retry {
                at: Timestamp::now(),
            },
            None,
        );
        for _ in 0..3 {
            assert!(!pace.observe(&failed, &RULES, now));
        }
        assert!(pace.circuit_open(&RULES));
        assert_eq!(
            pace.gate(&RULES, now, 0),
            Gate::HandBack(now + RULES.probe_interval, "circuit")
        );
        let probe_time = now + RULES.probe_interval;
        assert_eq!(pace.gate(&RULES, probe_time, 0), Gate::Go, "one probe");
        assert_eq!(pace.gate(&RULES, probe_time, 1), Gate::Exit, "only one");
        assert!(pace.observe(&record(Outcome::Delivered, None), &RULES, probe_time));
        assert_eq!(pace.gate(&RULES, probe_time, 7), Gate::Go);
        assert!(pace.is_settled(&RULES, probe_time));
    }
}
