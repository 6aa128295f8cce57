//! Logs and metrics.
//!
//! Policy: one log line per request (method, route template, status, `latency_ms`),
//! never a query string, body, key or secret. Metrics live in a registry owned by the
//! app state (no globals), rendered as Prometheus/OpenMetrics text at `/metrics`.
//!
//! Every label takes its value from a set the server bounds, never from what a client
//! sends: a request's method is one of the standard nine or `other`, its route the
//! template it matched (a fixed set) or `unmatched`, its status one the server
//! answered; outcome, reason and state labels are constants. The one label with a
//! value from the store, `posthorn_endpoint_flow`'s endpoint uid, counts endpoints an
//! org created and this process holds back now, so it is bounded by the endpoints
//! (and the series is removed when the endpoint is let go).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;
use crate::domain::Timestamp;
use crate::store::{AttemptRecord, Outcome};

/// Installs the global tracing subscriber. The filter comes from `POSTHORN_LOG`
/// (default `info`).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_env("POSTHORN_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    // Colours only on a terminal, never in a file or pipe (and not with NO_COLOR).
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: &'static str,
    route: String,
}

/// A request's method as a label: one of the standard methods, or `other` for any
/// other token a client sends (it could be any length, and any number of them).
fn method_label(method: &axum::http::Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        "TRACE" => "TRACE",
        "CONNECT" => "CONNECT",
        _ => "other",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointFlowLabels {
    endpoint: String,
    state: &'static str,
}

/// The states of an endpoint's pace in this process (see `delivery/pace.rs`).
pub const FLOW_STATES: [&str; 3] = ["paused", "circuit_open", "paced"];

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    attempts: Family<OutcomeLabels, Counter>,
    attempt_duration: Histogram,
    delivery_latency: Histogram,
    in_flight: Gauge,
    queue_depth: Gauge,
    held_back: Family<ReasonLabels, Counter>,
    endpoint_flow: Family<EndpointFlowLabels, Gauge>,
    live_polls: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "posthorn_http_requests",
            "HTTP requests answered, by route template and status",
            requests.clone(),
        );
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.0001, 2.0, 18))) as fn() -> Histogram,
        );
        registry.register(
            "posthorn_http_request_duration_seconds",
            "HTTP request latency, by route template",
            latency.clone(),
        );
        let attempts = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "posthorn_delivery_attempts",
            "Delivery attempts by outcome (delivered, retry, failed, cancelled)",
            attempts.clone(),
        );
        let attempt_duration = Histogram::new(exponential_buckets(0.0005, 2.0, 18));
        registry.register(
            "posthorn_delivery_attempt_duration_seconds",
            "Time from sending an attempt to the end of the response",
            attempt_duration.clone(),
        );
        let delivery_latency = Histogram::new(exponential_buckets(0.0005, 2.0, 24));
        registry.register(
            "posthorn_delivery_latency_seconds",
            "Time from publish to the successful attempt",
            delivery_latency.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "posthorn_deliveries_in_flight",
            "Attempts in flight in this process",
            in_flight.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "posthorn_queue_depth",
            "Pending deliveries in the store (read at scrape time)",
            queue_depth.clone(),
        );
        let held_back = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "posthorn_flow_held",
            "Deliveries handed back to the queue to wait, by reason (pause, circuit)",
            held_back.clone(),
        );
        let endpoint_flow = Family::<EndpointFlowLabels, Gauge>::default();
        registry.register(
            "posthorn_endpoint_flow",
            "1 for each endpoint this process holds back, by endpoint uid and state \
             (paused, circuit_open, paced)",
            endpoint_flow.clone(),
        );
        let live_polls = Counter::default();
        registry.register(
            "posthorn_live_polls",
            "Reads of a live delivery log's first page (one per org and filter followed, \
             every 2 s, however many streams show it)",
            live_polls.clone(),
        );
        Self {
            live_polls,
            held_back,
            endpoint_flow,
            registry,
            requests,
            latency,
            attempts,
            attempt_duration,
            delivery_latency,
            in_flight,
            queue_depth,
        }
    }

    /// Counts an attempt's outcome and, for a delivery, its publish-to-receipt latency.
    pub fn observe_attempt(&self, record: &AttemptRecord, event_created: Timestamp) {
        let outcome = match (record.outcome, record.attempt_no) {
            (_, None) => "cancelled",
            (Outcome::Delivered, _) => "delivered",
            (Outcome::Retry { .. }, _) => "retry",
            (Outcome::Failed, _) => "failed",
        };
        self.attempts
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
        if record.attempt_no.is_some() {
            self.attempt_duration
                .observe(record.latency_ms as f64 / 1000.0);
        }
        if record.outcome == Outcome::Delivered {
            let ms = Timestamp::now().millis() - event_created.millis();
            self.delivery_latency.observe(ms.max(0) as f64 / 1000.0);
        }
    }

    pub fn held_back(&self, reason: &'static str, n: usize) {
        self.held_back
            .get_or_create(&ReasonLabels { reason })
            .inc_by(n as u64);
    }

    /// The state of an endpoint's pace here (`None`: nothing held back).
    pub fn endpoint_flow(&self, endpoint: crate::domain::EndpointUid, state: Option<&'static str>) {
        for s in FLOW_STATES {
            let labels = EndpointFlowLabels {
                endpoint: endpoint.0.to_string(),
                state: s,
            };
            if Some(s) == state {
                self.endpoint_flow.get_or_create(&labels).set(1);
            } else {
                self.endpoint_flow.remove(&labels);
            }
        }
    }

    /// Counts one read of a followed live log (see `http/streams.rs`).
    pub fn live_poll(&self) {
        self.live_polls.inc();
    }

    pub fn add_in_flight(&self, n: i64) {
        self.in_flight.inc_by(n);
    }

    pub fn set_queue_depth(&self, n: u64) {
        self.queue_depth.set(n as i64);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Middleware: records the metrics and the one log line of each request.
pub async fn track(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = method_label(req.method());
    // A route template is one of the router's; a path no route matched is not a label.
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(req).await;
    let elapsed = start.elapsed();
    let status = response.status().as_u16();
    metrics
        .requests
        .get_or_create(&RequestLabels {
            method,
            route: route.clone(),
            status,
        })
        .inc();
    metrics
        .latency
        .get_or_create(&RouteLabels {
            method,
            route: route.clone(),
        })
        .observe(elapsed.as_secs_f64());
    tracing::info!(
        http.method = %method,
        http.route = %route,
        http.status = status,
        latency_ms = elapsed.as_secs_f64() * 1000.0,
        "request"
    );
    response
}
