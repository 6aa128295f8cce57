//! The web console (`/console/`, operators) and the customer portal (`/portal/`, an
//! org's own people): server-rendered pages over the same store and the same API
//! handlers, so a page can do nothing its session's key could not do through the API.
//!
//! Policy: every page and form is reached through a [`session::Viewer`] (who is signed
//! in, as which key, allowed what); every state change is a POST that carries the
//! session's CSRF token ([`session::Action`]). Templates are askama (compiled in, every
//! value escaped); the one script and stylesheet are embedded; the Content-Security-
//! Policy allows nothing from another origin and no inline script or style.

mod admin;
mod chart;
mod endpoint_ops;
mod endpoints;
mod live;
mod log;
pub mod session;
mod sign_in;

use askama::Template;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Extension, Router};

use crate::app::AppState;
use crate::domain::{Capability, Timestamp};
use crate::error::ApiError;

/// Which of the two sites a request is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    Console,
    Portal,
}

impl Surface {
    /// The path every page of the site is under.
    pub fn base(self) -> &'static str {
        match self {
            Self::Console => "/console",
            Self::Portal => "/portal",
        }
    }
}

/// What went wrong on a page: an API error shown in plain words, or no valid session.
#[derive(Debug)]
pub enum WebError {
    Api(ApiError),
    /// No session cookie at all.
    NoSession(Surface),
    /// An expired or revoked session (or a cookie that names none).
    SignedOut(Surface),
    /// 403: the session may not do this (the message says why, in plain words).
    Denied(&'static str),
}

impl From<ApiError> for WebError {
    fn from(e: ApiError) -> Self {
        Self::Api(e)
    }
}

impl From<crate::store::StoreError> for WebError {
    fn from(e: crate::store::StoreError) -> Self {
        Self::Api(e.into())
    }
}

pub type WebResult<T = Response> = Result<T, WebError>;

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    chrome: Chrome,
    status: u16,
    message: String,
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        match self {
            Self::NoSession(Surface::Console) => Redirect::to("/console/sign-in").into_response(),
            Self::SignedOut(Surface::Console) => {
                Redirect::to("/console/sign-in?expired=1").into_response()
            }
            Self::NoSession(Surface::Portal) | Self::SignedOut(Surface::Portal) => {
                let page = ErrorPage {
                    chrome: Chrome::bare(Surface::Portal, "Session ended"),
                    status: 401,
                    message: "This portal session has expired or was revoked. Open the portal \
                              again from the page that linked you here."
                        .into(),
                };
                (StatusCode::UNAUTHORIZED, render(&page)).into_response()
            }
            Self::Denied(message) => {
                let page = ErrorPage {
                    chrome: Chrome::bare(Surface::Console, "Not allowed"),
                    status: 403,
                    message: message.into(),
                };
                (StatusCode::FORBIDDEN, render(&page)).into_response()
            }
            Self::Api(e) => {
                e.log_cause();
                let status = e.status();
                let page = ErrorPage {
                    chrome: Chrome::bare(Surface::Console, "Something went wrong"),
                    status: status.as_u16(),
                    message: e.to_string(),
                };
                let mut response = (status, render(&page)).into_response();
                if let ApiError::TooManyRequests { retry_after_secs } = e {
                    response
                        .headers_mut()
                        .insert(header::RETRY_AFTER, retry_after_secs.max(1).into());
                }
                response
            }
        }
    }
}

#[derive(Template)]
#[template(path = "notice.html")]
/// A result page: a heading, what happened, maybe a secret shown once.
pub struct Notice {
    pub chrome: Chrome,
    pub heading: String,
    /// Shown in a copyable box, with a warning that it is shown once.
    pub secret: Option<String>,
    pub facts: Vec<(String, String)>,
    /// A body shown as preformatted text.
    pub body: Option<String>,
    pub next_href: String,
    pub next_label: String,
}

#[derive(Template)]
#[template(path = "confirm.html")]
/// A question before a change: the form that makes it, or back.
pub struct Confirm {
    pub chrome: Chrome,
    pub heading: String,
    pub message: String,
    pub action: String,
    pub button: String,
    pub hidden: Vec<(String, String)>,
    pub back: String,
}

/// The frame of every page: where the site is, the CSRF token, what the viewer may do.
pub struct Chrome {
    pub base: &'static str,
    pub console: bool,
    pub title: String,
    pub csrf: String,
    pub org: String,
    /// Which navigation entry is current.
    pub nav: &'static str,
    pub signed_in: bool,
    pub can_manage: bool,
    pub can_retry: bool,
    pub can_rotate: bool,
    pub read_only: bool,
}

impl Chrome {
    /// A page without a session (sign-in, errors).
    pub fn bare(surface: Surface, title: &str) -> Self {
        Self {
            base: surface.base(),
            console: surface == Surface::Console,
            title: title.to_owned(),
            csrf: String::new(),
            org: String::new(),
            nav: "",
            signed_in: false,
            can_manage: false,
            can_retry: false,
            can_rotate: false,
            read_only: false,
        }
    }
}

/// Renders a page; a template that cannot render is a server error.
pub fn render(page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            let e = ApiError::Internal(anyhow::anyhow!("template: {e}"));
            e.log_cause();
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Server error was encountered",
            )
                .into_response()
        }
    }
}

/// A time as pages show it: ISO in UTC, turned into the viewer's zone by app.js.
pub struct When {
    pub iso: String,
    pub text: String,
}

impl When {
    pub fn of(t: Timestamp) -> Self {
        let iso = t.to_rfc3339();
        let text = iso.replace('T', " ").chars().take(19).collect::<String>() + " UTC";
        Self { iso, text }
    }
}

/// A keyset position from a page's link (`?before=`, `?after=`): a token of list
/// `kind` (encrypted, as the API's pagination tokens), a 400 page otherwise.
pub fn position(
    state: &AppState,
    kind: &str,
    name: &str,
    raw: Option<&str>,
) -> WebResult<Option<i64>> {
    match raw.filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => match state.store.public_ids().parse_token(kind, s) {
            Some(n) => Ok(Some(n)),
            None => Err(WebError::Api(ApiError::invalid(
                name,
                "must be a position from a page's link",
            ))),
        },
    }
}

/// A time in milliseconds from a confirmation form's hidden field: a 400 page when it
/// is not a number.
pub fn millis(name: &str, raw: Option<&str>) -> WebResult<Option<i64>> {
    match raw.filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => s
            .parse()
            .map(Some)
            .map_err(|_| WebError::Api(ApiError::invalid(name, "must be a time from the form"))),
    }
}

/// A capability's check as a page error: 403 in plain words.
pub fn forbidden(what: Capability) -> WebError {
    WebError::Denied(match what {
        Capability::View => "This session may not view this.",
        Capability::ManageEndpoints => "This session may not change endpoints.",
        Capability::Retry => "This session may not retry or recover deliveries.",
        Capability::RotateSecrets => "This session may not rotate secrets.",
    })
}

const APP_CSS: &str = include_str!("../../assets/app.css");
const APP_JS: &str = include_str!("../../assets/app.js");

async fn css() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], APP_CSS).into_response()
}

async fn js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        APP_JS,
    )
        .into_response()
}

/// The pages both sites have.
fn shared() -> Router<AppState> {
    Router::new()
        .route("/assets/app.css", get(css))
        .route("/assets/app.js", get(js))
        .merge(endpoints::routes())
        .merge(endpoint_ops::routes())
        .merge(log::routes())
        .merge(chart::routes())
}

/// `/console/...` and `/portal/...`, with their security headers.
pub fn router(state: &AppState) -> Router<AppState> {
    let frame_ancestors = if state.config.web.portal_frame_origins.is_empty() {
        "'self'".to_owned()
    } else {
        format!("'self' {}", state.config.web.portal_frame_origins.join(" "))
    };
    let console = shared()
        .merge(admin::routes())
        .merge(session::console_routes())
        .fallback(not_found)
        .layer(Extension(Surface::Console))
        .layer(axum::middleware::from_fn_with_state(
            Headers::new("'none'"),
            security_headers,
        ));
    let portal_headers =
        axum::middleware::from_fn_with_state(Headers::new(&frame_ancestors), security_headers);
    let portal = shared()
        .merge(session::portal_routes())
        .fallback(not_found)
        .layer(Extension(Surface::Portal))
        .layer(portal_headers.clone());
    // The portal link's page, `/portal/` (its token in the fragment).
    let portal_start = Router::new()
        .route("/portal/", get(session::portal_start))
        .layer(portal_headers);
    let to_console = || async { Redirect::to("/console/endpoints") };
    Router::new()
        .route("/console", get(to_console))
        .route("/console/", get(to_console))
        .route("/portal", get(|| async { Redirect::to("/portal/") }))
        .merge(portal_start)
        .nest("/console", console)
        .nest("/portal", portal)
}

/// A page that does not exist, as a page.
async fn not_found() -> WebError {
    WebError::Api(ApiError::NotFound)
}

#[derive(Clone)]
struct Headers {
    csp: HeaderValue,
}

impl Headers {
    fn new(frame_ancestors: &str) -> Self {
        let csp = format!(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'self'; base-uri 'none'; \
             frame-ancestors {frame_ancestors}"
        );
        Self {
            csp: HeaderValue::from_str(&csp).unwrap_or(HeaderValue::from_static(
                "default-src 'none'; frame-ancestors 'none'",
            )),
        }
    }
}

async fn security_headers(
    axum::extract::State(h): axum::extract::State<Headers>,
    request: Request,
    next: Next,
) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, h.csp.clone());
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // `same-origin`, not `no-referrer`: under `no-referrer` browsers send `Origin: null`
    // with a form post, and the form checks need its real origin (session.rs).
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if h.csp.to_str().is_ok_and(|s| s.ends_with("'none'")) {
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    response
}
