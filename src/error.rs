//! The one error type of the HTTP API and its single mapping to responses.
//!
//! Policy: every non-2xx response carries the contract's `{"message", "code"}` body.
//! Client errors name the offending field; server errors are opaque to the client and
//! their cause is logged once, here, with its `source()` chain.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::publisher::PublishError;
use crate::store::StoreError;

/// An error answered to an API client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: a field is missing.
    #[error("{0} is required")]
    RequiredField(String),
    /// 400: a field is present but not acceptable; the message names it.
    #[error("{0}")]
    InvalidField(String),
    /// 400: the body is not JSON, or not the JSON shape expected.
    #[error("{0}")]
    InvalidJson(String),
    /// 400: the request is not HTTP/1.1 that can be parsed (hyper's own rejection).
    #[error("the request could not be parsed: a malformed request line or header, or a missing, invalid or repeated Content-Length")]
    MalformedRequest,
    /// 401: no key, unknown key, revoked key.
    #[error("access is unauthorized")]
    Unauthorized,
    /// 403: the key's role may not do this.
    #[error("insufficient permissions")]
    Forbidden,
    /// 404: nothing of that id in the caller's org.
    #[error("Requested resource does not exist")]
    NotFound,
    /// 405: the path exists, the method does not.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 408: the request's body did not arrive in time.
    #[error("the request body did not arrive in time")]
    RequestTimeout,
    /// 409: the resource already exists.
    #[error("{0}")]
    AlreadyExists(String),
    /// 413: the body is over the configured limit.
    #[error("request body is larger than the configured limit")]
    PayloadTooLarge,
    /// 413: one event's envelope is over the configured limit; the message names it.
    #[error("{0}")]
    EventTooLarge(String),
    /// 414: the request target is too long to read (hyper's own rejection).
    #[error("the request URI is too long")]
    UriTooLong,
    /// 431: the request line and headers do not fit the read buffer.
    #[error("the request line and headers are too large (the limit is about 64 KiB)")]
    HeadersTooLarge,
    /// 422: checking data against an event type's schema took the whole validation
    /// budget (POSTHORN_VALIDATION_BUDGET); nothing was stored. The message names it.
    #[error("{0}")]
    ValidationBudgetExceeded(String),
    /// 422: a bound per org or per request would be passed (endpoints of an org,
    /// deliveries of one publish); nothing was stored. The message names the setting.
    #[error("{0}")]
    LimitExceeded(String),
    /// 415: the body is not declared as JSON.
    #[error("Content-Type must be application/json")]
    UnsupportedMediaType,
    /// 429: the key is over its rate limit.
    #[error("Too many requests. Client has exceeded the rate limit for this endpoint.")]
    TooManyRequests { retry_after_secs: u64 },
    /// 503: the server already serves as many connections as it may.
    #[error("too many connections; try again shortly")]
    TooManyConnections,
    /// 503: the store cannot be reached; nothing was acknowledged.
    #[error("the service is temporarily unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// 500: anything else. The cause is logged, never sent.
    #[error("Server error was encountered")]
    Internal(#[source] anyhow::Error),
}

/// The body of every non-2xx response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for people; names the field at fault.
    pub message: String,
    /// Short snake_case value, safe to switch on.
    pub code: String,
}

impl ApiError {
    pub fn invalid(field: &str, why: impl std::fmt::Display) -> Self {
        Self::InvalidField(format!("{field} {why}"))
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::RequiredField(_)
            | Self::InvalidField(_)
            | Self::InvalidJson(_)
            | Self::MalformedRequest => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::AlreadyExists(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge | Self::EventTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UriTooLong => StatusCode::URI_TOO_LONG,
            Self::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::ValidationBudgetExceeded(_) | Self::LimitExceeded(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) | Self::TooManyConnections => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::RequiredField(_) => "required_field",
            Self::InvalidField(_) => "invalid_field",
            Self::InvalidJson(_) => "invalid_json",
            Self::MalformedRequest => "malformed_request",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::NotFound => "resource_not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::RequestTimeout => "request_timeout",
            Self::AlreadyExists(_) => "already_exists",
            Self::PayloadTooLarge | Self::EventTooLarge(_) => "payload_too_large",
            Self::UriTooLong => "uri_too_long",
            Self::HeadersTooLarge => "headers_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::ValidationBudgetExceeded(_) => "validation_budget_exceeded",
            Self::LimitExceeded(_) => "limit_exceeded",
            Self::TooManyRequests { .. } => "too_many_requests",
            Self::Unavailable(_) | Self::TooManyConnections => "unavailable",
            Self::Internal(_) => "server_error",
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound => Self::NotFound,
            StoreError::Conflict(what) => Self::AlreadyExists(what),
            StoreError::Invalid { field, why } => Self::invalid(field, why),
            StoreError::Limit(what) => Self::LimitExceeded(what),
            StoreError::Unavailable(e) => Self::Unavailable(e),
            StoreError::Other(e) => Self::Internal(e),
        }
    }
}

impl From<PublishError> for ApiError {
    fn from(err: PublishError) -> Self {
        match err {
            PublishError::Unavailable(_) | PublishError::Stopped => Self::Unavailable(err.into()),
            PublishError::Failed(_) => Self::Internal(err.into()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.log_cause();
        let mut response = (self.status(), axum::Json(self.body())).into_response();
        if let Some(secs) = self.retry_after() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl ApiError {
    /// Logs a server error's cause (once, by whoever answers it: the API or a page).
    pub fn log_cause(&self) {
        match self {
            Self::Internal(cause) => {
                tracing::error!(error = format!("{cause:#}"), "request failed")
            }
            Self::Unavailable(cause) => {
                tracing::warn!(error = format!("{cause:#}"), "store unavailable")
            }
            _ => {}
        }
    }

    fn body(&self) -> ErrorBody {
        ErrorBody {
            message: self.to_string(),
            code: self.code().to_owned(),
        }
    }

    fn retry_after(&self) -> Option<u64> {
        match self {
            Self::TooManyRequests { retry_after_secs } => Some((*retry_after_secs).max(1)),
            Self::Unavailable(_) | Self::TooManyConnections => Some(1),
            _ => None,
        }
    }

    /// The whole HTTP/1.1 response, bytes for the wire, that closes the connection:
    /// for the answers the connection layer writes itself, outside any handler.
    pub fn wire_response(&self) -> Vec<u8> {
        let status = self.status();
        let body = serde_json::to_vec(&self.body()).unwrap_or_default();
        let mut out = format!(
            "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
             connection: close\r\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            body.len()
        );
        if let Some(secs) = self.retry_after() {
            out.push_str(&format!("retry-after: {secs}\r\n"));
        }
        out.push_str("\r\n");
        let mut out = out.into_bytes();
        out.extend_from_slice(&body);
        out
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// An error and all of its sources, `: `-separated, for one log line.
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        out.push_str(": ");
        out.push_str(&e.to_string());
        source = e.source();
    }
    out
}
