//! The delivery engine: claims due deliveries from the store (the queue), makes one
//! attempt each, and records the outcomes.
//!
//! Policy: at-least-once. Nothing is marked delivered before its 2xx; a claim is a
//! lease that expires, so work held by a process that died becomes due again; outcomes
//! are written in batches by one recorder task. A published event wakes the dispatcher
//! at once; polling only finds due retries and expired leases. Concurrency is bounded
//! per process and per endpoint, and an endpoint whose attempts hang is parked so it
//! cannot hold up the others.
//!
//! Files: `claim` (the dispatcher loop), `dispatch` (one attempt), `sign`, `retry`,
//! `client` (HTTP client with the SSRF guard), `record` (the outcome writer),
//! `retention` (pruning of old history).

mod claim;
pub mod client;
pub mod dispatch;
mod record;
mod retention;
pub mod retry;
pub mod sign;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use rand::RngCore;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::DeliveryConfig;
use crate::crypto::MasterKey;
use crate::store::DynStore;
use crate::telemetry::Metrics;
use retry::RetryPolicy;

/// What every attempt needs; shared by the dispatcher and its tasks.
pub struct Engine {
    pub store: DynStore,
    pub master_key: MasterKey,
    pub client: reqwest::Client,
    pub policy: RetryPolicy,
    pub allow_private: bool,
    pub attempt_timeout: Duration,
    pub config: DeliveryConfig,
    pub metrics: Arc<Metrics>,
    /// Notified when new work was queued.
    pub wake: Arc<Notify>,
    /// Names this process's claims.
    pub node_id: String,
}

impl Engine {
    pub fn new(
        store: DynStore,
        master_key: MasterKey,
        config: DeliveryConfig,
        allow_private: bool,
        metrics: Arc<Metrics>,
        wake: Arc<Notify>,
    ) -> anyhow::Result<Self> {
        let policy = RetryPolicy::parse(&config.retry_schedule, config.max_retry_after)?;
        let client = client::build(allow_private, config.max_in_flight_per_endpoint as usize)?;
        let mut id = [0u8; 6];
        rand::thread_rng().fill_bytes(&mut id);
        Ok(Self {
            store,
            master_key,
            client,
            policy,
            allow_private,
            attempt_timeout: config.attempt_timeout,
            config,
            metrics,
            wake,
            node_id: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id),
        })
    }

    /// How long a claim lasts: the attempt timeout and a margin.
    pub fn lease(&self) -> Duration {
        self.attempt_timeout + self.config.lease_margin
    }

    /// Runs the dispatcher until `shutdown`, then gives attempts in flight `grace` to
    /// finish and releases the rest.
    pub fn spawn(self: Arc<Self>, shutdown: CancellationToken, grace: Duration) -> JoinHandle<()> {
        let store = self.store.clone();
        let (wake, stop) = (self.wake.clone(), shutdown.clone());
        tokio::spawn(async move { store.watch(wake, stop).await });
        tokio::spawn(retention::run(self.clone(), shutdown.clone()));
        tokio::spawn(claim::run(self, shutdown, grace))
    }
}
