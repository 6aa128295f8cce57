//! The embedded SQLite store.
//!
//! Policy: WAL journal, foreign keys on. Every write runs on one writer thread that owns
//! the only write connection (`thread.rs`), one message per operation, inside `BEGIN
//! IMMEDIATE`; commits acknowledged to a client wait for fsync (`synchronous=FULL`), the
//! queue's own bookkeeping does not. Reads run on a few read-only connections and never
//! wait for the writer. A file is served by one `posthorn serve` at a time (it holds
//! `<database>.lock`), so caches of what only this process changes are exact, and the
//! leases found at start belong to a process that is gone. Other processes on the file
//! (the `keys create` command) only add keys, waiting on the busy timeout. The database
//! and the master key file beside it are created mode 0600.

mod admin;
pub mod backup;
mod endpoints;
mod log;
mod migrate;
mod publish;
mod queue;
mod retention;
mod sql;
mod thread;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use rusqlite::Connection;
use tokio::sync::Notify;

use self::thread::{Readers, Writer, BUSY_TIMEOUT};
use super::cache::Cache;
use super::{
    Access, Admin, ApiKeyRecord, AttemptRecord, AttemptView, ClaimRequest, Claimed, DeliveryFilter,
    DeliveryRecord, EndpointPatch, EndpointRecord, EventRecord, EventTypeRecord, KeyInsert, Log,
    NewEndpoint, Page, PublishBatch, PublishResult, Queue, Store, StoreResult, SubcategoryRecord,
    WindowCounts,
};
use crate::domain::{ClaimToken, DeliveryId, EndpointUid, EventId, KeyHash, OrgId, Timestamp};

pub struct SqliteStore {
    path: PathBuf,
    writer: Writer,
    readers: Arc<Readers>,
    cache: Arc<Cache>,
    wake: Arc<Notify>,
    /// Held while serving: one process per file.
    _lock: Option<File>,
}

/// The file an SQLite URL names (`sqlite://FILE` or `sqlite:FILE`, options after `?`
/// ignored).
fn file_of(url: &str) -> anyhow::Result<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    let path = rest.split('?').next().unwrap_or(rest);
    if path.is_empty() || path.contains(":memory:") {
        anyhow::bail!(
            "POSTHORN_DATABASE_URL {url:?} names no file: posthorn's queue must survive a restart, so give sqlite://FILE"
        );
    }
    Ok(path.into())
}

fn beside(db: &Path, suffix: &str) -> PathBuf {
    let mut path = db.as_os_str().to_owned();
    path.push(suffix);
    path.into()
}

/// Creates the database file readable by its owner only (SQLite gives its WAL and
/// shared-memory files the same mode), unless it exists.
fn create_private(path: &Path) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => {
            Err(e).with_context(|| format!("cannot create the SQLite database {}", path.display()))
        }
    }
}

/// Takes an exclusive lock on `<database>.lock`: a second `serve` on the same file
/// would void this one's leases and miss its cache updates.
fn lock(db: &Path) -> anyhow::Result<File> {
    let path = beside(db, ".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| {
            format!(
                "cannot open the SQLite database's lock file {}",
                path.display()
            )
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "another `posthorn serve` is using this SQLite database ({} is locked); \
             serve one SQLite file from one process, or use PostgreSQL for several",
            path.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}

fn open_writer(path: &Path) -> anyhow::Result<Connection> {
    let mut conn = Connection::open(path)
        .with_context(|| format!("cannot open SQLite database {}", path.display()))?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    anyhow::ensure!(
        mode.eq_ignore_ascii_case("wal"),
        "cannot switch {} to WAL",
        path.display()
    );
    conn.pragma_update(None, "foreign_keys", true)?;
    // Transient indexes (an IN list, a sort) stay in memory instead of temporary files.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.set_prepared_statement_cache_capacity(64);
    migrate::run(&mut conn)?;
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `url` and applies migrations.
    pub async fn open(url: &str, access: Access) -> anyhow::Result<Self> {
        let path = file_of(url)?;
        let opened = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || -> anyhow::Result<(Connection, Option<File>)> {
                create_private(&path)?;
                let lock = match access {
                    Access::Serve => Some(lock(&path)?),
                    Access::Tool => None,
                };
                let conn = open_writer(&path)?;
                if access == Access::Serve {
                    queue::expire_leases(&conn, Timestamp::now())
                        .context("ending the leases of the previous process")?;
                }
                Ok((conn, lock))
            })
            .await
            .context("opening the SQLite database")??
        };
        let (conn, lock) = opened;
        let wake = Arc::new(Notify::new());
        Ok(Self {
            writer: Writer::start(conn, wake.clone())?,
            readers: Readers::new(path.clone()),
            path,
            cache: Default::default(),
            wake,
            _lock: lock,
        })
    }
}

impl Store for SqliteStore {
    fn default_master_key_file(&self) -> Option<PathBuf> {
        Some(beside(&self.path, ".master-key"))
    }

    fn write_concurrency(&self) -> usize {
        4
    }
}

#[async_trait]
impl Queue for SqliteStore {
    async fn publish(&self, batch: PublishBatch) -> StoreResult<PublishResult> {
        // Room taken for deliveries whose commit failed is given back.
        let budget = batch.lease.as_ref().map(|l| l.budget.clone());
        let give_back = move |result: PublishResult| {
            for c in result.leased.iter().filter(|_| budget.is_some()) {
                budget.iter().for_each(|b| b.give_back(c.endpoint.uid));
            }
        };
        self.writer
            .run_undoable(true, move |w| publish::publish(w, batch), give_back)
            .await
    }

    async fn claim_due(&self, request: &ClaimRequest) -> StoreResult<Vec<Claimed>> {
        let request = request.clone();
        self.writer
            .run(false, move |w| queue::claim_due(w, &request))
            .await
    }

    async fn record_attempts(
        &self,
        records: Arc<[AttemptRecord]>,
        now: Timestamp,
        disable_after: Duration,
    ) -> StoreResult<()> {
        self.writer
            .run(false, move |w| {
                queue::record_attempts(w, &records, now, disable_after)
            })
            .await
    }

    async fn release(
        &self,
        token: ClaimToken,
        deliveries: Vec<DeliveryId>,
        at: Timestamp,
    ) -> StoreResult<()> {
        self.writer
            .run(false, move |w| queue::release(w, token, &deliveries, at))
            .await
    }

    async fn park_endpoint(
        &self,
        endpoint: EndpointUid,
        now: Timestamp,
        until: Timestamp,
    ) -> StoreResult<()> {
        self.writer
            .run(false, move |w| {
                queue::park_endpoint(w, endpoint, now, until)
            })
            .await
    }

    async fn retry_delivery(
        &self,
        org: &OrgId,
        delivery: DeliveryId,
        now: Timestamp,
    ) -> StoreResult<DeliveryRecord> {
        let org = org.clone();
        self.writer
            .run(true, move |w| queue::retry_delivery(w, &org, delivery, now))
            .await
    }

    async fn recover_failed(
        &self,
        org: &OrgId,
        endpoint: EndpointUid,
        since: Timestamp,
        until: Option<Timestamp>,
        now: Timestamp,
    ) -> StoreResult<u64> {
        let org = org.clone();
        self.writer
            .run(true, move |w| {
                queue::recover_failed(w, &org, endpoint, since, until, now)
            })
            .await
    }

    async fn prune(&self, cutoff: Timestamp, batch: u32) -> StoreResult<u64> {
        self.writer
            .run(false, move |w| retention::prune(w, cutoff, batch))
            .await
    }

    async fn next_due(&self) -> StoreResult<Option<Timestamp>> {
        self.readers
            .run(|c| {
                let ms: Option<i64> = sql::scalar(
                    c,
                    "SELECT MIN(next_attempt_ms) FROM deliveries WHERE state = 'pending'",
                    [],
                )?;
                Ok(ms.map(Timestamp::from_millis))
            })
            .await
    }

    async fn pending_count(&self) -> StoreResult<u64> {
        self.readers
            .run(|c| {
                let n: i64 = sql::scalar(
                    c,
                    "SELECT COUNT(*) FROM deliveries WHERE state = 'pending'",
                    [],
                )?;
                Ok(u64::try_from(n).unwrap_or(0))
            })
            .await
    }

    fn wakeups(&self) -> Arc<Notify> {
        self.wake.clone()
    }
}

#[async_trait]
impl Admin for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        self.readers
            .run(|c| sql::scalar::<i64>(c, "SELECT 1", []).map(|_| ()))
            .await
    }

    async fn meta_insert_if_absent(&self, key: &str, value: &[u8]) -> StoreResult<Vec<u8>> {
        let (key, value) = (key.to_owned(), value.to_vec());
        self.writer
            .run(true, move |w| {
                admin::meta_insert_if_absent(w.conn, &key, &value)
            })
            .await
    }

    async fn ensure_org(&self, org: &OrgId, now: Timestamp) -> StoreResult<()> {
        let owned = org.clone();
        self.writer
            .run(true, move |w| admin::ensure_org(w.conn, &owned, now))
            .await?;
        self.cache.forget_catalog(org);
        Ok(())
    }

    async fn count_active_api_keys(&self) -> StoreResult<u64> {
        self.readers.run(admin::count_active_keys).await
    }

    async fn insert_api_key(&self, key: &ApiKeyRecord) -> StoreResult<()> {
        let key = key.clone();
        self.writer
            .run(true, move |w| admin::insert_key(w.conn, &key))
            .await
    }

    async fn insert_api_key_if_absent(&self, key: &ApiKeyRecord) -> StoreResult<KeyInsert> {
        let owned = key.clone();
        let inserted = self
            .writer
            .run(true, move |w| admin::insert_key_if_absent(w.conn, &owned))
            .await?;
        self.cache.forget_key_hash(&key.hash);
        Ok(inserted)
    }

    async fn find_api_key(&self, hash: &KeyHash) -> StoreResult<Option<ApiKeyRecord>> {
        let generation = match self.cache.key(hash) {
            Ok(record) => return Ok(Some(record)),
            Err(generation) => generation,
        };
        let owned = *hash;
        let found = self
            .readers
            .run(move |c| admin::find_key(c, &owned))
            .await?;
        if let Some(record) = &found {
            self.cache.put_key(record, generation);
        }
        Ok(found)
    }

    async fn list_api_keys(&self, org: &OrgId) -> StoreResult<Vec<ApiKeyRecord>> {
        let org = org.clone();
        self.readers.run(move |c| admin::list_keys(c, &org)).await
    }

    async fn revoke_api_key(&self, org: &OrgId, id: &str, now: Timestamp) -> StoreResult<()> {
        let (org, owned) = (org.clone(), id.to_owned());
        let revoked = self
            .writer
            .run(true, move |w| admin::revoke_key(w.conn, &org, &owned, now))
            .await;
        self.cache.forget_key_id(id);
        revoked
    }

    async fn list_event_types(&self, org: &OrgId) -> StoreResult<Arc<Vec<EventTypeRecord>>> {
        if let Some(types) = self.cache.catalog(org) {
            return Ok(types);
        }
        let owned = org.clone();
        let types = self
            .readers
            .run(move |c| admin::list_types(c, &owned))
            .await?;
        Ok(self.cache.put_catalog(org, types))
    }

    async fn get_event_type(
        &self,
        org: &OrgId,
        name: &str,
    ) -> StoreResult<Option<EventTypeRecord>> {
        let (org, name) = (org.clone(), name.to_owned());
        self.readers
            .run(move |c| admin::get_type(c, &org, &name))
            .await
    }

    async fn create_event_type(
        &self,
        org: &OrgId,
        event_type: &EventTypeRecord,
        now: Timestamp,
    ) -> StoreResult<()> {
        let (owned, event_type) = (org.clone(), event_type.clone());
        let created = self
            .writer
            .run(true, move |w| {
                admin::create_type(w.conn, &owned, &event_type, now)
            })
            .await;
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
        let (org, event_name) = (org.clone(), event_name.to_owned());
        self.readers
            .run(move |c| admin::list_subcategories(c, &org, &event_name, after, limit))
            .await
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
        let (owned, name, tok) = (org.clone(), event_name.to_owned(), token.to_owned());
        let exists = self
            .readers
            .run(move |c| admin::subcategory_exists(c, &owned, &name, &tok))
            .await?;
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
        let (org, event_name, token) = (org.clone(), event_name.to_owned(), token.to_owned());
        let display_name = display_name.map(str::to_owned);
        self.writer
            .run(true, move |w| {
                admin::create_subcategory(
                    w.conn,
                    &org,
                    &event_name,
                    &token,
                    display_name.as_deref(),
                    now,
                )
            })
            .await
    }

    async fn create_endpoint(&self, new: &NewEndpoint) -> StoreResult<EndpointRecord> {
        let new = new.clone();
        self.writer
            .run(true, move |w| {
                w.caches.endpoints_changed();
                endpoints::create(w.conn, &new)
            })
            .await
    }

    async fn get_endpoint(&self, org: &OrgId, url: &str) -> StoreResult<EndpointRecord> {
        let (org, url) = (org.clone(), url.to_owned());
        self.readers
            .run(move |c| endpoints::get(c, &org, &url))
            .await
    }

    async fn list_endpoints(
        &self,
        org: &OrgId,
        after: Option<i64>,
        limit: u32,
    ) -> StoreResult<Page<EndpointRecord>> {
        let org = org.clone();
        self.readers
            .run(move |c| endpoints::list(c, &org, after, limit))
            .await
    }

    async fn update_endpoint(
        &self,
        org: &OrgId,
        url: &str,
        patch: &EndpointPatch,
    ) -> StoreResult<EndpointRecord> {
        let (org, url, patch) = (org.clone(), url.to_owned(), patch.clone());
        self.writer
            .run(true, move |w| {
                w.caches.endpoints_changed();
                endpoints::update(w.conn, &org, &url, &patch)
            })
            .await
    }

    async fn delete_endpoint(&self, org: &OrgId, url: &str, now: Timestamp) -> StoreResult<()> {
        let (org, url) = (org.clone(), url.to_owned());
        self.writer
            .run(true, move |w| {
                w.caches.endpoints_changed();
                endpoints::delete(w.conn, &org, &url, now)
            })
            .await
    }

    async fn rotate_secret(
        &self,
        org: &OrgId,
        url: &str,
        sealed_secret: &[u8],
        old_expires: Timestamp,
        now: Timestamp,
    ) -> StoreResult<()> {
        let (org, url, sealed) = (org.clone(), url.to_owned(), sealed_secret.to_vec());
        self.writer
            .run(true, move |w| {
                w.caches.endpoints_changed();
                endpoints::rotate_secret(w.conn, &org, &url, &sealed, old_expires, now)
            })
            .await
    }
}

#[async_trait]
impl Log for SqliteStore {
    async fn get_event(&self, org: &OrgId, event: &EventId) -> StoreResult<EventRecord> {
        let (org, event) = (org.clone(), event.clone());
        self.readers
            .run(move |c| log::get_event(c, &org, &event))
            .await
    }

    async fn event_deliveries(
        &self,
        org: &OrgId,
        event: &EventId,
    ) -> StoreResult<Vec<DeliveryRecord>> {
        let (org, event) = (org.clone(), event.clone());
        self.readers
            .run(move |c| log::event_deliveries(c, &org, &event))
            .await
    }

    async fn list_deliveries(
        &self,
        org: &OrgId,
        endpoint: EndpointUid,
        filter: &DeliveryFilter,
    ) -> StoreResult<Page<DeliveryRecord>> {
        let (org, filter) = (org.clone(), filter.clone());
        self.readers
            .run(move |c| log::list_deliveries(c, &org, endpoint, &filter))
            .await
    }

    async fn get_delivery(&self, org: &OrgId, delivery: DeliveryId) -> StoreResult<DeliveryRecord> {
        let org = org.clone();
        self.readers
            .run(move |c| log::get_delivery(c, &org, delivery))
            .await
    }

    async fn list_attempts(
        &self,
        org: &OrgId,
        delivery: DeliveryId,
    ) -> StoreResult<Vec<AttemptView>> {
        let org = org.clone();
        self.readers
            .run(move |c| log::list_attempts(c, &org, delivery))
            .await
    }

    async fn endpoint_stats(
        &self,
        endpoint: EndpointUid,
        since: &[Timestamp],
    ) -> StoreResult<Vec<WindowCounts>> {
        let since = since.to_vec();
        self.readers
            .run(move |c| log::endpoint_stats(c, endpoint, &since))
            .await
    }
}
