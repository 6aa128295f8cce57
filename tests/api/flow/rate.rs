//! `rateLimit`: the fields and their rules, and the limit held at the receiver while
//! other endpoints run free, on one node and on two sharing PostgreSQL.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{Backend, Node, TestDb};
use crate::receiver::TestReceiver;

use super::{app, endpoint, endpoint_body, node_endpoint, node_publish, publish};

/// Arrivals on `path` within `window` of the first.
fn in_first(rx: &TestReceiver, path: &str, window: Duration) -> usize {
    let got = rx.received(path);
    let Some(first) = got.first().map(|r| r.at) else {
        return 0;
    };
    got.iter()
        .filter(|r| r.at.duration_since(first) < window)
        .count()
}

#[tokio::test]
async fn a_rate_limit_holds_at_the_receiver_while_another_endpoint_runs_free() {
    let app = app("1s", |_| {}).await;
    let rx = TestReceiver::start().await;
    endpoint(
        &app,
        &rx.url("/limited"),
        "note.created",
        json!({"rateLimit": 20}),
    )
    .await;
    endpoint(&app, &rx.url("/free"), "segment.created", json!({})).await;
    publish(&app, "note.created", 0, 150).await;
    publish(&app, "segment.created", 0, 500).await;
    let started = std::time::Instant::now();
    rx.wait_for("/free", 500, Duration::from_secs(10)).await;
    let free_took = started.elapsed();
    rx.wait_for("/limited", 110, Duration::from_secs(10)).await;
    // 20 a second for 5 s, and one of burst: 101, within 10 %.
    let n = in_first(&rx, "/limited", Duration::from_secs(5));
    assert!((91..=111).contains(&n), "{n} in the first 5 s");
    assert!(
        free_took < Duration::from_secs(3),
        "the unlimited endpoint took {free_took:?}"
    );
    // Waiting for a turn is not an attempt.
    let attempts = app.sql_i64("SELECT COUNT(*) FROM attempts").await;
    let received = rx.received("/limited").len() + rx.received("/free").len();
    assert_eq!(attempts as usize, received);
}

#[tokio::test]
async fn flow_fields_follow_the_update_rules() {
    let app = app("1s", |_| {}).await;
    let r = endpoint(
        &app,
        "http://127.0.0.1:9/f",
        "note.created",
        json!({"rateLimit": 5, "rateLimitBurst": 3, "ordering": "fifo"}),
    )
    .await;
    let id = r.body["id"].as_str().expect("id").to_owned();
    assert_eq!(
        (
            &r.body["rateLimit"],
            &r.body["rateLimitBurst"],
            &r.body["ordering"]
        ),
        (&json!(5), &json!(3), &json!("fifo"))
    );
    let path = format!("/webhooks/v1/endpoints/{id}");
    // Absent leaves them.
    let r = app.post(&path, &json!({})).await;
    assert_eq!(
        (&r.body["rateLimit"], &r.body["ordering"]),
        (&json!(5), &json!("fifo")),
        "{}",
        r.text
    );
    // snake_case too; 0 removes the limit (and its burst); unordered is the default.
    let r = app.post(&path, &json!({"rate_limit": 7})).await;
    assert_eq!(r.body["rateLimit"], 7, "{}", r.text);
    let r = app
        .post(&path, &json!({"rateLimit": 0, "ordering": "unordered"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    for field in ["rateLimit", "rateLimitBurst", "ordering"] {
        assert!(r.body.get(field).is_none(), "{field}: {}", r.text);
    }
    assert_eq!(app.get(&path).await.body, r.body);
    // Refused, and nothing changed.
    for bad in [
        json!({"rateLimit": -1}),
        json!({"rateLimit": 1.5}),
        json!({"rateLimit": 10001}),
        json!({"rateLimit": "5"}),
        json!({"ordering": "random"}),
        json!({"rateLimitBurst": 2}),
    ] {
        let r = app.post(&path, &bad).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text);
        assert!(
            r.body["message"].is_string() && r.body["code"].is_string(),
            "{}",
            r.text
        );
    }
    assert_eq!(app.get(&path).await.body, r.body);
    let r = app
        .post(
            "/webhooks/v1/endpoints",
            &endpoint_body(
                "http://127.0.0.1:9/g",
                "note.created",
                json!({"rateLimit": 0}),
            ),
        )
        .await;
    r.assert_error(400, "invalid_field");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_holds_across_two_nodes_on_postgres() {
    let db = TestDb::of(Backend::Postgres).await;
    let rx = TestReceiver::start().await;
    let env = [("POSTHORN_POLL_INTERVAL", "20ms")];
    let a = Node::start(&db.url, &env).await;
    let b = Node::start(&db.url, &env).await;
    node_endpoint(&a, &rx.url("/shared"), json!({"rateLimit": 20})).await;
    for (node, from) in [(&a, 0), (&b, 75)] {
        node_publish(node, from, 75).await;
    }
    rx.wait_for("/shared", 110, Duration::from_secs(15)).await;
    let n = in_first(&rx, "/shared", Duration::from_secs(5));
    assert!(
        (91..=111).contains(&n),
        "{n} in the first 5 s across two nodes"
    );
}
