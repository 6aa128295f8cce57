//! Configuration: every option is a command-line flag and a `POSTHORN_*` environment
//! variable (clap derives both from one definition).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, ValueEnum};

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

    /// How long in-flight requests get to finish after SIGTERM, in seconds.
    #[arg(long, env = "POSTHORN_SHUTDOWN_GRACE_SECS", default_value_t = 30)]
    pub shutdown_grace_secs: u64,
}

impl ServeConfig {
    /// A configuration with every default, on `database_url`, listening on a free port.
    pub fn with_database(database_url: impl Into<String>) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            database: DatabaseArgs {
                database_url: database_url.into(),
            },
            bootstrap_key: None,
            bootstrap_org: "o-default".into(),
            allow_private_targets: false,
            master_key: None,
            master_key_file: None,
            max_body_bytes: 1024 * 1024,
            rate_limit: 1000,
            rate_limit_burst: None,
            shutdown_grace_secs: 30,
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
