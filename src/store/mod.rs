//! The store: one trait shaped by what posthorn does, with an embedded SQLite
//! implementation (and a PostgreSQL one behind the same trait).
//!
//! Policy: nothing backend-specific leaks above this module. Timestamps cross it as
//! [`Timestamp`]s, secrets only in sealed form, keys only as hashes. Listing is keyset
//! paginated on a per-row sequence number, so paging an unchanging list visits each row
//! exactly once.

#[macro_use]
mod operator;
#[macro_use]
mod shared_catalog;
#[macro_use]
mod shared_endpoints;
#[macro_use]
mod shared_keys;
pub mod postgres;
pub mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::domain::{EventTypeRef, KeyHash, OrgId, Role, Timestamp};

pub type DynStore = Arc<dyn Store>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// A uniqueness rule would be broken; the text says which, for the client.
    #[error("{0}")]
    Conflict(String),
    /// The database cannot be reached right now (pool timeout, I/O, restart).
    #[error("store unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error("store error")]
    Other(#[source] anyhow::Error),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// One page of a keyset-paginated list: `next_after` is the sequence number to pass
/// back for the next page, absent on the last page.
#[derive(Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_after: Option<i64>,
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

#[derive(Debug, Clone)]
pub struct EventTypeRecord {
    pub name: String,
    pub display_name: String,
    pub has_subcategories: bool,
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
    pub uid: i64,
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
    pub last_success: Option<Timestamp>,
    pub last_failure: Option<Timestamp>,
}

#[derive(Debug, Clone)]
pub struct NewEndpoint {
    pub org_id: OrgId,
    pub url: String,
    pub event_types: Vec<EventTypeRef>,
    pub sealed_secret: Vec<u8>,
    pub now: Timestamp,
}

/// An update: `None` leaves a field as it is.
#[derive(Debug, Clone)]
pub struct EndpointPatch {
    pub url: Option<String>,
    pub event_types: Option<Vec<EventTypeRef>>,
    pub sealed_secret: Option<Vec<u8>>,
    pub enabled: bool,
    pub now: Timestamp,
}

/// An event to store with its deliveries.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub id: String,
    pub org_id: OrgId,
    pub event_name: String,
    pub subcategory: Option<String>,
    /// The exact request body every delivery sends.
    pub body: Vec<u8>,
    pub idempotency_key: Option<String>,
}

/// The answer to a publish: the event id and its fan-out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub id: String,
    pub deliveries: u64,
}

/// How one event of a publish call is answered (both stores).
pub(crate) enum Answer {
    /// A repeat of an earlier event's idempotency key: that event's answer.
    Repeat(Published),
    /// Stored now, as the `n`th fresh event of this call.
    Fresh(usize),
}

/// The answers of a publish call, once the fresh events' fan-out `counts` are known.
pub(crate) fn resolve(
    answers: Vec<Answer>,
    fresh: &[&NewEvent],
    counts: &std::collections::HashMap<String, u64>,
) -> Vec<Published> {
    answers
        .into_iter()
        .map(|a| match a {
            Answer::Repeat(p) => p,
            Answer::Fresh(n) => Published {
                id: fresh[n].id.clone(),
                deliveries: counts.get(&fresh[n].id).copied().unwrap_or(0),
            },
        })
        .collect()
}

/// A delivery claimed for one attempt, with what the attempt needs.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub delivery_id: i64,
    /// Attempts already made before this one.
    pub attempts: u32,
    pub event_id: String,
    pub event_created: Timestamp,
    pub body: Vec<u8>,
    pub org_id: OrgId,
    pub endpoint_uid: i64,
    pub url: String,
    pub sealed_secret: Vec<u8>,
    /// The previous secret, while its rotation grace period lasts: it signs too.
    pub old_sealed_secret: Option<Vec<u8>>,
    /// `attempts` when the retry schedule last started over (manual retry, recover).
    pub retry_base: u32,
    /// False when the endpoint was disabled or deleted after the event was published.
    pub endpoint_live: bool,
}

/// What became of a delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    Retry { at: Timestamp },
    Failed,
}

/// One attempt's record, written together with the delivery's new state.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub delivery_id: i64,
    pub claim_token: String,
    /// `None` when no request was made (the endpoint was disabled or deleted).
    pub attempt_no: Option<u32>,
    pub started: Timestamp,
    pub latency_ms: u64,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    /// `http_status`, `timeout`, `connect`, `ssrf`, `request` or `secret`.
    pub error_class: Option<&'static str>,
    pub response_body: Option<String>,
    pub outcome: Outcome,
    pub endpoint_uid: i64,
}

/// A delivery as the operator API shows it.
#[derive(Debug, Clone)]
pub struct DeliveryRecord {
    pub id: i64,
    pub event_id: String,
    pub event_name: String,
    pub endpoint_url: String,
    pub endpoint_deleted: bool,
    /// `pending`, `delivered` or `failed`.
    pub state: String,
    pub attempts: u32,
    pub next_attempt: Option<Timestamp>,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub created: Timestamp,
    pub updated: Timestamp,
}

#[derive(Debug, Clone)]
pub struct EventRecord {
    pub id: String,
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
    pub error_class: Option<String>,
    pub response_body: Option<String>,
}

/// Which deliveries of an endpoint to list, newest first.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    pub state: Option<String>,
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
    /// Only deliveries with a smaller id (the pagination position).
    pub before: Option<i64>,
    pub limit: u32,
}

/// Counts of finished deliveries in one recent window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowCounts {
    pub delivered: u64,
    pub failed: u64,
}

/// How a claim is bounded.
#[derive(Debug, Clone)]
pub struct ClaimRequest {
    pub now: Timestamp,
    /// Claimed work becomes due again at this time unless its outcome is recorded.
    pub lease_until: Timestamp,
    pub limit: u32,
    /// Deliveries an endpoint may have in flight at once.
    pub per_endpoint: u32,
    /// Endpoints that already have work in flight here, with how much.
    pub in_flight: Vec<(i64, u32)>,
    /// Tags the claimed rows; an outcome is applied only while the tag is still theirs.
    pub token: String,
}

/// A manual retry of a delivery this soon after the previous one is taken as the same
/// click and does nothing.
pub const DOUBLE_CLICK_MS: i64 = 10_000;

/// The `endpoint_event_types.event_name` of an endpoint that takes every event.
pub const WILDCARD: &str = "*";

impl ClaimRequest {
    /// `in_flight` as the JSON object (`{"<uid>": n}`) the claim statements read.
    pub(crate) fn in_flight_json(&self) -> String {
        let pairs: Vec<String> = self
            .in_flight
            .iter()
            .map(|(uid, n)| format!("\"{uid}\":{n}"))
            .collect();
        format!("{{{}}}", pairs.join(","))
    }
}

/// The event types every new org starts with: Fullstory's documented ones.
pub const DEFAULT_CATALOG: &[(&str, &str, bool)] = &[
    ("note.created", "Note Created", false),
    ("segment.created", "Segment Created", false),
    ("nativemobile.event.crash", "Native Mobile Crash", false),
    ("segment.trend.alert", "Segment Trend Alert", true),
    ("metric.alert", "Metric Alert", true),
    ("recording.event.custom", "Custom Event", true),
];

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Succeeds when the database answers.
    async fn ping(&self) -> StoreResult<()>;

    /// Stores `value` under `key` unless a value is there; returns the stored value.
    async fn meta_insert_if_absent(&self, key: &str, value: &[u8]) -> StoreResult<Vec<u8>>;

    // --- orgs and keys ---

    /// Creates the org with the default catalog if it does not exist.
    async fn ensure_org(&self, org: &OrgId, now: Timestamp) -> StoreResult<()>;
    async fn count_active_api_keys(&self) -> StoreResult<u64>;
    async fn insert_api_key(&self, key: &ApiKeyRecord) -> StoreResult<()>;
    /// Makes the key with this hash an active admin key of `org` (bootstrap).
    async fn upsert_admin_key(&self, key: &ApiKeyRecord) -> StoreResult<()>;
    async fn find_api_key(&self, hash: &KeyHash) -> StoreResult<Option<ApiKeyRecord>>;
    async fn list_api_keys(&self, org: &OrgId) -> StoreResult<Vec<ApiKeyRecord>>;
    async fn revoke_api_key(&self, org: &OrgId, id: &str, now: Timestamp) -> StoreResult<()>;
    /// Counts a request of key `key_id` in the one-second window starting at
    /// `window_ms` and returns the window's count, where the store is shared by several
    /// processes; `None` means the process's own limiter is authoritative.
    async fn hit_rate_window(&self, _key_id: &str, _window_ms: i64) -> StoreResult<Option<u32>> {
        Ok(None)
    }

    // --- event catalog ---

    async fn list_event_types(&self, org: &OrgId) -> StoreResult<Vec<EventTypeRecord>>;
    async fn get_event_type(&self, org: &OrgId, name: &str)
        -> StoreResult<Option<EventTypeRecord>>;
    async fn create_event_type(
        &self,
        org: &OrgId,
        event_type: &EventTypeRecord,
        now: Timestamp,
    ) -> StoreResult<()>;
    async fn list_subcategories(
        &self,
        org: &OrgId,
        event_name: &str,
        after: Option<i64>,
        limit: u32,
    ) -> StoreResult<Page<SubcategoryRecord>>;
    async fn subcategory_exists(
        &self,
        org: &OrgId,
        event_name: &str,
        token: &str,
    ) -> StoreResult<bool>;
    async fn create_subcategory(
        &self,
        org: &OrgId,
        event_name: &str,
        token: &str,
        display_name: Option<&str>,
        now: Timestamp,
    ) -> StoreResult<SubcategoryRecord>;

    // --- endpoints ---

    /// Fails with `Conflict` when the org has a live endpoint with that URL.
    async fn create_endpoint(&self, new: &NewEndpoint) -> StoreResult<EndpointRecord>;
    async fn get_endpoint(&self, org: &OrgId, url: &str) -> StoreResult<EndpointRecord>;
    async fn list_endpoints(
        &self,
        org: &OrgId,
        after: Option<i64>,
        limit: u32,
    ) -> StoreResult<Page<EndpointRecord>>;
    /// Fails with `NotFound` for an unknown URL and `Conflict` when a new URL is taken.
    async fn update_endpoint(
        &self,
        org: &OrgId,
        url: &str,
        patch: &EndpointPatch,
    ) -> StoreResult<EndpointRecord>;
    async fn delete_endpoint(&self, org: &OrgId, url: &str, now: Timestamp) -> StoreResult<()>;

    // --- publishing and the delivery queue ---

    /// Stores the events and a pending delivery for every enabled endpoint subscribed to
    /// each, all in one transaction. An event whose idempotency key was used in its org
    /// within `idempotency_window_ms` is not stored again: the first answer is returned.
    async fn publish(
        &self,
        events: &[NewEvent],
        now: Timestamp,
        idempotency_window_ms: i64,
    ) -> StoreResult<Vec<Published>>;
    /// Claims due deliveries (see [`ClaimRequest`]).
    async fn claim_due(&self, request: &ClaimRequest) -> StoreResult<Vec<Claimed>>;
    /// Records attempts and applies their outcomes, in one transaction. An endpoint
    /// whose attempts have all failed since `disable_after_ms` ago or longer is disabled.
    async fn record_attempts(
        &self,
        records: &[AttemptRecord],
        now: Timestamp,
        disable_after_ms: i64,
    ) -> StoreResult<()>;
    /// Makes claimed deliveries due again at `at` (shutdown, or an endpoint that is busy).
    async fn release(&self, token: &str, delivery_ids: &[i64], at: Timestamp) -> StoreResult<()>;
    /// Delays the due deliveries of an endpoint that is saturated with slow attempts.
    async fn park_endpoint(
        &self,
        endpoint_uid: i64,
        now: Timestamp,
        until: Timestamp,
    ) -> StoreResult<()>;
    /// When the earliest pending delivery (claimed or not) becomes due.
    async fn next_due(&self) -> StoreResult<Option<Timestamp>>;
    /// Number of pending deliveries.
    async fn pending_count(&self) -> StoreResult<u64>;
    /// Ends every lease (single-node stores at start: the previous process is gone).
    async fn expire_leases(&self, now: Timestamp) -> StoreResult<()>;

    // --- the operator API ---

    async fn get_event(&self, org: &OrgId, event_id: &str) -> StoreResult<EventRecord>;
    /// The deliveries of an event, in endpoint order.
    async fn event_deliveries(
        &self,
        org: &OrgId,
        event_id: &str,
    ) -> StoreResult<Vec<DeliveryRecord>>;
    async fn list_deliveries(
        &self,
        org: &OrgId,
        endpoint_uid: i64,
        filter: &DeliveryFilter,
    ) -> StoreResult<Page<DeliveryRecord>>;
    async fn get_delivery(&self, org: &OrgId, delivery_id: i64) -> StoreResult<DeliveryRecord>;
    async fn list_attempts(&self, org: &OrgId, delivery_id: i64) -> StoreResult<Vec<AttemptView>>;
    /// Makes a delivery due now with a fresh retry schedule, unless an attempt of it is
    /// in flight or it was retried by hand within [`DOUBLE_CLICK_MS`] (so a double
    /// click sends once).
    async fn retry_delivery(
        &self,
        org: &OrgId,
        delivery_id: i64,
        now: Timestamp,
    ) -> StoreResult<DeliveryRecord>;
    /// Re-queues the endpoint's failed deliveries created in `[since, until)`.
    async fn recover_failed(
        &self,
        org: &OrgId,
        endpoint_uid: i64,
        since: Timestamp,
        until: Option<Timestamp>,
        now: Timestamp,
    ) -> StoreResult<u64>;
    /// Replaces the secret; the previous one keeps signing until `old_expires`.
    async fn rotate_secret(
        &self,
        org: &OrgId,
        url: &str,
        sealed_secret: &[u8],
        old_expires: Timestamp,
        now: Timestamp,
    ) -> StoreResult<()>;
    /// Delivered and failed counts of deliveries finished since each of `since`.
    async fn endpoint_stats(
        &self,
        endpoint_uid: i64,
        since: &[Timestamp],
    ) -> StoreResult<Vec<WindowCounts>>;
    /// Deletes up to `batch` finished deliveries (with their attempts) last changed
    /// before `cutoff`, and events before `cutoff` left with no delivery. Returns how
    /// many deliveries went.
    async fn prune(&self, cutoff: Timestamp, batch: u32) -> StoreResult<u64>;

    /// Wakes `wake` when another process queues work, until `shutdown`. Stores that
    /// only one process uses have nothing to watch.
    async fn watch(&self, _wake: Arc<Notify>, _shutdown: CancellationToken) {}
}

/// Turns a fetch of `limit + 1` rows into a page: the extra row only proves that
/// another page exists.
pub(crate) fn paginate<T>(items: &mut Vec<T>, limit: u32, seq: impl Fn(&T) -> i64) -> Page<T> {
    let limit = limit as usize;
    let next_after = if items.len() > limit {
        items.truncate(limit);
        items.last().map(seq)
    } else {
        None
    };
    Page {
        items: std::mem::take(items),
        next_after,
    }
}

/// Opens the store named by `db`, applying migrations.
pub async fn connect(db: &crate::config::DatabaseArgs) -> anyhow::Result<DynStore> {
    let url = db.database_url.as_str();
    if url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::SqliteStore::connect(url).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(
            postgres::PgStore::connect(url, db.pool_size).await?,
        ))
    } else {
        anyhow::bail!("unsupported database URL: expected sqlite://FILE or postgres://...")
    }
}

/// The file an SQLite URL names, if it names one (not `:memory:`).
pub fn sqlite_path(url: &str) -> Option<std::path::PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && !path.contains(":memory:")).then(|| path.into())
}
