//! Orgs, API keys, the event catalog, the meta table and the shared rate-limit windows
//! on PostgreSQL. Changes to what nodes cache notify [`CACHE_CHANNEL`] in their
//! transaction.

use sqlx::{PgPool, Postgres, Transaction};

use super::{is_unique_violation, map_err, CACHE_CHANNEL};
use crate::domain::{KeyHash, OrgId, Timestamp};
use crate::store::rows::{
    EventTypeRow, EventTypeVersionRow, KeyRow, SubcategoryRow, EVENT_TYPE_COLUMNS,
};
use crate::store::rules::{known_version, recorded_version, type_update};
use crate::store::{
    ApiKeyRecord, EventTypeChange, EventTypeRecord, EventTypeVersion, KeyInsert, Page, StoreError,
    StoreResult, SubcategoryRecord, DEFAULT_CATALOG,
};

const KEY_COLUMNS: &str =
    "SELECT id, org_id, hash, role, name, created_ms, revoked_ms FROM api_keys";

/// Tells every node to forget its caches once this transaction commits.
async fn notify_caches(tx: &mut Transaction<'_, Postgres>) -> StoreResult<()> {
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(CACHE_CHANNEL)
        .execute(&mut **tx)
        .await
        .map_err(map_err)?;
    Ok(())
}

pub(super) async fn meta_insert_if_absent(
    pool: &PgPool,
    key: &str,
    value: &[u8],
) -> StoreResult<Vec<u8>> {
    sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
        .bind(key)
        .bind(value)
        .execute(pool)
        .await
        .map_err(map_err)?;
    sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
        .bind(key)
        .fetch_one(pool)
        .await
        .map_err(map_err)
}

pub(super) async fn ensure_org(pool: &PgPool, org: &OrgId, now: Timestamp) -> StoreResult<()> {
    let mut tx = pool.begin().await.map_err(map_err)?;
    let inserted =
        sqlx::query("INSERT INTO orgs (id, created_ms) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(org.as_str())
            .bind(now.millis())
            .execute(&mut *tx)
            .await
            .map_err(map_err)?
            .rows_affected();
    if inserted == 1 {
        // One millisecond apart, so listing by creation keeps the catalog's order.
        for (i, (name, display, has_sub)) in DEFAULT_CATALOG.iter().enumerate() {
            sqlx::query(
                "INSERT INTO event_types (org_id, name, display_name, has_subcategories, created_ms) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(org.as_str())
            .bind(name)
            .bind(display)
            .bind(has_sub)
            .bind(now.millis() + i as i64)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        }
        notify_caches(&mut tx).await?;
    }
    tx.commit().await.map_err(map_err)
}

pub(super) async fn count_active_keys(pool: &PgPool) -> StoreResult<u64> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM api_keys WHERE revoked_ms IS NULL")
        .fetch_one(pool)
        .await
        .map_err(map_err)?;
    Ok(u64::try_from(n).unwrap_or(0))
}

fn insert_key_query(
    key: &ApiKeyRecord,
    sql: &'static str,
) -> sqlx::query::Query<'static, Postgres, sqlx::postgres::PgArguments> {
    sqlx::query(sql)
        .bind(key.id.clone())
        .bind(key.org_id.as_str().to_owned())
        .bind(key.hash.0.to_vec())
        .bind(key.role.as_str())
        .bind(key.name.clone())
        .bind(key.created.millis())
}

pub(super) async fn insert_key(pool: &PgPool, key: &ApiKeyRecord) -> StoreResult<()> {
    insert_key_query(
        key,
        "INSERT INTO api_keys (id, org_id, hash, role, name, created_ms) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .execute(pool)
    .await
    .map_err(|e| {
        if is_unique_violation(&e) {
            StoreError::Conflict("that API key already exists".into())
        } else {
            map_err(e)
        }
    })?;
    Ok(())
}

pub(super) async fn insert_key_if_absent(
    pool: &PgPool,
    key: &ApiKeyRecord,
) -> StoreResult<KeyInsert> {
    let inserted = insert_key_query(
        key,
        "INSERT INTO api_keys (id, org_id, hash, role, name, created_ms) VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (hash) DO NOTHING",
    )
    .execute(pool)
    .await
    .map_err(map_err)?
    .rows_affected();
    if inserted == 1 {
        return Ok(KeyInsert::Inserted);
    }
    find_key(pool, &key.hash)
        .await?
        .map(KeyInsert::Existed)
        .ok_or(StoreError::NotFound)
}

pub(super) async fn find_key(pool: &PgPool, hash: &KeyHash) -> StoreResult<Option<ApiKeyRecord>> {
    sqlx::query_as::<_, KeyRow>(&format!("{KEY_COLUMNS} WHERE hash = $1"))
        .bind(hash.0.as_slice())
        .fetch_optional(pool)
        .await
        .map_err(map_err)?
        .map(KeyRow::into_record)
        .transpose()
}

pub(super) async fn list_keys(pool: &PgPool, org: &OrgId) -> StoreResult<Vec<ApiKeyRecord>> {
    sqlx::query_as::<_, KeyRow>(&format!(
        "{KEY_COLUMNS} WHERE org_id = $1 ORDER BY created_ms, id"
    ))
    .bind(org.as_str())
    .fetch_all(pool)
    .await
    .map_err(map_err)?
    .into_iter()
    .map(KeyRow::into_record)
    .collect()
}

pub(super) async fn revoke_key(
    pool: &PgPool,
    org: &OrgId,
    id: &str,
    now: Timestamp,
) -> StoreResult<()> {
    let mut tx = pool.begin().await.map_err(map_err)?;
    let found = sqlx::query(
        "UPDATE api_keys SET revoked_ms = COALESCE(revoked_ms, $1) WHERE org_id = $2 AND id = $3",
    )
    .bind(now.millis())
    .bind(org.as_str())
    .bind(id)
    .execute(&mut *tx)
    .await
    .map_err(map_err)?
    .rows_affected();
    if found == 0 {
        return Err(StoreError::NotFound);
    }
    notify_caches(&mut tx).await?;
    tx.commit().await.map_err(map_err)
}

pub(super) async fn hit_rate_window(
    pool: &PgPool,
    key_id: &str,
    window_ms: i64,
) -> StoreResult<u32> {
    let hits: i64 = sqlx::query_scalar(
        "INSERT INTO rate_windows (key_id, window_ms, hits) VALUES ($1, $2, 1) \
         ON CONFLICT (key_id, window_ms) DO UPDATE SET hits = rate_windows.hits + 1 RETURNING hits",
    )
    .bind(key_id)
    .bind(window_ms)
    .fetch_one(pool)
    .await
    .map_err(map_err)?;
    // Windows are one second long; drop the old ones now and then (1 call in 256).
    if rand::random::<u8>() == 0 {
        sqlx::query("DELETE FROM rate_windows WHERE window_ms < $1")
            .bind(window_ms - 60_000)
            .execute(pool)
            .await
            .map_err(map_err)?;
    }
    Ok(u32::try_from(hits).unwrap_or(u32::MAX))
}

pub(super) async fn list_types(pool: &PgPool, org: &OrgId) -> StoreResult<Vec<EventTypeRecord>> {
    sqlx::query_as::<_, EventTypeRow>(&format!(
        "SELECT {EVENT_TYPE_COLUMNS} FROM event_types WHERE org_id = $1 ORDER BY created_ms, name"
    ))
    .bind(org.as_str())
    .fetch_all(pool)
    .await
    .map_err(map_err)?
    .into_iter()
    .map(EventTypeRow::into_record)
    .collect()
}

/// The type `name` of `org`; `lock` takes its row for the rest of the transaction.
async fn fetch_type(
    conn: &mut sqlx::PgConnection,
    org: &OrgId,
    name: &str,
    lock: bool,
) -> StoreResult<Option<EventTypeRecord>> {
    let lock = if lock { " FOR UPDATE" } else { "" };
    sqlx::query_as::<_, EventTypeRow>(&format!(
        "SELECT {EVENT_TYPE_COLUMNS} FROM event_types WHERE org_id = $1 AND name = $2{lock}"
    ))
    .bind(org.as_str())
    .bind(name)
    .fetch_optional(conn)
    .await
    .map_err(map_err)?
    .map(EventTypeRow::into_record)
    .transpose()
}

pub(super) async fn get_type(
    pool: &PgPool,
    org: &OrgId,
    name: &str,
) -> StoreResult<Option<EventTypeRecord>> {
    let mut conn = pool.acquire().await.map_err(map_err)?;
    fetch_type(&mut conn, org, name, false).await
}

async fn put_version(
    tx: &mut Transaction<'_, Postgres>,
    org: &OrgId,
    name: &str,
    version: i64,
    schema: &Option<String>,
    example: &Option<String>,
    now: Timestamp,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO event_type_versions (org_id, event_name, version, schema_json, example_json, created_ms) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (org_id, event_name, version) \
         DO UPDATE SET schema_json = excluded.schema_json, example_json = excluded.example_json",
    )
    .bind(org.as_str())
    .bind(name)
    .bind(version)
    .bind(schema.as_deref())
    .bind(example.as_deref())
    .bind(now.millis())
    .execute(&mut **tx)
    .await
    .map_err(map_err)?;
    Ok(())
}

pub(super) async fn update_type(
    pool: &PgPool,
    org: &OrgId,
    name: &str,
    change: &EventTypeChange,
    now: Timestamp,
) -> StoreResult<EventTypeRecord> {
    let mut tx = pool.begin().await.map_err(map_err)?;
    let current = fetch_type(&mut tx, org, name, true)
        .await?
        .ok_or(StoreError::NotFound)?;
    let u = type_update(&current, change)?;
    sqlx::query(
        "UPDATE event_types SET display_name = $3, version = $4, schema_json = $5, example_json = $6 \
         WHERE org_id = $1 AND name = $2",
    )
    .bind(org.as_str())
    .bind(name)
    .bind(&u.display_name)
    .bind(u.version)
    .bind(u.schema_json.as_deref())
    .bind(u.example_json.as_deref())
    .execute(&mut *tx)
    .await
    .map_err(map_err)?;
    put_version(
        &mut tx,
        org,
        name,
        u.version,
        &u.schema_json,
        &u.example_json,
        now,
    )
    .await?;
    let updated = fetch_type(&mut tx, org, name, false)
        .await?
        .ok_or(StoreError::NotFound)?;
    notify_caches(&mut tx).await?;
    tx.commit().await.map_err(map_err)?;
    Ok(updated)
}

pub(super) async fn type_version(
    pool: &PgPool,
    org: &OrgId,
    name: &str,
    version: i64,
) -> StoreResult<Option<EventTypeVersion>> {
    let Some(current) = get_type(pool, org, name).await? else {
        return Ok(None);
    };
    if let Some(known) = known_version(&current, version) {
        return Ok(known);
    }
    let kept = sqlx::query_as::<_, EventTypeVersionRow>(
        "SELECT version, schema_json, example_json FROM event_type_versions \
         WHERE org_id = $1 AND event_name = $2 AND version = $3",
    )
    .bind(org.as_str())
    .bind(name)
    .bind(version)
    .fetch_optional(pool)
    .await
    .map_err(map_err)?
    .map(EventTypeVersionRow::into_version)
    .transpose()?;
    Ok(Some(recorded_version(version, kept)))
}

pub(super) async fn create_type(
    pool: &PgPool,
    org: &OrgId,
    t: &EventTypeRecord,
    now: Timestamp,
) -> StoreResult<()> {
    let mut tx = pool.begin().await.map_err(map_err)?;
    let schema = t.schema.as_ref().map(|s| s.source().to_string());
    let example = t.example.as_ref().map(ToString::to_string);
    sqlx::query(
        "INSERT INTO event_types (org_id, name, display_name, has_subcategories, created_ms, \
           version, schema_json, example_json) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(org.as_str())
    .bind(&t.name)
    .bind(&t.display_name)
    .bind(t.has_subcategories)
    .bind(now.millis())
    .bind(t.version)
    .bind(schema.as_deref())
    .bind(example.as_deref())
    .execute(&mut *tx)
    .await
    .map_err(|e| {
        if is_unique_violation(&e) {
            StoreError::Conflict(format!("event type {} already exists", t.name))
        } else {
            map_err(e)
        }
    })?;
    if schema.is_some() || example.is_some() {
        put_version(&mut tx, org, &t.name, t.version, &schema, &example, now).await?;
    }
    notify_caches(&mut tx).await?;
    tx.commit().await.map_err(map_err)
}

const SUBCATEGORY_COLUMNS: &str = "seq, event_name, token, display_name";

pub(super) async fn list_subcategories(
    pool: &PgPool,
    org: &OrgId,
    event_name: &str,
    after: Option<i64>,
    limit: u32,
) -> StoreResult<Page<SubcategoryRecord>> {
    let items = sqlx::query_as::<_, SubcategoryRow>(&format!(
        "SELECT {SUBCATEGORY_COLUMNS} FROM subcategories WHERE org_id = $1 AND event_name = $2 AND seq > $3 \
         ORDER BY seq LIMIT $4"
    ))
    .bind(org.as_str())
    .bind(event_name)
    .bind(after.unwrap_or(0))
    .bind(i64::from(limit) + 1)
    .fetch_all(pool)
    .await
    .map_err(map_err)?
    .into_iter()
    .map(SubcategoryRecord::from)
    .collect();
    Ok(Page::from_overfetch(items, limit, |s| s.seq))
}

pub(super) async fn subcategory_exists(
    pool: &PgPool,
    org: &OrgId,
    event_name: &str,
    token: &str,
) -> StoreResult<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM subcategories WHERE org_id = $1 AND event_name = $2 AND token = $3)",
    )
    .bind(org.as_str())
    .bind(event_name)
    .bind(token)
    .fetch_one(pool)
    .await
    .map_err(map_err)
}

pub(super) async fn create_subcategory(
    pool: &PgPool,
    org: &OrgId,
    event_name: &str,
    token: &str,
    display_name: Option<&str>,
    now: Timestamp,
) -> StoreResult<SubcategoryRecord> {
    sqlx::query_as::<_, SubcategoryRow>(&format!(
        "INSERT INTO subcategories (org_id, event_name, token, display_name, created_ms) \
         VALUES ($1, $2, $3, $4, $5) RETURNING {SUBCATEGORY_COLUMNS}"
    ))
    .bind(org.as_str())
    .bind(event_name)
    .bind(token)
    .bind(display_name)
    .bind(now.millis())
    .fetch_one(pool)
    .await
    .map(SubcategoryRecord::from)
    .map_err(map_err)
}
