//! `listen` streams: revocation ends them at once, and every stream ends at its
//! maximum life.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::*;
use crate::helpers::{spawn_app, spawn_app_with, TestApp};

/// The `data` of the first `event` in `text`, as JSON.
fn event_data(text: &str, event: &str) -> Value {
    let after = text
        .split(&format!("event: {event}\n"))
        .nth(1)
        .unwrap_or_else(|| panic!("no {event} event in {text}"));
    let data = after
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .unwrap_or_else(|| panic!("no data in {after}"));
    serde_json::from_str(data).unwrap_or_else(|e| panic!("{data}: {e}"))
}

/// Waits (≤ 10 s) until the endpoint `id` answers 404.
async fn endpoint_gone(app: &TestApp, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = app.get(&format!("/webhooks/v1/endpoints/{id}")).await;
        if got.status == 404 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the temporary endpoint stayed: {}",
            got.text
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_revoked_key_s_listen_stream_ends_within_2s_and_gets_nothing_more() {
    let app = spawn_app().await;
    let made = app
        .post("/webhooks/v1/keys", &json!({"role": "admin"}))
        .await;
    assert_eq!(made.status, 200, "{}", made.text);
    let key = made.body["key"].as_str().expect("key").to_owned();
    let key_id = made.body["id"].as_str().expect("id").to_owned();
    let mut stream = listen_stream(&app, &key).await;
    assert_eq!(stream.status, 200, "{}", stream.head);
    assert!(
        stream
            .wait_for("event: ready", Duration::from_secs(5))
            .await
    );
    let endpoint = event_data(&stream.text(), "ready")["endpointId"]
        .as_str()
        .expect("endpointId")
        .to_owned();
    // It works: an event reaches it.
    assert_eq!(publish(&app, 1).await["deliveries"], 1);
    assert!(
        stream
            .wait_for("event: delivery", Duration::from_secs(10))
            .await,
        "{}",
        stream.text()
    );
    let seen = stream.rest.len();
    let revoked = Instant::now();
    let answer = app.delete(&format!("/webhooks/v1/keys/{key_id}")).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    // Published right after the revocation, while the stream may still be open.
    publish(&app, 2).await;
    assert!(
        stream.closed_within(Duration::from_secs(2)).await,
        "the stream of a revoked key is still open 2 s later"
    );
    assert!(revoked.elapsed() < Duration::from_millis(2500));
    let after = String::from_utf8_lossy(&stream.rest[seen..]).into_owned();
    assert!(!after.contains("event: delivery"), "{after}");
    assert!(after.contains("event: ended"), "{after}");
    // Its temporary endpoint is gone, and later events go nowhere.
    endpoint_gone(&app, &endpoint).await;
    assert_eq!(publish(&app, 3).await["deliveries"], 0);
}

#[tokio::test]
async fn a_stream_ends_at_its_maximum_life() {
    let app = spawn_app_with(|c| c.streams.max_life = Duration::from_secs(1)).await;
    let mut listen = listen_stream(&app, &app.admin_key).await;
    assert_eq!(listen.status, 200, "{}", listen.head);
    let token = portal_link(&app, &app.admin_key).await;
    let cookie = portal_cookie(&app, &token).await;
    let mut page = accepted(&app, &cookie).await;
    assert!(
        listen.closed_within(Duration::from_secs(5)).await,
        "a listen stream outlived its maximum life"
    );
    assert!(listen.text().contains("event: ended"), "{}", listen.text());
    let endpoint = event_data(&listen.text(), "ready")["endpointId"]
        .as_str()
        .expect("endpointId")
        .to_owned();
    endpoint_gone(&app, &endpoint).await;
    assert!(
        page.closed_within(Duration::from_secs(5)).await,
        "a live log stream outlived its maximum life"
    );
    // Their places come back: more streams than the key's cap, one after the other.
    for _ in 0..10 {
        let mut again = listen_stream(&app, &app.admin_key).await;
        assert_eq!(again.status, 200, "{}", again.head);
        assert!(again.closed_within(Duration::from_secs(5)).await);
    }
}
