//! The flow-control fields of an endpoint (`rateLimit`, `rateLimitBurst`, `ordering`):
//! how they are read on Create and Update and shown.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{ApiError, ApiResult};
use crate::store::{EndpointRecord, FlowConfig, FlowPatch};

/// Highest `rateLimit` and `rateLimitBurst` accepted.
pub const MAX_RATE: u32 = 10_000;

/// In what order an endpoint gets its deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Ordering {
    /// As fast as they can go, several at once (the default).
    Unordered,
    /// One at a time, in publish order; a failing head holds the rest.
    Fifo,
}

/// The flow fields of a Create or Update body.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FlowInput {
    /// Deliveries per second, at most, counted across all nodes (1 to 10000). On
    /// Update, `0` removes the limit.
    #[schema(minimum = 0, maximum = 10000)]
    pub rate_limit: Option<u32>,
    /// How many may go at once after a quiet spell (default 1; needs `rateLimit`). On
    /// Update, `0` goes back to the default.
    #[schema(minimum = 0, maximum = 10000)]
    pub rate_limit_burst: Option<u32>,
    pub ordering: Option<Ordering>,
}

fn bounded(field: &str, n: u32) -> ApiResult<u32> {
    if n > MAX_RATE {
        return Err(ApiError::invalid(
            field,
            format!("must be at most {MAX_RATE}"),
        ));
    }
    Ok(n)
}

impl FlowInput {
    /// The settings of a new endpoint: a limit and a burst are positive.
    pub fn create(&self) -> ApiResult<FlowConfig> {
        let positive = |field: &str, n: Option<u32>| match n {
            Some(0) => Err(ApiError::invalid(field, "must be a positive integer")),
            Some(n) => bounded(field, n).map(Some),
            None => Ok(None),
        };
        let config = FlowConfig {
            rate_limit: positive("rateLimit", self.rate_limit)?,
            burst: positive("rateLimitBurst", self.rate_limit_burst)?,
            fifo: self.ordering == Some(Ordering::Fifo),
        };
        if config.burst.is_some() && config.rate_limit.is_none() {
            return Err(ApiError::invalid("rateLimitBurst", "needs a rateLimit"));
        }
        Ok(config)
    }

    /// An Update: absent leaves a field as it is, `0` removes it.
    pub fn patch(&self, current: FlowConfig) -> ApiResult<FlowPatch> {
        let zero_removes = |field: &str, n: Option<u32>| match n {
            Some(0) => Ok(Some(None)),
            Some(n) => bounded(field, n).map(|n| Some(Some(n))),
            None => Ok(None),
        };
        let patch = FlowPatch {
            rate_limit: zero_removes("rateLimit", self.rate_limit)?,
            burst: zero_removes("rateLimitBurst", self.rate_limit_burst)?,
            fifo: self.ordering.map(|o| o == Ordering::Fifo),
        };
        let after = patch.apply(current);
        if after.burst.is_some() && after.rate_limit.is_none() {
            return Err(ApiError::invalid("rateLimitBurst", "needs a rateLimit"));
        }
        Ok(patch)
    }
}

/// The flow fields of an endpoint as shown, and what its flow looks like now.
#[derive(Debug, Default, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FlowView {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit_burst: Option<u32>,
    /// Shown for FIFO endpoints only (`unordered` is the default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ordering: Option<Ordering>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flow: Option<FlowState>,
}

/// What an endpoint's deliveries are waiting on now (omitted when nothing).
#[derive(Debug, Default, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FlowState {
    /// Deliveries waiting in its flow queue for their turn (rate limit, FIFO).
    pub queued: u64,
    /// Held back after an overloaded answer (429, 502, 503, 504) until then.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub paused_until: Option<crate::domain::Timestamp>,
    /// Every attempt has failed since then (after POSTHORN_CIRCUIT_FAILURES in a row,
    /// its deliveries wait on one probe at a time).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub failing_since: Option<crate::domain::Timestamp>,
    /// FIFO: the delivery out now (its `dlv_...` id, as in the delivery log).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fifo_head: Option<String>,
}

impl FlowView {
    pub fn of(r: &EndpointRecord, ids: &crate::domain::PublicIds) -> Self {
        let s = &r.standing;
        let now = crate::domain::Timestamp::now();
        let paused_until = s.paused_until.filter(|u| *u > now);
        let state = FlowState {
            queued: s.queued,
            paused_until,
            failing_since: s.failing_since,
            fifo_head: s.fifo_head.filter(|_| r.flow.fifo).map(|d| ids.delivery(d)),
        };
        let any = state.queued > 0
            || state.paused_until.is_some()
            || state.failing_since.is_some()
            || state.fifo_head.is_some();
        Self {
            rate_limit: r.flow.rate_limit,
            rate_limit_burst: r.flow.burst,
            ordering: r.flow.fifo.then_some(Ordering::Fifo),
            flow: any.then_some(state),
        }
    }
}
