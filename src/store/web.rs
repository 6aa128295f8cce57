//! What the web console and the customer portal keep and read beyond the API's needs:
//! their sessions, the org-wide delivery log and the statistics as a time series.
//!
//! Policy: a session is stored by the SHA-256 of its secret only (like API keys); the
//! caller checks expiry and what the session may do. The org-wide log is read by the
//! `(org_id, id)` index, newest first, keyset paginated; the series from the
//! `endpoint_stats` buckets, never from the deliveries table.

use async_trait::async_trait;

use super::{DeliveryRecord, Page, StoreResult};
use crate::domain::{DeliveryState, EndpointUid, KeyHash, OrgId, Timestamp};

/// What a web session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebSessionKind {
    /// An operator signed in to `/console/` with an admin key.
    Console,
    /// What `POST /webhooks/v1/portal-sessions` minted: the token in the portal URL's
    /// fragment, traded for a [`WebSessionKind::Portal`] session.
    PortalGrant,
    /// A portal page's session (its cookie), made from a grant.
    Portal,
}

impl WebSessionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Console => "console",
            Self::PortalGrant => "portal_grant",
            Self::Portal => "portal",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "console" => Some(Self::Console),
            "portal_grant" => Some(Self::PortalGrant),
            "portal" => Some(Self::Portal),
            _ => None,
        }
    }
}

/// A stored web session.
#[derive(Debug, Clone)]
pub struct WebSessionRecord {
    /// SHA-256 of the session's secret (the cookie value or the grant token).
    pub hash: KeyHash,
    pub org_id: OrgId,
    pub kind: WebSessionKind,
    /// What it may do, as the web layer writes it (a comma-separated list).
    pub capabilities: String,
    pub read_only: bool,
    /// The token every state-changing form or request must carry.
    pub csrf: String,
    /// The API key a console session signed in with: revoking the key ends it.
    pub key_hash: Option<KeyHash>,
    /// The grant a portal session was made from: revoking the grant ends it.
    pub grant_hash: Option<KeyHash>,
    pub created: Timestamp,
    pub expires: Timestamp,
    pub revoked: Option<Timestamp>,
}

/// Which of an org's deliveries to list, newest first.
#[derive(Debug, Clone, Default)]
pub struct OrgDeliveryFilter {
    /// Only this endpoint's (read by the `(endpoint_uid, id)` index instead).
    pub endpoint: Option<EndpointUid>,
    pub state: Option<DeliveryState>,
    pub event_name: Option<String>,
    /// Created at or after.
    pub since: Option<Timestamp>,
    /// Created before.
    pub until: Option<Timestamp>,
    /// Only deliveries with a smaller id (the pagination position).
    pub before: Option<i64>,
    /// With a state, event or time filter: look through at most this many of the
    /// newest deliveries from the position (0: no bound), so a filter that matches
    /// little costs a bounded read. A page cut there comes back short, with
    /// `next_after` where to go on from.
    pub scan: u32,
    pub limit: u32,
}

impl OrgDeliveryFilter {
    /// Whether a filter beyond the org (or endpoint) is set.
    pub fn is_filtered(&self) -> bool {
        self.state.is_some()
            || self.event_name.is_some()
            || self.since.is_some()
            || self.until.is_some()
    }
}

/// Where a filtered page cut by its scan bound goes on from: the oldest delivery of the
/// full window `(id, created_ms, anything older)`, unless nothing is older or that
/// delivery is already older than the filter's `since` (ids grow with publish time).
pub(crate) fn go_on_from(last: Option<(i64, i64, bool)>, f: &OrgDeliveryFilter) -> Option<i64> {
    let (id, created_ms, older) = last?;
    let past_since = f.since.is_some_and(|s| created_ms < s.millis());
    (older && !past_since).then_some(id)
}

/// Finished deliveries counted in one statistics bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketCounts {
    /// The bucket's start ([`super::STATS_BUCKET_MS`] wide).
    pub start: Timestamp,
    pub delivered: u64,
    pub failed: u64,
}

#[async_trait]
pub trait Web: Send + Sync {
    async fn insert_web_session(&self, session: &WebSessionRecord) -> StoreResult<()>;
    /// The session with that hash, revoked or not (the caller decides).
    async fn find_web_session(&self, hash: &KeyHash) -> StoreResult<Option<WebSessionRecord>>;
    /// Marks the session revoked, and every session made from it (a grant's portal
    /// sessions). Revoking an unknown or revoked session is not an error.
    async fn revoke_web_session(&self, hash: &KeyHash, now: Timestamp) -> StoreResult<()>;
    /// Revokes the live portal sessions made from `grant` but its `keep` newest (a
    /// link's bound on live sessions); how many.
    async fn trim_grant_sessions(
        &self,
        grant: &KeyHash,
        keep: u32,
        now: Timestamp,
    ) -> StoreResult<u64>;
    /// Deletes the sessions that expired or were revoked before `now` (they let no one
    /// in any more); how many.
    async fn prune_web_sessions(&self, now: Timestamp) -> StoreResult<u64>;
    /// The org's deliveries across its endpoints (also deleted ones), newest first.
    async fn list_org_deliveries(
        &self,
        org: &OrgId,
        filter: &OrgDeliveryFilter,
    ) -> StoreResult<Page<DeliveryRecord>>;
    /// The buckets in `[from, until)` with anything in them, oldest first: of one
    /// endpoint of the org, or (`None`) summed over all the org's endpoints.
    async fn stats_series(
        &self,
        org: &OrgId,
        endpoint: Option<EndpointUid>,
        from: Timestamp,
        until: Timestamp,
    ) -> StoreResult<Vec<BucketCounts>>;
    /// How many of the endpoint's deliveries are failed and were created in
    /// `[since, until)`: what `recover_failed` with those bounds would queue.
    async fn count_failed(
        &self,
        org: &OrgId,
        endpoint: EndpointUid,
        since: Timestamp,
        until: Option<Timestamp>,
    ) -> StoreResult<u64>;
}
