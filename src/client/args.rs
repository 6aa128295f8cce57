//! The client's command line: what each command takes.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::Remote;

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Save a server and key as a named profile (mode 0600) and make it the default.
    Login {
        #[command(flatten)]
        remote: Remote,
    },
    /// Endpoints of the key's org.
    Endpoints {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        command: EndpointsCommand,
    },
    /// The event catalog.
    #[command(name = "event-types")]
    EventTypes {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        command: EventTypesCommand,
    },
    /// Subcategories of an event type.
    Subcategories {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        command: SubcategoriesCommand,
    },
    /// Publish events and read them back.
    Events {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        command: EventsCommand,
    },
    /// The delivery log.
    Deliveries {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        command: DeliveriesCommand,
    },
    /// Queue an endpoint's failed deliveries again and follow them to their outcome.
    Recover {
        /// The endpoint's id.
        #[arg(long)]
        endpoint: String,
        /// Failed deliveries of events published at or after this time (RFC 3339), or
        /// this long ago (`1h`, `2d`).
        #[arg(long)]
        since: String,
        /// ... and before this time (RFC 3339), or this long ago.
        #[arg(long)]
        until: Option<String>,
        /// Print the count and end, without following the deliveries.
        #[arg(long)]
        no_follow: bool,
        /// Stop following after this long (`10m`).
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Debug, Subcommand)]
pub enum EndpointsCommand {
    /// List the org's endpoints (every page).
    List,
    /// Show one endpoint.
    Get { id: String },
    /// Create an endpoint; a minted secret is printed once.
    Create {
        /// The URL deliveries are POSTed to.
        endpoint_url: String,
        #[command(flatten)]
        fields: EndpointFields,
        /// The signing secret (minted when absent).
        #[arg(long)]
        secret: Option<String>,
    },
    /// Change an endpoint: what is not given is left as it is, and (as the API's
    /// Update does) it is enabled unless --disabled is given.
    Update {
        id: String,
        /// A new URL (the endpoint's id follows it).
        #[arg(long)]
        endpoint_url: Option<String>,
        #[command(flatten)]
        fields: EndpointFields,
    },
    /// Delete an endpoint.
    Delete { id: String },
}

#[derive(Debug, Args)]
pub struct EndpointFields {
    /// An event type to subscribe to, `name` or `name:subcategory`; repeat for more.
    #[arg(long = "event-type", value_name = "NAME[:SUBCATEGORY]")]
    pub event_types: Vec<String>,
    /// Created (or left) disabled.
    #[arg(long)]
    pub disabled: bool,
    /// Deliveries per second, at most (0 removes the limit on update).
    #[arg(long)]
    pub rate_limit: Option<u32>,
    /// `fifo` or `unordered`.
    #[arg(long)]
    pub ordering: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum EventTypesCommand {
    /// List the catalog's event types.
    List,
}

#[derive(Debug, Subcommand)]
pub enum SubcategoriesCommand {
    /// List an event type's subcategories (every page).
    List { event_type: String },
    /// Mint a subcategory with a display name; its token is printed.
    Create {
        event_type: String,
        #[arg(long)]
        display_name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Publish one event, or every line of an NDJSON file (`--file`, `-` for stdin).
    Publish {
        /// The event type (one event).
        #[arg(required_unless_present = "file", conflicts_with = "file")]
        event_name: Option<String>,
        /// The event's `data`, a JSON object (one event).
        #[arg(long, default_value = "{}", conflicts_with = "file")]
        data: String,
        #[arg(long, conflicts_with = "file")]
        subcategory: Option<String>,
        #[arg(long, conflicts_with = "file")]
        idempotency_key: Option<String>,
        /// A file of events, one JSON object per line, as the publish API takes them.
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Show an event with its deliveries.
    Get { id: String },
}

#[derive(Debug, Subcommand)]
pub enum DeliveriesCommand {
    /// An endpoint's delivery log, newest first.
    List {
        /// The endpoint's id.
        #[arg(long)]
        endpoint: String,
        /// `pending`, `delivered` or `failed`.
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        until: Option<String>,
        /// At most this many (one page of up to 100 by default).
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Every attempt of a delivery.
    Attempts { id: String },
    /// Queue a delivery again now.
    Retry { id: String },
}

#[derive(Debug, Subcommand)]
pub enum RemoteKeysCommand {
    /// The org's API keys (never the keys themselves).
    List,
    /// Revoke a key: it answers 401 at once.
    Revoke { id: String },
}
