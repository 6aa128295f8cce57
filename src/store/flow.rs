//! Flow queues: what both backends apply alike to the deliveries of an endpoint with a
//! rate limit or FIFO order.
//!
//! Such deliveries are stored *held*: out of the due queue, in their endpoint's flow
//! queue (publish order, `deliveries_held`). The endpoint row says when to look at the
//! queue next (`flow_next_ms`). Each claim first pumps the queues whose time has come,
//! under a lock of the endpoint row (so nodes sharing a PostgreSQL database count
//! together): a FIFO endpoint releases its head once nothing of it is out, a rate-limited
//! one as many as its limiter grants within [`HORIZON_MS`], each with the instant it may
//! be sent. A released delivery is leased like any claimed one; an attempt that ends in
//! a retry puts it back in the queue (held, not before the retry time), and a FIFO head's
//! outcome tells the queue to look again.
//!
//! An endpoint that is disabled or deleted sends nothing more: what waits in its queue
//! is failed at once ([`DROPPED`]), in the transaction that switches it off (a Delete or
//! an Update), or by the next pump when something else did (a `410`, auto-disable). A
//! backlog is never drained at the endpoint's rate only to be failed one by one.
//!
//! The limiter is GCRA (a token bucket kept as one timestamp, the theoretical arrival
//! time): with limit `r` and burst `b`, sends are spaced `1/r` apart and at most `b`
//! go at once after a quiet spell.

use super::model::FlowConfig;

/// How far ahead a pump grants slots. Released deliveries wait at most this long in the
/// dispatcher for their slot. A queue is looked at again when half of it is left: one
/// second, the default poll interval, so a busy dispatcher (which claims on its poll
/// timer) pumps again before the slots run out.
pub const HORIZON_MS: i64 = 2000;

/// Why a held delivery of an endpoint that was switched off failed (the words of the
/// engine's for one that came due meanwhile).
pub const DROPPED: &str = "endpoint was disabled or deleted before delivery";

/// How many endpoints one claim pumps at most.
pub const PUMP_BATCH: i64 = 64;

/// When an endpoint has no room left in the claiming process, how soon its queue is
/// looked at again (by any node).
const FULL_RETRY_MS: i64 = 100;

/// An endpoint whose flow queue is due to be looked at, as its row says.
#[derive(Debug, Clone, serde::Deserialize, sqlx::FromRow)]
pub(crate) struct FlowRow {
    pub uid: i64,
    pub rate_limit: Option<i32>,
    pub rate_burst: Option<i32>,
    pub fifo: bool,
    pub flow_tat_us: i64,
    /// FIFO: the delivery out now, if it is still out (pending and not held).
    pub busy: Option<i64>,
    pub paused_until_ms: Option<i64>,
    /// Enabled and not deleted: otherwise its queue is dropped, not pumped.
    pub live: bool,
}

/// The columns of [`FlowRow`] from `endpoints e` (busy only while its delivery is out).
pub(crate) const FLOW_COLUMNS: &str = "e.uid, e.rate_limit, e.rate_burst, e.fifo, e.flow_tat_us, \
    (SELECT b.id FROM deliveries b WHERE b.id = e.flow_busy AND b.state = 'pending' AND NOT b.held) AS busy, \
    e.paused_until_ms, (e.enabled AND e.deleted_ms IS NULL) AS live";

impl FlowRow {
    fn config(&self) -> FlowConfig {
        super::rows::flow(self.rate_limit, self.rate_burst, self.fifo)
    }

    /// Which held deliveries to look at now.
    pub fn wanted(&self, now_ms: i64, room: u32) -> Wanted {
        if let Some(until) = self.paused_until_ms.filter(|u| *u > now_ms) {
            return Wanted::Nothing {
                look_at: Some(until),
            };
        }
        let config = self.config();
        if config.fifo {
            if self.busy.is_some() || room == 0 {
                // Its outcome (or room coming back) makes the queue looked at again.
                return Wanted::Nothing {
                    look_at: (room == 0).then_some(now_ms + FULL_RETRY_MS),
                };
            }
            return Wanted::Head;
        }
        let most = match config.rate_limit {
            // Enough for the horizon and a burst.
            Some(r) => (i64::from(r) * HORIZON_MS / 1000 + i64::from(config.burst.unwrap_or(1)))
                .min(i64::from(room)),
            None => i64::from(room),
        };
        if most <= 0 {
            return Wanted::Nothing {
                look_at: Some(now_ms + FULL_RETRY_MS),
            };
        }
        Wanted::Due(most)
    }

    /// What to release of `candidates` (held deliveries as [`Self::wanted`] asked for
    /// them, in id order: `(id, not before)`), and what becomes of the endpoint. `full`:
    /// there were as many as asked for, so more may follow; `later`: otherwise, the
    /// earliest time a held delivery not among them may go.
    pub fn plan(
        &self,
        now_ms: i64,
        candidates: &[(i64, i64)],
        full: bool,
        later: Option<i64>,
    ) -> Plan {
        let config = self.config();
        let mut plan = Plan {
            release: Vec::new(),
            tat_us: self.flow_tat_us,
            busy: None,
            look_at: None,
        };
        let mut waiting = None;
        for &(id, not_before) in candidates {
            if not_before > now_ms {
                // A FIFO head waiting for its retry holds the queue.
                waiting = Some(waiting.map_or(not_before, |w: i64| w.min(not_before)));
                if config.fifo {
                    break;
                }
                continue;
            }
            let slot = match limiter(&config) {
                None => None,
                Some((interval, tolerance)) => {
                    let now_us = now_ms * 1000;
                    let send_us = now_us.max(plan.tat_us - tolerance);
                    if send_us > now_us + HORIZON_MS * 1000 {
                        // No slot within the horizon: look again when half of it is left.
                        waiting = Some(send_us / 1000 - HORIZON_MS / 2);
                        break;
                    }
                    plan.tat_us = plan.tat_us.max(send_us) + interval;
                    Some((send_us + 999) / 1000)
                }
            };
            plan.release.push((id, slot.filter(|s| *s > now_ms)));
            if config.fifo {
                plan.busy = Some(id);
                break;
            }
        }
        if plan.busy.is_none() {
            plan.look_at = match waiting {
                Some(w) => Some(later.map_or(w, |l| l.min(w))),
                // Everything asked for went: there may be more behind it.
                None if full => Some(now_ms.max(self.next_slot_ms(&plan))),
                None => later,
            };
        }
        plan
    }

    /// When the limiter next has a slot within the horizon, less half of it.
    fn next_slot_ms(&self, plan: &Plan) -> i64 {
        limiter(&self.config()).map_or(0, |(_, tolerance)| {
            (plan.tat_us - tolerance) / 1000 - HORIZON_MS / 2
        })
    }
}

/// The limiter's spacing of sends and how far ahead of it a burst may go, in
/// microseconds (the spacing rounded up: the limit is never exceeded).
fn limiter(config: &FlowConfig) -> Option<(i64, i64)> {
    let rate = i64::from(config.rate_limit?);
    let interval = (1_000_000 + rate - 1) / rate;
    Some((
        interval,
        interval * (i64::from(config.burst.unwrap_or(1)) - 1),
    ))
}

/// What a pump reads of an endpoint's flow queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wanted {
    /// Nothing now; look again then (`None`: when something changes).
    Nothing { look_at: Option<i64> },
    /// The first held delivery, due or not (FIFO).
    Head,
    /// Up to this many held deliveries that are due.
    Due(i64),
}

/// What a pump does with one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Deliveries to lease, each with the instant it may be sent (`None`: now).
    pub release: Vec<(i64, Option<i64>)>,
    pub tat_us: i64,
    /// FIFO: the delivery now out.
    pub busy: Option<i64>,
    /// When to look at the queue again (`None`: when something changes).
    pub look_at: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(rate: Option<i32>, burst: Option<i32>, fifo: bool) -> FlowRow {
        FlowRow {
            uid: 1,
            rate_limit: rate,
            rate_burst: burst,
            fifo,
            flow_tat_us: 0,
            busy: None,
            paused_until_ms: None,
            live: true,
        }
    }

    #[test]
    fn a_rate_limit_spaces_slots_within_the_horizon() {
        let r = row(Some(20), None, false);
        let now = 10_000;
        let due: Vec<(i64, i64)> = (1..=60).map(|id| (id, now)).collect();
        let plan = r.plan(now, &due, true, None);
        // One now, then one every 50 ms up to the horizon.
        assert_eq!(plan.release.len(), 41);
        assert_eq!(plan.release[0], (1, None));
        assert_eq!(plan.release[1], (2, Some(now + 50)));
        assert_eq!(plan.release[40], (41, Some(now + HORIZON_MS)));
        let end = now + HORIZON_MS + 50;
        assert_eq!(plan.tat_us, end * 1000);
        assert_eq!(plan.look_at, Some(end - HORIZON_MS / 2));
        // The next pump continues where this one stopped.
        let mut next = r.clone();
        next.flow_tat_us = plan.tat_us;
        let later = next.plan(end - HORIZON_MS / 2, &due[41..], false, None);
        assert_eq!(later.release[0], (42, Some(end)));
    }

    #[test]
    fn a_burst_goes_at_once_after_a_quiet_spell() {
        let r = row(Some(10), Some(5), false);
        let due: Vec<(i64, i64)> = (1..=5).map(|id| (id, 0)).collect();
        let plan = r.plan(50_000, &due, true, None);
        assert!(plan.release.iter().all(|(_, at)| at.is_none()));
    }

    #[test]
    fn a_fifo_queue_releases_its_head_only_and_waits_for_its_retry() {
        let r = row(None, None, true);
        assert_eq!(r.wanted(0, 10), Wanted::Head);
        let plan = r.plan(100, &[(7, 100)], true, None);
        assert_eq!((plan.release, plan.busy), (vec![(7, None)], Some(7)));
        let waiting = r.plan(100, &[(7, 5_000)], true, None);
        assert!(waiting.release.is_empty());
        assert_eq!(waiting.look_at, Some(5_000));
        let mut busy = r.clone();
        busy.busy = Some(7);
        assert_eq!(busy.wanted(0, 10), Wanted::Nothing { look_at: None });
    }

    #[test]
    fn a_paused_endpoint_releases_nothing_until_the_pause_ends() {
        let mut r = row(Some(5), None, false);
        r.paused_until_ms = Some(9_000);
        assert_eq!(
            r.wanted(1_000, 10),
            Wanted::Nothing {
                look_at: Some(9_000)
            }
        );
    }
}
