//! Delivery engine guarantees: isolation, the SSRF guard at dial time, and publishes
//! abandoned by their clients.

use std::time::Duration;

use rand::Rng;
use serde_json::json;

use crate::helpers::{spawn_app_with, ADMIN_KEY};
use crate::receiver::{Reply, TestReceiver};

#[tokio::test]
async fn a_hanging_endpoint_does_not_delay_the_others() {
    let app = spawn_app_with(|c| {
        c.delivery.attempt_timeout = Duration::from_secs(20);
        c.delivery.max_in_flight = 16;
        c.delivery.max_in_flight_per_endpoint = 4;
        c.shutdown_grace_secs = 0;
    })
    .await;
    let rx = TestReceiver::start().await;
    rx.always("/hang", Reply::Hang);
    rx.always("/dead", Reply::Status(500));
    for path in ["/hang", "/dead", "/ok"] {
        let r = app
            .post("/webhooks/v1/endpoints", &json!({"url": rx.url(path)}))
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    let events: Vec<_> = (0..100)
        .map(|i| json!({"eventName": "note.created", "data": {"i": i}}))
        .collect();
    let r = app
        .post("/webhooks/v1/events/batch", &json!({ "events": events }))
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    // Every delivery to /ok arrives while /hang holds its slots for 20 s per attempt.
    rx.wait_for("/ok", 100, Duration::from_secs(8)).await;
    assert!(
        rx.received("/hang").len() <= 4,
        "more attempts in flight to one endpoint than its limit"
    );
}

#[tokio::test]
async fn the_ssrf_guard_applies_to_the_address_dialled() {
    let rx = TestReceiver::start().await;
    // Endpoints saved while private targets were allowed...
    let app = spawn_app_with(|_| {}).await;
    let port = rx.addr.port();
    for url in [
        format!("http://127.0.0.1:{port}/literal"),
        format!("http://localhost:{port}/name"),
    ] {
        let r = app
            .post("/webhooks/v1/endpoints", &json!({ "url": url }))
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    // ...are refused when dialled by a server that has the guard on.
    let app = app
        .restart_with(|c| {
            c.allow_private_targets = false;
            c.delivery.retry_schedule = "1h".into();
        })
        .await;
    let r = app
        .post(
            "/webhooks/v1/events",
            &json!({"eventName": "note.created", "data": {}}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.body["deliveries"], 2);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let errors = loop {
        let errors = app.sql_strings("SELECT error FROM attempts").await;
        if errors.len() >= 2 || std::time::Instant::now() > deadline {
            break errors;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(errors.len(), 2, "{errors:?}");
    for e in &errors {
        assert!(e.contains("SSRF"), "attempt error does not say why: {e}");
    }
    assert!(
        rx.received("/literal").is_empty() && rx.received("/name").is_empty(),
        "a refused address was dialled"
    );
}

#[tokio::test]
async fn publishes_abandoned_mid_request_are_all_or_nothing() {
    let app = spawn_app_with(|c| c.rate_limit = 0).await;
    let rx = TestReceiver::start().await;
    let r = app
        .post(
            "/webhooks/v1/endpoints",
            &json!({"url": rx.url("/abandoned")}),
        )
        .await;
    assert_eq!(r.status, 200);
    let mut set = tokio::task::JoinSet::new();
    for n in 0..200 {
        let (client, url) = (
            app.client.clone(),
            format!("{}/webhooks/v1/events/batch", app.base),
        );
        let timeout = Duration::from_micros(rand::thread_rng().gen_range(200..6000));
        set.spawn(async move {
            let events: Vec<_> = (0..20)
                .map(|i| json!({"eventName": "note.created", "data": {"n": n, "i": i}}))
                .collect();
            client
                .post(url)
                .header("Authorization", format!("Basic {ADMIN_KEY}"))
                .json(&json!({ "events": events }))
                .timeout(timeout)
                .send()
                .await
                .is_ok()
        });
    }
    let mut abandoned = 0;
    while let Some(done) = set.join_next().await {
        abandoned += usize::from(!done.expect("task"));
    }
    assert!(
        abandoned > 0,
        "no request was abandoned; the test proves nothing"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stored = app.sql_strings("SELECT id FROM events").await;
    let orphans = app
        .sql_i64(
            "SELECT COUNT(*) FROM events e WHERE NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_seq = e.seq)",
        )
        .await;
    assert_eq!(orphans, 0, "events stored without their deliveries");
    assert_eq!(stored.len() % 20, 0, "a batch was stored in part");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let got = rx.ids("/abandoned");
        let missing = stored.iter().filter(|id| !got.contains(*id)).count();
        if missing == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{missing} of {} stored events never delivered",
            stored.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
