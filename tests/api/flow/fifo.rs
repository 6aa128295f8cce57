//! `ordering: "fifo"`: one delivery at a time in publish order, a failing head holding
//! the rest through its retries, across SIGKILL and restart, and with two nodes.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{Backend, Node, TestDb};
use crate::receiver::{Reply, TestReceiver};

use super::{app, endpoint, never_goes_back, node_endpoint, node_publish, order, publish};

#[tokio::test]
async fn a_failing_head_holds_the_queue_until_it_succeeds() {
    let app = app("200ms,200ms,200ms", |_| {}).await;
    let rx = TestReceiver::start().await;
    // The third event fails twice.
    rx.script(
        "/fifo",
        vec![
            Reply::Status(200),
            Reply::Status(200),
            Reply::Status(500),
            Reply::Status(503),
        ],
    );
    endpoint(
        &app,
        &rx.url("/fifo"),
        "note.created",
        json!({"ordering": "fifo"}),
    )
    .await;
    publish(&app, "note.created", 0, 6).await;
    publish(&app, "note.created", 6, 4).await;
    rx.wait_for("/fifo", 12, Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        order(&rx, "/fifo"),
        vec![0, 1, 2, 2, 2, 3, 4, 5, 6, 7, 8, 9]
    );
}

#[tokio::test]
async fn a_finally_failed_head_lets_the_queue_move_on() {
    let app = app("100ms", |_| {}).await;
    let rx = TestReceiver::start().await;
    rx.script("/fifo", vec![Reply::Status(500), Reply::Status(500)]);
    let r = endpoint(
        &app,
        &rx.url("/fifo"),
        "note.created",
        json!({"ordering": "fifo"}),
    )
    .await;
    publish(&app, "note.created", 0, 3).await;
    rx.wait_for("/fifo", 4, Duration::from_secs(10)).await;
    assert_eq!(order(&rx, "/fifo"), vec![0, 0, 1, 2]);
    // The failure is in the log.
    let id = r.body["id"].as_str().expect("id");
    let log = app
        .get(&format!(
            "/webhooks/v1/endpoints/{id}/deliveries?state=failed"
        ))
        .await;
    assert_eq!(log.status, 200, "{}", log.text);
    assert_eq!(
        log.body["deliveries"].as_array().map(Vec::len),
        Some(1),
        "{}",
        log.text
    );
}

#[tokio::test]
async fn fifo_order_holds_across_sigkill_and_restart() {
    let db = TestDb::new().await;
    let rx = TestReceiver::start().await;
    rx.always("/fifo", Reply::Slow(50));
    let env = [
        ("POSTHORN_POLL_INTERVAL", "20ms"),
        ("POSTHORN_LEASE_MARGIN", "1s"),
        ("POSTHORN_ATTEMPT_TIMEOUT", "2s"),
    ];
    let mut node = Node::start(&db.url, &env).await;
    node_endpoint(&node, &rx.url("/fifo"), json!({"ordering": "fifo"})).await;
    node_publish(&node, 0, 30).await;
    rx.wait_for("/fifo", 5, Duration::from_secs(10)).await;
    node.kill().await;
    let _node = Node::start(&db.url, &env).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while rx.ids("/fifo").len() < 30 {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            order(&rx, "/fifo")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seen = order(&rx, "/fifo");
    assert!(never_goes_back(&seen), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_order_holds_with_two_nodes_on_postgres() {
    let db = TestDb::of(Backend::Postgres).await;
    let rx = TestReceiver::start().await;
    rx.always("/fifo", Reply::Slow(10));
    let env = [("POSTHORN_POLL_INTERVAL", "20ms")];
    let a = Node::start(&db.url, &env).await;
    let b = Node::start(&db.url, &env).await;
    node_endpoint(&a, &rx.url("/fifo"), json!({"ordering": "fifo"})).await;
    // Published one batch at a time, alternately on each node.
    for i in 0..8 {
        node_publish(if i % 2 == 0 { &a } else { &b }, i * 5, 5).await;
    }
    rx.wait_for("/fifo", 40, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = order(&rx, "/fifo");
    assert_eq!(seen, (0..40).collect::<Vec<u64>>());
}

#[tokio::test]
async fn the_endpoint_shows_its_fifo_head_and_what_waits_behind_it() {
    let app = app("1s", |_| {}).await;
    let rx = TestReceiver::start().await;
    rx.script("/fifo", vec![Reply::Slow(1500)]);
    let r = endpoint(
        &app,
        &rx.url("/fifo"),
        "note.created",
        json!({"ordering": "fifo"}),
    )
    .await;
    let id = r.body["id"].as_str().expect("id").to_owned();
    publish(&app, "note.created", 0, 5).await;
    rx.wait_for("/fifo", 1, Duration::from_secs(5)).await;
    let view = app.get(&format!("/webhooks/v1/endpoints/{id}")).await.body;
    assert_eq!(view["flow"]["queued"], 4, "{view}");
    let stats = app
        .get(&format!("/webhooks/v1/endpoints/{id}/stats"))
        .await
        .body;
    assert_eq!(stats["flow"], view["flow"], "{stats}");
    let head = view["flow"]["fifoHead"]
        .as_str()
        .expect("fifoHead")
        .to_owned();
    let d = app.get(&format!("/webhooks/v1/deliveries/{head}")).await;
    assert_eq!(d.status, 200, "{}", d.text);
    assert_eq!(d.body["state"], "pending", "{}", d.text);
    rx.wait_for("/fifo", 5, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let view = app.get(&format!("/webhooks/v1/endpoints/{id}")).await.body;
    assert!(view.get("flow").is_none(), "{view}");
}
