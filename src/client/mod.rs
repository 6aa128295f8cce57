//! posthorn as a client of a posthorn server (this one or a remote one), in the style
//! of the Stripe and Svix CLIs: every command is one or a few API calls, printed as a
//! table or as JSON.

pub mod api;
pub mod args;
pub mod commands;
pub mod config;
pub mod forward;
mod output;
mod publish;
mod recover;

use clap::Args;

pub use api::{exit, ClientError, ClientResult};
pub use args::ClientCommand;
pub use output::Format;

use api::Api;
use config::ConfigFile;

/// Which server, with which key, and how to print: on every client command.
#[derive(Debug, Clone, Args)]
pub struct Remote {
    /// The posthorn server, e.g. `https://posthorn.example` (else the profile's).
    #[arg(long, global = true, env = "POSTHORN_URL")]
    pub url: Option<String>,
    /// The API key (else the profile's).
    #[arg(long, global = true, env = "POSTHORN_API_KEY", hide_env_values = true)]
    pub key: Option<String>,
    /// A profile of the config file that `posthorn login` writes.
    #[arg(long, global = true, env = "POSTHORN_PROFILE")]
    pub profile: Option<String>,
    /// `table` for people, `json` for scripts.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

impl Remote {
    /// The server and key: flags and variables first, then the profile.
    pub fn api(&self) -> ClientResult<Api> {
        if let (Some(url), Some(key), None) = (&self.url, &self.key, &self.profile) {
            return Api::new(url, key);
        }
        let file = ConfigFile::load()?;
        let profile = file.profile(self.profile.as_deref());
        if let (Some(name), None) = (&self.profile, profile) {
            return Err(ClientError::Usage(format!(
                "no profile {name:?} in {} (posthorn login --profile {name} writes one)",
                config::path()?.display()
            )));
        }
        let url = self
            .url
            .clone()
            .or_else(|| profile.map(|p| p.url.clone()))
            .ok_or_else(|| {
                ClientError::Usage(
                    "no server: give --url, set POSTHORN_URL, or run posthorn login".into(),
                )
            })?;
        let key = self
            .key
            .clone()
            .or_else(|| profile.map(|p| p.key.clone()))
            .ok_or_else(|| {
                ClientError::Usage(
                    "no API key: give --key, set POSTHORN_API_KEY, or run posthorn login".into(),
                )
            })?;
        Api::new(&url, &key)
    }
}

/// Runs a client command; the error says what went wrong and how the process exits.
pub async fn run(command: ClientCommand) -> ClientResult<()> {
    commands::run(command).await
}
