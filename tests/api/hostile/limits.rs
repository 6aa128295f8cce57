//! Budgets an attacker tried to spend or dodge: a customer's portal spending the
//! operator's key, portal-link trades without bound, key guessing past the
//! failed-authentication limit, and a sign-in (or a change) posted from another site.

use std::net::{IpAddr, Ipv4Addr};

use reqwest::redirect::Policy;
use reqwest::{Client, Response};
use serde_json::json;
use tokio::task::JoinSet;

use crate::helpers::{spawn_app_with, TestApp};

/// A client that connects from `from` (any 127/8 address reaches the server) and does
/// not follow redirects.
fn client_from(from: Ipv4Addr) -> Client {
    Client::builder()
        .redirect(Policy::none())
        .local_address(IpAddr::V4(from))
        .build()
        .expect("client")
}

fn client() -> Client {
    client_from(Ipv4Addr::LOCALHOST)
}

/// The `name=value` of the answer's Set-Cookie for `name`.
fn cookie_of(resp: &Response, name: &str) -> Option<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| v.split(';').next().unwrap_or("").to_owned())
}

fn retry_after(resp: &Response) -> u64 {
    resp.headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A new portal link's token.
async fn portal_link(app: &TestApp) -> String {
    let minted = app
        .post("/webhooks/v1/portal-sessions", &json!({"expiresIn": 600}))
        .await;
    assert_eq!(minted.status, 200, "{}", minted.text);
    minted.body["token"].as_str().expect("token").to_owned()
}

/// Trades link `token` for a session as the portal page does, from `client`.
async fn trade(app: &TestApp, client: &Client, token: &str) -> Response {
    client
        .post(format!("{}/portal/session", app.base))
        .header("x-posthorn-portal", "1")
        .form(&[("token", token)])
        .send()
        .await
        .expect("trade")
}

/// A portal session's cookie for link `token`.
async fn portal_cookie(app: &TestApp, token: &str) -> String {
    let traded = trade(app, &client(), token).await;
    assert_eq!(traded.status(), 204);
    cookie_of(&traded, "posthorn_portal").expect("portal cookie")
}

async fn page(app: &TestApp, client: &Client, path: &str, cookie: &str) -> Response {
    client
        .get(format!("{}{path}", app.base))
        .header("cookie", cookie)
        .send()
        .await
        .expect("page")
}

async fn live_portal_sessions(app: &TestApp) -> i64 {
    app.sql_i64("SELECT COUNT(*) FROM web_sessions WHERE kind = 'portal' AND revoked_ms IS NULL")
        .await
}

async fn console_sessions(app: &TestApp) -> i64 {
    app.sql_i64("SELECT COUNT(*) FROM web_sessions WHERE kind = 'console'")
        .await
}

#[tokio::test]
async fn portal_traffic_spends_its_own_budget_never_the_minting_keys() {
    let app = spawn_app_with(|c| {
        c.rate_limit = 20;
        c.web.portal_rate_limit = 5;
        c.web.portal_link_rate_limit = 10_000;
    })
    .await;
    let link = portal_link(&app).await;
    let flooding = portal_cookie(&app, &link).await;
    let (mut portal_ok, mut portal_429) = (0, 0);
    let started = std::time::Instant::now();
    for _ in 0..15 {
        // Ten portal requests at once, then one call of the operator's backend.
        let mut set = JoinSet::new();
        for _ in 0..10 {
            let (base, cookie) = (app.base.clone(), flooding.clone());
            set.spawn(async move {
                let r = client()
                    .get(format!("{base}/portal/endpoints"))
                    .header("cookie", cookie)
                    .send()
                    .await
                    .expect("portal page");
                (r.status().as_u16(), retry_after(&r))
            });
        }
        while let Some(done) = set.join_next().await {
            match done.expect("task") {
                (200, _) => portal_ok += 1,
                (429, wait) => {
                    assert!(wait >= 1, "a portal 429 says when to come back");
                    portal_429 += 1;
                }
                (other, _) => panic!("portal page answered {other}"),
            }
        }
        let api = app.get("/webhooks/v1/endpoints").await;
        assert_eq!(
            api.status, 200,
            "the minting key's own request, amid its customer's portal traffic: {}",
            api.text
        );
    }
    assert!(
        portal_ok >= 5,
        "the portal session was served within its budget"
    );
    // Five a second, five at once (counted per process, or in one-second windows).
    let allowed = 5 * (started.elapsed().as_secs() + 2);
    assert!(
        portal_429 > 0 && portal_ok <= allowed,
        "the portal session is held to its own budget: {portal_ok} served, {allowed} allowed"
    );
    // Another session of the same link has a budget of its own.
    let other = portal_cookie(&app, &link).await;
    assert_eq!(
        page(&app, &client(), "/portal/endpoints", &other)
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn portal_link_trades_are_throttled_and_a_links_live_sessions_bounded() {
    let app = spawn_app_with(|c| {
        c.web.portal_trade_limit = 5;
        c.web.portal_trade_address_limit = 8;
        c.web.portal_sessions_per_link = 3;
    })
    .await;
    let link = portal_link(&app).await;
    let mut cookies = Vec::new();
    for _ in 0..5 {
        let traded = trade(&app, &client(), &link).await;
        assert_eq!(traded.status(), 204);
        cookies.push(cookie_of(&traded, "posthorn_portal").expect("cookie"));
    }
    // The link keeps its three newest sessions; the oldest ones no longer work.
    assert_eq!(live_portal_sessions(&app).await, 3);
    for (i, cookie) in cookies.iter().enumerate() {
        let status = page(&app, &client(), "/portal/endpoints", cookie)
            .await
            .status();
        assert_eq!(status, if i < 2 { 401 } else { 200 }, "session {i}");
    }
    // Past the link's trades per minute: 429, and no session made.
    let refused = trade(&app, &client(), &link).await;
    assert_eq!(refused.status(), 429);
    assert!(retry_after(&refused) >= 1);
    assert!(cookie_of(&refused, "posthorn_portal").is_none());
    assert_eq!(live_portal_sessions(&app).await, 3);
    // Past the address's trades per minute (6 counted so far), whatever the link.
    let second = portal_link(&app).await;
    for _ in 0..2 {
        assert_eq!(trade(&app, &client(), &second).await.status(), 204);
    }
    let refused = trade(&app, &client(), &second).await;
    assert_eq!(refused.status(), 429);
    assert!(retry_after(&refused) >= 1);
    // Another address trades that link still.
    let elsewhere = client_from(Ipv4Addr::new(127, 0, 0, 2));
    assert_eq!(trade(&app, &elsewhere, &second).await.status(), 204);
}

#[tokio::test]
async fn an_address_over_its_failed_auth_limit_waits_whatever_key_it_carries() {
    let app = spawn_app_with(|c| c.failed_auth_limit = 5).await;
    let call = |c: Client, key: String| {
        let url = format!("{}/webhooks/v1/endpoints", app.base);
        async move {
            c.get(url)
                .header("authorization", format!("Bearer {key}"))
                .send()
                .await
                .expect("call")
        }
    };
    assert_eq!(call(client(), app.admin_key.clone()).await.status(), 200);
    for i in 0..5 {
        let wrong = call(client(), format!("guess-{i}-0000000000000000000")).await;
        assert_eq!(wrong.status(), 401, "guess {i} is within the limit");
    }
    // Over the limit: a right guess cannot be told from a wrong one.
    let right = call(client(), app.admin_key.clone()).await;
    assert_eq!(
        right.status(),
        429,
        "a valid key from an address over the limit"
    );
    assert!(retry_after(&right) >= 1);
    let wrong = call(client(), "guess-x-0000000000000000000".into()).await;
    assert_eq!(wrong.status(), 429);
    // Console sign-in from there waits too, and makes no session.
    let (cookie, token) = sign_in_form(&app).await;
    let signed = sign_in(&app, &cookie, &token, &app.admin_key, None).await;
    assert_eq!(signed.status(), 429);
    assert_eq!(console_sessions(&app).await, 0);
    // Another address with the valid key is served.
    let elsewhere = client_from(Ipv4Addr::new(127, 0, 0, 2));
    assert_eq!(call(elsewhere, app.admin_key.clone()).await.status(), 200);
}

/// A sign-in form: its cookie (`name=value`) and the token it carries.
async fn sign_in_form(app: &TestApp) -> (String, String) {
    let page = client()
        .get(format!("{}/console/sign-in", app.base))
        .send()
        .await
        .expect("sign-in page");
    let cookie = page
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.contains("posthorn_signin="))
        .map(|v| v.split(';').next().unwrap_or("").to_owned())
        .expect("sign-in cookie");
    let html = page.text().await.expect("html");
    let token = html
        .split("name=\"signin\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("token in the form")
        .to_owned();
    (cookie, token)
}

async fn sign_in(
    app: &TestApp,
    cookie: &str,
    token: &str,
    key: &str,
    origin: Option<&str>,
) -> Response {
    let mut req = client()
        .post(format!("{}/console/sign-in", app.base))
        .header("cookie", cookie)
        .form(&[("signin", token), ("key", key)]);
    if let Some(origin) = origin {
        req = req.header("origin", origin);
    }
    req.send().await.expect("sign in")
}

#[tokio::test]
async fn a_sign_in_not_bound_to_its_cookie_or_from_another_origin_makes_no_session() {
    let app = spawn_app_with(|_| {}).await;
    let key = app.admin_key.clone();
    let (cookie, token) = sign_in_form(&app).await;
    let (other_cookie, other_token) = sign_in_form(&app).await;
    // A token of another form, or a value a sibling site set as the cookie and posted
    // as the token (double submit of its own choosing): refused.
    for (c, t) in [
        (cookie.as_str(), other_token.as_str()),
        (other_cookie.as_str(), token.as_str()),
        ("posthorn_signin=chosen-by-a-sibling", "chosen-by-a-sibling"),
    ] {
        let resp = sign_in(&app, c, t, &key, None).await;
        assert_eq!(resp.status(), 401, "cookie {c} with token {t}");
        assert!(cookie_of(&resp, "posthorn_console").is_none());
    }
    // A right pair posted from another origin (or an opaque one): refused.
    for origin in [
        "http://evil.example",
        "https://sibling.127.0.0.1.nip.io",
        "null",
    ] {
        let resp = sign_in(&app, &cookie, &token, &key, Some(origin)).await;
        assert_eq!(resp.status(), 403, "Origin: {origin}");
        assert!(cookie_of(&resp, "posthorn_console").is_none());
    }
    assert_eq!(console_sessions(&app).await, 0);
    // From this server's own page, it signs in.
    let resp = sign_in(&app, &cookie, &token, &key, Some(&app.base)).await;
    assert_eq!(resp.status(), 303);
    let session = cookie_of(&resp, "posthorn_console").expect("session");
    assert_eq!(console_sessions(&app).await, 1);

    // Every change checks `Origin` too: signing out from another site does nothing.
    let html = page(&app, &client(), "/console/endpoints", &session)
        .await
        .text()
        .await
        .expect("html");
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("csrf")
        .to_owned();
    let sign_out = |origin: String| {
        client()
            .post(format!("{}/console/sign-out", app.base))
            .header("cookie", session.clone())
            .header("origin", origin)
            .form(&[("csrf", csrf.as_str())])
            .send()
    };
    let foreign = sign_out("http://evil.example".into()).await.expect("post");
    assert_eq!(foreign.status(), 403);
    let still = page(&app, &client(), "/console/endpoints", &session).await;
    assert_eq!(still.status(), 200);
    let own = sign_out(app.base.clone()).await.expect("post");
    assert_eq!(own.status(), 303);

    // On https the cookie is `__Host-`, which no sibling site can set; the plain name
    // is not honoured there.
    let https = spawn_app_with(|c| {
        c.web.public_url = Some("https://hooks.example.test".parse().expect("url"));
    })
    .await;
    let (cookie, token) = sign_in_form(&https).await;
    assert!(cookie.starts_with("__Host-posthorn_signin="), "{cookie}");
    let plain = cookie.trim_start_matches("__Host-");
    let resp = sign_in(&https, plain, &token, &https.admin_key, None).await;
    assert_eq!(resp.status(), 401);
    let resp = sign_in(
        &https,
        &cookie,
        &token,
        &https.admin_key,
        Some("https://hooks.example.test"),
    )
    .await;
    assert_eq!(resp.status(), 303);
    assert_eq!(console_sessions(&https).await, 1);
}
