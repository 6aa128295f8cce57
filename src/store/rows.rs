//! Rows as both backends read them, and their mapping to records.
//!
//! Each struct derives `sqlx::FromRow` (PostgreSQL) and `Deserialize` (SQLite, through
//! `serde_rusqlite`); both map columns by name, so a query only has to name its columns
//! as the struct does. The two schemas use the same names and kinds of values (64-bit
//! integers, text, bytes, booleans).

use std::sync::Arc;

use serde::Deserialize;

use super::model::{
    ApiKeyRecord, AttemptView, Claimed, DeliveryRecord, EndpointRecord, EventRecord,
    EventTypeRecord, EventTypeVersion, FlowConfig, FlowStanding, Payload, SubcategoryRecord,
    Target,
};
use super::web::{BucketCounts, WebSessionKind, WebSessionRecord};
use super::{StoreError, StoreResult};
use crate::domain::{
    ClaimToken, DeliveryId, DeliveryState, EndpointUid, EventId, EventSchema, EventTypeRef,
    KeyHash, OrgId, Timestamp,
};

pub(crate) fn org(raw: String) -> StoreResult<OrgId> {
    OrgId::parse(&raw).map_err(StoreError::corrupt)
}

fn time(ms: Option<i64>) -> Option<Timestamp> {
    ms.map(Timestamp::from_millis)
}

fn count(n: i64) -> u32 {
    u32::try_from(n.max(0)).unwrap_or(u32::MAX)
}

fn status(code: Option<i64>) -> Option<u16> {
    code.and_then(|c| u16::try_from(c).ok())
}

fn old_secret(sealed: Option<Vec<u8>>, until: Option<i64>) -> Option<(Vec<u8>, Timestamp)> {
    sealed.zip(until.map(Timestamp::from_millis))
}

#[derive(Debug, Deserialize, sqlx::FromRow)]
pub(crate) struct KeyRow {
    pub id: String,
    pub org_id: String,
    pub hash: Vec<u8>,
    pub role: String,
    pub name: Option<String>,
    pub created_ms: i64,
    pub revoked_ms: Option<i64>,
}

impl KeyRow {
    pub fn into_record(self) -> StoreResult<ApiKeyRecord> {
        Ok(ApiKeyRecord {
            id: self.id,
            org_id: org(self.org_id)?,
            role: self.role.parse().map_err(StoreError::corrupt)?,
            name: self.name,
            hash: KeyHash(
                self.hash
                    .try_into()
                    .map_err(|_| StoreError::corrupt("a key hash is not 32 bytes"))?,
            ),
            created: Timestamp::from_millis(self.created_ms),
            revoked: time(self.revoked_ms),
        })
    }
}

#[derive(Debug, Deserialize, sqlx::FromRow)]
pub(crate) struct EventTypeRow {
    pub name: String,
    pub display_name: String,
    pub has_subcategories: bool,
    pub version: i64,
    pub schema_json: Option<String>,
    pub example_json: Option<String>,
}

/// The columns of [`EventTypeRow`].
pub(crate) const EVENT_TYPE_COLUMNS: &str =
    "name, display_name, has_subcategories, version, schema_json, example_json";

fn json(text: Option<String>) -> StoreResult<Option<serde_json::Value>> {
    text.map(|t| serde_json::from_str(&t).map_err(StoreError::corrupt))
        .transpose()
}

impl EventTypeRow {
    /// The record, its schema compiled (once per catalog read: catalogs are cached).
    pub fn into_record(self) -> StoreResult<EventTypeRecord> {
        let schema = json(self.schema_json)?
            .map(|s| EventSchema::compile(s).map(Arc::new))
            .transpose()
            .map_err(StoreError::corrupt)?;
        Ok(EventTypeRecord {
            name: self.name,
            display_name: self.display_name,
            has_subcategories: self.has_subcategories,
            version: self.version,
            schema,
            example: json(self.example_json)?,
        })
    }
}

#[derive(Debug, Deserialize, sqlx::FromRow)]
pub(crate) struct EventTypeVersionRow {
    pub version: i64,
    pub schema_json: Option<String>,
    pub example_json: Option<String>,
}

impl EventTypeVersionRow {
    pub fn into_version(self) -> StoreResult<EventTypeVersion> {
        Ok(EventTypeVersion {
            version: self.version,
            schema: json(self.schema_json)?,
            example: json(self.example_json)?,
        })
    }
}

#[derive(Debug, Deserialize, sqlx::FromRow)]
pub(crate) struct SubcategoryRow {
    pub seq: i64,
    pub event_name: String,
    pub token: String,
    pub display_name: Option<String>,
}

impl From<SubcategoryRow> for SubcategoryRecord {
    fn from(r: SubcategoryRow) -> Self {
        Self {
            seq: r.seq,
            event_name: r.event_name,
            token: r.token,
            display_name: r.display_name,
        }
    }
}

/// The columns of [`EndpointRow`], for `SELECT`s.
pub(crate) const ENDPOINT_COLUMNS: &str = "uid, org_id, url, enabled, secret, created_ms, \
    modified_ms, disabled_reason, disabled_ms, old_secret, old_secret_expires_ms, \
    headers, last_success_ms, last_failure_ms, rate_limit, rate_burst, fifo, paused_until_ms, \
    failing_since_ms, \
    (SELECT b.id FROM deliveries b WHERE b.id = endpoints.flow_busy AND b.state = 'pending' \
       AND NOT b.held) AS flow_busy, \
    (SELECT COUNT(*) FROM deliveries d WHERE d.endpoint_uid = endpoints.uid AND d.held) AS queued";

#[derive(Debug, Deserialize, sqlx::FromRow)]
pub(crate) struct EndpointRow {
    pub uid: i64,
    pub org_id: String,
    pub url: String,
    pub enabled: bool,
    pub secret: Vec<u8>,
    pub created_ms: i64,
    pub modified_ms: i64,
    pub disabled_reason: Option<String>,
    pub disabled_ms: Option<i64>,
    pub old_secret: Option<Vec<u8>>,
    pub old_secret_expires_ms: Option<i64>,
    pub headers: Option<Vec<u8>>,
    pub last_success_ms: Option<i64>,
    pub last_failure_ms: Option<i64>,
    pub rate_limit: Option<i32>,
    pub rate_burst: Option<i32>,
    pub fifo: bool,
    pub paused_until_ms: Option<i64>,
    pub failing_since_ms: Option<i64>,
    pub flow_busy: Option<i64>,
    pub queued: i64,
}

/// An endpoint's flow settings from their columns.
pub(crate) fn flow(rate_limit: Option<i32>, burst: Option<i32>, fifo: bool) -> FlowConfig {
    let positive = |n: Option<i32>| n.and_then(|n| u32::try_from(n).ok()).filter(|n| *n > 0);
    FlowConfig {
        rate_limit: positive(rate_limit),
        burst: positive(burst),
        fifo,
    }
}

impl EndpointRow {
    /// The record, without its subscriptions (see [`SubscriptionRow`]).
    pub fn into_record(self) -> StoreResult<EndpointRecord> {
        Ok(EndpointRecord {
            uid: EndpointUid(self.uid),
            org_id: org(self.org_id)?,
            url: self.url,
            enabled: self.enabled,
            event_types: Vec::new(),
            sealed_secret: self.secret,
            created: Timestamp::from_millis(self.created_ms),
            modified: Timestamp::from_millis(self.modified_ms),
            disabled_reason: self.disabled_reason,
            disabled_at: time(self.disabled_ms),
            old_secret: old_secret(self.old_secret, self.old_secret_expires_ms),
            sealed_headers: self.headers,
            last_success: time(self.last_success_ms),
            last_failure: time(self.last_failure_ms),
            flow: flow(self.rate_limit, self.rate_burst, self.fifo),
            standing: FlowStanding {
                paused_until: time(self.paused_until_ms),
                failing_since: time(self.failing_since_ms),
                fifo_head: self.flow_busy.map(DeliveryId),
                queued: u64::try_from(self.queued).unwrap_or(0),
            },
        })
    }
}

#[derive(Debug, Deserialize, sqlx::FromRow)]
pub(crate) struct SubscriptionRow {
    pub endpoint_uid: i64,
    pub event_name: String,
    pub subcategory: String,
}

/// Fills in each endpoint's subscriptions from its rows (in position order), leaving
/// out the wildcard row of an endpoint that takes every event.
pub(crate) fn attach_subscriptions(endpoints: &mut [EndpointRecord], rows: Vec<SubscriptionRow>) {
    for row in rows {
        if row.event_name == super::WILDCARD {
            continue;
        }
        if let Some(e) = endpoints.iter_mut().find(|e| e.uid.0 == row.endpoint_uid) {
            e.event_types.push(EventTypeRef {
                event_name: row.event_name,
                subcategory: (!row.subcategory.is_empty()).then_some(row.subcategory),
            });
        }
    }
}

/// The columns of [`TargetRow`] from `endpoints e`.
pub(crate) const TARGET_COLUMNS: &str = "e.uid, e.org_id, e.url, e.secret, e.old_secret, \
    e.old_secret_expires_ms, e.headers, (e.enabled AND e.deleted_ms IS NULL) AS live, \
    e.rate_limit, e.rate_burst, e.fifo";

#[derive(Debug, Deserialize, sqlx::FromRow)]
pub(crate) struct TargetRow {
    pub uid: i64,
    pub org_id: String,
    pub url: String,
    pub secret: Vec<u8>,
    pub old_secret: Option<Vec<u8>>,
    pub old_secret_expires_ms: Option<i64>,
    pub headers: Option<Vec<u8>>,
    pub live: bool,
    pub rate_limit: Option<i32>,
    pub rate_burst: Option<i32>,
    pub fifo: bool,
}

impl TargetRow {
    pub fn into_target(self) -> StoreResult<Target> {
        Ok(Target {
            uid: EndpointUid(self.uid),
            org_id: org(self.org_id)?,
            url: self.url,
            sealed_secret: self.secret,
            old_secret: old_secret(self.old_secret, self.old_secret_expires_ms),
            sealed_headers: self.headers,
            live: self.live,
            flow: flow(self.rate_limit, self.rate_burst, self.fifo),
        })
    }
}

/// A claimed delivery with its event and endpoint, as a claim reads it (the endpoint's
/// columns as in [`TARGET_COLUMNS`]).
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct ClaimRow {
    pub id: i64,
    pub attempts: i64,
    pub retry_base: i64,
    pub event_id: String,
    pub event_created_ms: i64,
    pub body: Vec<u8>,
    #[sqlx(flatten)]
    pub target: TargetRow,
}

impl ClaimRow {
    pub fn into_claimed(self, token: ClaimToken) -> StoreResult<Claimed> {
        Ok(Claimed {
            delivery: DeliveryId(self.id),
            token,
            attempts: count(self.attempts),
            retry_base: count(self.retry_base),
            event: Arc::new(Payload {
                id: EventId::from_raw(self.event_id),
                created: Timestamp::from_millis(self.event_created_ms),
                body: self.body.into(),
            }),
            endpoint: Arc::new(self.target.into_target()?),
            not_before: None,
        })
    }
}

/// The columns of [`DeliveryRow`] (from `deliveries d`, `events ev`, `endpoints e`).
pub(crate) const DELIVERY_COLUMNS: &str = "d.id, ev.id AS event_id, ev.event_name, \
    e.url AS endpoint_url, (e.deleted_ms IS NOT NULL) AS endpoint_deleted, d.state, \
    d.attempts, d.next_attempt_ms, d.last_status, d.last_error, d.created_ms, d.updated_ms";

#[derive(Debug, Deserialize, sqlx::FromRow)]
pub(crate) struct DeliveryRow {
    pub id: i64,
    pub event_id: String,
    pub event_name: String,
    pub endpoint_url: String,
    pub endpoint_deleted: bool,
    pub state: String,
    pub attempts: i64,
    pub next_attempt_ms: i64,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub created_ms: i64,
    pub updated_ms: i64,
}

impl DeliveryRow {
    pub fn into_record(self) -> StoreResult<DeliveryRecord> {
        let state: DeliveryState = self.state.parse().map_err(StoreError::corrupt)?;
        Ok(DeliveryRecord {
            id: DeliveryId(self.id),
            event_id: EventId::from_raw(self.event_id),
            event_name: self.event_name,
            endpoint_url: self.endpoint_url,
            endpoint_deleted: self.endpoint_deleted,
            next_attempt: (state == DeliveryState::Pending)
                .then(|| Timestamp::from_millis(self.next_attempt_ms)),
            state,
            attempts: count(self.attempts),
            last_status: status(self.last_status),
            last_error: self.last_error,
            created: Timestamp::from_millis(self.created_ms),
            updated: Timestamp::from_millis(self.updated_ms),
        })
    }
}

#[derive(Debug, Deserialize, sqlx::FromRow)]
pub(crate) struct EventRow {
    pub id: String,
    pub event_name: String,
    pub subcategory: Option<String>,
    pub body: Vec<u8>,
    pub created_ms: i64,
}

impl From<EventRow> for EventRecord {
    fn from(r: EventRow) -> Self {
        Self {
            id: EventId::from_raw(r.id),
            event_name: r.event_name,
            subcategory: r.subcategory,
            body: r.body,
            created: Timestamp::from_millis(r.created_ms),
        }
    }
}

#[derive(Debug, Deserialize, sqlx::FromRow)]
pub(crate) struct AttemptRow {
    pub attempt_no: i64,
    pub started_ms: i64,
    pub latency_ms: i64,
    pub status_code: Option<i64>,
    pub error: Option<String>,
    pub error_class: Option<String>,
    pub response_body: Option<String>,
}

impl AttemptRow {
    pub fn into_view(self) -> AttemptView {
        AttemptView {
            attempt_no: count(self.attempt_no),
            started: Timestamp::from_millis(self.started_ms),
            latency_ms: u64::try_from(self.latency_ms).unwrap_or(0),
            status_code: status(self.status_code),
            error: self.error,
            // A class this version does not know is left out rather than failing the log.
            error_class: self.error_class.and_then(|c| c.parse().ok()),
            response_body: self.response_body,
        }
    }
}

/// Counts of finished deliveries.
#[derive(Debug, Deserialize, sqlx::FromRow)]
pub(crate) struct CountsRow {
    pub delivered: i64,
    pub failed: i64,
}

impl From<CountsRow> for super::WindowCounts {
    fn from(r: CountsRow) -> Self {
        Self {
            delivered: u64::try_from(r.delivered).unwrap_or(0),
            failed: u64::try_from(r.failed).unwrap_or(0),
        }
    }
}

/// An earlier event with the same idempotency key.
#[derive(Debug, Deserialize, sqlx::FromRow)]
pub(crate) struct PriorEventRow {
    pub seq: i64,
    pub id: String,
    pub deliveries: i64,
    pub created_ms: i64,
}

/// The columns of `web_sessions`, in [`SessionRow`]'s order.
pub(crate) const SESSION_COLUMNS: &str = "hash, org_id, kind, capabilities, read_only, csrf, \
    key_hash, grant_hash, created_ms, expires_ms, revoked_ms";

#[derive(Debug, Deserialize, sqlx::FromRow)]
pub(crate) struct SessionRow {
    hash: Vec<u8>,
    org_id: String,
    kind: String,
    capabilities: String,
    read_only: bool,
    csrf: String,
    key_hash: Option<Vec<u8>>,
    grant_hash: Option<Vec<u8>>,
    created_ms: i64,
    expires_ms: i64,
    revoked_ms: Option<i64>,
}

fn session_hash(bytes: Vec<u8>) -> StoreResult<KeyHash> {
    bytes
        .try_into()
        .map(KeyHash)
        .map_err(|_| StoreError::corrupt("a web session hash is not 32 bytes"))
}

impl SessionRow {
    pub(crate) fn into_record(self) -> StoreResult<WebSessionRecord> {
        Ok(WebSessionRecord {
            hash: session_hash(self.hash)?,
            org_id: org(self.org_id)?,
            kind: WebSessionKind::parse(&self.kind)
                .ok_or_else(|| StoreError::corrupt(format!("web session kind {:?}", self.kind)))?,
            capabilities: self.capabilities,
            read_only: self.read_only,
            csrf: self.csrf,
            key_hash: self.key_hash.map(session_hash).transpose()?,
            grant_hash: self.grant_hash.map(session_hash).transpose()?,
            created: Timestamp::from_millis(self.created_ms),
            expires: Timestamp::from_millis(self.expires_ms),
            revoked: time(self.revoked_ms),
        })
    }
}

/// One `endpoint_stats` bucket (or a sum of them).
#[derive(Debug, Deserialize, sqlx::FromRow)]
pub(crate) struct BucketRow {
    bucket_ms: i64,
    delivered: i64,
    failed: i64,
}

impl From<BucketRow> for BucketCounts {
    fn from(r: BucketRow) -> Self {
        Self {
            start: Timestamp::from_millis(r.bucket_ms),
            delivered: u64::try_from(r.delivered).unwrap_or(0),
            failed: u64::try_from(r.failed).unwrap_or(0),
        }
    }
}
