//! Application state, start-up and shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::ServeConfig;
use crate::crypto::{MasterKey, KEY_CHECK_AAD, KEY_CHECK_PLAINTEXT};
use crate::delivery::Engine;
use crate::domain::Timestamp;
use crate::http::ratelimit::RateLimiter;
use crate::publisher::Publisher;
use crate::store::DynStore;
use crate::telemetry::Metrics;

/// Everything a request handler needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: DynStore,
    pub master_key: MasterKey,
    pub config: Arc<ServeConfig>,
    pub metrics: Arc<Metrics>,
    pub limiter: Option<Arc<RateLimiter>>,
    /// Wakes the delivery dispatcher when work was queued.
    pub wake: Arc<Notify>,
    /// The delivery engine (its HTTP client also sends test events).
    pub engine: Arc<Engine>,
    /// Commits publishes in groups.
    pub publisher: Publisher,
    /// Held while serving an SQLite file: one process per file.
    _file_lock: Option<Arc<std::fs::File>>,
}

impl AppState {
    pub async fn new(config: ServeConfig) -> anyhow::Result<Self> {
        let store = crate::store::connect(&config.database).await?;
        let file_lock = lock_sqlite_file(&config.database.database_url)?;
        let master_key = load_master_key(&config, &store).await?;
        let limiter = RateLimiter::new(config.rate_limit, config.rate_limit_burst).map(Arc::new);
        let metrics = Arc::new(Metrics::new());
        let wake = Arc::new(Notify::new());
        let engine = Arc::new(Engine::new(
            store.clone(),
            master_key.clone(),
            config.delivery.clone(),
            config.allow_private_targets,
            metrics.clone(),
            wake.clone(),
        )?);
        let publisher = Publisher::start(store.clone(), wake.clone());
        Ok(Self {
            store,
            master_key,
            config: Arc::new(config),
            metrics,
            limiter,
            wake,
            engine,
            publisher,
            _file_lock: file_lock,
        })
    }
}

/// Takes an exclusive lock on `<database>.lock` for an SQLite file: a second `serve`
/// on the same file would void this one's leases and miss its cache updates.
fn lock_sqlite_file(url: &str) -> anyhow::Result<Option<Arc<std::fs::File>>> {
    let Some(db) = crate::store::sqlite_path(url) else {
        return Ok(None);
    };
    let mut path = db.into_os_string();
    path.push(".lock");
    let path = std::path::PathBuf::from(path);
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
        Ok(()) => Ok(Some(Arc::new(file))),
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

/// Finds the master key and proves it is the one this database was sealed with.
async fn load_master_key(config: &ServeConfig, store: &DynStore) -> anyhow::Result<MasterKey> {
    let key = match (&config.master_key, &config.master_key_file) {
        (Some(text), _) if !text.is_empty() => {
            MasterKey::parse(text).context("POSTHORN_MASTER_KEY")?
        }
        (_, Some(path)) => MasterKey::load_or_create_file(path)?,
        _ => match crate::store::sqlite_path(&config.database.database_url) {
            Some(db) => {
                let mut path = db.into_os_string();
                path.push(".master-key");
                MasterKey::load_or_create_file(std::path::Path::new(&path))?
            }
            None if config.database.database_url.starts_with("sqlite:") => MasterKey::random(),
            None => anyhow::bail!(
                "POSTHORN_MASTER_KEY is required with this database (every node must share it)"
            ),
        },
    };
    let check = key.seal(KEY_CHECK_PLAINTEXT, KEY_CHECK_AAD);
    let stored = store
        .meta_insert_if_absent("master_key_check", &check)
        .await
        .context("reading the master key check")?;
    key.open(&stored, KEY_CHECK_AAD).context(
        "the master key does not match the one this database's secrets were encrypted with",
    )?;
    Ok(key)
}

/// A bound, ready server: the listener is open and the store migrated.
pub struct Server {
    listener: TcpListener,
    router: Router,
    engine: Arc<Engine>,
    workers: bool,
    grace: Duration,
}

impl Server {
    pub async fn bind(config: ServeConfig) -> anyhow::Result<Self> {
        let state = AppState::new(config).await?;
        // Listen before the first-start key is minted, so that a busy port does not
        // print a key that is never usable through this start.
        let listen = state.config.listen;
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        crate::bootstrap::run(&state.store, &state.config).await?;
        let grace = Duration::from_secs(state.config.shutdown_grace_secs);
        if state.config.database.database_url.starts_with("sqlite:") {
            // One process serves an SQLite file: leases left by a previous process that
            // died are void, so its work is taken up at once instead of after the lease.
            state.store.expire_leases(Timestamp::now()).await?;
        }
        let engine = state.engine.clone();
        let workers = state.config.workers;
        Ok(Self {
            listener,
            router: crate::http::router(state),
            engine,
            workers,
            grace,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Serves and delivers until `shutdown` is cancelled, then lets requests and
    /// attempts in flight finish within the grace period (unfinished attempts are
    /// released to be made again).
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let delivering = self
            .workers
            .then(|| self.engine.spawn(shutdown.clone(), self.grace));
        let signal = shutdown.clone();
        let serving = axum::serve(self.listener, self.router)
            .with_graceful_shutdown(async move { signal.cancelled().await });
        let server = tokio::spawn(async move { serving.await });
        shutdown.cancelled().await;
        let served = match tokio::time::timeout(self.grace, server).await {
            Ok(joined) => joined
                .context("server task failed")?
                .context("server failed"),
            Err(_) => {
                tracing::warn!(
                    grace_secs = self.grace.as_secs(),
                    "requests still in flight at the end of the grace period"
                );
                Ok(())
            }
        };
        if let Some(delivering) = delivering {
            delivering.await.context("delivery engine failed")?;
        }
        served
    }
}

pub async fn serve(config: ServeConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let server = Server::bind(config).await?;
    tracing::info!(addr = %server.local_addr(), "posthorn listening");
    server.run(shutdown).await?;
    tracing::info!("posthorn stopped");
    Ok(())
}

/// Cancels `token` on SIGTERM or SIGINT.
pub async fn shutdown_on_signal(token: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for SIGTERM");
                    let _ = ctrl_c.await;
                    token.cancel();
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown requested");
    token.cancel();
}
