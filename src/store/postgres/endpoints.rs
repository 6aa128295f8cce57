//! Endpoints and their subscriptions on PostgreSQL.

use sqlx::{PgConnection, PgPool};

use super::{is_unique_violation, map_err, notices};
use crate::domain::{EndpointUid, EventTypeRef, OrgId, Timestamp};
use crate::store::notices::{self as told, DeletedRow};
use crate::store::rows::{attach_subscriptions, EndpointRow, SubscriptionRow, ENDPOINT_COLUMNS};
use crate::store::{
    EndpointPatch, EndpointRecord, NewEndpoint, Page, StoreError, StoreResult, WILDCARD,
};

/// Tells every node to forget its caches (the org's fan-out counts among them) once
/// this transaction commits.
async fn notify_caches(conn: &mut PgConnection) -> StoreResult<()> {
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(super::CACHE_CHANNEL)
        .execute(&mut *conn)
        .await
        .map_err(map_err)?;
    Ok(())
}

fn unique_or(url: &str) -> impl Fn(sqlx::Error) -> StoreError + '_ {
    move |e| {
        if is_unique_violation(&e) {
            StoreError::Conflict(format!("an endpoint with url {url} already exists"))
        } else {
            map_err(e)
        }
    }
}

/// Replaces an endpoint's subscriptions. An endpoint without any takes every event:
/// one wildcard row stands for that, so fan-out is an index lookup either way.
async fn write_subscriptions(
    conn: &mut PgConnection,
    org: &OrgId,
    uid: EndpointUid,
    event_types: &[EventTypeRef],
) -> StoreResult<()> {
    sqlx::query("DELETE FROM endpoint_event_types WHERE endpoint_uid = $1")
        .bind(uid.0)
        .execute(&mut *conn)
        .await
        .map_err(map_err)?;
    let (names, subs): (Vec<&str>, Vec<&str>) = if event_types.is_empty() {
        (vec![WILDCARD], vec![""])
    } else {
        event_types
            .iter()
            .map(|et| {
                (
                    et.event_name.as_str(),
                    et.subcategory.as_deref().unwrap_or(""),
                )
            })
            .unzip()
    };
    sqlx::query(
        "INSERT INTO endpoint_event_types (endpoint_uid, position, org_id, event_name, subcategory) \
         SELECT $1, n - 1, $2, name, sub FROM UNNEST($3::TEXT[], $4::TEXT[]) WITH ORDINALITY AS s(name, sub, n) \
         ON CONFLICT DO NOTHING",
    )
    .bind(uid.0)
    .bind(org.as_str())
    .bind(names)
    .bind(subs)
    .execute(&mut *conn)
    .await
    .map_err(map_err)?;
    Ok(())
}

/// Fills in the subscriptions of `endpoints` with one query.
async fn load_subscriptions(
    conn: &mut PgConnection,
    org: &OrgId,
    endpoints: &mut [EndpointRecord],
) -> StoreResult<()> {
    if endpoints.is_empty() {
        return Ok(());
    }
    let uids: Vec<i64> = endpoints.iter().map(|e| e.uid.0).collect();
    let rows = sqlx::query_as::<_, SubscriptionRow>(
        "SELECT endpoint_uid, event_name, subcategory FROM endpoint_event_types \
         WHERE org_id = $1 AND endpoint_uid = ANY($2) ORDER BY endpoint_uid, position",
    )
    .bind(org.as_str())
    .bind(uids)
    .fetch_all(&mut *conn)
    .await
    .map_err(map_err)?;
    attach_subscriptions(endpoints, rows);
    Ok(())
}

async fn fetch_live(
    conn: &mut PgConnection,
    org: &OrgId,
    url: &str,
) -> StoreResult<EndpointRecord> {
    sqlx::query_as::<_, EndpointRow>(&format!(
        "SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE org_id = $1 AND url = $2 AND deleted_ms IS NULL"
    ))
    .bind(org.as_str())
    .bind(url)
    .fetch_optional(&mut *conn)
    .await
    .map_err(map_err)?
    .ok_or(StoreError::NotFound)?
    .into_record()
}

pub(super) async fn create(
    pool: &PgPool,
    new: &NewEndpoint,
    operator: Option<&OrgId>,
) -> StoreResult<EndpointRecord> {
    create_within(pool, new, None, operator).await
}

/// Refuses a new endpoint when its org has `most` live ones already. The org's row is
/// locked first, so creates in one org (from any node) count one after another.
async fn room_for_one(conn: &mut PgConnection, org: &OrgId, most: u32) -> StoreResult<()> {
    let live: i64 = sqlx::query_scalar(
        "WITH o AS (SELECT id FROM orgs WHERE id = $1 FOR UPDATE) \
         SELECT COUNT(*) FROM endpoints WHERE org_id = (SELECT id FROM o) AND deleted_ms IS NULL",
    )
    .bind(org.as_str())
    .fetch_one(&mut *conn)
    .await
    .map_err(map_err)?;
    if live >= i64::from(most) {
        return Err(StoreError::Limit(format!(
            "this org has {live} endpoints, the most it may have (POSTHORN_MAX_ENDPOINTS_PER_ORG is {most}); delete one first"
        )));
    }
    Ok(())
}

/// Creates an endpoint, within `most` live endpoints of its org if given.
pub(super) async fn create_within(
    pool: &PgPool,
    new: &NewEndpoint,
    most: Option<u32>,
    operator: Option<&OrgId>,
) -> StoreResult<EndpointRecord> {
    let mut tx = pool.begin().await.map_err(map_err)?;
    if let Some(most) = most {
        room_for_one(&mut tx, &new.org_id, most).await?;
    }
    sqlx::query(
        "INSERT INTO endpoints (org_id, url, enabled, secret, created_ms, modified_ms, disabled_ms, headers, \
           rate_limit, rate_burst, fifo) \
         VALUES ($1, $2, $5, $3, $4, $4, CASE WHEN $5 THEN NULL ELSE $4 END, $6, $7, $8, $9)",
    )
    .bind(new.org_id.as_str())
    .bind(&new.url)
    .bind(&new.sealed_secret)
    .bind(new.now.millis())
    .bind(new.enabled)
    .bind(new.sealed_headers.as_deref())
    .bind(new.flow.rate_limit.map(|n| n as i32))
    .bind(new.flow.burst.map(|n| n as i32))
    .bind(new.flow.fifo)
    .execute(&mut *tx)
    .await
    .map_err(unique_or(&new.url))?;
    let mut endpoint = fetch_live(&mut tx, &new.org_id, &new.url).await?;
    write_subscriptions(&mut tx, &new.org_id, endpoint.uid, &new.event_types).await?;
    load_subscriptions(&mut tx, &new.org_id, std::slice::from_mut(&mut endpoint)).await?;
    let made = told::endpoint_saved(None, &endpoint, new.now);
    notices::store(&mut tx, &made, operator, new.now)
        .await
        .map_err(map_err)?;
    notify_caches(&mut tx).await?;
    tx.commit().await.map_err(map_err)?;
    Ok(endpoint)
}

pub(super) async fn get(pool: &PgPool, org: &OrgId, url: &str) -> StoreResult<EndpointRecord> {
    let mut conn = pool.acquire().await.map_err(map_err)?;
    let mut endpoint = fetch_live(&mut conn, org, url).await?;
    load_subscriptions(&mut conn, org, std::slice::from_mut(&mut endpoint)).await?;
    Ok(endpoint)
}

pub(super) async fn list(
    pool: &PgPool,
    org: &OrgId,
    after: Option<i64>,
    limit: u32,
) -> StoreResult<Page<EndpointRecord>> {
    let mut conn = pool.acquire().await.map_err(map_err)?;
    let items = sqlx::query_as::<_, EndpointRow>(&format!(
        "SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE org_id = $1 AND deleted_ms IS NULL AND uid > $2 \
         ORDER BY uid LIMIT $3"
    ))
    .bind(org.as_str())
    .bind(after.unwrap_or(0))
    .bind(i64::from(limit) + 1)
    .fetch_all(&mut *conn)
    .await
    .map_err(map_err)?
    .into_iter()
    .map(EndpointRow::into_record)
    .collect::<StoreResult<Vec<_>>>()?;
    let mut page = Page::from_overfetch(items, limit, |e| e.uid.0);
    load_subscriptions(&mut conn, org, &mut page.items).await?;
    Ok(page)
}

pub(super) async fn update(
    pool: &PgPool,
    org: &OrgId,
    url: &str,
    patch: &EndpointPatch,
    operator: Option<&OrgId>,
) -> StoreResult<EndpointRecord> {
    let mut tx = pool.begin().await.map_err(map_err)?;
    let current = fetch_live(&mut tx, org, url).await?;
    let new_url = patch.url.as_deref().unwrap_or(url);
    let flow = patch.flow.apply(current.flow);
    sqlx::query(
        "UPDATE endpoints SET url = $1, enabled = $2, secret = COALESCE($3, secret), modified_ms = $4, \
           old_secret = CASE WHEN $6 THEN NULL ELSE old_secret END, \
           old_secret_expires_ms = CASE WHEN $6 THEN NULL ELSE old_secret_expires_ms END, \
           disabled_reason = NULL, disabled_ms = CASE WHEN $2 THEN NULL ELSE COALESCE(disabled_ms, $4) END, \
           failing_since_ms = CASE WHEN $2 THEN NULL ELSE failing_since_ms END, \
           headers = CASE WHEN $7 THEN $8 ELSE headers END, \
           rate_limit = $9, rate_burst = $10, fifo = $11, \
           flow_next_ms = CASE WHEN $2 AND paused_until_ms IS NOT NULL AND (fifo OR rate_limit IS NOT NULL) \
             THEN $4 ELSE flow_next_ms END, \
           paused_until_ms = CASE WHEN $2 THEN NULL ELSE paused_until_ms END \
         WHERE uid = $5",
    )
    .bind(new_url)
    .bind(patch.enabled)
    .bind(patch.sealed_secret.as_deref())
    .bind(patch.now.millis())
    .bind(current.uid.0)
    .bind(patch.sealed_secret.is_some())
    .bind(patch.sealed_headers.is_some())
    .bind(patch.sealed_headers.clone().flatten())
    .bind(flow.rate_limit.map(|n| n as i32))
    .bind(flow.burst.map(|n| n as i32))
    .bind(flow.fifo)
    .execute(&mut *tx)
    .await
    .map_err(unique_or(new_url))?;
    if flow.queued() != current.flow.queued() {
        super::flow::settings_changed(&mut tx, current.uid.0, flow.queued(), patch.now)
            .await
            .map_err(map_err)?;
    }
    if !patch.enabled {
        // Switched off: its flow queue fails at once (see `store/flow.rs`).
        super::flow::drop_held(&mut tx, current.uid.0, patch.now)
            .await
            .map_err(map_err)?;
    }
    if let Some(event_types) = &patch.event_types {
        write_subscriptions(&mut tx, org, current.uid, event_types).await?;
    }
    let mut endpoint = fetch_live(&mut tx, org, new_url).await?;
    load_subscriptions(&mut tx, org, std::slice::from_mut(&mut endpoint)).await?;
    let made = told::endpoint_saved(Some(&current), &endpoint, patch.now);
    notices::store(&mut tx, &made, operator, patch.now)
        .await
        .map_err(map_err)?;
    notify_caches(&mut tx).await?;
    tx.commit().await.map_err(map_err)?;
    Ok(endpoint)
}

pub(super) async fn delete(
    pool: &PgPool,
    org: &OrgId,
    url: &str,
    now: Timestamp,
    operator: Option<&OrgId>,
) -> StoreResult<()> {
    let mut tx = pool.begin().await.map_err(map_err)?;
    let deleted = sqlx::query_as::<_, DeletedRow>(
        "UPDATE endpoints SET deleted_ms = $1, enabled = FALSE WHERE org_id = $2 AND url = $3 AND deleted_ms IS NULL \
         RETURNING uid, org_id, url",
    )
    .bind(now.millis())
    .bind(org.as_str())
    .bind(url)
    .fetch_optional(&mut *tx)
    .await
    .map_err(map_err)?
    .ok_or(StoreError::NotFound)?;
    // Its flow queue fails at once (see `store/flow.rs`).
    super::flow::drop_held(&mut tx, deleted.uid, now)
        .await
        .map_err(map_err)?;
    let made = [told::endpoint_deleted(&deleted, now)?];
    notices::store(&mut tx, &made, operator, now)
        .await
        .map_err(map_err)?;
    notify_caches(&mut tx).await?;
    tx.commit().await.map_err(map_err)
}

pub(super) async fn rotate_secret(
    pool: &PgPool,
    org: &OrgId,
    url: &str,
    sealed: &[u8],
    old_expires: Timestamp,
    now: Timestamp,
) -> StoreResult<()> {
    let done = sqlx::query(
        "UPDATE endpoints SET old_secret = secret, old_secret_expires_ms = $4, secret = $3, \
           modified_ms = $5 WHERE org_id = $1 AND url = $2 AND deleted_ms IS NULL",
    )
    .bind(org.as_str())
    .bind(url)
    .bind(sealed)
    .bind(old_expires.millis())
    .bind(now.millis())
    .execute(pool)
    .await
    .map_err(map_err)?
    .rows_affected();
    if done == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}
