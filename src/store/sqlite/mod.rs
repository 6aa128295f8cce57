//! The embedded SQLite store.
//!
//! Policy: WAL journal, `synchronous=FULL` (an acknowledged write survives power loss),
//! foreign keys on. All writes go through a one-connection writer pool and open their
//! transactions with `BEGIN IMMEDIATE`, so writers queue instead of failing; reads use a
//! separate pool and never wait for writers. Another process on the same file (the
//! `keys create` CLI) waits on the busy timeout.

mod cache;
mod catalog;
mod delivery;
mod endpoints;
mod keys;
mod operator;

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool};

use super::{
    ApiKeyRecord, AttemptRecord, AttemptView, ClaimRequest, Claimed, DeliveryFilter,
    DeliveryRecord, EndpointPatch, EndpointRecord, EventRecord, EventTypeRecord, NewEndpoint,
    NewEvent, Page, Published, Store, StoreError, StoreResult, SubcategoryRecord, WindowCounts,
};
use crate::domain::{KeyHash, OrgId, Timestamp};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

#[derive(Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    cache: std::sync::Arc<cache::Cache>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `url` and applies migrations.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .with_context(|| "invalid SQLite database URL")?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.clone())
            .await
            .with_context(|| format!("cannot open SQLite database {url}"))?;
        MIGRATOR
            .run(&writer)
            .await
            .context("cannot apply database migrations")?;
        let reader = if in_memory {
            writer.clone()
        } else {
            SqlitePoolOptions::new()
                .max_connections(4)
                .acquire_timeout(Duration::from_secs(30))
                .connect_with(options.read_only(true))
                .await
                .with_context(|| format!("cannot open SQLite database {url}"))?
        };
        Ok(Self {
            writer,
            reader,
            cache: Default::default(),
        })
    }
}

impl SqliteStore {
    /// The writer connection, set so that commits do not wait for fsync. For the queue's
    /// own bookkeeping only (claims, outcomes, releases, parking): losing such a commit
    /// to a power cut makes a delivery happen again, never lose it, and the next durable
    /// commit (a publish) syncs the WAL they are in anyway.
    async fn relaxed_writer(&self) -> StoreResult<PoolConnection<Sqlite>> {
        let mut conn = self.writer.acquire().await.map_err(map_err)?;
        sqlx::query("PRAGMA synchronous = NORMAL")
            .execute(&mut *conn)
            .await
            .map_err(map_err)?;
        Ok(conn)
    }

    /// Puts the writer connection back to fsync-on-commit, the default every other
    /// write relies on.
    async fn restore(conn: &mut PoolConnection<Sqlite>) -> StoreResult<()> {
        sqlx::query("PRAGMA synchronous = FULL")
            .execute(&mut **conn)
            .await
            .map(|_| ())
            .map_err(map_err)
    }
}

/// Maps a driver error to the store's error kinds.
pub(super) fn map_err(err: sqlx::Error) -> StoreError {
    match err {
        sqlx::Error::RowNotFound => StoreError::NotFound,
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
            StoreError::Unavailable(err.into())
        }
        other => StoreError::Other(other.into()),
    }
}

/// A write transaction: `BEGIN IMMEDIATE`, so writers queue instead of failing.
pub(super) async fn begin(pool: &SqlitePool) -> Result<sqlx::Transaction<'_, Sqlite>, sqlx::Error> {
    pool.begin_with("BEGIN IMMEDIATE").await
}

pub(super) fn org(raw: String) -> StoreResult<OrgId> {
    OrgId::parse(&raw).map_err(|e| StoreError::Other(anyhow::anyhow!(e)))
}

/// True when `err` is a violation of a UNIQUE or PRIMARY KEY constraint.
pub(super) fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.reader)
            .await
            .map(|_| ())
            .map_err(|e| StoreError::Unavailable(e.into()))
    }

    async fn meta_insert_if_absent(&self, key: &str, value: &[u8]) -> StoreResult<Vec<u8>> {
        sqlx::query("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING")
            .bind(key)
            .bind(value)
            .execute(&self.writer)
            .await
            .map_err(map_err)?;
        sqlx::query_scalar("SELECT value FROM meta WHERE key = ?")
            .bind(key)
            .fetch_one(&self.writer)
            .await
            .map_err(map_err)
    }

    async fn ensure_org(&self, org: &OrgId, now: Timestamp) -> StoreResult<()> {
        keys::ensure_org(&self.writer, org, now).await?;
        self.cache.forget_catalog(org);
        Ok(())
    }
    async fn count_active_api_keys(&self) -> StoreResult<u64> {
        keys::count_active(&self.reader).await
    }
    async fn insert_api_key(&self, key: &ApiKeyRecord) -> StoreResult<()> {
        keys::insert(&self.writer, key).await
    }
    async fn upsert_admin_key(&self, key: &ApiKeyRecord) -> StoreResult<()> {
        keys::upsert_admin(&self.writer, key).await?;
        self.cache.forget_key_hash(&key.hash);
        Ok(())
    }
    async fn find_api_key(&self, hash: &KeyHash) -> StoreResult<Option<ApiKeyRecord>> {
        let generation = match self.cache.key(hash) {
            Ok(record) => return Ok(Some(record)),
            Err(generation) => generation,
        };
        let found = keys::find(&self.reader, hash).await?;
        if let Some(record) = &found {
            self.cache.put_key(record, generation);
        }
        Ok(found)
    }
    async fn list_api_keys(&self, org: &OrgId) -> StoreResult<Vec<ApiKeyRecord>> {
        keys::list(&self.reader, org).await
    }
    async fn revoke_api_key(&self, org: &OrgId, id: &str, now: Timestamp) -> StoreResult<()> {
        keys::revoke(&self.writer, org, id, now).await?;
        self.cache.forget_key_id(id);
        Ok(())
    }

    async fn list_event_types(&self, org: &OrgId) -> StoreResult<Vec<EventTypeRecord>> {
        if let Some(types) = self.cache.catalog(org) {
            return Ok(types.as_ref().clone());
        }
        let types = catalog::list_types(&self.reader, org).await?;
        Ok(self.cache.put_catalog(org, types).as_ref().clone())
    }
    async fn get_event_type(
        &self,
        org: &OrgId,
        name: &str,
    ) -> StoreResult<Option<EventTypeRecord>> {
        catalog::get_type(&self.reader, org, name).await
    }
    async fn create_event_type(
        &self,
        org: &OrgId,
        event_type: &EventTypeRecord,
        now: Timestamp,
    ) -> StoreResult<()> {
        let created = catalog::create_type(&self.writer, org, event_type, now).await;
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
        catalog::list_subcategories(&self.reader, org, event_name, after, limit).await
    }
    async fn subcategory_exists(
        &self,
        org: &OrgId,
        event_name: &str,
        token: &str,
    ) -> StoreResult<bool> {
        if self.cache.has_subcategory(org, event_name, token) {
            return Ok(true);
        }
        let exists = catalog::subcategory_exists(&self.reader, org, event_name, token).await?;
        if exists {
            self.cache.put_subcategory(org, event_name, token);
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
        catalog::create_subcategory(&self.writer, org, event_name, token, display_name, now).await
    }

    async fn create_endpoint(&self, new: &NewEndpoint) -> StoreResult<EndpointRecord> {
        endpoints::create(&self.writer, new).await
    }
    async fn get_endpoint(&self, org: &OrgId, url: &str) -> StoreResult<EndpointRecord> {
        endpoints::get(&self.reader, org, url).await
    }
    async fn list_endpoints(
        &self,
        org: &OrgId,
        after: Option<i64>,
        limit: u32,
    ) -> StoreResult<Page<EndpointRecord>> {
        endpoints::list(&self.reader, org, after, limit).await
    }
    async fn update_endpoint(
        &self,
        org: &OrgId,
        url: &str,
        patch: &EndpointPatch,
    ) -> StoreResult<EndpointRecord> {
        endpoints::update(&self.writer, org, url, patch).await
    }
    async fn delete_endpoint(&self, org: &OrgId, url: &str, now: Timestamp) -> StoreResult<()> {
        endpoints::delete(&self.writer, org, url, now).await
    }

    async fn publish(
        &self,
        events: &[NewEvent],
        now: Timestamp,
        idempotency_window_ms: i64,
    ) -> StoreResult<Vec<Published>> {
        delivery::publish(&self.writer, events, now, idempotency_window_ms).await
    }
    async fn claim_due(&self, request: &ClaimRequest) -> StoreResult<Vec<Claimed>> {
        let mut conn = self.relaxed_writer().await?;
        let result = delivery::claim_due(&mut conn, request).await;
        Self::restore(&mut conn).await?;
        result
    }
    async fn record_attempts(
        &self,
        records: &[AttemptRecord],
        now: Timestamp,
        disable_after_ms: i64,
    ) -> StoreResult<()> {
        let mut conn = self.relaxed_writer().await?;
        let result = delivery::record_attempts(&mut conn, records, now, disable_after_ms).await;
        Self::restore(&mut conn).await?;
        result
    }
    async fn release(&self, token: &str, delivery_ids: &[i64], at: Timestamp) -> StoreResult<()> {
        let mut conn = self.relaxed_writer().await?;
        let result = delivery::release(&mut conn, token, delivery_ids, at).await;
        Self::restore(&mut conn).await?;
        result
    }
    async fn park_endpoint(
        &self,
        endpoint_uid: i64,
        now: Timestamp,
        until: Timestamp,
    ) -> StoreResult<()> {
        let mut conn = self.relaxed_writer().await?;
        let result = delivery::park_endpoint(&mut conn, endpoint_uid, now, until).await;
        Self::restore(&mut conn).await?;
        result
    }
    async fn next_due(&self) -> StoreResult<Option<Timestamp>> {
        operator::next_due(&self.reader).await
    }
    async fn pending_count(&self) -> StoreResult<u64> {
        operator::pending_count(&self.reader).await
    }
    async fn expire_leases(&self, now: Timestamp) -> StoreResult<()> {
        delivery::expire_leases(&self.writer, now).await
    }
    async fn get_event(&self, org: &OrgId, event_id: &str) -> StoreResult<EventRecord> {
        operator::get_event(&self.reader, org, event_id).await
    }
    async fn event_deliveries(
        &self,
        org: &OrgId,
        event_id: &str,
    ) -> StoreResult<Vec<DeliveryRecord>> {
        operator::event_deliveries(&self.reader, org, event_id).await
    }
    async fn list_deliveries(
        &self,
        org: &OrgId,
        endpoint_uid: i64,
        filter: &DeliveryFilter,
    ) -> StoreResult<Page<DeliveryRecord>> {
        operator::list_deliveries(&self.reader, org, endpoint_uid, filter).await
    }
    async fn get_delivery(&self, org: &OrgId, delivery_id: i64) -> StoreResult<DeliveryRecord> {
        operator::get_delivery(&self.reader, org, delivery_id).await
    }
    async fn list_attempts(&self, org: &OrgId, delivery_id: i64) -> StoreResult<Vec<AttemptView>> {
        operator::list_attempts(&self.reader, org, delivery_id).await
    }
    async fn retry_delivery(
        &self,
        org: &OrgId,
        delivery_id: i64,
        now: Timestamp,
    ) -> StoreResult<DeliveryRecord> {
        operator::retry_delivery(&self.writer, org, delivery_id, now).await?;
        operator::get_delivery(&self.writer, org, delivery_id).await
    }
    async fn recover_failed(
        &self,
        org: &OrgId,
        endpoint_uid: i64,
        since: Timestamp,
        until: Option<Timestamp>,
        now: Timestamp,
    ) -> StoreResult<u64> {
        operator::recover_failed(&self.writer, org, endpoint_uid, since, until, now).await
    }
    async fn rotate_secret(
        &self,
        org: &OrgId,
        url: &str,
        sealed_secret: &[u8],
        old_expires: Timestamp,
        now: Timestamp,
    ) -> StoreResult<()> {
        operator::rotate_secret(&self.writer, org, url, sealed_secret, old_expires, now).await
    }
    async fn endpoint_stats(
        &self,
        endpoint_uid: i64,
        since: &[Timestamp],
    ) -> StoreResult<Vec<WindowCounts>> {
        operator::endpoint_stats(&self.reader, endpoint_uid, since).await
    }
    async fn prune(&self, cutoff: Timestamp, batch: u32) -> StoreResult<u64> {
        operator::prune(&self.writer, cutoff, batch).await
    }
}
