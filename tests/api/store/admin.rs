//! Administration: keys (a revoked key is refused at once and stays revoked), the
//! catalog, and endpoints with their subscriptions.

use posthorn::domain::{ApiKey, EventTypeRef, Role, Timestamp};
use posthorn::store::{
    ApiKeyRecord, EndpointPatch, EventTypeRecord, KeyInsert, NewEndpoint, StoreError,
};

use super::{org, store};
use crate::helpers::TestDb;

fn key(raw: &str) -> ApiKeyRecord {
    ApiKeyRecord {
        id: format!("k_{raw}"),
        org_id: org(),
        role: Role::Admin,
        name: None,
        hash: ApiKey::from_raw(raw).hash(),
        created: Timestamp::now(),
        revoked: None,
    }
}

#[tokio::test]
async fn keys_are_found_by_hash_and_a_revoked_key_stays_revoked() {
    let db = TestDb::new().await;
    let s = store(&db).await;
    s.ensure_org(&org(), Timestamp::now()).await.expect("org");
    let k = key("first-key-0123456789");
    s.insert_api_key(&k).await.expect("insert");
    assert!(matches!(
        s.insert_api_key(&k).await,
        Err(StoreError::Conflict(_))
    ));
    let found = s.find_api_key(&k.hash).await.expect("find").expect("found");
    assert_eq!(found.id, k.id);
    assert_eq!(s.count_active_api_keys().await.expect("count"), 1);
    s.revoke_api_key(&org(), &k.id, Timestamp::now())
        .await
        .expect("revoke");
    let found = s.find_api_key(&k.hash).await.expect("find").expect("found");
    assert!(
        found.revoked.is_some(),
        "a revoked key was served from a cache"
    );
    assert!(matches!(
        s.insert_api_key_if_absent(&k).await.expect("if absent"),
        KeyInsert::Existed(r) if r.revoked.is_some()
    ));
    let fresh = key("second-key-0123456789");
    assert!(matches!(
        s.insert_api_key_if_absent(&fresh).await.expect("if absent"),
        KeyInsert::Inserted
    ));
    assert_eq!(s.list_api_keys(&org()).await.expect("list").len(), 2);
    assert!(matches!(
        s.revoke_api_key(&org(), "k_nope", Timestamp::now()).await,
        Err(StoreError::NotFound)
    ));
}

#[tokio::test]
async fn the_catalog_starts_with_fullstorys_types_and_pages_subcategories() {
    let db = TestDb::new().await;
    let s = store(&db).await;
    s.ensure_org(&org(), Timestamp::now()).await.expect("org");
    let types = s.list_event_types(&org()).await.expect("types");
    assert_eq!(types.len(), 6);
    assert_eq!(types[0].name, "note.created");
    let custom = EventTypeRecord::new("invoice.paid".into(), "Invoice paid".into(), true);
    s.create_event_type(&org(), &custom, Timestamp::now())
        .await
        .expect("create");
    assert!(matches!(
        s.create_event_type(&org(), &custom, Timestamp::now()).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        s.list_event_types(&org()).await.expect("types").len(),
        7,
        "the cached catalog was not refreshed"
    );
    for i in 0..5 {
        s.create_subcategory(
            &org(),
            "invoice.paid",
            &format!("tok{i}"),
            Some("name"),
            Timestamp::now(),
        )
        .await
        .expect("subcategory");
    }
    assert!(s
        .subcategory_exists(&org(), "invoice.paid", "tok3")
        .await
        .expect("exists"));
    assert!(!s
        .subcategory_exists(&org(), "invoice.paid", "nope")
        .await
        .expect("exists"));
    let first = s
        .list_subcategories(&org(), "invoice.paid", None, 3)
        .await
        .expect("page");
    assert_eq!(first.items.len(), 3);
    let rest = s
        .list_subcategories(&org(), "invoice.paid", first.next_after, 3)
        .await
        .expect("page");
    assert_eq!(rest.items.len(), 2);
    assert!(rest.next_after.is_none());
}

#[tokio::test]
async fn endpoints_keep_their_subscriptions_and_uid_across_a_url_change() {
    let db = TestDb::new().await;
    let s = store(&db).await;
    s.ensure_org(&org(), Timestamp::now()).await.expect("org");
    let subs = vec![EventTypeRef {
        event_name: "note.created".into(),
        subcategory: None,
    }];
    let new = NewEndpoint {
        org_id: org(),
        url: "https://example.com/a".into(),
        event_types: subs.clone(),
        sealed_secret: vec![9],
        sealed_headers: Some(vec![7, 7]),
        flow: Default::default(),
        enabled: true,
        now: Timestamp::now(),
    };
    let created = s.create_endpoint(&new).await.expect("create");
    assert_eq!(created.event_types, subs);
    assert_eq!(created.sealed_headers, Some(vec![7, 7]));
    assert!(matches!(
        s.create_endpoint(&new).await,
        Err(StoreError::Conflict(_))
    ));
    let patch = EndpointPatch {
        url: Some("https://example.com/b".into()),
        event_types: Some(Vec::new()),
        sealed_secret: None,
        sealed_headers: None,
        flow: Default::default(),
        enabled: false,
        now: Timestamp::now(),
    };
    let updated = s
        .update_endpoint(&org(), "https://example.com/a", &patch)
        .await
        .expect("update");
    assert_eq!(updated.uid, created.uid);
    assert_eq!(
        updated.sealed_headers,
        Some(vec![7, 7]),
        "absent: unchanged"
    );
    let cleared = EndpointPatch {
        url: None,
        sealed_headers: Some(None),
        ..patch.clone()
    };
    let updated = s
        .update_endpoint(&org(), "https://example.com/b", &cleared)
        .await
        .expect("clear the headers");
    assert_eq!(updated.sealed_headers, None);
    assert!(!updated.enabled && updated.event_types.is_empty());
    assert!(matches!(
        s.get_endpoint(&org(), "https://example.com/a").await,
        Err(StoreError::NotFound)
    ));
    s.rotate_secret(
        &org(),
        "https://example.com/b",
        &[7],
        Timestamp::from_millis(i64::MAX / 2),
        Timestamp::now(),
    )
    .await
    .expect("rotate");
    let rotated = s
        .get_endpoint(&org(), "https://example.com/b")
        .await
        .expect("get");
    assert_eq!(rotated.sealed_secret, vec![7]);
    assert_eq!(rotated.old_secret.map(|(old, _)| old), Some(vec![9]));
    let page = s.list_endpoints(&org(), None, 10).await.expect("list");
    assert_eq!(page.items.len(), 1);
    s.delete_endpoint(&org(), "https://example.com/b", Timestamp::now())
        .await
        .expect("delete");
    assert!(s
        .list_endpoints(&org(), None, 10)
        .await
        .expect("list")
        .items
        .is_empty());
    assert!(matches!(
        s.delete_endpoint(&org(), "https://example.com/b", Timestamp::now())
            .await,
        Err(StoreError::NotFound)
    ));
}
