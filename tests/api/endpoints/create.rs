//! Create's answer: the URL-derived id, timestamps, a minted secret that is
//! never shown again, and the omission of empty values (`enabled` always present).

use serde_json::json;

use crate::helpers::spawn_app;

use super::{
    assert_no_secret, b64url, create, create_url, id_of, is_rfc3339_millis_utc, page_ids, path_of,
    EP, FS_ID, FS_URL,
};

// ---------------------------------------------------------------------------------------
// Create: shape of the answer
// ---------------------------------------------------------------------------------------

#[test]
fn local_b64url_matches_the_contract_example() {
    assert_eq!(b64url(FS_URL), FS_ID);
    assert_eq!(b64url("a"), "YQ");
    assert_eq!(b64url("ab"), "YWI");
    assert_eq!(b64url("abc"), "YWJj");
    assert!(is_rfc3339_millis_utc("2020-04-01T21:53:58.200Z"));
    assert!(!is_rfc3339_millis_utc("2020-04-01T21:53:58Z"));
    assert!(!is_rfc3339_millis_utc("2020-04-01T21:53:58.200000Z"));
    assert!(!is_rfc3339_millis_utc("2020-04-01T21:53:58.200+00:00"));
}

#[tokio::test]
async fn create_returns_endpoint_with_url_derived_id_timestamps_and_minted_secret() {
    let app = spawn_app().await;
    let resp = app
        .post(
            EP,
            &json!({"url": FS_URL, "eventTypes": [{"eventName": "note.created"}]}),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    let body = &resp.body;
    assert_eq!(body["id"], FS_ID);
    assert_eq!(body["url"], FS_URL);
    assert_eq!(body["enabled"], true);
    assert_eq!(body["eventTypes"], json!([{"eventName": "note.created"}]));
    for field in ["created", "modified"] {
        let ts = body[field].as_str().expect("timestamp is a string");
        assert!(
            is_rfc3339_millis_utc(ts),
            "{field} is not RFC 3339 UTC with milliseconds: {ts}"
        );
    }
    let secret = body["secret"].as_str().expect("minted secret returned");
    assert!(!secret.is_empty());

    // Another URL gets its own, URL-derived id, and another minted secret.
    let other_url = "https://hooks.example.org/a/b?c=d";
    let other = create_url(&app, other_url).await;
    assert_eq!(other["id"], b64url(other_url));
    let other_secret = other["secret"].as_str().expect("minted secret returned");
    assert_ne!(other_secret, secret, "minted secrets must differ");
}

#[tokio::test]
async fn create_with_a_secret_does_not_echo_it() {
    let app = spawn_app().await;
    let given = "my-own-secret-0123456789";
    let resp = app.post(EP, &json!({"url": FS_URL, "secret": given})).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert!(resp.body.get("secret").is_none(), "{}", resp.text);
    assert!(!resp.text.contains(given), "{}", resp.text);
}

#[tokio::test]
async fn secret_never_appears_in_get_list_or_update() {
    let app = spawn_app().await;
    let created = create_url(&app, FS_URL).await;
    let minted = created["secret"]
        .as_str()
        .expect("minted secret")
        .to_owned();
    let given = "given-secret-abcdefgh";
    let with_given = create(
        &app,
        json!({"url": "https://example.com/given", "secret": given}),
    )
    .await;

    for (id, secret) in [
        (FS_ID.to_owned(), minted.as_str()),
        (id_of(&with_given), given),
    ] {
        let got = app.get(&path_of(&id)).await;
        assert_eq!(got.status, 200, "{}", got.text);
        assert_no_secret(&got, Some(secret));

        let updated = app.post(&path_of(&id), &json!({})).await;
        assert_eq!(updated.status, 200, "{}", updated.text);
        assert_no_secret(&updated, Some(secret));

        let new_secret = "rotated-secret-0123456789";
        let updated = app
            .post(&path_of(&id), &json!({"secret": new_secret}))
            .await;
        assert_eq!(updated.status, 200, "{}", updated.text);
        assert_no_secret(&updated, Some(new_secret));
        assert_no_secret(&updated, Some(secret));
    }
    let list = app.get(EP).await;
    assert_eq!(list.status, 200, "{}", list.text);
    assert_eq!(page_ids(&list.body).len(), 2, "{}", list.text);
    assert_no_secret(&list, Some(&minted));
    assert_no_secret(&list, Some(given));
}

// ---------------------------------------------------------------------------------------
// Empty values omitted, `enabled` always present
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn endpoint_without_event_types_has_no_event_types_key() {
    let app = spawn_app().await;
    let a = create_url(&app, "https://example.com/a").await;
    let b = create(
        &app,
        json!({"url": "https://example.com/b", "eventTypes": []}),
    )
    .await;
    for body in [&a, &b] {
        assert!(body.get("eventTypes").is_none(), "{body}");
        let got = app.get(&path_of(&id_of(body))).await;
        assert_eq!(got.status, 200, "{}", got.text);
        assert!(got.body.get("eventTypes").is_none(), "{}", got.text);
    }
    let list = app.get(EP).await;
    for item in list.body["endpoints"].as_array().expect("endpoints") {
        assert!(item.get("eventTypes").is_none(), "{}", list.text);
    }
}

#[tokio::test]
async fn event_type_without_subcategory_has_no_subcategory_key() {
    let app = spawn_app().await;
    let created = create(
        &app,
        json!({"url": FS_URL, "eventTypes": [{"eventName": "note.created"}, {"eventName": "segment.created"}]}),
    )
    .await;
    let got = app.get(&path_of(FS_ID)).await;
    let list = app.get(EP).await;
    for types in [
        &created["eventTypes"],
        &got.body["eventTypes"],
        &list.body["endpoints"][0]["eventTypes"],
    ] {
        let items = types.as_array().expect("eventTypes array");
        assert_eq!(items.len(), 2, "{types}");
        for item in items {
            let obj = item.as_object().expect("object");
            assert!(obj.get("subcategory").is_none(), "{types}");
            assert_eq!(obj.len(), 1, "only eventName expected: {types}");
        }
    }
}

#[tokio::test]
async fn enabled_is_always_present_also_when_false() {
    let app = spawn_app().await;
    create_url(&app, FS_URL).await;
    let updated = app.post(&path_of(FS_ID), &json!({"disabled": true})).await;
    assert_eq!(updated.status, 200, "{}", updated.text);
    assert_eq!(
        updated.body.get("enabled"),
        Some(&json!(false)),
        "{}",
        updated.text
    );
    let got = app.get(&path_of(FS_ID)).await;
    assert_eq!(got.body.get("enabled"), Some(&json!(false)), "{}", got.text);
    let list = app.get(EP).await;
    assert_eq!(
        list.body["endpoints"][0].get("enabled"),
        Some(&json!(false)),
        "{}",
        list.text
    );
}

#[tokio::test]
async fn a_single_page_list_has_no_next_token() {
    let app = spawn_app().await;
    create_url(&app, FS_URL).await;
    let list = app.get(EP).await;
    assert_eq!(list.status, 200, "{}", list.text);
    assert_eq!(page_ids(&list.body), vec![FS_ID.to_owned()]);
    assert!(
        list.body.get("nextPaginationToken").is_none(),
        "{}",
        list.text
    );
}

#[tokio::test]
async fn empty_list_answers_empty_object() {
    let app = spawn_app().await;
    let list = app.get(EP).await;
    assert_eq!(list.status, 200, "{}", list.text);
    assert_eq!(list.body, json!({}), "{}", list.text);
}

#[tokio::test]
async fn create_with_disabled_true_makes_a_disabled_endpoint() {
    let app = spawn_app().await;
    let body = create(
        &app,
        json!({"url": "https://example.com/off", "disabled": true}),
    )
    .await;
    assert_eq!(body["enabled"], false, "{body}");
    let path = path_of(&id_of(&body));
    let got = app.get(&path).await;
    assert_eq!(got.body["enabled"], false, "{}", got.text);
    // Nothing is queued for it.
    let published = app
        .post(
            "/webhooks/v1/events",
            &json!({"eventName": "note.created", "data": {}}),
        )
        .await;
    assert_eq!(published.status, 202, "{}", published.text);
    assert_eq!(app.sql_i64("SELECT COUNT(*) FROM deliveries").await, 0);
    // And `false` (or no field) is an enabled one.
    let on = create(
        &app,
        json!({"url": "https://example.com/on", "disabled": false}),
    )
    .await;
    assert_eq!(on["enabled"], true, "{on}");
}
