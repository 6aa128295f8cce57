//! Console-only pages: the event catalog (mint a subcategory) and the org's API keys
//! (create, shown once; revoke). The portal has neither.

use askama::Template;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect};
use axum::routing::{get, post};
use axum::{Json, Router};

use super::session::{Action, Viewer};
use super::{render, Chrome, Notice, WebResult, When};
use crate::app::AppState;
use crate::http::catalog::{self, CreateSubcategoryBody};
use crate::http::input::{JsonBody, PathParam};
use crate::http::keys::{self, CreateKeyBody};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/catalog", get(catalog_page))
        .route("/catalog/subcategories", post(mint))
        .route("/keys", get(keys_page).post(create_key))
        .route("/keys/{id}/revoke", post(revoke_key))
}

pub struct TypeRow {
    pub name: String,
    pub display_name: String,
    pub has_subcategories: bool,
    /// Token and display name of each (the first hundred).
    pub subcategories: Vec<(String, String)>,
}

#[derive(Template)]
#[template(path = "catalog.html")]
struct CatalogPage {
    chrome: Chrome,
    types: Vec<TypeRow>,
}

async fn catalog_page(State(state): State<AppState>, v: Viewer) -> WebResult {
    v.console_only()?;
    let org = &v.session.org_id;
    let mut types = Vec::new();
    for t in state.store.list_event_types(org).await?.iter() {
        let subcategories = if t.has_subcategories {
            let page = state
                .store
                .list_subcategories(org, &t.name, None, 100)
                .await?;
            page.items
                .into_iter()
                .map(|s| (s.token, s.display_name.unwrap_or_default()))
                .collect()
        } else {
            Vec::new()
        };
        types.push(TypeRow {
            name: t.name.clone(),
            display_name: t.display_name.clone(),
            has_subcategories: t.has_subcategories,
            subcategories,
        });
    }
    Ok(render(&CatalogPage {
        chrome: v.chrome("Event catalog", "catalog"),
        types,
    }))
}

async fn mint(State(state): State<AppState>, a: Action) -> WebResult {
    let v = &a.viewer;
    v.console_only()?;
    let event_name = a.form.get("eventName").unwrap_or("").to_owned();
    let body = CreateSubcategoryBody {
        display_name: a.form.get("displayName").map(str::to_owned),
    };
    let Json(sub) = catalog::create_subcategory(
        State(state),
        v.caller(),
        PathParam(event_name),
        JsonBody(body),
    )
    .await?;
    Ok(render(&Notice {
        chrome: v.chrome("Subcategory minted", "catalog"),
        heading: "Subcategory minted".into(),
        secret: None,
        facts: vec![
            ("Subcategory".into(), sub.subcategory),
            ("Display name".into(), sub.display_name.unwrap_or_default()),
        ],
        body: None,
        next_href: "/console/catalog".into(),
        next_label: "Back to the catalog".into(),
    }))
}

pub struct KeyRow {
    pub id: String,
    pub role: &'static str,
    pub name: String,
    pub created: When,
    pub revoked: Option<When>,
    /// The key this session signed in with.
    pub yours: bool,
}

#[derive(Template)]
#[template(path = "keys.html")]
struct KeysPage {
    chrome: Chrome,
    keys: Vec<KeyRow>,
}

async fn keys_page(State(state): State<AppState>, v: Viewer) -> WebResult {
    v.console_only()?;
    let Json(list) = keys::list_keys(State(state), v.caller()).await?;
    let keys = list
        .keys
        .into_iter()
        .map(|k| KeyRow {
            yours: k.id == v.key.id,
            id: k.id,
            role: k.role.as_str(),
            name: k.name.unwrap_or_default(),
            created: When::of(k.created),
            revoked: k.revoked.map(When::of),
        })
        .collect();
    Ok(render(&KeysPage {
        chrome: v.chrome("API keys", "keys"),
        keys,
    }))
}

async fn create_key(State(state): State<AppState>, a: Action) -> WebResult {
    let v = &a.viewer;
    v.console_only()?;
    let body = CreateKeyBody {
        role: a.form.get("role").map(str::to_owned),
        name: a.form.get("name").map(str::to_owned),
    };
    let Json(key) = keys::create_key(State(state), v.caller(), JsonBody(body)).await?;
    Ok(render(&Notice {
        chrome: v.chrome("Key created", "keys"),
        heading: format!("A new {} key", key.role.as_str()),
        secret: key.key,
        facts: vec![("Name".into(), key.name.unwrap_or_default())],
        body: None,
        next_href: "/console/keys".into(),
        next_label: "Back to the keys".into(),
    }))
}

async fn revoke_key(State(state): State<AppState>, Path(id): Path<String>, a: Action) -> WebResult {
    a.viewer.console_only()?;
    let Json(_) = keys::revoke_key(State(state), a.viewer.caller(), PathParam(id)).await?;
    Ok(Redirect::to("/console/keys").into_response())
}
