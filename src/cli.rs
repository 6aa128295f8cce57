//! The command line: `serve`, `migrate`, `keys`, `openapi`, `listen`, `backup`, and
//! the client commands of [`crate::client`].

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::client::args::RemoteKeysCommand as RemoteKeys;
use crate::client::{ClientCommand, Remote};
use crate::config::{DatabaseArgs, LogFormat, ServeConfig};
use crate::domain::{ApiKey, OrgId, Role};

#[derive(Debug, Parser)]
#[command(name = "posthorn", version, about = "Self-hosted webhook sender")]
pub struct Cli {
    /// Log format.
    #[arg(long, global = true, env = "POSTHORN_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
#[expect(
    clippy::large_enum_variant,
    reason = "parsed once at start; boxing would only complicate clap's derive"
)]
pub enum Command {
    /// Run the API and the delivery workers.
    Serve(ServeConfig),
    /// Apply database migrations and exit.
    Migrate(DatabaseArgs),
    /// API keys: `create --org` on the database itself, or list, create and revoke
    /// through a server's API.
    Keys {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Print the OpenAPI document of the HTTP API.
    Openapi,
    /// Copy a running (or stopped) SQLite store, consistent, to a new file; its master
    /// key file is copied beside it.
    Backup {
        /// The file to write (must not exist).
        #[arg(long)]
        to: std::path::PathBuf,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Run a local receiver that prints each delivery and checks its signatures; or,
    /// with `--forward-to`, take a remote server's deliveries over an outbound
    /// connection and forward them to a local URL.
    Listen {
        /// Port to listen on.
        #[arg(long, default_value_t = 9000)]
        port: u16,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1")]
        host: std::net::IpAddr,
        /// The endpoint's secret (the local receiver).
        #[arg(
            long,
            env = "POSTHORN_LISTEN_SECRET",
            hide_env_values = true,
            required_unless_present = "forward_to"
        )]
        secret: Option<String>,
        /// Require this org id in `Fullstory-Signature`.
        #[arg(long)]
        org: Option<String>,
        /// Forward the org's deliveries to this local URL (with --url and --key of
        /// the server).
        #[arg(long, conflicts_with = "secret")]
        forward_to: Option<String>,
        /// With --forward-to: only these event types (comma-separated,
        /// `name[:subcategory]`); every one when absent.
        #[arg(long, value_delimiter = ',', requires = "forward_to")]
        events: Vec<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Print a shell completion script (`posthorn completions bash > ...`).
    Completions { shell: clap_complete::Shell },
    #[command(flatten)]
    Client(ClientCommand),
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create an API key and print it. With `--org`, on the database itself (the key
    /// alone, one line, on stdout); without, through the server, in the key's org.
    Create {
        /// Org the key belongs to (created if it does not exist): create it on the
        /// database given by --database.
        #[arg(long)]
        org: Option<String>,
        /// admin, publisher or standard.
        #[arg(long)]
        role: Role,
        /// A name for people.
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// The org's API keys (through the server).
    List,
    /// Revoke a key (through the server).
    Revoke { id: String },
}

/// Runs a parsed command line to completion.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(config) => {
            let shutdown = tokio_util::sync::CancellationToken::new();
            tokio::spawn(crate::server::shutdown_on_signal(shutdown.clone()));
            crate::server::serve(config, shutdown).await
        }
        Command::Migrate(db) => {
            crate::store::open(&db, crate::store::Access::Tool, None).await?;
            eprintln!("migrations applied");
            Ok(())
        }
        Command::Keys {
            remote,
            command:
                KeysCommand::Create {
                    org: None,
                    role,
                    name,
                    ..
                },
        } => Ok(
            crate::client::commands::keys(&remote, None, Some((role.to_string(), name))).await?,
        ),
        Command::Keys {
            remote,
            command: KeysCommand::List,
        } => Ok(crate::client::commands::keys(&remote, Some(RemoteKeys::List), None).await?),
        Command::Keys {
            remote,
            command: KeysCommand::Revoke { id },
        } => Ok(
            crate::client::commands::keys(&remote, Some(RemoteKeys::Revoke { id }), None).await?,
        ),
        Command::Keys {
            command:
                KeysCommand::Create {
                    org: Some(org),
                    role,
                    name,
                    database,
                },
            ..
        } => {
            let org = OrgId::parse(&org).map_err(anyhow::Error::msg)?;
            let store = crate::store::open(&database, crate::store::Access::Tool, None).await?;
            let key = ApiKey::generate();
            crate::bootstrap::create_key(&store, &org, role, name, &key).await?;
            println!("{}", key.expose());
            Ok(())
        }
        Command::Listen {
            forward_to: Some(target),
            events,
            remote,
            ..
        } => Ok(crate::client::forward::run(&remote, &target, &events).await?),
        Command::Listen {
            port,
            host,
            secret,
            org,
            ..
        } => {
            let secret = secret.unwrap_or_default();
            crate::listen::run(std::net::SocketAddr::new(host, port), &secret, org).await
        }
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut command = Cli::command();
            clap_complete::generate(shell, &mut command, "posthorn", &mut std::io::stdout());
            Ok(())
        }
        Command::Client(command) => Ok(crate::client::run(command).await?),
        Command::Backup { to, database } => {
            let done = crate::store::backup(&database, &to).await?;
            eprintln!("backed up to {} ({} bytes)", to.display(), done.bytes);
            if let Some(key) = done.key_file {
                eprintln!("master key copied to {}", key.display());
            }
            Ok(())
        }
        Command::Openapi => {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            match writeln!(out, "{}", crate::http::openapi_json()).and_then(|()| out.flush()) {
                // `posthorn openapi | head`: the reader has what it wanted.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
                other => other.context("cannot write the document"),
            }
        }
    }
}
