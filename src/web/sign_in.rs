//! Console sign-in with an admin key.
//!
//! Policy: sign-in has no session yet, so the form carries its pre-session cookie's
//! value sealed under the master key with the time it was issued: a form token is good
//! only with the cookie it was made for, only from this server (any node sharing the
//! master key), and for an hour. On https the cookie is `__Host-` (no sibling site can
//! set it). The post must come from this server's own origin (`session::from_own_origin`).
//! Failed sign-ins count against the client address's failed-authentication limit, and
//! an address over it may not sign in (429), whatever key it posts.

use std::time::Duration;

use askama::Template;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};

use super::session::{
    cookie, ct_str_eq, foreign_origin, from_own_origin, live_admin, read_form, set_cookie,
    CONSOLE_COOKIE,
};
use super::{render, Chrome, Surface, WebResult};
use crate::app::AppState;
use crate::domain::{ApiKey, Capabilities, SessionToken, Timestamp};
use crate::error::ApiError;
use crate::store::{WebSessionKind, WebSessionRecord};

const SIGNIN_COOKIE: &str = "posthorn_signin";
/// The sign-in cookie where the site is https: no other site may set a `__Host-` cookie.
const HOST_SIGNIN_COOKIE: &str = "__Host-posthorn_signin";
/// What a sign-in form's token is sealed with (the master key's associated data).
const SIGNIN_AAD: &str = "posthorn-signin";
/// How long a sign-in form stays good.
const SIGNIN_FORM_TTL: Duration = Duration::from_secs(3600);

/// The sign-in cookie's name and path: `__Host-` (path `/`) on https.
fn signin_cookie(state: &AppState) -> (&'static str, &'static str) {
    if state.config.https() {
        (HOST_SIGNIN_COOKIE, "/")
    } else {
        (SIGNIN_COOKIE, "/console")
    }
}

/// A new sign-in form: its pre-session cookie's `Set-Cookie` and the token the form
/// carries (the cookie's value and the time, sealed under the master key).
fn signin_form(state: &AppState) -> (String, String) {
    use base64::Engine;
    let value = SessionToken::generate();
    let sealed = state.master_key.seal(
        format!("{}.{}", Timestamp::now().millis(), value.expose()).as_bytes(),
        SIGNIN_AAD,
    );
    let (name, path) = signin_cookie(state);
    let cookie = set_cookie(state, name, path, value.expose(), SIGNIN_FORM_TTL.as_secs());
    (
        cookie,
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sealed),
    )
}

/// Whether a posted sign-in token was made by this server for `cookie`, within the hour.
fn signin_token_holds(state: &AppState, cookie: &str, token: &str) -> bool {
    use base64::Engine;
    let Ok(sealed) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token) else {
        return false;
    };
    let Ok(plain) = state.master_key.open(&sealed, SIGNIN_AAD) else {
        return false;
    };
    let Some((issued, value)) = std::str::from_utf8(&plain)
        .ok()
        .and_then(|p| p.split_once('.'))
    else {
        return false;
    };
    let age = Timestamp::now().millis() - issued.parse::<i64>().unwrap_or(i64::MIN / 2);
    (0..=SIGNIN_FORM_TTL.as_millis() as i64).contains(&age) && ct_str_eq(cookie, value)
}

#[derive(Template)]
#[template(path = "sign_in.html")]
struct SignInPage {
    chrome: Chrome,
    token: String,
    error: Option<String>,
}

#[derive(serde::Deserialize)]
pub(super) struct SignInQuery {
    expired: Option<String>,
}

/// The sign-in form, with a new pre-session cookie.
pub(super) async fn page(
    State(state): State<AppState>,
    axum::extract::Query(q): axum::extract::Query<SignInQuery>,
) -> Response {
    let (cookie, token) = signin_form(&state);
    let page = SignInPage {
        chrome: Chrome::bare(Surface::Console, "Sign in"),
        token,
        error: q
            .expired
            .map(|_| "Your session has ended. Sign in again.".to_owned()),
    };
    ([(header::SET_COOKIE, cookie)], render(&page)).into_response()
}

/// Signs in: from this server's own page, with its form's token, from an address not
/// over its failed-authentication limit, with a live admin key.
pub(super) async fn sign_in(State(state): State<AppState>, req: Request) -> WebResult {
    let addr = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    if !from_own_origin(&state, req.headers()) {
        return Err(foreign_origin());
    }
    if let (Some(limiter), Some(ip)) = (&state.failed_auth, addr) {
        limiter.admit(ip)?;
    }
    let (signin_name, signin_path) = signin_cookie(&state);
    let expected = cookie(req.headers(), signin_name).map(str::to_owned);
    let form = read_form(req, &state).await?;
    let refuse = |message: &str| {
        let (cookie, token) = signin_form(&state);
        let page = SignInPage {
            chrome: Chrome::bare(Surface::Console, "Sign in"),
            token,
            error: Some(message.to_owned()),
        };
        Ok((
            StatusCode::UNAUTHORIZED,
            [(header::SET_COOKIE, cookie)],
            render(&page),
        )
            .into_response())
    };
    let given = form.get("signin").unwrap_or("");
    if !expected.is_some_and(|e| signin_token_holds(&state, &e, given)) {
        return refuse("The sign-in form expired. Try again.");
    }
    let key = ApiKey::from_raw(form.get("key").unwrap_or(""));
    let Some(record) = live_admin(&state, &key.hash()).await? else {
        if let (Some(limiter), Some(ip)) = (&state.failed_auth, addr) {
            if let e @ ApiError::TooManyRequests { .. } = limiter.failed(ip) {
                return Err(e.into());
            }
        }
        return refuse("That is not a valid admin API key of any org.");
    };
    let token = SessionToken::generate();
    let now = Timestamp::now();
    let ttl = state.config.web.console_session_ttl;
    state
        .store
        .insert_web_session(&WebSessionRecord {
            hash: token.hash(),
            org_id: record.org_id.clone(),
            kind: WebSessionKind::Console,
            capabilities: Capabilities::all().to_string(),
            read_only: false,
            csrf: SessionToken::generate().expose().to_owned(),
            key_hash: Some(record.hash),
            grant_hash: None,
            created: now,
            expires: now.plus(ttl),
            revoked: None,
        })
        .await?;
    let mut response = Redirect::to("/console/endpoints").into_response();
    let headers = response.headers_mut();
    for value in [
        set_cookie(
            &state,
            CONSOLE_COOKIE,
            "/console",
            token.expose(),
            ttl.as_secs(),
        ),
        set_cookie(&state, signin_name, signin_path, "", 0),
    ] {
        if let Ok(v) = value.parse() {
            headers.append(header::SET_COOKIE, v);
        }
    }
    Ok(response)
}
