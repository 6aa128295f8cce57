//! What a request's data can make posthorn do with it: custom headers never follow an
//! endpoint to a new URL unless given again; numbers are delivered with every digit
//! published; an object that names a key twice is refused.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{spawn_app_with, Resp, TestApp};
use crate::receiver::TestReceiver;

const EP: &str = "/webhooks/v1/endpoints";
const WAIT: Duration = Duration::from_secs(10);
const TOKEN: &str = "Bearer operator-token-41d7";

async fn app() -> TestApp {
    spawn_app_with(|c| {
        c.delivery.retry_schedule = "100ms".into();
        c.delivery.poll_interval = Duration::from_millis(20);
    })
    .await
}

#[tokio::test]
async fn a_new_url_does_not_get_the_old_urls_custom_headers() {
    let app = app().await;
    let rx = TestReceiver::start().await;
    let created = app
        .post(
            EP,
            &json!({"url": rx.url("/owner"), "secret": "s3cret-value",
                    "headers": {"Authorization": TOKEN, "X-Tenant": "a"}}),
        )
        .await;
    assert_eq!(created.status, 200, "{}", created.text);
    let path = format!("{EP}/{}", created.body["id"].as_str().expect("id"));

    // The masks a Get shows, sent back with a new URL, would hand the stored values to
    // whoever owns that URL: refused, and nothing changes.
    let masked = app.get(&path).await.body["headers"].clone();
    app.post(&path, &json!({"url": rx.url("/thief"), "headers": masked}))
        .await
        .assert_error(400, "invalid_field");
    assert_eq!(app.get(&path).await.body["url"], rx.url("/owner"));

    // A new URL without headers: they are removed, and the answer says so.
    let moved = app.post(&path, &json!({"url": rx.url("/thief")})).await;
    assert_eq!(moved.status, 200, "{}", moved.text);
    assert!(moved.body.get("headers").is_none(), "{}", moved.text);
    assert!(
        moved
            .header("warning")
            .contains("custom headers were removed"),
        "{:?}",
        moved.header("warning")
    );
    let path = format!("{EP}/{}", moved.body["id"].as_str().expect("id"));
    let test = app.post(&format!("{path}/test"), &json!({})).await;
    assert_eq!(test.status, 200, "{}", test.text);
    let seen = rx.wait_for("/thief", 1, WAIT).await;
    assert_eq!(seen[0].header("authorization"), "");
    assert_eq!(seen[0].header("x-tenant"), "");
    assert!(rx.received("/owner").is_empty());

    // Headers given again with the new URL go with it; an unchanged URL keeps them.
    let given = app
        .post(
            &path,
            &json!({"url": rx.url("/new"), "headers": {"X-Tenant": "b"}}),
        )
        .await;
    assert_eq!(given.status, 200, "{}", given.text);
    assert_eq!(given.body["headers"], json!({"X-Tenant": "b"}));
    assert!(given.header("warning").is_empty());
    let path = format!("{EP}/{}", given.body["id"].as_str().expect("id"));
    let same = app.post(&path, &json!({"url": rx.url("/new")})).await;
    assert_eq!(
        same.body["headers"],
        json!({"X-Tenant": "b"}),
        "{}",
        same.text
    );
    assert!(same.header("warning").is_empty());
}

/// A server and a receiver, with an endpoint at the receiver's `/n`: its id.
async fn with_endpoint() -> (TestApp, TestReceiver, String) {
    let app = app().await;
    let rx = TestReceiver::start().await;
    let resp = app
        .post(EP, &json!({"url": rx.url("/n"), "secret": "s3cret-value"}))
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    let id = resp.body["id"].as_str().expect("id").to_owned();
    (app, rx, id)
}

/// POSTs `body` as it is written (JSON text a `Value` could not hold) as the admin.
async fn post_text(app: &TestApp, path: &str, body: String) -> Resp {
    let req = app
        .client
        .post(format!("{}{path}", app.base))
        .header("Authorization", format!("Basic {}", app.admin_key))
        .header("Content-Type", "application/json")
        .body(body);
    TestApp::read(req.send().await.expect("request sent")).await
}

/// The `data` of every delivery to `/n`, as the receiver got its bytes.
async fn delivered_data(rx: &TestReceiver, n: usize) -> Vec<String> {
    rx.wait_for("/n", n, WAIT)
        .await
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect()
}

#[tokio::test]
async fn numbers_arrive_with_every_digit_published() {
    let (app, rx, _) = with_endpoint().await;

    let data = r#"{"big": 123456789012345678901234567890, "neg": -98765432109876543210987,
        "fraction": 0.10000000000000000000000001, "money": 19.90, "list": [18446744073709551616]}"#;
    let body = format!(r#"{{"eventName": "note.created", "data": {data}}}"#);
    let resp = post_text(&app, "/webhooks/v1/events", body).await;
    assert_eq!(resp.status, 202, "{}", resp.text);
    let batch = format!(r#"{{"events": [{{"eventName": "note.created", "data": {data}}}]}}"#);
    let resp = post_text(&app, "/webhooks/v1/events/batch", batch).await;
    assert_eq!(resp.status, 202, "{}", resp.text);

    for got in delivered_data(&rx, 2).await {
        for digits in [
            r#""big":123456789012345678901234567890"#,
            r#""neg":-98765432109876543210987"#,
            r#""fraction":0.10000000000000000000000001"#,
            r#""money":19.90"#,
            r#""list":[18446744073709551616]"#,
        ] {
            assert!(got.contains(digits), "{digits} not in {got}");
        }
    }
}

#[tokio::test]
async fn a_key_given_twice_is_refused_and_nothing_is_stored() {
    let (app, rx, _) = with_endpoint().await;

    let twice = r#"{"eventName": "note.created", "data": {"order": {"total": 1, "total": 1000}}}"#;
    let resp = post_text(&app, "/webhooks/v1/events", twice.to_owned()).await;
    resp.assert_error(400, "invalid_json");
    assert!(
        resp.body["message"]
            .as_str()
            .is_some_and(|m| m.contains("data.order") && m.contains("total")),
        "{}",
        resp.text
    );
    let batch = format!(
        r#"{{"events": [{{"eventName": "note.created", "data": {{}}}}, {}]}}"#,
        twice
    );
    post_text(&app, "/webhooks/v1/events/batch", batch)
        .await
        .assert_error(400, "invalid_json");

    // Nothing of the refused requests was stored: the store holds no event.
    assert_eq!(app.sql_i64("SELECT COUNT(*) FROM events").await, 0);
    let ok = app
        .post(
            "/webhooks/v1/events",
            &json!({"eventName": "note.created", "data": {"marker": "after"}}),
        )
        .await;
    assert_eq!(ok.status, 202, "{}", ok.text);
    let got = delivered_data(&rx, 1).await;
    assert!(got[0].contains("after"), "{}", got[0]);
    assert_eq!(app.sql_i64("SELECT COUNT(*) FROM events").await, 1);
}

/// Two orgs publish in turn: what one sees of its deliveries (ids, pagination tokens,
/// its `delivery.failed` events) says nothing of how many the other made.
#[tokio::test]
async fn ids_and_tokens_do_not_count_other_orgs_deliveries() {
    let (app, _rx, endpoint) = with_endpoint().await;
    let publish = json!({"eventName": "note.created", "data": {}});
    let mut ids = Vec::new();
    for _ in 0..3 {
        let event = app.post("/webhooks/v1/events", &publish).await;
        assert_eq!(event.status, 202, "{}", event.text);
        let view = app
            .get(&format!(
                "/webhooks/v1/events/{}",
                event.body["id"].as_str().expect("id")
            ))
            .await;
        ids.push(
            view.body["deliveries"][0]["id"]
                .as_str()
                .expect("delivery id")
                .to_owned(),
        );
    }
    for id in &ids {
        assert!(id.starts_with("dlv_") && id.len() == 26, "{id}");
        // Each spelling names its delivery; the row number behind it names nothing.
        let got = app.get(&format!("/webhooks/v1/deliveries/{id}")).await;
        assert_eq!(got.status, 200, "{}", got.text);
        assert_eq!(got.body["id"], id.as_str());
    }
    let rows: Vec<String> = app
        .sql_strings("SELECT CAST(id AS TEXT) FROM deliveries ORDER BY id")
        .await;
    for row in &rows {
        app.get(&format!("/webhooks/v1/deliveries/dlv_{row}"))
            .await
            .assert_error(404, "resource_not_found");
    }
    // Neighbouring rows share no visible prefix.
    assert_ne!(ids[0][..8], ids[1][..8]);

    // A pagination token is no readable position either.
    let page = app
        .get(&format!("{EP}/{endpoint}/deliveries?limit=1"))
        .await;
    let token = page.body["nextPaginationToken"]
        .as_str()
        .expect("a token")
        .to_owned();
    use base64::Engine;
    let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(&token)
        .unwrap_or_default();
    assert!(
        !String::from_utf8_lossy(&decoded).contains('.'),
        "{token} reads as {:?}",
        String::from_utf8_lossy(&decoded)
    );
    let next = app
        .get(&format!(
            "{EP}/{endpoint}/deliveries?limit=1&paginationToken={token}"
        ))
        .await;
    assert_eq!(next.status, 200, "{}", next.text);
    assert_eq!(next.body["deliveries"][0]["id"], ids[1].as_str());
    // A token spelled the old way (base64 of "d.<row>") is refused.
    let forged = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("d.{}", rows[2]));
    app.get(&format!(
        "{EP}/{endpoint}/deliveries?paginationToken={forged}"
    ))
    .await
    .assert_error(400, "invalid_field");
}
