//! Who is calling: a missing, unknown or malformed `Authorization` header is 401, `Basic`
//! and `Bearer` both authenticate, and the rate limit is per key with `Retry-After`.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::helpers::{spawn_app, spawn_app_with, TestApp, ADMIN_KEY, ORG};

use super::{assert_unauthorized, endpoint_count, with_authorization};

#[tokio::test]
async fn no_authorization_header_is_401_with_the_contract_body() {
    let app = spawn_app().await;
    for path in [
        "/webhooks/v1/endpoints",
        "/webhooks/v1/endpoints/aHR0cHM6Ly9leGFtcGxlLmNvbS9h",
        "/webhooks/v1/event-types",
        "/webhooks/v1/event-types/metric.alert/subcategories",
        "/webhooks/v1/keys",
    ] {
        let resp = app.call(Method::GET, path, None, None).await;
        assert_unauthorized(&resp, path);
    }
    // A write without a key is refused and changes nothing.
    let resp = app
        .call(
            Method::POST,
            "/webhooks/v1/endpoints",
            None,
            Some(&json!({"url": "https://example.com/hook"})),
        )
        .await;
    assert_unauthorized(&resp, "POST /endpoints without a key");
    assert_eq!(endpoint_count(&app, ADMIN_KEY).await, 0);
}

#[tokio::test]
async fn unknown_key_is_401() {
    let app = spawn_app().await;
    for header in [
        "Basic not-a-key".to_owned(),
        "Bearer not-a-key".to_owned(),
        "Basic ph_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".to_owned(),
        // One character off the real key.
        format!("Basic {}x", ADMIN_KEY),
        format!("Basic {}", &ADMIN_KEY[..ADMIN_KEY.len() - 1]),
    ] {
        let resp =
            with_authorization(&app, Method::GET, "/webhooks/v1/endpoints", Some(&header)).await;
        assert_unauthorized(&resp, &header);
    }
}

#[tokio::test]
async fn malformed_authorization_header_is_401() {
    let app = spawn_app().await;
    for header in [
        "Basic".to_owned(),
        "Bearer".to_owned(),
        "Token xyz".to_owned(),
        // A valid key under a scheme posthorn does not accept.
        format!("Token {ADMIN_KEY}"),
        // The key alone, without a scheme.
        ADMIN_KEY.to_owned(),
    ] {
        let resp =
            with_authorization(&app, Method::GET, "/webhooks/v1/endpoints", Some(&header)).await;
        assert_unauthorized(&resp, &header);
    }
}

#[tokio::test]
async fn basic_and_bearer_both_authenticate() {
    let app = spawn_app().await;
    for header in [format!("Basic {ADMIN_KEY}"), format!("Bearer {ADMIN_KEY}")] {
        let resp =
            with_authorization(&app, Method::GET, "/webhooks/v1/endpoints", Some(&header)).await;
        assert_eq!(resp.status, 200, "{header}: {}", resp.text);
        let resp =
            with_authorization(&app, Method::GET, "/webhooks/v1/event-types", Some(&header)).await;
        assert_eq!(resp.status, 200, "{header}: {}", resp.text);
    }
}

#[tokio::test]
async fn rate_limit_is_per_key_with_retry_after() {
    let app = spawn_app_with(|c| {
        c.rate_limit = 2;
        c.rate_limit_burst = Some(2);
    })
    .await;
    // Minted by the CLI, so the admin key's budget is untouched.
    let other = app.key_for_org(ORG, "admin").await;

    // Ten requests at once: a rate of 2/s with a burst of 2 lets about two through.
    let mut burst = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let req = app
            .client
            .get(format!("{}/webhooks/v1/event-types", app.base))
            .header("Authorization", format!("Basic {}", app.admin_key));
        burst.spawn(async move { TestApp::read(req.send().await.expect("sent")).await });
    }
    let mut answers = Vec::new();
    while let Some(r) = burst.join_next().await {
        answers.push(r.expect("request task"));
    }
    let ok = answers.iter().filter(|r| r.status == 200).count();
    assert!(
        answers.iter().all(|r| r.status == 200 || r.status == 429),
        "{answers:?}"
    );
    assert!(ok >= 2, "the burst of 2 was not allowed: {ok} succeeded");
    assert!(
        ok <= 4,
        "{ok} of 10 simultaneous requests passed a 2/s limit"
    );
    let limited = answers.into_iter().find(|r| r.status == 429);
    let limited = limited.expect("10 simultaneous requests at 2/s never got a 429");
    limited.assert_error(429, "too_many_requests");
    let retry_after: u64 = limited
        .headers
        .get("retry-after")
        .expect("429 without Retry-After")
        .to_str()
        .expect("ascii")
        .trim()
        .parse()
        .expect("Retry-After is a whole number of seconds");
    assert!(retry_after >= 1, "Retry-After: {retry_after}");
    assert!(
        retry_after <= 5,
        "Retry-After too long for 2/s: {retry_after}"
    );

    // Another key of the same org is not limited by the first one's burst.
    for _ in 0..2 {
        let resp = app
            .call(Method::GET, "/webhooks/v1/event-types", Some(&other), None)
            .await;
        assert_eq!(resp.status, 200, "{}", resp.text);
    }

    // Waiting as told is enough.
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    let resp = app.get("/webhooks/v1/event-types").await;
    assert_eq!(resp.status, 200, "{}", resp.text);
}

#[tokio::test]
async fn repeated_failed_authentication_from_one_address_is_throttled_whatever_key_it_carries() {
    let app = spawn_app_with(|c| c.failed_auth_limit = 5).await;
    let wrong = || {
        app.call(
            Method::GET,
            "/webhooks/v1/endpoints",
            Some("wrong-key-0123456789abcd"),
            None,
        )
    };
    for i in 0..5 {
        // Valid keys are not counted: they are served between the failures.
        let resp = app.get("/webhooks/v1/endpoints").await;
        assert_eq!(resp.status, 200, "{}", resp.text);
        assert_unauthorized(&wrong().await, &format!("failure {i}"));
    }
    let throttled = wrong().await;
    throttled.assert_error(429, "too_many_requests");
    let wait: u64 = throttled
        .header("retry-after")
        .parse()
        .expect("Retry-After in seconds");
    assert!((1..=60).contains(&wait), "Retry-After {wait}");
    // No key at all is answered the same.
    let resp = app
        .call(Method::GET, "/webhooks/v1/endpoints", None, None)
        .await;
    resp.assert_error(429, "too_many_requests");
    // And so is a valid key from that address, until it has earned a try back: a right
    // guess cannot be told from a wrong one.
    let resp = app.get("/webhooks/v1/endpoints").await;
    resp.assert_error(429, "too_many_requests");
    assert!(!resp.header("retry-after").is_empty());
}

#[tokio::test]
async fn standard_basic_with_the_key_as_user_authenticates() {
    use base64::Engine;
    let app = spawn_app().await;
    let standard = base64::engine::general_purpose::STANDARD.encode(format!("{ADMIN_KEY}:"));
    let resp = app
        .client
        .get(format!("{}/webhooks/v1/endpoints", app.base))
        .header("Authorization", format!("Basic {standard}"))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 200);
    // What reqwest's basic_auth sends is the same thing.
    let resp = app
        .client
        .get(format!("{}/webhooks/v1/endpoints", app.base))
        .basic_auth(ADMIN_KEY, Some(""))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 200);
    // A password is not part of the scheme: refused.
    let wrong = base64::engine::general_purpose::STANDARD.encode(format!("{ADMIN_KEY}:x"));
    let resp = app
        .call(Method::GET, "/webhooks/v1/endpoints", Some(&wrong), None)
        .await;
    assert_unauthorized(&resp, "user:password");
}
