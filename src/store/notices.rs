//! Which operational events a change makes, as both stores decide it (what they are
//! and where they go: `domain::notice`). Each backend writes them with the change, in
//! its transaction (`sqlite/notices.rs`, `postgres/notices.rs`).

use serde::Deserialize;

use super::model::{EndpointRecord, HealthPolicy};
use super::rows::org;
use super::rules::Health;
use super::StoreResult;
use crate::domain::notice::{is_operational, FailedDelivery, Notice, Subject};
use crate::domain::{DeliveryId, EndpointUid, PublicIds, Timestamp};

fn subject(r: &EndpointRecord) -> Subject<'_> {
    Subject {
        org: &r.org_id,
        uid: r.uid,
        url: &r.url,
    }
}

/// `endpoint.created` (no `before`) or `endpoint.updated`, and `endpoint.enabled` or
/// `endpoint.disabled` when an update switched it.
pub(crate) fn endpoint_saved(
    before: Option<&EndpointRecord>,
    after: &EndpointRecord,
    now: Timestamp,
) -> Vec<Notice> {
    let s = subject(after);
    let mut out = vec![Notice::endpoint_saved(
        before.is_none(),
        &s,
        after.enabled,
        &after.event_types,
        now,
    )];
    match before.map(|b| b.enabled) {
        Some(false) if after.enabled => out.push(Notice::endpoint_enabled(&s, now)),
        Some(true) if !after.enabled => out.push(Notice::endpoint_disabled(&s, None, now)),
        _ => {}
    }
    out
}

/// What a deletion tells, from the deleted row.
#[derive(Debug, Deserialize, sqlx::FromRow)]
pub(crate) struct DeletedRow {
    pub uid: i64,
    pub org_id: String,
    pub url: String,
}

pub(crate) fn endpoint_deleted(row: &DeletedRow, now: Timestamp) -> StoreResult<Notice> {
    let org = org(row.org_id.clone())?;
    let s = Subject {
        org: &org,
        uid: EndpointUid(row.uid),
        url: &row.url,
    };
    Ok(Notice::endpoint_deleted(&s, now))
}

/// An endpoint as it stood before a batch of outcomes.
#[derive(Debug, Deserialize, sqlx::FromRow)]
pub(crate) struct StandingRow {
    pub uid: i64,
    pub org_id: String,
    pub url: String,
    pub enabled: bool,
    pub failing_since_ms: Option<i64>,
}

impl StandingRow {
    fn notice(&self, make: impl FnOnce(&Subject<'_>) -> Notice) -> StoreResult<Notice> {
        let org = org(self.org_id.clone())?;
        Ok(make(&Subject {
            org: &org,
            uid: EndpointUid(self.uid),
            url: &self.url,
        }))
    }

    /// `endpoint.recovered`: this batch has a success, and before it every attempt had
    /// failed for at least the policy's `recovered_after` (a blip tells nobody).
    pub fn recovered(
        &self,
        health: &Health,
        now: Timestamp,
        policy: &HealthPolicy,
    ) -> StoreResult<Option<Notice>> {
        let Some(since) = self.failing_since_ms else {
            return Ok(None);
        };
        let long_enough = since <= now.minus(policy.recovered_after).millis();
        if !(health.succeeded && long_enough) {
            return Ok(None);
        }
        let since = Timestamp::from_millis(since);
        self.notice(|s| Notice::endpoint_recovered(s, since, now))
            .map(Some)
    }

    /// `endpoint.disabled` by posthorn itself, with the reason it gave.
    pub fn disabled(&self, reason: &str, now: Timestamp) -> StoreResult<Notice> {
        self.notice(|s| Notice::endpoint_disabled(s, Some(reason), now))
    }
}

/// A delivery that has just failed for good, with its event and endpoint.
#[derive(Debug, Deserialize, sqlx::FromRow)]
pub(crate) struct FailedRow {
    pub id: i64,
    pub attempts: i64,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub event_id: String,
    pub event_name: String,
    pub uid: i64,
    pub org_id: String,
    pub url: String,
}

/// The columns of a [`FailedRow`], from `deliveries d`, `events ev` and `endpoints e`.
pub(crate) const FAILED_COLUMNS: &str = "d.id, d.attempts, d.last_status, d.last_error, \
     ev.id AS event_id, ev.event_name, e.uid, e.org_id, e.url";

impl FailedRow {
    /// `delivery.failed`, unless the delivery carried an operational event itself.
    pub fn notice(&self, ids: &PublicIds, now: Timestamp) -> StoreResult<Option<Notice>> {
        if is_operational(&self.event_name) {
            return Ok(None);
        }
        let org = org(self.org_id.clone())?;
        let s = Subject {
            org: &org,
            uid: EndpointUid(self.uid),
            url: &self.url,
        };
        let failed = FailedDelivery {
            delivery_id: ids.delivery(DeliveryId(self.id)),
            event_id: &self.event_id,
            event_name: &self.event_name,
            attempts: self.attempts,
            last_status: self.last_status,
            last_error: self.last_error.as_deref(),
        };
        Ok(Some(Notice::delivery_failed(&s, &failed, now)))
    }
}
