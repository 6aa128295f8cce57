//! The measured phases and the report.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use serde_json::json;

use crate::load::{self, Conn};
use crate::receiver::{self, Counters};
use crate::server::{Posthorn, ADMIN_KEY};
use crate::{Args, Store};

pub struct Report {
    store: Store,
    ceiling_rps: f64,
    publish_rps: f64,
    publish_batch_rps: f64,
    e2e_rps: f64,
    e2e_multi_rps: f64,
    endpoints: usize,
    fanout_rps: f64,
    fanout: usize,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    rate: u64,
    rss_mib: f64,
}

fn progress(msg: &str) {
    eprintln!("[bench] {msg}");
}

/// A body the size of posthorn's envelope for `{"i": n}`.
fn ceiling_body(i: usize) -> Bytes {
    Bytes::from(format!(
        r#"{{"eventName":"bench.one","version":1,"data":{{"i":{i}}}}}"#
    ))
}

fn event(name: &str, i: usize) -> Bytes {
    Bytes::from(format!(r#"{{"eventName":"{name}","data":{{"i":{i}}}}}"#))
}

/// Waits until the receiver has counted `n`; returns seconds from `from_ns` to the last.
async fn drained(c: &Counters, n: u64, from_ns: u64, what: &str) -> anyhow::Result<f64> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last_report = Instant::now();
    loop {
        let got = c.received.load(Ordering::SeqCst);
        if got >= n {
            let last = c.last_ns.load(Ordering::SeqCst);
            return Ok((last.saturating_sub(from_ns)) as f64 / 1e9);
        }
        if Instant::now() > deadline {
            bail!("{what}: only {got} of {n} deliveries arrived within 120 s");
        }
        if last_report.elapsed() > Duration::from_secs(2) {
            progress(&format!("{what}: {got}/{n} delivered"));
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn admin(conn: &mut Conn, path: &str, body: serde_json::Value) -> anyhow::Result<()> {
    let (status, answer) = conn
        .post(path, Some(ADMIN_KEY), Bytes::from(body.to_string()))
        .await?;
    if !(200..300).contains(&status) {
        bail!(
            "{path} answered {status}: {}",
            String::from_utf8_lossy(&answer)
        );
    }
    Ok(())
}

async fn endpoints(
    conn: &mut Conn,
    rx: std::net::SocketAddr,
    prefix: &str,
    event: &str,
    n: usize,
) -> anyhow::Result<()> {
    admin(
        conn,
        "/webhooks/v1/event-types",
        json!({"eventName": event}),
    )
    .await?;
    for i in 0..n {
        let url = format!("http://{rx}/{prefix}/{i}");
        admin(
            conn,
            "/webhooks/v1/endpoints",
            json!({"url": url, "secret": "bench-secret", "eventTypes": [{"eventName": event}]}),
        )
        .await?;
    }
    Ok(())
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx] as f64 / 1e6
}

pub async fn run(args: &Args, bin: &Path) -> anyhow::Result<Report> {
    let epoch = Instant::now();
    let (rx, counters) = receiver::start(epoch).await?;
    let c = args.concurrency;
    let n = args.events;

    progress(&format!(
        "ceiling: {n} posts straight to the receiver over {c} keep-alive connections"
    ));
    let t = Instant::now();
    load::run(rx, c, n, None, |i| ("/ceiling".to_owned(), ceiling_body(i))).await?;
    let ceiling_rps = n as f64 / t.elapsed().as_secs_f64();
    counters.reset();

    // Kept until the end of the run: the SQLite file's directory, or the cluster.
    let mut _sqlite_dir = None;
    let mut _cluster = None;
    let database_url = match args.store {
        Store::Sqlite => {
            let dir = tempfile::tempdir()?;
            let url = format!("sqlite://{}", dir.path().join("bench.db").display());
            _sqlite_dir = Some(dir);
            url
        }
        Store::Postgres => {
            progress("starting a throwaway PostgreSQL (fsync on)");
            let cluster = tokio::task::spawn_blocking(throwaway_pg::PgCluster::durable).await?;
            let url = cluster.create_database().await;
            _cluster = Some(cluster);
            url
        }
    };
    progress(&format!("starting posthorn on {database_url}"));
    let per_endpoint = c.to_string();
    let posthorn = Posthorn::start(
        bin,
        &database_url,
        &[("POSTHORN_MAX_IN_FLIGHT_PER_ENDPOINT", per_endpoint)],
    )
    .await?;
    let api = posthorn.addr;
    let mut conn = Conn::open(api).await?;
    admin(
        &mut conn,
        "/webhooks/v1/event-types",
        json!({"eventName": "bench.nobody"}),
    )
    .await?;
    endpoints(&mut conn, rx, "one", "bench.one", 1).await?;
    endpoints(&mut conn, rx, "ten", "bench.ten", args.endpoints).await?;
    endpoints(&mut conn, rx, "lat", "bench.lat", 1).await?;
    progress(&format!("creating {} fan-out endpoints", args.fanout));
    endpoints(&mut conn, rx, "fan", "bench.fan", args.fanout).await?;
    let key = Some(ADMIN_KEY.to_owned());

    progress(&format!(
        "publish: {n} single publishes (no subscribers), {c} connections"
    ));
    let t = Instant::now();
    load::run(api, c, n, key.clone(), |i| {
        ("/webhooks/v1/events".to_owned(), event("bench.nobody", i))
    })
    .await?;
    let publish_rps = n as f64 / t.elapsed().as_secs_f64();

    progress(&format!("publish: {n} events in batches of 100"));
    let t = Instant::now();
    load::run(api, c.min(8), n.div_ceil(100), key.clone(), |b| {
        let events: Vec<String> = (0..100)
            .map(|i| {
                format!(
                    r#"{{"eventName":"bench.nobody","data":{{"i":{}}}}}"#,
                    b * 100 + i
                )
            })
            .collect();
        (
            "/webhooks/v1/events/batch".to_owned(),
            Bytes::from(format!(r#"{{"events":[{}]}}"#, events.join(","))),
        )
    })
    .await?;
    let publish_batch_rps = (n.div_ceil(100) * 100) as f64 / t.elapsed().as_secs_f64();

    progress(&format!("end to end: {n} events to 1 endpoint"));
    counters.reset();
    let from = epoch.elapsed().as_nanos() as u64;
    load::run(api, c, n, key.clone(), |i| {
        ("/webhooks/v1/events".to_owned(), event("bench.one", i))
    })
    .await?;
    let e2e_rps = n as f64 / drained(&counters, n as u64, from, "1 endpoint").await?;

    let multi_events = n / args.endpoints.max(1);
    let multi = (multi_events * args.endpoints) as u64;
    progress(&format!(
        "end to end: {multi_events} events to {} endpoints ({multi} deliveries)",
        args.endpoints
    ));
    counters.reset();
    let from = epoch.elapsed().as_nanos() as u64;
    load::run(api, c, multi_events, key.clone(), |i| {
        ("/webhooks/v1/events".to_owned(), event("bench.ten", i))
    })
    .await?;
    let e2e_multi_rps = multi as f64 / drained(&counters, multi, from, "multi endpoint").await?;

    let fan_events = (n / args.fanout.max(1)).max(1);
    let fan = (fan_events * args.fanout) as u64;
    progress(&format!(
        "fan-out: {fan_events} events to {} endpoints ({fan} deliveries)",
        args.fanout
    ));
    counters.reset();
    let from = epoch.elapsed().as_nanos() as u64;
    load::run(api, c.min(fan_events), fan_events, key.clone(), |i| {
        ("/webhooks/v1/events".to_owned(), event("bench.fan", i))
    })
    .await?;
    let fanout_rps = fan as f64 / drained(&counters, fan, from, "fan-out").await?;

    let total = (args.rate * args.latency_secs) as usize;
    progress(&format!(
        "latency: {total} events at {}/s to 1 endpoint",
        args.rate
    ));
    counters.reset();
    counters.measure_latency.store(true, Ordering::SeqCst);
    paced(api, args.rate, total, c, epoch).await?;
    drained(&counters, total as u64, 0, "latency").await?;
    counters.measure_latency.store(false, Ordering::SeqCst);
    let mut lat = std::mem::take(
        &mut *counters
            .latencies_ns
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?,
    );
    lat.sort_unstable();

    let rss_mib = posthorn
        .peak_rss_mib()
        .context("reading the peak RSS of posthorn")?;
    posthorn.stop().await;
    Ok(Report {
        store: args.store,
        ceiling_rps,
        publish_rps,
        publish_batch_rps,
        e2e_rps,
        e2e_multi_rps,
        endpoints: args.endpoints,
        fanout_rps,
        fanout: args.fanout,
        p50_ms: percentile(&lat, 0.50),
        p90_ms: percentile(&lat, 0.90),
        p99_ms: percentile(&lat, 0.99),
        max_ms: percentile(&lat, 1.0),
        rate: args.rate,
        rss_mib,
    })
}

/// Publishes `total` events at `rate` per second, each stamped with its send time.
async fn paced(
    api: std::net::SocketAddr,
    rate: u64,
    total: usize,
    c: usize,
    epoch: Instant,
) -> anyhow::Result<()> {
    let start = tokio::time::Instant::now();
    let period = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let mut workers = tokio::task::JoinSet::new();
    let per = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for _ in 0..c {
        let per = per.clone();
        workers.spawn(async move {
            let mut conn = Conn::open(api).await?;
            loop {
                let i = per.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return Ok::<(), anyhow::Error>(());
                }
                tokio::time::sleep_until(start + period * i as u32).await;
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

impl Report {
    pub fn print_table(&self) {
        let pct = |x: f64| 100.0 * x / self.ceiling_rps;
        eprintln!();
        eprintln!("posthorn-bench ({:?} store)", self.store);
        eprintln!("{:<44} {:>12} {:>10}", "measure", "value", "% ceiling");
        let row = |name: &str, v: f64, unit: &str, of_ceiling: bool| {
            let share = if of_ceiling {
                format!("{:.1}%", pct(v))
            } else {
                String::new()
            };
            eprintln!("{name:<44} {v:>9.0} {unit:<2} {share:>10}");
        };
        row(
            "ceiling: direct posts to the receiver",
            self.ceiling_rps,
            "/s",
            true,
        );
        row(
            "publish, single (durable 202s)",
            self.publish_rps,
            "/s",
            true,
        );
        row(
            "publish, batches of 100 (events)",
            self.publish_batch_rps,
            "/s",
            true,
        );
        row(
            "end to end, 1 endpoint (deliveries)",
            self.e2e_rps,
            "/s",
            true,
        );
        row(
            &format!("end to end, {} endpoints (deliveries)", self.endpoints),
            self.e2e_multi_rps,
            "/s",
            true,
        );
        row(
            &format!("fan-out, {} endpoints (deliveries)", self.fanout),
            self.fanout_rps,
            "/s",
            true,
        );
        eprintln!(
            "{:<44} {:>9.2} ms",
            format!("latency at {}/s: p50", self.rate),
            self.p50_ms
        );
        eprintln!("{:<44} {:>9.2} ms", "                 p90", self.p90_ms);
        eprintln!("{:<44} {:>9.2} ms", "                 p99", self.p99_ms);
        eprintln!("{:<44} {:>9.2} ms", "                 max", self.max_ms);
        eprintln!("{:<44} {:>9.1} MiB", "posthorn peak RSS", self.rss_mib);
        eprintln!();
    }

    pub fn json(&self) -> String {
        let round = |x: f64| (x * 100.0).round() / 100.0;
        json!({
            "store": match self.store { Store::Sqlite => "sqlite", Store::Postgres => "postgres" },
            "ceiling_rps": round(self.ceiling_rps),
            "publish_rps": round(self.publish_rps),
            "publish_batch_rps": round(self.publish_batch_rps),
            "e2e_rps": round(self.e2e_rps),
            "e2e_multi_rps": round(self.e2e_multi_rps),
            "endpoints": self.endpoints,
            "fanout_rps": round(self.fanout_rps),
            "fanout_endpoints": self.fanout,
            "p50_ms": round(self.p50_ms),
            "p90_ms": round(self.p90_ms),
            "p99_ms": round(self.p99_ms),
            "max_ms": round(self.max_ms),
            "rate": self.rate,
            "rss_mib": round(self.rss_mib),
        })
        .to_string()
    }
}
