//! Making sure someone can log in: the bootstrap key of `serve`, the first-start key,
//! and `posthorn keys create`.

use anyhow::Context;
use base64::Engine;
use rand::RngCore;

use crate::config::ServeConfig;
use crate::domain::{ApiKey, OrgId, Role, Timestamp};
use crate::store::{ApiKeyRecord, DynStore, KeyInsert};

/// A new key id: `k_` and 12 random bytes, base64url.
pub fn new_key_id() -> String {
    let mut bytes = [0u8; 12];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!(
        "k_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// The stored form of a new, active key.
pub fn key_record(
    org: &OrgId,
    role: Role,
    name: Option<String>,
    key: &ApiKey,
    now: Timestamp,
) -> ApiKeyRecord {
    ApiKeyRecord {
        id: new_key_id(),
        org_id: org.clone(),
        role,
        name,
        hash: key.hash(),
        created: now,
        revoked: None,
    }
}

/// Stores `key` for `org` (creating the org if needed) and returns its record.
pub async fn create_key(
    store: &DynStore,
    org: &OrgId,
    role: Role,
    name: Option<String>,
    key: &ApiKey,
) -> anyhow::Result<ApiKeyRecord> {
    let now = Timestamp::now();
    store.ensure_org(org, now).await.context("creating org")?;
    let record = key_record(org, role, name, key, now);
    store.insert_api_key(&record).await.context("storing key")?;
    Ok(record)
}

/// At `serve` start: ensure the bootstrap key, or mint and print one when the store
/// has no active key at all.
pub async fn run(store: &DynStore, config: &ServeConfig) -> anyhow::Result<()> {
    let org = OrgId::parse(&config.bootstrap_org)
        .map_err(anyhow::Error::msg)
        .context("POSTHORN_BOOTSTRAP_ORG")?;
    if let Some(raw) = config.bootstrap_key.as_deref().filter(|k| !k.is_empty()) {
        let now = Timestamp::now();
        store
            .ensure_org(&org, now)
            .await
            .context("creating bootstrap org")?;
        let key = ApiKey::from_raw(raw);
        let record = key_record(&org, Role::Admin, Some("bootstrap".into()), &key, now);
        match store
            .insert_api_key_if_absent(&record)
            .await
            .context("storing bootstrap key")?
        {
            KeyInsert::Inserted => tracing::info!(org = %org, "bootstrap admin key created"),
            KeyInsert::Existed(existing) if existing.revoked.is_some() => tracing::warn!(
                key.id = %existing.id,
                "POSTHORN_BOOTSTRAP_KEY names a key that was revoked; it stays revoked (unset the variable, or choose a new key)"
            ),
            KeyInsert::Existed(existing) => {
                tracing::info!(key.id = %existing.id, org = %existing.org_id, "bootstrap key is in place")
            }
        }
        return Ok(());
    }
    if store.count_active_api_keys().await? == 0 {
        let key = ApiKey::generate();
        create_key(store, &org, Role::Admin, Some("first-start".into()), &key).await?;
        // Printed once, on stderr, never logged: this is how a new user gets in.
        eprintln!(
            "\nposthorn: no API key existed, so an admin key was created for org {org}:\n\n    {}\n\nIt is shown only this once. Use it as `Authorization: Basic <key>`, or sign in\nwith it at {}/console/\n",
            key.expose(),
            config.base_url()
        );
    }
    Ok(())
}
