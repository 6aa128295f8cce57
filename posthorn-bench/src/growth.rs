//! Cost as the store grows: a history of finished deliveries and a backlog of pending
//! ones is put in the store through the API, then end-to-end throughput is measured
//! again; and how many bytes the store grew by per delivered event.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;

use crate::load;
use crate::phases::{drained, e2e, progress};
use crate::receiver::Counters;
use crate::report::Growth;
use crate::server::ADMIN_KEY;

/// Where the store keeps its bytes.
pub enum Disk<'a> {
    /// The SQLite file and its WAL.
    Sqlite(&'a Path),
    Postgres(&'a str),
}

impl Disk<'_> {
    pub async fn bytes(&self) -> anyhow::Result<u64> {
        match self {
            Disk::Sqlite(db) => {
                let mut total = 0;
                for suffix in ["", "-wal"] {
                    let mut path = db.as_os_str().to_owned();
                    path.push(suffix);
                    total += std::fs::metadata(&path).map_or(0, |m| m.len());
                }
                Ok(total)
            }
            Disk::Postgres(url) => {
                use sqlx::Connection;
                let mut conn = sqlx::PgConnection::connect(url).await?;
                let size: i64 = sqlx::query_scalar("SELECT pg_database_size(current_database())")
                    .fetch_one(&mut conn)
                    .await?;
                Ok(u64::try_from(size).unwrap_or(0))
            }
        }
    }
}

/// Publishes `n` events of `name` in batches of 100 over 8 connections.
async fn publish_batches(api: SocketAddr, name: &'static str, n: usize) -> anyhow::Result<()> {
    load::run(
        api,
        8,
        n.div_ceil(100),
        Some(ADMIN_KEY.to_owned()),
        move |b| {
            let events: Vec<String> = (0..100)
                .map(|i| format!(r#"{{"eventName":"{name}","data":{{"i":{}}}}}"#, b * 100 + i))
                .collect();
            (
                "/webhooks/v1/events/batch".to_owned(),
                Bytes::from(format!(r#"{{"events":[{}]}}"#, events.join(","))),
            )
        },
    )
    .await
}

pub async fn run(
    api: SocketAddr,
    counters: &Counters,
    disk: Disk<'_>,
    finished: usize,
    pending: usize,
    events: usize,
    concurrency: usize,
) -> anyhow::Result<Growth> {
    progress(&format!("growth: {finished} deliveries into the history"));
    let before = disk.bytes().await.context("measuring the store")?;
    counters.reset();
    let t = Instant::now();
    publish_batches(api, "bench.history", finished).await?;
    drained(counters, finished as u64, 0, "history").await?;
    progress(&format!(
        "growth: history written in {:.0} s",
        t.elapsed().as_secs_f64()
    ));
    // Outcomes are written in batches right after the last receipt.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let bytes_per_delivery = disk.bytes().await?.saturating_sub(before) as f64 / finished as f64;
    progress(&format!(
        "growth: {pending} deliveries left pending (answered 429, Retry-After 1 h)"
    ));
    counters.backlog.store(0, Ordering::SeqCst);
    publish_batches(api, "bench.backlog", pending).await?;
    let deadline = Instant::now() + Duration::from_secs(300);
    while counters.backlog.load(Ordering::SeqCst) < pending as u64 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the backlog was not attempted within 300 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let e2e_rps = e2e(
        api,
        counters,
        events,
        concurrency,
        "bench.one",
        "grown store, 1 endpoint",
    )
    .await?;
    Ok(Growth {
        finished,
        pending,
        e2e_rps,
        bytes_per_delivery,
    })
}
