//! The PostgreSQL store, for any number of `posthorn serve` nodes on one database.
//!
//! Policy: nodes share all work through the database. Due deliveries are claimed with
//! `FOR UPDATE SKIP LOCKED` and a lease (next_attempt_ms moved past the attempt
//! timeout, under a claim token), so no delivery is in flight on two live nodes and a
//! dead node's claims become due when their leases end. A publish sends `NOTIFY
//! posthorn_work` in its transaction; every node LISTENs and wakes its dispatcher. The
//! API rate limit is counted in `rate_windows`, so it holds across nodes. Connection
//! failures map to `StoreError::Unavailable` (503); the pool reconnects by itself.

mod catalog;
mod delivery;
mod endpoints;
mod keys;
mod operator;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use sqlx::postgres::{PgListener, PgPoolOptions};
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{
    ApiKeyRecord, AttemptRecord, AttemptView, ClaimRequest, Claimed, DeliveryFilter,
    DeliveryRecord, EndpointPatch, EndpointRecord, EventRecord, EventTypeRecord, NewEndpoint,
    NewEvent, Page, Published, Store, StoreError, StoreResult, SubcategoryRecord, WindowCounts,
};
use crate::domain::{KeyHash, OrgId, Timestamp};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");
/// The channel a publish notifies and every node listens on.
pub const WORK_CHANNEL: &str = "posthorn_work";

#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    pub async fn connect(url: &str, pool_size: u32) -> anyhow::Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(pool_size.max(2))
            .acquire_timeout(Duration::from_secs(3))
            .connect(url)
            .await
            .context("cannot connect to PostgreSQL")?;
        MIGRATOR
            .run(&pool)
            .await
            .context("cannot apply database migrations")?;
        Ok(Self { pool })
    }
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
            // 53300: too many connections.
            c.starts_with("08") || c.starts_with("57P0") || c == "53300"
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

/// True for errors after which the same transaction may simply be run again.
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
                tracing::debug!(error = %e, tries, "transient database error; running the transaction again");
                tokio::time::sleep(Duration::from_millis(5 << tries)).await;
            }
            other => return other.map_err(map_err),
        }
    }
}

/// A write transaction.
pub(super) async fn begin(
    pool: &PgPool,
) -> Result<sqlx::Transaction<'_, sqlx::Postgres>, sqlx::Error> {
    pool.begin().await
}

pub(super) fn org(raw: String) -> StoreResult<OrgId> {
    OrgId::parse(&raw).map_err(|e| StoreError::Other(anyhow::anyhow!(e)))
}

#[async_trait]
impl Store for PgStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(|e| StoreError::Unavailable(e.into()))
    }

    async fn meta_insert_if_absent(&self, key: &str, value: &[u8]) -> StoreResult<Vec<u8>> {
        sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
            .bind(key)
            .bind(value)
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
            .bind(key)
            .fetch_one(&self.pool)
            .await
            .map_err(map_err)
    }

    async fn ensure_org(&self, org: &OrgId, now: Timestamp) -> StoreResult<()> {
        keys::ensure_org(&self.pool, org, now).await
    }
    async fn count_active_api_keys(&self) -> StoreResult<u64> {
        keys::count_active(&self.pool).await
    }
    async fn insert_api_key(&self, key: &ApiKeyRecord) -> StoreResult<()> {
        keys::insert(&self.pool, key).await
    }
    async fn upsert_admin_key(&self, key: &ApiKeyRecord) -> StoreResult<()> {
        keys::upsert_admin(&self.pool, key).await
    }
    async fn find_api_key(&self, hash: &KeyHash) -> StoreResult<Option<ApiKeyRecord>> {
        keys::find(&self.pool, hash).await
    }
    async fn list_api_keys(&self, org: &OrgId) -> StoreResult<Vec<ApiKeyRecord>> {
        keys::list(&self.pool, org).await
    }
    async fn revoke_api_key(&self, org: &OrgId, id: &str, now: Timestamp) -> StoreResult<()> {
        keys::revoke(&self.pool, org, id, now).await
    }
    async fn hit_rate_window(&self, key_id: &str, window_ms: i64) -> StoreResult<Option<u32>> {
        keys::hit_rate_window(&self.pool, key_id, window_ms)
            .await
            .map(Some)
    }

    async fn list_event_types(&self, org: &OrgId) -> StoreResult<Vec<EventTypeRecord>> {
        catalog::list_types(&self.pool, org).await
    }
    async fn get_event_type(
        &self,
        org: &OrgId,
        name: &str,
    ) -> StoreResult<Option<EventTypeRecord>> {
        catalog::get_type(&self.pool, org, name).await
    }
    async fn create_event_type(
        &self,
        org: &OrgId,
        event_type: &EventTypeRecord,
        now: Timestamp,
    ) -> StoreResult<()> {
        catalog::create_type(&self.pool, org, event_type, now).await
    }
    async fn list_subcategories(
        &self,
        org: &OrgId,
        event_name: &str,
        after: Option<i64>,
        limit: u32,
    ) -> StoreResult<Page<SubcategoryRecord>> {
        catalog::list_subcategories(&self.pool, org, event_name, after, limit).await
    }
    async fn subcategory_exists(
        &self,
        org: &OrgId,
        event_name: &str,
        token: &str,
    ) -> StoreResult<bool> {
        catalog::subcategory_exists(&self.pool, org, event_name, token).await
    }
    async fn create_subcategory(
        &self,
        org: &OrgId,
        event_name: &str,
        token: &str,
        display_name: Option<&str>,
        now: Timestamp,
    ) -> StoreResult<SubcategoryRecord> {
        catalog::create_subcategory(&self.pool, org, event_name, token, display_name, now).await
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

    async fn publish(
        &self,
        events: &[NewEvent],
        now: Timestamp,
        idempotency_window_ms: i64,
    ) -> StoreResult<Vec<Published>> {
        retrying(|| delivery::publish(&self.pool, events, now, idempotency_window_ms)).await
    }
    async fn claim_due(&self, request: &ClaimRequest) -> StoreResult<Vec<Claimed>> {
        let rows = retrying(|| delivery::claim_due(&self.pool, request)).await?;
        rows.into_iter().map(delivery::claimed).collect()
    }
    async fn record_attempts(
        &self,
        records: &[AttemptRecord],
        now: Timestamp,
        disable_after_ms: i64,
    ) -> StoreResult<()> {
        retrying(|| delivery::record_attempts(&self.pool, records, now, disable_after_ms)).await
    }
    async fn release(&self, token: &str, delivery_ids: &[i64], at: Timestamp) -> StoreResult<()> {
        delivery::release(&self.pool, token, delivery_ids, at).await
    }
    async fn park_endpoint(
        &self,
        endpoint_uid: i64,
        now: Timestamp,
        until: Timestamp,
    ) -> StoreResult<()> {
        delivery::park_endpoint(&self.pool, endpoint_uid, now, until).await
    }
    async fn next_due(&self) -> StoreResult<Option<Timestamp>> {
        operator::next_due(&self.pool).await
    }
    async fn pending_count(&self) -> StoreResult<u64> {
        operator::pending_count(&self.pool).await
    }
    async fn expire_leases(&self, _now: Timestamp) -> StoreResult<()> {
        // Other nodes may hold live leases: they end on their own.
        Ok(())
    }

    async fn get_event(&self, org: &OrgId, event_id: &str) -> StoreResult<EventRecord> {
        operator::get_event(&self.pool, org, event_id).await
    }
    async fn event_deliveries(
        &self,
        org: &OrgId,
        event_id: &str,
    ) -> StoreResult<Vec<DeliveryRecord>> {
        operator::event_deliveries(&self.pool, org, event_id).await
    }
    async fn list_deliveries(
        &self,
        org: &OrgId,
        endpoint_uid: i64,
        filter: &DeliveryFilter,
    ) -> StoreResult<Page<DeliveryRecord>> {
        operator::list_deliveries(&self.pool, org, endpoint_uid, filter).await
    }
    async fn get_delivery(&self, org: &OrgId, delivery_id: i64) -> StoreResult<DeliveryRecord> {
        operator::get_delivery(&self.pool, org, delivery_id).await
    }
    async fn list_attempts(&self, org: &OrgId, delivery_id: i64) -> StoreResult<Vec<AttemptView>> {
        operator::list_attempts(&self.pool, org, delivery_id).await
    }
    async fn retry_delivery(
        &self,
        org: &OrgId,
        delivery_id: i64,
        now: Timestamp,
    ) -> StoreResult<DeliveryRecord> {
        operator::retry_delivery(&self.pool, org, delivery_id, now).await?;
        operator::get_delivery(&self.pool, org, delivery_id).await
    }
    async fn recover_failed(
        &self,
        org: &OrgId,
        endpoint_uid: i64,
        since: Timestamp,
        until: Option<Timestamp>,
        now: Timestamp,
    ) -> StoreResult<u64> {
        operator::recover_failed(&self.pool, org, endpoint_uid, since, until, now).await
    }
    async fn rotate_secret(
        &self,
        org: &OrgId,
        url: &str,
        sealed_secret: &[u8],
        old_expires: Timestamp,
        now: Timestamp,
    ) -> StoreResult<()> {
        operator::rotate_secret(&self.pool, org, url, sealed_secret, old_expires, now).await
    }
    async fn endpoint_stats(
        &self,
        endpoint_uid: i64,
        since: &[Timestamp],
    ) -> StoreResult<Vec<WindowCounts>> {
        operator::endpoint_stats(&self.pool, endpoint_uid, since).await
    }
    async fn prune(&self, cutoff: Timestamp, batch: u32) -> StoreResult<u64> {
        operator::prune(&self.pool, cutoff, batch).await
    }

    async fn watch(&self, wake: Arc<Notify>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                e = listen_until_error(&self.pool, &wake) => {
                    tracing::warn!(error = %e, "LISTEN connection lost; reconnecting");
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
}

/// Wakes `wake` on every notification of [`WORK_CHANNEL`] until the connection fails.
async fn listen_until_error(pool: &PgPool, wake: &Notify) -> sqlx::Error {
    let mut listener = match PgListener::connect_with(pool).await {
        Ok(listener) => listener,
        Err(e) => return e,
    };
    if let Err(e) = listener.listen(WORK_CHANNEL).await {
        return e;
    }
    // Anything queued while nobody listened is picked up now.
    wake.notify_one();
    loop {
        if let Err(e) = listener.recv().await {
            return e;
        }
        wake.notify_one();
    }
}
