//! The store conformance suite: the queue's rules checked on the `Store` trait
//! directly, on whichever store this test binary runs (SQLite or PostgreSQL).

use std::collections::HashSet;
use std::time::Duration;

use posthorn::config::DatabaseArgs;
use posthorn::domain::{OrgId, Timestamp};
use posthorn::store::{
    AttemptRecord, ClaimRequest, DynStore, NewEndpoint, NewEvent, Outcome, Published,
};

use crate::api::helpers::TestDb;

const DAY_MS: i64 = 86_400_000;

async fn store(db: &TestDb) -> DynStore {
    posthorn::store::connect(&DatabaseArgs::new(db.url.clone()))
        .await
        .expect("store opens")
}

fn org() -> OrgId {
    OrgId::parse("o-store").expect("org")
}

/// An org with `n` endpoints that take every event; returns their uids.
async fn endpoints(store: &DynStore, n: usize) -> Vec<i64> {
    store
        .ensure_org(&org(), Timestamp::now())
        .await
        .expect("org");
    let mut uids = Vec::new();
    for i in 0..n {
        let e = store
            .create_endpoint(&NewEndpoint {
                org_id: org(),
                url: format!("https://example.com/hook/{i}"),
                event_types: Vec::new(),
                sealed_secret: vec![1, 2, 3],
                now: Timestamp::now(),
            })
            .await
            .expect("endpoint");
        uids.push(e.uid);
    }
    uids
}

fn event(i: usize, key: Option<&str>) -> NewEvent {
    NewEvent {
        id: format!("evt_store_{i}_{}", key.unwrap_or("")),
        org_id: org(),
        event_name: "note.created".into(),
        subcategory: None,
        body: br#"{"eventName":"note.created","version":1,"data":{}}"#.to_vec(),
        idempotency_key: key.map(str::to_owned),
    }
}

fn claim(token: &str, limit: u32, per_endpoint: u32, lease: Duration) -> ClaimRequest {
    let now = Timestamp::now();
    ClaimRequest {
        now,
        lease_until: Timestamp::from_millis(now.millis() + lease.as_millis() as i64),
        limit,
        per_endpoint,
        in_flight: Vec::new(),
        token: token.into(),
    }
}

fn outcome(delivery_id: i64, token: &str, endpoint_uid: i64, outcome: Outcome) -> AttemptRecord {
    AttemptRecord {
        delivery_id,
        claim_token: token.into(),
        attempt_no: Some(1),
        started: Timestamp::now(),
        latency_ms: 1,
        status_code: Some(200),
        error: None,
        error_class: None,
        response_body: None,
        outcome,
        endpoint_uid,
    }
}

#[tokio::test]
async fn concurrent_claimers_never_share_a_delivery() {
    let db = TestDb::new().await;
    let (a, b) = (store(&db).await, store(&db).await);
    endpoints(&a, 4).await;
    let events: Vec<_> = (0..150).map(|i| event(i, None)).collect();
    let published = a
        .publish(&events, Timestamp::now(), 0)
        .await
        .expect("publish");
    assert!(published.iter().all(|p| p.deliveries == 4));
    let claimer = |s: DynStore, name: &'static str| {
        tokio::spawn(async move {
            let mut got = Vec::new();
            for round in 0.. {
                let c = s
                    .claim_due(&claim(
                        &format!("{name}.{round}"),
                        37,
                        1000,
                        Duration::from_secs(60),
                    ))
                    .await
                    .expect("claim");
                if c.is_empty() {
                    return got;
                }
                got.extend(c.into_iter().map(|c| c.delivery_id));
            }
            got
        })
    };
    let (ga, gb) = (claimer(a.clone(), "a"), claimer(b.clone(), "b"));
    let (ga, gb) = (ga.await.expect("a"), gb.await.expect("b"));
    let (sa, sb): (HashSet<_>, HashSet<_>) = (ga.iter().collect(), gb.iter().collect());
    assert_eq!(sa.len(), ga.len(), "a claimed one delivery twice");
    assert!(sa.is_disjoint(&sb), "a delivery was claimed by both");
    assert_eq!(sa.len() + sb.len(), 600, "every delivery claimed once");
}

#[tokio::test]
async fn an_expired_lease_is_claimed_again_and_the_stale_outcome_is_ignored() {
    let db = TestDb::new().await;
    let s = store(&db).await;
    let uid = endpoints(&s, 1).await[0];
    s.publish(&[event(1, None)], Timestamp::now(), 0)
        .await
        .expect("publish");
    let first = s
        .claim_due(&claim("old", 10, 10, Duration::from_millis(50)))
        .await
        .expect("claim");
    assert_eq!(first.len(), 1);
    assert!(
        s.claim_due(&claim("early", 10, 10, Duration::from_secs(60)))
            .await
            .expect("claim")
            .is_empty(),
        "claimed while leased"
    );
    tokio::time::sleep(Duration::from_millis(120)).await;
    let second = s
        .claim_due(&claim("new", 10, 10, Duration::from_secs(60)))
        .await
        .expect("claim");
    assert_eq!(second.len(), 1, "an expired lease is due again");
    let id = second[0].delivery_id;
    // The first claimer's late outcome must not override the live claim.
    s.record_attempts(
        &[outcome(id, "old", uid, Outcome::Delivered)],
        Timestamp::now(),
        DAY_MS,
    )
    .await
    .expect("record");
    assert_eq!(
        s.pending_count().await.expect("count"),
        1,
        "a stale claim token changed the delivery"
    );
    s.record_attempts(
        &[outcome(id, "new", uid, Outcome::Delivered)],
        Timestamp::now(),
        DAY_MS,
    )
    .await
    .expect("record");
    assert_eq!(s.pending_count().await.expect("count"), 0);
    let attempts = s.list_attempts(&org(), id).await.expect("attempts");
    assert_eq!(attempts.len(), 2, "both attempts are in the log");
}

#[tokio::test]
async fn a_claim_respects_the_per_endpoint_limit_and_what_is_in_flight() {
    let db = TestDb::new().await;
    let s = store(&db).await;
    let uids = endpoints(&s, 2).await;
    let events: Vec<_> = (0..20).map(|i| event(i, None)).collect();
    s.publish(&events, Timestamp::now(), 0)
        .await
        .expect("publish");
    let mut req = claim("t1", 100, 5, Duration::from_secs(60));
    req.in_flight = vec![(uids[0], 5), (uids[1], 2)];
    let got = s.claim_due(&req).await.expect("claim");
    assert!(
        got.iter().all(|c| c.endpoint_uid == uids[1]),
        "a full endpoint got more"
    );
    assert_eq!(got.len(), 3, "5 allowed, 2 in flight");
    let got = s
        .claim_due(&claim("t2", 100, 5, Duration::from_secs(60)))
        .await
        .expect("claim");
    assert_eq!(got.len(), 10, "5 per endpoint");
}

#[tokio::test]
async fn release_makes_claimed_work_due_at_once() {
    let db = TestDb::new().await;
    let s = store(&db).await;
    endpoints(&s, 1).await;
    s.publish(&[event(1, None), event(2, None)], Timestamp::now(), 0)
        .await
        .expect("publish");
    let got = s
        .claim_due(&claim("t", 10, 10, Duration::from_secs(600)))
        .await
        .expect("claim");
    assert_eq!(got.len(), 2);
    s.release("t", &[got[0].delivery_id], Timestamp::now())
        .await
        .expect("release");
    let again = s
        .claim_due(&claim("u", 10, 10, Duration::from_secs(600)))
        .await
        .expect("claim");
    assert_eq!(
        again.iter().map(|c| c.delivery_id).collect::<Vec<_>>(),
        vec![got[0].delivery_id]
    );
}

#[tokio::test]
async fn an_idempotency_key_answers_like_its_first_use_within_the_window() {
    let db = TestDb::new().await;
    let s = store(&db).await;
    endpoints(&s, 2).await;
    let window = 60_000;
    let first = s
        .publish(&[event(1, Some("k"))], Timestamp::now(), window)
        .await
        .expect("publish");
    // Again, and twice more inside one group.
    let again = s
        .publish(
            &[
                event(2, Some("k")),
                event(3, Some("other")),
                event(4, Some("other")),
            ],
            Timestamp::now(),
            window,
        )
        .await
        .expect("publish");
    assert_eq!(again[0], first[0]);
    assert_eq!(again[1].deliveries, 2);
    assert_eq!(
        again[2], again[1],
        "a key repeated in one group is one event"
    );
    assert_eq!(
        s.pending_count().await.expect("count"),
        4,
        "two events, two endpoints"
    );
    // Outside the window the key starts a new event.
    let later = Timestamp::from_millis(Timestamp::now().millis() + window + 1);
    let fresh: Vec<Published> = s
        .publish(&[event(5, Some("k"))], later, window)
        .await
        .expect("publish");
    assert_ne!(fresh[0].id, first[0].id);
}
