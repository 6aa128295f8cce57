//! The database and the nodes coming and going: riding out a PostgreSQL restart, and
//! nodes started together on a fresh database.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};
use tokio::task::JoinSet;

use crate::helpers::PgCluster;
use crate::helpers::{Backend, Node, Sql, TestApp, TestDb};
use crate::receiver::{Reply, TestReceiver};

use super::{create_endpoint, publish_batch, wait_all_delivered, wait_queue_empty, SHORT_LEASES};

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
        if call.ends_with("/event-types") && r.status == 200 {
            // The catalog may still be answered from the cache until the node notices
            // that its notification connection is gone.
            continue;
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
    let db = TestDb::of(Backend::Postgres).await;
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
