//! Update semantics: enable and disable, empty values leave fields unchanged, event
//! types replaced, timestamps, URL changes (a new id; conflicts), refused bodies, and
//! POST rather than PUT.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::helpers::spawn_app;

use super::{
    b64url, create, create_url, id_of, is_rfc3339_millis_utc, list_all, path_of, EP, FS_ID, FS_URL,
};

// ---------------------------------------------------------------------------------------
// Update semantics
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn empty_update_keeps_fields_and_enables() {
    let app = spawn_app().await;
    let types = json!([{"eventName": "note.created"}, {"eventName": "segment.created"}]);
    create(
        &app,
        json!({"url": FS_URL, "eventTypes": types, "secret": "s3cret-value-123"}),
    )
    .await;
    let disabled = app.post(&path_of(FS_ID), &json!({"disabled": true})).await;
    assert_eq!(disabled.body["enabled"], false, "{}", disabled.text);

    let updated = app.post(&path_of(FS_ID), &json!({})).await;
    assert_eq!(updated.status, 200, "{}", updated.text);
    assert_eq!(updated.body["id"], FS_ID);
    assert_eq!(updated.body["url"], FS_URL);
    assert_eq!(updated.body["eventTypes"], types);
    assert_eq!(updated.body["enabled"], true);
    let got = app.get(&path_of(FS_ID)).await;
    assert_eq!(got.body["enabled"], true);
    assert_eq!(got.body["eventTypes"], types);
}

#[tokio::test]
async fn disabled_true_disables_and_a_later_update_without_it_reenables() {
    let app = spawn_app().await;
    create(
        &app,
        json!({"url": FS_URL, "eventTypes": [{"eventName": "note.created"}]}),
    )
    .await;
    let updated = app.post(&path_of(FS_ID), &json!({"disabled": true})).await;
    assert_eq!(updated.status, 200, "{}", updated.text);
    assert_eq!(updated.body["enabled"], false);
    assert_eq!(app.get(&path_of(FS_ID)).await.body["enabled"], false);

    // An update that only changes the event types, without `disabled`, enables.
    let updated = app
        .post(
            &path_of(FS_ID),
            &json!({"eventTypes": [{"eventName": "segment.created"}]}),
        )
        .await;
    assert_eq!(updated.status, 200, "{}", updated.text);
    assert_eq!(updated.body["enabled"], true);
    let got = app.get(&path_of(FS_ID)).await;
    assert_eq!(got.body["enabled"], true);
    assert_eq!(
        got.body["eventTypes"],
        json!([{"eventName": "segment.created"}])
    );
}

#[tokio::test]
async fn disabled_false_enables() {
    let app = spawn_app().await;
    create_url(&app, FS_URL).await;
    let updated = app.post(&path_of(FS_ID), &json!({"disabled": true})).await;
    assert_eq!(updated.body["enabled"], false, "{}", updated.text);
    let updated = app.post(&path_of(FS_ID), &json!({"disabled": false})).await;
    assert_eq!(updated.status, 200, "{}", updated.text);
    assert_eq!(updated.body["enabled"], true);
    assert_eq!(app.get(&path_of(FS_ID)).await.body["enabled"], true);
    // disabled:false on an enabled endpoint keeps it enabled.
    let updated = app.post(&path_of(FS_ID), &json!({"disabled": false})).await;
    assert_eq!(updated.body["enabled"], true, "{}", updated.text);
}

#[tokio::test]
async fn empty_url_event_types_and_secret_leave_fields_unchanged() {
    let app = spawn_app().await;
    let types = json!([{"eventName": "note.created"}]);
    let created = create(&app, json!({"url": FS_URL, "eventTypes": types})).await;
    let updated = app
        .post(
            &path_of(FS_ID),
            &json!({"url": "", "eventTypes": [], "secret": ""}),
        )
        .await;
    assert_eq!(updated.status, 200, "{}", updated.text);
    assert_eq!(updated.body["id"], FS_ID);
    assert_eq!(updated.body["url"], FS_URL);
    assert_eq!(updated.body["eventTypes"], types);
    assert_eq!(updated.body["created"], created["created"]);
    let got = app.get(&path_of(FS_ID)).await;
    assert_eq!(got.body["url"], FS_URL);
    assert_eq!(got.body["eventTypes"], types);

    // The empty secret was skipped, not validated: a too-short one is refused.
    app.post(&path_of(FS_ID), &json!({"secret": "short"}))
        .await
        .assert_error(400, "invalid_field");
    // Null counts as absent too.
    let updated = app
        .post(
            &path_of(FS_ID),
            &json!({"url": null, "eventTypes": null, "secret": null}),
        )
        .await;
    assert_eq!(updated.status, 200, "{}", updated.text);
    assert_eq!(updated.body["url"], FS_URL);
    assert_eq!(updated.body["eventTypes"], types);
}

#[tokio::test]
async fn non_empty_event_types_replace_the_list() {
    let app = spawn_app().await;
    create(
        &app,
        json!({"url": FS_URL, "eventTypes": [{"eventName": "note.created"}, {"eventName": "segment.created"}]}),
    )
    .await;
    let replaced = json!([{"eventName": "nativemobile.event.crash"}]);
    let updated = app
        .post(&path_of(FS_ID), &json!({"eventTypes": replaced}))
        .await;
    assert_eq!(updated.status, 200, "{}", updated.text);
    assert_eq!(updated.body["eventTypes"], replaced);
    assert_eq!(app.get(&path_of(FS_ID)).await.body["eventTypes"], replaced);
    let list = app.get(EP).await;
    assert_eq!(list.body["endpoints"][0]["eventTypes"], replaced);
}

#[tokio::test]
async fn update_changes_modified_and_keeps_created() {
    let app = spawn_app().await;
    let created = create_url(&app, FS_URL).await;
    let created_at = created["created"].as_str().expect("created").to_owned();
    assert_eq!(created["modified"], created_at.as_str());
    tokio::time::sleep(Duration::from_millis(20)).await;

    let updated = app.post(&path_of(FS_ID), &json!({"disabled": true})).await;
    assert_eq!(updated.status, 200, "{}", updated.text);
    let modified = updated.body["modified"]
        .as_str()
        .expect("modified")
        .to_owned();
    assert!(is_rfc3339_millis_utc(&modified), "{modified}");
    assert_eq!(updated.body["created"], created_at.as_str());
    assert_ne!(modified, created_at, "modified did not change");
    // Same fixed-width UTC form, so string order is time order.
    assert!(modified > created_at, "{modified} <= {created_at}");

    let got = app.get(&path_of(FS_ID)).await;
    assert_eq!(got.body["created"], created_at.as_str());
    assert_eq!(got.body["modified"], modified.as_str());
}

#[tokio::test]
async fn url_change_changes_the_id() {
    let app = spawn_app().await;
    let types = json!([{"eventName": "note.created"}]);
    let created = create(&app, json!({"url": FS_URL, "eventTypes": types})).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let new_url = "https://example.com/moved-here";
    let new_id = b64url(new_url);
    let updated = app.post(&path_of(FS_ID), &json!({"url": new_url})).await;
    assert_eq!(updated.status, 200, "{}", updated.text);
    assert_eq!(updated.body["id"], new_id.as_str());
    assert_eq!(updated.body["url"], new_url);
    assert_eq!(updated.body["created"], created["created"]);
    assert_eq!(updated.body["eventTypes"], types);

    app.get(&path_of(FS_ID))
        .await
        .assert_error(404, "resource_not_found");
    app.post(&path_of(FS_ID), &json!({}))
        .await
        .assert_error(404, "resource_not_found");
    let got = app.get(&path_of(&new_id)).await;
    assert_eq!(got.status, 200, "{}", got.text);
    assert_eq!(got.body["id"], new_id.as_str());
    assert_eq!(got.body["url"], new_url);
    assert_eq!(got.body["created"], created["created"]);
    assert_eq!(got.body["eventTypes"], types);

    let all = list_all(&app).await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["id"], new_id.as_str());

    // The old URL is free again.
    create_url(&app, FS_URL).await;
    assert_eq!(list_all(&app).await.len(), 2);
}

#[tokio::test]
async fn url_change_to_an_existing_url_is_a_conflict() {
    let app = spawn_app().await;
    let a = create(
        &app,
        json!({"url": "https://example.com/a", "eventTypes": [{"eventName": "note.created"}]}),
    )
    .await;
    let b = create_url(&app, "https://example.com/b").await;
    let resp = app
        .post(
            &path_of(&id_of(&a)),
            &json!({"url": "https://example.com/b", "disabled": true, "eventTypes": [{"eventName": "segment.created"}]}),
        )
        .await;
    resp.assert_error(409, "already_exists");

    let got_a = app.get(&path_of(&id_of(&a))).await;
    assert_eq!(got_a.status, 200, "{}", got_a.text);
    assert_eq!(got_a.body["url"], "https://example.com/a");
    assert_eq!(got_a.body["enabled"], true);
    assert_eq!(got_a.body["eventTypes"], a["eventTypes"]);
    assert_eq!(got_a.body["modified"], a["modified"]);
    let got_b = app.get(&path_of(&id_of(&b))).await;
    assert_eq!(got_b.status, 200, "{}", got_b.text);
    assert!(got_b.body.get("eventTypes").is_none());
    assert_eq!(got_b.body["modified"], b["modified"]);
    assert_eq!(list_all(&app).await.len(), 2);
}

#[tokio::test]
async fn update_to_its_own_url_keeps_the_id() {
    let app = spawn_app().await;
    create_url(&app, FS_URL).await;
    let updated = app.post(&path_of(FS_ID), &json!({"url": FS_URL})).await;
    assert_eq!(updated.status, 200, "{}", updated.text);
    assert_eq!(updated.body["id"], FS_ID);
    assert_eq!(app.get(&path_of(FS_ID)).await.status, 200);
}

#[tokio::test]
async fn update_with_a_bad_url_is_refused_and_changes_nothing() {
    let app = spawn_app().await;
    create_url(&app, FS_URL).await;
    for bad in ["ftp://example.com/", "https://u:p@example.com/", "relative"] {
        let resp = app
            .post(&path_of(FS_ID), &json!({"url": bad, "disabled": true}))
            .await;
        resp.assert_error(400, "invalid_field");
    }
    let got = app.get(&path_of(FS_ID)).await;
    assert_eq!(got.body["url"], FS_URL);
    assert_eq!(got.body["enabled"], true);
}

#[tokio::test]
async fn update_is_post_not_put() {
    let app = spawn_app().await;
    create_url(&app, FS_URL).await;
    let resp = app
        .call(
            Method::PUT,
            &path_of(FS_ID),
            Some(&app.admin_key),
            Some(&json!({"disabled": true})),
        )
        .await;
    resp.assert_error(405, "method_not_allowed");
    assert_eq!(app.get(&path_of(FS_ID)).await.body["enabled"], true);
    app.delete(EP).await.assert_error(405, "method_not_allowed");
}
