//! Bounds on fan-out: how much one org's requests make posthorn store.
//!
//! Policy, per org and per request (never only globally):
//! - an org has at most `POSTHORN_MAX_ENDPOINTS_PER_ORG` live endpoints, checked in the
//!   transaction that creates one (`Admin::create_endpoint_within`);
//! - one publish or batch makes at most `POSTHORN_MAX_DELIVERIES_PER_REQUEST`
//!   deliveries, counted from the org's routes before anything is stored
//!   (`Queue::fan_out`); past it the request is answered 422 `limit_exceeded` and
//!   nothing is stored;
//! - at most twice that many deliveries of one org wait for a commit or are in one at
//!   once (one group commits while the next gathers, so a fanning-out org still keeps
//!   the writer busy):
//!   a request takes its count from its org's semaphore (first come, first served)
//!   before it reaches the publisher, and gives it back when its commit has ended
//!   (also when its client has gone), so an org's big fan-outs queue behind each
//!   other, never ahead of other orgs' publishes;
//! - one commit holds at most that many deliveries (`publisher.rs`): a fan-out that
//!   does not fit the group gathered so far goes in a commit of its own, so a small
//!   publish of another org never shares a transaction with more than that.
//!
//! The default bound (20,000) is one commit of well under a second on SQLite on a small
//! machine; another org's publish waits behind at most the two commits one org that
//! fans out as much as it may can have queued.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::app::AppState;
use crate::config::FanOutConfig;
use crate::domain::OrgId;
use crate::error::{ApiError, ApiResult};
use crate::store::{DynStore, NewEvent, Published};

/// The per-org budgets of deliveries waiting for or in a commit.
pub struct FanOut {
    most: u32,
    orgs: Mutex<HashMap<OrgId, Arc<Semaphore>>>,
}

/// A request's place in its org's budget: its deliveries, held until its commit ended.
pub struct Admitted {
    /// The deliveries the request makes (as counted before it was stored).
    pub deliveries: u64,
    #[expect(
        dead_code,
        reason = "held only to be dropped: that gives the room back"
    )]
    hold: Option<Hold>,
}

struct Hold {
    permit: Option<OwnedSemaphorePermit>,
    org: OrgId,
    budget: Arc<Semaphore>,
    fan_out: Arc<FanOut>,
}

impl Admitted {
    /// A place that holds nothing: for a request that makes no delivery, or a publish
    /// not counted (nothing calls the publisher so today but the API, which counts).
    pub fn uncounted() -> Self {
        Self {
            deliveries: 0,
            hold: None,
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        drop(self.permit.take());
        // The org's budget goes once nothing of it is held or waited for: the map holds
        // only orgs publishing now.
        let mut orgs = self.fan_out.lock();
        if Arc::strong_count(&self.budget) == 2
            && orgs
                .get(&self.org)
                .is_some_and(|b| Arc::ptr_eq(b, &self.budget))
        {
            orgs.remove(&self.org);
        }
    }
}

impl FanOut {
    pub fn new(config: &FanOutConfig) -> Arc<Self> {
        Arc::new(Self {
            most: config.max_deliveries_per_request.max(1),
            orgs: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<OrgId, Arc<Semaphore>>> {
        self.orgs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts the deliveries `events` of `org` make, refuses a request over the bound,
    /// and waits for room in the org's budget.
    pub async fn admit(
        self: &Arc<Self>,
        store: &DynStore,
        org: &OrgId,
        events: &[NewEvent],
    ) -> ApiResult<Admitted> {
        let mut per_route: HashMap<(String, String), u64> = HashMap::new();
        for ev in events {
            let route = (
                ev.event_name.clone(),
                ev.subcategory.clone().unwrap_or_default(),
            );
            *per_route.entry(route).or_default() += 1;
        }
        let routes: Vec<(String, String)> = per_route.keys().cloned().collect();
        let counts = store.fan_out(org, &routes).await?;
        let deliveries = routes
            .iter()
            .zip(counts)
            .map(|(route, n)| per_route[route].saturating_mul(n))
            .fold(0u64, u64::saturating_add);
        let within = u32::try_from(deliveries)
            .ok()
            .filter(|n| *n <= self.most)
            .ok_or_else(|| {
                ApiError::LimitExceeded(format!(
                    "this request would make {deliveries} deliveries ({} event(s), each to the endpoints subscribed to it); one request may make at most {} (POSTHORN_MAX_DELIVERIES_PER_REQUEST): publish fewer events at once; nothing was stored",
                    events.len(),
                    self.most
                ))
            })?;
        if within == 0 {
            return Ok(Admitted::uncounted());
        }
        let budget = self
            .lock()
            .entry(org.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(2 * self.most as usize)))
            .clone();
        let mut hold = Hold {
            permit: None,
            org: org.clone(),
            budget: budget.clone(),
            fan_out: self.clone(),
        };
        hold.permit = Some(
            budget
                .acquire_many_owned(within)
                .await
                .map_err(|e| ApiError::Internal(e.into()))?,
        );
        Ok(Admitted {
            deliveries,
            hold: Some(hold),
        })
    }
}

/// Publishes the validated `events` of `org` within the bounds above; answers once they
/// are durable.
pub async fn publish(
    state: &AppState,
    org: &OrgId,
    events: Vec<NewEvent>,
) -> ApiResult<Vec<Published>> {
    let admitted = state.fan_out.admit(&state.store, org, &events).await?;
    Ok(state.publisher.publish_admitted(events, admitted).await?)
}
