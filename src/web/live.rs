//! The live delivery log: `GET /console/log/stream` and `GET /portal/log/stream`,
//! server-sent events that carry the first page of the log's filters as rendered rows.
//!
//! Policy: a stream takes a place in the stream pool (`http/streams.rs`: caps per
//! session, per key or portal link, per org and per process; beyond them a 429 that
//! closes the connection, which a browser's EventSource takes as the end of live
//! updates, without retrying). Its rows come from the one shared poll of its org and
//! filter, sent when they change; each stream only renders them. It checks its
//! session every two seconds and ends with it (an `ended` event), and it ends at the
//! stream's maximum life and at shutdown (the browser's EventSource opens it again,
//! with the cookie checked anew).

use std::convert::Infallible;
use std::sync::Arc;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{header, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use tokio::sync::watch;
use tokio::time::Instant;

use super::log::{filter, LogQuery, LogRow, LogRows, Range, PAGE, SCAN};
use super::session::Viewer;
use super::WebResult;
use crate::app::AppState;
use crate::http::deliveries;
use crate::http::streams::{self, Acting, LogFollow, StreamOwner, StreamPermit};

/// One open live log.
struct Live {
    state: AppState,
    viewer: Viewer,
    rows: watch::Receiver<streams::LogRows>,
    /// Held for the stream's life: its place in the pool.
    permit: StreamPermit,
    next_check: Instant,
    ended: bool,
}

pub(super) async fn stream(
    State(state): State<AppState>,
    v: Viewer,
    Query(q): Query<LogQuery>,
) -> WebResult<Response> {
    let f = filter(&state, &v, &q).await?;
    // A portal session counts against its link, never the key that minted it.
    let acting = match &v.session.grant_hash {
        Some(link) => Acting::Link(link),
        None => Acting::Key(&v.key.id),
    };
    let owner = StreamOwner {
        org: &v.session.org_id,
        acting,
        session: Some(&v.session.hash),
    };
    let permit = match state.streams.open(owner) {
        Ok(permit) => permit,
        Err(refused) => return Ok(refused.into_response()),
    };
    let follow = LogFollow {
        org: v.session.org_id.clone(),
        endpoint: f.endpoint,
        state: f.state,
        event_name: f.event_name,
        range: Range::parse(q.range.as_deref()).span(),
        from: deliveries::parse_time("from", q.from.as_deref())?,
        until: f.until,
        scan: SCAN,
        limit: PAGE,
    };
    let mut rows = state.streams.follow(follow);
    // Whatever the poll has already read is sent at once (the page may be older).
    rows.mark_changed();
    let live = Live {
        next_check: Instant::now() + streams::POLL_EVERY,
        state,
        viewer: v,
        rows,
        permit,
        ended: false,
    };
    let events = futures_util::stream::unfold(live, |mut live| async move {
        let event = live.next().await?;
        Some((Ok::<_, Infallible>(event), live))
    });
    let mut response = Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response();
    // The connection ends with the stream: its slot is not kept for another request.
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    Ok(response)
}

impl Live {
    /// The next event to send; `None` ends the stream.
    async fn next(&mut self) -> Option<Event> {
        if self.ended {
            return None;
        }
        loop {
            tokio::select! {
                changed = self.rows.changed() => {
                    // The poll is gone only if it failed: end, the browser reconnects.
                    changed.ok()?;
                    let rows = self.rows.borrow_and_update().clone();
                    if let Some(rows) = rows {
                        return Some(self.render(&rows));
                    }
                }
                () = tokio::time::sleep_until(self.next_check) => {
                    self.next_check = Instant::now() + streams::POLL_EVERY;
                    if !self.viewer.still_valid(&self.state).await {
                        self.ended = true;
                        return Some(Event::default().event("ended").data("signed out"));
                    }
                }
                () = tokio::time::sleep_until(self.permit.deadline) => return None,
                // Shutdown: every stream ends (the browser reconnects to what comes next).
                () = self.state.engine.tunnels.stop.cancelled() => return None,
            }
        }
    }

    fn render(&self, rows: &Arc<Vec<crate::store::DeliveryRecord>>) -> Event {
        let rows = LogRows {
            chrome: self.viewer.chrome("", "log"),
            rows: rows
                .iter()
                .cloned()
                .map(|d| LogRow::view(d, self.state.store.public_ids()))
                .collect(),
        };
        Event::default()
            .event("rows")
            .data(rows.render().unwrap_or_default())
    }
}
