//! What crosses the store boundary: records read, changes to write, and the queue's
//! work items. Plain data; the rules live in the code that makes them.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;

use crate::domain::{
    ClaimToken, DeliveryId, DeliveryState, EndpointUid, ErrorClass, EventId, EventSchema,
    EventTypeRef, KeyHash, OrgId, Role, Timestamp,
};

/// One page of a keyset-paginated list: `next_after` is the position to pass back for
/// the next page, absent on the last page.
#[derive(Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_after: Option<i64>,
}

impl<T> Page<T> {
    /// Turns a fetch of `limit + 1` rows into a page: the extra row only proves that
    /// another page exists.
    pub fn from_overfetch(mut items: Vec<T>, limit: u32, position: impl Fn(&T) -> i64) -> Self {
        let next_after = if items.len() > limit as usize {
            items.truncate(limit as usize);
            items.last().map(position)
        } else {
            None
        };
        Self { items, next_after }
    }
}

#[derive(Debug, Clone)]
pub struct ApiKeyRecord {
    pub id: String,
    pub org_id: OrgId,
    pub role: Role,
    pub name: Option<String>,
    pub hash: KeyHash,
    pub created: Timestamp,
    pub revoked: Option<Timestamp>,
}

/// What became of a request to make sure a key exists.
#[derive(Debug, Clone)]
pub enum KeyInsert {
    Inserted,
    /// A key with that hash was there already, as it is (perhaps revoked).
    Existed(ApiKeyRecord),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventTypeRecord {
    pub name: String,
    pub display_name: String,
    pub has_subcategories: bool,
    /// Raised by each change of the schema; events carry it in their envelope.
    pub version: i64,
    pub schema: Option<Arc<EventSchema>>,
    pub example: Option<Value>,
}

impl EventTypeRecord {
    /// A new type at version 1.
    pub fn new(name: String, display_name: String, has_subcategories: bool) -> Self {
        Self {
            name,
            display_name,
            has_subcategories,
            version: 1,
            schema: None,
            example: None,
        }
    }
}

/// A change of an event type: `None` leaves a field as it is; `Some(None)` removes the
/// schema or the example.
#[derive(Debug, Clone, Default)]
pub struct EventTypeChange {
    pub display_name: Option<String>,
    pub schema: Option<Option<Value>>,
    pub example: Option<Option<Value>>,
}

/// One version of an event type, for its sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventTypeVersion {
    pub version: i64,
    pub schema: Option<Value>,
    pub example: Option<Value>,
}

#[derive(Debug, Clone)]
pub struct SubcategoryRecord {
    pub seq: i64,
    pub event_name: String,
    pub token: String,
    pub display_name: Option<String>,
}

#[derive(Debug, Clone)]
pub struct EndpointRecord {
    /// Stable internal id: survives URL changes, so delivery history follows it.
    pub uid: EndpointUid,
    pub org_id: OrgId,
    pub url: String,
    pub enabled: bool,
    pub event_types: Vec<EventTypeRef>,
    pub sealed_secret: Vec<u8>,
    pub created: Timestamp,
    pub modified: Timestamp,
    /// Set when posthorn disabled the endpoint itself (auto-disable).
    pub disabled_reason: Option<String>,
    pub disabled_at: Option<Timestamp>,
    /// The previous secret during a rotation's grace period, and when it ends.
    pub old_secret: Option<(Vec<u8>, Timestamp)>,
    /// Custom headers, sealed (see `MasterKey::seal_headers`); `None` for none.
    pub sealed_headers: Option<Vec<u8>>,
    pub last_success: Option<Timestamp>,
    pub last_failure: Option<Timestamp>,
    pub flow: FlowConfig,
    pub standing: FlowStanding,
}

/// How an endpoint's deliveries are paced: a rate limit, FIFO order. An endpoint with
/// either has a flow queue (see `store/flow.rs`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowConfig {
    /// Deliveries per second.
    pub rate_limit: Option<u32>,
    /// How many may go at once after a quiet spell (default 1).
    pub burst: Option<u32>,
    pub fifo: bool,
}

impl FlowConfig {
    /// Whether its deliveries wait in a flow queue for their turn.
    pub fn queued(&self) -> bool {
        self.rate_limit.is_some() || self.fifo
    }
}

/// What an endpoint's flow looks like now, for people.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlowStanding {
    /// Held back after an overloaded answer (429, 502, 503, 504) until then.
    pub paused_until: Option<Timestamp>,
    /// Every attempt has failed since then.
    pub failing_since: Option<Timestamp>,
    /// The delivery a FIFO endpoint has out now.
    pub fifo_head: Option<DeliveryId>,
    /// Deliveries waiting in its flow queue.
    pub queued: u64,
}

/// A change of an endpoint's flow settings: `None` leaves a field as it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowPatch {
    /// `Some(None)` removes the limit (and its burst).
    pub rate_limit: Option<Option<u32>>,
    pub burst: Option<Option<u32>>,
    pub fifo: Option<bool>,
}

impl FlowPatch {
    pub fn apply(&self, mut to: FlowConfig) -> FlowConfig {
        if let Some(limit) = self.rate_limit {
            to.rate_limit = limit;
            if limit.is_none() {
                to.burst = None;
            }
        }
        if let Some(burst) = self.burst {
            to.burst = burst;
        }
        if let Some(fifo) = self.fifo {
            to.fifo = fifo;
        }
        to
    }
}

#[derive(Debug, Clone)]
pub struct NewEndpoint {
    pub org_id: OrgId,
    pub url: String,
    pub event_types: Vec<EventTypeRef>,
    pub sealed_secret: Vec<u8>,
    pub sealed_headers: Option<Vec<u8>>,
    pub flow: FlowConfig,
    /// False: created disabled (by hand, so with no reason).
    pub enabled: bool,
    pub now: Timestamp,
}

/// An update: `None` leaves a field as it is.
#[derive(Debug, Clone)]
pub struct EndpointPatch {
    pub url: Option<String>,
    pub event_types: Option<Vec<EventTypeRef>>,
    pub sealed_secret: Option<Vec<u8>>,
    /// `Some(None)` removes the custom headers.
    pub sealed_headers: Option<Option<Vec<u8>>>,
    pub flow: FlowPatch,
    pub enabled: bool,
    pub now: Timestamp,
}

/// An event to store with its deliveries.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub id: EventId,
    pub org_id: OrgId,
    pub event_name: String,
    pub subcategory: Option<String>,
    /// The exact request body every delivery sends.
    pub body: Bytes,
    pub idempotency_key: Option<String>,
}

/// The answer to one published event: its id and its fan-out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub id: EventId,
    pub deliveries: u64,
}

/// Who may take fresh deliveries straight from a publish, without a claim: this
/// process's dispatcher, while it has room for them.
pub trait LeaseBudget: Send + Sync {
    /// Takes room for one delivery to `endpoint`; false when there is none.
    fn try_take(&self, endpoint: EndpointUid) -> bool;
    /// Gives back room taken for a delivery that was not stored after all.
    fn give_back(&self, endpoint: EndpointUid);
}

/// Fresh deliveries leased at insert: they are stored claimed (`token`, due again at
/// `until` unless their outcome is recorded) and returned, so no claim is needed.
#[derive(Clone)]
pub struct FreshLease {
    pub token: ClaimToken,
    pub until: Timestamp,
    pub budget: Arc<dyn LeaseBudget>,
}

/// A group of events to store in one transaction.
pub struct PublishBatch {
    pub events: Arc<[NewEvent]>,
    pub now: Timestamp,
    /// A repeated idempotency key within this long answers like its first use.
    pub idempotency_window_ms: i64,
    /// `None`: every delivery is stored due now, for any worker to claim.
    pub lease: Option<FreshLease>,
}

/// What a publish stored.
#[derive(Debug)]
pub struct PublishResult {
    /// One answer per event of the batch, in order.
    pub answers: Vec<Published>,
    /// The deliveries leased to the caller (see [`FreshLease`]).
    pub leased: Vec<Claimed>,
}

/// What an attempt needs of the endpoint it goes to.
#[derive(Debug, Clone)]
pub struct Target {
    pub uid: EndpointUid,
    pub org_id: OrgId,
    pub url: String,
    pub sealed_secret: Vec<u8>,
    /// The previous secret and when it stops signing (a rotation's grace period).
    pub old_secret: Option<(Vec<u8>, Timestamp)>,
    /// Custom headers, sealed; `None` for none.
    pub sealed_headers: Option<Vec<u8>>,
    /// False when the endpoint was disabled or deleted after the event was published.
    pub live: bool,
    pub flow: FlowConfig,
}

/// The event a delivery carries.
#[derive(Debug, Clone)]
pub struct Payload {
    pub id: EventId,
    pub created: Timestamp,
    pub body: Bytes,
}

/// A delivery leased to this process for one attempt, with what the attempt needs.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub delivery: DeliveryId,
    pub token: ClaimToken,
    /// Attempts already made before this one.
    pub attempts: u32,
    /// `attempts` when the retry schedule last started over (manual retry, recover).
    pub retry_base: u32,
    pub event: Arc<Payload>,
    pub endpoint: Arc<Target>,
    /// Not to be sent before then: its slot under the endpoint's rate limit.
    pub not_before: Option<Timestamp>,
}

/// How a claim is bounded.
#[derive(Debug, Clone)]
pub struct ClaimRequest {
    pub now: Timestamp,
    /// Claimed work becomes due again at this time unless its outcome is recorded.
    pub lease_until: Timestamp,
    pub limit: u32,
    /// Deliveries an endpoint may hold here (in flight and waiting) at once.
    pub per_endpoint: u32,
    /// Endpoints that already hold work here, with how much.
    pub held: Vec<(EndpointUid, u32)>,
    pub token: ClaimToken,
}

impl ClaimRequest {
    /// Endpoints that may take nothing more.
    pub fn full(&self) -> Vec<EndpointUid> {
        self.held
            .iter()
            .filter(|(_, n)| *n >= self.per_endpoint)
            .map(|(uid, _)| *uid)
            .collect()
    }

    /// How many more an endpoint may take.
    pub fn room(&self, uid: EndpointUid) -> u32 {
        let held = self
            .held
            .iter()
            .find(|(u, _)| *u == uid)
            .map_or(0, |(_, n)| *n);
        self.per_endpoint.saturating_sub(held)
    }
}

/// How outcomes change an endpoint's standing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthPolicy {
    /// An endpoint whose attempts have all failed for this long is disabled.
    pub disable_after: std::time::Duration,
    /// The first success after every attempt failed for at least this long is told as
    /// `endpoint.recovered`.
    pub recovered_after: std::time::Duration,
}

/// What became of a delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    Retry { at: Timestamp },
    Failed,
}

impl Outcome {
    pub fn state(self) -> DeliveryState {
        match self {
            Self::Delivered => DeliveryState::Delivered,
            Self::Retry { .. } => DeliveryState::Pending,
            Self::Failed => DeliveryState::Failed,
        }
    }

    pub fn next_attempt(self) -> Option<Timestamp> {
        match self {
            Self::Retry { at } => Some(at),
            _ => None,
        }
    }
}

/// One attempt's record, written together with the delivery's new state.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub delivery: DeliveryId,
    pub token: ClaimToken,
    pub endpoint: EndpointUid,
    /// `None` when no request was made (the endpoint was disabled or deleted).
    pub attempt_no: Option<u32>,
    pub started: Timestamp,
    pub latency_ms: u64,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub error_class: Option<ErrorClass>,
    pub response_body: Option<String>,
    pub outcome: Outcome,
    /// The endpoint has a flow queue: a retry waits in it.
    pub queued: bool,
    /// The endpoint is FIFO: its outcome frees the queue's head.
    pub fifo: bool,
    /// What the receiver said of the endpoint as a whole.
    pub signal: Option<Signal>,
}

impl AttemptRecord {
    /// An attempt of delivery 1 to `endpoint` started at `started` (for unit tests).
    #[cfg(test)]
    pub fn sample(endpoint: EndpointUid, started: Timestamp, outcome: Outcome) -> Self {
        Self {
            delivery: DeliveryId(1),
            token: crate::domain::ClaimToken(1),
            endpoint,
            attempt_no: Some(1),
            started,
            latency_ms: 1,
            status_code: None,
            error: None,
            error_class: None,
            response_body: None,
            outcome,
            queued: false,
            fifo: false,
            signal: None,
        }
    }

    /// Whether its flow queue must be told (to look again): a FIFO head's outcome, or a
    /// retry that waits in the queue.
    pub fn tells_flow(&self) -> bool {
        self.queued && (self.fifo || self.outcome.next_attempt().is_some())
    }
}

/// What an answer says of the endpoint, beyond the one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// `410 Gone`: disable it at once.
    Gone,
    /// `429`, `502`, `503`, `504`: hold its deliveries back until then.
    Overloaded { until: Timestamp },
}

/// A delivery as the delivery log shows it.
#[derive(Debug, Clone)]
pub struct DeliveryRecord {
    pub id: DeliveryId,
    pub event_id: EventId,
    pub event_name: String,
    pub endpoint_url: String,
    pub endpoint_deleted: bool,
    pub state: DeliveryState,
    pub attempts: u32,
    pub next_attempt: Option<Timestamp>,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub created: Timestamp,
    pub updated: Timestamp,
}

#[derive(Debug, Clone)]
pub struct EventRecord {
    pub id: EventId,
    pub event_name: String,
    pub subcategory: Option<String>,
    pub body: Vec<u8>,
    pub created: Timestamp,
}

#[derive(Debug, Clone)]
pub struct AttemptView {
    pub attempt_no: u32,
    pub started: Timestamp,
    pub latency_ms: u64,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub error_class: Option<ErrorClass>,
    pub response_body: Option<String>,
}

/// Which deliveries of an endpoint to list, newest first.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    pub state: Option<DeliveryState>,
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
    /// Only deliveries with a smaller id (the pagination position).
    pub before: Option<DeliveryId>,
    pub limit: u32,
}

/// Counts of finished deliveries in one recent window.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WindowCounts {
    pub delivered: u64,
    pub failed: u64,
}
