//! Signatures seen by a receiver: test events signed and reporting their outcome, and
//! secret rotation signing with both secrets during the grace period only.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use crate::receiver::{Received, Reply, TestReceiver};

use super::{app_with, endpoint, publish, WAIT};

fn hmac_b64(key: &[u8], msg: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("key");
    mac.update(msg);
    STANDARD.encode(mac.finalize().into_bytes())
}

pub(super) fn standard_sig(key: &str, r: &Received) -> String {
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
        format!("{body}:{}:{ts}", crate::helpers::ORG).as_bytes(),
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
