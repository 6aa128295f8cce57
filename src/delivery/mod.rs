//! The delivery engine: takes deliveries from publishes and claims due ones from the
//! store (the queue), makes one attempt each, and records the outcomes.
//!
//! Policy: at-least-once. Nothing is marked delivered before its 2xx; work held here is
//! leased in the store, so work held by a process that died becomes due again when its
//! lease ends. A publish hands its deliveries straight to this process's dispatcher
//! while there is room for them ([`Intake`]); everything else is claimed when a wake-up
//! says it is due, and polling only finds due retries and expired leases. Concurrency is
//! bounded per process and per endpoint, and an endpoint whose attempts hang is parked
//! so it cannot hold up the others.
//!
//! Files: `dispatcher` (the loop and its one-round `step`), `lanes` (a queue per
//! endpoint and the workers that attempt from it), `load` (the room shared with
//! publishes), `attempt` (one attempt),
//! `client` (HTTP with the SSRF guard), `sign`, `retry`, `recorder` (the outcome
//! writer), `retention` (pruning of old history).

pub mod attempt;
pub mod client;
mod dispatcher;
mod lanes;
mod load;
mod pace;
mod recorder;
mod retention;
pub mod retry;
pub mod sign;
pub mod tunnel;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use dispatcher::{Dispatcher, Step};
pub use load::Budget;

use crate::config::DeliveryConfig;
use crate::crypto::MasterKey;
use crate::domain::{ClaimToken, Timestamp};
use crate::store::{Claimed, DynStore, FreshLease, LeaseBudget};
use crate::telemetry::Metrics;
use retry::RetryPolicy;

/// What every attempt needs; shared by the dispatcher, its tasks and test events.
pub struct Engine {
    pub store: DynStore,
    pub master_key: MasterKey,
    pub client: client::Client,
    pub policy: RetryPolicy,
    pub attempt_timeout: Duration,
    pub config: DeliveryConfig,
    pub metrics: Arc<Metrics>,
    /// `posthorn listen --forward-to` connections to this process.
    pub tunnels: tunnel::Tunnels,
}

impl Engine {
    pub fn new(
        store: DynStore,
        master_key: MasterKey,
        config: DeliveryConfig,
        allow_private: bool,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let policy = RetryPolicy::parse(&config.retry_schedule, config.max_retry_after)?;
        // Endpoints often share a host: keep as many idle connections to one host as
        // attempts may be in flight.
        let client = client::Client::new(!allow_private, config.max_in_flight as usize)?;
        Ok(Self {
            store,
            master_key,
            client,
            policy,
            attempt_timeout: config.attempt_timeout,
            config,
            metrics,
            tunnels: tunnel::Tunnels::default(),
        })
    }

    /// When a lease taken now ends: after the attempt timeout and a margin.
    pub fn lease_until(&self, now: Timestamp) -> Timestamp {
        let lease = self.attempt_timeout + self.config.lease_margin;
        now.plus(lease)
    }

    /// A dispatcher, and the intake through which publishes hand it their deliveries.
    pub fn dispatcher(self: &Arc<Self>) -> (Dispatcher, Intake) {
        let max = self.config.max_in_flight.max(1) as usize;
        let per_endpoint = self.config.max_in_flight_per_endpoint.max(1);
        // Room for as much waiting as in flight, in all and per endpoint.
        let budget = Arc::new(Budget::new(2 * max, 2 * per_endpoint));
        let (handed, rx) = mpsc::unbounded_channel();
        let intake = Intake {
            engine: self.clone(),
            budget: budget.clone(),
            handed,
        };
        (Dispatcher::new(self.clone(), budget, rx), intake)
    }

    /// Runs `dispatcher` and the retention job until `shutdown`; attempts in flight
    /// then get `grace` to finish and the rest is released.
    pub fn spawn(
        self: &Arc<Self>,
        dispatcher: Dispatcher,
        shutdown: CancellationToken,
        grace: Duration,
    ) -> JoinHandle<()> {
        tokio::spawn(retention::run(self.clone(), shutdown.clone()));
        tokio::spawn(dispatcher.run(shutdown, grace))
    }
}

/// Where publishes hand their deliveries: leased to this process while its dispatcher
/// has room for them, so no claim is needed.
#[derive(Clone)]
pub struct Intake {
    engine: Arc<Engine>,
    budget: Arc<Budget>,
    handed: mpsc::UnboundedSender<Vec<Claimed>>,
}

impl Intake {
    /// The lease a publish stores its deliveries under.
    pub fn lease(&self, now: Timestamp) -> FreshLease {
        FreshLease {
            token: ClaimToken::generate(),
            until: self.engine.lease_until(now),
            budget: self.budget.clone(),
        }
    }

    /// Gives the dispatcher what a publish leased to it. If it has stopped, the
    /// deliveries become due when their leases end.
    pub fn hand_over(&self, leased: Vec<Claimed>) {
        if leased.is_empty() {
            return;
        }
        if let Err(mpsc::error::SendError(leased)) = self.handed.send(leased) {
            for c in leased {
                self.budget.give_back(c.endpoint.uid);
            }
        }
    }
}
