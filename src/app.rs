//! The application state every request handler gets.

use std::sync::Arc;

use crate::config::ServeConfig;
use crate::crypto::MasterKey;
use crate::delivery::Engine;
use crate::domain::schema::SchemaChecks;
use crate::http::ratelimit::{FailedAuthLimiter, PortalLimits, RateLimiter};
use crate::publisher::Publisher;
use crate::store::DynStore;
use crate::telemetry::Metrics;

/// Everything a request handler needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: DynStore,
    pub master_key: MasterKey,
    pub config: Arc<ServeConfig>,
    pub metrics: Arc<Metrics>,
    pub limiter: Option<Arc<RateLimiter>>,
    /// Failed authentications per client address.
    pub failed_auth: Option<Arc<FailedAuthLimiter>>,
    /// The customer portal's own budgets (never the minting key's).
    pub portal_limits: Arc<PortalLimits>,
    /// The delivery engine (its HTTP client also sends test events).
    pub engine: Arc<Engine>,
    /// Commits publishes in groups.
    pub publisher: Publisher,
    /// The bounds on what one org's publishes make (`fan_out.rs`).
    pub fan_out: Arc<crate::fan_out::FanOut>,
    /// The event streams' own pool, caps per principal and shared live-log polls.
    pub streams: Arc<crate::http::streams::Streams>,
    /// Where checks against event-type schemas run, within their budget.
    pub schema_checks: SchemaChecks,
}
