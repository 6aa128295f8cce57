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
mod flow;
mod listen;
mod log;
mod notices;
mod publish;
mod queue;
mod store;
mod web;

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
    DeliveryRecord, EndpointPatch, EndpointRecord, EventRecord, EventTypeChange, EventTypeRecord,
    EventTypeVersion, HealthPolicy, KeyInsert, Log, NewEndpoint, Page, PublishBatch, PublishResult,
    Queue, Store, StoreError, StoreResult, SubcategoryRecord, WindowCounts,
};
use super::{BucketCounts, OrgDeliveryFilter, Web, WebSessionRecord};
use crate::domain::{
    ClaimToken, DeliveryId, EndpointUid, EventId, KeyHash, OrgId, PublicIds, Timestamp,
};

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
    /// Where operational events are stored besides their own org.
    operator: Option<OrgId>,
    ids: PublicIds,
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
    pub async fn connect(
        url: &str,
        pool_size: u32,
        operator: Option<OrgId>,
    ) -> anyhow::Result<Self> {
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
        let meta = |key: &'static str| {
            sqlx::query_scalar::<_, Vec<u8>>("SELECT value FROM meta WHERE key = $1")
                .bind(key)
                .fetch_one(&pool)
        };
        let ids = super::public_ids_from(
            &meta("delivery_id_key").await?,
            &meta("legacy_delivery_ids_upto").await?,
        )?;
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
            operator,
            ids,
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
