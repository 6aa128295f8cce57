//! `posthorn listen --forward-to`: the server side of the outbound connection.
//!
//! `GET /listen` (admin) creates a temporary endpoint of the org subscribed to
//! `events` (every event when absent) and answers a server-sent event stream: first a
//! `ready` event (`{session, endpointId, secret}`), then one `delivery` event per
//! attempt (`{id, headers, body}`: the signed request as it would be POSTed). The CLI
//! reports each local answer with `POST /listen/{session}` (`{id, status?, body?,
//! error?}`), and that is the attempt's outcome. When the stream closes the endpoint
//! is deleted, with its pending deliveries. See `delivery/tunnel.rs`.
//!
//! Policy: a stream takes a place in the stream pool (`http/streams.rs`: caps per key,
//! per org and per process; beyond them 429). It re-checks its key every
//! [`KEY_CHECK`] and before each delivery it writes: once the key is revoked (or no
//! longer an admin key) the stream ends with an `ended` event and writes nothing more,
//! and its endpoint is deleted as for a closed stream. It also ends at the stream's
//! maximum life, and when the server shuts down.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use tokio::time::Instant;
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::auth::{AdminOnly, Authorized};
use super::catalog::{validate_subscriptions, EventTypeInput};
use super::input::{JsonBody, PathParam, QueryParams};
use super::streams::{Acting, StreamOwner, StreamPermit};
use super::{Empty, ErrorBody};
use crate::app::AppState;
use crate::delivery::tunnel::{self, Reply};
use crate::domain::{EndpointUrl, KeyHash, OrgId, Role, Secret, Timestamp};
use crate::error::{ApiError, ApiResult};
use crate::store::{DynStore, FlowConfig, NewEndpoint};

/// How often an idle stream carries a comment, so proxies keep it open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How often a stream checks that its key is still a live admin key.
const KEY_CHECK: Duration = Duration::from_secs(1);

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(listen))
        .routes(routes!(report))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListenQuery {
    /// Event types to receive, comma-separated, each `name` or `name:subcategory`;
    /// every event of the org when absent.
    pub events: Option<String>,
}

/// Stream the org's deliveries to `posthorn listen --forward-to`
#[utoipa::path(get, path = "/listen", tag = "listen", params(ListenQuery),
    responses((status = 200, description = "Server-sent events: `ready` once, then one `delivery` per attempt.",
        content_type = "text/event-stream", body = String)),
    security(("bearer" = []), ("basic" = []), ("fullstory" = [])))]
pub async fn listen(
    State(state): State<AppState>,
    caller: Authorized<AdminOnly>,
    QueryParams(query): QueryParams<ListenQuery>,
) -> ApiResult<Response> {
    let org = caller.org().clone();
    let inputs = query
        .events
        .as_deref()
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            let (name, sub) = s
                .split_once(':')
                .map_or((s, None), |(n, sub)| (n, Some(sub)));
            EventTypeInput {
                event_name: Some(name.to_owned()),
                subcategory: sub.map(str::to_owned),
            }
        })
        .collect();
    let event_types = validate_subscriptions(&state, &org, inputs).await?;
    let owner = StreamOwner {
        org: &org,
        acting: Acting::Key(&caller.key.id),
        session: None,
    };
    let permit = match state.streams.open(owner) {
        Ok(permit) => permit,
        Err(refused) => return Ok(refused.into_response()),
    };
    let session = format!("{:032x}", rand::random::<u128>());
    let secret = Secret::generate();
    let url = tunnel::url_for(&session);
    let endpoint_id = EndpointUrl::parse(&url)
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("listener URL: {e}")))?
        .id();
    state
        .store
        .create_endpoint(&NewEndpoint {
            org_id: org.clone(),
            url: url.clone(),
            event_types,
            sealed_secret: state.master_key.seal_secret(&org, &secret),
            sealed_headers: None,
            flow: FlowConfig::default(),
            enabled: true,
            now: Timestamp::now(),
        })
        .await?;
    let requests = state.engine.tunnels.open(&session, org.clone());
    let ready = serde_json::json!({
        "session": session,
        "endpointId": endpoint_id.as_str(),
        "secret": secret.expose(),
    });
    tracing::info!(org.id = %org.as_str(), "posthorn listen connected");
    let guard = Closing {
        store: state.store.clone(),
        engine: state.engine.clone(),
        org,
        session,
        url,
    };
    let open = Open {
        ready: Some(ready),
        requests,
        stop: state.engine.tunnels.stop.clone(),
        store: state.store.clone(),
        key: caller.key.hash,
        next_check: Instant::now() + KEY_CHECK,
        permit,
        ended: false,
        _closing: guard,
    };
    let stream = futures_util::stream::unfold(open, |mut open| async move {
        let event = open.next().await?;
        Some((Ok::<_, Infallible>(event), open))
    });
    let mut response = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response();
    // The connection ends with the stream: its slot is not kept for another request.
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    Ok(response)
}

/// One open listener stream.
struct Open {
    ready: Option<serde_json::Value>,
    requests: tokio::sync::mpsc::Receiver<tunnel::Forward>,
    stop: tokio_util::sync::CancellationToken,
    store: DynStore,
    /// The key the stream was opened with.
    key: KeyHash,
    next_check: Instant,
    /// Held for the stream's life: its place in the pool.
    permit: StreamPermit,
    ended: bool,
    /// Dropped with the stream: closes the tunnel, deletes the endpoint.
    _closing: Closing,
}

impl Open {
    /// The next event to write; `None` ends the stream.
    async fn next(&mut self) -> Option<Event> {
        if self.ended {
            return None;
        }
        if let Some(ready) = self.ready.take() {
            return Some(Event::default().event("ready").data(ready.to_string()));
        }
        loop {
            tokio::select! {
                next = self.requests.recv() => {
                    let forward = next?;
                    // Nothing is written for a key that no longer holds: the attempt
                    // fails ("the listener went away") when the stream ends. One the
                    // store cannot vouch for now is not written either (it times out
                    // and is retried).
                    match self.key_holds().await {
                        Some(true) => {
                            let data = serde_json::to_string(&forward).unwrap_or_default();
                            return Some(Event::default().event("delivery").data(data));
                        }
                        Some(false) => return Some(self.end("the key was revoked")),
                        None => continue,
                    }
                }
                () = tokio::time::sleep_until(self.next_check) => {
                    self.next_check = Instant::now() + KEY_CHECK;
                    if self.key_holds().await == Some(false) {
                        return Some(self.end("the key was revoked"));
                    }
                }
                () = tokio::time::sleep_until(self.permit.deadline) => {
                    return Some(self.end("the stream reached its maximum life; connect again"));
                }
                () = self.stop.cancelled() => return None,
            }
        }
    }

    /// The last event: why the stream ends.
    fn end(&mut self, why: &str) -> Event {
        self.ended = true;
        self.requests.close();
        let data = serde_json::json!({ "reason": why }).to_string();
        Event::default().event("ended").data(data)
    }

    /// Whether the stream's key is still a live admin key; `None` when the store cannot
    /// tell now (the next check asks again).
    async fn key_holds(&self) -> Option<bool> {
        match self.store.find_api_key(&self.key).await {
            Ok(found) => Some(found.is_some_and(|k| {
                k.revoked.is_none() && k.role == Role::Admin && k.hash.ct_eq(&self.key)
            })),
            Err(e) => {
                tracing::debug!(error = %e, "cannot check a posthorn listen key");
                None
            }
        }
    }
}

/// Report what the local app answered to a forwarded request
#[utoipa::path(post, path = "/listen/{session}", tag = "listen",
    params(("session" = String, Path, description = "The session of the `ready` event")),
    request_body = Reply,
    responses((status = 200, body = Empty),
        (status = 404, description = "No attempt waits for that answer (it timed out, or the stream closed).", body = ErrorBody)),
    security(("bearer" = []), ("basic" = []), ("fullstory" = [])))]
pub async fn report(
    State(state): State<AppState>,
    caller: Authorized<AdminOnly>,
    PathParam(session): PathParam,
    JsonBody(reply): JsonBody<Reply>,
) -> ApiResult<Json<Empty>> {
    if state.engine.tunnels.answer(&session, caller.org(), reply) {
        Ok(Json(Empty {}))
    } else {
        Err(ApiError::NotFound)
    }
}

/// Closes a session when its stream is dropped: the tunnel, then the endpoint.
struct Closing {
    store: DynStore,
    engine: std::sync::Arc<crate::delivery::Engine>,
    org: OrgId,
    session: String,
    url: String,
}

impl Drop for Closing {
    fn drop(&mut self) {
        self.engine.tunnels.close(&self.session);
        let (store, org, url) = (
            self.store.clone(),
            self.org.clone(),
            std::mem::take(&mut self.url),
        );
        tokio::spawn(async move {
            if let Err(e) = store.delete_endpoint(&org, &url, Timestamp::now()).await {
                tracing::warn!(error = %e, "cannot delete a posthorn listen endpoint");
            }
        });
        tracing::info!(org.id = %self.org.as_str(), "posthorn listen disconnected");
    }
}
