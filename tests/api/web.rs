//! The console and portal over plain HTTP (the browser tests in cli/browser/ click
//! through them): security headers, sign-in and its refusals, sessions ended by their
//! key, the portal-session API's validation, CSRF and hostile forms.

use reqwest::redirect::Policy;
use reqwest::{Client, Response};
use serde_json::json;

use crate::helpers::{spawn_app, spawn_app_with, TestApp};

fn client() -> Client {
    Client::builder()
        .redirect(Policy::none())
        .build()
        .expect("client")
}

fn set_cookie(resp: &Response, name: &str) -> Option<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(str::to_owned)
}

/// The `name=value` part of a Set-Cookie.
fn pair(set: &str) -> String {
    set.split(';').next().unwrap_or("").to_owned()
}

/// Signs in with `key`: the answer to the sign-in POST.
async fn sign_in(app: &TestApp, key: &str) -> Response {
    let c = client();
    let page = c
        .get(format!("{}/console/sign-in", app.base))
        .send()
        .await
        .expect("sign-in page");
    let cookie = pair(&set_cookie(&page, "posthorn_signin").expect("sign-in cookie"));
    let html = page.text().await.expect("html");
    let token = html
        .split("name=\"signin\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("token in the form")
        .to_owned();
    c.post(format!("{}/console/sign-in", app.base))
        .header("cookie", cookie)
        .form(&[("signin", token.as_str()), ("key", key)])
        .send()
        .await
        .expect("sign in")
}

/// A console session cookie for `key`.
async fn session(app: &TestApp, key: &str) -> String {
    let resp = sign_in(app, key).await;
    assert_eq!(resp.status(), 303);
    let set = set_cookie(&resp, "posthorn_console").expect("session cookie");
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    assert!(
        set.contains("Path=/console") && set.contains("Max-Age=43200"),
        "{set}"
    );
    assert!(!set.contains(key));
    pair(&set)
}

async fn page(app: &TestApp, path: &str, cookie: &str) -> Response {
    client()
        .get(format!("{}{path}", app.base))
        .header("cookie", cookie)
        .send()
        .await
        .expect("page")
}

#[tokio::test]
async fn pages_carry_a_strict_policy_and_only_the_portal_may_be_framed() {
    let app = spawn_app_with(|c| {
        c.web.portal_frame_origins = vec!["https://app.example.com".into()];
    })
    .await;
    let console = client()
        .get(format!("{}/console/sign-in", app.base))
        .send()
        .await
        .expect("console");
    let csp = console.headers()["content-security-policy"]
        .to_str()
        .expect("csp");
    assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"));
    assert!(
        !csp.contains("unsafe-inline") && csp.ends_with("frame-ancestors 'none'"),
        "{csp}"
    );
    assert_eq!(console.headers()["x-frame-options"], "DENY");
    assert_eq!(console.headers()["x-content-type-options"], "nosniff");
    // Not `no-referrer`: under it browsers post the pages' own forms with `Origin: null`,
    // which the form checks refuse.
    assert_eq!(console.headers()["referrer-policy"], "same-origin");
    assert_eq!(console.headers()["cache-control"], "no-store");
    let portal = client()
        .get(format!("{}/portal/", app.base))
        .send()
        .await
        .expect("portal");
    assert_eq!(portal.status(), 200);
    let csp = portal.headers()["content-security-policy"]
        .to_str()
        .expect("csp");
    assert!(
        csp.ends_with("frame-ancestors 'self' https://app.example.com"),
        "{csp}"
    );
    assert!(portal.headers().get("x-frame-options").is_none());
    // The page's assets, from the binary.
    let js = client()
        .get(format!("{}/console/assets/app.js", app.base))
        .send()
        .await
        .expect("js");
    assert_eq!(
        js.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    // Unknown pages are pages too.
    let missing = page(&app, "/console/nothing-here", "").await;
    assert_eq!(missing.status(), 404);
    assert!(missing
        .text()
        .await
        .expect("html")
        .contains("<!doctype html>"));
}

#[tokio::test]
async fn signing_in_takes_an_admin_key_and_the_session_ends_with_it() {
    let app = spawn_app().await;
    // No session: the console sends to sign-in, the portal answers 401.
    let out = page(&app, "/console/endpoints", "").await;
    assert_eq!(out.status(), 303);
    assert_eq!(out.headers()["location"], "/console/sign-in");
    assert_eq!(page(&app, "/portal/endpoints", "").await.status(), 401);
    let forged = page(&app, "/console/endpoints", "posthorn_console=forged").await;
    assert_eq!(forged.status(), 303);
    assert_eq!(forged.headers()["location"], "/console/sign-in?expired=1");

    for refused in ["not-a-key", &app.create_key("publisher").await] {
        let resp = sign_in(&app, refused).await;
        assert_eq!(resp.status(), 401);
        assert!(set_cookie(&resp, "posthorn_console").is_none());
        assert!(resp
            .text()
            .await
            .expect("html")
            .contains("not a valid admin API key"));
    }
    // The sign-in form's own token is needed.
    let resp = client()
        .post(format!("{}/console/sign-in", app.base))
        .form(&[("signin", "x"), ("key", app.admin_key.as_str())])
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 401);
    assert!(set_cookie(&resp, "posthorn_console").is_none());

    let made = app
        .post(
            "/webhooks/v1/keys",
            &json!({"role": "admin", "name": "signs in"}),
        )
        .await;
    let (admin, id) = (
        made.body["key"].as_str().expect("key").to_owned(),
        made.body["id"].as_str().expect("id").to_owned(),
    );
    let cookie = session(&app, &admin).await;
    let ok = page(&app, "/console/endpoints", &cookie).await;
    assert_eq!(ok.status(), 200);
    let html = ok.text().await.expect("html");
    assert!(html.contains("No endpoints yet"), "{html}");
    assert!(!html.contains(&admin));
    // Revoking the key signs its sessions out at once.
    app.delete(&format!("/webhooks/v1/keys/{id}")).await;
    let after = page(&app, "/console/endpoints", &cookie).await;
    assert_eq!(after.status(), 303, "a revoked key's session is signed out");
}

#[tokio::test]
async fn a_change_needs_the_session_token_and_a_bounded_form() {
    let app = spawn_app().await;
    let cookie = session(&app, &app.admin_key).await;
    let create = |form: Vec<(&'static str, String)>| {
        client()
            .post(format!("{}/console/endpoints", app.base))
            .header("cookie", cookie.clone())
            .form(&form)
            .send()
    };
    let url = "https://example.com/hook";
    let refused = create(vec![("url", url.into())]).await.expect("post");
    assert_eq!(refused.status(), 403);
    let forged = create(vec![("url", url.into()), ("csrf", "forged".into())])
        .await
        .expect("post");
    assert_eq!(forged.status(), 403);
    let list = app.get("/webhooks/v1/endpoints").await;
    assert!(list.body.get("endpoints").is_none(), "{}", list.text);
    // Too large a form: 413, nothing stored.
    let huge = client()
        .post(format!("{}/console/endpoints", app.base))
        .header("cookie", cookie.clone())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("url={}", "a".repeat(300 * 1024)))
        .send()
        .await
        .expect("post");
    assert_eq!(huge.status(), 413);
    // Signing out is a change too.
    let out = client()
        .post(format!("{}/console/sign-out", app.base))
        .header("cookie", cookie.clone())
        .send()
        .await
        .expect("post");
    assert_eq!(out.status(), 403);
    assert_eq!(
        page(&app, "/console/endpoints", &cookie).await.status(),
        200
    );
}

#[tokio::test]
async fn portal_sessions_are_minted_by_admins_within_bounds() {
    let app = spawn_app().await;
    let ok = app
        .post(
            "/webhooks/v1/portal-sessions",
            &json!({"expiresIn": 60, "capabilities": ["retry"], "readOnly": true}),
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert_eq!(ok.body["capabilities"], json!(["view", "retry"]));
    assert_eq!(ok.body["readOnly"], true);
    let token = ok.body["token"].as_str().expect("token");
    assert_eq!(
        ok.body["url"],
        format!("{}/portal/#token={token}", app.base)
    );
    for bad in [
        json!({"expiresIn": 0}),
        json!({"expiresIn": 604_801}),
        json!({"capabilities": ["everything"]}),
    ] {
        app.post("/webhooks/v1/portal-sessions", &bad)
            .await
            .assert_error(400, "invalid_field");
    }
    let publisher = app.create_key("publisher").await;
    app.call(
        reqwest::Method::POST,
        "/webhooks/v1/portal-sessions",
        Some(&publisher),
        Some(&json!({})),
    )
    .await
    .assert_error(403, "forbidden");
    // The trade: only from the portal page (its header), only for a live grant.
    let trade = |token: String, header: bool| {
        let mut req = client()
            .post(format!("{}/portal/session", app.base))
            .form(&[("token", token)]);
        if header {
            req = req.header("x-posthorn-portal", "1");
        }
        req.send()
    };
    assert_eq!(
        trade(token.into(), false).await.expect("trade").status(),
        403
    );
    assert_eq!(
        trade("nope".into(), true).await.expect("trade").status(),
        401
    );
    let traded = trade(token.into(), true).await.expect("trade");
    assert_eq!(traded.status(), 204);
    let cookie = pair(&set_cookie(&traded, "posthorn_portal").expect("portal cookie"));
    assert_eq!(page(&app, "/portal/endpoints", &cookie).await.status(), 200);
    // A link that fails in a browser holding a session ends that session and its
    // cookie, so the frame never shows the previous org.
    let other = app
        .post("/webhooks/v1/portal-sessions", &json!({}))
        .await
        .body["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let second = trade(other.clone(), true).await.expect("trade");
    let second = pair(&set_cookie(&second, "posthorn_portal").expect("cookie"));
    let failed = client()
        .post(format!("{}/portal/session", app.base))
        .header("x-posthorn-portal", "1")
        .header("cookie", second.clone())
        .form(&[("token", "expired-or-wrong")])
        .send()
        .await
        .expect("trade");
    assert_eq!(failed.status(), 401);
    let cleared = set_cookie(&failed, "posthorn_portal").expect("cleared");
    assert!(cleared.starts_with("posthorn_portal=;") && cleared.contains("Max-Age=0"));
    assert_eq!(page(&app, "/portal/endpoints", &second).await.status(), 401);
    app.post(
        "/webhooks/v1/portal-sessions/revoke",
        &json!({"token": token}),
    )
    .await;
    assert_eq!(page(&app, "/portal/endpoints", &cookie).await.status(), 401);
    app.post("/webhooks/v1/portal-sessions/revoke", &json!({}))
        .await
        .assert_error(400, "required_field");
}

#[tokio::test]
async fn the_edit_form_keeps_what_its_picker_does_not_list_and_bad_positions_are_400() {
    let app = spawn_app().await;
    let made = app
        .post(
            "/webhooks/v1/endpoints",
            &json!({"url": "https://example.com/ops", "eventTypes": [
                {"eventName": "note.created"}, {"eventName": "endpoint.disabled"}]}),
        )
        .await;
    assert_eq!(made.status, 200, "{}", made.text);
    let id = made.body["id"].as_str().expect("id");
    let cookie = session(&app, &app.admin_key).await;
    let form = page(&app, &format!("/console/endpoints/{id}/edit"), &cookie)
        .await
        .text()
        .await
        .expect("html");
    for value in ["note.created", "endpoint.disabled"] {
        assert!(
            form.contains(&format!("value=\"{value}\" checked")),
            "{value} is not checked in: {form}"
        );
    }
    for path in ["/console/log?before=x", "/console/endpoints?after=-"] {
        let resp = page(&app, path, &cookie).await;
        assert_eq!(resp.status(), 400, "{path}");
        assert!(resp
            .text()
            .await
            .expect("html")
            .contains("must be a position"));
    }
}

#[tokio::test]
async fn a_reposted_rotate_is_refused_and_the_log_takes_a_range_of_ones_own() {
    let app = spawn_app().await;
    let made = app
        .post(
            "/webhooks/v1/endpoints",
            &json!({"url": "https://example.com/rotating"}),
        )
        .await;
    let id = made.body["id"].as_str().expect("id").to_owned();
    let cookie = session(&app, &app.admin_key).await;
    let html = page(&app, &format!("/console/endpoints/{id}"), &cookie)
        .await
        .text()
        .await
        .expect("html");
    let field = |name: &str| {
        html.split(&format!("name=\"{name}\" value=\""))
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or_else(|| panic!("no {name} in the page"))
            .to_owned()
    };
    let (csrf, version) = (field("csrf"), field("version"));
    let rotate = || {
        client()
            .post(format!("{}/console/endpoints/{id}/rotate", app.base))
            .header("cookie", cookie.clone())
            .form(&[("csrf", csrf.as_str()), ("version", version.as_str())])
            .send()
    };
    let first = rotate().await.expect("rotate");
    assert_eq!(first.status(), 200);
    assert!(first.text().await.expect("html").contains("whsec_"));
    // The same form again (a reload): refused, the first rotation stands.
    let again = rotate().await.expect("rotate");
    assert_eq!(again.status(), 409);
    assert!(again.text().await.expect("html").contains("rotated"));

    let ok = page(
        &app,
        "/console/log?from=2026-01-01T00:00:00Z&until=2030-01-01T00:00:00Z&state=failed",
        &cookie,
    )
    .await;
    assert_eq!(ok.status(), 200);
    let bad = page(&app, "/console/log?from=yesterday", &cookie).await;
    assert_eq!(bad.status(), 400);
    assert!(bad
        .text()
        .await
        .expect("html")
        .contains("from must be an RFC 3339 time"));
}
