//! Work held by a node that goes away: taken over after a SIGKILL (nothing lost,
//! duplicates bounded), handed back at once on SIGTERM.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use crate::helpers::{Backend, Node, Sql, TestDb};
use crate::receiver::{Reply, TestReceiver};

use super::{
    create_endpoint, metric, publish_batch, publish_batch_to, wait_all_delivered, wait_queue_empty,
    SHORT_LEASES,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_delivery_loses_nothing_and_duplicates_are_bounded() {
    const MAX_IN_FLIGHT: usize = 64;
    const BATCHES: usize = 45;
    const BATCH: usize = 100;
    // Every event fans out to four slow endpoints, so that publishing outruns three
    // nodes delivering and thousands of deliveries are pending when one node dies.
    const PATHS: [&str; 4] = ["/slow0", "/slow1", "/slow2", "/slow3"];
    let db = TestDb::of(Backend::Postgres).await;
    let rx = TestReceiver::start().await;
    let max_in_flight = MAX_IN_FLIGHT.to_string();
    let env: Vec<(&str, &str)> = SHORT_LEASES
        .into_iter()
        .chain([("POSTHORN_MAX_IN_FLIGHT", max_in_flight.as_str())])
        .collect();
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(Node::start(&db.url, &env).await);
    }
    for path in PATHS {
        rx.always(path, Reply::Slow(20));
        create_endpoint(&nodes[0], &rx.url(path)).await;
    }
    let victim = 1;

    // One publisher per node, BATCHES batches in all; a publisher stops at its node's
    // first failure (the victim's, once it is killed).
    let accepted = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut publishers = JoinSet::new();
    for (n, node) in nodes.iter().enumerate() {
        let (client, base, accepted) = (node.client.clone(), node.base.clone(), accepted.clone());
        publishers.spawn(async move {
            for b in (n..BATCHES).step_by(3) {
                match publish_batch_to(&client, &base, &format!("{n}-{b}"), BATCH).await {
                    Ok(ids) => accepted.lock().expect("lock").extend(ids),
                    Err(e) => return (n, Some(e)),
                }
            }
            (n, None)
        });
    }

    // Kill the victim while it delivers and thousands of accepted deliveries are pending.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (pending, total, in_flight) = loop {
        let total = accepted.lock().expect("lock").len();
        let delivered: usize = PATHS.iter().map(|p| rx.ids(p).len()).sum();
        let pending = (total * PATHS.len()).saturating_sub(delivered);
        let in_flight = metric(&nodes[victim], "posthorn_deliveries_in_flight").await;
        if pending >= 4000 && in_flight >= 16.0 {
            break (pending, total, in_flight);
        }
        assert!(
            Instant::now() < deadline && total < BATCHES * BATCH,
            "never 4000 accepted deliveries pending ({pending}; {total} events accepted) \
             with the victim delivering ({in_flight} in flight); the test would prove nothing"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    nodes[victim].kill().await;
    let killed_at = Instant::now();
    eprintln!(
        "killed node {victim} with {in_flight} attempts in flight, {total} events accepted, \
         {pending} deliveries pending"
    );
    while let Some(done) = publishers.join_next().await {
        let (n, failure) = done.expect("publisher");
        if n != victim {
            assert!(failure.is_none(), "node {n} stopped accepting: {failure:?}");
        }
    }
    for (n, node) in nodes.iter_mut().enumerate() {
        if n != victim {
            node.assert_running();
        }
    }
    let accepted = accepted.lock().expect("lock").clone();

    // Every accepted event arrives at every endpoint: the survivors take the victim's
    // leases over.
    for path in PATHS {
        wait_all_delivered(&rx, path, &accepted, Duration::from_secs(60)).await;
    }
    let sql = Sql::new(&db.url);
    wait_queue_empty(&sql, Duration::from_secs(30)).await;
    // A duplicate whose first copy arrived before the kill can be the victim's work
    // taken over; one whose copies all arrived after it was made twice by live nodes.
    let (mut duplicates, mut live_duplicates) = (0, 0);
    for path in PATHS {
        let mut first: HashMap<String, Instant> = HashMap::new();
        for r in rx.received(path) {
            let id = r.header("webhook-id").to_owned();
            match first.get(&id) {
                None => {
                    first.insert(id, r.at);
                }
                Some(at) => {
                    duplicates += 1;
                    live_duplicates += usize::from(*at >= killed_at);
                }
            }
        }
    }
    eprintln!(
        "{} events accepted, {} deliveries, {duplicates} duplicates ({live_duplicates} \
         first delivered after the kill)",
        accepted.len(),
        accepted.len() * PATHS.len()
    );
    assert_eq!(
        live_duplicates, 0,
        "live nodes delivered {live_duplicates} deliveries twice"
    );
    // At most POSTHORN_MAX_IN_FLIGHT attempts are in flight and as many outcomes
    // unwritten, so the victim's work made but not recorded is at most twice that.
    assert!(
        duplicates <= 2 * MAX_IN_FLIGHT,
        "{duplicates} duplicate deliveries; the killed node could have had at most \
         {MAX_IN_FLIGHT} attempts in flight and as many outcomes unwritten"
    );
    sql.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stopped_with_sigterm_hands_its_work_back_at_once() {
    // Default leases (15 s + 30 s): only a hand-back makes the other node quick.
    let db = TestDb::of(Backend::Postgres).await;
    let rx = TestReceiver::start().await;
    rx.always("/handback", Reply::Hang);
    let mut a = Node::start(&db.url, &[]).await;
    create_endpoint(&a, &rx.url("/handback")).await;
    let ids = publish_batch(&a, "handback", 20).await.expect("publish");
    // A holds all 20, hanging.
    rx.wait_for("/handback", 20, Duration::from_secs(10)).await;
    let status = a.terminate().await;
    assert!(status.success(), "{status}:\n{}", a.log());
    rx.always("/handback", Reply::Status(200));
    let handed_back = Instant::now();
    let _b = Node::start(&db.url, &[]).await;
    let deadline = handed_back + Duration::from_secs(15);
    loop {
        let got: HashSet<String> = rx
            .received("/handback")
            .iter()
            .filter(|r| r.at >= handed_back)
            .map(|r| r.header("webhook-id").to_owned())
            .collect();
        let missing = ids.iter().filter(|id| !got.contains(*id)).count();
        if missing == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} of 20 deliveries not made by the other node within 15 s of a graceful \
             stop; they waited for their leases instead of being handed back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("handed back and delivered in {:?}", handed_back.elapsed());
}
