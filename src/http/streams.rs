//! Long-lived answers: the server-sent event streams of the live delivery log (console
//! and portal, `web/live.rs`) and of `posthorn listen` (`http/listen.rs`).
//!
//! Policy: streams come from a pool of their own, so that they can never hold the
//! connection slots the API needs. At most `POSTHORN_MAX_STREAMS` are open at once in
//! this process (and never more than half of `POSTHORN_MAX_CONNECTIONS`), at most
//! `POSTHORN_MAX_STREAMS_PER_ORG` of one org, `POSTHORN_MAX_STREAMS_PER_KEY` of one API
//! key (`listen`, a console session) or of one portal link (all its sessions: a
//! customer's portal never uses up the places of the key that minted the link), and
//! `POSTHORN_MAX_STREAMS_PER_SESSION` of one console or portal session. One more is
//! answered 429 `too_many_requests` and its connection is closed. Every stream ends
//! after `POSTHORN_MAX_STREAM_LIFE` (a browser's EventSource opens it again by itself)
//! and re-checks its authority as it goes (its handler says how).
//!
//! The live log's rows come from one shared poll per org and filter ([`Streams::follow`]):
//! one task reads the first page every [`POLL_EVERY`] while anyone follows it and
//! publishes the rows when they changed; it ends when its last follower leaves.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use crate::config::StreamConfig;
use crate::domain::{DeliveryState, EndpointUid, KeyHash, OrgId, Timestamp};
use crate::error::ErrorBody;
use crate::store::{DeliveryRecord, DynStore, OrgDeliveryFilter};
use crate::telemetry::Metrics;

/// How often a followed log is read again.
pub const POLL_EVERY: Duration = Duration::from_secs(2);

/// Who a stream is counted against, besides the process's pool.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Holder {
    Org(OrgId),
    Key(String),
    Link([u8; 32]),
    Session([u8; 32]),
}

/// Who a stream acts for within its org.
#[derive(Debug, Clone, Copy)]
pub enum Acting<'a> {
    /// An API key, by id (`listen`, a console session).
    Key(&'a str),
    /// A portal link (grant), by hash: its sessions share its places.
    Link(&'a KeyHash),
}

/// The principals of one stream: its org, who it acts for, and its console or portal
/// session if it has one.
pub struct StreamOwner<'a> {
    pub org: &'a OrgId,
    pub acting: Acting<'a>,
    pub session: Option<&'a KeyHash>,
}

/// Why a stream was refused: which cap it met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    Process(usize),
    Org(usize),
    Key(usize),
    Link(usize),
    Session(usize),
}

impl Refused {
    fn message(self) -> String {
        let (whose, max) = match self {
            Self::Process(max) => ("this server", max),
            Self::Org(max) => ("this org", max),
            Self::Key(max) => ("this API key", max),
            Self::Link(max) => ("this portal link", max),
            Self::Session(max) => ("this session", max),
        };
        format!(
            "too many open event streams for {whose} (at most {max} at once): close one \
             (another tab or `posthorn listen`) or try again later"
        )
    }
}

impl IntoResponse for Refused {
    /// 429 with the contract's body; the connection is closed after it, so a refused
    /// stream holds no connection slot.
    fn into_response(self) -> Response {
        let body = ErrorBody {
            message: self.message(),
            code: "too_many_requests".to_owned(),
        };
        let mut response = (StatusCode::TOO_MANY_REQUESTS, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        response
    }
}

/// One open stream's place in the pool: given back when dropped (with the stream).
pub struct StreamPermit {
    streams: Arc<Streams>,
    holders: Vec<Holder>,
    _slot: OwnedSemaphorePermit,
    /// When the stream must end.
    pub deadline: tokio::time::Instant,
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        let mut held = self.streams.held();
        for holder in &self.holders {
            if let Some(n) = held.get_mut(holder) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    held.remove(holder);
                }
            }
        }
    }
}

/// Which rows a live log follows: an org and its filters, the time range as its length
/// (so that its start moves with the clock) and the bounds given.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LogFollow {
    pub org: OrgId,
    pub endpoint: Option<EndpointUid>,
    pub state: Option<DeliveryState>,
    pub event_name: Option<String>,
    /// How far back a preset range reaches (`None`: all time).
    pub range: Option<Duration>,
    pub from: Option<Timestamp>,
    pub until: Option<Timestamp>,
    /// How many deliveries a filtered read looks through at most, and the page size.
    pub scan: u32,
    pub limit: u32,
}

impl LogFollow {
    /// The first page's filter, now.
    fn filter(&self) -> OrgDeliveryFilter {
        let since = self.range.map(|r| Timestamp::now().minus(r));
        OrgDeliveryFilter {
            endpoint: self.endpoint,
            state: self.state,
            event_name: self.event_name.clone(),
            since: since.max(self.from),
            until: self.until,
            before: None,
            scan: self.scan,
            limit: self.limit,
        }
    }
}

/// The first page of a followed log as last read (`None` until the first read).
pub type LogRows = Option<Arc<Vec<DeliveryRecord>>>;

/// The streams of this process: the pool, the counts per principal, the shared polls.
pub struct Streams {
    limits: StreamConfig,
    max: usize,
    pool: Arc<Semaphore>,
    held: Mutex<HashMap<Holder, usize>>,
    /// The running polls; each task holds the only strong reference to its sender, so
    /// a task that is gone (even by a panic) ends its followers' streams and is started
    /// again by the next follower.
    polls: Mutex<HashMap<LogFollow, Weak<watch::Sender<LogRows>>>>,
    store: DynStore,
    metrics: Arc<Metrics>,
}

impl Streams {
    /// The pool for `limits`, never more than half of `max_connections`.
    pub fn new(
        limits: StreamConfig,
        max_connections: usize,
        store: DynStore,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        let max = limits
            .max_streams
            .min(max_connections / 2)
            .clamp(1, Semaphore::MAX_PERMITS);
        Arc::new(Self {
            limits,
            max,
            pool: Arc::new(Semaphore::new(max)),
            held: Mutex::default(),
            polls: Mutex::default(),
            store,
            metrics,
        })
    }

    fn held(&self) -> MutexGuard<'_, HashMap<Holder, usize>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A place for one more stream of `owner`, or which cap it met.
    pub fn open(self: &Arc<Self>, owner: StreamOwner<'_>) -> Result<StreamPermit, Refused> {
        let slot = self
            .pool
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refused::Process(self.max))?;
        let l = &self.limits;
        let acting = match owner.acting {
            Acting::Key(id) => (
                Holder::Key(id.to_owned()),
                l.per_key,
                Refused::Key(l.per_key),
            ),
            Acting::Link(hash) => (Holder::Link(hash.0), l.per_key, Refused::Link(l.per_key)),
        };
        let mut caps = vec![
            (
                Holder::Org(owner.org.clone()),
                l.per_org,
                Refused::Org(l.per_org),
            ),
            acting,
        ];
        if let Some(session) = owner.session {
            caps.push((
                Holder::Session(session.0),
                l.per_session,
                Refused::Session(l.per_session),
            ));
        }
        let mut held = self.held();
        // Check every cap before counting against any, so a refusal changes nothing.
        if let Some((_, _, refused)) = caps
            .iter()
            .find(|(holder, max, _)| held.get(holder).copied().unwrap_or(0) >= *max)
        {
            return Err(*refused);
        }
        for (holder, _, _) in &caps {
            *held.entry(holder.clone()).or_insert(0) += 1;
        }
        drop(held);
        Ok(StreamPermit {
            streams: self.clone(),
            holders: caps.into_iter().map(|(holder, _, _)| holder).collect(),
            _slot: slot,
            deadline: tokio::time::Instant::now() + self.limits.max_life,
        })
    }

    /// The rows of `follow`, read by one task however many follow them. The receiver
    /// holds the last read (`None` before the first) and is told of each change; the
    /// task ends once no receiver is left.
    pub fn follow(self: &Arc<Self>, follow: LogFollow) -> watch::Receiver<LogRows> {
        let mut polls = self.polls();
        if let Some(tx) = polls.get(&follow).and_then(Weak::upgrade) {
            return tx.subscribe();
        }
        let (tx, rx) = watch::channel(None);
        let tx = Arc::new(tx);
        polls.insert(follow.clone(), Arc::downgrade(&tx));
        drop(polls);
        tokio::spawn(self.clone().poll(follow, tx));
        rx
    }

    fn polls(&self) -> MutexGuard<'_, HashMap<LogFollow, Weak<watch::Sender<LogRows>>>> {
        self.polls.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The task behind [`Streams::follow`]: reads the page now and every
    /// [`POLL_EVERY`], publishing it when it changed, until nobody follows it.
    async fn poll(self: Arc<Self>, follow: LogFollow, tx: Arc<watch::Sender<LogRows>>) {
        let mut ticks = tokio::time::interval(POLL_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            {
                // Under the registry's lock, so that nobody subscribes to a poll that
                // is ending.
                let mut polls = self.polls();
                if tx.receiver_count() == 0 {
                    polls.remove(&follow);
                    return;
                }
            }
            self.metrics.live_poll();
            let page = match self
                .store
                .list_org_deliveries(&follow.org, &follow.filter())
                .await
            {
                Ok(page) => page,
                // The followers keep the rows they have; the next tick tries again.
                Err(e) => {
                    tracing::debug!(error = %e, "cannot read a followed delivery log");
                    continue;
                }
            };
            tx.send_if_modified(|rows| {
                let changed = rows
                    .as_ref()
                    .is_none_or(|old| fingerprint(old) != fingerprint(&page.items));
                if changed {
                    *rows = Some(Arc::new(page.items));
                }
                changed
            });
        }
    }
}

/// What the rows show, to tell whether they changed.
fn fingerprint(rows: &[DeliveryRecord]) -> Vec<(i64, DeliveryState, u32)> {
    rows.iter().map(|d| (d.id.0, d.state, d.attempts)).collect()
}
