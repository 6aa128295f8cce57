//! What receivers say of the whole endpoint: 410 disables it, 429 with `Retry-After`
//! pauses it, and a dead endpoint gets probes, not every delivery's attempts.

use std::time::Duration;

use serde_json::json;

use crate::receiver::{Reply, TestReceiver};

use super::{app, endpoint, publish};

#[tokio::test]
async fn a_410_disables_the_endpoint_at_once() {
    let app = app("100ms,100ms", |_| {}).await;
    let rx = TestReceiver::start().await;
    rx.always("/gone", Reply::Status(410));
    let r = endpoint(&app, &rx.url("/gone"), "note.created", json!({})).await;
    let id = r.body["id"].as_str().expect("id").to_owned();
    publish(&app, "note.created", 0, 1).await;
    rx.wait_for("/gone", 1, Duration::from_secs(5)).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let view = loop {
        let r = app.get(&format!("/webhooks/v1/endpoints/{id}")).await;
        if r.body["enabled"] == false {
            break r.body;
        }
        assert!(std::time::Instant::now() < deadline, "{}", r.text);
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        view["disabledReason"]
            .as_str()
            .is_some_and(|r| r.contains("410")),
        "{view}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rx.received("/gone").len(), 1, "no retry to a gone endpoint");
}

#[tokio::test]
async fn a_410_is_an_ordinary_failure_when_the_setting_is_off() {
    let app = app("100ms", |c| c.delivery.disable_on_gone = false).await;
    let rx = TestReceiver::start().await;
    rx.always("/gone", Reply::Status(410));
    let r = endpoint(&app, &rx.url("/gone"), "note.created", json!({})).await;
    let id = r.body["id"].as_str().expect("id").to_owned();
    publish(&app, "note.created", 0, 1).await;
    rx.wait_for("/gone", 2, Duration::from_secs(5)).await;
    let r = app.get(&format!("/webhooks/v1/endpoints/{id}")).await;
    assert_eq!(r.body["enabled"], true, "{}", r.text);
}

#[tokio::test]
async fn a_429_with_retry_after_pauses_the_whole_endpoint() {
    let app = app("100ms", |_| {}).await;
    let rx = TestReceiver::start().await;
    rx.script("/busy", vec![Reply::TooMany(2)]);
    endpoint(&app, &rx.url("/busy"), "note.created", json!({})).await;
    publish(&app, "note.created", 0, 1).await;
    let first = rx.wait_for("/busy", 1, Duration::from_secs(5)).await[0].at;
    // Published during the pause: held back with the retry.
    publish(&app, "note.created", 1, 5).await;
    let got = rx.wait_for("/busy", 7, Duration::from_secs(10)).await;
    for r in &got[1..] {
        let after = r.at.duration_since(first);
        assert!(
            after >= Duration::from_millis(1800) && after < Duration::from_secs(5),
            "a delivery came {after:?} after the 429"
        );
    }
}

#[tokio::test]
async fn a_dead_endpoint_gets_probes_and_resumes_when_it_comes_back() {
    let schedule = ["100ms"; 12].join(",");
    let app = app(&schedule, |c| {
        c.delivery.circuit_failures = 3;
        c.delivery.circuit_probe_interval = Duration::from_millis(500);
    })
    .await;
    let rx = TestReceiver::start().await;
    rx.always("/dead", Reply::Status(500));
    endpoint(&app, &rx.url("/dead"), "note.created", json!({})).await;
    publish(&app, "note.created", 0, 20).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Without the breaker: 20 deliveries retried every 100 ms, well over 200 attempts.
    let attempts = rx.received("/dead").len();
    assert!(
        attempts < 45,
        "{attempts} attempts to a dead endpoint in 3 s"
    );
    let view = app.get("/webhooks/v1/endpoints").await;
    assert!(
        view.body["endpoints"][0]["flow"]["failingSince"].is_string(),
        "{}",
        view.text
    );
    // Back: the next probe succeeds and the rest follow at once.
    rx.always("/dead", Reply::Status(200));
    let deadline = std::time::Instant::now() + Duration::from_secs(4);
    while app
        .sql_i64("SELECT COUNT(*) FROM deliveries WHERE state = 'delivered'")
        .await
        < 20
    {
        assert!(
            std::time::Instant::now() < deadline,
            "not all delivered after the endpoint came back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
