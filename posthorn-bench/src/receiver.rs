//! The receiver: answers 200 at once (or, on the soak's `/fail` and `/slow` paths, 500
//! at once and 200 after 200 ms), counts what arrives, and in latency mode
//! reads the publish time stamped into each event.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

pub struct Counters {
    pub epoch: Instant,
    pub received: AtomicU64,
    /// Nanoseconds since `epoch` of the last request received.
    pub last_ns: AtomicU64,
    pub measure_latency: AtomicBool,
    pub latencies_ns: Mutex<Vec<u64>>,
    /// Attempts answered 429 on `/backlog/...`.
    pub backlog: AtomicU64,
    /// Attempts answered 500 on `/fail/...` (the soak's failing endpoint).
    pub failed: AtomicU64,
    /// Deliveries to `/limited/...` (rate-limited endpoints), not counted as received.
    pub limited: AtomicU64,
}

impl Counters {
    pub fn reset(&self) {
        self.received.store(0, Ordering::SeqCst);
        self.last_ns.store(0, Ordering::SeqCst);
    }
}

async fn handle(
    c: Arc<Counters>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    // A backlog endpoint: every attempt is told to come back in an hour.
    if req.uri().path().starts_with("/backlog") {
        c.backlog.fetch_add(1, Ordering::SeqCst);
        let mut busy = Response::new(Full::new(Bytes::new()));
        *busy.status_mut() = hyper::StatusCode::TOO_MANY_REQUESTS;
        busy.headers_mut().insert(
            "retry-after",
            hyper::header::HeaderValue::from_static("3600"),
        );
        return Ok(busy);
    }
    // The soak's failing endpoint, and its slow one (200 ms per answer).
    if req.uri().path().starts_with("/fail") {
        c.failed.fetch_add(1, Ordering::SeqCst);
        let mut failed = Response::new(Full::new(Bytes::new()));
        *failed.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
        return Ok(failed);
    }
    if req.uri().path().starts_with("/limited") {
        c.limited.fetch_add(1, Ordering::SeqCst);
        return Ok(Response::new(Full::new(Bytes::new())));
    }
    if req.uri().path().starts_with("/slow") {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let now = c.epoch.elapsed().as_nanos() as u64;
    if c.measure_latency.load(Ordering::Relaxed) {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) {
            if let Some(t) = v["data"]["t"].as_u64() {
                if let Ok(mut l) = c.latencies_ns.lock() {
                    l.push(now.saturating_sub(t));
                }
            }
        }
    }
    c.last_ns.fetch_max(now, Ordering::SeqCst);
    c.received.fetch_add(1, Ordering::SeqCst);
    Ok(Response::new(Full::new(Bytes::new())))
}

/// Starts the receiver on a free loopback port.
pub async fn start(epoch: Instant) -> anyhow::Result<(SocketAddr, Arc<Counters>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let counters = Arc::new(Counters {
        epoch,
        received: AtomicU64::new(0),
        last_ns: AtomicU64::new(0),
        measure_latency: AtomicBool::new(false),
        latencies_ns: Mutex::new(Vec::new()),
        backlog: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        limited: AtomicU64::new(0),
    });
    let c = counters.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let c = c.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| handle(c.clone(), req));
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok((addr, counters))
}
