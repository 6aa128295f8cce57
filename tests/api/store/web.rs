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

#[tokio::test]
async fn the_org_log_is_newest_first_filtered_paginated_and_only_the_orgs() {
    let db = TestDb::new().await;
    let s = store(&db).await;
    let a = endpoints(&s, 2).await;
    let b = endpoint_of(&s, &other_org(), "https://example.com/other").await;
    let (t1, t2) = (
        Timestamp::from_millis(Timestamp::now().millis() - 7_200_000),
        Timestamp::from_millis(Timestamp::now().millis() - 3_600_000),
    );
    // Interleaved with the other org's, so its ids fall between ours.
    publish_at(&s, &org(), "note.created", 2, t1).await;
    publish_at(&s, &other_org(), "note.created", 2, t1).await;
    publish_at(&s, &org(), "invoice.paid", 1, t2).await;
    publish_at(&s, &other_org(), "invoice.paid", 1, t2).await;
    publish_at(&s, &org(), "note.created", 1, t2).await;
    let got = claim(&s, 100, Duration::from_secs(60)).await;
    assert_eq!(got.len(), 2 * 4 + 3);
    // The first endpoint's deliveries fail, everything else is delivered.
    let records: Vec<_> = got
        .iter()
        .map(|c| {
            outcome(
                c,
                if c.endpoint.uid == a[0] {
                    Outcome::Failed
                } else {
                    Outcome::Delivered
                },
            )
        })
        .collect();
    s.record_attempts(Arc::from(records), Timestamp::now(), POLICY)
        .await
        .expect("record");
    // A deleted endpoint's deliveries stay in the log.
    s.delete_endpoint(&org(), "https://example.com/hook/1", Timestamp::now())
        .await
        .expect("delete");

    let mut all = endpoint_log(&s, &org(), a[0]).await;
    all.extend(endpoint_log(&s, &org(), a[1]).await);
    all.sort_by_key(|d| std::cmp::Reverse(d.id));
    assert_eq!(all.len(), 8);
    let theirs = ids(&endpoint_log(&s, &other_org(), b).await);
    assert_eq!(theirs.len(), 3);

    let filter = |limit| OrgDeliveryFilter {
        limit,
        ..Default::default()
    };
    let everything = s
        .list_org_deliveries(&org(), &filter(100))
        .await
        .expect("org log");
    assert_eq!(ids(&everything.items), ids(&all), "newest first, only ours");
    assert!(everything.next_after.is_none());
    assert!(everything
        .items
        .iter()
        .any(|d| d.endpoint_deleted && d.endpoint_url == "https://example.com/hook/1"));
    let other = s
        .list_org_deliveries(&other_org(), &filter(100))
        .await
        .expect("org log");
    assert_eq!(ids(&other.items), theirs);

    // Pages of three by `before`.
    let mut paged = Vec::new();
    let mut before = None;
    loop {
        let page = s
            .list_org_deliveries(
                &org(),
                &OrgDeliveryFilter {
                    before,
                    ..filter(3)
                },
            )
            .await
            .expect("page");
        assert!(page.items.len() <= 3);
        paged.extend(ids(&page.items));
        match page.next_after {
            Some(position) => {
                assert_eq!(Some(&position), paged.last());
                before = Some(position);
            }
            None => break,
        }
    }
    assert_eq!(paged, ids(&all));

    // A filtered page looks through at most `scan` deliveries: short pages name where
    // to go on from, and following them finds every match exactly once.
    let failed_all = expected(&all, |d| d.state == DeliveryState::Failed);
    let mut found = Vec::new();
    let mut before = None;
    let mut short = 0;
    for _ in 0..20 {
        let page = s
            .list_org_deliveries(
                &org(),
                &OrgDeliveryFilter {
                    state: Some(DeliveryState::Failed),
                    before,
                    scan: 3,
                    ..filter(2)
                },
            )
            .await
            .expect("scanned page");
        assert!(page.items.len() <= 2);
        if page.items.len() < 2 && page.next_after.is_some() {
            short += 1;
        }
        found.extend(ids(&page.items));
        match page.next_after {
            Some(position) => before = Some(position),
            None => break,
        }
    }
    assert_eq!(found, failed_all);
    assert!(short > 0, "some page was cut by the scan bound");
    // Unfiltered, the bound does not apply.
    let unbounded = s
        .list_org_deliveries(
            &org(),
            &OrgDeliveryFilter {
                scan: 1,
                ..filter(100)
            },
        )
        .await
        .expect("unfiltered");
    assert_eq!(ids(&unbounded.items), ids(&all));
    assert!(unbounded.next_after.is_none());

    // Filters.
    let failed = org_log(
        &s,
        OrgDeliveryFilter {
            state: Some(DeliveryState::Failed),
            ..filter(100)
        },
    )
    .await;
    assert_eq!(
        ids(&failed),
        expected(&all, |d| d.endpoint_url == "https://example.com/hook/0")
    );
    assert!(failed.iter().all(|d| d.state == DeliveryState::Failed));
    let invoices = org_log(
        &s,
        OrgDeliveryFilter {
            event_name: Some("invoice.paid".into()),
            ..filter(100)
        },
    )
    .await;
    assert_eq!(
        ids(&invoices),
        expected(&all, |d| d.event_name == "invoice.paid")
    );
    assert_eq!(invoices.len(), 2);
    let second = org_log(
        &s,
        OrgDeliveryFilter {
            endpoint: Some(a[1]),
            ..filter(100)
        },
    )
    .await;
    assert_eq!(ids(&second), ids(&endpoint_log(&s, &org(), a[1]).await));
    assert_eq!(second.len(), 4);
    let second_failed = org_log(
        &s,
        OrgDeliveryFilter {
            endpoint: Some(a[1]),
            state: Some(DeliveryState::Failed),
            ..filter(100)
        },
    )
    .await;
    assert!(second_failed.is_empty());
    assert!(
        org_log(
            &s,
            OrgDeliveryFilter {
                endpoint: Some(b),
                ..filter(100)
            }
        )
        .await
        .is_empty(),
        "another org's endpoint"
    );
    let since = org_log(
        &s,
        OrgDeliveryFilter {
            since: Some(t2),
            ..filter(100)
        },
    )
    .await;
    assert_eq!(ids(&since), expected(&all, |d| d.created >= t2));
    assert_eq!(since.len(), 4);
    let until = org_log(
        &s,
        OrgDeliveryFilter {
            until: Some(t2),
            ..filter(100)
        },
    )
    .await;
    assert_eq!(ids(&until), expected(&all, |d| d.created < t2));
    assert_eq!(until.len(), 4);
    let combined = org_log(
        &s,
        OrgDeliveryFilter {
            endpoint: Some(a[0]),
            event_name: Some("note.created".into()),
            since: Some(t1),
            until: Some(Timestamp::from_millis(t2.millis() + 1)),
            before: Some(all[0].id.0),
            ..filter(100)
        },
    )
    .await;
    assert_eq!(
        ids(&combined),
        expected(&all[1..], |d| d.endpoint_url
            == "https://example.com/hook/0"
            && d.event_name == "note.created")
    );
    assert_eq!(combined.len(), 3);
}

#[tokio::test]
async fn the_org_log_reads_by_index() {
    if Backend::of_suite() != Backend::Sqlite {
        return;
    }
    let db = TestDb::new().await;
    let _s = store(&db).await;
    let conn = rusqlite::Connection::open(db.dir.path().join("test.db")).expect("open");
    let plan = |sql: &str, n: usize| -> String {
        let mut stmt = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .expect("prepare");
        let values: Vec<rusqlite::types::Value> = (0..n).map(|i| (i as i64).into()).collect();
        let rows = stmt
            .query_map(rusqlite::params_from_iter(values), |r| {
                r.get::<_, String>(3)
            })
            .expect("plan");
        rows.map(|r| r.expect("row")).collect::<Vec<_>>().join("; ")
    };
    // The statements of `store/sqlite/web.rs`, as it builds them.
    let page = |position: &str| {
        format!(
            "SELECT d.id FROM deliveries d JOIN events ev ON ev.seq = d.event_seq \
             JOIN endpoints e ON e.uid = d.endpoint_uid WHERE {position} \
             AND (?3 IS NULL OR d.state = ?3) AND (?4 IS NULL OR ev.event_name = ?4) \
             AND d.created_ms >= ?5 AND d.created_ms < ?6 ORDER BY d.id DESC LIMIT ?7"
        )
    };
    let by_index = |found: &str, index: &str| {
        assert!(
            found.contains(index)
                && !found.contains("SCAN d")
                && !found.contains("SCAN deliveries"),
            "{found}"
        );
    };
    by_index(
        &plan(
            &page("d.org_id = ?1 AND ?2 IS NULL AND d.id < ?8 AND ?9 >= 0"),
            9,
        ),
        "USING INDEX deliveries_org (org_id=? AND id<?)",
    );
    by_index(
        &plan(
            &page("d.endpoint_uid = ?2 AND +d.org_id = ?1 AND d.id < ?8 AND ?9 >= 0"),
            9,
        ),
        "(endpoint_uid=? AND id<?)",
    );
    by_index(
        &plan(
            &page(
                "d.id IN (SELECT id FROM deliveries WHERE org_id = ?1 AND ?2 IS NULL AND id < ?8 \
                 ORDER BY id DESC LIMIT ?9) AND +d.org_id = ?1",
            ),
            9,
        ),
        "COVERING INDEX deliveries_org (org_id=? AND id<?)",
    );
    by_index(
        &plan(
            &page(
                "d.id IN (SELECT id FROM deliveries WHERE endpoint_uid = ?2 AND ?1 IS NOT NULL \
                 AND id < ?8 ORDER BY id DESC LIMIT ?9) AND +d.org_id = ?1",
            ),
            9,
        ),
        "COVERING INDEX deliveries_endpoint (endpoint_uid=? AND id<?)",
    );
    by_index(
        &plan(
            "SELECT COUNT(*) FROM deliveries WHERE org_id = ?1 AND endpoint_uid = ?2 \
             AND state = 'failed' AND created_ms >= ?3 AND created_ms < ?4",
            4,
        ),
        "deliveries_failed",
    );
}

fn bucket(start: i64, delivered: u64, failed: u64) -> BucketCounts {
    BucketCounts {
        start: Timestamp::from_millis(start),
        delivered,
        failed,
    }
}

#[tokio::test]
async fn the_series_is_per_endpoint_or_summed_over_the_org() {
    let db = TestDb::new().await;
    let s = store(&db).await;
    let a = endpoints(&s, 2).await;
    let b = endpoint_of(&s, &other_org(), "https://example.com/other").await;
    publish_at(&s, &org(), "note.created", 2, Timestamp::now()).await;
    publish_at(&s, &other_org(), "note.created", 2, Timestamp::now()).await;
    let mut got = claim(&s, 100, Duration::from_secs(60)).await;
    assert_eq!(got.len(), 6);
    got.sort_by_key(|c| c.delivery);
    let now = Timestamp::now().millis() - 3_600_000;
    let b0 = now - now.rem_euclid(STATS_BUCKET_MS);
    let (b1, b2) = (b0 + STATS_BUCKET_MS, b0 + 2 * STATS_BUCKET_MS);
    // (endpoint, which of its deliveries, outcome, bucket)
    let plan = [
        (a[0], 0, Outcome::Delivered, b0),
        (a[0], 1, Outcome::Failed, b1),
        (a[1], 0, Outcome::Failed, b0),
        (a[1], 1, Outcome::Delivered, b2),
        (b, 0, Outcome::Delivered, b0),
        (b, 1, Outcome::Failed, b1),
    ];
    for (uid, nth, result, at) in plan {
        let c = got
            .iter()
            .filter(|c| c.endpoint.uid == uid)
            .nth(nth)
            .expect("claimed");
        s.record_attempts(
            Arc::from(vec![outcome(c, result)]),
            Timestamp::from_millis(at + 1_000),
            POLICY,
        )
        .await
        .expect("record");
    }
    let series = |endpoint: Option<EndpointUid>, from: i64, until: i64| {
        let s = s.clone();
        async move {
            s.stats_series(
                &org(),
                endpoint,
                Timestamp::from_millis(from),
                Timestamp::from_millis(until),
            )
            .await
            .expect("series")
        }
    };
    let end = b0 + 3 * STATS_BUCKET_MS;
    assert_eq!(
        series(Some(a[0]), b0, end).await,
        vec![bucket(b0, 1, 0), bucket(b1, 0, 1)]
    );
    assert_eq!(
        series(Some(a[1]), b0, end).await,
        vec![bucket(b0, 0, 1), bucket(b2, 1, 0)]
    );
    assert_eq!(
        series(None, b0, end).await,
        vec![bucket(b0, 1, 1), bucket(b1, 0, 1), bucket(b2, 1, 0)],
        "summed over the org's endpoints only"
    );
    assert_eq!(series(None, b1, b2).await, vec![bucket(b1, 0, 1)]);
    assert!(series(None, end, end + STATS_BUCKET_MS).await.is_empty());
    assert!(
        series(Some(b), b0, end).await.is_empty(),
        "another org's endpoint"
    );
    let theirs = s
        .stats_series(
            &other_org(),
            None,
            Timestamp::from_millis(b0),
            Timestamp::from_millis(end),
        )
        .await
        .expect("series");
    assert_eq!(theirs, vec![bucket(b0, 1, 0), bucket(b1, 0, 1)]);
}

#[tokio::test]
async fn count_failed_is_what_recover_failed_queues() {
    let db = TestDb::new().await;
    let s = store(&db).await;
    let uid = endpoints(&s, 1).await[0];
    let b = endpoint_of(&s, &other_org(), "https://example.com/other").await;
    let now = Timestamp::now().millis();
    let (t1, t2, t3) = (
        Timestamp::from_millis(now - 3_000_000),
        Timestamp::from_millis(now - 2_000_000),
        Timestamp::from_millis(now - 1_000_000),
    );
    publish_at(&s, &org(), "note.created", 3, t1).await;
    publish_at(&s, &org(), "note.created", 2, t2).await;
    publish_at(&s, &org(), "note.created", 1, t3).await;
    publish_at(&s, &other_org(), "note.created", 2, t1).await;
    let mut got = claim(&s, 100, Duration::from_secs(60)).await;
    got.sort_by_key(|c| c.delivery);
    assert_eq!(got.len(), 8);
    // One of ours delivered (the first), every other one failed.
    let records: Vec<_> = got
        .iter()
        .enumerate()
        .map(|(i, c)| {
            outcome(
                c,
                if i == 0 {
                    Outcome::Delivered
                } else {
                    Outcome::Failed
                },
            )
        })
        .collect();
    s.record_attempts(Arc::from(records), Timestamp::now(), POLICY)
        .await
        .expect("record");

    assert_eq!(
        s.count_failed(&other_org(), uid, t1, None)
            .await
            .expect("count"),
        0,
        "another org's endpoint"
    );
    assert_eq!(
        s.count_failed(&org(), b, t1, None).await.expect("count"),
        0,
        "another org's endpoint"
    );
    assert_eq!(
        s.count_failed(&other_org(), b, t1, None)
            .await
            .expect("count"),
        2
    );
    assert_eq!(
        s.count_failed(&org(), uid, t1, Some(t1))
            .await
            .expect("count"),
        0,
        "an empty range"
    );
    let counted = s
        .count_failed(&org(), uid, t1, Some(t3))
        .await
        .expect("count");
    assert_eq!(counted, 4, "t1's and t2's failed ones, not t3's");
    let queued = s
        .recover_failed(&org(), uid, t1, Some(t3), Timestamp::now())
        .await
        .expect("recover");
    assert_eq!(queued, counted);
    assert_eq!(
        s.count_failed(&org(), uid, t1, Some(t3))
            .await
            .expect("count"),
        0
    );
    let counted = s.count_failed(&org(), uid, t1, None).await.expect("count");
    assert_eq!(counted, 1);
    let queued = s
        .recover_failed(&org(), uid, t1, None, Timestamp::now())
        .await
        .expect("recover");
    assert_eq!(queued, counted);
    assert_eq!(
        s.count_failed(&other_org(), b, t1, None)
            .await
            .expect("count"),
        2,
        "the other org's stay failed"
    );
}
