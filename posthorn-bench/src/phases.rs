//! The measured phases, in order: the ceiling, publishing, end to end, fan-out,
//! latency, flow control, and growth.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use serde_json::json;

use crate::growth::{self, Disk};
use crate::latency;
use crate::load::{self, Conn};
use crate::receiver::{self, Counters};
use crate::report::Report;
use crate::server::{Database, Posthorn, ADMIN_KEY};
use crate::{Args, Phase};

pub fn progress(msg: &str) {
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
pub async fn drained(c: &Counters, n: u64, from_ns: u64, what: &str) -> anyhow::Result<f64> {
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut last_report = Instant::now();
    loop {
        let got = c.received.load(Ordering::SeqCst);
        if got >= n {
            let last = c.last_ns.load(Ordering::SeqCst);
            return Ok((last.saturating_sub(from_ns)) as f64 / 1e9);
        }
        if Instant::now() > deadline {
            bail!("{what}: only {got} of {n} deliveries arrived within 300 s");
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            progress(&format!("{what}: {got}/{n} delivered"));
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Publishes `n` single events of `name` over `c` connections; deliveries per second
/// from the first publish until the receiver has counted `n × fan-out`.
pub async fn e2e(
    api: SocketAddr,
    counters: &Counters,
    n: usize,
    c: usize,
    name: &'static str,
    what: &str,
) -> anyhow::Result<f64> {
    counters.reset();
    let from = counters.epoch.elapsed().as_nanos() as u64;
    load::run(api, c, n, Some(ADMIN_KEY.to_owned()), move |i| {
        ("/webhooks/v1/events".to_owned(), event(name, i))
    })
    .await?;
    Ok(n as f64 / drained(counters, n as u64, from, what).await?)
}

pub async fn admin(conn: &mut Conn, path: &str, body: serde_json::Value) -> anyhow::Result<()> {
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

pub async fn endpoints(
    conn: &mut Conn,
    rx: SocketAddr,
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

/// The best of three runs of the generator posting straight to the receiver.
async fn ceiling(rx: SocketAddr, counters: &Counters, n: usize, c: usize) -> anyhow::Result<f64> {
    let mut best: f64 = 0.0;
    for _ in 0..3 {
        let t = Instant::now();
        load::run(rx, c, n, None, |i| ("/ceiling".to_owned(), ceiling_body(i))).await?;
        best = best.max(n as f64 / t.elapsed().as_secs_f64());
        counters.reset();
    }
    Ok(best)
}

pub async fn run(args: &Args, bin: &Path) -> anyhow::Result<Report> {
    let epoch = Instant::now();
    let (rx, counters) = receiver::start(epoch).await?;
    let c = args.concurrency;
    let n = args.events;
    let mut report = Report {
        store: Some(args.store),
        endpoints: args.endpoints,
        fanout: args.fanout,
        ..Report::default()
    };
    let on = |p: Phase| args.phases.is_empty() || args.phases.contains(&p);

    progress(&format!(
        "ceiling: {n} posts straight to the receiver over {c} keep-alive connections, best of 3"
    ));
    report.ceiling_rps = ceiling(rx, &counters, n, c).await?;

    let (database, database_url) = Database::fresh(args.store).await?;
    progress(&format!("starting posthorn on {database_url}"));
    let posthorn = Posthorn::start(
        bin,
        &database_url,
        &[
            ("POSTHORN_MAX_IN_FLIGHT_PER_ENDPOINT", c.to_string()),
            // The growth phase's backlog endpoint answers every delivery 429 (retry in
            // an hour): each must be tried once, not the endpoint held back.
            ("POSTHORN_MAX_PAUSE", "0s".to_owned()),
            ("POSTHORN_CIRCUIT_FAILURES", "0".to_owned()),
        ],
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
    admin(
        &mut conn,
        "/webhooks/v1/event-types",
        json!({"eventName": "bench.schema", "schema": {
            "type": "object", "required": ["i"],
            "properties": {"i": {"type": "integer", "minimum": 0}}
        }}),
    )
    .await?;
    endpoints(&mut conn, rx, "one", "bench.one", 1).await?;
    endpoints(&mut conn, rx, "ten", "bench.ten", args.endpoints).await?;
    endpoints(&mut conn, rx, "lat", "bench.lat", 1).await?;
    endpoints(&mut conn, rx, "history", "bench.history", 1).await?;
    endpoints(&mut conn, rx, "backlog", "bench.backlog", 1).await?;
    if on(Phase::Fanout) {
        progress(&format!("creating {} fan-out endpoints", args.fanout));
        endpoints(&mut conn, rx, "fan", "bench.fan", args.fanout).await?;
    }
    let key = Some(ADMIN_KEY.to_owned());

    // CPU seconds of posthorn and of this process (generator and receiver) over a phase.
    let cpu = || {
        (
            posthorn.cpu_secs(),
            crate::server::cpu_secs_of("/proc/self/stat"),
        )
    };
    let per_delivery = |before: (f64, f64), n: f64| {
        let after = cpu();
        (
            1e6 * (after.0 - before.0) / n,
            1e6 * (after.1 - before.1) / n,
        )
    };

    if on(Phase::Publish) {
        progress(&format!(
            "publish: {n} single publishes (no subscribers), {c} connections"
        ));
        let before = cpu();
        let t = Instant::now();
        load::run(api, c, n, key.clone(), |i| {
            ("/webhooks/v1/events".to_owned(), event("bench.nobody", i))
        })
        .await?;
        report.publish_rps = n as f64 / t.elapsed().as_secs_f64();
        report.cpu_publish = Some(per_delivery(before, n as f64));

        progress(&format!(
            "publish: {n} single publishes of a type with a JSON Schema (no subscribers)"
        ));
        let before = cpu();
        let t = Instant::now();
        load::run(api, c, n, key.clone(), |i| {
            ("/webhooks/v1/events".to_owned(), event("bench.schema", i))
        })
        .await?;
        report.publish_schema_rps = n as f64 / t.elapsed().as_secs_f64();
        report.cpu_publish_schema = Some(per_delivery(before, n as f64));

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
        report.publish_batch_rps = (n.div_ceil(100) * 100) as f64 / t.elapsed().as_secs_f64();
    }

    if on(Phase::E2e) {
        progress(&format!("end to end: {n} events to 1 endpoint"));
        let before = cpu();
        report.e2e_rps = e2e(api, &counters, n, c, "bench.one", "1 endpoint").await?;
        report.cpu_e2e = Some(per_delivery(before, n as f64));

        let multi_events = n / args.endpoints.max(1);
        progress(&format!(
            "end to end: {multi_events} events to {} endpoints ({} deliveries)",
            args.endpoints,
            multi_events * args.endpoints
        ));
        counters.reset();
        let from = epoch.elapsed().as_nanos() as u64;
        load::run(api, c, multi_events, key.clone(), |i| {
            ("/webhooks/v1/events".to_owned(), event("bench.ten", i))
        })
        .await?;
        let multi = (multi_events * args.endpoints) as u64;
        report.e2e_multi_rps =
            multi as f64 / drained(&counters, multi, from, "multi endpoint").await?;
    }

    if on(Phase::Fanout) {
        let fan_events = (n / args.fanout.max(1)).max(1);
        let fan = (fan_events * args.fanout) as u64;
        progress(&format!(
            "fan-out: {fan_events} events to {} endpoints ({fan} deliveries)",
            args.fanout
        ));
        counters.reset();
        let before = cpu();
        let from = epoch.elapsed().as_nanos() as u64;
        load::run(api, c.min(fan_events), fan_events, key.clone(), |i| {
            ("/webhooks/v1/events".to_owned(), event("bench.fan", i))
        })
        .await?;
        report.fanout_rps = fan as f64 / drained(&counters, fan, from, "fan-out").await?;
        report.cpu_fanout = Some(per_delivery(before, fan as f64));
    }

    if on(Phase::Latency) {
        progress(&format!(
            "latency: {} s at {}/s to 1 endpoint",
            args.latency_secs, args.rate
        ));
        report.latency =
            Some(latency::measure(api, &counters, args.rate, args.latency_secs, c).await?);
        if report.e2e_rps > 0.0 {
            let half = (report.e2e_rps / 2.0) as u64;
            progress(&format!(
                "latency: {} s at {half}/s (half the end-to-end maximum)",
                args.latency_secs
            ));
            report.latency_half =
                Some(latency::measure(api, &counters, half, args.latency_secs, c).await?);
        }
    }

    if on(Phase::Flow) {
        report.flow = Some(crate::flow::run(api, rx, &counters, n, c).await?);
    }

    if on(Phase::Growth) && args.history > 0 {
        let db_path = database.sqlite_file();
        let disk = match &db_path {
            Some(path) => Disk::Sqlite(path),
            None => Disk::Postgres(&database_url),
        };
        report.growth =
            Some(growth::run(api, &counters, disk, args.history, args.backlog, n, c).await?);
    }

    if on(Phase::Web) {
        match &report.growth {
            // The grown history and backlog (the earlier phases' deliveries besides).
            Some(g) => report.web = Some(crate::web::run(api, g.finished + g.pending).await?),
            None => progress("web: skipped (it measures the store the growth phase grew)"),
        }
    }

    if let Ok((200, text)) = conn.get("/metrics").await {
        let text = String::from_utf8_lossy(&text);
        let value = |name: &str| crate::soak::metric(&text, name);
        if let (Some(sum), Some(count)) = (
            value("posthorn_delivery_attempt_duration_seconds_sum"),
            value("posthorn_delivery_attempt_duration_seconds_count"),
        ) {
            progress(&format!(
                "posthorn saw {count} attempts taking {:.2} ms on average",
                1000.0 * sum / count.max(1.0)
            ));
        }
    }
    report.rss_mib = posthorn
        .peak_rss_mib()
        .context("reading the peak RSS of posthorn")?;
    posthorn.stop().await;
    drop(database);
    Ok(report)
}
