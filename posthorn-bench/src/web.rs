//! The console on a grown store: how long the org's delivery log and the statistics
//! pages take to render (request to last byte, one connection, signed in as an operator
//! would be), beside the same server's bare round trip (`/healthz`).

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use hyper::Request;

use crate::load::Conn;
use crate::phases::progress;
use crate::server::ADMIN_KEY;

/// Requests per page, after two to warm up.
const SAMPLES: usize = 20;

#[derive(Debug, Clone, Copy, Default)]
pub struct Timing {
    pub p50_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Clone, Default)]
pub struct WebPages {
    /// Deliveries the growth phase put in the store (those of earlier phases besides).
    pub deliveries: usize,
    /// `/healthz` on the same connection: the floor of any page.
    pub round_trip: Timing,
    pub pages: Vec<(&'static str, String, Timing)>,
}

fn cookie(resp: &hyper::Response<Bytes>, name: &str) -> anyhow::Result<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            v.split(';')
                .next()
                .filter(|pair| pair.starts_with(&format!("{name}=")))
                .map(str::to_owned)
        })
        .ok_or_else(|| anyhow::anyhow!("no {name} cookie"))
}

/// Signs in to the console with the bench's admin key; the session cookie.
async fn sign_in(conn: &mut Conn) -> anyhow::Result<String> {
    let page = conn.send(Request::get("/console/sign-in")).await?;
    let signin = cookie(&page, "posthorn_signin")?;
    let html = String::from_utf8_lossy(page.body());
    let token = html
        .split("name=\"signin\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .ok_or_else(|| anyhow::anyhow!("no sign-in token in the page"))?;
    let form = format!("signin={token}&key={ADMIN_KEY}");
    let resp = conn
        .send_body(
            Request::post("/console/sign-in")
                .header("cookie", signin)
                .header("content-type", "application/x-www-form-urlencoded"),
            Bytes::from(form),
        )
        .await?;
    anyhow::ensure!(resp.status() == 303, "sign-in answered {}", resp.status());
    cookie(&resp, "posthorn_console")
}

/// The path of the org's log page `rows` deliveries back, reached as a person would:
/// by its "Older" links (positions are opaque tokens, never row numbers).
async fn halfway_back(conn: &mut Conn, session: &str, rows: usize) -> anyhow::Result<String> {
    let mut path = "/console/log".to_owned();
    let mut passed = 0;
    while passed < rows {
        let resp = conn
            .send(Request::get(path.as_str()).header("cookie", session))
            .await?;
        anyhow::ensure!(resp.status() == 200, "{path} answered {}", resp.status());
        let body = String::from_utf8_lossy(resp.body());
        passed += body.matches("/deliveries/dlv_").count();
        let before = body
            .split("before=")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .ok_or_else(|| anyhow::anyhow!("{path} has no older page"))?;
        path = format!("/console/log?before={before}");
    }
    Ok(path)
}

async fn time(conn: &mut Conn, path: &str, session: &str, must: &str) -> anyhow::Result<Timing> {
    let mut took = Vec::with_capacity(SAMPLES);
    for i in 0..SAMPLES + 2 {
        let t = Instant::now();
        let resp = conn
            .send(Request::get(path).header("cookie", session))
            .await?;
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        anyhow::ensure!(resp.status() == 200, "{path} answered {}", resp.status());
        let body = String::from_utf8_lossy(resp.body());
        anyhow::ensure!(body.contains(must), "{path} does not show {must:?}");
        if i >= 2 {
            took.push(ms);
        }
    }
    took.sort_by(f64::total_cmp);
    Ok(Timing {
        p50_ms: took[took.len() / 2],
        max_ms: took[took.len() - 1],
    })
}

/// The id of the endpoint the growth phase's history went to (`/history/0`).
async fn history_endpoint(conn: &mut Conn) -> anyhow::Result<String> {
    let resp = conn
        .send(
            Request::get("/webhooks/v1/endpoints?limit=100")
                .header("authorization", format!("Basic {ADMIN_KEY}")),
        )
        .await?;
    let list: serde_json::Value = serde_json::from_slice(resp.body())?;
    list["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["url"].as_str().is_some_and(|u| u.ends_with("/history/0")))
        .and_then(|e| e["id"].as_str())
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no history endpoint"))
}

pub async fn run(api: SocketAddr, deliveries: usize) -> anyhow::Result<WebPages> {
    progress(&format!(
        "web: the console's log and statistics pages with {deliveries} deliveries in the store"
    ));
    let mut conn = Conn::open(api).await?;
    let session = sign_in(&mut conn).await?;
    let endpoint = history_endpoint(&mut conn).await?;
    let middle = halfway_back(&mut conn, &session, deliveries / 2).await?;
    let pages: [(&'static str, String, &str); 8] = [
        (
            "org delivery log, newest page",
            "/console/log".into(),
            "dlv_",
        ),
        ("org delivery log, a page halfway back", middle, "dlv_"),
        (
            "org delivery log, a filter matching nothing",
            "/console/log?state=failed".into(),
            "log-cut",
        ),
        (
            "the history endpoint's delivery log",
            format!("/console/log?endpoint={endpoint}"),
            "dlv_",
        ),
        (
            "the history endpoint's log, a filter matching nothing",
            format!("/console/log?endpoint={endpoint}&state=failed"),
            "log-cut",
        ),
        (
            "the history endpoint's failed count (recover)",
            format!("/console/endpoints/{endpoint}/recover?range=all"),
            "Send 0 failed",
        ),
        (
            "org statistics, 7 days",
            "/console/stats?window=7d".into(),
            "<svg",
        ),
        (
            "the history endpoint's page with its 7-day chart",
            format!("/console/endpoints/{endpoint}?window=7d"),
            "<svg",
        ),
    ];
    let round_trip = {
        let mut took = Vec::new();
        for _ in 0..SAMPLES {
            let t = Instant::now();
            conn.send(Request::get("/healthz")).await?;
            took.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        took.sort_by(f64::total_cmp);
        Timing {
            p50_ms: took[took.len() / 2],
            max_ms: took[took.len() - 1],
        }
    };
    let mut out = WebPages {
        deliveries,
        round_trip,
        pages: Vec::new(),
    };
    for (name, path, must) in pages {
        let t = time(&mut conn, &path, &session, must).await?;
        progress(&format!("web: {name}: p50 {:.1} ms", t.p50_ms));
        out.pages.push((name, path, t));
    }
    Ok(out)
}
