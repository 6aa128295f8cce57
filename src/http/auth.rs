//! Authentication, authorization and per-key rate limiting, as one extractor.
//!
//! Policy: `Authorization: Basic <key>` (the raw key, as Fullstory does), standard
//! Basic with the key as the user and no password (`curl -u KEY:`), or
//! `Bearer <key>`. The key is hashed and looked up on every request, so a revoked key
//! answers 401 at once. Failed authentications are counted per client address
//! (`ratelimit::FailedAuthLimiter`): once an address is past its limit, every request
//! from it answers 429, whatever key it carries, until it has earned a try back, so a
//! right guess cannot be told from a wrong one. Roles are checked by the handler's
//! extractor type, so a handler's signature says who may call it.

use std::marker::PhantomData;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use crate::app::AppState;
use crate::domain::{ApiKey, OrgId, Role};
use crate::error::ApiError;
use crate::store::ApiKeyRecord;

/// Which roles may call an operation.
pub trait Policy: Send + Sync {
    fn allows(role: Role) -> bool;
}

/// Admin keys only.
pub struct AdminOnly;
impl Policy for AdminOnly {
    fn allows(role: Role) -> bool {
        role == Role::Admin
    }
}

/// Admin and publisher keys.
pub struct Publishers;
impl Policy for Publishers {
    fn allows(role: Role) -> bool {
        matches!(role, Role::Admin | Role::Publisher)
    }
}

/// Any valid key (reading the event catalog).
pub struct AnyRole;
impl Policy for AnyRole {
    fn allows(_: Role) -> bool {
        true
    }
}

/// The authenticated caller, allowed by policy `P`.
pub struct Authorized<P> {
    pub key: ApiKeyRecord,
    _policy: PhantomData<P>,
}

impl<P> Authorized<P> {
    pub fn org(&self) -> &OrgId {
        &self.key.org_id
    }

    /// The caller `key` stands for, when the web layer has checked it against `P`
    /// itself (a web session acts as the live key it was made with).
    pub fn acting_as(key: ApiKeyRecord) -> Self {
        Self {
            key,
            _policy: PhantomData,
        }
    }
}

fn presented_key(parts: &Parts) -> Option<ApiKey> {
    let header = parts.headers.get(AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, raw) = header.split_once(' ')?;
    let raw = raw.trim();
    if raw.is_empty() {
        return None;
    }
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(ApiKey::from_raw(raw));
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    Some(ApiKey::from_raw(
        standard_basic_user(raw).unwrap_or_else(|| raw.to_owned()),
    ))
}

/// The key in a standard Basic credential, `base64(key + ":")` (what `curl -u KEY:`
/// sends): the user part, when the value decodes to text whose password is empty. The
/// raw key itself (Fullstory's form) never has that shape.
fn standard_basic_user(raw: &str) -> Option<String> {
    use base64::Engine;
    let decoded = base64::engine::general_purpose::STANDARD.decode(raw).ok()?;
    let mut text = String::from_utf8(decoded).ok()?;
    if text.pop() != Some(':') || text.is_empty() || text.contains(':') {
        return None;
    }
    Some(text)
}

impl<P: Policy> FromRequestParts<AppState> for Authorized<P> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let addr = super::conn::client_addr(parts).map(|a| a.ip());
        if let (Some(limiter), Some(addr)) = (&state.failed_auth, addr) {
            limiter.admit(addr)?;
        }
        let record = match presented_key(parts) {
            Some(key) => {
                let hash = key.hash();
                state
                    .store
                    .find_api_key(&hash)
                    .await?
                    .filter(|r| r.revoked.is_none() && r.hash.ct_eq(&hash))
            }
            None => None,
        };
        let Some(record) = record else {
            return Err(match (&state.failed_auth, addr) {
                (Some(limiter), Some(addr)) => limiter.failed(addr),
                _ => ApiError::Unauthorized,
            });
        };
        if let Some(limiter) = &state.limiter {
            limiter.check(&state.store, &record.id).await?;
        }
        if !P::allows(record.role) {
            return Err(ApiError::Forbidden);
        }
        Ok(Self {
            key: record,
            _policy: PhantomData,
        })
    }
}
