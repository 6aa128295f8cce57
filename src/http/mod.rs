//! The HTTP API: one file per resource, each with its own `router()`; this module
//! assembles them, the OpenAPI document and the cross-cutting layers.

pub mod auth;
pub mod catalog;
pub mod conn;
pub mod deliveries;
pub mod endpoint_ops;
pub mod endpoints;
pub mod events;
pub mod flow;
pub mod input;
pub mod keys;
pub mod ops;
pub mod pagination;
pub mod ratelimit;
pub mod rejections;
pub mod schemas;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Router};
use serde::Serialize;
use tower_http::catch_panic::CatchPanicLayer;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;

use crate::app::AppState;
use crate::error::ApiError;
pub use crate::error::ErrorBody;

/// The empty object `{}` (Delete's answer).
#[derive(Debug, Serialize, ToSchema)]
pub struct Empty {}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "posthorn",
        description = "Self-hosted webhook sender. The management API under /webhooks/v1 is wire-compatible with Fullstory's Webhooks API v1. Every input field is also accepted in snake_case. Authenticate with `Authorization: Basic <api-key>` (the raw key) or `Bearer <api-key>`."
    ),
    modifiers(&SecurityAddon),
    components(schemas(ErrorBody))
)]
struct ApiDoc;

struct SecurityAddon;

impl Modify for SecurityAddon {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Authorization",
                "`Basic <api-key>` or `Bearer <api-key>`",
            ))),
        );
    }
}

/// Every route with its documentation: the router and the OpenAPI document are split
/// from this one value, so they cannot drift apart.
fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .nest(
            "/webhooks/v1",
            endpoints::router()
                .merge(catalog::router())
                .merge(schemas::router())
                .merge(events::router())
                .merge(deliveries::router())
                .merge(endpoint_ops::router())
                .merge(keys::router()),
        )
        .merge(ops::router())
}

/// The OpenAPI document, pretty-printed.
pub fn openapi_json() -> String {
    api()
        .split_for_parts()
        .1
        .to_pretty_json()
        .unwrap_or_default()
}

pub fn router(state: AppState) -> Router {
    let (router, doc) = api().split_for_parts();
    let doc = ops::OpenApiDoc(Arc::new(doc.to_pretty_json().unwrap_or_default()));
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
