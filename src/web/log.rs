//! The delivery log (of the org or one endpoint) with its filters, live while open, and
//! one delivery with its event and every attempt; retry.
//!
//! Policy: the log is read by `list_org_deliveries` (the `(org_id, id)` or
//! `(endpoint_uid, id)` index, keyset pages: "older" links carry the last id). The live
//! stream is in `live.rs`: bounded by the stream pool, fed by one shared poll per org and
//! filter.

use std::time::Duration;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::session::{Action, Viewer};
use super::{render, Chrome, WebResult, When};
use crate::app::AppState;
use crate::domain::{Capability, DeliveryId, DeliveryState, EndpointId, PublicIds, Timestamp};
use crate::error::ApiError;
use crate::http::deliveries;
use crate::http::input::PathParam;
use crate::store::{DeliveryRecord, OrgDeliveryFilter};

pub(super) const PAGE: u32 = 50;
/// How many deliveries a filtered page looks through at most (then it offers to go on).
pub(super) const SCAN: u32 = 10_000;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/log", get(log))
        .route("/log/stream", get(super::live::stream))
        .route("/deliveries/{id}", get(delivery))
        .route("/deliveries/{id}/retry", post(retry))
}

/// A time range of the filters: up to now, or everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    Hour,
    Day,
    Week,
    Month,
    All,
}

impl Range {
    const ALL: [Self; 5] = [Self::Hour, Self::Day, Self::Week, Self::Month, Self::All];

    pub fn parse(raw: Option<&str>) -> Self {
        Self::ALL
            .into_iter()
            .find(|r| Some(r.as_str()) == raw)
            .unwrap_or(Self::All)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hour => "1h",
            Self::Day => "24h",
            Self::Week => "7d",
            Self::Month => "30d",
            Self::All => "all",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Self::Hour => "the last hour",
            Self::Day => "the last 24 hours",
            Self::Week => "the last 7 days",
            Self::Month => "the last 30 days",
            Self::All => "all time",
        }
    }

    pub fn since(self) -> Option<Timestamp> {
        self.span().map(|span| Timestamp::now().minus(span))
    }

    /// How far back the range reaches from now (`None`: all time).
    pub fn span(self) -> Option<Duration> {
        let hours = match self {
            Self::Hour => 1,
            Self::Day => 24,
            Self::Week => 24 * 7,
            Self::Month => 24 * 30,
            Self::All => return None,
        };
        Some(Duration::from_secs(hours * 3600))
    }
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct LogQuery {
    pub endpoint: Option<String>,
    pub state: Option<String>,
    pub event: Option<String>,
    pub range: Option<String>,
    /// A range of one's own (RFC 3339), within the preset's.
    pub from: Option<String>,
    pub until: Option<String>,
    pub before: Option<String>,
}

/// One row of the log.
pub struct LogRow {
    pub id: String,
    pub event_name: String,
    pub endpoint_id: String,
    pub endpoint_url: String,
    pub endpoint_deleted: bool,
    pub state: &'static str,
    pub attempts: u32,
    pub last: String,
    pub created: When,
}

impl LogRow {
    /// The row of `d`, its id spelled with `ids`.
    pub fn view(d: DeliveryRecord, ids: &PublicIds) -> Self {
        Self {
            id: ids.delivery(d.id),
            event_name: d.event_name,
            endpoint_id: EndpointId::for_url(&d.endpoint_url).as_str().to_owned(),
            endpoint_url: d.endpoint_url,
            endpoint_deleted: d.endpoint_deleted,
            state: d.state.as_str(),
            attempts: d.attempts,
            last: match (d.last_status, d.last_error) {
                (Some(s), _) => s.to_string(),
                (None, Some(e)) => e,
                (None, None) => String::new(),
            },
            created: When::of(d.created),
        }
    }
}

/// The filter a query stands for; an unknown endpoint or state is a 400/404.
pub(super) async fn filter(
    state: &AppState,
    v: &Viewer,
    q: &LogQuery,
) -> WebResult<OrgDeliveryFilter> {
    let endpoint = match q.endpoint.as_deref().filter(|s| !s.is_empty()) {
        Some(id) => {
            let url = EndpointId::from_raw(id).url().ok_or(ApiError::NotFound)?;
            Some(state.store.get_endpoint(&v.session.org_id, &url).await?.uid)
        }
        None => None,
    };
    let (from, until) = (
        deliveries::parse_time("from", q.from.as_deref())?,
        deliveries::parse_time("until", q.until.as_deref())?,
    );
    let delivery_state = match q.state.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => Some(
            s.parse::<DeliveryState>()
                .map_err(|_| ApiError::invalid("state", "must be pending, delivered or failed"))?,
        ),
        None => None,
    };
    Ok(OrgDeliveryFilter {
        endpoint,
        state: delivery_state,
        event_name: q.event.clone().filter(|s| !s.is_empty()),
        since: Range::parse(q.range.as_deref()).since().max(from),
        until,
        before: super::position(state, "d", "before", q.before.as_deref())?,
        scan: SCAN,
        limit: PAGE,
    })
}

#[derive(Template)]
#[template(path = "log.html")]
struct LogPage {
    chrome: Chrome,
    rows: Vec<LogRow>,
    endpoint: String,
    state: String,
    event: String,
    range: &'static str,
    from: String,
    until: String,
    /// The query of this page without `before` (for the stream and the "older" link).
    query: String,
    older: Option<String>,
    /// The page is short because the search stopped at [`SCAN`] deliveries.
    cut: bool,
    scan: u32,
    live: bool,
}

#[derive(Template)]
#[template(path = "log_rows.html")]
pub(super) struct LogRows {
    pub chrome: Chrome,
    pub rows: Vec<LogRow>,
}

fn query_string(q: &LogQuery) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in [
        ("endpoint", &q.endpoint),
        ("state", &q.state),
        ("event", &q.event),
        ("range", &q.range),
        ("from", &q.from),
        ("until", &q.until),
    ] {
        if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
            s.append_pair(k, v);
        }
    }
    s.finish()
}

async fn log(State(state): State<AppState>, v: Viewer, Query(q): Query<LogQuery>) -> WebResult {
    let f = filter(&state, &v, &q).await?;
    let page = state
        .store
        .list_org_deliveries(&v.session.org_id, &f)
        .await?;
    let cut = page.next_after.is_some() && page.items.len() < PAGE as usize;
    Ok(render(&LogPage {
        chrome: v.chrome("Delivery log", "log"),
        rows: page
            .items
            .into_iter()
            .map(|d| LogRow::view(d, state.store.public_ids()))
            .collect(),
        endpoint: q.endpoint.clone().unwrap_or_default(),
        state: q.state.clone().unwrap_or_default(),
        event: q.event.clone().unwrap_or_default(),
        range: Range::parse(q.range.as_deref()).as_str(),
        from: q.from.clone().unwrap_or_default(),
        until: q.until.clone().unwrap_or_default(),
        query: query_string(&q),
        scan: SCAN,
        cut,
        older: page
            .next_after
            .map(|n| state.store.public_ids().token("d", n)),
        live: q.before.is_none(),
    }))
}

/// An attempt as the delivery page shows it.
pub struct AttemptRow {
    pub no: u32,
    pub started: When,
    pub latency_ms: u64,
    pub status: String,
    pub error: String,
    pub response_body: Option<String>,
    /// The request headers posthorn sent, as far as they can be told again.
    pub headers: Vec<(String, String)>,
}

#[derive(Template)]
#[template(path = "delivery.html")]
struct DeliveryPage {
    chrome: Chrome,
    d: LogRow,
    event_id: String,
    next_attempt: Option<When>,
    payload: String,
    attempts: Vec<AttemptRow>,
}

fn sent_headers(org: &str, event_id: &str, started: Timestamp) -> Vec<(String, String)> {
    let t = started.millis().div_euclid(1000);
    [
        ("Content-Type", "application/json".to_owned()),
        ("User-Agent", crate::delivery::client::USER_AGENT.to_owned()),
        (
            "Fullstory-Signature",
            format!("o:{org},t:{t},v:(signature, not kept)"),
        ),
        ("webhook-id", event_id.to_owned()),
        ("webhook-timestamp", t.to_string()),
        ("webhook-signature", "v1,(signature, not kept)".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

fn delivery_id(state: &AppState, raw: &str) -> WebResult<DeliveryId> {
    Ok(state
        .store
        .public_ids()
        .parse_delivery(raw)
        .ok_or(ApiError::NotFound)?)
}

async fn delivery(State(state): State<AppState>, v: Viewer, Path(id): Path<String>) -> WebResult {
    let org = &v.session.org_id;
    let d = state
        .store
        .get_delivery(org, delivery_id(&state, &id)?)
        .await?;
    let event = state.store.get_event(org, &d.event_id).await?;
    let payload = serde_json::from_slice::<serde_json::Value>(&event.body)
        .ok()
        .and_then(|body| serde_json::to_string_pretty(&body).ok())
        .unwrap_or_else(|| String::from_utf8_lossy(&event.body).into_owned());
    let attempts = state
        .store
        .list_attempts(org, d.id)
        .await?
        .into_iter()
        .map(|a| AttemptRow {
            no: a.attempt_no,
            headers: sent_headers(org.as_str(), d.event_id.as_str(), a.started),
            started: When::of(a.started),
            latency_ms: a.latency_ms,
            status: a.status_code.map_or("no answer".into(), |s| s.to_string()),
            error: a.error.unwrap_or_default(),
            response_body: a.response_body,
        })
        .collect();
    Ok(render(&DeliveryPage {
        chrome: v.chrome("Delivery", "log"),
        event_id: d.event_id.as_str().to_owned(),
        next_attempt: d
            .next_attempt
            .filter(|_| d.state == DeliveryState::Pending)
            .map(When::of),
        d: LogRow::view(d, state.store.public_ids()),
        payload,
        attempts,
    }))
}

async fn retry(State(state): State<AppState>, Path(id): Path<String>, a: Action) -> WebResult {
    let v = &a.viewer;
    v.require(Capability::Retry)?;
    let (_, Json(d)) = deliveries::retry_delivery(State(state), v.caller(), PathParam(id)).await?;
    Ok(Redirect::to(&format!("{}/deliveries/{}", v.surface.base(), d.id)).into_response())
}
