//! `posthorn listen --forward-to`: the server side of the outbound connection.
//!
//! `GET /listen` (admin) creates a temporary endpoint of the org subscribed to
//! `events` (every event when absent) and answers a server-sent event stream: first a
//! `ready` event (`{session, endpointId, secret}`), then one `delivery` event per
//! attempt (`{id, headers, body}`: the signed request as it would be POSTed). The CLI
//! reports each local answer with `POST /listen/{session}` (`{id, status?, body?,
//! error?}`), and that is the attempt's outcome. When the stream closes the endpoint
//! is deleted, with its pending deliveries. See `delivery/tunnel.rs`.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Json;
use futures_util::stream::Stream;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::auth::{AdminOnly, Authorized};
use super::catalog::{validate_subscriptions, EventTypeInput};
use super::input::{JsonBody, PathParam, QueryParams};
use super::{Empty, ErrorBody};
use crate::app::AppState;
use crate::delivery::tunnel::{self, Reply};
use crate::domain::{EndpointUrl, OrgId, Secret, Timestamp};
use crate::error::{ApiError, ApiResult};
use crate::store::{DynStore, FlowConfig, NewEndpoint};

/// How often an idle stream carries a comment, so proxies keep it open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

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
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
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
    let stop = state.engine.tunnels.stop.clone();
    let stream = futures_util::stream::unfold(
        (Some(ready), requests, guard, stop),
        |(ready, mut requests, guard, stop)| async move {
            if let Some(ready) = ready {
                let event = Event::default().event("ready").data(ready.to_string());
                return Some((Ok(event), (None, requests, guard, stop)));
            }
            let next = tokio::select! {
                next = requests.recv() => next,
                () = stop.cancelled() => None,
            };
            let data = serde_json::to_string(&next?).unwrap_or_default();
            let event = Event::default().event("delivery").data(data);
            Some((Ok(event), (None, requests, guard, stop)))
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
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
