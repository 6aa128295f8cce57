//! The application state every request handler gets.

use std::sync::Arc;

use crate::config::ServeConfig;
use crate::crypto::MasterKey;
use crate::delivery::Engine;
use crate::http::ratelimit::{FailedAuthLimiter, RateLimiter};
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
    /// The delivery engine (its HTTP client also sends test events).
    pub engine: Arc<Engine>,
    /// Commits publishes in groups.
    pub publisher: Publisher,
}
