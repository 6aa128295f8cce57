//! A schema that freezes the server: a reference the cost check resolved against the
//! root while the validator resolves it under a nested `$id` (2^28 checks per event),
//! and a check that is heavy within every bound (a big array, each element checked
//! against a big schema). Against a real `posthorn serve` process, whose async workers
//! are its own: publishes and saves answer within `POSTHORN_VALIDATION_BUDGET`, store
//! nothing they could not check, and `/healthz` stays fast meanwhile.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::oneshot;

use crate::helpers::{Node, Sql, TestDb};

const TYPES: &str = "/webhooks/v1/event-types";
const EVENTS: &str = "/webhooks/v1/events";
const BUDGET: Duration = Duration::from_millis(300);
/// How late after its budget a request may answer (parsing a 200 KB body in a debug
/// build, scheduling on a loaded machine).
const SLACK: Duration = Duration::from_millis(700);

async fn node(db: &TestDb) -> Node {
    Node::start(&db.url, &[("POSTHORN_VALIDATION_BUDGET", "300ms")]).await
}

/// `a_k = allOf[$ref a_{k-1}, $ref a_{k-1}]` under a nested `$id`, where the validator
/// resolves `#/$defs/a_k`; the root has small `$defs` of the same names.
fn doubling_under_id(depth: usize) -> Value {
    let mut inner = serde_json::Map::new();
    let mut decoys = serde_json::Map::new();
    inner.insert("a0".into(), json!({"type": "string"}));
    decoys.insert("a0".into(), json!({}));
    for i in 1..=depth {
        let below = format!("#/$defs/a{}", i - 1);
        inner.insert(
            format!("a{i}"),
            json!({"allOf": [{"$ref": below}, {"$ref": below}]}),
        );
        decoys.insert(format!("a{i}"), json!({}));
    }
    decoys.insert(
        "inner".into(),
        json!({
            "$id": "https://posthorn.invalid/inner",
            "$defs": inner,
            "$ref": format!("#/$defs/a{depth}")
        }),
    );
    json!({"$defs": decoys, "properties": {"x": {"$ref": "#/$defs/inner"}}})
}

/// 1,000 conditions on each element of `xs`: about 5,000 values once expanded, well
/// within the bounds, yet seconds of checking for a `data` of 60,000 elements.
fn heavy_schema() -> Value {
    let conditions: Vec<_> = (0..1000)
        .map(|i| json!({"if": {"const": i}, "then": {"type": "string"}}))
        .collect();
    json!({"type": "object", "properties": {"xs": {"items": {"allOf": conditions}}}})
}

/// A `data` that matches [`heavy_schema`], of about 180 KB (under the 256 KiB limit).
fn heavy_data() -> Value {
    json!({"xs": vec![-1; 60_000]})
}

/// `/healthz`, asked every 10 ms until told to stop: how long each answer took.
struct Probe {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Vec<Duration>>,
}

impl Probe {
    fn start(node: &Node) -> Probe {
        let (stop, mut stopped) = oneshot::channel();
        let url = format!("{}/healthz", node.base);
        let client = reqwest::Client::new();
        let task = tokio::spawn(async move {
            let mut took = Vec::new();
            loop {
                let t = Instant::now();
                let resp = client
                    .get(&url)
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await
                    .expect("healthz answers");
                assert_eq!(resp.status(), 200);
                took.push(t.elapsed());
                tokio::select! {
                    _ = &mut stopped => return took,
                    () = tokio::time::sleep(Duration::from_millis(10)) => {}
                }
            }
        });
        Probe { stop, task }
    }

    /// Stops probing; asserts `/healthz` stayed under 50 ms. A probe or two in ten may
    /// be late by the scheduling of a loaded 2-core machine, never by a stall.
    async fn assert_fast(self) {
        let _ = self.stop.send(());
        let took = self.task.await.expect("probe task");
        assert!(!took.is_empty(), "no probe answered");
        let slow = took
            .iter()
            .filter(|t| **t >= Duration::from_millis(50))
            .count();
        let worst = took.iter().max().copied().unwrap_or_default();
        assert!(
            slow * 10 <= took.len() && worst < Duration::from_millis(250),
            "/healthz was slow: {slow} of {} probes took 50 ms or more, the worst {worst:?}",
            took.len()
        );
    }
}

/// The request's answer and how long it took.
async fn timed(node: &Node, path: &str, body: &Value) -> (crate::helpers::Resp, Duration) {
    let t = Instant::now();
    let resp = node.post(path, body).await;
    (resp, t.elapsed())
}

#[tokio::test]
async fn a_schema_whose_refs_resolve_under_a_nested_id_is_refused() {
    let db = TestDb::new().await;
    let node = node(&db).await;
    let probe = Probe::start(&node);
    let hostile = doubling_under_id(28);

    let (resp, took) = timed(
        &node,
        TYPES,
        &json!({"eventName": "order.created", "schema": hostile}),
    )
    .await;
    resp.assert_error(400, "invalid_field");
    assert!(resp.text.contains("$id"), "{}", resp.text);
    assert!(took < BUDGET + SLACK, "{took:?}");

    // Nor can it be given to a type that exists.
    let plain = node
        .post(TYPES, &json!({"eventName": "order.created"}))
        .await;
    assert_eq!(plain.status, 200, "{}", plain.text);
    let (resp, took) = timed(
        &node,
        &format!("{TYPES}/order.created"),
        &json!({"schema": hostile}),
    )
    .await;
    resp.assert_error(400, "invalid_field");
    assert!(took < BUDGET + SLACK, "{took:?}");

    // Two publishes in flight, as in the report, answer at once.
    let publish = json!({"eventName": "order.created", "data": {"x": "a"}});
    let (a, b) = tokio::join!(
        timed(&node, EVENTS, &publish),
        timed(&node, EVENTS, &publish)
    );
    for (resp, took) in [a, b] {
        assert_eq!(resp.status, 202, "{}", resp.text);
        assert!(took < BUDGET + SLACK, "{took:?}");
    }
    let def = node.call(reqwest::Method::GET, TYPES, None, None).await;
    assert!(!def.text.contains("posthorn.invalid"), "{}", def.text);
    probe.assert_fast().await;
}

#[tokio::test]
async fn a_heavy_check_answers_422_within_its_budget_and_stores_nothing() {
    let db = TestDb::new().await;
    let node = node(&db).await;
    let sql = Sql::new(&db.url);
    let created = node
        .post(
            TYPES,
            &json!({"eventName": "metrics.sampled", "schema": heavy_schema()}),
        )
        .await;
    assert_eq!(created.status, 200, "{}", created.text);
    let probe = Probe::start(&node);

    let heavy = json!({"eventName": "metrics.sampled", "data": heavy_data()});
    let (resp, took) = timed(&node, EVENTS, &heavy).await;
    resp.assert_error(422, "validation_budget_exceeded");
    assert!(resp.text.contains("data"), "{}", resp.text);
    assert!(
        resp.text.contains("POSTHORN_VALIDATION_BUDGET"),
        "{}",
        resp.text
    );
    assert!(took < BUDGET + SLACK, "{took:?}");

    // In a batch: the events before are fine, and none of the batch is stored.
    let light = json!({"eventName": "metrics.sampled", "data": {"xs": [-1, -2]}});
    let batch = json!({"events": [light, heavy, heavy]});
    let (resp, took) = timed(&node, &format!("{EVENTS}/batch"), &batch).await;
    resp.assert_error(422, "validation_budget_exceeded");
    assert!(resp.text.contains("events["), "{}", resp.text);
    assert!(took < BUDGET + SLACK, "{took:?}");

    // Both again at once: one org's share is one thread, so one waits for the other
    // for all of its budget (429, try again), or runs out of it.
    let batch_path = format!("{EVENTS}/batch");
    let (single, batch) = tokio::join!(
        timed(&node, EVENTS, &heavy),
        timed(&node, &batch_path, &batch)
    );
    for (resp, took) in [single, batch] {
        assert!(
            [422, 429].contains(&resp.status),
            "{}: {}",
            resp.status,
            resp.text
        );
        assert!(took < BUDGET + SLACK, "{took:?}");
    }
    probe.assert_fast().await;
    assert_eq!(sql.i64("SELECT COUNT(*) FROM events").await, 0);

    // The type still takes what can be checked in time.
    let ok = node.post(EVENTS, &light).await;
    assert_eq!(ok.status, 202, "{}", ok.text);
    let bad = node
        .post(
            EVENTS,
            &json!({"eventName": "metrics.sampled", "data": {"xs": [3]}}),
        )
        .await;
    bad.assert_error(400, "invalid_field");
    assert_eq!(sql.i64("SELECT COUNT(*) FROM events").await, 1);
    sql.close().await;
}

#[tokio::test]
async fn a_heavy_example_is_refused_at_save_within_its_budget() {
    let db = TestDb::new().await;
    let node = node(&db).await;
    let probe = Probe::start(&node);

    let (resp, took) = timed(
        &node,
        TYPES,
        &json!({"eventName": "metrics.sampled", "schema": heavy_schema(), "example": heavy_data()}),
    )
    .await;
    resp.assert_error(422, "validation_budget_exceeded");
    assert!(resp.text.contains("example"), "{}", resp.text);
    assert!(took < BUDGET + SLACK, "{took:?}");
    let list = node.call(reqwest::Method::GET, TYPES, None, None).await;
    assert!(!list.text.contains("metrics.sampled"), "{}", list.text);

    // The change operation: a new example, and a new schema that the kept example
    // must match.
    let created = node
        .post(
            TYPES,
            &json!({"eventName": "metrics.sampled", "schema": heavy_schema()}),
        )
        .await;
    assert_eq!(created.status, 200, "{}", created.text);
    let path = format!("{TYPES}/metrics.sampled");
    let (resp, took) = timed(&node, &path, &json!({"example": heavy_data()})).await;
    resp.assert_error(422, "validation_budget_exceeded");
    assert!(took < BUDGET + SLACK, "{took:?}");
    let list = node.call(reqwest::Method::GET, TYPES, None, None).await;
    assert!(!list.text.contains("example"), "{}", list.text);
    assert!(
        list.text.contains("\"if\""),
        "the schema is kept: {}",
        list.text
    );
    probe.assert_fast().await;
}
