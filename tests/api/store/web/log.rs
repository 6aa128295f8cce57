//! The org-wide delivery log: order, keyset pages, filters, the scan bound, indexes.

use super::*;

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
