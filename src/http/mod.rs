//! The HTTP API: one file per resource, each with its own `router()`; this module
//! assembles them, the OpenAPI document and the cross-cutting layers.

pub mod auth;
pub mod catalog;
pub mod conn;
mod conn_limits;
pub mod deliveries;
pub mod endpoint_ops;
pub mod endpoints;
pub mod events;
pub mod flow;
pub mod input;
pub mod keys;
pub mod listen;
pub mod openapi;
pub mod ops;
pub mod pagination;
pub mod portal;
pub mod ratelimit;
pub mod rejections;
pub mod schemas;
pub mod streams;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Router};
use serde::Serialize;
use tower_http::catch_panic::CatchPanicLayer;
use utoipa::{OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;

use crate::app::AppState;
use crate::error::ApiError;
pub use crate::error::ErrorBody;

/// The empty object `{}` (Delete's answer).
#[derive(Debug, Serialize, ToSchema)]
pub struct Empty {}

/// Every route with its documentation: the router and the OpenAPI document are split
/// from this one value, so they cannot drift apart.
fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .nest(
            "/webhooks/v1",
            endpoints::router()
                .merge(catalog::router())
                .merge(schemas::router())
                .merge(events::router())
                .merge(deliveries::router())
                .merge(endpoint_ops::router())
                .merge(keys::router())
                .merge(listen::router())
                .merge(portal::router()),
        )
        .merge(ops::router())
}

/// The OpenAPI document, pretty-printed.
pub fn openapi_json() -> String {
    serde_json::to_string_pretty(&openapi::document(api().split_for_parts().1)).unwrap_or_default()
}

/// The API, with `pages` (the web console and portal) beside it under the same layers.
pub fn router(state: AppState, pages: Router<AppState>) -> Router {
    let (router, doc) = api().split_for_parts();
    let router = router.merge(pages);
    let doc = openapi::document(doc);
    let doc = ops::OpenApiDoc(Arc::new(
        serde_json::to_string_pretty(&doc).unwrap_or_default(),
    ));
    router
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(Extension(doc))
        .layer(Extension(conn::BodyTimeout(
            state.config.connections.body_timeout,
        )))
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .layer(CatchPanicLayer::custom(|_| -> Response {
            ApiError::Internal(anyhow::anyhow!("request handler panicked")).into_response()
        }))
        .layer(axum::middleware::from_fn_with_state(
            state.metrics.clone(),
            crate::telemetry::track,
        ))
        .with_state(state)
}
