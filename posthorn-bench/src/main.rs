//! posthorn-bench: one run, one machine: the ceiling first, then posthorn's publish
//! throughput, end-to-end delivery throughput (1 and 10 endpoints), fan-out to 1,000
//! endpoints, publish-to-receipt latency at a fixed rate and at half the end-to-end
//! maximum, FIFO throughput beside the receiver's round trip, an endpoint's throughput
//! beside rate-limited ones, throughput with a large history and backlog in the store,
//! bytes on disk per delivered event, and peak RSS. Prints a table and, last, one JSON line.

mod flow;
mod growth;
mod latency;
mod load;
mod phases;
mod receiver;
mod report;
mod server;
mod soak;
mod web;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Store {
    Sqlite,
    Postgres,
}

/// A part of the run (for profiling one of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Phase {
    Publish,
    E2e,
    Fanout,
    Latency,
    Growth,
    /// FIFO throughput, and rate-limited endpoints beside an unlimited one.
    Flow,
    /// The console's delivery log and statistics pages on the grown store (after
    /// growth, which it needs).
    Web,
}

#[derive(Debug, Parser)]
#[command(
    name = "posthorn-bench",
    about = "Benchmark posthorn against this machine's ceiling"
)]
pub struct Args {
    /// Events per throughput phase (publish, end-to-end to 1 endpoint; to 10 endpoints
    /// and to 1,000 endpoints the same number of deliveries).
    #[arg(long, default_value_t = 20_000)]
    pub events: usize,
    /// Endpoints of the multi-endpoint end-to-end phase.
    #[arg(long, default_value_t = 10)]
    pub endpoints: usize,
    /// Endpoints of the fan-out phase.
    #[arg(long, default_value_t = 1_000)]
    pub fanout: usize,
    /// Events per second of the latency phase.
    #[arg(long, default_value_t = 1_000)]
    pub rate: u64,
    /// Seconds of the latency phase.
    #[arg(long, default_value_t = 5)]
    pub latency_secs: u64,
    /// Connections of the load generator (and posthorn's per-endpoint concurrency).
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    #[arg(long, value_enum, default_value_t = Store::Sqlite)]
    pub store: Store,
    /// The posthorn binary (default: built with cargo and taken from target/release).
    #[arg(long)]
    pub bin: Option<PathBuf>,
    /// Finished deliveries put in the store before end to end is measured again.
    #[arg(long, default_value_t = 1_000_000)]
    pub history: usize,
    /// Pending deliveries (retried in an hour) put in the store beside the history.
    #[arg(long, default_value_t = 100_000)]
    pub backlog: usize,
    /// Run only these phases (comma-separated; default all).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub phases: Vec<Phase>,
    /// Instead of the phases: a mixed load for this long (`10m`), printing RSS, p99
    /// latency and queue depth every `--soak-interval`.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub soak: Option<Duration>,
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub soak_interval: Duration,
    /// Publishes per second of the soak.
    #[arg(long, default_value_t = 500)]
    pub soak_rate: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let started = Instant::now();
    let bin = server::binary(args.bin.clone())?;
    if let Some(duration) = args.soak {
        soak::run(&args, &bin, duration).await?;
        eprintln!("soak took {:.0} s", started.elapsed().as_secs_f64());
        return Ok(());
    }
    let report = phases::run(&args, &bin).await?;
    report.print_table();
    eprintln!("benchmark took {:.0} s", started.elapsed().as_secs_f64());
    println!("{}", report.json());
    Ok(())
}
