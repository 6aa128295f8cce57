//! Keeping endpoints and history in shape: auto-disable of an endpoint failing for too
//! long, statistics of recent outcomes, and retention that keeps pending work.

use std::time::Duration;

use serde_json::json;

use crate::receiver::{Reply, TestReceiver};

use super::{app_with, endpoint, publish, state_of, until, WAIT};

#[tokio::test]
async fn an_endpoint_failing_for_too_long_is_disabled_and_says_why() {
    let app = app_with("100ms,100ms,100ms,100ms,100ms,100ms", |c| {
        c.delivery.auto_disable_after = Duration::from_millis(300)
    })
    .await;
    let rx = TestReceiver::start().await;
    rx.always("/dead", Reply::Status(500));
    let ep = endpoint(&app, &rx.url("/dead"), "s3cret-value").await;
    publish(&app, json!({})).await;
    let disabled = until(&app, &format!("/webhooks/v1/endpoints/{ep}"), |e| {
        e["enabled"] == false
    })
    .await;
    assert!(
        disabled["disabledReason"]
            .as_str()
            .expect("reason")
            .contains("failed"),
        "{disabled}"
    );
    assert!(disabled["disabledAt"].as_str().is_some());
    let attempts_then = rx.received("/dead").len();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        rx.received("/dead").len(),
        attempts_then,
        "a disabled endpoint still got attempts"
    );

    let enabled = app
        .post(&format!("/webhooks/v1/endpoints/{ep}"), &json!({}))
        .await;
    assert_eq!(enabled.body["enabled"], true);
    assert!(
        enabled.body.get("disabledReason").is_none() && enabled.body.get("disabledAt").is_none(),
        "{}",
        enabled.text
    );
}

#[tokio::test]
async fn stats_count_recent_outcomes() {
    let app = app_with("30ms", |_| {}).await;
    let rx = TestReceiver::start().await;
    rx.script("/s", vec![Reply::Status(500), Reply::Status(500)]);
    let ep = endpoint(&app, &rx.url("/s"), "s3cret-value").await;
    let fresh = app.get(&format!("/webhooks/v1/endpoints/{ep}/stats")).await;
    assert_eq!(
        fresh.body["windows"][0],
        json!({"window": "1h", "delivered": 0, "failed": 0})
    );
    let first = publish(&app, json!({})).await;
    until(&app, &format!("/webhooks/v1/events/{first}"), |e| {
        state_of(e, &ep) == "failed"
    })
    .await;
    for _ in 0..2 {
        let id = publish(&app, json!({})).await;
        until(&app, &format!("/webhooks/v1/events/{id}"), |e| {
            state_of(e, &ep) == "delivered"
        })
        .await;
    }
    let stats = app.get(&format!("/webhooks/v1/endpoints/{ep}/stats")).await;
    assert_eq!(stats.status, 200, "{}", stats.text);
    let windows = stats.body["windows"].as_array().expect("windows");
    assert_eq!(windows.len(), 3);
    for w in windows {
        assert_eq!(
            (w["delivered"].as_u64(), w["failed"].as_u64()),
            (Some(2), Some(1)),
            "{w}"
        );
        let rate = w["successRate"].as_f64().expect("rate");
        assert!((rate - 2.0 / 3.0).abs() < 1e-9);
    }
    assert!(
        stats.body["lastSuccess"].as_str().is_some()
            && stats.body["lastFailure"].as_str().is_some()
    );
}

#[tokio::test]
async fn retention_prunes_finished_history_but_keeps_pending_work() {
    let app = app_with("1h", |c| {
        c.delivery.retention = Duration::from_millis(500);
        c.delivery.retention_interval = Duration::from_millis(100);
    })
    .await;
    let rx = TestReceiver::start().await;
    rx.always("/down", Reply::Status(500));
    let ok = endpoint(&app, &rx.url("/ok"), "s3cret-value").await;
    let delivered = publish(&app, json!({"n": 1})).await;
    until(&app, &format!("/webhooks/v1/events/{delivered}"), |e| {
        state_of(e, &ok) == "delivered"
    })
    .await;
    app.delete(&format!("/webhooks/v1/endpoints/{ok}")).await;
    let down = endpoint(&app, &rx.url("/down"), "s3cret-value").await;
    let pending = publish(&app, json!({"n": 2})).await;
    until(&app, &format!("/webhooks/v1/events/{pending}"), |e| {
        e["deliveries"][0]["attempts"] == 1
    })
    .await;

    let deadline = std::time::Instant::now() + WAIT;
    while app
        .get(&format!("/webhooks/v1/events/{delivered}"))
        .await
        .status
        != 404
    {
        assert!(
            std::time::Instant::now() < deadline,
            "delivered history was never pruned"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let kept = app.get(&format!("/webhooks/v1/events/{pending}")).await;
    assert_eq!(kept.status, 200, "pending work was pruned: {}", kept.text);
    assert_eq!(state_of(&kept.body, &down), "pending");
}
