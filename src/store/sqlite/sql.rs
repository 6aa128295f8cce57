//! Running statements: errors as the store's error kinds, rows as structs.

use rusqlite::ErrorCode;

use crate::store::StoreError;

/// Maps a driver error: a full disk, a lock held too long or an I/O failure is
/// `Unavailable` (answered 503, retried by workers; nothing acknowledged is lost).
pub(super) fn map_err(err: rusqlite::Error) -> StoreError {
    match &err {
        rusqlite::Error::QueryReturnedNoRows => StoreError::NotFound,
        rusqlite::Error::SqliteFailure(e, _)
            if matches!(
                e.code,
                ErrorCode::DiskFull
                    | ErrorCode::DatabaseBusy
                    | ErrorCode::DatabaseLocked
                    | ErrorCode::SystemIoFailure
                    | ErrorCode::CannotOpen
                    | ErrorCode::OutOfMemory
            ) =>
        {
            StoreError::Unavailable(err.into())
        }
        _ => StoreError::Other(err.into()),
    }
}

/// True when `err` is a violation of a UNIQUE or PRIMARY KEY constraint.
pub(super) fn is_unique_violation(err: &rusqlite::Error) -> bool {
    matches!(err, rusqlite::Error::SqliteFailure(e, _)
        if e.code == ErrorCode::ConstraintViolation
            && matches!(e.extended_code, rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY))
}

/// Maps a serde_rusqlite error (a row that does not fit its struct).
pub(super) fn map_row_err(err: serde_rusqlite::Error) -> StoreError {
    match err {
        serde_rusqlite::Error::Rusqlite(e) => map_err(e),
        other => StoreError::corrupt(other),
    }
}

/// Every row of a (cached) statement, as `T` by column name.
pub(super) fn rows<T: serde::de::DeserializeOwned>(
    conn: &rusqlite::Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<T>, StoreError> {
    let mut stmt = conn.prepare_cached(sql).map_err(map_err)?;
    let rows = stmt.query(params).map_err(map_err)?;
    serde_rusqlite::from_rows::<T>(rows)
        .map(|r| r.map_err(map_row_err))
        .collect()
}

/// The first row of a (cached) statement, if any.
pub(super) fn first<T: serde::de::DeserializeOwned>(
    conn: &rusqlite::Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Option<T>, StoreError> {
    let mut stmt = conn.prepare_cached(sql).map_err(map_err)?;
    let mut rows = stmt.query(params).map_err(map_err)?;
    match rows.next().map_err(map_err)? {
        Some(row) => serde_rusqlite::from_row::<T>(row)
            .map(Some)
            .map_err(map_row_err),
        None => Ok(None),
    }
}

/// Runs a (cached) statement; returns how many rows it changed.
pub(super) fn execute(
    conn: &rusqlite::Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<usize, StoreError> {
    conn.prepare_cached(sql)
        .and_then(|mut stmt| stmt.execute(params))
        .map_err(map_err)
}

/// One value of the first row (a count, a MIN).
pub(super) fn scalar<T: rusqlite::types::FromSql>(
    conn: &rusqlite::Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<T, StoreError> {
    conn.prepare_cached(sql)
        .and_then(|mut stmt| stmt.query_row(params, |row| row.get(0)))
        .map_err(map_err)
}

/// Two integer columns of every row (for the claim's scan of the due index, which runs
/// often and reads many rows).
pub(super) fn pairs(
    conn: &rusqlite::Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<(i64, i64)>, StoreError> {
    let mut stmt = conn.prepare_cached(sql).map_err(map_err)?;
    let rows = stmt
        .query_map(params, |row| Ok((row.get(0)?, row.get(1)?)))
        .map_err(map_err)?;
    rows.collect::<Result<_, _>>().map_err(map_err)
}
