//! The report: a table beside the ceiling on stderr, one JSON line on stdout.

use serde_json::json;

use crate::Store;

#[derive(Debug, Default)]
pub struct Report {
    pub store: Option<Store>,
    pub ceiling_rps: f64,
    pub publish_rps: f64,
    pub publish_batch_rps: f64,
    /// Single publishes of a type whose `data` is checked against a JSON Schema.
    pub publish_schema_rps: f64,
    pub e2e_rps: f64,
    pub e2e_multi_rps: f64,
    pub endpoints: usize,
    pub fanout_rps: f64,
    pub fanout: usize,
    /// Publish-to-receipt latency at a fixed rate.
    pub latency: Option<Latency>,
    /// The same at half of the measured end-to-end maximum.
    pub latency_half: Option<Latency>,
    pub growth: Option<Growth>,
    pub flow: Option<crate::flow::Flow>,
    pub web: Option<crate::web::WebPages>,
    pub rss_mib: f64,
    /// CPU µs per event or delivery, (posthorn, the harness), per phase.
    pub cpu_publish: Option<(f64, f64)>,
    pub cpu_publish_schema: Option<(f64, f64)>,
    pub cpu_e2e: Option<(f64, f64)>,
    pub cpu_multi: Option<(f64, f64)>,
    pub cpu_fanout: Option<(f64, f64)>,
}

#[derive(Debug, Clone, Copy)]
pub struct Latency {
    pub rate: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Clone, Copy)]
pub struct Growth {
    pub finished: usize,
    pub pending: usize,
    /// End to end to 1 endpoint with that history in the store.
    pub e2e_rps: f64,
    /// Bytes the store grew by per delivered event (event, delivery, attempt, indexes).
    pub bytes_per_delivery: f64,
}

impl Report {
    pub fn print_table(&self) {
        let pct = |x: f64| 100.0 * x / self.ceiling_rps;
        eprintln!();
        eprintln!(
            "posthorn-bench ({:?} store)",
            self.store.unwrap_or(Store::Sqlite)
        );
        eprintln!("{:<52} {:>12} {:>10}", "measure", "value", "% ceiling");
        let row = |name: &str, v: f64| {
            eprintln!("{name:<52} {v:>9.0} /s {:>10}", format!("{:.1}%", pct(v)));
        };
        row("ceiling: direct posts to the receiver", self.ceiling_rps);
        row("publish, single (durable 202s)", self.publish_rps);
        row(
            "publish, single, data checked by a schema",
            self.publish_schema_rps,
        );
        row("publish, batches of 100 (events)", self.publish_batch_rps);
        row("end to end, 1 endpoint (deliveries)", self.e2e_rps);
        row(
            &format!("end to end, {} endpoints (deliveries)", self.endpoints),
            self.e2e_multi_rps,
        );
        row(
            &format!("fan-out, {} endpoints (deliveries)", self.fanout),
            self.fanout_rps,
        );
        for l in [self.latency, self.latency_half].into_iter().flatten() {
            eprintln!(
                "{:<52} p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                format!("latency publish -> receipt at {}/s", l.rate),
                l.p50_ms,
                l.p90_ms,
                l.p99_ms,
                l.max_ms
            );
        }
        if let Some(f) = self.flow {
            row(
                &format!("FIFO, 1 endpoint, {} events", f.fifo_events),
                f.fifo_rps,
            );
            row(
                "  bound: one round trip at a time to the receiver",
                f.round_trip_rps,
            );
            row("end to end, 1 endpoint, alone", f.alone_rps);
            row(
                "  ... beside 10 rate-limited endpoints with a backlog",
                f.beside_limited_rps,
            );
            eprintln!(
                "{:<52} {:>9.1} /s (limits sum to {:.0}/s)",
                "  ... which received meanwhile", f.limited_rps, f.limited_cap
            );
        }
        if let Some(g) = self.growth {
            row(
                &format!(
                    "end to end, 1 endpoint, {} finished + {} pending",
                    g.finished, g.pending
                ),
                g.e2e_rps,
            );
            eprintln!(
                "{:<52} {:>9.1} %",
                "  ... of the fresh store's",
                100.0 * g.e2e_rps / self.e2e_rps
            );
            eprintln!(
                "{:<52} {:>9.0} B",
                "store bytes per delivered event", g.bytes_per_delivery
            );
        }
        for (name, cpu) in [
            ("single publish", self.cpu_publish),
            ("single publish with a schema", self.cpu_publish_schema),
            ("end to end, 1 endpoint", self.cpu_e2e),
            ("end to end, many endpoints", self.cpu_multi),
            ("fan-out", self.cpu_fanout),
        ] {
            if let Some((posthorn, harness)) = cpu {
                eprintln!(
                    "{:<52} posthorn {posthorn:.1} µs, harness {harness:.1} µs",
                    format!("CPU per delivery, {name}")
                );
            }
        }
        if let Some(w) = &self.web {
            eprintln!(
                "console pages with {} grown deliveries (p50 / max of 20)",
                w.deliveries
            );
            eprintln!(
                "{:<52} {:>6.1} / {:.1} ms  (ceiling)",
                "  bare round trip, /healthz", w.round_trip.p50_ms, w.round_trip.max_ms
            );
            for (name, _, t) in &w.pages {
                eprintln!(
                    "{:<52} {:>6.1} / {:.1} ms",
                    format!("  {name}"),
                    t.p50_ms,
                    t.max_ms
                );
            }
        }
        eprintln!("{:<52} {:>9.1} MiB", "posthorn peak RSS", self.rss_mib);
        eprintln!();
    }

    pub fn json(&self) -> String {
        let round = |x: f64| (x * 100.0).round() / 100.0;
        let latency = |l: Option<Latency>| {
            l.map(|l| {
                json!({"rate": l.rate, "p50_ms": round(l.p50_ms), "p90_ms": round(l.p90_ms),
                       "p99_ms": round(l.p99_ms), "max_ms": round(l.max_ms)})
            })
        };
        json!({
            "store": match self.store { Some(Store::Postgres) => "postgres", _ => "sqlite" },
            "ceiling_rps": round(self.ceiling_rps),
            "publish_rps": round(self.publish_rps),
            "publish_batch_rps": round(self.publish_batch_rps),
            "publish_schema_rps": round(self.publish_schema_rps),
            "e2e_rps": round(self.e2e_rps),
            "e2e_multi_rps": round(self.e2e_multi_rps),
            "endpoints": self.endpoints,
            "fanout_rps": round(self.fanout_rps),
            "fanout_endpoints": self.fanout,
            "latency": latency(self.latency),
            "latency_half": latency(self.latency_half),
            "growth": self.growth.map(|g| json!({
                "finished": g.finished, "pending": g.pending, "e2e_rps": round(g.e2e_rps),
                "of_fresh": round(g.e2e_rps / self.e2e_rps), "bytes_per_delivery": round(g.bytes_per_delivery),
            })),
            "flow": self.flow.map(|f| json!({
                "fifo_events": f.fifo_events, "fifo_rps": round(f.fifo_rps),
                "round_trip_rps": round(f.round_trip_rps), "alone_rps": round(f.alone_rps),
                "beside_limited_rps": round(f.beside_limited_rps),
                "limited_rps": round(f.limited_rps), "limited_cap": f.limited_cap,
            })),
            "web": self.web.as_ref().map(|w| json!({
                "deliveries": w.deliveries,
                "round_trip_ms": {"p50": round(w.round_trip.p50_ms), "max": round(w.round_trip.max_ms)},
                "pages": w.pages.iter().map(|(name, path, t)| json!({
                    "page": name, "path": path, "p50_ms": round(t.p50_ms), "max_ms": round(t.max_ms),
                })).collect::<Vec<_>>(),
            })),
            "rss_mib": round(self.rss_mib),
            "cpu_us": {
                "publish": self.cpu_publish.map(|c| round(c.0)),
                "publish_schema": self.cpu_publish_schema.map(|c| round(c.0)),
                "e2e": self.cpu_e2e.map(|c| round(c.0)),
                "e2e_multi": self.cpu_multi.map(|c| round(c.0)),
                "fanout": self.cpu_fanout.map(|c| round(c.0)),
            },
        })
        .to_string()
    }
}
