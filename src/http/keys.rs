//! API keys of the caller's org: create (shown once), list, revoke. Admin only.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::auth::{AdminOnly, Authorized};
use super::input::{JsonBody, PathParam};
use super::{Empty, ErrorBody};
use crate::app::AppState;
use crate::domain::{ApiKey, Role, Timestamp};
use crate::error::{ApiError, ApiResult};
use crate::store::ApiKeyRecord;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_key, list_keys))
        .routes(routes!(revoke_key))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyView {
    pub id: String,
    pub role: Role,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    pub created: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub revoked: Option<Timestamp>,
    /// The key itself: only in the answer to Create.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

impl From<ApiKeyRecord> for KeyView {
    fn from(r: ApiKeyRecord) -> Self {
        Self {
            id: r.id,
            role: r.role,
            name: r.name,
            created: r.created,
            revoked: r.revoked,
            key: None,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyList {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<KeyView>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateKeyBody {
    /// admin, publisher or standard.
    #[schema(required = true, value_type = Role)]
    pub role: Option<String>,
    pub name: Option<String>,
}

/// Create an API key; the key is in this answer only.
#[utoipa::path(post, path = "/keys", tag = "keys", request_body = CreateKeyBody,
    responses((status = 200, body = KeyView), (status = 400, body = ErrorBody)),
    security(("bearer" = []), ("basic" = []), ("fullstory" = [])))]
pub async fn create_key(
    State(state): State<AppState>,
    caller: Authorized<AdminOnly>,
    JsonBody(body): JsonBody<CreateKeyBody>,
) -> ApiResult<Json<KeyView>> {
    let role: Role = body
        .role
        .filter(|r| !r.is_empty())
        .ok_or_else(|| ApiError::RequiredField("role".into()))?
        .parse()
        .map_err(|e| ApiError::invalid("role", e))?;
    let name = body.name.filter(|n| !n.is_empty());
    if name.as_ref().is_some_and(|n| n.chars().count() > 256) {
        return Err(ApiError::invalid("name", "must be at most 256 characters"));
    }
    let key = ApiKey::generate();
    let record = crate::bootstrap::key_record(caller.org(), role, name, &key, Timestamp::now());
    state.store.insert_api_key(&record).await?;
    let mut view = KeyView::from(record);
    view.key = Some(key.expose().to_owned());
    Ok(Json(view))
}

/// List the org's API keys (never the keys themselves).
#[utoipa::path(get, path = "/keys", tag = "keys",
    responses((status = 200, body = KeyList)), security(("bearer" = []), ("basic" = []), ("fullstory" = [])))]
pub async fn list_keys(
    State(state): State<AppState>,
    caller: Authorized<AdminOnly>,
) -> ApiResult<Json<KeyList>> {
    let keys = state.store.list_api_keys(caller.org()).await?;
    Ok(Json(KeyList {
        keys: keys.into_iter().map(KeyView::from).collect(),
    }))
}

/// Revoke an API key: it answers 401 from now on.
#[utoipa::path(delete, path = "/keys/{id}", tag = "keys",
    params(("id" = String, Path, description = "Key id")),
    responses((status = 200, body = Empty), (status = 404, body = ErrorBody)),
    security(("bearer" = []), ("basic" = []), ("fullstory" = [])))]
pub async fn revoke_key(
    State(state): State<AppState>,
    caller: Authorized<AdminOnly>,
    PathParam(id): PathParam,
) -> ApiResult<Json<Empty>> {
    state
        .store
        .revoke_api_key(caller.org(), &id, Timestamp::now())
        .await?;
    Ok(Json(Empty {}))
}
