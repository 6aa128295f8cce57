//! Endpoint pages: the list, create and edit (with the event-type picker), the endpoint
//! with its statistics, enable/disable, delete (endpoint_ops.rs has test, rotate and
//! recover). Changes go through the API's own handlers, acting as the session's key.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::chart::{self, Chart};
use super::session::{Action, Form, Viewer};
use super::{render, Chrome, Confirm, Notice, WebResult, When};
use crate::app::AppState;
use crate::domain::{Capability, EndpointId, EndpointUid, EventTypeRef, Timestamp};
use crate::error::ApiError;
use crate::http::catalog::EventTypeInput;
use crate::http::endpoint_ops;
use crate::http::endpoints::{self as api, CreateEndpointBody, UpdateEndpointBody};
use crate::http::input::{JsonBody, PathParam};
use crate::store::EndpointRecord;

const PAGE: u32 = 50;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/endpoints", get(list).post(create))
        .route("/endpoints/new", get(new))
        .route("/endpoints/{id}", get(show).post(update))
        .route("/endpoints/{id}/edit", get(edit))
        .route("/endpoints/{id}/toggle", post(toggle))
        .route("/endpoints/{id}/delete", get(confirm_delete).post(delete))
}

/// An endpoint as the pages show it.
pub struct Row {
    pub id: String,
    pub url: String,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub event_types: String,
    pub success_rate: String,
    pub created: When,
    /// When it last changed (ms): the rotate form carries it, so a form posted twice
    /// (a reload) does not rotate twice.
    pub version: i64,
}

async fn row(state: &AppState, r: EndpointRecord) -> WebResult<Row> {
    let day = Timestamp::now().minus(std::time::Duration::from_secs(86_400));
    let counts = state.store.endpoint_stats(r.uid, &[day]).await?;
    let rate = counts.first().and_then(|c| {
        let finished = c.delivered + c.failed;
        (finished > 0).then(|| format!("{:.1}%", c.delivered as f64 * 100.0 / finished as f64))
    });
    Ok(Row {
        id: EndpointId::for_url(&r.url).as_str().to_owned(),
        event_types: if r.event_types.is_empty() {
            "every event".into()
        } else {
            r.event_types
                .iter()
                .map(|t| match &t.subcategory {
                    Some(s) => format!("{} ({s})", t.event_name),
                    None => t.event_name.clone(),
                })
                .collect::<Vec<_>>()
                .join(", ")
        },
        url: r.url,
        enabled: r.enabled,
        disabled_reason: r.disabled_reason,
        success_rate: rate.unwrap_or_else(|| "no deliveries in 24 h".into()),
        created: When::of(r.created),
        version: r.modified.millis(),
    })
}

pub(super) async fn load(state: &AppState, v: &Viewer, id: &str) -> WebResult<EndpointRecord> {
    let url = EndpointId::from_raw(id).url().ok_or(ApiError::NotFound)?;
    Ok(state.store.get_endpoint(&v.session.org_id, &url).await?)
}

#[derive(Template)]
#[template(path = "endpoints.html")]
struct ListPage {
    chrome: Chrome,
    rows: Vec<Row>,
    next: Option<String>,
}

#[derive(Deserialize)]
struct ListQuery {
    after: Option<String>,
}

async fn list(
    State(state): State<AppState>,
    v: Viewer,
    Query(q): Query<ListQuery>,
) -> WebResult<Response> {
    let page = state
        .store
        .list_endpoints(
            &v.session.org_id,
            super::position(&state, "e", "after", q.after.as_deref())?,
            PAGE,
        )
        .await?;
    let mut rows = Vec::with_capacity(page.items.len());
    for r in page.items {
        rows.push(row(&state, r).await?);
    }
    Ok(render(&ListPage {
        chrome: v.chrome("Endpoints", "endpoints"),
        rows,
        next: page
            .next_after
            .map(|n| state.store.public_ids().token("e", n)),
    }))
}

/// One checkbox of the event-type picker.
pub struct Choice {
    pub value: String,
    pub label: String,
    pub checked: bool,
    /// A subcategory under its type.
    pub nested: bool,
}

/// The picker: each type of the catalog, and under a type with subcategories its
/// first hundred (by display name where it has one).
async fn choices(state: &AppState, v: &Viewer, chosen: &[EventTypeRef]) -> WebResult<Vec<Choice>> {
    let org = &v.session.org_id;
    let is = |name: &str, sub: Option<&str>| {
        chosen
            .iter()
            .any(|c| c.event_name == name && c.subcategory.as_deref() == sub)
    };
    let mut out = Vec::new();
    for t in state.store.list_event_types(org).await?.iter() {
        out.push(Choice {
            value: t.name.clone(),
            label: format!("{} ({})", t.display_name, t.name),
            checked: is(&t.name, None),
            nested: false,
        });
        if t.has_subcategories {
            let subs = state
                .store
                .list_subcategories(org, &t.name, None, 100)
                .await?;
            for s in subs.items {
                out.push(Choice {
                    checked: is(&t.name, Some(&s.token)),
                    value: format!("{}|{}", t.name, s.token),
                    label: s.display_name.unwrap_or_else(|| s.token.clone()),
                    nested: true,
                });
            }
        }
    }
    // What the endpoint takes that the picker did not list (a subcategory past the
    // first hundred, an operational event): kept checked, so saving keeps it.
    for c in chosen {
        let value = match &c.subcategory {
            Some(sub) => format!("{}|{sub}", c.event_name),
            None => c.event_name.clone(),
        };
        if !out.iter().any(|o| o.value == value) {
            out.push(Choice {
                label: match &c.subcategory {
                    Some(sub) => format!("{} (subcategory {sub})", c.event_name),
                    None => c.event_name.clone(),
                },
                value,
                checked: true,
                nested: false,
            });
        }
    }
    Ok(out)
}

fn picked(form: &Form) -> Vec<EventTypeInput> {
    form.all("eventType")
        .map(|v| match v.rsplit_once('|') {
            Some((name, sub)) => EventTypeInput {
                event_name: Some(name.to_owned()),
                subcategory: Some(sub.to_owned()),
            },
            None => EventTypeInput {
                event_name: Some(v.to_owned()),
                subcategory: None,
            },
        })
        .collect()
}

fn as_refs(inputs: &[EventTypeInput]) -> Vec<EventTypeRef> {
    inputs
        .iter()
        .map(|i| EventTypeRef {
            event_name: i.event_name.clone().unwrap_or_default(),
            subcategory: i.subcategory.clone(),
        })
        .collect()
}

#[derive(Template)]
#[template(path = "endpoint_form.html")]
struct FormPage {
    chrome: Chrome,
    /// The endpoint being edited; none for a new one.
    id: Option<String>,
    url: String,
    disabled: bool,
    choices: Vec<Choice>,
    error: Option<String>,
}

async fn new(State(state): State<AppState>, v: Viewer) -> WebResult {
    v.require(Capability::ManageEndpoints)?;
    Ok(render(&FormPage {
        choices: choices(&state, &v, &[]).await?,
        chrome: v.chrome("New endpoint", "endpoints"),
        id: None,
        url: String::new(),
        disabled: false,
        error: None,
    }))
}

async fn edit(State(state): State<AppState>, v: Viewer, Path(id): Path<String>) -> WebResult {
    v.require(Capability::ManageEndpoints)?;
    let r = load(&state, &v, &id).await?;
    Ok(render(&FormPage {
        choices: choices(&state, &v, &r.event_types).await?,
        chrome: v.chrome("Edit endpoint", "endpoints"),
        id: Some(id),
        url: r.url,
        disabled: !r.enabled,
        error: None,
    }))
}

/// The form again with the API's refusal in plain words (400s); other errors as pages.
async fn refused(
    state: &AppState,
    v: &Viewer,
    id: Option<String>,
    form: &Form,
    e: ApiError,
) -> WebResult {
    if e.status() != axum::http::StatusCode::BAD_REQUEST
        && e.status() != axum::http::StatusCode::CONFLICT
    {
        return Err(e.into());
    }
    let chosen = as_refs(&picked(form));
    let page = FormPage {
        choices: choices(state, v, &chosen).await?,
        chrome: v.chrome("Endpoint", "endpoints"),
        id,
        url: form.get("url").unwrap_or("").to_owned(),
        disabled: form.get("disabled").is_some(),
        error: Some(e.to_string()),
    };
    Ok((e.status(), render(&page)).into_response())
}

async fn create(State(state): State<AppState>, a: Action) -> WebResult {
    let v = &a.viewer;
    v.require(Capability::ManageEndpoints)?;
    let body = CreateEndpointBody {
        url: a.form.get("url").map(str::to_owned),
        event_types: Some(picked(&a.form)),
        secret: None,
        disabled: Some(a.form.get("disabled").is_some()),
        headers: None,
        flow: Default::default(),
    };
    match api::create_endpoint(State(state.clone()), v.caller(), JsonBody(body)).await {
        Ok(Json(created)) => Ok(render(&Notice {
            chrome: v.chrome("Endpoint created", "endpoints"),
            heading: "Endpoint created".into(),
            secret: created.secret,
            facts: vec![("URL".into(), created.url)],
            body: None,
            next_href: format!("{}/endpoints/{}", v.surface.base(), created.id),
            next_label: "Go to the endpoint".into(),
        })),
        Err(e) => refused(&state, v, None, &a.form, e).await,
    }
}

async fn update(State(state): State<AppState>, Path(id): Path<String>, a: Action) -> WebResult {
    let v = &a.viewer;
    v.require(Capability::ManageEndpoints)?;
    let body = UpdateEndpointBody {
        url: a.form.get("url").map(str::to_owned),
        event_types: Some(picked(&a.form)),
        secret: None,
        disabled: Some(a.form.get("disabled").is_some()),
        headers: None,
        flow: Default::default(),
    };
    match api::update_endpoint(
        State(state.clone()),
        v.caller(),
        PathParam(id.clone()),
        JsonBody(body),
    )
    .await
    {
        Ok(updated) => Ok(Redirect::to(&format!(
            "{}/endpoints/{}",
            v.surface.base(),
            updated.endpoint.id
        ))
        .into_response()),
        Err(e) => refused(&state, v, Some(id), &a.form, e).await,
    }
}

async fn toggle(State(state): State<AppState>, Path(id): Path<String>, a: Action) -> WebResult {
    let v = &a.viewer;
    v.require(Capability::ManageEndpoints)?;
    let r = load(&state, v, &id).await?;
    let body = UpdateEndpointBody {
        url: None,
        event_types: None,
        secret: None,
        disabled: Some(r.enabled),
        headers: None,
        flow: Default::default(),
    };
    api::update_endpoint(
        State(state),
        v.caller(),
        PathParam(id.clone()),
        JsonBody(body),
    )
    .await?;
    Ok(Redirect::to(&format!("{}/endpoints/{id}", v.surface.base())).into_response())
}

#[derive(Template)]
#[template(path = "endpoint.html")]
struct ShowPage {
    chrome: Chrome,
    e: Row,
    stats: Vec<(String, String)>,
    chart: Chart,
    window: &'static str,
}

async fn show(
    State(state): State<AppState>,
    v: Viewer,
    Path(id): Path<String>,
    Query(q): Query<chart::WindowQuery>,
) -> WebResult {
    let r = load(&state, &v, &id).await?;
    let uid: EndpointUid = r.uid;
    let Json(stats) =
        endpoint_ops::endpoint_stats(State(state.clone()), v.caller(), PathParam(id)).await?;
    let stats = stats
        .windows
        .into_iter()
        .map(|w| {
            let rate = w.success_rate.map_or("no deliveries".to_owned(), |r| {
                format!("{:.1}% delivered", r * 100.0)
            });
            (
                w.window,
                format!("{} delivered, {} failed: {rate}", w.delivered, w.failed),
            )
        })
        .collect();
    let window = chart::Window::parse(q.window.as_deref());
    let chart = chart::chart(&state, &v.session.org_id, Some(uid), window).await?;
    Ok(render(&ShowPage {
        chrome: v.chrome("Endpoint", "endpoints"),
        e: row(&state, r).await?,
        stats,
        chart,
        window: window.label(),
    }))
}

async fn confirm_delete(
    State(state): State<AppState>,
    v: Viewer,
    Path(id): Path<String>,
) -> WebResult {
    v.require(Capability::ManageEndpoints)?;
    let r = load(&state, &v, &id).await?;
    let base = v.surface.base();
    Ok(render(&Confirm {
        chrome: v.chrome("Delete endpoint", "endpoints"),
        heading: "Delete this endpoint?".into(),
        message: format!(
            "{} will receive nothing more. Its pending deliveries fail; its delivery log stays.",
            r.url
        ),
        action: format!("{base}/endpoints/{id}/delete"),
        button: "Delete the endpoint".into(),
        hidden: vec![],
        back: format!("{base}/endpoints/{id}"),
    }))
}

async fn delete(State(state): State<AppState>, Path(id): Path<String>, a: Action) -> WebResult {
    let v = &a.viewer;
    v.require(Capability::ManageEndpoints)?;
    let Json(_) = api::delete_endpoint(State(state), v.caller(), PathParam(id)).await?;
    Ok(Redirect::to(&format!("{}/endpoints", v.surface.base())).into_response())
}
