//! Deliveries over a `posthorn listen --forward-to` connection.
//!
//! A listener is a temporary endpoint whose URL is `http://listen.posthorn.invalid/<session>`
//! (`.invalid` never resolves, and the API refuses that host for endpoints of its own).
//! While its stream is open, an attempt to it is not dialled: the signed request is
//! written to the stream, and the answer the CLI reports (`POST .../listen/{session}`)
//! is the attempt's outcome, within the attempt timeout. Deliveries, attempts and
//! retries are the ordinary ones, in the ordinary log. A session ends with its stream
//! (closed, its key revoked, its maximum life reached: `http/listen.rs`); attempts
//! waiting on it then fail at once.
//!
//! The session lives in the process that holds the stream: on several PostgreSQL nodes,
//! an attempt claimed by another node fails ("connected to another node") and is
//! retried on the schedule, so it may take a retry or two to arrive.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hyper::header::HeaderMap;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::client::{storable, Answer, Failure, MAX_LOGGED_BODY};
use crate::domain::{ErrorClass, OrgId};

/// The host of every listener's URL.
pub const HOST: &str = "listen.posthorn.invalid";
/// Requests written to a stream that its reader has not taken yet.
const BACKLOG: usize = 64;

/// A request for the CLI to forward.
#[derive(Debug, serde::Serialize)]
pub struct Forward {
    /// Names this request in the CLI's answer.
    pub id: u64,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// What the CLI reports of the local app's answer.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Reply {
    /// The `id` of the forwarded request.
    pub id: u64,
    /// The local app's status code; absent when it could not be reached.
    pub status: Option<u16>,
    /// The start of its answer's body.
    pub body: Option<String>,
    /// Why the local app gave no answer.
    pub error: Option<String>,
}

struct Tunnel {
    org: OrgId,
    out: mpsc::Sender<Forward>,
    waiting: Mutex<HashMap<u64, oneshot::Sender<Reply>>>,
}

/// The listeners connected to this process.
#[derive(Default)]
pub struct Tunnels {
    open: Mutex<HashMap<String, Arc<Tunnel>>>,
    next: AtomicU64,
    /// Cancelled at shutdown: every stream ends.
    pub stop: CancellationToken,
}

/// The URL of session `session`'s endpoint.
pub fn url_for(session: &str) -> String {
    format!("http://{HOST}/{session}")
}

/// The session a listener's URL names.
pub fn session_of(url: &str) -> Option<&str> {
    url.strip_prefix("http://")?
        .strip_prefix(HOST)?
        .strip_prefix('/')
}

impl Tunnels {
    /// Opens session `session` of `org`; its requests arrive on the receiver.
    pub fn open(&self, session: &str, org: OrgId) -> mpsc::Receiver<Forward> {
        let (out, rx) = mpsc::channel(BACKLOG);
        let tunnel = Arc::new(Tunnel {
            org,
            out,
            waiting: Mutex::default(),
        });
        self.lock().insert(session.to_owned(), tunnel);
        rx
    }

    /// Ends session `session`: attempts waiting for its answers fail at once ("the
    /// listener went away") rather than at their timeout.
    pub fn close(&self, session: &str) {
        let Some(tunnel) = self.lock().remove(session) else {
            return;
        };
        tunnel
            .waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Tunnel>>> {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn get(&self, session: &str, org: &str) -> Option<Arc<Tunnel>> {
        self.lock()
            .get(session)
            .filter(|t| t.org.as_str() == org)
            .cloned()
    }

    /// One attempt over session `session`: the CLI's report of the local answer.
    pub async fn post(
        &self,
        session: &str,
        org: &str,
        headers: &HeaderMap,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Answer, Failure> {
        let failed = |message: &str| Failure {
            class: ErrorClass::Connect,
            message: message.to_owned(),
        };
        let tunnel = self.get(session, org).ok_or_else(|| {
            failed("no posthorn listen is connected for this endpoint (it may be connected to another node)")
        })?;
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        tunnel
            .waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id, tx);
        let forward = Forward {
            id,
            headers: headers
                .iter()
                .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
                .collect(),
            body: String::from_utf8_lossy(&body).into_owned(),
        };
        let outcome = tokio::time::timeout(timeout, async {
            tunnel
                .out
                .send(forward)
                .await
                .map_err(|_| failed("the listener went away"))?;
            rx.await.map_err(|_| failed("the listener went away"))
        })
        .await;
        tunnel
            .waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&id);
        let reply = match outcome {
            Err(_) => {
                return Err(Failure {
                    class: ErrorClass::Timeout,
                    message: format!(
                        "the listener reported no answer within {}s",
                        timeout.as_secs()
                    ),
                })
            }
            Ok(reply) => reply?,
        };
        match (reply.status, reply.error) {
            (Some(status), _) => Ok(Answer {
                status,
                retry_after: None,
                body: reply
                    .body
                    .as_deref()
                    .map(|b| storable(first(b, MAX_LOGGED_BODY))),
            }),
            (None, error) => Err(failed(&format!(
                "the local app gave no answer: {}",
                error
                    .as_deref()
                    .map(|e| storable(first(e, MAX_LOGGED_BODY)))
                    .unwrap_or_else(|| "unknown".into())
            ))),
        }
    }

    /// Hands the CLI's report to the attempt waiting for it; false if none is.
    pub fn answer(&self, session: &str, org: &OrgId, reply: Reply) -> bool {
        let Some(tunnel) = self.get(session, org.as_str()) else {
            return false;
        };
        let waiter = tunnel
            .waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&reply.id);
        waiter.is_some_and(|w| w.send(reply).is_ok())
    }
}

/// At most the first `max` bytes of `text`, cut at a character boundary.
fn first(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
