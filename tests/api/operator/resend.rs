//! Sending again: retry resends a delivery once even when clicked twice, recover
//! requeues failed deliveries once.

use std::time::Duration;

use serde_json::json;

use crate::receiver::{Reply, TestReceiver};

use super::{app_with, endpoint, publish, state_of, until, WAIT};

#[tokio::test]
async fn retry_resends_once_even_when_clicked_twice() {
    let app = app_with("1h", |_| {}).await;
    let rx = TestReceiver::start().await;
    let ep = endpoint(&app, &rx.url("/r"), "s3cret-value").await;
    let id = publish(&app, json!({})).await;
    let event = until(&app, &format!("/webhooks/v1/events/{id}"), |e| {
        state_of(e, &ep) == "delivered"
    })
    .await;
    let dlv = event["deliveries"][0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let (path, empty) = (format!("/webhooks/v1/deliveries/{dlv}/retry"), json!({}));
    let (a, b) = tokio::join!(app.post(&path, &empty), app.post(&path, &empty));
    assert_eq!((a.status, b.status), (202, 202), "{} {}", a.text, b.text);
    rx.wait_for("/r", 2, WAIT).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(rx.received("/r").len(), 2, "a double click sent twice");
    let attempts = app
        .get(&format!("/webhooks/v1/deliveries/{dlv}/attempts"))
        .await;
    assert_eq!(
        attempts.body["attempts"]
            .as_array()
            .expect("attempts")
            .len(),
        2
    );
}

#[tokio::test]
async fn recover_requeues_failed_deliveries_once() {
    let app = app_with("30ms", |_| {}).await;
    let rx = TestReceiver::start().await;
    rx.always("/down", Reply::Status(503));
    let ep = endpoint(&app, &rx.url("/down"), "s3cret-value").await;
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(publish(&app, json!({ "n": n })).await);
    }
    for id in &ids {
        until(&app, &format!("/webhooks/v1/events/{id}"), |e| {
            state_of(e, &ep) == "failed"
        })
        .await;
    }
    assert_eq!(rx.received("/down").len(), 10, "two attempts each");
    rx.always("/down", Reply::Status(200)); // the receiver is fixed
    let since = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let recovered = app
        .post(
            &format!("/webhooks/v1/endpoints/{ep}/recover"),
            &json!({ "since": since }),
        )
        .await;
    assert_eq!(recovered.status, 202, "{}", recovered.text);
    assert_eq!(recovered.body, json!({"queued": 5}));
    let again = app
        .post(
            &format!("/webhooks/v1/endpoints/{ep}/recover"),
            &json!({ "since": since }),
        )
        .await;
    assert_eq!(
        again.body,
        json!({"queued": 0}),
        "a second recover queued again"
    );
    for id in &ids {
        until(&app, &format!("/webhooks/v1/events/{id}"), |e| {
            state_of(e, &ep) == "delivered"
        })
        .await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = rx.received("/down");
    assert_eq!(got.len(), 15, "each recovered event arrives exactly once");
    let recovered_ids: std::collections::HashSet<_> = got[10..]
        .iter()
        .map(|r| r.header("webhook-id").to_owned())
        .collect();
    assert_eq!(recovered_ids.len(), 5);
}
