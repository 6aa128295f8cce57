//! The operator API: an event's fate, the delivery log, retry and recover, test
//! events, secret rotation, auto-disable, statistics and retention.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{json, Value};
use sha2::Sha256;

use crate::api::helpers::{spawn_app_with, TestApp};
use crate::api::receiver::{Received, Reply, TestReceiver};

const WAIT: Duration = Duration::from_secs(10);

async fn app_with(
    schedule: &str,
    tweak: impl FnOnce(&mut posthorn::config::ServeConfig),
) -> TestApp {
    let schedule = schedule.to_owned();
    spawn_app_with(move |c| {
        c.delivery.retry_schedule = schedule;
        c.delivery.poll_interval = Duration::from_millis(20);
        c.delivery.attempt_timeout = Duration::from_secs(2);
        tweak(c);
    })
    .await
}

async fn endpoint(app: &TestApp, url: &str, secret: &str) -> String {
    let r = app
        .post(
            "/webhooks/v1/endpoints",
            &json!({"url": url, "secret": secret}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["id"].as_str().expect("id").to_owned()
}

async fn publish(app: &TestApp, data: Value) -> String {
    let r = app
        .post(
            "/webhooks/v1/events",
            &json!({"eventName": "note.created", "data": data}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    r.body["id"].as_str().expect("id").to_owned()
}

/// Polls `path` until `done` holds for its body.
async fn until(app: &TestApp, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let r = app.get(path).await;
        if r.status == 200 && done(&r.body) {
            return r.body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{path} never got there: {}",
            r.text
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn state_of(event: &Value, endpoint_id: &str) -> String {
    event["deliveries"]
        .as_array()
        .and_then(|ds| ds.iter().find(|d| d["endpointId"] == endpoint_id))
        .map(|d| d["state"].as_str().unwrap_or("").to_owned())
        .unwrap_or_default()
}

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

fn hmac_b64(key: &[u8], msg: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("key");
    mac.update(msg);
    STANDARD.encode(mac.finalize().into_bytes())
}

fn standard_sig(key: &str, r: &Received) -> String {
    let msg = format!(
        "{}.{}.{}",
        r.header("webhook-id"),
        r.header("webhook-timestamp"),
        std::str::from_utf8(&r.body).expect("utf8")
    );
    format!("v1,{}", hmac_b64(key.as_bytes(), msg.as_bytes()))
}

#[tokio::test]
async fn test_events_are_signed_and_report_the_outcome() {
    let app = app_with("1h", |_| {}).await;
    let rx = TestReceiver::start().await;
    rx.always("/broken", Reply::Body(500, "nope"));
    let ep = endpoint(&app, &rx.url("/t"), "s3cret-value").await;
    let ok = app
        .post(&format!("/webhooks/v1/endpoints/{ep}/test"), &json!({}))
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert_eq!(ok.body["success"], true);
    assert_eq!(ok.body["statusCode"], 200);
    let got = rx.received("/t");
    assert_eq!(got.len(), 1);
    assert_eq!(
        std::str::from_utf8(&got[0].body).expect("utf8"),
        r#"{"eventName":"test","version":1,"data":{}}"#
    );
    assert_eq!(
        got[0].header("webhook-signature"),
        standard_sig("s3cret-value", &got[0])
    );

    let bad = app
        .post(
            "/webhooks/v1/endpoints/test",
            &json!({"url": rx.url("/broken"), "secret": "another-secret"}),
        )
        .await;
    assert_eq!(bad.status, 200, "{}", bad.text);
    assert_eq!(bad.body["success"], false);
    assert_eq!(bad.body["statusCode"], 500);
    assert_eq!(bad.body["responseBody"], "nope");
    let got = rx.received("/broken");
    assert_eq!(
        got[0].header("webhook-signature"),
        standard_sig("another-secret", &got[0])
    );

    app.post("/webhooks/v1/endpoints/test", &json!({"url": rx.url("/x")}))
        .await
        .assert_error(400, "required_field");
    app.post(
        "/webhooks/v1/endpoints/test",
        &json!({"secret": "another-secret"}),
    )
    .await
    .assert_error(400, "required_field");
    let guarded = app_with("1h", |c| c.allow_private_targets = false).await;
    guarded
        .post(
            "/webhooks/v1/endpoints/test",
            &json!({"url": rx.url("/x"), "secret": "another-secret"}),
        )
        .await
        .assert_error(400, "invalid_field");
    assert!(rx.received("/x").is_empty());
}

#[tokio::test]
async fn rotation_signs_with_both_secrets_during_the_grace_period_only() {
    let app = app_with("1h", |_| {}).await;
    let rx = TestReceiver::start().await;
    let ep = endpoint(&app, &rx.url("/rot"), "secret-one-aaaa").await;
    let r = app
        .post(
            &format!("/webhooks/v1/endpoints/{ep}/rotate-secret"),
            &json!({"secret": "secret-two-bbbb", "gracePeriod": "1h"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        r.body.get("secret").is_none(),
        "a given secret is not echoed"
    );
    assert!(r.body["previousSecretExpires"].as_str().is_some());
    publish(&app, json!({"n": 1})).await;
    let got = rx.wait_for("/rot", 1, WAIT).await;
    let sigs: Vec<&str> = got[0].header("webhook-signature").split(' ').collect();
    assert_eq!(
        sigs,
        vec![
            standard_sig("secret-two-bbbb", &got[0]),
            standard_sig("secret-one-aaaa", &got[0])
        ]
    );
    let body = std::str::from_utf8(&got[0].body).expect("utf8");
    let ts = got[0].header("webhook-timestamp");
    let fs_new = hmac_b64(
        b"secret-two-bbbb",
        format!("{body}:{}:{ts}", crate::api::helpers::ORG).as_bytes(),
    );
    assert!(
        got[0]
            .header("fullstory-signature")
            .ends_with(&format!(",v:{fs_new}")),
        "Fullstory-Signature uses the new secret"
    );

    // A rotation whose grace period has ended signs with the new secret alone.
    let r = app
        .post(
            &format!("/webhooks/v1/endpoints/{ep}/rotate-secret"),
            &json!({"grace_period": 1}),
        )
        .await;
    let minted = r.body["secret"]
        .as_str()
        .expect("a minted secret is returned once")
        .to_owned();
    assert!(minted.starts_with("whsec_"));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    publish(&app, json!({"n": 2})).await;
    let got = rx.wait_for("/rot", 2, WAIT).await;
    let key = STANDARD
        .decode(minted.trim_start_matches("whsec_"))
        .expect("b64");
    let msg = format!(
        "{}.{}.{}",
        got[1].header("webhook-id"),
        got[1].header("webhook-timestamp"),
        std::str::from_utf8(&got[1].body).expect("utf8")
    );
    assert_eq!(
        got[1].header("webhook-signature"),
        format!("v1,{}", hmac_b64(&key, msg.as_bytes()))
    );

    app.post(
        &format!("/webhooks/v1/endpoints/{ep}/rotate-secret"),
        &json!({"gracePeriod": "forever"}),
    )
    .await
    .assert_error(400, "invalid_field");
    app.post("/webhooks/v1/endpoints/bm9wZQ/rotate-secret", &json!({}))
        .await
        .assert_error(404, "resource_not_found");
}

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
