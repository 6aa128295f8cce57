//! Both casings (camelCase and snake_case) of body fields and query parameters, one
//! field in both casings refused, unknown fields ignored.

use serde_json::json;

use crate::helpers::spawn_app;

use super::{b64url, create, create_url, list_all, page_ids, path_of, EP, FS_ID, FS_URL};

// ---------------------------------------------------------------------------------------
// Both casings, unknown fields
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn snake_case_event_types_accepted_on_create_and_update() {
    let app = spawn_app().await;
    let created = create(
        &app,
        json!({"url": FS_URL, "event_types": [{"event_name": "note.created"}]}),
    )
    .await;
    assert_eq!(
        created["eventTypes"],
        json!([{"eventName": "note.created"}])
    );
    assert!(created.get("event_types").is_none());

    let updated = app
        .post(
            &path_of(FS_ID),
            &json!({"event_types": [{"event_name": "segment.created"}]}),
        )
        .await;
    assert_eq!(updated.status, 200, "{}", updated.text);
    assert_eq!(
        updated.body["eventTypes"],
        json!([{"eventName": "segment.created"}])
    );
    let got = app.get(&path_of(FS_ID)).await;
    assert_eq!(
        got.body["eventTypes"],
        json!([{"eventName": "segment.created"}])
    );
}

#[tokio::test]
async fn both_casings_of_one_field_in_a_body_are_refused() {
    let app = spawn_app().await;
    let resp = app
        .post(
            EP,
            &json!({
                "url": FS_URL,
                "eventTypes": [{"eventName": "note.created"}],
                "event_types": [{"eventName": "note.created"}],
            }),
        )
        .await;
    resp.assert_error(400, "invalid_field");
    assert!(
        list_all(&app).await.is_empty(),
        "a refused Create saved something"
    );

    create_url(&app, FS_URL).await;
    let resp = app
        .post(
            &path_of(FS_ID),
            &json!({"disabled": true, "eventTypes": [], "event_types": []}),
        )
        .await;
    resp.assert_error(400, "invalid_field");
    let got = app.get(&path_of(FS_ID)).await;
    assert_eq!(
        got.body["enabled"], true,
        "a refused Update changed the endpoint"
    );
}

#[tokio::test]
async fn both_casings_nested_in_an_event_type_are_refused() {
    let app = spawn_app().await;
    let resp = app
        .post(
            EP,
            &json!({
                "url": FS_URL,
                "eventTypes": [{"eventName": "note.created", "event_name": "note.created"}],
            }),
        )
        .await;
    resp.assert_error(400, "invalid_field");
    assert!(
        list_all(&app).await.is_empty(),
        "a refused Create saved something"
    );

    create_url(&app, FS_URL).await;
    let resp = app
        .post(
            &path_of(FS_ID),
            &json!({"event_types": [{"eventName": "note.created", "event_name": "segment.created"}]}),
        )
        .await;
    resp.assert_error(400, "invalid_field");
    let got = app.get(&path_of(FS_ID)).await;
    assert!(got.body.get("eventTypes").is_none(), "{}", got.text);
}

#[tokio::test]
async fn pagination_token_accepted_in_both_casings() {
    let app = spawn_app().await;
    for i in 0..3 {
        create_url(&app, &format!("https://example.com/{i}")).await;
    }
    let first = app.get(&format!("{EP}?limit=2")).await;
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(page_ids(&first.body).len(), 2);
    let token = first.body["nextPaginationToken"]
        .as_str()
        .expect("a next token")
        .to_owned();

    let camel = app
        .get(&format!("{EP}?limit=2&paginationToken={token}"))
        .await;
    let snake = app
        .get(&format!("{EP}?limit=2&pagination_token={token}"))
        .await;
    for resp in [&camel, &snake] {
        assert_eq!(resp.status, 200, "{}", resp.text);
        assert_eq!(
            page_ids(&resp.body),
            vec![b64url("https://example.com/2")],
            "{}",
            resp.text
        );
        assert!(
            resp.body.get("nextPaginationToken").is_none(),
            "{}",
            resp.text
        );
    }
}

#[tokio::test]
async fn both_casings_of_a_query_parameter_are_refused() {
    let app = spawn_app().await;
    for i in 0..3 {
        create_url(&app, &format!("https://example.com/{i}")).await;
    }
    let first = app.get(&format!("{EP}?limit=1")).await;
    let token = first.body["nextPaginationToken"]
        .as_str()
        .expect("a next token")
        .to_owned();
    let resp = app
        .get(&format!(
            "{EP}?paginationToken={token}&pagination_token={token}"
        ))
        .await;
    resp.assert_error(400, "invalid_field");
}

#[tokio::test]
async fn unknown_fields_are_ignored() {
    let app = spawn_app().await;
    let created = create(
        &app,
        json!({
            "url": FS_URL,
            "colour": "blue",
            "nested": {"anything": [1, 2, 3]},
            "eventTypes": [{"eventName": "note.created", "priority": 5}],
        }),
    )
    .await;
    assert_eq!(created["id"], FS_ID);
    assert!(created.get("colour").is_none());
    assert_eq!(
        created["eventTypes"],
        json!([{"eventName": "note.created"}])
    );

    let updated = app
        .post(
            &path_of(FS_ID),
            &json!({"disabled": true, "whatever": null}),
        )
        .await;
    assert_eq!(updated.status, 200, "{}", updated.text);
    assert_eq!(updated.body["enabled"], false);

    let list = app.get(&format!("{EP}?limit=5&sort=desc")).await;
    assert_eq!(list.status, 200, "{}", list.text);
    assert_eq!(page_ids(&list.body), vec![FS_ID.to_owned()]);
}
