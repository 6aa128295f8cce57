//! Publish-to-receipt latency: events published at a fixed rate, each stamped with its
//! send time, which the receiver reads back.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::load::Conn;
use crate::phases::drained;
use crate::receiver::Counters;
use crate::report::Latency;
use crate::server::ADMIN_KEY;

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx] as f64 / 1e6
}

/// Publishes `secs` seconds of events at `rate` per second to the `bench.lat` endpoint
/// and reports the latencies the receiver saw.
pub async fn measure(
    api: SocketAddr,
    counters: &Counters,
    rate: u64,
    secs: u64,
    concurrency: usize,
) -> anyhow::Result<Latency> {
    let total = (rate * secs) as usize;
    counters.reset();
    counters
        .latencies_ns
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clear();
    counters.measure_latency.store(true, Ordering::SeqCst);
    paced(api, rate, total, concurrency, counters.epoch).await?;
    drained(counters, total as u64, 0, "latency").await?;
    counters.measure_latency.store(false, Ordering::SeqCst);
    let mut lat = std::mem::take(
        &mut *counters
            .latencies_ns
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?,
    );
    lat.sort_unstable();
    Ok(Latency {
        rate,
        p50_ms: percentile(&lat, 0.50),
        p90_ms: percentile(&lat, 0.90),
        p99_ms: percentile(&lat, 0.99),
        max_ms: percentile(&lat, 1.0),
    })
}

/// Publishes `total` events at `rate` per second, each stamped with its send time.
async fn paced(
    api: SocketAddr,
    rate: u64,
    total: usize,
    c: usize,
    epoch: Instant,
) -> anyhow::Result<()> {
    let start = tokio::time::Instant::now();
    let period = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let mut workers = tokio::task::JoinSet::new();
    let next = Arc::new(AtomicUsize::new(0));
    for _ in 0..c {
        let next = next.clone();
        workers.spawn(async move {
            let mut conn = Conn::open(api).await?;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return Ok::<(), anyhow::Error>(());
                }
                tokio::time::sleep_until(start + period.mul_f64(i as f64)).await;
                let t = epoch.elapsed().as_nanos() as u64;
                let body = format!(r#"{{"eventName":"bench.lat","data":{{"i":{i},"t":{t}}}}}"#);
                let (status, _) = conn
                    .post("/webhooks/v1/events", Some(ADMIN_KEY), Bytes::from(body))
                    .await?;
                anyhow::ensure!(status == 202, "publish answered {status}");
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        done??;
    }
    Ok(())
}
