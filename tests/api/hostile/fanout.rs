//! One org's volume against everyone else's: retention that one org's stuck backlog
//! cannot stop, bounds on an org's endpoints and on a request's deliveries, another
//! org's publish that is not held behind a big fan-out, and the backlog of a
//! rate-limited or FIFO endpoint that fails at once when the endpoint is deleted or
//! disabled.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::{spawn_app_with, TestApp};
use crate::receiver::{Reply, TestReceiver};

const WAIT: Duration = Duration::from_secs(15);

/// `n` events of `note.created` in one batch body.
fn batch(n: usize) -> Value {
    let events: Vec<Value> = (0..n)
        .map(|i| json!({"eventName": "note.created", "data": {"i": i}}))
        .collect();
    json!({ "events": events })
}

/// A POST with `key`.
async fn post(app: &TestApp, key: &str, path: &str, body: &Value) -> crate::helpers::Resp {
    app.call(reqwest::Method::POST, path, Some(key), Some(body))
        .await
}

/// Creates an endpoint with `key` and returns its id.
async fn endpoint(app: &TestApp, key: &str, body: Value) -> String {
    let r = post(app, key, "/webhooks/v1/endpoints", &body).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["id"].as_str().expect("id").to_owned()
}

async fn get(app: &TestApp, key: &str, path: &str) -> crate::helpers::Resp {
    app.call(reqwest::Method::GET, path, Some(key), None).await
}

#[tokio::test]
async fn retention_prunes_another_orgs_history_behind_a_stuck_fifo_backlog() {
    // Retention's old walk read the oldest 2,000 deliveries only; 3,000 pending ones
    // of org A at the head stopped it for every org.
    let app = spawn_app_with(|c| {
        c.delivery.retry_schedule = "1h".into();
        c.delivery.poll_interval = Duration::from_millis(20);
        c.delivery.retention = Duration::from_millis(500);
        c.delivery.retention_interval = Duration::from_millis(100);
    })
    .await;
    let rx = TestReceiver::start().await;
    rx.always("/down", Reply::Status(500));
    let a = app.admin_key.clone();
    endpoint(
        &app,
        &a,
        json!({"url": rx.url("/down"), "ordering": "fifo"}),
    )
    .await;
    let mut first_a = String::new();
    for _ in 0..3 {
        let r = post(&app, &a, "/webhooks/v1/events/batch", &batch(1000)).await;
        assert_eq!(r.status, 202, "{}", r.text);
        if first_a.is_empty() {
            first_a = r.body["events"][0]["id"].as_str().expect("id").to_owned();
        }
    }
    let b = app.key_for_org("o-retention-b", "admin").await;
    endpoint(&app, &b, json!({"url": rx.url("/ok")})).await;
    let r = post(
        &app,
        &b,
        "/webhooks/v1/events",
        &json!({"eventName": "note.created", "data": {"b": 1}}),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let event_b = r.body["id"].as_str().expect("id").to_owned();
    rx.wait_for("/ok", 1, WAIT).await;

    let deadline = Instant::now() + WAIT;
    loop {
        let r = get(&app, &b, &format!("/webhooks/v1/events/{event_b}")).await;
        if r.status == 404 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "org B's delivered event was never pruned behind org A's pending backlog: {}",
            r.text
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Org A's pending work is kept.
    let kept = get(&app, &a, &format!("/webhooks/v1/events/{first_a}")).await;
    assert_eq!(kept.status, 200, "pending work was pruned: {}", kept.text);
    assert_eq!(
        kept.body["deliveries"][0]["state"], "pending",
        "{}",
        kept.text
    );
}

#[tokio::test]
async fn an_org_at_its_endpoint_cap_is_refused_another_and_others_are_not() {
    let app = spawn_app_with(|c| c.fan_out.max_endpoints_per_org = 3).await;
    let a = app.admin_key.clone();
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(endpoint(&app, &a, json!({"url": format!("http://127.0.0.1:9/{i}")})).await);
    }
    let over = post(
        &app,
        &a,
        "/webhooks/v1/endpoints",
        &json!({"url": "http://127.0.0.1:9/one-more"}),
    )
    .await;
    over.assert_error(422, "limit_exceeded");
    assert!(
        over.body["message"]
            .as_str()
            .is_some_and(|m| m.contains("POSTHORN_MAX_ENDPOINTS_PER_ORG")),
        "{}",
        over.text
    );
    let listed = get(&app, &a, "/webhooks/v1/endpoints").await;
    assert_eq!(
        listed.body["endpoints"].as_array().map(Vec::len),
        Some(3),
        "{}",
        listed.text
    );
    // The cap is the org's: another org creates its own.
    let b = app.key_for_org("o-cap-b", "admin").await;
    endpoint(&app, &b, json!({"url": "http://127.0.0.1:9/b"})).await;
    // A deleted endpoint no longer counts.
    let r = app
        .call(
            reqwest::Method::DELETE,
            &format!("/webhooks/v1/endpoints/{}", ids[0]),
            Some(&a),
            None,
        )
        .await;
    assert!(r.status < 300, "{}", r.text);
    endpoint(&app, &a, json!({"url": "http://127.0.0.1:9/one-more"})).await;
}

#[tokio::test]
async fn a_publish_over_the_fan_out_bound_is_refused_and_stores_nothing() {
    let app = spawn_app_with(|c| c.fan_out.max_deliveries_per_request = 10).await;
    let rx = TestReceiver::start().await;
    let a = app.admin_key.clone();
    let notes = |i: usize| json!({"url": rx.url(&format!("/r{i}")), "eventTypes": [{"eventName": "note.created"}]});
    for i in 0..4 {
        endpoint(&app, &a, notes(i)).await;
    }
    // 3 events to 4 endpoints: 12 deliveries, over 10.
    let r = post(&app, &a, "/webhooks/v1/events/batch", &batch(3)).await;
    r.assert_error(422, "limit_exceeded");
    assert!(
        r.body["message"]
            .as_str()
            .is_some_and(|m| m.contains("POSTHORN_MAX_DELIVERIES_PER_REQUEST")),
        "{}",
        r.text
    );
    assert_eq!(app.sql_i64("SELECT COUNT(*) FROM events").await, 0);
    assert_eq!(app.sql_i64("SELECT COUNT(*) FROM deliveries").await, 0);
    // One event to 11 endpoints is over it as well.
    for i in 4..11 {
        endpoint(&app, &a, notes(i)).await;
    }
    let r = post(
        &app,
        &a,
        "/webhooks/v1/events",
        &json!({"eventName": "note.created", "data": {}}),
    )
    .await;
    r.assert_error(422, "limit_exceeded");
    assert_eq!(app.sql_i64("SELECT COUNT(*) FROM events").await, 0);
    assert_eq!(app.sql_i64("SELECT COUNT(*) FROM deliveries").await, 0);
    // Events of a type no endpoint takes make nothing and pass.
    let r = post(
        &app,
        &a,
        "/webhooks/v1/events/batch",
        &json!({"events": [{"eventName": "segment.created", "data": {}}]}),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text);
    // Within the bound it is published, and delivered.
    let b = app.key_for_org("o-bound-b", "admin").await;
    endpoint(&app, &b, json!({"url": rx.url("/b")})).await;
    let r = post(&app, &b, "/webhooks/v1/events/batch", &batch(10)).await;
    assert_eq!(r.status, 202, "{}", r.text);
    rx.wait_for("/b", 10, WAIT).await;
    assert!(
        rx.received("/r0").is_empty(),
        "a refused publish was delivered"
    );
}

#[tokio::test]
async fn another_orgs_publish_is_not_held_behind_a_big_fan_out() {
    // Not a test of speed but of waiting behind whom: before, org A's concurrent
    // batches were committed together (396,000 deliveries in one transaction: 4 s on
    // SQLite here) and a publish of org B that came meanwhile waited for all of it.
    // Now A's requests take turns within A's budget, one commit holds at most the
    // bound (9,900 deliveries here), and B waits for about one such commit at most
    // (0.2 s here); 1 s leaves room for a loaded machine.
    const ENDPOINTS: usize = 300;
    const PER_BATCH: usize = 33;
    const BATCHES: usize = 40;
    let app = spawn_app_with(|c| {
        c.workers = false;
        c.fan_out.max_deliveries_per_request = (ENDPOINTS * PER_BATCH) as u32;
    })
    .await;
    let a = app.admin_key.clone();
    for i in 0..ENDPOINTS {
        endpoint(&app, &a, json!({"url": format!("http://127.0.0.1:9/{i}")})).await;
    }
    let b = app.key_for_org("o-quiet-b", "admin").await;
    endpoint(&app, &b, json!({"url": "http://127.0.0.1:9/b"})).await;
    let body = batch(PER_BATCH);
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut big = tokio::task::JoinSet::new();
    for _ in 0..BATCHES {
        let (client, url, key, body, done) = (
            app.client.clone(),
            format!("{}/webhooks/v1/events/batch", app.base),
            a.clone(),
            body.clone(),
            done.clone(),
        );
        big.spawn(async move {
            let r = client
                .post(url)
                .header("Authorization", format!("Basic {key}"))
                .json(&body)
                .send()
                .await
                .expect("sent");
            assert_eq!(r.status(), 202);
            done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        });
    }
    // B publishes one event after another for as long as A's fan-out is being written.
    let a_running = || done.load(std::sync::atomic::Ordering::SeqCst) < BATCHES;
    let (mut slowest, mut during) = (Duration::ZERO, 0);
    let mut i = 0;
    while a_running() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "org A's fan-out never ended"
        );
        let t = Instant::now();
        let r = post(
            &app,
            &b,
            "/webhooks/v1/events",
            &json!({"eventName": "note.created", "data": {"i": i}}),
        )
        .await;
        assert_eq!(r.status, 202, "{}", r.text);
        slowest = slowest.max(t.elapsed());
        during += 1;
        i += 1;
    }
    let a_took = started.elapsed();
    while let Some(joined) = big.join_next().await {
        joined.expect("org A's batch");
    }
    let total = app
        .sql_i64("SELECT COUNT(*) FROM deliveries WHERE org_id <> 'o-quiet-b'")
        .await;
    assert_eq!(total as usize, ENDPOINTS * PER_BATCH * BATCHES);
    assert!(
        during >= 2,
        "org B published {during} time(s) while A's fan-out ran"
    );
    assert!(
        slowest < Duration::from_secs(1),
        "org B's publish waited {slowest:?} behind org A's fan-out (which took {a_took:?}, {during} publishes of B meanwhile)"
    );
}

/// Every delivery of the events `ids` to the endpoint `endpoint_id`, by the event log.
async fn states(app: &TestApp, ids: &[String], endpoint_id: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for id in ids {
        let r = app.get(&format!("/webhooks/v1/events/{id}")).await;
        assert_eq!(r.status, 200, "{}", r.text);
        for d in r.body["deliveries"].as_array().expect("deliveries") {
            if d["endpointId"] == endpoint_id {
                out.push((
                    d["state"].as_str().unwrap_or("").to_owned(),
                    d["lastError"].as_str().unwrap_or("").to_owned(),
                ));
            }
        }
    }
    out
}

#[tokio::test]
async fn deleting_or_disabling_a_rate_limited_or_fifo_endpoint_fails_its_backlog_at_once() {
    let app = spawn_app_with(|c| {
        c.delivery.retry_schedule = "1h".into();
        c.delivery.poll_interval = Duration::from_millis(20);
    })
    .await;
    let rx = TestReceiver::start().await;
    let a = app.admin_key.clone();
    let deleted = endpoint(&app, &a, json!({"url": rx.url("/deleted"), "rateLimit": 1})).await;
    let disabled = endpoint(
        &app,
        &a,
        json!({"url": rx.url("/disabled"), "rateLimit": 1}),
    )
    .await;
    // A FIFO endpoint's queue, held behind a failing head, goes the same way.
    rx.always("/fifo", Reply::Status(500));
    let fifo = endpoint(
        &app,
        &a,
        json!({"url": rx.url("/fifo"), "ordering": "fifo"}),
    )
    .await;
    let r = post(&app, &a, "/webhooks/v1/events/batch", &batch(30)).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let ids: Vec<String> = r.body["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["id"].as_str().expect("id").to_owned())
        .collect();
    rx.wait_for("/deleted", 1, WAIT).await;
    rx.wait_for("/fifo", 1, WAIT).await;

    let r = app
        .delete(&format!("/webhooks/v1/endpoints/{deleted}"))
        .await;
    assert!(r.status < 300, "{}", r.text);
    for id in [&disabled, &fifo] {
        let r = app
            .post(
                &format!("/webhooks/v1/endpoints/{id}"),
                &json!({"disabled": true}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    // At once: as soon as the change is answered, not at the endpoint's rate (1/s:
    // half a minute for this backlog). Only what the rate limiter had already let
    // out (its slots of the next 2 s, leased to the dispatcher) may still be pending.
    for endpoint_id in [&deleted, &disabled, &fifo] {
        let seen = states(&app, &ids, endpoint_id).await;
        assert_eq!(seen.len(), 30);
        let pending = seen.iter().filter(|(s, _)| s == "pending").count();
        assert!(
            pending <= 3,
            "{pending} deliveries to {endpoint_id} still pending after it was switched off: {seen:?}"
        );
        let dropped = seen
            .iter()
            .filter(|(s, e)| s == "failed" && e.contains("disabled or deleted"))
            .count();
        assert!(dropped >= 26, "{seen:?}");
    }
    // The disabled endpoint's own log says the same.
    let log = app
        .get(&format!(
            "/webhooks/v1/endpoints/{disabled}/deliveries?state=failed&limit=100"
        ))
        .await;
    assert_eq!(log.status, 200, "{}", log.text);
    assert!(
        log.body["deliveries"]
            .as_array()
            .is_some_and(|d| d.len() >= 26),
        "{}",
        log.text
    );
}

#[tokio::test]
async fn a_rate_limited_endpoint_that_answers_410_fails_its_backlog_at_its_next_turn() {
    // posthorn disables it itself (not in an Update's transaction): its queue is
    // dropped when the pump next looks at it, within the rate limiter's 2 s horizon,
    // not drained at 1/s (half a minute here; 6 s is the test's bound).
    let app = spawn_app_with(|c| {
        c.delivery.retry_schedule = "1h".into();
        c.delivery.poll_interval = Duration::from_millis(20);
    })
    .await;
    let rx = TestReceiver::start().await;
    rx.always("/gone", Reply::Status(410));
    let a = app.admin_key.clone();
    let gone = endpoint(&app, &a, json!({"url": rx.url("/gone"), "rateLimit": 1})).await;
    let r = post(&app, &a, "/webhooks/v1/events/batch", &batch(30)).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let ids: Vec<String> = r.body["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["id"].as_str().expect("id").to_owned())
        .collect();
    let started = Instant::now();
    loop {
        // What was out when it answered 410 (the slots already granted: 3 at most)
        // has its own outcome; everything that waited is dropped.
        let seen = states(&app, &ids, &gone).await;
        let dropped = seen
            .iter()
            .filter(|(s, e)| s == "failed" && e.contains("disabled or deleted"))
            .count();
        if dropped >= 27 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "the backlog of an endpoint disabled by a 410 is still pending: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let view = app.get(&format!("/webhooks/v1/endpoints/{gone}")).await;
    assert_eq!(view.body["enabled"], false, "{}", view.text);
    assert!(
        rx.received("/gone").len() <= 3,
        "{} attempts",
        rx.received("/gone").len()
    );
}
