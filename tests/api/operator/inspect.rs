//! Reading what happened: an event with each delivery's fate, the delivery log
//! (filters, pages, newest first), and the operator API's errors and tenancy.

use reqwest::Method;
use serde_json::json;

use crate::receiver::{Reply, TestReceiver};

use super::{app_with, endpoint, publish, state_of, until};

#[tokio::test]
async fn an_event_shows_its_payload_and_each_deliverys_fate() {
    let app = app_with("100ms,1h", |_| {}).await;
    let rx = TestReceiver::start().await;
    rx.always("/bad", Reply::Body(500, "upstream exploded"));
    let good = endpoint(&app, &rx.url("/good"), "s3cret-value").await;
    let bad = endpoint(&app, &rx.url("/bad"), "s3cret-value").await;
    let id = publish(&app, json!({"noteId": "n-1", "tags": ["a"]})).await;
    let event = until(&app, &format!("/webhooks/v1/events/{id}"), |e| {
        state_of(e, &good) == "delivered"
            && e["deliveries"]
                .as_array()
                .is_some_and(|ds| ds.iter().any(|d| d["attempts"] == 2))
    })
    .await;
    assert_eq!(event["id"], id.as_str());
    assert_eq!(event["eventName"], "note.created");
    assert_eq!(event["data"], json!({"noteId": "n-1", "tags": ["a"]}));
    let bad_delivery = event["deliveries"]
        .as_array()
        .expect("deliveries")
        .iter()
        .find(|d| d["endpointId"] == bad.as_str())
        .expect("bad")
        .clone();
    assert_eq!(bad_delivery["state"], "pending");
    assert_eq!(bad_delivery["lastStatus"], 500);
    assert!(bad_delivery["lastError"]
        .as_str()
        .expect("lastError")
        .contains("500"));
    assert!(
        bad_delivery["nextAttempt"].as_str().is_some(),
        "a pending delivery says when it is next tried"
    );

    let attempts = app
        .get(&format!(
            "/webhooks/v1/deliveries/{}/attempts",
            bad_delivery["id"].as_str().expect("id")
        ))
        .await;
    assert_eq!(attempts.status, 200, "{}", attempts.text);
    let attempts = attempts.body["attempts"]
        .as_array()
        .expect("attempts")
        .clone();
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0]["attemptNo"], 1);
    assert_eq!(attempts[0]["statusCode"], 500);
    assert_eq!(attempts[0]["errorClass"], "http_status");
    assert_eq!(attempts[0]["responseBody"], "upstream exploded");
    assert!(attempts[0]["latencyMs"].as_u64().is_some());
}

#[tokio::test]
async fn the_delivery_log_filters_pages_newest_first() {
    let app = app_with("50ms", |_| {}).await;
    let rx = TestReceiver::start().await;
    rx.script("/mixed", vec![Reply::Status(500), Reply::Status(500)]);
    let ep = endpoint(&app, &rx.url("/mixed"), "s3cret-value").await;
    let first = publish(&app, json!({"n": 1})).await; // fails twice: failed
    until(&app, &format!("/webhooks/v1/events/{first}"), |e| {
        state_of(e, &ep) == "failed"
    })
    .await;
    let mut later = Vec::new();
    for n in 2..=4 {
        later.push(publish(&app, json!({ "n": n })).await);
    }
    for id in &later {
        until(&app, &format!("/webhooks/v1/events/{id}"), |e| {
            state_of(e, &ep) == "delivered"
        })
        .await;
    }
    let base = format!("/webhooks/v1/endpoints/{ep}/deliveries");
    let failed = app.get(&format!("{base}?state=failed")).await;
    let failed = failed.body["deliveries"].as_array().expect("list").clone();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["eventId"], first.as_str());

    let mut seen = Vec::new();
    let mut path = format!("{base}?limit=2");
    loop {
        let page = app.get(&path).await;
        assert_eq!(page.status, 200, "{}", page.text);
        for d in page.body["deliveries"].as_array().expect("list") {
            seen.push(d["eventId"].as_str().expect("eventId").to_owned());
        }
        match page.body["nextPaginationToken"].as_str() {
            Some(token) => path = format!("{base}?limit=2&pagination_token={token}"),
            None => break,
        }
    }
    let mut expected: Vec<String> = later.iter().rev().cloned().collect();
    expected.push(first.clone());
    assert_eq!(seen, expected, "newest first, each once");

    let future = app
        .get(&format!("{base}?since=2999-01-01T00:00:00.000Z"))
        .await;
    assert_eq!(future.status, 200);
    assert_eq!(future.body, json!({}));
    let past = app.get(&format!("{base}?until=2000-01-01T00:00:00Z")).await;
    assert_eq!(past.body, json!({}));
}

#[tokio::test]
async fn operator_errors_are_clean() {
    let app = app_with("1h", |_| {}).await;
    let rx = TestReceiver::start().await;
    let ep = endpoint(&app, &rx.url("/e"), "s3cret-value").await;
    let id = publish(&app, json!({})).await;
    let event = until(&app, &format!("/webhooks/v1/events/{id}"), |e| {
        state_of(e, &ep) == "delivered"
    })
    .await;
    let dlv = event["deliveries"][0]["id"]
        .as_str()
        .expect("id")
        .to_owned();

    app.get("/webhooks/v1/events/evt_nope")
        .await
        .assert_error(404, "resource_not_found");
    app.get("/webhooks/v1/deliveries/dlv_999999")
        .await
        .assert_error(404, "resource_not_found");
    app.get("/webhooks/v1/deliveries/garbage/attempts")
        .await
        .assert_error(404, "resource_not_found");
    app.get("/webhooks/v1/endpoints/bm9wZQ/deliveries")
        .await
        .assert_error(404, "resource_not_found");
    let base = format!("/webhooks/v1/endpoints/{ep}/deliveries");
    app.get(&format!("{base}?since=yesterday"))
        .await
        .assert_error(400, "invalid_field");
    app.get(&format!(
        "{base}?since=2020-01-02T00:00:00Z&until=2020-01-01T00:00:00Z"
    ))
    .await
    .assert_error(400, "invalid_field");
    app.get(&format!("{base}?state=lost"))
        .await
        .assert_error(400, "invalid_field");
    app.post(&format!("/webhooks/v1/endpoints/{ep}/recover"), &json!({}))
        .await
        .assert_error(400, "required_field");
    app.post(
        &format!("/webhooks/v1/endpoints/{ep}/recover"),
        &json!({"since": "soon"}),
    )
    .await
    .assert_error(400, "invalid_field");

    // Another org sees none of it.
    let other = app.key_for_org("o-other", "admin").await;
    for path in [
        format!("/webhooks/v1/events/{id}"),
        format!("/webhooks/v1/deliveries/{dlv}"),
        format!("/webhooks/v1/deliveries/{dlv}/attempts"),
    ] {
        app.call(Method::GET, &path, Some(&other), None)
            .await
            .assert_error(404, "resource_not_found");
    }
    app.call(
        Method::POST,
        &format!("/webhooks/v1/deliveries/{dlv}/retry"),
        Some(&other),
        None,
    )
    .await
    .assert_error(404, "resource_not_found");
    // Only admins operate.
    let publisher = app.create_key("publisher").await;
    app.call(
        Method::GET,
        &format!("/webhooks/v1/events/{id}"),
        Some(&publisher),
        None,
    )
    .await
    .assert_error(403, "forbidden");
    app.call(
        Method::POST,
        &format!("/webhooks/v1/deliveries/{dlv}/retry"),
        Some(&publisher),
        None,
    )
    .await
    .assert_error(403, "forbidden");
    app.call(
        Method::POST,
        &format!("/webhooks/v1/endpoints/{ep}/test"),
        Some(&publisher),
        None,
    )
    .await
    .assert_error(403, "forbidden");
}
