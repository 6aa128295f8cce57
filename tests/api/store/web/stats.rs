//! Statistics as a series, and the failed count that recovery's confirmation shows.

use super::*;

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
