//! The web console's and portal's store: sessions (a grant's revocation ends the
//! sessions made from it), the org-wide delivery log (newest first, keyset paginated,
//! never another org's), the statistics as a series, and the count of failed
//! deliveries a recovery would queue.

use std::sync::Arc;
use std::time::Duration;

use posthorn::domain::{DeliveryState, EndpointUid, EventId, KeyHash, OrgId, Timestamp};
use posthorn::store::{
    BucketCounts, DeliveryFilter, DeliveryRecord, DynStore, NewEndpoint, NewEvent,
    OrgDeliveryFilter, Outcome, PublishBatch, StoreError, WebSessionKind, WebSessionRecord,
    STATS_BUCKET_MS,
};

use super::{claim, endpoints, org, outcome, store, POLICY};
use crate::helpers::{Backend, TestDb};

mod log;
mod stats;

fn other_org() -> OrgId {
    OrgId::parse("o-other").expect("org")
}

fn hash(n: u8) -> KeyHash {
    KeyHash([n; 32])
}

fn session(n: u8, kind: WebSessionKind, grant: Option<u8>) -> WebSessionRecord {
    WebSessionRecord {
        hash: hash(n),
        org_id: org(),
        kind,
        capabilities: "read,retry".into(),
        read_only: kind != WebSessionKind::Console,
        csrf: format!("csrf-{n}"),
        key_hash: (kind == WebSessionKind::Console).then(|| hash(200)),
        grant_hash: grant.map(hash),
        created: Timestamp::from_millis(1_000),
        expires: Timestamp::from_millis(2_000),
        revoked: None,
    }
}

#[tokio::test]
async fn sessions_are_found_by_hash_revoked_with_their_grant_and_pruned() {
    let db = TestDb::new().await;
    let s = store(&db).await;
    let grant = session(1, WebSessionKind::PortalGrant, None);
    let made = [
        session(2, WebSessionKind::Portal, Some(1)),
        session(3, WebSessionKind::Portal, Some(1)),
    ];
    let console = session(4, WebSessionKind::Console, None);
    let unrelated = session(5, WebSessionKind::Portal, Some(9));
    for one in [&grant, &made[0], &made[1], &console, &unrelated] {
        s.insert_web_session(one).await.expect("insert");
    }
    assert!(matches!(
        s.insert_web_session(&grant).await,
        Err(StoreError::Conflict(_))
    ));
    let found = s
        .find_web_session(&hash(4))
        .await
        .expect("find")
        .expect("found");
    assert_eq!(found.org_id, org());
    assert_eq!(found.kind, WebSessionKind::Console);
    assert_eq!(found.capabilities, "read,retry");
    assert!(!found.read_only);
    assert_eq!(found.csrf, "csrf-4");
    assert!(found.key_hash == Some(hash(200)) && found.grant_hash.is_none());
    assert_eq!(found.created, Timestamp::from_millis(1_000));
    assert_eq!(found.expires, Timestamp::from_millis(2_000));
    assert!(found.revoked.is_none());
    let portal = s
        .find_web_session(&hash(2))
        .await
        .expect("find")
        .expect("found");
    assert!(portal.read_only && portal.grant_hash == Some(hash(1)) && portal.key_hash.is_none());
    assert!(s.find_web_session(&hash(77)).await.expect("find").is_none());

    s.revoke_web_session(&hash(1), Timestamp::from_millis(1_500))
        .await
        .expect("revoke");
    for n in [1, 2, 3] {
        let r = s.find_web_session(&hash(n)).await.expect("find");
        assert_eq!(
            r.expect("a revoked session is still found").revoked,
            Some(Timestamp::from_millis(1_500)),
            "session {n}"
        );
    }
    for n in [4, 5] {
        let r = s.find_web_session(&hash(n)).await.expect("find");
        assert!(
            r.expect("found").revoked.is_none(),
            "session {n} was revoked"
        );
    }
    // Revoked already: the first revocation's time stays; unknown: not an error.
    s.revoke_web_session(&hash(2), Timestamp::from_millis(1_800))
        .await
        .expect("revoke again");
    s.revoke_web_session(&hash(77), Timestamp::from_millis(1_800))
        .await
        .expect("revoke unknown");
    let r = s.find_web_session(&hash(2)).await.expect("find");
    assert_eq!(
        r.expect("found").revoked,
        Some(Timestamp::from_millis(1_500))
    );
    // A portal session alone: its grant and siblings stay as they are.
    s.revoke_web_session(&hash(5), Timestamp::from_millis(1_900))
        .await
        .expect("revoke");
    let r = s.find_web_session(&hash(5)).await.expect("find");
    assert_eq!(
        r.expect("found").revoked,
        Some(Timestamp::from_millis(1_900))
    );

    // Pruning: at 1,950 ms the revoked ones go, the live console session stays; once
    // it has expired it goes too.
    assert_eq!(
        s.prune_web_sessions(Timestamp::from_millis(1_950))
            .await
            .expect("prune"),
        4
    );
    for n in [1, 2, 3, 5] {
        assert!(s.find_web_session(&hash(n)).await.expect("find").is_none());
    }
    assert!(s.find_web_session(&hash(4)).await.expect("find").is_some());
    assert_eq!(
        s.prune_web_sessions(Timestamp::from_millis(2_001))
            .await
            .expect("prune"),
        1
    );
    assert!(s.find_web_session(&hash(4)).await.expect("find").is_none());
}

async fn endpoint_of(s: &DynStore, org: &OrgId, url: &str) -> EndpointUid {
    s.ensure_org(org, Timestamp::now()).await.expect("org");
    s.create_endpoint(&NewEndpoint {
        org_id: org.clone(),
        url: url.into(),
        event_types: Vec::new(),
        sealed_secret: vec![1, 2, 3],
        sealed_headers: None,
        flow: Default::default(),
        enabled: true,
        now: Timestamp::now(),
    })
    .await
    .expect("endpoint")
    .uid
}

/// Publishes `n` events named `name` in `org`, as if at `now`.
async fn publish_at(s: &DynStore, org: &OrgId, name: &str, n: usize, now: Timestamp) {
    let events: Vec<NewEvent> = (0..n)
        .map(|_| NewEvent {
            id: EventId::generate(now),
            org_id: org.clone(),
            event_name: name.into(),
            subcategory: None,
            body: format!(r#"{{"eventName":"{name}","version":1,"data":{{}}}}"#)
                .into_bytes()
                .into(),
            idempotency_key: None,
        })
        .collect();
    s.publish(PublishBatch {
        events: events.into(),
        now,
        idempotency_window_ms: 0,
        lease: None,
    })
    .await
    .expect("publish");
}

/// Every delivery of the endpoint, newest first, by the per-endpoint log.
async fn endpoint_log(s: &DynStore, org: &OrgId, uid: EndpointUid) -> Vec<DeliveryRecord> {
    s.list_deliveries(
        org,
        uid,
        &DeliveryFilter {
            limit: 1000,
            ..Default::default()
        },
    )
    .await
    .expect("list")
    .items
}

async fn org_log(s: &DynStore, filter: OrgDeliveryFilter) -> Vec<DeliveryRecord> {
    s.list_org_deliveries(&org(), &filter)
        .await
        .expect("org log")
        .items
}

fn ids(items: &[DeliveryRecord]) -> Vec<i64> {
    items.iter().map(|d| d.id.0).collect()
}

/// What `all` (newest first) has that `keep` keeps.
fn expected(all: &[DeliveryRecord], keep: impl Fn(&DeliveryRecord) -> bool) -> Vec<i64> {
    all.iter().filter(|d| keep(d)).map(|d| d.id.0).collect()
}
