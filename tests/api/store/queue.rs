//! The queue: claims are exclusive and bounded, leases end, stale outcomes are ignored,
//! publishes hand leased work over within the budget, and retry, recover, release,
//! park and prune move what they say.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use posthorn::domain::{ClaimToken, DeliveryState, EndpointUid, Timestamp};
use posthorn::store::{FreshLease, HealthPolicy, LeaseBudget, Outcome, PublishBatch};

use super::{
    at, claim, claim_request, endpoints, event, ids, org, outcome, publish, record, store, DAY,
};
use crate::helpers::TestDb;

#[tokio::test]
async fn concurrent_claimers_never_share_a_delivery() {
    let db = TestDb::new().await;
    let (a, b) = (store(&db).await, store(&db).await);
    endpoints(&a, 4).await;
    let published = publish(&a, (0..150).map(|_| event(None)).collect(), 0).await;
    assert!(published.iter().all(|p| p.deliveries == 4));
    let claimer = |s: posthorn::store::DynStore| {
        tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let c = claim(&s, 37, Duration::from_secs(60)).await;
                if c.is_empty() {
                    return got;
                }
                got.extend(c.into_iter().map(|c| c.delivery));
            }
        })
    };
    let (ga, gb) = (claimer(a.clone()), claimer(b.clone()));
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
    endpoints(&s, 1).await;
    publish(&s, vec![event(None)], 0).await;
    let first = claim(&s, 10, Duration::from_millis(50)).await;
    assert_eq!(first.len(), 1);
    assert!(
        claim(&s, 10, Duration::from_secs(60)).await.is_empty(),
        "claimed while leased"
    );
    tokio::time::sleep(Duration::from_millis(120)).await;
    let second = claim(&s, 10, Duration::from_secs(60)).await;
    assert_eq!(second.len(), 1, "an expired lease is due again");
    // The first claimer's late outcome must not override the live claim.
    record(&s, vec![outcome(&first[0], Outcome::Delivered)]).await;
    assert_eq!(
        s.pending_count().await.expect("count"),
        1,
        "a stale claim token changed the delivery"
    );
    record(&s, vec![outcome(&second[0], Outcome::Delivered)]).await;
    assert_eq!(s.pending_count().await.expect("count"), 0);
    let attempts = s
        .list_attempts(&org(), second[0].delivery)
        .await
        .expect("attempts");
    assert_eq!(attempts.len(), 2, "both attempts are in the log");
}

#[tokio::test]
async fn a_claim_respects_the_per_endpoint_limit_and_what_is_held() {
    let db = TestDb::new().await;
    let s = store(&db).await;
    let uids = endpoints(&s, 2).await;
    publish(&s, (0..20).map(|_| event(None)).collect(), 0).await;
    let mut req = claim_request(100, 5, Duration::from_secs(60));
    req.held = vec![(uids[0], 5), (uids[1], 2)];
    let got = s.claim_due(&req).await.expect("claim");
    assert!(
        got.iter().all(|c| c.endpoint.uid == uids[1]),
        "a full endpoint got more"
    );
    assert_eq!(got.len(), 3, "5 allowed, 2 held");
    let got = s
        .claim_due(&claim_request(100, 5, Duration::from_secs(60)))
        .await
        .expect("claim");
    assert_eq!(got.len(), 10, "5 per endpoint");
    assert!(got.iter().all(|c| c.endpoint.live && c.attempts == 0));
}

#[tokio::test]
async fn release_makes_claimed_work_due_at_once() {
    let db = TestDb::new().await;
    let s = store(&db).await;
    endpoints(&s, 1).await;
    publish(&s, vec![event(None), event(None)], 0).await;
    let got = claim(&s, 10, Duration::from_secs(600)).await;
    assert_eq!(got.len(), 2);
    s.release(got[0].token, vec![got[0].delivery], Timestamp::now())
        .await
        .expect("release");
    let again = claim(&s, 10, Duration::from_secs(600)).await;
    assert_eq!(ids(&again), vec![got[0].delivery]);
}

#[tokio::test]
async fn an_idempotency_key_answers_like_its_first_use_within_the_window() {
    let db = TestDb::new().await;
    let s = store(&db).await;
    endpoints(&s, 2).await;
    let window = 60_000;
    let first = publish(&s, vec![event(Some("k"))], window).await;
    // Again, and twice more inside one group.
    let again = publish(
        &s,
        vec![event(Some("k")), event(Some("other")), event(Some("other"))],
        window,
    )
    .await;
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
    let later = s
        .publish(PublishBatch {
            events: vec![event(Some("k"))].into(),
            now: at(window + 1),
            idempotency_window_ms: window,
            lease: None,
        })
        .await
        .expect("publish")
        .answers;
    assert_ne!(later[0].id, first[0].id);
    assert_eq!(later[0].deliveries, 2);
}

/// A budget that allows `n` deliveries and remembers what was given back.
struct Allow {
    left: AtomicU32,
    given_back: Mutex<Vec<EndpointUid>>,
}

impl LeaseBudget for Allow {
    fn try_take(&self, _: EndpointUid) -> bool {
        self.left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    fn give_back(&self, endpoint: EndpointUid) {
        self.given_back.lock().expect("lock").push(endpoint);
    }
}

#[tokio::test]
async fn a_publish_leases_what_the_budget_allows_and_leaves_the_rest_due() {
    let db = TestDb::new().await;
    let s = store(&db).await;
    let uids = endpoints(&s, 3).await;
    let budget = Arc::new(Allow {
        left: AtomicU32::new(4),
        given_back: Mutex::default(),
    });
    let token = ClaimToken::generate();
    let result = s
        .publish(PublishBatch {
            events: vec![event(None), event(None)].into(),
            now: Timestamp::now(),
            idempotency_window_ms: 0,
            lease: Some(FreshLease {
                token,
                until: at(60_000),
                budget: budget.clone(),
            }),
        })
        .await
        .expect("publish");
    assert_eq!(result.answers.iter().map(|p| p.deliveries).sum::<u64>(), 6);
    assert_eq!(result.leased.len(), 4, "as many as the budget allowed");
    for c in &result.leased {
        assert_eq!(c.token, token);
        assert!(uids.contains(&c.endpoint.uid) && c.endpoint.live);
        assert_eq!(
            &c.event.body[..],
            br#"{"eventName":"note.created","version":1,"data":{}}"#
        );
    }
    // The leased ones are not claimable; the two others are due now.
    let due = claim(&s, 100, Duration::from_secs(60)).await;
    assert_eq!(due.len(), 2);
    let leased: HashSet<_> = result.leased.iter().map(|c| c.delivery).collect();
    assert!(due.iter().all(|c| !leased.contains(&c.delivery)));
    // An outcome under the publish's token applies.
    record(&s, vec![outcome(&result.leased[0], Outcome::Delivered)]).await;
    let d = s
        .get_delivery(&org(), result.leased[0].delivery)
        .await
        .expect("delivery");
    assert_eq!(d.state, DeliveryState::Delivered);
    assert!(budget.given_back.lock().expect("lock").is_empty());
}

#[tokio::test]
async fn outcomes_move_deliveries_and_count_in_the_statistics() {
    let db = TestDb::new().await;
    let s = store(&db).await;
    let uid = endpoints(&s, 1).await[0];
    publish(&s, (0..3).map(|_| event(None)).collect(), 0).await;
    let got = claim(&s, 10, Duration::from_secs(60)).await;
    record(
        &s,
        vec![
            outcome(&got[0], Outcome::Delivered),
            outcome(&got[1], Outcome::Failed),
            outcome(&got[2], Outcome::Retry { at: at(3_600_000) }),
        ],
    )
    .await;
    let states: Vec<_> = futures_states(&s, &got).await;
    assert_eq!(
        states,
        vec![
            DeliveryState::Delivered,
            DeliveryState::Failed,
            DeliveryState::Pending
        ]
    );
    let retry = s
        .get_delivery(&org(), got[2].delivery)
        .await
        .expect("delivery");
    assert_eq!(retry.attempts, 1);
    assert!(retry.next_attempt.is_some_and(|t| t > Timestamp::now()));
    let stats = s
        .endpoint_stats(uid, &[at(-3_600_000), at(3_600_000)])
        .await
        .expect("stats");
    assert_eq!((stats[0].delivered, stats[0].failed), (1, 1));
    assert_eq!(
        (stats[1].delivered, stats[1].failed),
        (0, 0),
        "nothing finished in the future"
    );
    let endpoint = s
        .get_endpoint(&org(), "https://example.com/hook/0")
        .await
        .expect("endpoint");
    assert!(endpoint.last_success.is_some() && endpoint.last_failure.is_none());
}

async fn futures_states(
    s: &posthorn::store::DynStore,
    got: &[posthorn::store::Claimed],
) -> Vec<DeliveryState> {
    let mut out = Vec::new();
    for c in got {
        out.push(
            s.get_delivery(&org(), c.delivery)
                .await
                .expect("delivery")
                .state,
        );
    }
    out
}

#[tokio::test]
async fn an_endpoint_failing_for_too_long_is_disabled_and_its_work_is_not_live() {
    let db = TestDb::new().await;
    let s = store(&db).await;
    endpoints(&s, 1).await;
    publish(&s, vec![event(None), event(None)], 0).await;
    let got = claim(&s, 1, Duration::from_secs(60)).await;
    let mut failed = outcome(
        &got[0],
        Outcome::Retry {
            at: Timestamp::now(),
        },
    );
    failed.started = at(-10_000);
    s.record_attempts(
        Arc::from(vec![failed]),
        Timestamp::now(),
        HealthPolicy {
            disable_after: Duration::from_secs(5),
            recovered_after: Duration::from_secs(60),
        },
    )
    .await
    .expect("record");
    let endpoint = s
        .get_endpoint(&org(), "https://example.com/hook/0")
        .await
        .expect("endpoint");
    assert!(!endpoint.enabled);
    assert!(endpoint
        .disabled_reason
        .is_some_and(|r| r.contains("failed")));
    let rest = claim(&s, 10, Duration::from_secs(60)).await;
    assert_eq!(rest.len(), 2);
    assert!(
        rest.iter().all(|c| !c.endpoint.live),
        "work of a disabled endpoint is claimed as not live"
    );
}

#[tokio::test]
async fn retry_requeues_once_per_click_and_recover_only_failed_ones() {
    let db = TestDb::new().await;
    let s = store(&db).await;
    let uid = endpoints(&s, 1).await[0];
    publish(&s, (0..3).map(|_| event(None)).collect(), 0).await;
    let got = claim(&s, 10, Duration::from_secs(60)).await;
    // In flight: a retry does nothing.
    let r = s
        .retry_delivery(&org(), got[0].delivery, Timestamp::now())
        .await
        .expect("retry");
    assert_eq!(r.state, DeliveryState::Pending);
    assert!(
        claim(&s, 10, Duration::from_secs(60)).await.is_empty(),
        "a retry of an attempt in flight queued it"
    );
    record(
        &s,
        vec![
            outcome(&got[0], Outcome::Delivered),
            outcome(&got[1], Outcome::Failed),
            outcome(&got[2], Outcome::Failed),
        ],
    )
    .await;
    let r = s
        .retry_delivery(&org(), got[0].delivery, Timestamp::now())
        .await
        .expect("retry");
    assert_eq!(r.state, DeliveryState::Pending);
    let again = claim(&s, 10, Duration::from_secs(60)).await;
    assert_eq!(ids(&again), vec![got[0].delivery]);
    assert_eq!(again[0].retry_base, 1, "the retry schedule starts over");
    // A second click within the double-click window is the same click.
    record(&s, vec![outcome(&again[0], Outcome::Delivered)]).await;
    s.retry_delivery(&org(), got[0].delivery, Timestamp::now())
        .await
        .expect("retry");
    assert!(claim(&s, 10, Duration::from_secs(60)).await.is_empty());
    let queued = s
        .recover_failed(&org(), uid, at(-60_000), None, Timestamp::now())
        .await
        .expect("recover");
    assert_eq!(queued, 2, "only the failed ones");
    assert_eq!(
        s.recover_failed(&org(), uid, at(-60_000), None, Timestamp::now())
            .await
            .expect("recover"),
        0
    );
    assert_eq!(claim(&s, 10, Duration::from_secs(60)).await.len(), 2);
}

#[tokio::test]
async fn park_delays_an_endpoints_due_work_and_next_due_says_when() {
    let db = TestDb::new().await;
    let s = store(&db).await;
    let uids = endpoints(&s, 2).await;
    publish(&s, vec![event(None)], 0).await;
    let until = at(60_000);
    s.park_endpoint(uids[0], Timestamp::now(), until)
        .await
        .expect("park");
    let got = claim(&s, 10, Duration::from_secs(60)).await;
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].endpoint.uid, uids[1],
        "the parked endpoint's work waits"
    );
    assert_eq!(s.next_due().await.expect("next due"), Some(until));
}

#[tokio::test]
async fn prune_deletes_finished_history_and_keeps_pending_work() {
    let db = TestDb::new().await;
    let s = store(&db).await;
    endpoints(&s, 1).await;
    let events = publish(&s, vec![event(None), event(None)], 0).await;
    let got = claim(&s, 10, Duration::from_secs(60)).await;
    record(&s, vec![outcome(&got[0], Outcome::Delivered)]).await;
    assert_eq!(
        s.prune(at(-(DAY.as_millis() as i64)), 100)
            .await
            .expect("prune"),
        0,
        "nothing is old yet"
    );
    assert_eq!(s.prune(at(1_000), 100).await.expect("prune"), 1);
    let kept = s.pending_count().await.expect("count");
    assert_eq!(kept, 1, "pending work is never pruned");
    let gone: Vec<_> = events.iter().map(|p| p.id.clone()).collect();
    let mut found = 0;
    for id in &gone {
        found += usize::from(s.get_event(&org(), id).await.is_ok());
    }
    assert_eq!(
        found, 1,
        "the event left without deliveries went, the other stayed"
    );
}
