//! The store: the database is the queue. Four traits shaped by what posthorn does:
//!
//! - [`Queue`]: publishing, claiming, recording outcomes and everything else that
//!   moves deliveries (release, park, retry, recover, prune, wake-ups);
//! - [`Admin`]: orgs, keys, the event catalog and endpoints;
//! - [`Log`]: reading the delivery log and statistics;
//! - [`Web`]: the web console's and portal's sessions and org-wide reads.
//!
//! Each backend implements them directly in plain code: [`sqlite`] (embedded, one
//! process per file, every write on one writer thread) and [`postgres`] (any number of
//! nodes on one database).
//!
//! Policy: nothing backend-specific leaks above this module. Timestamps cross it as
//! [`Timestamp`]s, secrets only in sealed form, keys only as hashes, states and ids as
//! types. Lists are keyset paginated, so paging an unchanging list visits each row once.

mod cache;
pub(crate) mod flow;
pub mod model;
mod notices;
pub mod postgres;
mod rows;
pub(crate) mod rules;
pub mod sqlite;
pub mod web;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use model::*;
pub use rules::STATS_BUCKET_MS;
pub use web::{BucketCounts, OrgDeliveryFilter, Web, WebSessionKind, WebSessionRecord};

use crate::domain::{DeliveryId, EndpointUid, EventId, KeyHash, OrgId, PublicIds, Timestamp};

pub type DynStore = Arc<dyn Store>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// A uniqueness rule would be broken; the text says which, for the client.
    #[error("{0}")]
    Conflict(String),
    /// A change that is not acceptable given what is stored (checked inside the
    /// change's transaction): the field and why, for the client.
    #[error("{field} {why}")]
    Invalid { field: &'static str, why: String },
    /// A bound per org or per request would be passed; the text says which, for the
    /// client.
    #[error("{0}")]
    Limit(String),
    /// The database cannot be reached right now (pool timeout, I/O, restart, disk full).
    #[error("store unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error("store error")]
    Other(#[source] anyhow::Error),
}

pub type StoreResult<T> = Result<T, StoreError>;

impl StoreError {
    /// A stored value that does not fit its type: the database holds something this
    /// code never writes.
    pub(crate) fn corrupt(what: impl std::fmt::Display) -> Self {
        Self::Other(anyhow::anyhow!("stored value does not fit: {what}"))
    }
}

/// A manual retry of a delivery this soon after the previous one is taken as the same
/// click and does nothing.
pub const DOUBLE_CLICK_MS: i64 = 10_000;

/// The `endpoint_event_types.event_name` of an endpoint that takes every event.
pub const WILDCARD: &str = "*";

/// The event types every new org starts with: Fullstory's documented ones.
pub const DEFAULT_CATALOG: &[(&str, &str, bool)] = &[
    ("note.created", "Note Created", false),
    ("segment.created", "Segment Created", false),
    ("nativemobile.event.crash", "Native Mobile Crash", false),
    ("segment.trend.alert", "Segment Trend Alert", true),
    ("metric.alert", "Metric Alert", true),
    ("recording.event.custom", "Custom Event", true),
];

/// The delivery queue.
#[async_trait]
pub trait Queue: Send + Sync {
    /// Stores the events and a pending delivery for every enabled endpoint subscribed to
    /// each, all in one transaction; durable when it returns. An idempotency key used in
    /// its org within the window is not stored again: the first answer is returned.
    async fn publish(&self, batch: PublishBatch) -> StoreResult<PublishResult>;
    /// How many deliveries publishing an event of each of `routes` (event type and
    /// subcategory, "" for none) in `org` would make now: its live, enabled endpoints
    /// subscribed to it or to everything. Read-only: the fan-out bound of a request is
    /// checked with it before anything is stored (`crate::fan_out`).
    async fn fan_out(&self, org: &OrgId, routes: &[(String, String)]) -> StoreResult<Vec<u64>>;
    /// Leases due deliveries (see [`ClaimRequest`]).
    async fn claim_due(&self, request: &ClaimRequest) -> StoreResult<Vec<Claimed>>;
    /// Records attempts and applies their outcomes (where the claim token still
    /// matches), in one transaction, with the endpoints' health and statistics, and the
    /// operational events they make (`delivery.failed`, `endpoint.recovered`,
    /// `endpoint.disabled`). An endpoint whose attempts have all failed for the
    /// policy's `disable_after` is disabled.
    async fn record_attempts(
        &self,
        records: Arc<[AttemptRecord]>,
        now: Timestamp,
        policy: HealthPolicy,
    ) -> StoreResult<()>;
    /// Makes claimed deliveries due again at `at` (shutdown, or no room to attempt them).
    async fn release(
        &self,
        token: crate::domain::ClaimToken,
        deliveries: Vec<DeliveryId>,
        at: Timestamp,
    ) -> StoreResult<()>;
    /// Moves the deliveries of an endpoint due by `now` to `until`: later for one that is
    /// saturated with slow attempts or held back, sooner (`until` before `now`) for one
    /// whose circuit closed. Never a delivery leased and still in its lease.
    async fn park_endpoint(
        &self,
        endpoint: EndpointUid,
        now: Timestamp,
        until: Timestamp,
    ) -> StoreResult<()>;
    /// Makes a delivery due now with a fresh retry schedule, unless an attempt of it is
    /// in flight or it was retried by hand within [`DOUBLE_CLICK_MS`] (so a double
    /// click sends once).
    async fn retry_delivery(
        &self,
        org: &OrgId,
        delivery: DeliveryId,
        now: Timestamp,
    ) -> StoreResult<DeliveryRecord>;
    /// Re-queues the endpoint's failed deliveries created in `[since, until)`.
    async fn recover_failed(
        &self,
        org: &OrgId,
        endpoint: EndpointUid,
        since: Timestamp,
        until: Option<Timestamp>,
        now: Timestamp,
    ) -> StoreResult<u64>;
    /// Deletes up to `batch` finished deliveries (with their attempts) last changed
    /// before `cutoff`, oldest first, events before `cutoff` left with no delivery, and
    /// statistics older than `cutoff`, found by indexes of what may go: pending work,
    /// however much, holds back nothing else. Returns how many deliveries (or, if more,
    /// events that made none) went.
    async fn prune(&self, cutoff: Timestamp, batch: u32) -> StoreResult<u64>;
    /// When the earliest pending delivery (claimed or not) becomes due.
    async fn next_due(&self) -> StoreResult<Option<Timestamp>>;
    /// Number of pending deliveries.
    async fn pending_count(&self) -> StoreResult<u64>;
    /// Notified whenever work became due that no claim holds: a publish without a
    /// lease, a retry, a recover, a release, or (on a shared store) another node's.
    fn wakeups(&self) -> Arc<Notify>;
    /// Watches the database for other processes' changes until `shutdown` (stores that
    /// one process owns have nothing to watch).
    async fn watch(&self, _shutdown: CancellationToken) {}
}

/// Orgs, keys, the event catalog and endpoints.
#[async_trait]
pub trait Admin: Send + Sync {
    /// Succeeds when the database answers.
    async fn ping(&self) -> StoreResult<()>;
    /// Stores `value` under `key` unless a value is there; returns the stored value.
    async fn meta_insert_if_absent(&self, key: &str, value: &[u8]) -> StoreResult<Vec<u8>>;

    /// Creates the org with the default catalog if it does not exist.
    async fn ensure_org(&self, org: &OrgId, now: Timestamp) -> StoreResult<()>;
    async fn count_active_api_keys(&self) -> StoreResult<u64>;
    /// Fails with `Conflict` when a key with that hash exists.
    async fn insert_api_key(&self, key: &ApiKeyRecord) -> StoreResult<()>;
    /// Stores the key unless one with its hash exists (whatever its state).
    async fn insert_api_key_if_absent(&self, key: &ApiKeyRecord) -> StoreResult<KeyInsert>;
    async fn find_api_key(&self, hash: &KeyHash) -> StoreResult<Option<ApiKeyRecord>>;
    async fn list_api_keys(&self, org: &OrgId) -> StoreResult<Vec<ApiKeyRecord>>;
    async fn revoke_api_key(&self, org: &OrgId, id: &str, now: Timestamp) -> StoreResult<()>;
    /// Counts a request of key `key_id` in the one-second window starting at
    /// `window_ms` and returns the window's count, where the store is shared by several
    /// processes; `None` means the process's own limiter is authoritative.
    async fn hit_rate_window(&self, _key_id: &str, _window_ms: i64) -> StoreResult<Option<u32>> {
        Ok(None)
    }

    async fn list_event_types(&self, org: &OrgId) -> StoreResult<Arc<Vec<EventTypeRecord>>>;
    async fn get_event_type(&self, org: &OrgId, name: &str)
        -> StoreResult<Option<EventTypeRecord>>;
    async fn create_event_type(
        &self,
        org: &OrgId,
        event_type: &EventTypeRecord,
        now: Timestamp,
    ) -> StoreResult<()>;
    /// Changes an event type (see `rules::type_update`) and records the version it
    /// makes; `NotFound` when the org has no such type.
    async fn update_event_type(
        &self,
        org: &OrgId,
        name: &str,
        change: &EventTypeChange,
        now: Timestamp,
    ) -> StoreResult<EventTypeRecord>;
    /// Version `version` of an event type: its schema and example as they were.
    async fn event_type_version(
        &self,
        org: &OrgId,
        name: &str,
        version: i64,
    ) -> StoreResult<Option<EventTypeVersion>>;
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

    /// Endpoint changes store their operational events (`endpoint.created`, ...) in
    /// their own transaction.
    ///
    /// Fails with `Conflict` when the org has a live endpoint with that URL.
    async fn create_endpoint(&self, new: &NewEndpoint) -> StoreResult<EndpointRecord>;
    /// [`Admin::create_endpoint`], unless the org has `most` live endpoints already
    /// (`Limit`), checked in the transaction that creates it.
    async fn create_endpoint_within(
        &self,
        new: &NewEndpoint,
        most: u32,
    ) -> StoreResult<EndpointRecord>;
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
    /// Replaces the secret; the previous one keeps signing until `old_expires`.
    async fn rotate_secret(
        &self,
        org: &OrgId,
        url: &str,
        sealed_secret: &[u8],
        old_expires: Timestamp,
        now: Timestamp,
    ) -> StoreResult<()>;
}

/// Reading the delivery log.
#[async_trait]
pub trait Log: Send + Sync {
    async fn get_event(&self, org: &OrgId, event: &EventId) -> StoreResult<EventRecord>;
    /// The deliveries of an event, in delivery order.
    async fn event_deliveries(
        &self,
        org: &OrgId,
        event: &EventId,
    ) -> StoreResult<Vec<DeliveryRecord>>;
    async fn list_deliveries(
        &self,
        org: &OrgId,
        endpoint: EndpointUid,
        filter: &DeliveryFilter,
    ) -> StoreResult<Page<DeliveryRecord>>;
    async fn get_delivery(&self, org: &OrgId, delivery: DeliveryId) -> StoreResult<DeliveryRecord>;
    async fn list_attempts(
        &self,
        org: &OrgId,
        delivery: DeliveryId,
    ) -> StoreResult<Vec<AttemptView>>;
    /// Delivered and failed counts of deliveries finished since each of `since`
    /// (counted in [`STATS_BUCKET_MS`] buckets: a window starts at its bucket's start).
    async fn endpoint_stats(
        &self,
        endpoint: EndpointUid,
        since: &[Timestamp],
    ) -> StoreResult<Vec<WindowCounts>>;
}

/// A whole store.
pub trait Store: Queue + Admin + Log + Web {
    /// Where the master key is kept when none is given: beside an embedded database.
    /// `None` for a shared database, whose nodes must all be given the same key.
    fn default_master_key_file(&self) -> Option<PathBuf>;

    /// How many write operations (publish groups, outcome batches) are worth having in
    /// flight at once. The embedded store commits whatever is waiting in one
    /// transaction, so a few in flight let one group gather while another commits;
    /// on PostgreSQL concurrent batches only contend for the same rows (measured:
    /// one at a time is faster, docs/BENCHMARKS.md).
    fn write_concurrency(&self) -> usize {
        1
    }

    /// How this store's delivery ids are spelled outside (its key is in `meta`).
    fn public_ids(&self) -> &PublicIds;
}

/// The [`PublicIds`] of a store, from the two `meta` values its migration made.
pub(crate) fn public_ids_from(key: &[u8], legacy_upto: &[u8]) -> anyhow::Result<PublicIds> {
    let key: &[u8; 16] = key
        .try_into()
        .map_err(|_| anyhow::anyhow!("meta delivery_id_key is not 16 bytes"))?;
    let upto = std::str::from_utf8(legacy_upto)
        .ok()
        .and_then(|t| t.parse::<i64>().ok())
        .ok_or_else(|| anyhow::anyhow!("meta legacy_delivery_ids_upto is not a number"))?;
    Ok(PublicIds::new(key, upto))
}

/// How a process uses the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `posthorn serve`: a process that delivers from the store. An embedded database
    /// is served by one such process at a time.
    Serve,
    /// A command that opens the store briefly, also beside a server (`keys create`,
    /// `migrate`).
    Tool,
}

/// Copies a live embedded store to `to` (see `sqlite/backup.rs`). PostgreSQL has its
/// own tools for this.
pub async fn backup(
    db: &crate::config::DatabaseArgs,
    to: &Path,
) -> anyhow::Result<sqlite::backup::Backup> {
    let url = db.database_url.clone();
    anyhow::ensure!(
        url.starts_with("sqlite:"),
        "posthorn backup copies the embedded SQLite store; for PostgreSQL use pg_dump or your provider's backups"
    );
    let to = to.to_owned();
    tokio::task::spawn_blocking(move || sqlite::backup::run(&url, &to)).await?
}

/// Opens the store named by `db` (applying migrations). Operational events are also
/// stored in the `operator` org, when one is given.
pub async fn open(
    db: &crate::config::DatabaseArgs,
    access: Access,
    operator: Option<OrgId>,
) -> anyhow::Result<DynStore> {
    let url = db.database_url.as_str();
    if url.starts_with("sqlite:") {
        Ok(Arc::new(
            sqlite::SqliteStore::open(url, access, operator).await?,
        ))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(
            postgres::PgStore::connect(url, db.pool_size, operator).await?,
        ))
    } else {
        anyhow::bail!(
            "unsupported database URL: expected sqlite://FILE or postgres://... (POSTHORN_DATABASE_URL)"
        )
    }
}
