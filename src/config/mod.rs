//! Configuration: every option is a command-line flag and a `POSTHORN_*` environment
//! variable (clap derives both from one definition).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

mod bounds;

pub use bounds::{ConnectionConfig, FanOutConfig, StreamConfig, ValidationConfig};

/// Where the store lives. Shared by every command that opens the database.
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// Database URL: `sqlite://FILE` (embedded, the default) or `postgres://...`.
    #[arg(
        long = "database",
        alias = "database-url",
        env = "POSTHORN_DATABASE_URL",
        default_value = "sqlite://posthorn.db"
    )]
    pub database_url: String,

    /// Connections this process keeps to PostgreSQL.
    #[arg(long, env = "POSTHORN_DATABASE_POOL_SIZE", default_value_t = 16)]
    pub pool_size: u32,
}

impl DatabaseArgs {
    pub fn new(database_url: impl Into<String>) -> Self {
        Self {
            database_url: database_url.into(),
            pool_size: 16,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// Address the HTTP API listens on.
    #[arg(long, env = "POSTHORN_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub database: DatabaseArgs,

    /// Makes sure this API key exists as an admin key of the bootstrap org.
    #[arg(long, env = "POSTHORN_BOOTSTRAP_KEY", hide_env_values = true)]
    pub bootstrap_key: Option<String>,

    /// Org of the bootstrap key (and of the key minted on first start).
    #[arg(long, env = "POSTHORN_BOOTSTRAP_ORG", default_value = "o-default")]
    pub bootstrap_org: String,

    /// The operator org: its endpoints subscribed to operational events
    /// (`endpoint.disabled`, `delivery.failed`, ...) hear of every org's endpoints, not
    /// only its own. Unset: each org hears only of its own.
    #[arg(long, env = "POSTHORN_OPERATOR_ORG")]
    pub operator_org: Option<String>,

    /// Allow endpoint URLs on loopback and private networks (development and tests).
    #[arg(long, env = "POSTHORN_ALLOW_PRIVATE_TARGETS", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub allow_private_targets: bool,

    /// Key that encrypts endpoint secrets at rest: 64 hex digits or base64 of 32 bytes.
    /// Without it, on SQLite, a key file is created beside the database.
    #[arg(long, env = "POSTHORN_MASTER_KEY", hide_env_values = true)]
    pub master_key: Option<String>,

    /// Key file used when no master key is given (default: the database path + `.master-key`).
    #[arg(long, env = "POSTHORN_MASTER_KEY_FILE")]
    pub master_key_file: Option<PathBuf>,

    /// Largest accepted request body, in bytes.
    #[arg(long, env = "POSTHORN_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Requests per second allowed per API key (0 turns rate limiting off).
    #[arg(long, env = "POSTHORN_RATE_LIMIT", default_value_t = 1000)]
    pub rate_limit: u32,

    /// Requests a key may send at once above its rate (default: one second's worth).
    #[arg(long, env = "POSTHORN_RATE_LIMIT_BURST")]
    pub rate_limit_burst: Option<u32>,

    /// Failed authentications per minute per client address before they answer 429
    /// (0 turns this off). Valid keys are not counted, but once an address is over the
    /// limit every request from it waits, whatever key it carries.
    #[arg(long, env = "POSTHORN_FAILED_AUTH_LIMIT", default_value_t = 60)]
    pub failed_auth_limit: u32,

    /// How long in-flight requests get to finish after SIGTERM, in seconds.
    #[arg(long, env = "POSTHORN_SHUTDOWN_GRACE_SECS", default_value_t = 30)]
    pub shutdown_grace_secs: u64,

    /// Run delivery workers in this process (`false`: an API-only node).
    #[arg(long, env = "POSTHORN_WORKERS", default_value_t = true, action = clap::ArgAction::Set)]
    pub workers: bool,

    #[command(flatten)]
    pub connections: ConnectionConfig,

    #[command(flatten)]
    pub delivery: DeliveryConfig,

    #[command(flatten)]
    pub web: WebConfig,

    #[command(flatten)]
    pub streams: StreamConfig,

    #[command(flatten)]
    pub validation: ValidationConfig,

    #[command(flatten)]
    pub fan_out: FanOutConfig,
}

/// The web console and the customer portal (see `web/`).
#[derive(Debug, Clone, Args)]
pub struct WebConfig {
    /// The URL people reach this server at (`https://hooks.example.com`): portal links
    /// are made from it, and cookies are `Secure` when it is https. Default: `http://`
    /// and the listen address.
    #[arg(long, env = "POSTHORN_PUBLIC_URL")]
    pub public_url: Option<url::Url>,

    /// Origins that may show the portal in a frame (`https://app.example.com`,
    /// comma-separated). The console never may be framed.
    #[arg(long, env = "POSTHORN_PORTAL_FRAME_ORIGINS", value_delimiter = ',')]
    pub portal_frame_origins: Vec<String>,

    /// How long a console sign-in lasts (`12h`, `30m`).
    #[arg(long, env = "POSTHORN_CONSOLE_SESSION_TTL", default_value = "12h", value_parser = humantime::parse_duration)]
    pub console_session_ttl: Duration,

    /// Requests per second one portal session may make (0: no limit). Portal sessions
    /// never count against the key that minted their link.
    #[arg(long, env = "POSTHORN_PORTAL_RATE_LIMIT", default_value_t = 20)]
    pub portal_rate_limit: u32,

    /// Requests per second all the sessions of one portal link may make together (0: no
    /// limit).
    #[arg(long, env = "POSTHORN_PORTAL_LINK_RATE_LIMIT", default_value_t = 50)]
    pub portal_link_rate_limit: u32,

    /// Times per minute one portal link may be traded for a session (0: no limit).
    #[arg(long, env = "POSTHORN_PORTAL_TRADE_LIMIT", default_value_t = 30)]
    pub portal_trade_limit: u32,

    /// Portal-link trades per minute from one client address, whatever the link (0: no
    /// limit).
    #[arg(
        long,
        env = "POSTHORN_PORTAL_TRADE_ADDRESS_LIMIT",
        default_value_t = 120
    )]
    pub portal_trade_address_limit: u32,

    /// Live portal sessions one link may have: opening it once more ends its oldest
    /// session.
    #[arg(long, env = "POSTHORN_PORTAL_SESSIONS_PER_LINK", default_value_t = 20)]
    pub portal_sessions_per_link: u32,
}

impl Default for WebConfig {
    fn default() -> Self {
        Self {
            public_url: None,
            portal_frame_origins: Vec::new(),
            console_session_ttl: Duration::from_secs(12 * 3600),
            portal_rate_limit: 20,
            portal_link_rate_limit: 50,
            portal_trade_limit: 30,
            portal_trade_address_limit: 120,
            portal_sessions_per_link: 20,
        }
    }
}

impl ServeConfig {
    /// Where people reach this server, without a trailing slash.
    pub fn base_url(&self) -> String {
        match &self.web.public_url {
            Some(url) => url.as_str().trim_end_matches('/').to_owned(),
            None => {
                let mut addr = self.listen;
                if addr.ip().is_unspecified() {
                    addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                }
                format!("http://{addr}")
            }
        }
    }

    /// Whether people reach this server over https (cookies are then `Secure`).
    pub fn https(&self) -> bool {
        self.web
            .public_url
            .as_ref()
            .is_some_and(|u| u.scheme() == "https")
    }
}

/// How events are delivered.
#[derive(Debug, Clone, Args)]
pub struct DeliveryConfig {
    /// Delays between attempts after the first (units ms, s, m, h); after the last, the
    /// delivery is failed.
    #[arg(
        long,
        env = "POSTHORN_RETRY_SCHEDULE",
        default_value = "5s,5m,30m,2h,5h,10h,10h"
    )]
    pub retry_schedule: String,

    /// How long one attempt may take, from connecting to the end of the response.
    #[arg(long, env = "POSTHORN_ATTEMPT_TIMEOUT", default_value = "15s", value_parser = humantime::parse_duration)]
    pub attempt_timeout: Duration,

    /// Longest `Retry-After` (on 429 and 503) that is honoured.
    #[arg(long, env = "POSTHORN_MAX_RETRY_AFTER", default_value = "1h", value_parser = humantime::parse_duration)]
    pub max_retry_after: Duration,

    /// Deliveries in flight at once in this process.
    #[arg(long, env = "POSTHORN_MAX_IN_FLIGHT", default_value_t = 256)]
    pub max_in_flight: u32,

    /// Deliveries in flight at once to one endpoint, in this process.
    #[arg(
        long,
        env = "POSTHORN_MAX_IN_FLIGHT_PER_ENDPOINT",
        default_value_t = 32
    )]
    pub max_in_flight_per_endpoint: u32,

    /// How much longer than the attempt timeout a claim lasts before other workers may
    /// take the delivery over.
    #[arg(long, env = "POSTHORN_LEASE_MARGIN", default_value = "30s", value_parser = humantime::parse_duration)]
    pub lease_margin: Duration,

    /// How often the queue is checked for due retries when nothing wakes the worker.
    #[arg(long, env = "POSTHORN_POLL_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub poll_interval: Duration,

    /// An endpoint whose every attempt has failed for this long is disabled.
    #[arg(long, env = "POSTHORN_AUTO_DISABLE_AFTER", default_value = "5d", value_parser = humantime::parse_duration)]
    pub auto_disable_after: Duration,

    /// `endpoint.recovered` is sent on the first success after an endpoint's attempts
    /// had all failed for at least this long (a shorter blip tells nobody).
    #[arg(long, env = "POSTHORN_RECOVERED_AFTER", default_value = "1m", value_parser = humantime::parse_duration)]
    pub recovered_after: Duration,

    /// An endpoint that answers `410 Gone` is disabled at once (`false`: a 410 is a
    /// failure like any other).
    #[arg(long, env = "POSTHORN_DISABLE_ON_GONE", default_value_t = true, action = clap::ArgAction::Set)]
    pub disable_on_gone: bool,

    /// Longest an endpoint is held back after an overloaded answer (429, 502, 503, 504),
    /// whatever its `Retry-After` asks (`0`: such answers hold back only their delivery).
    #[arg(long, env = "POSTHORN_MAX_PAUSE", default_value = "1m", value_parser = humantime::parse_duration)]
    pub max_pause: Duration,

    /// After this many failed attempts in a row (seen by one process), an endpoint's
    /// circuit opens: its deliveries wait on one probe at a time (`0`: never).
    #[arg(long, env = "POSTHORN_CIRCUIT_FAILURES", default_value_t = 10)]
    pub circuit_failures: u32,

    /// How often an open circuit sends a probe.
    #[arg(long, env = "POSTHORN_CIRCUIT_PROBE_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub circuit_probe_interval: Duration,

    /// Finished deliveries, their attempts and their events are deleted after this long.
    #[arg(long, env = "POSTHORN_RETENTION", default_value = "30d", value_parser = humantime::parse_duration)]
    pub retention: Duration,

    /// How often the retention job looks for what to delete.
    #[arg(long, env = "POSTHORN_RETENTION_INTERVAL", default_value = "1m", value_parser = humantime::parse_duration)]
    pub retention_interval: Duration,

    /// Largest event sent, in bytes: the envelope (`eventName`, `version`, `data`, ...)
    /// as compact JSON. The request body's own limit is --max-body-bytes.
    #[arg(long, env = "POSTHORN_MAX_PAYLOAD_BYTES", default_value_t = 256 * 1024)]
    pub max_payload_bytes: usize,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            retry_schedule: "5s,5m,30m,2h,5h,10h,10h".into(),
            attempt_timeout: Duration::from_secs(15),
            max_retry_after: Duration::from_secs(3600),
            max_in_flight: 256,
            max_in_flight_per_endpoint: 32,
            lease_margin: Duration::from_secs(30),
            poll_interval: Duration::from_secs(1),
            auto_disable_after: Duration::from_secs(5 * 24 * 3600),
            recovered_after: Duration::from_secs(60),
            disable_on_gone: true,
            max_pause: Duration::from_secs(60),
            circuit_failures: 10,
            circuit_probe_interval: Duration::from_secs(5),
            retention: Duration::from_secs(30 * 24 * 3600),
            retention_interval: Duration::from_secs(60),
            max_payload_bytes: 256 * 1024,
        }
    }
}

/// Shortest lease margin accepted: an attempt that ends at its timeout still needs its
/// outcome written before another node may take the delivery over.
pub const MIN_LEASE_MARGIN: Duration = Duration::from_secs(1);

/// Shortest bootstrap key accepted.
pub const MIN_BOOTSTRAP_KEY_LEN: usize = 24;

impl ServeConfig {
    /// Refuses settings that make no sense, naming the variable (and flag) at fault.
    /// Runs before anything is opened or created.
    pub fn validate(&self) -> anyhow::Result<()> {
        use anyhow::ensure;
        if let Some(key) = self.bootstrap_key.as_deref().filter(|k| !k.is_empty()) {
            ensure!(
                key.chars().count() >= MIN_BOOTSTRAP_KEY_LEN,
                "POSTHORN_BOOTSTRAP_KEY (--bootstrap-key) must be at least {MIN_BOOTSTRAP_KEY_LEN} characters"
            );
        }
        ensure!(
            self.fan_out.max_endpoints_per_org > 0,
            "POSTHORN_MAX_ENDPOINTS_PER_ORG (--max-endpoints-per-org) must be at least 1"
        );
        ensure!(
            self.fan_out.max_deliveries_per_request > 0,
            "POSTHORN_MAX_DELIVERIES_PER_REQUEST (--max-deliveries-per-request) must be at least 1"
        );
        let d = &self.delivery;
        ensure!(
            !d.attempt_timeout.is_zero(),
            "POSTHORN_ATTEMPT_TIMEOUT (--attempt-timeout) must be more than 0"
        );
        ensure!(
            d.max_in_flight > 0,
            "POSTHORN_MAX_IN_FLIGHT (--max-in-flight) must be at least 1"
        );
        ensure!(
            (1..=d.max_in_flight).contains(&d.max_in_flight_per_endpoint),
            "POSTHORN_MAX_IN_FLIGHT_PER_ENDPOINT (--max-in-flight-per-endpoint) must be between 1 and POSTHORN_MAX_IN_FLIGHT ({})",
            d.max_in_flight
        );
        ensure!(
            d.lease_margin >= MIN_LEASE_MARGIN,
            "POSTHORN_LEASE_MARGIN (--lease-margin) must be at least {} (the time to record an attempt's outcome after its timeout)",
            humantime::format_duration(MIN_LEASE_MARGIN)
        );
        ensure!(
            !d.poll_interval.is_zero(),
            "POSTHORN_POLL_INTERVAL (--poll-interval) must be more than 0"
        );
        ensure!(
            !d.circuit_probe_interval.is_zero(),
            "POSTHORN_CIRCUIT_PROBE_INTERVAL (--circuit-probe-interval) must be more than 0"
        );
        crate::delivery::retry::RetryPolicy::parse(&d.retry_schedule, d.max_retry_after)?;
        for origin in &self.web.portal_frame_origins {
            let ok = url::Url::parse(origin).is_ok_and(|u| {
                matches!(u.scheme(), "http" | "https")
                    && u.host().is_some()
                    && u.path() == "/"
                    && !origin.ends_with('/')
                    && u.query().is_none()
            });
            ensure!(
                ok,
                "POSTHORN_PORTAL_FRAME_ORIGINS (--portal-frame-origins): {origin:?} is not an origin like https://app.example.com"
            );
        }
        let c = &self.connections;
        ensure!(
            c.max_connections > 0,
            "POSTHORN_MAX_CONNECTIONS (--max-connections) must be at least 1"
        );
        ensure!(
            !c.header_timeout.is_zero(),
            "POSTHORN_HEADER_TIMEOUT (--header-timeout) must be more than 0"
        );
        ensure!(
            !c.body_timeout.is_zero(),
            "POSTHORN_BODY_TIMEOUT (--body-timeout) must be more than 0"
        );
        let st = &self.streams;
        for (value, name) in [
            (st.max_streams, "POSTHORN_MAX_STREAMS (--max-streams)"),
            (
                st.per_org,
                "POSTHORN_MAX_STREAMS_PER_ORG (--max-streams-per-org)",
            ),
            (
                st.per_key,
                "POSTHORN_MAX_STREAMS_PER_KEY (--max-streams-per-key)",
            ),
            (
                st.per_session,
                "POSTHORN_MAX_STREAMS_PER_SESSION (--max-streams-per-session)",
            ),
        ] {
            ensure!(value > 0, "{name} must be at least 1");
        }
        ensure!(
            !st.max_life.is_zero(),
            "POSTHORN_MAX_STREAM_LIFE (--max-stream-life) must be more than 0"
        );
        ensure!(
            !self.validation.budget.is_zero(),
            "POSTHORN_VALIDATION_BUDGET (--validation-budget) must be more than 0"
        );
        ensure!(
            self.validation.threads != Some(0),
            "POSTHORN_VALIDATION_THREADS (--validation-threads) must be at least 1"
        );
        Ok(())
    }

    /// A configuration with every default, on `database_url`, listening on a free port.
    pub fn with_database(database_url: impl Into<String>) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            database: DatabaseArgs::new(database_url),
            bootstrap_key: None,
            bootstrap_org: "o-default".into(),
            operator_org: None,
            allow_private_targets: false,
            master_key: None,
            master_key_file: None,
            max_body_bytes: 1024 * 1024,
            rate_limit: 1000,
            rate_limit_burst: None,
            failed_auth_limit: 60,
            shutdown_grace_secs: 30,
            workers: true,
            connections: ConnectionConfig::default(),
            delivery: DeliveryConfig::default(),
            web: WebConfig::default(),
            streams: StreamConfig::default(),
            validation: ValidationConfig::default(),
            fan_out: FanOutConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}
