//! The PostgreSQL store, for any number of `posthorn serve` nodes on one database.
//!
//! Policy: nodes share all work through the database. A node's publishes are stored
//! leased to its own dispatcher while it has room (no claim needed); everything else is
//! claimed with `FOR UPDATE SKIP LOCKED` and a lease (next_attempt_ms moved past the
//! attempt timeout, under a claim token), so no delivery is in flight on two live nodes
//! and a dead node's work becomes due when its leases end. Work that becomes due without
//! a lease sends `NOTIFY posthorn_work`; every node LISTENs and wakes its dispatcher.
//! Keys, catalogs and subcategories are cached; every change to them sends `NOTIFY
//! posthorn_cache`, on which every node forgets its caches (and it caches nothing while
//! its LISTEN connection is down). The API rate limit is counted in `rate_windows`, so
//! it holds across nodes. The queue's own bookkeeping (claims, outcomes, releases)
//! commits without waiting for the WAL flush, on a pool of its own: losing such a
//! commit in a crash repeats a delivery, never loses one. Connection failures map to
//! `StoreError::Unavailable` (503); the pools reconnect by themselves.

mod admin;
mod endpoints;
mod listen;
mod log;
mod publish;
mod queue;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::cache::Cache;
use super::{
    Admin, ApiKeyRecord, AttemptRecord, AttemptView, ClaimRequest, Claimed, DeliveryFilter,
    DeliveryRecord, EndpointPatch, EndpointRecord, EventRecord, EventTypeRecord, KeyInsert, Log,
    NewEndpoint, Page, PublishBatch, PublishResult, Queue, Store, StoreError, StoreResult,
    SubcategoryRecord, WindowCounts,
};
use crate::domain::{ClaimToken, DeliveryId, EndpointUid, EventId, KeyHash, OrgId, Timestamp};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");
/// The channel on which work that became due without a lease is announced.
pub const WORK_CHANNEL: &str = "posthorn_work";
/// The channel on which changes to cached keys and catalogs are announced.
pub const CACHE_CHANNEL: &str = "posthorn_cache";

pub struct PgStore {
    /// Everything acknowledged to a client, and reads.
    pool: PgPool,
    /// The queue's own bookkeeping (`synchronous_commit = off`).
    queue_pool: PgPool,
    cache: Cache,
    /// True while the LISTEN connection is up: only then is the cache trusted.
    listening: AtomicBool,
    wake: Arc<Notify>,
}

/// Maps a driver error to the store's error kinds: connection trouble is
/// `Unavailable` (answered 503, retried by workers).
pub(super) fn map_err(err: sqlx::Error) -> StoreError {
    let unavailable = match &err {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|c| {
            // 08: connection exception; 57P01-03: shutdown / cannot connect now;
            // 53: insufficient resources (disk full, too many connections).
            c.starts_with("08") || c.starts_with("57P0") || c.starts_with("53")
        }),
        _ => false,
    };
    match err {
        sqlx::Error::RowNotFound => StoreError::NotFound,
        e if unavailable => StoreError::Unavailable(e.into()),
        e => StoreError::Other(e.into()),
    }
}

pub(super) fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// True for errors after which the same statement may simply be run again.
fn is_transient(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("40001" | "40P01")))
}

/// Runs `op` again (a few times) when it fails on a serialization failure or deadlock.
pub(super) async fn retrying<T, F, Fut>(mut op: F) -> StoreResult<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, sqlx::Error>>,
{
    let mut tries = 0;
    loop {
        match op().await {
            Err(e) if is_transient(&e) && tries < 5 => {
                tries += 1;
                tracing::debug!(error = %e, tries, "transient database error; running it again");
                tokio::time::sleep(Duration::from_millis(5 << tries)).await;
            }
            other => return other.map_err(map_err),
        }
    }
}

impl PgStore {
    pub async fn connect(url: &str, pool_size: u32) -> anyhow::Result<Self> {
        // JIT compilation costs tens of milliseconds per execution of the queue's
        // statements (their estimates cross jit_above_cost) and saves nothing on them.
        let options: PgConnectOptions = url
            .parse::<PgConnectOptions>()
            .context("invalid PostgreSQL URL")?
            .options([("jit", "off")]);
        // One connection first, for its own error: the pool retries until its acquire
        // timeout and then says only that it timed out.
        let probe = sqlx::ConnectOptions::connect(&options)
            .await
            .map_err(describe_connect_error)?;
        let _ = sqlx::Connection::close(probe).await;
        let pool = PgPoolOptions::new()
            .max_connections(pool_size.max(2))
            .acquire_timeout(Duration::from_secs(3))
            .connect_with(options.clone())
            .await
            .map_err(describe_connect_error)?;
        MIGRATOR
            .run(&pool)
            .await
            .context("cannot apply database migrations")?;
        let queue_pool = PgPoolOptions::new()
            .max_connections(6)
            .acquire_timeout(Duration::from_secs(3))
            .connect_lazy_with(options.options([("synchronous_commit", "off")]));
        Ok(Self {
            pool,
            queue_pool,
            cache: Cache::default(),
            listening: AtomicBool::new(false),
            wake: Arc::new(Notify::new()),
        })
    }

    fn cache(&self) -> Option<&Cache> {
        self.listening
            .load(Ordering::Acquire)
            .then_some(&self.cache)
    }
}

/// Says what went wrong connecting, in one line without repeating itself.
fn describe_connect_error(err: sqlx::Error) -> anyhow::Error {
    let what = match &err {
        sqlx::Error::Io(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            "connection refused: is PostgreSQL running and listening there?".to_owned()
        }
        sqlx::Error::Database(db) => match db.code().as_deref() {
            Some("28P01" | "28000") => format!("authentication failed: {}", db.message()),
            Some("3D000") => format!("the database does not exist: {}", db.message()),
            _ => db.message().to_owned(),
        },
        other => other.to_string(),
    };
    anyhow::anyhow!("cannot connect to PostgreSQL (POSTHORN_DATABASE_URL): {what}")
}

impl Store for PgStore {
    fn default_master_key_file(&self) -> Option<PathBuf> {
        None
    }
}

#[async_trait]
impl Queue for PgStore {
    async fn publish(&self, batch: PublishBatch) -> StoreResult<PublishResult> {
        publish::publish(&self.pool, batch).await
    }

    async fn claim_due(&self, request: &ClaimRequest) -> StoreResult<Vec<Claimed>> {
        retrying(|| queue::claim_due(&self.queue_pool, request))
            .await?
            .into_iter()
            .map(|row| row.into_claimed(request.token))
            .collect()
    }

    async fn record_attempts(
        &self,
        records: Arc<[AttemptRecord]>,
        now: Timestamp,
        disable_after: Duration,
    ) -> StoreResult<()> {
        queue::record_attempts(&self.queue_pool, &records, now, disable_after).await
    }

    async fn release(
        &self,
        token: ClaimToken,
        deliveries: Vec<DeliveryId>,
        at: Timestamp,
    ) -> StoreResult<()> {
        if queue::release(&self.queue_pool, token, &deliveries, at).await? > 0 {
            self.wake.notify_one();
        }
        Ok(())
    }

    async fn park_endpoint(
        &self,
        endpoint: EndpointUid,
        now: Timestamp,
        until: Timestamp,
    ) -> StoreResult<()> {
        queue::park_endpoint(&self.queue_pool, endpoint, now, until).await
    }

    async fn retry_delivery(
        &self,
        org: &OrgId,
        delivery: DeliveryId,
        now: Timestamp,
    ) -> StoreResult<DeliveryRecord> {
        if queue::retry_delivery(&self.pool, org, delivery, now).await? > 0 {
            self.wake.notify_one();
        }
        log::get_delivery(&self.pool, org, delivery).await
    }

    async fn recover_failed(
        &self,
        org: &OrgId,
        endpoint: EndpointUid,
        since: Timestamp,
        until: Option<Timestamp>,
        now: Timestamp,
    ) -> StoreResult<u64> {
        let queued = queue::recover_failed(&self.pool, org, endpoint, since, until, now).await?;
        if queued > 0 {
            self.wake.notify_one();
        }
        Ok(queued)
    }

    async fn prune(&self, cutoff: Timestamp, batch: u32) -> StoreResult<u64> {
        queue::prune(&self.queue_pool, cutoff, batch).await
    }

    async fn next_due(&self) -> StoreResult<Option<Timestamp>> {
        queue::next_due(&self.pool).await
    }

    async fn pending_count(&self) -> StoreResult<u64> {
        queue::pending_count(&self.pool).await
    }

    fn wakeups(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    async fn watch(&self, shutdown: CancellationToken) {
        listen::run(self, shutdown).await
    }
}

#[async_trait]
impl Admin for PgStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(|e| StoreError::Unavailable(e.into()))
    }

    async fn meta_insert_if_absent(&self, key: &str, value: &[u8]) -> StoreResult<Vec<u8>> {
        admin::meta_insert_if_absent(&self.pool, key, value).await
    }

    async fn ensure_org(&self, org: &OrgId, now: Timestamp) -> StoreResult<()> {
        admin::ensure_org(&self.pool, org, now).await?;
        self.cache.forget_catalog(org);
        Ok(())
    }

    async fn count_active_api_keys(&self) -> StoreResult<u64> {
        admin::count_active_keys(&self.pool).await
    }

    async fn insert_api_key(&self, key: &ApiKeyRecord) -> StoreResult<()> {
        admin::insert_key(&self.pool, key).await
    }

    async fn insert_api_key_if_absent(&self, key: &ApiKeyRecord) -> StoreResult<KeyInsert> {
        admin::insert_key_if_absent(&self.pool, key).await
    }

    async fn find_api_key(&self, hash: &KeyHash) -> StoreResult<Option<ApiKeyRecord>> {
        let Some(cache) = self.cache() else {
            return admin::find_key(&self.pool, hash).await;
        };
        let generation = match cache.key(hash) {
            Ok(record) => return Ok(Some(record)),
            Err(generation) => generation,
        };
        let found = admin::find_key(&self.pool, hash).await?;
        if let Some(record) = &found {
            cache.put_key(record, generation);
        }
        Ok(found)
    }

    async fn list_api_keys(&self, org: &OrgId) -> StoreResult<Vec<ApiKeyRecord>> {
        admin::list_keys(&self.pool, org).await
    }

    async fn revoke_api_key(&self, org: &OrgId, id: &str, now: Timestamp) -> StoreResult<()> {
        let revoked = admin::revoke_key(&self.pool, org, id, now).await;
        self.cache.forget_key_id(id);
        revoked
    }

    async fn hit_rate_window(&self, key_id: &str, window_ms: i64) -> StoreResult<Option<u32>> {
        admin::hit_rate_window(&self.pool, key_id, window_ms)
            .await
            .map(Some)
    }

    async fn list_event_types(&self, org: &OrgId) -> StoreResult<Arc<Vec<EventTypeRecord>>> {
        let cache = self.cache();
        if let Some(types) = cache.and_then(|c| c.catalog(org)) {
            return Ok(types);
        }
        let types = admin::list_types(&self.pool, org).await?;
        Ok(match cache {
            Some(c) => c.put_catalog(org, types),
            None => Arc::new(types),
        })
    }

    async fn get_event_type(
        &self,
        org: &OrgId,
        name: &str,
    ) -> StoreResult<Option<EventTypeRecord>> {
        admin::get_type(&self.pool, org, name).await
    }

    async fn create_event_type(
        &self,
        org: &OrgId,
        event_type: &EventTypeRecord,
        now: Timestamp,
    ) -> StoreResult<()> {
        let created = admin::create_type(&self.pool, org, event_type, now).await;
        self.cache.forget_catalog(org);
        created
    }

    async fn list_subcategories(
        &self,
        org: &OrgId,
        event_name: &str,
        after: Option<i64>,
        limit: u32,
    ) -> StoreResult<Page<SubcategoryRecord>> {
        admin::list_subcategories(&self.pool, org, event_name, after, limit).await
    }

    async fn subcategory_exists(
        &self,
        org: &OrgId,
        event_name: &str,
        token: &str,
    ) -> StoreResult<bool> {
        let cache = self.cache();
        if cache.is_some_and(|c| c.has_subcategory(org, event_name, token)) {
            return Ok(true);
        }
        let exists = admin::subcategory_exists(&self.pool, org, event_name, token).await?;
        if let (true, Some(c)) = (exists, cache) {
            c.put_subcategory(org, event_name, token);
        }
        Ok(exists)
    }

    async fn create_subcategory(
        &self,
        org: &OrgId,
        event_name: &str,
        token: &str,
        display_name: Option<&str>,
        now: Timestamp,
    ) -> StoreResult<SubcategoryRecord> {
        admin::create_subcategory(&self.pool, org, event_name, token, display_name, now).await
    }

    async fn create_endpoint(&self, new: &NewEndpoint) -> StoreResult<EndpointRecord> {
        endpoints::create(&self.pool, new).await
    }

    async fn get_endpoint(&self, org: &OrgId, url: &str) -> StoreResult<EndpointRecord> {
        endpoints::get(&self.pool, org, url).await
    }

    async fn list_endpoints(
        &self,
        org: &OrgId,
        after: Option<i64>,
        limit: u32,
    ) -> StoreResult<Page<EndpointRecord>> {
        endpoints::list(&self.pool, org, after, limit).await
    }

    async fn update_endpoint(
        &self,
        org: &OrgId,
        url: &str,
        patch: &EndpointPatch,
    ) -> StoreResult<EndpointRecord> {
        endpoints::update(&self.pool, org, url, patch).await
    }

    async fn delete_endpoint(&self, org: &OrgId, url: &str, now: Timestamp) -> StoreResult<()> {
        endpoints::delete(&self.pool, org, url, now).await
    }

    async fn rotate_secret(
        &self,
        org: &OrgId,
        url: &str,
        sealed_secret: &[u8],
        old_expires: Timestamp,
        now: Timestamp,
    ) -> StoreResult<()> {
        endpoints::rotate_secret(&self.pool, org, url, sealed_secret, old_expires, now).await
    }
}

#[async_trait]
impl Log for PgStore {
    async fn get_event(&self, org: &OrgId, event: &EventId) -> StoreResult<EventRecord> {
        log::get_event(&self.pool, org, event).await
    }

    async fn event_deliveries(
        &self,
        org: &OrgId,
        event: &EventId,
    ) -> StoreResult<Vec<DeliveryRecord>> {
        log::event_deliveries(&self.pool, org, event).await
    }

    async fn list_deliveries(
        &self,
        org: &OrgId,
        endpoint: EndpointUid,
        filter: &DeliveryFilter,
    ) -> StoreResult<Page<DeliveryRecord>> {
        log::list_deliveries(&self.pool, org, endpoint, filter).await
    }

    async fn get_delivery(&self, org: &OrgId, delivery: DeliveryId) -> StoreResult<DeliveryRecord> {
        log::get_delivery(&self.pool, org, delivery).await
    }

    async fn list_attempts(
        &self,
        org: &OrgId,
        delivery: DeliveryId,
    ) -> StoreResult<Vec<AttemptView>> {
        log::list_attempts(&self.pool, org, delivery).await
    }

    async fn endpoint_stats(
        &self,
        endpoint: EndpointUid,
        since: &[Timestamp],
    ) -> StoreResult<Vec<WindowCounts>> {
        log::endpoint_stats(&self.pool, endpoint, since).await
    }
}
