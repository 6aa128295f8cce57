//! The operator API: an event's fate, the delivery log, retry and recover, test
//! events, secret rotation, auto-disable, statistics and retention.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{spawn_app_with, TestApp};

mod inspect;
mod notices;
mod resend;
mod signing;
mod upkeep;

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
