//! The store conformance suite: the rules of the `Queue`, `Admin` and `Log` traits
//! checked on the store directly, on whichever store the suite runs on.

mod admin;
mod queue;
mod web;

use std::sync::Arc;
use std::time::Duration;

use posthorn::config::DatabaseArgs;
use posthorn::domain::{ClaimToken, DeliveryId, EndpointUid, EventId, OrgId, Timestamp};
use posthorn::store::{
    Access, AttemptRecord, ClaimRequest, Claimed, DynStore, HealthPolicy, NewEndpoint, NewEvent,
    Outcome, PublishBatch, Published,
};

use crate::helpers::TestDb;

pub const DAY: Duration = Duration::from_secs(86_400);

/// Disable after a day; a recovery after a minute of failures is told.
pub const POLICY: HealthPolicy = HealthPolicy {
    disable_after: DAY,
    recovered_after: Duration::from_secs(60),
};

/// The store of `db`, opened as a tool would (several may be open on one database).
pub async fn store(db: &TestDb) -> DynStore {
    posthorn::store::open(&DatabaseArgs::new(db.url.clone()), Access::Tool, None)
        .await
        .expect("store opens")
}

pub fn org() -> OrgId {
    OrgId::parse("o-store").expect("org")
}

pub fn at(ms_from_now: i64) -> Timestamp {
    Timestamp::from_millis(Timestamp::now().millis() + ms_from_now)
}

/// An org with `n` endpoints that take every event; returns their uids.
pub async fn endpoints(store: &DynStore, n: usize) -> Vec<EndpointUid> {
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
                sealed_headers: None,
                flow: Default::default(),
                enabled: true,
                now: Timestamp::now(),
            })
            .await
            .expect("endpoint");
        uids.push(e.uid);
    }
    uids
}

pub fn event(key: Option<&str>) -> NewEvent {
    NewEvent {
        id: EventId::generate(Timestamp::now()),
        org_id: org(),
        event_name: "note.created".into(),
        subcategory: None,
        body: br#"{"eventName":"note.created","version":1,"data":{}}"#
            .to_vec()
            .into(),
        idempotency_key: key.map(str::to_owned),
    }
}

/// Publishes `events` (idempotency window `window_ms`), none of it leased.
pub async fn publish(store: &DynStore, events: Vec<NewEvent>, window_ms: i64) -> Vec<Published> {
    store
        .publish(PublishBatch {
            events: events.into(),
            now: Timestamp::now(),
            idempotency_window_ms: window_ms,
            lease: None,
        })
        .await
        .expect("publish")
        .answers
}

pub fn claim_request(limit: u32, per_endpoint: u32, lease: Duration) -> ClaimRequest {
    let now = Timestamp::now();
    ClaimRequest {
        now,
        lease_until: Timestamp::from_millis(now.millis() + lease.as_millis() as i64),
        limit,
        per_endpoint,
        held: Vec::new(),
        token: ClaimToken::generate(),
    }
}

pub async fn claim(store: &DynStore, limit: u32, lease: Duration) -> Vec<Claimed> {
    store
        .claim_due(&claim_request(limit, 1000, lease))
        .await
        .expect("claim")
}

pub fn outcome(c: &Claimed, outcome: Outcome) -> AttemptRecord {
    AttemptRecord {
        delivery: c.delivery,
        token: c.token,
        endpoint: c.endpoint.uid,
        attempt_no: Some(c.attempts + 1),
        started: Timestamp::now(),
        latency_ms: 1,
        status_code: Some(if outcome == Outcome::Delivered {
            200
        } else {
            500
        }),
        error: (outcome != Outcome::Delivered).then(|| "endpoint answered 500".into()),
        error_class: None,
        response_body: None,
        outcome,
        queued: c.endpoint.flow.queued(),
        fifo: c.endpoint.flow.fifo,
        signal: None,
    }
}

pub async fn record(store: &DynStore, records: Vec<AttemptRecord>) {
    store
        .record_attempts(Arc::from(records), Timestamp::now(), POLICY)
        .await
        .expect("record");
}

pub fn ids(claimed: &[Claimed]) -> Vec<DeliveryId> {
    let mut ids: Vec<DeliveryId> = claimed.iter().map(|c| c.delivery).collect();
    ids.sort();
    ids
}
