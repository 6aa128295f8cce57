//! What an endpoint's page does beyond editing it: send a test event and show the
//! answer, rotate the secret (the new one shown once), recover failed deliveries after
//! showing how many. Each through the API's own handler, acting as the session's key.

use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::endpoints::load;
use super::session::{Action, Viewer};
use super::{render, Confirm, Notice, WebResult, When};
use crate::app::AppState;
use crate::domain::{Capability, Timestamp};
use crate::error::ApiError;
use crate::http::input::{JsonBody, PathParam};
use crate::http::{deliveries, endpoint_ops};

/// `1 delivery`, `3 deliveries`.
fn deliveries_n(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/endpoints/{id}/test", post(test))
        .route("/endpoints/{id}/rotate", post(rotate))
        .route(
            "/endpoints/{id}/recover",
            get(confirm_recover).post(recover),
        )
}

async fn test(State(state): State<AppState>, Path(id): Path<String>, a: Action) -> WebResult {
    let v = &a.viewer;
    v.require(Capability::ManageEndpoints)?;
    let Json(t) =
        endpoint_ops::test_endpoint(State(state), v.caller(), PathParam(id.clone())).await?;
    let mut facts = vec![(
        "Outcome".to_owned(),
        if t.success { "delivered" } else { "failed" }.to_owned(),
    )];
    facts.push((
        "Status".into(),
        t.status_code.map_or("no answer".into(), |s| s.to_string()),
    ));
    facts.push(("Latency".into(), format!("{} ms", t.latency_ms)));
    if let Some(e) = t.error {
        facts.push(("Error".into(), e));
    }
    Ok(render(&Notice {
        chrome: v.chrome("Test event", "endpoints"),
        heading: "The endpoint's answer to a test event".into(),
        secret: None,
        facts,
        body: t.response_body,
        next_href: format!("{}/endpoints/{id}", v.surface.base()),
        next_label: "Back to the endpoint".into(),
    }))
}

async fn rotate(State(state): State<AppState>, Path(id): Path<String>, a: Action) -> WebResult {
    let v = &a.viewer;
    v.require(Capability::RotateSecrets)?;
    // The page's version of the endpoint: a reload posting the form again would
    // otherwise rotate again and end the first new secret's grace at once.
    let current = load(&state, v, &id).await?;
    if a.form.get("version") != Some(current.modified.millis().to_string().as_str()) {
        return Err(ApiError::AlreadyExists(
            "this endpoint changed since the page was shown (was its secret rotated \
             already?): open it again and rotate from there"
                .into(),
        )
        .into());
    }
    let body = endpoint_ops::RotateBody {
        secret: None,
        grace_period: None,
    };
    let Json(r) = endpoint_ops::rotate_secret(
        State(state),
        v.caller(),
        PathParam(id.clone()),
        JsonBody(body),
    )
    .await?;
    Ok(render(&Notice {
        chrome: v.chrome("Secret rotated", "endpoints"),
        heading: "The endpoint has a new secret".into(),
        secret: r.secret,
        facts: vec![(
            "The previous secret signs too until".into(),
            When::of(r.previous_secret_expires).text,
        )],
        body: None,
        next_href: format!("{}/endpoints/{id}", v.surface.base()),
        next_label: "Back to the endpoint".into(),
    }))
}

#[derive(Deserialize)]
struct RangeQuery {
    range: Option<String>,
}

async fn confirm_recover(
    State(state): State<AppState>,
    v: Viewer,
    Path(id): Path<String>,
    Query(q): Query<RangeQuery>,
) -> WebResult {
    v.require(Capability::Retry)?;
    let r = load(&state, &v, &id).await?;
    let range = super::log::Range::parse(q.range.as_deref());
    let since = range.since().unwrap_or(Timestamp::from_millis(0));
    // The bounds are fixed now and posted back, so what is queued is what was counted
    // (less any retried meanwhile).
    let until = Timestamp::now();
    let count = state
        .store
        .count_failed(&v.session.org_id, r.uid, since, Some(until))
        .await?;
    let base = v.surface.base();
    Ok(render(&Confirm {
        chrome: v.chrome("Recover deliveries", "endpoints"),
        heading: format!(
            "Send {} again?",
            deliveries_n(count, "failed delivery", "failed deliveries")
        ),
        message: format!(
            "{} to {} published in {} failed. They are queued again with a fresh retry schedule.",
            deliveries_n(count, "delivery", "deliveries"),
            r.url,
            range.describe()
        ),
        action: format!("{base}/endpoints/{id}/recover"),
        button: format!("Recover {}", deliveries_n(count, "delivery", "deliveries")),
        hidden: vec![
            ("since".into(), since.millis().to_string()),
            ("until".into(), until.millis().to_string()),
        ],
        back: format!("{base}/endpoints/{id}"),
    }))
}

async fn recover(State(state): State<AppState>, Path(id): Path<String>, a: Action) -> WebResult {
    let v = &a.viewer;
    v.require(Capability::Retry)?;
    let bound = |name: &str| -> WebResult<Timestamp> {
        super::millis(name, a.form.get(name))?
            .map(Timestamp::from_millis)
            .ok_or_else(|| ApiError::RequiredField(name.into()).into())
    };
    let body = deliveries::RecoverBody {
        since: Some(bound("since")?.to_rfc3339()),
        until: Some(bound("until")?.to_rfc3339()),
    };
    let (_, Json(done)) = deliveries::recover(
        State(state),
        v.caller(),
        PathParam(id.clone()),
        JsonBody(body),
    )
    .await?;
    let base = v.surface.base();
    Ok(render(&Notice {
        chrome: v.chrome("Recovered", "endpoints"),
        heading: format!(
            "{} queued again",
            deliveries_n(done.queued, "delivery", "deliveries")
        ),
        secret: None,
        facts: vec![],
        body: None,
        next_href: format!("{base}/log?endpoint={id}"),
        next_label: "Watch them in the delivery log".into(),
    }))
}
