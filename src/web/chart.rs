//! Statistics drawn by posthorn: delivered and failed per time slot, as an SVG of
//! stacked bars rendered on the server (no script, no other origin).
//!
//! Policy: the series comes from the 5-minute `endpoint_stats` buckets
//! (`Web::stats_series`), summed into the chart's slots: 1 h as 12 × 5 min, 24 h as
//! 24 × 1 h, 7 d as 28 × 6 h.

use askama::Template;
use axum::extract::{Query, State};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;

use super::session::Viewer;
use super::{render, Chrome, WebResult, When};
use crate::app::AppState;
use crate::domain::{EndpointUid, OrgId, Timestamp};

pub fn routes() -> Router<AppState> {
    Router::new().route("/stats", get(stats))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    Hour,
    Day,
    Week,
}

impl Window {
    pub fn parse(raw: Option<&str>) -> Self {
        match raw {
            Some("1h") => Self::Hour,
            Some("7d") => Self::Week,
            _ => Self::Day,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Hour => "1h",
            Self::Day => "24h",
            Self::Week => "7d",
        }
    }

    /// How many slots, and how long each is.
    fn slots(self) -> (i64, i64) {
        const MIN: i64 = 60_000;
        match self {
            Self::Hour => (12, 5 * MIN),
            Self::Day => (24, 60 * MIN),
            Self::Week => (28, 360 * MIN),
        }
    }
}

/// One bar: its place and the heights of its two parts, in the SVG's units.
pub struct Bar {
    pub x: u32,
    pub ok_y: u32,
    pub ok_h: u32,
    pub fail_y: u32,
    pub fail_h: u32,
    pub title: String,
}

pub struct Chart {
    pub bars: Vec<Bar>,
    pub width: u32,
    pub bar_width: u32,
    pub delivered: u64,
    pub failed: u64,
    pub max: u64,
    pub from: When,
    pub until: When,
}

pub const HEIGHT: u32 = 160;
const BAR: u32 = 20;
const GAP: u32 = 4;

/// The chart of one endpoint of `org` (or of all of them) over `window` up to now.
pub async fn chart(
    state: &AppState,
    org: &OrgId,
    endpoint: Option<EndpointUid>,
    window: Window,
) -> WebResult<Chart> {
    let (count, width) = window.slots();
    let bucket = crate::store::STATS_BUCKET_MS;
    // Slots end at the end of the current bucket, so the newest slot holds "now".
    let end = (Timestamp::now().millis().div_euclid(bucket) + 1) * bucket;
    let start = end - count * width;
    let series = state
        .store
        .stats_series(
            org,
            endpoint,
            Timestamp::from_millis(start),
            Timestamp::from_millis(end),
        )
        .await?;
    let mut slots = vec![(0u64, 0u64); count as usize];
    for b in series {
        let i = (b.start.millis() - start).div_euclid(width);
        if let Some(slot) = usize::try_from(i).ok().and_then(|i| slots.get_mut(i)) {
            slot.0 += b.delivered;
            slot.1 += b.failed;
        }
    }
    let max = slots.iter().map(|(d, f)| d + f).max().unwrap_or(0).max(1);
    let scale = |n: u64| ((n * u64::from(HEIGHT)) / max) as u32;
    let bars = slots
        .iter()
        .enumerate()
        .map(|(i, &(d, f))| {
            let (ok_h, fail_h) = (scale(d), scale(f));
            let slot_start = When::of(Timestamp::from_millis(start + i as i64 * width));
            Bar {
                x: i as u32 * (BAR + GAP),
                ok_y: HEIGHT - ok_h,
                ok_h,
                fail_y: HEIGHT - ok_h - fail_h,
                fail_h,
                title: format!("{}: {d} delivered, {f} failed", slot_start.text),
            }
        })
        .collect();
    Ok(Chart {
        bars,
        width: count as u32 * (BAR + GAP),
        bar_width: BAR,
        delivered: slots.iter().map(|s| s.0).sum(),
        failed: slots.iter().map(|s| s.1).sum(),
        max,
        from: When::of(Timestamp::from_millis(start)),
        until: When::of(Timestamp::from_millis(end)),
    })
}

#[derive(Template)]
#[template(path = "stats.html")]
struct StatsPage {
    chrome: Chrome,
    chart: Chart,
    window: &'static str,
}

#[derive(Deserialize)]
pub struct WindowQuery {
    pub window: Option<String>,
}

async fn stats(
    State(state): State<AppState>,
    v: Viewer,
    Query(q): Query<WindowQuery>,
) -> WebResult {
    let window = Window::parse(q.window.as_deref());
    let chart = chart(&state, &v.session.org_id, None, window).await?;
    Ok(render(&StatsPage {
        chrome: v.chrome("Statistics", "stats"),
        chart,
        window: window.label(),
    }))
}
