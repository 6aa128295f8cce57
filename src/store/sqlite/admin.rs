//! Orgs, API keys, the event catalog and the meta table on SQLite.

use rusqlite::{params, Connection};

use super::sql::{execute, first, is_unique_violation, map_err, rows, scalar};
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

pub(super) fn meta_insert_if_absent(
    conn: &Connection,
    key: &str,
    value: &[u8],
) -> StoreResult<Vec<u8>> {
    execute(
        conn,
        "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
        params![key, value],
    )?;
    scalar(conn, "SELECT value FROM meta WHERE key = ?1", [key])
}

pub(super) fn ensure_org(tx: &Connection, org: &OrgId, now: Timestamp) -> StoreResult<()> {
    let inserted = execute(
        tx,
        "INSERT INTO orgs (id, created_ms) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
        params![org.as_str(), now.millis()],
    )?;
    if inserted == 1 {
        // One millisecond apart, so listing by creation keeps the catalog's order.
        for (i, (name, display, has_sub)) in DEFAULT_CATALOG.iter().enumerate() {
            execute(
                tx,
                "INSERT INTO event_types (org_id, name, display_name, has_subcategories, created_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![org.as_str(), name, display, has_sub, now.millis() + i as i64],
            )?;
        }
    }
    Ok(())
}

pub(super) fn count_active_keys(conn: &Connection) -> StoreResult<u64> {
    let n: i64 = scalar(
        conn,
        "SELECT COUNT(*) FROM api_keys WHERE revoked_ms IS NULL",
        [],
    )?;
    Ok(u64::try_from(n).unwrap_or(0))
}

fn insert_key_sql(
    conn: &Connection,
    key: &ApiKeyRecord,
    or_ignore: bool,
) -> rusqlite::Result<usize> {
    let sql = if or_ignore {
        "INSERT INTO api_keys (id, org_id, hash, role, name, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
         ON CONFLICT (hash) DO NOTHING"
    } else {
        "INSERT INTO api_keys (id, org_id, hash, role, name, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
    };
    conn.prepare_cached(sql)?.execute(params![
        key.id,
        key.org_id.as_str(),
        key.hash.0.as_slice(),
        key.role.as_str(),
        key.name,
        key.created.millis()
    ])
}

pub(super) fn insert_key(conn: &Connection, key: &ApiKeyRecord) -> StoreResult<()> {
    insert_key_sql(conn, key, false).map_err(|e| {
        if is_unique_violation(&e) {
            StoreError::Conflict("that API key already exists".into())
        } else {
            map_err(e)
        }
    })?;
    Ok(())
}

pub(super) fn insert_key_if_absent(
    conn: &Connection,
    key: &ApiKeyRecord,
) -> StoreResult<KeyInsert> {
    if insert_key_sql(conn, key, true).map_err(map_err)? == 1 {
        return Ok(KeyInsert::Inserted);
    }
    find_key(conn, &key.hash)?
        .map(KeyInsert::Existed)
        .ok_or(StoreError::NotFound)
}

pub(super) fn find_key(conn: &Connection, hash: &KeyHash) -> StoreResult<Option<ApiKeyRecord>> {
    first::<KeyRow>(
        conn,
        &format!("{KEY_COLUMNS} WHERE hash = ?1"),
        [hash.0.as_slice()],
    )?
    .map(KeyRow::into_record)
    .transpose()
}

pub(super) fn list_keys(conn: &Connection, org: &OrgId) -> StoreResult<Vec<ApiKeyRecord>> {
    rows::<KeyRow>(
        conn,
        &format!("{KEY_COLUMNS} WHERE org_id = ?1 ORDER BY created_ms, id"),
        [org.as_str()],
    )?
    .into_iter()
    .map(KeyRow::into_record)
    .collect()
}

pub(super) fn revoke_key(
    conn: &Connection,
    org: &OrgId,
    id: &str,
    now: Timestamp,
) -> StoreResult<()> {
    let found = execute(
        conn,
        "UPDATE api_keys SET revoked_ms = COALESCE(revoked_ms, ?1) WHERE org_id = ?2 AND id = ?3",
        params![now.millis(), org.as_str(), id],
    )?;
    if found == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

pub(super) fn list_types(conn: &Connection, org: &OrgId) -> StoreResult<Vec<EventTypeRecord>> {
    rows::<EventTypeRow>(
        conn,
        &format!(
            "SELECT {EVENT_TYPE_COLUMNS} FROM event_types WHERE org_id = ?1 ORDER BY created_ms, name"
        ),
        [org.as_str()],
    )?
    .into_iter()
    .map(EventTypeRow::into_record)
    .collect()
}

pub(super) fn get_type(
    conn: &Connection,
    org: &OrgId,
    name: &str,
) -> StoreResult<Option<EventTypeRecord>> {
    first::<EventTypeRow>(
        conn,
        &format!("SELECT {EVENT_TYPE_COLUMNS} FROM event_types WHERE org_id = ?1 AND name = ?2"),
        params![org.as_str(), name],
    )?
    .map(EventTypeRow::into_record)
    .transpose()
}

pub(super) fn create_type(
    conn: &Connection,
    org: &OrgId,
    t: &EventTypeRecord,
    now: Timestamp,
) -> StoreResult<()> {
    let schema = t.schema.as_ref().map(|s| s.source().to_string());
    let example = t.example.as_ref().map(ToString::to_string);
    conn.prepare_cached(
        "INSERT INTO event_types (org_id, name, display_name, has_subcategories, created_ms, \
           version, schema_json, example_json) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            org.as_str(),
            t.name,
            t.display_name,
            t.has_subcategories,
            now.millis(),
            t.version,
            schema,
            example
        ])
    })
    .map_err(|e| {
        if is_unique_violation(&e) {
            StoreError::Conflict(format!("event type {} already exists", t.name))
        } else {
            map_err(e)
        }
    })?;
    if schema.is_some() || example.is_some() {
        put_version(conn, org, &t.name, t.version, &schema, &example, now)?;
    }
    Ok(())
}

fn put_version(
    conn: &Connection,
    org: &OrgId,
    name: &str,
    version: i64,
    schema: &Option<String>,
    example: &Option<String>,
    now: Timestamp,
) -> StoreResult<()> {
    execute(
        conn,
        "INSERT INTO event_type_versions (org_id, event_name, version, schema_json, example_json, created_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (org_id, event_name, version) \
         DO UPDATE SET schema_json = excluded.schema_json, example_json = excluded.example_json",
        params![org.as_str(), name, version, schema, example, now.millis()],
    )?;
    Ok(())
}

/// Runs in the writer's transaction: read, apply, write the type and its version.
pub(super) fn update_type(
    tx: &Connection,
    org: &OrgId,
    name: &str,
    change: &EventTypeChange,
    now: Timestamp,
) -> StoreResult<EventTypeRecord> {
    let current = get_type(tx, org, name)?.ok_or(StoreError::NotFound)?;
    let u = type_update(&current, change)?;
    execute(
        tx,
        "UPDATE event_types SET display_name = ?3, version = ?4, schema_json = ?5, example_json = ?6 \
         WHERE org_id = ?1 AND name = ?2",
        params![
            org.as_str(),
            name,
            u.display_name,
            u.version,
            u.schema_json,
            u.example_json
        ],
    )?;
    put_version(
        tx,
        org,
        name,
        u.version,
        &u.schema_json,
        &u.example_json,
        now,
    )?;
    get_type(tx, org, name)?.ok_or(StoreError::NotFound)
}

pub(super) fn type_version(
    conn: &Connection,
    org: &OrgId,
    name: &str,
    version: i64,
) -> StoreResult<Option<EventTypeVersion>> {
    let Some(current) = get_type(conn, org, name)? else {
        return Ok(None);
    };
    if let Some(known) = known_version(&current, version) {
        return Ok(known);
    }
    let kept = first::<EventTypeVersionRow>(
        conn,
        "SELECT version, schema_json, example_json FROM event_type_versions \
         WHERE org_id = ?1 AND event_name = ?2 AND version = ?3",
        params![org.as_str(), name, version],
    )?
    .map(EventTypeVersionRow::into_version)
    .transpose()?;
    Ok(Some(recorded_version(version, kept)))
}

const SUBCATEGORY_COLUMNS: &str = "SELECT seq, event_name, token, display_name FROM subcategories";

pub(super) fn list_subcategories(
    conn: &Connection,
    org: &OrgId,
    event_name: &str,
    after: Option<i64>,
    limit: u32,
) -> StoreResult<Page<SubcategoryRecord>> {
    let items = rows::<SubcategoryRow>(
        conn,
        &format!(
            "{SUBCATEGORY_COLUMNS} WHERE org_id = ?1 AND event_name = ?2 AND seq > ?3 ORDER BY seq LIMIT ?4"
        ),
        params![org.as_str(), event_name, after.unwrap_or(0), i64::from(limit) + 1],
    )?
    .into_iter()
    .map(SubcategoryRecord::from)
    .collect();
    Ok(Page::from_overfetch(items, limit, |s| s.seq))
}

pub(super) fn subcategory_exists(
    conn: &Connection,
    org: &OrgId,
    event_name: &str,
    token: &str,
) -> StoreResult<bool> {
    let n: i64 = scalar(
        conn,
        "SELECT COUNT(*) FROM subcategories WHERE org_id = ?1 AND event_name = ?2 AND token = ?3",
        params![org.as_str(), event_name, token],
    )?;
    Ok(n > 0)
}

pub(super) fn create_subcategory(
    conn: &Connection,
    org: &OrgId,
    event_name: &str,
    token: &str,
    display_name: Option<&str>,
    now: Timestamp,
) -> StoreResult<SubcategoryRecord> {
    first::<SubcategoryRow>(
        conn,
        "INSERT INTO subcategories (org_id, event_name, token, display_name, created_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5) RETURNING seq, event_name, token, display_name",
        params![org.as_str(), event_name, token, display_name, now.millis()],
    )?
    .map(SubcategoryRecord::from)
    .ok_or(StoreError::NotFound)
}
