//! `--soak DURATION`: a long mixed load, to see that memory and latency stay flat.
//!
//! Events are published at a fixed rate, one at a time, in a fixed mix: 60% to one fast
//! endpoint (stamped with their send time: the latency measured), 10% fanned out to 20
//! endpoints, 20% to an endpoint that answers 500 to everything (retried on a short
//! schedule, then failed), 10% to an endpoint that takes 200 ms to answer. Retention is
//! short, so the store reaches a steady size too. Every interval one line: posthorn's
//! RSS, the fast endpoint's p99 publish-to-receipt latency, the queue depth, what was
//! published and delivered. At the end, the first full interval beside the last.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use serde_json::json;

use crate::load::Conn;
use crate::phases::{endpoints, progress};
use crate::receiver::{self, Counters};
use crate::server::{Database, Posthorn, ADMIN_KEY};
use crate::Args;

/// Endpoints of the fan-out share of the mix.
const FANOUT: usize = 20;

/// What one interval saw.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at_secs: u64,
    rss_mib: f64,
    p99_ms: f64,
    queue_depth: f64,
    published: u64,
    refused: u64,
    delivered: u64,
    failed_attempts: u64,
}

/// The event of publish `i` in the mix; the fast endpoint's carry their send time.
fn event(i: usize, now_ns: u64) -> Bytes {
    let body = match i % 10 {
        0..=5 => format!(r#"{{"eventName":"soak.one","data":{{"i":{i},"t":{now_ns}}}}}"#),
        6 => format!(r#"{{"eventName":"soak.fan","data":{{"i":{i}}}}}"#),
        7 | 8 => format!(r#"{{"eventName":"soak.fail","data":{{"i":{i}}}}}"#),
        _ => format!(r#"{{"eventName":"soak.slow","data":{{"i":{i}}}}}"#),
    };
    Bytes::from(body)
}

fn p99(mut ns: Vec<u64>) -> f64 {
    if ns.is_empty() {
        return f64::NAN;
    }
    ns.sort_unstable();
    ns[((ns.len() - 1) as f64 * 0.99).round() as usize] as f64 / 1e6
}

/// Counts of the publishing workers.
#[derive(Default)]
struct Published {
    accepted: AtomicU64,
    refused: AtomicU64,
}

/// Publishes at `rate` per second until `stop`, from `c` connections. A refused or
/// failed publish is counted, not fatal: the soak reports it.
async fn publish(
    api: std::net::SocketAddr,
    rate: u64,
    c: usize,
    counters: Arc<Counters>,
    published: Arc<Published>,
    stop: tokio::time::Instant,
) -> anyhow::Result<()> {
    let start = tokio::time::Instant::now();
    let period = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..c {
        let (next, counters, published) = (next.clone(), counters.clone(), published.clone());
        workers.spawn(async move {
            let mut conn = Conn::open(api).await?;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let at = start + period.mul_f64(i as f64);
                if at >= stop {
                    return Ok::<(), anyhow::Error>(());
                }
                tokio::time::sleep_until(at).await;
                let body = event(i, counters.epoch.elapsed().as_nanos() as u64);
                match conn
                    .post("/webhooks/v1/events", Some(ADMIN_KEY), body)
                    .await
                {
                    Ok((202, _)) => {
                        published.accepted.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {
                        published.refused.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        // Counted as refused; the worker reconnects (retrying until
                        // the end) rather than stopping the load.
                        published.refused.fetch_add(1, Ordering::Relaxed);
                        conn = loop {
                            match Conn::open(api).await {
                                Ok(c) => break c,
                                Err(_) if tokio::time::Instant::now() < stop => {
                                    tokio::time::sleep(Duration::from_millis(100)).await;
                                }
                                Err(e) => return Err(e),
                            }
                        };
                    }
                }
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        done??;
    }
    Ok(())
}

/// The value of one unlabelled metric in a Prometheus text answer.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

pub async fn run(args: &Args, bin: &std::path::Path, duration: Duration) -> anyhow::Result<()> {
    let epoch = std::time::Instant::now();
    let (rx, counters) = receiver::start(epoch).await?;
    let (database, url) = Database::fresh(args.store).await?;
    progress(&format!("starting posthorn on {url}"));
    let posthorn = Posthorn::start(
        bin,
        &url,
        &[
            ("POSTHORN_RETRY_SCHEDULE", "1s,2s,4s".to_owned()),
            ("POSTHORN_RETENTION", "2m".to_owned()),
            ("POSTHORN_RETENTION_INTERVAL", "20s".to_owned()),
        ],
    )
    .await?;
    let api = posthorn.addr;
    let mut conn = Conn::open(api).await?;
    endpoints(&mut conn, rx, "one", "soak.one", 1).await?;
    endpoints(&mut conn, rx, "fan", "soak.fan", FANOUT).await?;
    endpoints(&mut conn, rx, "fail", "soak.fail", 1).await?;
    endpoints(&mut conn, rx, "slow", "soak.slow", 1).await?;
    drop(conn);

    let rate = args.soak_rate;
    // Whole intervals only, so the last one is as full as the others.
    let interval = args.soak_interval.max(Duration::from_secs(1));
    progress(&format!(
        "soak: {} at {rate} publishes/s (60% to 1 fast endpoint, 10% to {FANOUT}, \
         20% to one answering 500, 10% to one taking 200 ms); a line every {} s",
        humantime::format_duration(duration),
        interval.as_secs()
    ));
    counters.measure_latency.store(true, Ordering::SeqCst);
    let published = Arc::new(Published::default());
    let intervals = ((duration.as_secs_f64() / interval.as_secs_f64()) as u32).max(1);
    let started = tokio::time::Instant::now();
    let stop = started + interval * intervals;
    let load = tokio::spawn(publish(
        api,
        rate,
        args.concurrency,
        counters.clone(),
        published.clone(),
        stop,
    ));

    let mut samples = Vec::new();
    let mut ticks = tokio::time::interval_at(started + interval, interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut last_published, mut last_refused, mut last_received, mut last_failed) = (0, 0, 0, 0);
    eprintln!(
        "{:>6} {:>9} {:>10} {:>8} {:>10} {:>8} {:>10} {:>10}",
        "t (s)", "RSS MiB", "p99 ms", "queue", "published", "refused", "delivered", "500s"
    );
    for _ in 0..intervals {
        ticks.tick().await;
        // The real time: a late tick makes a longer interval, not a mislabelled one.
        let secs = started.elapsed().as_secs();
        let latencies = std::mem::take(
            &mut *counters
                .latencies_ns
                .lock()
                .map_err(|_| anyhow::anyhow!("poisoned"))?,
        );
        // A new connection each time: posthorn closes one idle for longer than its
        // header timeout.
        let metrics = Conn::open(api).await?.get("/metrics").await;
        let metrics = metrics.context("reading /metrics")?.1;
        let metrics = String::from_utf8_lossy(&metrics);
        let (p, r, d, f) = (
            published.accepted.load(Ordering::Relaxed),
            published.refused.load(Ordering::Relaxed),
            counters.received.load(Ordering::Relaxed),
            counters.failed.load(Ordering::Relaxed),
        );
        let sample = Sample {
            at_secs: secs,
            rss_mib: posthorn.rss_mib().unwrap_or(f64::NAN),
            p99_ms: p99(latencies),
            queue_depth: metric(&metrics, "posthorn_queue_depth").unwrap_or(f64::NAN),
            published: p - last_published,
            refused: r - last_refused,
            delivered: d - last_received,
            failed_attempts: f - last_failed,
        };
        (last_published, last_refused, last_received, last_failed) = (p, r, d, f);
        eprintln!(
            "{:>6} {:>9.1} {:>10.2} {:>8.0} {:>10} {:>8} {:>10} {:>10}",
            sample.at_secs,
            sample.rss_mib,
            sample.p99_ms,
            sample.queue_depth,
            sample.published,
            sample.refused,
            sample.delivered,
            sample.failed_attempts
        );
        samples.push(sample);
    }
    load.await??;
    report(&samples, posthorn.peak_rss_mib());
    posthorn.stop().await;
    drop(database);
    Ok(())
}

/// The first full interval beside the last, and one JSON line.
fn report(samples: &[Sample], peak_rss: Option<f64>) {
    let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
        eprintln!("soak: no interval finished");
        return;
    };
    let worst_p99 = samples.iter().map(|s| s.p99_ms).fold(0.0, f64::max);
    let max_rss = samples.iter().map(|s| s.rss_mib).fold(0.0, f64::max);
    eprintln!();
    eprintln!(
        "soak: RSS {:.1} MiB in the first interval, {:.1} MiB in the last (highest {max_rss:.1}, peak {:.1}); \
         p99 {:.2} ms first, {:.2} ms last (worst {worst_p99:.2}); queue {:.0} first, {:.0} last",
        first.rss_mib,
        last.rss_mib,
        peak_rss.unwrap_or(f64::NAN),
        first.p99_ms,
        last.p99_ms,
        first.queue_depth,
        last.queue_depth
    );
    let round = |x: f64| (x * 100.0).round() / 100.0;
    let lines: Vec<_> = samples
        .iter()
        .map(|s| {
            json!({"t": s.at_secs, "rss_mib": round(s.rss_mib), "p99_ms": round(s.p99_ms),
                   "queue_depth": s.queue_depth, "published": s.published,
                   "refused": s.refused, "delivered": s.delivered,
                   "failed_attempts": s.failed_attempts})
        })
        .collect();
    println!(
        "{}",
        json!({"soak": lines, "peak_rss_mib": peak_rss.map(round)})
    );
}
