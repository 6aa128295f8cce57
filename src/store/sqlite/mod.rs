//! The embedded SQLite store.
//!
//! Policy: WAL journal, foreign keys on. Every write runs on one writer thread that owns
//! the only write connection (`thread.rs`), one message per operation, inside `BEGIN
//! IMMEDIATE`; commits acknowledged to a client wait for fsync (`synchronous=FULL`), the
//! queue's own bookkeeping does not. Reads run on a few read-only connections and never
//! wait for the writer. A file is served by one `posthorn serve` at a time (it holds
//! `<database>.lock`), so caches of what only this process changes are exact, and the
//! leases found at start belong to a process that is gone. Other processes on the file
//! (the `keys create` command) only add keys, waiting on the busy timeout. The database,
//! the master key file and the lock file beside it are created mode 0600.

mod admin;
pub mod backup;
mod endpoints;
mod flow;
mod log;
mod migrate;
mod notices;
mod publish;
mod queue;
mod retention;
mod sql;
mod store;
mod store_log;
mod thread;
mod web;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use async_trait::async_trait;
use rusqlite::Connection;
use tokio::sync::Notify;

use self::thread::{Readers, Writer, BUSY_TIMEOUT};
use super::cache::Cache;
use super::{
    Access, Admin, ApiKeyRecord, AttemptRecord, AttemptView, ClaimRequest, Claimed, DeliveryFilter,
    DeliveryRecord, EndpointPatch, EndpointRecord, EventRecord, EventTypeChange, EventTypeRecord,
    EventTypeVersion, HealthPolicy, KeyInsert, Log, NewEndpoint, Page, PublishBatch, PublishResult,
    Queue, Store, StoreResult, SubcategoryRecord, WindowCounts,
};
use super::{BucketCounts, OrgDeliveryFilter, Web, WebSessionRecord};
use crate::domain::{
    ClaimToken, DeliveryId, EndpointUid, EventId, KeyHash, OrgId, PublicIds, Timestamp,
};

pub struct SqliteStore {
    path: PathBuf,
    writer: Writer,
    readers: Arc<Readers>,
    cache: Arc<Cache>,
    wake: Arc<Notify>,
    /// Held while serving: one process per file.
    _lock: Option<File>,
    /// Where operational events are stored besides their own org.
    operator: Option<OrgId>,
    /// How delivery ids are spelled outside (shared with the writer's notices).
    ids: Arc<PublicIds>,
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

/// Takes an exclusive lock on `<database>.lock` (created mode 0600, like the database):
/// a second `serve` on the same file would void this one's leases and miss its cache
/// updates.
fn lock(db: &Path) -> anyhow::Result<File> {
    let path = beside(db, ".lock");
    let mut options = std::fs::OpenOptions::new();
    options.create(true).truncate(false).write(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options.open(&path).with_context(|| {
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
    pub async fn open(url: &str, access: Access, operator: Option<OrgId>) -> anyhow::Result<Self> {
        let path = file_of(url)?;
        let opened = {
            let path = path.clone();
            tokio::task::spawn_blocking(
                move || -> anyhow::Result<(Connection, Option<File>, PublicIds)> {
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
                    let meta = |key: &str| -> anyhow::Result<Vec<u8>> {
                        Ok(
                            conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| {
                                r.get(0)
                            })?,
                        )
                    };
                    let ids = super::public_ids_from(
                        &meta("delivery_id_key")?,
                        &meta("legacy_delivery_ids_upto")?,
                    )?;
                    Ok((conn, lock, ids))
                },
            )
            .await
            .context("opening the SQLite database")??
        };
        let (conn, lock, ids) = opened;
        let wake = Arc::new(Notify::new());
        Ok(Self {
            writer: Writer::start(conn, wake.clone())?,
            readers: Readers::new(path.clone()),
            path,
            cache: Default::default(),
            wake,
            _lock: lock,
            operator,
            ids: Arc::new(ids),
        })
    }
}
