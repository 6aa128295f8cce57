//! The flow phase: FIFO throughput to one fast endpoint, beside the receiver's own
//! round trip (a FIFO endpoint gets one delivery at a time, so one round trip per event
//! bounds it); and end to end to one endpoint alone and then while rate-limited
//! endpoints hold a backlog (they must cost it nothing).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;
use serde_json::json;

use crate::load::{self, Conn};
use crate::phases::{admin, drained, e2e, progress};
use crate::receiver::Counters;
use crate::server::ADMIN_KEY;

/// Rate-limited endpoints, their limit, and the events each is sent.
const LIMITED: usize = 10;
const LIMIT: u32 = 10;
const LIMITED_EVENTS: usize = 1_000;

#[derive(Debug, Clone, Copy)]
pub struct Flow {
    pub fifo_events: usize,
    pub fifo_rps: f64,
    /// Sequential posts straight to the receiver over one connection.
    pub round_trip_rps: f64,
    pub alone_rps: f64,
    pub beside_limited_rps: f64,
    /// What the rate-limited endpoints received meanwhile, per second, in all.
    pub limited_rps: f64,
    pub limited_cap: f64,
}

fn batch(name: &str, from: usize) -> Bytes {
    let events: Vec<String> = (from..from + 100)
        .map(|i| format!(r#"{{"eventName":"{name}","data":{{"i":{i}}}}}"#))
        .collect();
    Bytes::from(format!(r#"{{"events":[{}]}}"#, events.join(",")))
}

pub async fn run(
    api: SocketAddr,
    rx: SocketAddr,
    counters: &Counters,
    n: usize,
    c: usize,
) -> anyhow::Result<Flow> {
    // Connections of its own, opened when needed: posthorn closes one left idle past
    // the header timeout.
    let conn = &mut Conn::open(api).await?;
    let fifo_events = (n / 10).max(100) / 100 * 100;
    progress("flow: the receiver's round trip, one connection, one post at a time");
    let t = Instant::now();
    load::run(rx, 1, 2_000, None, |i| {
        (
            "/ceiling".to_owned(),
            Bytes::from(format!(r#"{{"i":{i}}}"#)),
        )
    })
    .await?;
    let round_trip_rps = 2_000.0 / t.elapsed().as_secs_f64();
    counters.reset();

    for name in ["bench.fifo", "bench.limited"] {
        admin(conn, "/webhooks/v1/event-types", json!({"eventName": name})).await?;
    }
    admin(
        conn,
        "/webhooks/v1/endpoints",
        json!({"url": format!("http://{rx}/fifo/0"), "ordering": "fifo",
               "eventTypes": [{"eventName": "bench.fifo"}]}),
    )
    .await?;
    progress(&format!("flow: {fifo_events} events to 1 FIFO endpoint"));
    let from = counters.epoch.elapsed().as_nanos() as u64;
    load::run(api, 1, fifo_events / 100, Some(ADMIN_KEY.to_owned()), |b| {
        (
            "/webhooks/v1/events/batch".to_owned(),
            batch("bench.fifo", b * 100),
        )
    })
    .await?;
    let fifo_rps = fifo_events as f64 / drained(counters, fifo_events as u64, from, "fifo").await?;

    let half = n / 2;
    progress(&format!(
        "flow: end to end, {half} events to 1 endpoint, alone"
    ));
    let alone_rps = e2e(api, counters, half, c, "bench.one", "alone").await?;

    progress(&format!(
        "flow: {LIMITED} endpoints limited to {LIMIT}/s, {LIMITED_EVENTS} events each waiting"
    ));
    let conn = &mut Conn::open(api).await?;
    for i in 0..LIMITED {
        admin(
            conn,
            "/webhooks/v1/endpoints",
            json!({"url": format!("http://{rx}/limited/{i}"), "rateLimit": LIMIT,
                   "eventTypes": [{"eventName": "bench.limited"}]}),
        )
        .await?;
    }
    load::run(
        api,
        1,
        LIMITED_EVENTS / 100,
        Some(ADMIN_KEY.to_owned()),
        |b| {
            (
                "/webhooks/v1/events/batch".to_owned(),
                batch("bench.limited", b * 100),
            )
        },
    )
    .await?;
    let limited_from = counters.limited.load(Ordering::SeqCst);
    let t = Instant::now();
    progress(&format!(
        "flow: end to end, {half} events to 1 endpoint, beside them"
    ));
    let beside_limited_rps = e2e(api, counters, half, c, "bench.one", "beside limited").await?;
    let limited_rps =
        (counters.limited.load(Ordering::SeqCst) - limited_from) as f64 / t.elapsed().as_secs_f64();
    Ok(Flow {
        fifo_events,
        fifo_rps,
        round_trip_rps,
        alone_rps,
        beside_limited_rps,
        limited_rps,
        limited_cap: f64::from(LIMIT) * LIMITED as f64,
    })
}
