//! What one request, client, key, session or org may hold: connections, event
//! streams, fan-out and the CPU of schema checks (each group a flag and a `POSTHORN_*`
//! variable, flattened into `ServeConfig`).

use std::time::Duration;

use clap::Args;

/// How much one org may make posthorn store (see `fan_out.rs`).
#[derive(Debug, Clone, Args)]
pub struct FanOutConfig {
    /// Live endpoints one org may have; creating one more is answered 422
    /// `limit_exceeded`.
    #[arg(long, env = "POSTHORN_MAX_ENDPOINTS_PER_ORG", default_value_t = 5000)]
    pub max_endpoints_per_org: u32,

    /// Deliveries one publish or batch may make (each event times the endpoints it goes
    /// to, counted before anything is stored); past it the request is answered 422
    /// `limit_exceeded` and nothing is stored. Also the most deliveries of one org
    /// being written at once, and of one commit.
    #[arg(
        long,
        env = "POSTHORN_MAX_DELIVERIES_PER_REQUEST",
        default_value_t = 20_000
    )]
    pub max_deliveries_per_request: u32,
}

impl Default for FanOutConfig {
    fn default() -> Self {
        Self {
            max_endpoints_per_org: 5000,
            max_deliveries_per_request: 20_000,
        }
    }
}

/// How checks of event data against schemas are bounded (see `domain/schema/checks.rs`).
#[derive(Debug, Clone, Args)]
pub struct ValidationConfig {
    /// Time a request's schema checks (publish, or an example at save) may take, waiting
    /// for room included; past it the request is answered 422 `validation_budget_exceeded`
    /// and nothing is stored.
    #[arg(long = "validation-budget", env = "POSTHORN_VALIDATION_BUDGET", default_value = "1s", value_parser = humantime::parse_duration)]
    pub budget: Duration,

    /// Schema checks at once, on threads off the async workers (one org gets half of
    /// them, at least one). Default: twice the number of cores.
    #[arg(long = "validation-threads", env = "POSTHORN_VALIDATION_THREADS")]
    pub threads: Option<usize>,
}

impl Default for ValidationConfig {
    fn default() -> Self {
        Self {
            budget: Duration::from_secs(1),
            threads: None,
        }
    }
}

/// How event streams (the live log, `posthorn listen`) are bounded (see `http/streams.rs`).
#[derive(Debug, Clone, Args)]
pub struct StreamConfig {
    /// Event streams open at once in this process (never more than half of
    /// `--max-connections`); one more is answered 429 and closed.
    #[arg(
        long = "max-streams",
        env = "POSTHORN_MAX_STREAMS",
        default_value_t = 64
    )]
    pub max_streams: usize,

    /// Event streams one org may hold open at once.
    #[arg(
        long = "max-streams-per-org",
        env = "POSTHORN_MAX_STREAMS_PER_ORG",
        default_value_t = 16
    )]
    pub per_org: usize,

    /// Event streams open at once of one API key (`listen`, console sessions signed in
    /// with it), and of one portal link (all its sessions together).
    #[arg(
        long = "max-streams-per-key",
        env = "POSTHORN_MAX_STREAMS_PER_KEY",
        default_value_t = 8
    )]
    pub per_key: usize,

    /// Live-log streams one console or portal session may hold open at once.
    #[arg(
        long = "max-streams-per-session",
        env = "POSTHORN_MAX_STREAMS_PER_SESSION",
        default_value_t = 4
    )]
    pub per_session: usize,

    /// How long one event stream lasts at most (a browser reconnects by itself;
    /// `posthorn listen` is told and ends).
    #[arg(long = "max-stream-life", env = "POSTHORN_MAX_STREAM_LIFE", default_value = "1h", value_parser = humantime::parse_duration)]
    pub max_life: Duration,
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            max_streams: 64,
            per_org: 16,
            per_key: 8,
            per_session: 4,
            max_life: Duration::from_secs(3600),
        }
    }
}

/// How client connections are bounded (see `http/conn.rs`).
#[derive(Debug, Clone, Args)]
pub struct ConnectionConfig {
    /// Connections served at once; one more takes the slot of an idle or half-sent
    /// connection of the client holding the most, or is answered 503 and closed.
    #[arg(long, env = "POSTHORN_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,

    /// Connections one client address (IPv6: one /64) may hold at once, so that one
    /// client cannot take every slot; one more takes the slot of that client's idle or
    /// half-sent connection, or is answered 503. `0` turns the per-client cap off. Behind
    /// a reverse proxy every connection is the proxy's: raise it to `max_connections` or
    /// turn it off.
    #[arg(
        long,
        env = "POSTHORN_MAX_CONNECTIONS_PER_CLIENT",
        default_value_t = 256
    )]
    pub max_connections_per_client: usize,

    /// How long a client may take to send a request's headers, from the moment the
    /// connection is ready for one (after it opens, or after the previous response:
    /// this is also the keep-alive idle timeout).
    #[arg(long, env = "POSTHORN_HEADER_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_timeout: Duration,

    /// How long a client may take to send a request's body (408 after it).
    #[arg(long, env = "POSTHORN_BODY_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub body_timeout: Duration,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_connections_per_client: 256,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
        }
    }
}
