//! Start-up and shutdown of `posthorn serve`: open the store, prove the master key,
//! assemble the state, bind, make sure someone can sign in, then serve and deliver
//! until asked to stop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::app::AppState;
use crate::config::ServeConfig;
use crate::crypto::{MasterKey, KEY_CHECK_AAD, KEY_CHECK_PLAINTEXT};
use crate::delivery::{Dispatcher, Engine};
use crate::domain::schema::SchemaChecks;
use crate::domain::OrgId;
use crate::http::ratelimit::{FailedAuthLimiter, PortalLimits, RateLimiter};
use crate::publisher::Publisher;
use crate::store::{Access, DynStore};
use crate::telemetry::Metrics;

/// A bound, ready server: the listener is open and the store migrated.
pub struct Server {
    listener: TcpListener,
    router: Router,
    store: DynStore,
    engine: Arc<Engine>,
    dispatcher: Option<Dispatcher>,
    grace: Duration,
    connections: crate::config::ConnectionConfig,
}

/// Finds the master key and proves it is the one this database was sealed with. A key
/// given in the configuration is parsed before anything is opened.
async fn master_key(
    config: &ServeConfig,
    given: Option<MasterKey>,
    store: &DynStore,
) -> anyhow::Result<MasterKey> {
    let key = match (given, &config.master_key_file) {
        (Some(key), _) => key,
        (None, Some(path)) => MasterKey::load_or_create_file(path)?,
        (None, None) => match store.default_master_key_file() {
            Some(path) => MasterKey::load_or_create_file(&path)?,
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

impl Server {
    pub async fn bind(config: ServeConfig) -> anyhow::Result<Self> {
        config.validate()?;
        let given = match config.master_key.as_deref().filter(|k| !k.is_empty()) {
            Some(text) => Some(MasterKey::parse(text).context("POSTHORN_MASTER_KEY")?),
            None => None,
        };
        let operator = config
            .operator_org
            .as_deref()
            .filter(|o| !o.is_empty())
            .map(OrgId::parse)
            .transpose()
            .map_err(|e| anyhow::anyhow!("POSTHORN_OPERATOR_ORG (--operator-org) {e}"))?;
        let store = crate::store::open(&config.database, Access::Serve, operator).await?;
        let master_key = master_key(&config, given, &store).await?;
        let metrics = Arc::new(Metrics::new());
        let engine = Arc::new(Engine::new(
            store.clone(),
            master_key.clone(),
            config.delivery.clone(),
            config.allow_private_targets,
            metrics.clone(),
        )?);
        let (dispatcher, intake) = match config.workers {
            true => {
                let (dispatcher, intake) = engine.dispatcher();
                (Some(dispatcher), Some(intake))
            }
            false => (None, None),
        };
        let state = AppState {
            publisher: Publisher::start_bounded(
                store.clone(),
                intake,
                config.fan_out.max_deliveries_per_request.into(),
            ),
            fan_out: crate::fan_out::FanOut::new(&config.fan_out),
            streams: crate::http::streams::Streams::new(
                config.streams.clone(),
                config.connections.max_connections,
                store.clone(),
                metrics.clone(),
            ),
            schema_checks: SchemaChecks::new(
                config
                    .validation
                    .threads
                    .unwrap_or_else(SchemaChecks::default_threads),
                config.validation.budget,
            ),
            limiter: RateLimiter::new(config.rate_limit, config.rate_limit_burst).map(Arc::new),
            failed_auth: FailedAuthLimiter::new(config.failed_auth_limit).map(Arc::new),
            portal_limits: Arc::new(PortalLimits::new(&config)),
            store: store.clone(),
            master_key,
            config: Arc::new(config),
            metrics,
            engine: engine.clone(),
        };
        // Listen before the first-start key is minted, so that a busy port does not
        // print a key that is never usable through this start.
        let listen = state.config.listen;
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        crate::bootstrap::run(&state.store, &state.config).await?;
        let grace = Duration::from_secs(state.config.shutdown_grace_secs);
        let connections = state.config.connections.clone();
        Ok(Self {
            listener,
            router: crate::http::router(state.clone(), crate::web::router(&state)),
            store,
            engine,
            dispatcher,
            grace,
            connections,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// The delivery engine (for tests that drive a dispatcher of their own on a server
    /// without workers).
    pub fn engine(&self) -> Arc<Engine> {
        self.engine.clone()
    }

    /// Serves and delivers until `shutdown` is cancelled, then lets requests and
    /// attempts in flight finish within the grace period (unfinished attempts are
    /// released to be made again).
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let watching = {
            let (store, stop) = (self.store.clone(), shutdown.clone());
            tokio::spawn(async move { store.watch(stop).await })
        };
        // Listener streams never finish by themselves: they end when shutdown begins.
        let tunnels = self.engine.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            stop.cancelled().await;
            tunnels.tunnels.stop.cancel();
        });
        let delivering = self
            .dispatcher
            .map(|d| self.engine.spawn(d, shutdown.clone(), self.grace));
        let served = tokio::spawn(crate::http::conn::serve(
            self.listener,
            self.router,
            self.connections,
            shutdown.clone(),
            self.grace,
        ))
        .await
        .context("server task failed");
        if let Some(delivering) = delivering {
            delivering.await.context("delivery engine failed")?;
        }
        let _ = watching.await;
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
