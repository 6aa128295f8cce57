//! Who is looking at a page: the session behind a cookie, the portal's trade of a grant
//! for a cookie, and the CSRF-checked form every state change arrives as (console
//! sign-in is in `sign_in.rs`).
//!
//! Policy: the browser keeps only an `HttpOnly` cookie naming a session (the key never
//! leaves the sign-in request); the session acts as the key it was made with, which
//! must still be a live admin key, so revoking the key signs its sessions out. A form
//! whose `csrf` field is not the session's token changes nothing (403), nor does any
//! form post (sign-in, every change, the portal's trade) whose `Origin`, when the
//! browser sends one, is not this server's own (`POSTHORN_PUBLIC_URL`'s, or that of the
//! `Host` it was sent to).
//!
//! Budgets: a console session counts against its key's rate limit (it is the operator
//! acting as the key); a portal session against its own and its link's
//! (`http::ratelimit::PortalLimits`), never the key's. Trading a link for a session is
//! throttled per link and per client address, and a link keeps at most
//! `POSTHORN_PORTAL_SESSIONS_PER_LINK` live sessions: a trade beyond it ends the link's
//! oldest session (one person's many tabs share one cookie, so it is another browser's
//! oldest that ends, never the one opening the link now).

use std::time::Duration;

use askama::Template;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use subtle::ConstantTimeEq;

use super::{render, sign_in, Chrome, Surface, WebError, WebResult};
use crate::app::AppState;
use crate::domain::{Capabilities, Capability, Role, SessionToken, Timestamp};
use crate::error::ApiError;
use crate::http::auth::{AdminOnly, Authorized};
use crate::store::{ApiKeyRecord, WebSessionKind, WebSessionRecord};

pub(super) const CONSOLE_COOKIE: &str = "posthorn_console";
const PORTAL_COOKIE: &str = "posthorn_portal";
/// Longest a portal cookie session lasts (less if its grant ends sooner).
const PORTAL_SESSION_MAX: Duration = Duration::from_secs(12 * 3600);
/// Largest form a page may post.
const MAX_FORM_BYTES: usize = 256 * 1024;

/// The signed-in viewer of a page.
pub struct Viewer {
    pub surface: Surface,
    pub session: WebSessionRecord,
    pub caps: Capabilities,
    /// The live admin key the session acts as.
    pub key: ApiKeyRecord,
}

impl Viewer {
    /// The API caller this viewer is.
    pub fn caller(&self) -> Authorized<AdminOnly> {
        Authorized::acting_as(self.key.clone())
    }

    /// Whether the viewer may do `c` (viewing always; changes unless read-only).
    pub fn may(&self, c: Capability) -> bool {
        c == Capability::View || (!self.session.read_only && self.caps.has(c))
    }

    /// `Ok` when the viewer may do `c`, else the 403 page.
    pub fn require(&self, c: Capability) -> WebResult<()> {
        if self.may(c) {
            Ok(())
        } else {
            Err(super::forbidden(c))
        }
    }

    /// `Ok` on the console only (the catalog and the keys have no portal pages).
    pub fn console_only(&self) -> WebResult<()> {
        match self.surface {
            Surface::Console => Ok(()),
            Surface::Portal => Err(WebError::Api(ApiError::NotFound)),
        }
    }

    /// Whether the session still holds (a live page checks it as it goes).
    pub async fn still_valid(&self, state: &AppState) -> bool {
        let now = Timestamp::now();
        let Ok(Some(s)) = state.store.find_web_session(&self.session.hash).await else {
            return false;
        };
        s.revoked.is_none()
            && s.expires > now
            && matches!(live_admin(state, &self.key.hash).await, Ok(Some(_)))
            && matches!(grant_holds(state, &s).await, Ok(true))
    }

    /// The frame of a page this viewer sees.
    pub fn chrome(&self, title: impl Into<String>, nav: &'static str) -> Chrome {
        Chrome {
            base: self.surface.base(),
            console: self.surface == Surface::Console,
            title: title.into(),
            csrf: self.session.csrf.clone(),
            org: self.session.org_id.as_str().to_owned(),
            nav,
            signed_in: true,
            can_manage: self.may(Capability::ManageEndpoints),
            can_retry: self.may(Capability::Retry),
            can_rotate: self.may(Capability::RotateSecrets),
            read_only: self.session.read_only,
        }
    }
}

pub(super) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
}

/// The live admin key behind `hash`, if it still is one.
pub(super) async fn live_admin(
    state: &AppState,
    hash: &crate::domain::KeyHash,
) -> WebResult<Option<ApiKeyRecord>> {
    Ok(state
        .store
        .find_api_key(hash)
        .await?
        .filter(|k| k.revoked.is_none() && k.role == Role::Admin && k.hash.ct_eq(hash)))
}

/// Whether the grant a portal session was made from is still unrevoked (revoking a
/// grant marks its sessions too; this also covers a session made while it was revoked).
async fn grant_holds(state: &AppState, session: &WebSessionRecord) -> WebResult<bool> {
    let Some(grant) = &session.grant_hash else {
        return Ok(true);
    };
    Ok(state
        .store
        .find_web_session(grant)
        .await?
        .is_some_and(|g| g.kind == WebSessionKind::PortalGrant && g.revoked.is_none()))
}

/// A stored session of `kind` named by `raw`, unexpired and unrevoked.
async fn live_session(
    state: &AppState,
    raw: &str,
    kind: WebSessionKind,
) -> WebResult<Option<WebSessionRecord>> {
    let hash = SessionToken::from_raw(raw).hash();
    let now = Timestamp::now();
    Ok(state.store.find_web_session(&hash).await?.filter(|s| {
        s.kind == kind && s.revoked.is_none() && s.expires > now && s.hash.ct_eq(&hash)
    }))
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = WebError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> WebResult<Self> {
        let surface = parts
            .extensions
            .get::<Surface>()
            .copied()
            .unwrap_or(Surface::Console);
        let (name, kind) = match surface {
            Surface::Console => (CONSOLE_COOKIE, WebSessionKind::Console),
            Surface::Portal => (PORTAL_COOKIE, WebSessionKind::Portal),
        };
        let signed_out = || WebError::SignedOut(surface);
        let raw = cookie(&parts.headers, name).ok_or(WebError::NoSession(surface))?;
        let session = live_session(state, raw, kind)
            .await?
            .ok_or_else(signed_out)?;
        let key_hash = session.key_hash.ok_or_else(signed_out)?;
        let key = live_admin(state, &key_hash)
            .await?
            .filter(|k| k.org_id == session.org_id)
            .ok_or_else(signed_out)?;
        if !grant_holds(state, &session).await? {
            return Err(signed_out());
        }
        match surface {
            Surface::Console => {
                if let Some(limiter) = &state.limiter {
                    limiter.check(&state.store, &key.id).await?;
                }
            }
            Surface::Portal => {
                state
                    .portal_limits
                    .request(&state.store, &session.hash, session.grant_hash.as_ref())
                    .await?;
            }
        }
        Ok(Self {
            surface,
            caps: Capabilities::parse_stored(&session.capabilities),
            session,
            key,
        })
    }
}

/// A posted form's fields, in order (a name may repeat: checkboxes).
pub struct Form(Vec<(String, String)>);

impl Form {
    fn parse(bytes: &[u8]) -> Self {
        Self(url::form_urlencoded::parse(bytes).into_owned().collect())
    }

    /// The first value of `name`, trimmed; none when absent or empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// Every non-empty value of `name`.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    }
}

pub(super) async fn read_form(req: Request, state: &AppState) -> WebResult<Form> {
    let limit = MAX_FORM_BYTES.min(state.config.max_body_bytes);
    let body = axum::body::to_bytes(req.into_body(), limit);
    let bytes: Bytes = tokio::time::timeout(state.config.connections.body_timeout, body)
        .await
        .map_err(|_| ApiError::RequestTimeout)?
        .map_err(|_| ApiError::PayloadTooLarge)?;
    Ok(Form::parse(&bytes))
}

pub(super) fn ct_str_eq(a: &str, b: &str) -> bool {
    !b.is_empty() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// Whether a form post comes from this server's own pages: its `Origin`, when the
/// browser sent one, is `POSTHORN_PUBLIC_URL`'s origin or that of the `Host` the request
/// was sent to (the scheme aside: a TLS proxy's). `Origin: null` (what a browser sends
/// under a `no-referrer` policy, or from a sandboxed frame) is ours only when the
/// browser itself says the post came from the same origin (`Sec-Fetch-Site`, which no
/// page can set).
pub(super) fn from_own_origin(state: &AppState, headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    if origin == "null" {
        return headers
            .get("sec-fetch-site")
            .is_some_and(|site| site == "same-origin");
    }
    if let Some(public) = &state.config.web.public_url {
        if origin.eq_ignore_ascii_case(&public.origin().ascii_serialization()) {
            return true;
        }
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let authority = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"));
    matches!((authority, host), (Some(a), Some(h)) if !h.is_empty() && a.eq_ignore_ascii_case(h))
}

/// The 403 of a form posted from another origin.
pub(super) fn foreign_origin() -> WebError {
    WebError::Denied("This form was sent from another site: open the page here and try again.")
}

/// A state change: the viewer and their form, whose CSRF token matched.
pub struct Action {
    pub viewer: Viewer,
    pub form: Form,
}

impl FromRequest<AppState> for Action {
    type Rejection = WebError;

    async fn from_request(req: Request, state: &AppState) -> WebResult<Self> {
        let (mut parts, body) = req.into_parts();
        if !from_own_origin(state, &parts.headers) {
            return Err(foreign_origin());
        }
        let viewer = Viewer::from_request_parts(&mut parts, state).await?;
        let form = read_form(Request::from_parts(parts, body), state).await?;
        if !ct_str_eq(form.get("csrf").unwrap_or(""), &viewer.session.csrf) {
            return Err(WebError::Denied(
                "The form's security token is missing or out of date: reload the page and try again.",
            ));
        }
        Ok(Self { viewer, form })
    }
}

pub(super) fn set_cookie(
    state: &AppState,
    name: &str,
    path: &str,
    value: &str,
    max_age: u64,
) -> String {
    let site = if state.config.https() {
        if name == PORTAL_COOKIE {
            // The portal may be framed by another site: its cookie must be sent there.
            "; SameSite=None; Secure; Partitioned"
        } else {
            "; SameSite=Strict; Secure"
        }
    } else {
        "; SameSite=Strict"
    };
    format!("{name}={value}; Path={path}; HttpOnly; Max-Age={max_age}{site}")
}

pub fn console_routes() -> Router<AppState> {
    Router::new()
        .route("/sign-in", get(sign_in::page).post(sign_in::sign_in))
        .route("/sign-out", post(sign_out))
}

pub fn portal_routes() -> Router<AppState> {
    Router::new()
        .route("/session", post(portal_session))
        .route("/sign-out", post(sign_out))
}

async fn sign_out(State(state): State<AppState>, action: Action) -> WebResult {
    let v = &action.viewer;
    state
        .store
        .revoke_web_session(&v.session.hash, Timestamp::now())
        .await?;
    let (name, path, to) = match v.surface {
        Surface::Console => (CONSOLE_COOKIE, "/console", "/console/sign-in"),
        Surface::Portal => (PORTAL_COOKIE, "/portal", "/portal/endpoints"),
    };
    Ok((
        [(header::SET_COOKIE, set_cookie(&state, name, path, "", 0))],
        Redirect::to(to),
    )
        .into_response())
}

#[derive(Template)]
#[template(path = "portal_start.html")]
struct PortalStart {
    chrome: Chrome,
}

pub async fn portal_start() -> Response {
    render(&PortalStart {
        chrome: Chrome::bare(Surface::Portal, "Opening the portal"),
    })
}

/// Trades a grant token (from the portal URL's fragment, posted by app.js with the
/// `X-Posthorn-Portal` header no cross-site form can set) for a portal cookie session.
async fn portal_session(State(state): State<AppState>, req: Request) -> WebResult {
    if req.headers().get("x-posthorn-portal").is_none() {
        return Err(WebError::Denied(
            "This request must come from the portal page.",
        ));
    }
    if !from_own_origin(&state, req.headers()) {
        return Err(foreign_origin());
    }
    // Whatever comes of the trade, the session this browser had ends: a link that
    // fails must not leave the frame showing a previous session's org.
    if let Some(old) = cookie(req.headers(), PORTAL_COOKIE) {
        let old = SessionToken::from_raw(old).hash();
        state
            .store
            .revoke_web_session(&old, Timestamp::now())
            .await?;
    }
    let addr = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    if let Some(ip) = addr {
        if let Some(limiter) = &state.failed_auth {
            limiter.admit(ip)?;
        }
        state.portal_limits.trade_from(&state.store, ip).await?;
    }
    match trade(&state, req, addr).await {
        Err(WebError::SignedOut(surface)) => {
            let mut response = WebError::SignedOut(surface).into_response();
            if let Ok(v) = set_cookie(&state, PORTAL_COOKIE, "/portal", "", 0).parse() {
                response.headers_mut().insert(header::SET_COOKIE, v);
            }
            Ok(response)
        }
        other => other,
    }
}

/// The grant named by the posted token, traded for a portal session and its cookie; the
/// link's oldest session ends when it would have more than its bound.
async fn trade(state: &AppState, req: Request, addr: Option<std::net::IpAddr>) -> WebResult {
    let form = read_form(req, state).await?;
    let raw = form.get("token").unwrap_or("");
    let Some(grant) = live_session(state, raw, WebSessionKind::PortalGrant).await? else {
        // A token that names nothing is a failed authentication (a guess); an expired
        // or revoked link is a customer's old page, not counted.
        let hash = SessionToken::from_raw(raw).hash();
        if state.store.find_web_session(&hash).await?.is_none() {
            if let (Some(limiter), Some(ip)) = (&state.failed_auth, addr) {
                if let e @ ApiError::TooManyRequests { .. } = limiter.failed(ip) {
                    return Err(e.into());
                }
            }
        }
        return Err(WebError::SignedOut(Surface::Portal));
    };
    state
        .portal_limits
        .trade_of(&state.store, &grant.hash)
        .await?;
    let key_hash = grant.key_hash.ok_or(WebError::SignedOut(Surface::Portal))?;
    live_admin(state, &key_hash)
        .await?
        .ok_or(WebError::SignedOut(Surface::Portal))?;
    let now = Timestamp::now();
    let expires = grant.expires.min(now.plus(PORTAL_SESSION_MAX));
    let token = SessionToken::generate();
    state
        .store
        .insert_web_session(&WebSessionRecord {
            hash: token.hash(),
            org_id: grant.org_id.clone(),
            kind: WebSessionKind::Portal,
            capabilities: grant.capabilities.clone(),
            read_only: grant.read_only,
            csrf: SessionToken::generate().expose().to_owned(),
            key_hash: Some(key_hash),
            grant_hash: Some(grant.hash),
            created: now,
            expires,
            revoked: None,
        })
        .await?;
    state
        .store
        .trim_grant_sessions(&grant.hash, state.portal_limits.sessions_per_link, now)
        .await?;
    let max_age = ((expires.millis() - now.millis()) / 1000).max(1) as u64;
    Ok((
        StatusCode::NO_CONTENT,
        [(
            header::SET_COOKIE,
            set_cookie(state, PORTAL_COOKIE, "/portal", token.expose(), max_age),
        )],
    )
        .into_response())
}
