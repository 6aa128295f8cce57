//! Live nodes sharing one database: every event delivered exactly once, wake-ups across
//! nodes, a shared idempotency key and rate limit, and key and endpoint changes seen by
//! every node at once.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::Method;
use serde_json::{json, Value};
use tokio::task::JoinSet;

use crate::helpers::{Backend, Node, Resp, Sql, TestDb};
use crate::receiver::TestReceiver;

use super::{create_endpoint, metric, per_id, publish_batch, wait_all_delivered, wait_queue_empty};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_live_nodes_deliver_every_event_exactly_once() {
    let db = TestDb::of(Backend::Postgres).await;
    let rx = TestReceiver::start().await;
    let a = Node::start(&db.url, &[]).await;
    let b = Node::start(&db.url, &[]).await;
    create_endpoint(&a, &rx.url("/once")).await;
    // 2,000 events, published on both nodes at once.
    let (from_a, from_b) = tokio::join!(
        async {
            let mut ids = Vec::new();
            for i in 0..10 {
                ids.extend(
                    publish_batch(&a, &format!("a{i}"), 100)
                        .await
                        .expect("publish"),
                );
            }
            ids
        },
        async {
            let mut ids = Vec::new();
            for i in 0..10 {
                ids.extend(
                    publish_batch(&b, &format!("b{i}"), 100)
                        .await
                        .expect("publish"),
                );
            }
            ids
        }
    );
    let accepted: Vec<String> = from_a.into_iter().chain(from_b).collect();
    assert_eq!(accepted.len(), 2000);
    wait_all_delivered(&rx, "/once", &accepted, Duration::from_secs(60)).await;
    let sql = Sql::new(&db.url);
    wait_queue_empty(&sql, Duration::from_secs(10)).await;
    // Both delivered (the work is shared), and nothing twice.
    let attempts_a = metric(&a, "posthorn_delivery_attempts_total").await;
    let attempts_b = metric(&b, "posthorn_delivery_attempts_total").await;
    eprintln!("attempts: node a {attempts_a}, node b {attempts_b}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let counts = per_id(&rx, "/once");
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "{} events delivered more than once by live nodes, e.g. {:?}",
        twice.len(),
        twice.first()
    );
    assert_eq!(counts.len(), 2000);
    assert!(
        attempts_a > 0.0 && attempts_b > 0.0,
        "one node did all the work (a {attempts_a}, b {attempts_b})"
    );
    sql.close().await;
}

#[tokio::test]
async fn an_event_published_on_an_api_node_wakes_a_worker_on_another_node() {
    let db = TestDb::of(Backend::Postgres).await;
    let rx = TestReceiver::start().await;
    let api = Node::start(&db.url, &[("POSTHORN_WORKERS", "false")]).await;
    // It polls once a minute: only a wake-up from the other node can make it quick.
    let worker = Node::start(&db.url, &[("POSTHORN_POLL_INTERVAL", "60s")]).await;
    create_endpoint(&api, &rx.url("/woken")).await;
    // Let the worker settle into its long wait (and LISTEN) first.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for n in 1..=3 {
        let started = Instant::now();
        let r = api
            .post(
                "/webhooks/v1/events",
                &json!({"eventName": "note.created", "data": {"n": n}}),
            )
            .await;
        assert_eq!(r.status, 202, "{}", r.text);
        rx.wait_for("/woken", n, Duration::from_secs(5)).await;
        eprintln!("event {n} arrived {:?} after publishing", started.elapsed());
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    assert_eq!(
        metric(&api, "posthorn_delivery_attempts_total").await,
        0.0,
        "the API-only node delivered"
    );
    assert_eq!(
        metric(&worker, "posthorn_delivery_attempts_total").await,
        3.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_is_shared_by_the_nodes() {
    let db = TestDb::of(Backend::Postgres).await;
    let rx = TestReceiver::start().await;
    let a = Arc::new(Node::start(&db.url, &[]).await);
    let b = Arc::new(Node::start(&db.url, &[]).await);
    create_endpoint(&a, &rx.url("/idem")).await;

    // One after the other, on A then on B.
    let first = a
        .post(
            "/webhooks/v1/events",
            &json!({"eventName": "note.created", "data": {"v": 1}, "idempotencyKey": "k-seq"}),
        )
        .await;
    assert_eq!(first.status, 202, "{}", first.text);
    let again = b
        .post(
            "/webhooks/v1/events",
            &json!({"eventName": "note.created", "data": {"v": 2}, "idempotencyKey": "k-seq"}),
        )
        .await;
    assert_eq!(again.status, 202, "{}", again.text);
    assert_eq!(again.body, first.body, "B answers what A answered");

    // At the same moment on both.
    let mut racing = JoinSet::new();
    for i in 0..10 {
        let node = if i % 2 == 0 { a.clone() } else { b.clone() };
        racing.spawn(async move {
            node.post(
                "/webhooks/v1/events",
                &json!({"eventName": "note.created", "data": {"i": i}, "idempotencyKey": "k-race"}),
            )
            .await
        });
    }
    let mut answers = HashSet::new();
    while let Some(r) = racing.join_next().await {
        let r: Resp = r.expect("task");
        assert_eq!(r.status, 202, "{}", r.text);
        answers.insert(r.body.to_string());
    }
    assert_eq!(
        answers.len(),
        1,
        "different answers for one key: {answers:?}"
    );
    let raced: Value = serde_json::from_str(answers.iter().next().expect("one")).expect("json");

    let ids = [
        first.body["id"].as_str().expect("id").to_owned(),
        raced["id"].as_str().expect("id").to_owned(),
    ];
    wait_all_delivered(&rx, "/idem", &ids, Duration::from_secs(10)).await;
    let sql = Sql::new(&db.url);
    wait_queue_empty(&sql, Duration::from_secs(10)).await;
    assert_eq!(
        sql.i64("SELECT COUNT(*) FROM events").await,
        2,
        "one event per key"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let counts = per_id(&rx, "/idem");
    assert_eq!(counts.len(), 2, "{counts:?}");
    assert!(
        counts.values().all(|n| *n == 1),
        "delivered again: {counts:?}"
    );
    sql.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keys_rate_limit_holds_across_nodes() {
    const RATE: usize = 5;
    let db = TestDb::of(Backend::Postgres).await;
    let env = [("POSTHORN_RATE_LIMIT", "5")];
    let a = Arc::new(Node::start(&db.url, &env).await);
    let b = Arc::new(Node::start(&db.url, &env).await);
    let r = a
        .post("/webhooks/v1/keys", &json!({"role": "publisher"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let key = Arc::new(r.body["key"].as_str().expect("key").to_owned());

    // Start just after a second boundary, so that the burst most likely falls in one
    // (wall-clock) window.
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock");
    let into = Duration::from_millis(u64::from(now.subsec_millis()));
    tokio::time::sleep(Duration::from_millis(1020) - into).await;
    let started = Instant::now();
    let window_of = |t: SystemTime| t.duration_since(UNIX_EPOCH).expect("clock").as_secs();
    let first_window = window_of(SystemTime::now());
    let mut requests = JoinSet::new();
    for i in 0..20 {
        let (node, key) = (if i % 2 == 0 { a.clone() } else { b.clone() }, key.clone());
        requests.spawn(async move {
            let r = node
                .call(Method::GET, "/webhooks/v1/event-types", Some(&key), None)
                .await;
            (i % 2, r)
        });
    }
    let mut ok = [0usize; 2];
    let mut limited = 0;
    while let Some(done) = requests.join_next().await {
        let (n, r) = done.expect("task");
        match r.status {
            200 => ok[n] += 1,
            429 => {
                r.assert_error(429, "too_many_requests");
                assert!(
                    r.header("retry-after").parse::<u64>().is_ok_and(|s| s >= 1),
                    "429 without a Retry-After in seconds: {:?}",
                    r.headers
                );
                limited += 1;
            }
            other => panic!("unexpected {other}: {}", r.text),
        }
    }
    let took = started.elapsed();
    let same_window = window_of(SystemTime::now()) == first_window;
    let successes = ok[0] + ok[1];
    eprintln!(
        "{successes} allowed (a {}, b {}), {limited} limited, in {took:?}",
        ok[0], ok[1]
    );
    assert!(limited > 0, "20 quick requests at 5/s and none was limited");
    // Counted per key in one-second windows shared by the nodes: a span shorter than a
    // second touches at most two windows, so at most 2 × 5 got through (per-node
    // counting would let up to 2 × 5 through in each window).
    assert!(took < Duration::from_secs(1), "the burst took {took:?}");
    assert!(
        successes <= 2 * RATE,
        "{successes} requests of one key allowed within {took:?} at {RATE}/s"
    );
    assert!(successes >= 1, "the key was refused outright");
    if same_window {
        // All within one window: the nodes together allowed one window's worth.
        assert!(
            successes <= RATE,
            "{successes} requests of one key allowed in one second at {RATE}/s across two nodes"
        );
    }
}

#[tokio::test]
async fn keys_and_endpoints_changed_on_one_node_hold_at_once_on_the_others() {
    let db = TestDb::of(Backend::Postgres).await;
    let a = Node::start(&db.url, &[]).await;
    let b = Node::start(&db.url, &[]).await;
    let created = a.post("/webhooks/v1/keys", &json!({"role": "admin"})).await;
    assert_eq!(created.status, 200, "{}", created.text);
    let key = created.body["key"].as_str().expect("key").to_owned();
    let id = created.body["id"].as_str().expect("id").to_owned();
    let r = b
        .post(
            "/webhooks/v1/endpoints",
            &json!({"url": "https://example.com/x"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = a
        .call(Method::GET, "/webhooks/v1/endpoints", Some(&key), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["endpoints"].as_array().map(Vec::len), Some(1));

    let revoked = a
        .call(
            Method::DELETE,
            &format!("/webhooks/v1/keys/{id}"),
            None,
            None,
        )
        .await;
    assert_eq!(revoked.status, 200, "{}", revoked.text);
    let r = b
        .call(Method::GET, "/webhooks/v1/endpoints", Some(&key), None)
        .await;
    r.assert_error(401, "unauthorized");
}
