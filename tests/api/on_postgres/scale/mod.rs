//! Many `posthorn serve` processes on one PostgreSQL database: shared work, takeover
//! after a crash, no double delivery while alive, wake-ups across nodes, shared
//! idempotency and rate limits, and surviving a PostgreSQL restart.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::{Node, Sql, TestApp, NODE_KEY};
use crate::receiver::TestReceiver;

mod restart;
mod shared;
mod takeover;

/// Short leases, so that work held by a killed node is taken over within seconds.
const SHORT_LEASES: [(&str, &str); 2] = [
    ("POSTHORN_ATTEMPT_TIMEOUT", "2s"),
    ("POSTHORN_LEASE_MARGIN", "1s"),
];

async fn create_endpoint(node: &Node, url: &str) {
    let r = node
        .post("/webhooks/v1/endpoints", &json!({ "url": url }))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

/// `n` events in one batch request to `node`; the accepted ids, or why not.
async fn publish_batch(node: &Node, tag: &str, n: usize) -> Result<Vec<String>, String> {
    publish_batch_to(&node.client, &node.base, tag, n).await
}

/// `n` events in one batch request to the node at `base`.
async fn publish_batch_to(
    client: &reqwest::Client,
    base: &str,
    tag: &str,
    n: usize,
) -> Result<Vec<String>, String> {
    let events: Vec<_> = (0..n)
        .map(|i| json!({"eventName": "note.created", "data": {"tag": tag, "i": i}}))
        .collect();
    let sent = client
        .post(format!("{base}/webhooks/v1/events/batch"))
        .header("Authorization", format!("Basic {NODE_KEY}"))
        .json(&json!({ "events": events }))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let resp = TestApp::read(sent).await;
    if resp.status != 202 {
        return Err(format!("{}: {}", resp.status, resp.text));
    }
    Ok(resp.body["events"]
        .as_array()
        .ok_or_else(|| resp.text.clone())?
        .iter()
        .map(|e| e["id"].as_str().expect("id").to_owned())
        .collect())
}

/// Requests per `webhook-id` received on `path`.
fn per_id(rx: &TestReceiver, path: &str) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for r in rx.received(path) {
        *counts.entry(r.header("webhook-id").to_owned()).or_default() += 1;
    }
    counts
}

/// Waits until every id in `ids` has arrived on `path`.
async fn wait_all_delivered(rx: &TestReceiver, path: &str, ids: &[String], within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let got = rx.ids(path);
        let missing = ids.iter().filter(|id| !got.contains(*id)).count();
        if missing == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} of {} accepted events not delivered within {within:?}",
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the store has no pending delivery left (so nothing more can arrive).
async fn wait_queue_empty(sql: &Sql, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let pending = sql
            .i64("SELECT COUNT(*) FROM deliveries WHERE state = 'pending'")
            .await;
        if pending == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{pending} deliveries still pending after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A gauge or counter from a node's `/metrics` (summed over its label sets).
async fn metric(node: &Node, name: &str) -> f64 {
    let text = node
        .client
        .get(format!("{}/metrics", node.base))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body");
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
