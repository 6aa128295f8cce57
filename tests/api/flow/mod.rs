//! Per-endpoint flow control over real HTTP with the recording receiver: rate limits,
//! FIFO endpoints, and what receivers say (410, 429, a dead endpoint's circuit).

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{Node, Resp, TestApp};
use crate::receiver::TestReceiver;

mod fifo;
mod rate;
mod signals;

/// A server that polls often and retries on `schedule`.
async fn app(schedule: &str, tweak: impl FnOnce(&mut posthorn::config::ServeConfig)) -> TestApp {
    let schedule = schedule.to_owned();
    crate::helpers::spawn_app_with(move |c| {
        c.delivery.retry_schedule = schedule;
        c.delivery.poll_interval = Duration::from_millis(20);
        c.delivery.attempt_timeout = Duration::from_secs(2);
        tweak(c);
    })
    .await
}

/// The body of an endpoint at `url` taking `event`, with `extra` fields.
fn endpoint_body(url: &str, event: &str, extra: Value) -> Value {
    let mut body = json!({"url": url, "eventTypes": [{"eventName": event}]});
    if let (Some(b), Value::Object(extra)) = (body.as_object_mut(), extra) {
        b.extend(extra);
    }
    body
}

async fn endpoint(app: &TestApp, url: &str, event: &str, extra: Value) -> Resp {
    let r = app
        .post("/webhooks/v1/endpoints", &endpoint_body(url, event, extra))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r
}

/// `n` events of `event` in one batch, `data.i` counting from `from`.
fn batch(event: &str, from: usize, n: usize) -> Value {
    let events: Vec<Value> = (from..from + n)
        .map(|i| json!({"eventName": event, "data": {"i": i}}))
        .collect();
    json!({ "events": events })
}

async fn publish(app: &TestApp, event: &str, from: usize, n: usize) {
    let r = app
        .post("/webhooks/v1/events/batch", &batch(event, from, n))
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
}

/// `data.i` of each request received on `path`, in arrival order.
fn order(rx: &TestReceiver, path: &str) -> Vec<u64> {
    rx.received(path)
        .iter()
        .map(|r| {
            let body: Value = serde_json::from_slice(&r.body).expect("json");
            body["data"]["i"].as_u64().expect("data.i")
        })
        .collect()
}

/// Whether `seen` never goes back: nothing arrived before an earlier event (a repeat
/// of the last one, as after a crash, is allowed).
fn never_goes_back(seen: &[u64]) -> bool {
    seen.windows(2).all(|w| w[1] >= w[0])
}

/// On a `posthorn serve` process: an endpoint at `url` taking `note.created`.
async fn node_endpoint(node: &Node, url: &str, extra: Value) {
    let r = node
        .post(
            "/webhooks/v1/endpoints",
            &endpoint_body(url, "note.created", extra),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

/// On a `posthorn serve` process: `n` events of `note.created` in one batch.
async fn node_publish(node: &Node, from: usize, n: usize) {
    let r = node
        .post("/webhooks/v1/events/batch", &batch("note.created", from, n))
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
}
