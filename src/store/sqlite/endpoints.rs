//! Endpoints and their subscriptions on SQLite.

use rusqlite::{params, Connection};

use super::sql::{execute, first, is_unique_violation, map_err, rows};
use crate::domain::{EndpointUid, EventTypeRef, OrgId, Timestamp};
use crate::store::notices::DeletedRow;
use crate::store::rows::{attach_subscriptions, EndpointRow, SubscriptionRow, ENDPOINT_COLUMNS};
use crate::store::{
    EndpointPatch, EndpointRecord, NewEndpoint, Page, StoreError, StoreResult, WILDCARD,
};

fn conflict(url: &str) -> StoreError {
    StoreError::Conflict(format!("an endpoint with url {url} already exists"))
}

fn unique_or(url: &str) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    move |e| {
        if is_unique_violation(&e) {
            conflict(url)
        } else {
            map_err(e)
        }
    }
}

/// Replaces an endpoint's subscriptions. An endpoint without any takes every event:
/// one wildcard row stands for that, so fan-out is an index lookup either way.
fn write_subscriptions(
    conn: &Connection,
    org: &OrgId,
    uid: EndpointUid,
    event_types: &[EventTypeRef],
) -> StoreResult<()> {
    execute(
        conn,
        "DELETE FROM endpoint_event_types WHERE endpoint_uid = ?1",
        [uid.0],
    )?;
    let wildcard = [EventTypeRef {
        event_name: WILDCARD.to_owned(),
        subcategory: None,
    }];
    let subscriptions = if event_types.is_empty() {
        &wildcard[..]
    } else {
        event_types
    };
    for (position, et) in subscriptions.iter().enumerate() {
        execute(
            conn,
            "INSERT INTO endpoint_event_types (endpoint_uid, position, org_id, event_name, subcategory) \
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
            params![
                uid.0,
                position as i64,
                org.as_str(),
                et.event_name,
                et.subcategory.as_deref().unwrap_or("")
            ],
        )?;
    }
    Ok(())
}

/// Fills in the subscriptions of `endpoints` with one query.
fn load_subscriptions(
    conn: &Connection,
    org: &OrgId,
    endpoints: &mut [EndpointRecord],
) -> StoreResult<()> {
    let (Some(lo), Some(hi)) = (
        endpoints.iter().map(|e| e.uid.0).min(),
        endpoints.iter().map(|e| e.uid.0).max(),
    ) else {
        return Ok(());
    };
    let subs = rows::<SubscriptionRow>(
        conn,
        "SELECT endpoint_uid, event_name, subcategory FROM endpoint_event_types \
         WHERE org_id = ?1 AND endpoint_uid BETWEEN ?2 AND ?3 ORDER BY endpoint_uid, position",
        params![org.as_str(), lo, hi],
    )?;
    attach_subscriptions(endpoints, subs);
    Ok(())
}

fn fetch_live(conn: &Connection, org: &OrgId, url: &str) -> StoreResult<EndpointRecord> {
    first::<EndpointRow>(
        conn,
        &format!("SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE org_id = ?1 AND url = ?2 AND deleted_ms IS NULL"),
        params![org.as_str(), url],
    )?
    .ok_or(StoreError::NotFound)?
    .into_record()
}

pub(super) fn create(tx: &Connection, new: &NewEndpoint) -> StoreResult<EndpointRecord> {
    tx.prepare_cached(
        "INSERT INTO endpoints (org_id, url, enabled, secret, created_ms, modified_ms, disabled_ms, headers, \
           rate_limit, rate_burst, fifo) \
         VALUES (?1, ?2, ?5, ?3, ?4, ?4, CASE WHEN ?5 THEN NULL ELSE ?4 END, ?6, ?7, ?8, ?9)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            new.org_id.as_str(),
            new.url,
            new.sealed_secret,
            new.now.millis(),
            new.enabled,
            new.sealed_headers,
            new.flow.rate_limit,
            new.flow.burst,
            new.flow.fifo
        ])
    })
    .map_err(unique_or(&new.url))?;
    let mut endpoint = fetch_live(tx, &new.org_id, &new.url)?;
    write_subscriptions(tx, &new.org_id, endpoint.uid, &new.event_types)?;
    load_subscriptions(tx, &new.org_id, std::slice::from_mut(&mut endpoint))?;
    Ok(endpoint)
}

/// Refuses a new endpoint when `org` has `most` live ones already (inside the writer's
/// transaction that creates it: nothing else counts meanwhile).
pub(super) fn room_for_one(tx: &Connection, org: &OrgId, most: u32) -> StoreResult<()> {
    let live: i64 = super::sql::scalar(
        tx,
        "SELECT COUNT(*) FROM endpoints WHERE org_id = ?1 AND deleted_ms IS NULL",
        [org.as_str()],
    )?;
    if live >= i64::from(most) {
        return Err(StoreError::Limit(format!(
            "this org has {live} endpoints, the most it may have (POSTHORN_MAX_ENDPOINTS_PER_ORG is {most}); delete one first"
        )));
    }
    Ok(())
}

pub(super) fn get(conn: &Connection, org: &OrgId, url: &str) -> StoreResult<EndpointRecord> {
    let mut endpoint = fetch_live(conn, org, url)?;
    load_subscriptions(conn, org, std::slice::from_mut(&mut endpoint))?;
    Ok(endpoint)
}

pub(super) fn list(
    conn: &Connection,
    org: &OrgId,
    after: Option<i64>,
    limit: u32,
) -> StoreResult<Page<EndpointRecord>> {
    let items = rows::<EndpointRow>(
        conn,
        &format!(
            "SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE org_id = ?1 AND deleted_ms IS NULL AND uid > ?2 \
             ORDER BY uid LIMIT ?3"
        ),
        params![org.as_str(), after.unwrap_or(0), i64::from(limit) + 1],
    )?
    .into_iter()
    .map(EndpointRow::into_record)
    .collect::<StoreResult<Vec<_>>>()?;
    let mut page = Page::from_overfetch(items, limit, |e| e.uid.0);
    load_subscriptions(conn, org, &mut page.items)?;
    Ok(page)
}

/// The endpoint before and after the update.
pub(super) fn update(
    tx: &Connection,
    org: &OrgId,
    url: &str,
    patch: &EndpointPatch,
) -> StoreResult<(EndpointRecord, EndpointRecord)> {
    let current = fetch_live(tx, org, url)?;
    let new_url = patch.url.as_deref().unwrap_or(url);
    let flow = patch.flow.apply(current.flow);
    tx.prepare_cached(
        "UPDATE endpoints SET url = ?1, enabled = ?2, secret = COALESCE(?3, secret), modified_ms = ?4, \
           old_secret = CASE WHEN ?6 THEN NULL ELSE old_secret END, \
           old_secret_expires_ms = CASE WHEN ?6 THEN NULL ELSE old_secret_expires_ms END, \
           disabled_reason = NULL, disabled_ms = CASE WHEN ?2 THEN NULL ELSE COALESCE(disabled_ms, ?4) END, \
           failing_since_ms = CASE WHEN ?2 THEN NULL ELSE failing_since_ms END, \
           headers = CASE WHEN ?7 THEN ?8 ELSE headers END, \
           rate_limit = ?9, rate_burst = ?10, fifo = ?11, \
           flow_next_ms = CASE WHEN ?2 AND paused_until_ms IS NOT NULL AND (fifo OR rate_limit IS NOT NULL) \
             THEN ?4 ELSE flow_next_ms END, \
           paused_until_ms = CASE WHEN ?2 THEN NULL ELSE paused_until_ms END \
         WHERE uid = ?5",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            new_url,
            patch.enabled,
            patch.sealed_secret,
            patch.now.millis(),
            current.uid.0,
            patch.sealed_secret.is_some(),
            patch.sealed_headers.is_some(),
            patch.sealed_headers.clone().flatten(),
            flow.rate_limit,
            flow.burst,
            flow.fifo
        ])
    })
    .map_err(unique_or(new_url))?;
    if flow.queued() != current.flow.queued() {
        super::flow::settings_changed(tx, current.uid.0, flow.queued(), patch.now.millis())?;
    }
    if !patch.enabled {
        // Switched off: its flow queue fails at once (see `store/flow.rs`).
        super::flow::drop_held(tx, current.uid.0, patch.now.millis())?;
    }
    if let Some(event_types) = &patch.event_types {
        write_subscriptions(tx, org, current.uid, event_types)?;
    }
    let mut endpoint = fetch_live(tx, org, new_url)?;
    load_subscriptions(tx, org, std::slice::from_mut(&mut endpoint))?;
    Ok((current, endpoint))
}

pub(super) fn delete(
    conn: &Connection,
    org: &OrgId,
    url: &str,
    now: Timestamp,
) -> StoreResult<DeletedRow> {
    let deleted = first::<DeletedRow>(
        conn,
        "UPDATE endpoints SET deleted_ms = ?1, enabled = 0 WHERE org_id = ?2 AND url = ?3 AND deleted_ms IS NULL \
         RETURNING uid, org_id, url",
        params![now.millis(), org.as_str(), url],
    )?
    .ok_or(StoreError::NotFound)?;
    // Its flow queue fails at once (see `store/flow.rs`).
    super::flow::drop_held(conn, deleted.uid, now.millis())?;
    Ok(deleted)
}

pub(super) fn rotate_secret(
    conn: &Connection,
    org: &OrgId,
    url: &str,
    sealed: &[u8],
    old_expires: Timestamp,
    now: Timestamp,
) -> StoreResult<()> {
    let done = execute(
        conn,
        "UPDATE endpoints SET old_secret = secret, old_secret_expires_ms = ?4, secret = ?3, \
           modified_ms = ?5 WHERE org_id = ?1 AND url = ?2 AND deleted_ms IS NULL",
        params![
            org.as_str(),
            url,
            sealed,
            old_expires.millis(),
            now.millis()
        ],
    )?;
    if done == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}
