//! Many `posthorn serve` processes on one PostgreSQL database (CONTRACT §6): shared
//! work, takeover after a crash, no double delivery while alive, wake-ups across nodes,
//! shared idempotency and rate limits, and surviving a PostgreSQL restart.
//!
//! Compiled into the PostgreSQL test binary only (`postgres_only!` in mod.rs).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::Method;
use serde_json::{json, Value};
use tokio::task::JoinSet;

use crate::api::helpers::{Node, Resp, Sql, TestApp, TestDb, NODE_KEY};
use crate::api::pg::PgCluster;
use crate::api::receiver::{Reply, TestReceiver};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_delivery_loses_nothing_and_duplicates_are_bounded() {
    const MAX_IN_FLIGHT: usize = 64;
    const BATCHES: usize = 45;
    const BATCH: usize = 100;
    // Every event fans out to four slow endpoints, so that publishing outruns three
    // nodes delivering and thousands of deliveries are pending when one node dies.
    const PATHS: [&str; 4] = ["/slow0", "/slow1", "/slow2", "/slow3"];
    let db = TestDb::new().await;
    let rx = TestReceiver::start().await;
    let max_in_flight = MAX_IN_FLIGHT.to_string();
    let env: Vec<(&str, &str)> = SHORT_LEASES
        .into_iter()
        .chain([("POSTHORN_MAX_IN_FLIGHT", max_in_flight.as_str())])
        .collect();
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(Node::start(&db.url, &env).await);
    }
    for path in PATHS {
        rx.always(path, Reply::Slow(20));
        create_endpoint(&nodes[0], &rx.url(path)).await;
    }
    let victim = 1;

    // One publisher per node, BATCHES batches in all; a publisher stops at its node's
    // first failure (the victim's, once it is killed).
    let accepted = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut publishers = JoinSet::new();
    for (n, node) in nodes.iter().enumerate() {
        let (client, base, accepted) = (node.client.clone(), node.base.clone(), accepted.clone());
        publishers.spawn(async move {
            for b in (n..BATCHES).step_by(3) {
                match publish_batch_to(&client, &base, &format!("{n}-{b}"), BATCH).await {
                    Ok(ids) => accepted.lock().expect("lock").extend(ids),
                    Err(e) => return (n, Some(e)),
                }
            }
            (n, None)
        });
    }

    // Kill the victim while it delivers and thousands of accepted deliveries are pending.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (pending, total, in_flight) = loop {
        let total = accepted.lock().expect("lock").len();
        let delivered: usize = PATHS.iter().map(|p| rx.ids(p).len()).sum();
        let pending = (total * PATHS.len()).saturating_sub(delivered);
        let in_flight = metric(&nodes[victim], "posthorn_deliveries_in_flight").await;
        if pending >= 4000 && in_flight >= 16.0 {
            break (pending, total, in_flight);
        }
        assert!(
            Instant::now() < deadline && total < BATCHES * BATCH,
            "never 4000 accepted deliveries pending ({pending}; {total} events accepted) \
             with the victim delivering ({in_flight} in flight); the test would prove nothing"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    nodes[victim].kill().await;
    let killed_at = Instant::now();
    eprintln!(
        "killed node {victim} with {in_flight} attempts in flight, {total} events accepted, \
         {pending} deliveries pending"
    );
    while let Some(done) = publishers.join_next().await {
        let (n, failure) = done.expect("publisher");
        if n != victim {
            assert!(failure.is_none(), "node {n} stopped accepting: {failure:?}");
        }
    }
    for (n, node) in nodes.iter_mut().enumerate() {
        if n != victim {
            node.assert_running();
        }
    }
    let accepted = accepted.lock().expect("lock").clone();

    // Every accepted event arrives at every endpoint: the survivors take the victim's
    // leases over.
    for path in PATHS {
        wait_all_delivered(&rx, path, &accepted, Duration::from_secs(60)).await;
    }
    let sql = Sql::new(&db.url);
    wait_queue_empty(&sql, Duration::from_secs(30)).await;
    // A duplicate whose first copy arrived before the kill can be the victim's work
    // taken over; one whose copies all arrived after it was made twice by live nodes.
    let (mut duplicates, mut live_duplicates) = (0, 0);
    for path in PATHS {
        let mut first: HashMap<String, Instant> = HashMap::new();
        for r in rx.received(path) {
            let id = r.header("webhook-id").to_owned();
            match first.get(&id) {
                None => {
                    first.insert(id, r.at);
                }
                Some(at) => {
                    duplicates += 1;
                    live_duplicates += usize::from(*at >= killed_at);
                }
            }
        }
    }
    eprintln!(
        "{} events accepted, {} deliveries, {duplicates} duplicates ({live_duplicates} \
         first delivered after the kill)",
        accepted.len(),
        accepted.len() * PATHS.len()
    );
    assert_eq!(
        live_duplicates, 0,
        "live nodes delivered {live_duplicates} deliveries twice"
    );
    // An attempt holds its slot until its outcome is written, so the victim's work
    // made but not recorded is at most POSTHORN_MAX_IN_FLIGHT.
    assert!(
        duplicates <= MAX_IN_FLIGHT,
        "{duplicates} duplicate deliveries; the killed node could have had at most \
         {MAX_IN_FLIGHT} attempts in flight"
    );
    sql.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_live_nodes_deliver_every_event_exactly_once() {
    let db = TestDb::new().await;
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
    let db = TestDb::new().await;
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
    let db = TestDb::new().await;
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
    let db = TestDb::new().await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posthorn_rides_out_a_postgres_restart() {
    let cluster = tokio::task::spawn_blocking(PgCluster::dedicated)
        .await
        .expect("cluster");
    let cluster = Arc::new(cluster);
    let url = cluster.create_database().await;
    let rx = TestReceiver::start().await;
    // Slow enough that deliveries are pending, and attempts in flight, when it stops.
    rx.always("/restart", Reply::Slow(10));
    let env: Vec<(&str, &str)> = SHORT_LEASES
        .into_iter()
        .chain([("POSTHORN_MAX_IN_FLIGHT_PER_ENDPOINT", "4")])
        .collect();
    let mut node = Node::start(&url, &env).await;
    create_endpoint(&node, &rx.url("/restart")).await;

    let mut accepted = Vec::new();
    for i in 0..3 {
        accepted.extend(
            publish_batch(&node, &format!("before{i}"), 100)
                .await
                .expect("publish"),
        );
    }
    let stopping = cluster.clone();
    tokio::task::spawn_blocking(move || stopping.stop())
        .await
        .expect("stop");
    let undelivered = accepted.len() - rx.ids("/restart").len();
    eprintln!("PostgreSQL stopped with {undelivered} accepted events undelivered");
    assert!(undelivered > 0, "everything was delivered before the stop");

    // PostgreSQL is down: the API says 503 unavailable with Retry-After, never 500.
    let publish = json!({"eventName": "note.created", "data": {"while": "down"}});
    let batch = json!({"events": [publish.clone()]});
    let call = |method: Method, path: &'static str, body: Option<Value>| {
        let node = &node;
        async move {
            let started = Instant::now();
            let r = node.call(method.clone(), path, None, body.as_ref()).await;
            (format!("{method} {path}"), r, started.elapsed())
        }
    };
    // At once: each may wait for the pool before it gives up.
    let (a, b, c, d, e) = tokio::join!(
        call(Method::POST, "/webhooks/v1/events", Some(publish)),
        call(Method::POST, "/webhooks/v1/events/batch", Some(batch)),
        call(Method::GET, "/webhooks/v1/endpoints", None),
        call(Method::GET, "/webhooks/v1/keys", None),
        call(Method::GET, "/webhooks/v1/event-types", None),
    );
    for (call, r, took) in [a, b, c, d, e] {
        eprintln!("{call}: {} in {took:?}", r.status);
        if r.status == 202 {
            // Accepted although the store is down? Then it must still be delivered.
            accepted.extend(r.body["id"].as_str().map(str::to_owned));
        }
        r.assert_error(503, "unavailable");
        assert!(
            r.header("retry-after").parse::<u64>().is_ok(),
            "{call}: 503 without Retry-After: {:?}",
            r.headers
        );
        assert!(took < Duration::from_secs(10), "{call} took {took:?}");
    }
    let ready = node
        .client
        .get(format!("{}/readyz", node.base))
        .send()
        .await
        .expect("readyz");
    let ready = TestApp::read(ready).await;
    ready.assert_error(503, "unavailable");
    let health = node
        .client
        .get(format!("{}/healthz", node.base))
        .send()
        .await
        .expect("healthz");
    assert_eq!(
        health.status(),
        200,
        "/healthz must not depend on the store"
    );
    node.assert_running();

    // PostgreSQL is back: posthorn recovers by itself.
    let starting = cluster.clone();
    tokio::task::spawn_blocking(move || starting.start())
        .await
        .expect("start");
    let back = Instant::now();
    loop {
        let r = node
            .post(
                "/webhooks/v1/events",
                &json!({"eventName": "note.created", "data": {"after": true}}),
            )
            .await;
        if r.status == 202 {
            accepted.push(r.body["id"].as_str().expect("id").to_owned());
            break;
        }
        r.assert_error(503, "unavailable");
        assert!(
            back.elapsed() < Duration::from_secs(20),
            "still 503 {:?} after PostgreSQL came back",
            back.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "publishing again {:?} after PostgreSQL came back",
        back.elapsed()
    );
    for i in 0..2 {
        accepted.extend(
            publish_batch(&node, &format!("after{i}"), 100)
                .await
                .expect("publish"),
        );
    }
    let ready = node
        .client
        .get(format!("{}/readyz", node.base))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 200);

    // Everything that got a 202, before and after, is delivered.
    wait_all_delivered(&rx, "/restart", &accepted, Duration::from_secs(30)).await;
    let sql = Sql::new(&url);
    wait_queue_empty(&sql, Duration::from_secs(15)).await;
    sql.close().await;
    node.assert_running();
    node.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_started_together_on_a_fresh_database_all_come_up() {
    // A deploy of N replicas: every node migrates and bootstraps at the same time.
    let db = TestDb::new().await;
    let mut starting = JoinSet::new();
    for _ in 0..4 {
        let url = db.url.clone();
        starting.spawn(async move { Node::start(&url, &[]).await });
    }
    let mut nodes = Vec::new();
    while let Some(node) = starting.join_next().await {
        nodes.push(node.expect("node starts"));
    }
    let r = nodes[0]
        .post(
            "/webhooks/v1/endpoints",
            &json!({"url": "https://example.com/together"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    for node in &nodes {
        let keys = node
            .call(Method::GET, "/webhooks/v1/keys", None, None)
            .await;
        assert_eq!(keys.status, 200, "{}", keys.text);
        assert_eq!(
            keys.body["keys"].as_array().map(Vec::len),
            Some(1),
            "one bootstrap key, however many nodes ensured it: {}",
            keys.text
        );
        let endpoints = node
            .call(Method::GET, "/webhooks/v1/endpoints", None, None)
            .await;
        assert_eq!(
            endpoints.body["endpoints"].as_array().map(Vec::len),
            Some(1)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stopped_with_sigterm_hands_its_work_back_at_once() {
    // Default leases (15 s + 30 s): only a hand-back makes the other node quick.
    let db = TestDb::new().await;
    let rx = TestReceiver::start().await;
    rx.always("/handback", Reply::Hang);
    let mut a = Node::start(&db.url, &[]).await;
    create_endpoint(&a, &rx.url("/handback")).await;
    let ids = publish_batch(&a, "handback", 20).await.expect("publish");
    // A holds all 20, hanging.
    rx.wait_for("/handback", 20, Duration::from_secs(10)).await;
    let status = a.terminate().await;
    assert!(status.success(), "{status}:\n{}", a.log());
    rx.always("/handback", Reply::Status(200));
    let handed_back = Instant::now();
    let _b = Node::start(&db.url, &[]).await;
    let deadline = handed_back + Duration::from_secs(15);
    loop {
        let got: HashSet<String> = rx
            .received("/handback")
            .iter()
            .filter(|r| r.at >= handed_back)
            .map(|r| r.header("webhook-id").to_owned())
            .collect();
        let missing = ids.iter().filter(|id| !got.contains(*id)).count();
        if missing == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} of 20 deliveries not made by the other node within 15 s of a graceful \
             stop; they waited for their leases instead of being handed back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("handed back and delivered in {:?}", handed_back.elapsed());
}

#[tokio::test]
async fn keys_and_endpoints_changed_on_one_node_hold_at_once_on_the_others() {
    let db = TestDb::new().await;
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
