//! Schema migrations of the embedded store, in `migrations/sqlite/`.
//!
//! Applied migrations are recorded in `_sqlx_migrations`, the table earlier versions
//! of posthorn kept with sqlx's migrator, with its columns and checksum (SHA-384 of the
//! SQL), so a database written by them continues where it stopped. Each migration runs
//! in one transaction with foreign keys checked at its end (so a migration may rebuild
//! a table). A database that has migrations this binary does not know is refused.

use std::collections::HashSet;
use std::time::Instant;

use anyhow::{bail, Context};
use rusqlite::{Connection, TransactionBehavior};
use sha2::{Digest, Sha384};

struct Migration {
    version: i64,
    description: &'static str,
    sql: &'static str,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "init",
        sql: include_str!("../../../migrations/sqlite/0001_init.sql"),
    },
    Migration {
        version: 2,
        description: "delivery",
        sql: include_str!("../../../migrations/sqlite/0002_delivery.sql"),
    },
    Migration {
        version: 3,
        description: "claim index",
        sql: include_str!("../../../migrations/sqlite/0003_claim_index.sql"),
    },
    Migration {
        version: 4,
        description: "operator",
        sql: include_str!("../../../migrations/sqlite/0004_operator.sql"),
    },
    Migration {
        version: 5,
        description: "retry click",
        sql: include_str!("../../../migrations/sqlite/0005_retry_click.sql"),
    },
    Migration {
        version: 6,
        description: "queue v2",
        sql: include_str!("../../../migrations/sqlite/0006_queue_v2.sql"),
    },
    Migration {
        version: 7,
        description: "endpoint headers",
        sql: include_str!("../../../migrations/sqlite/0007_endpoint_headers.sql"),
    },
    Migration {
        version: 8,
        description: "event type schemas",
        sql: include_str!("../../../migrations/sqlite/0008_event_type_schemas.sql"),
    },
    Migration {
        version: 9,
        description: "flow control",
        sql: include_str!("../../../migrations/sqlite/0009_flow_control.sql"),
    },
    Migration {
        version: 10,
        description: "web",
        sql: include_str!("../../../migrations/sqlite/0010_web.sql"),
    },
    Migration {
        version: 11,
        description: "retention by age",
        sql: include_str!("../../../migrations/sqlite/0011_retention_by_age.sql"),
    },
    Migration {
        version: 12,
        description: "delivery ids",
        sql: include_str!("../../../migrations/sqlite/0012_delivery_ids.sql"),
    },
];

pub(super) fn run(conn: &mut Connection) -> anyhow::Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS _sqlx_migrations (
            version BIGINT PRIMARY KEY,
            description TEXT NOT NULL,
            installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
            success BOOLEAN NOT NULL,
            checksum BLOB NOT NULL,
            execution_time BIGINT NOT NULL
        )",
    )?;
    let mut stmt = conn.prepare("SELECT version, success FROM _sqlx_migrations")?;
    let recorded: Vec<(i64, bool)> = stmt
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<Result<_, _>>()?;
    drop(stmt);
    if let Some((version, _)) = recorded.iter().find(|(_, ok)| !ok) {
        bail!("migration {version} of this database failed earlier; restore a backup");
    }
    let known = MIGRATIONS.last().map_or(0, |m| m.version);
    if let Some(newest) = recorded
        .iter()
        .map(|(v, _)| *v)
        .max()
        .filter(|v| *v > known)
    {
        bail!(
            "this database was written by a newer posthorn (migration {newest}; this one knows up to {known})"
        );
    }
    let applied: HashSet<i64> = recorded.into_iter().map(|(v, _)| v).collect();
    for m in MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)) {
        apply(conn, m).with_context(|| {
            format!(
                "applying database migration {} ({})",
                m.version, m.description
            )
        })?;
    }
    Ok(())
}

fn apply(conn: &mut Connection, m: &Migration) -> anyhow::Result<()> {
    let started = Instant::now();
    // Foreign keys cannot be switched inside a transaction; they are checked at its end.
    conn.pragma_update(None, "foreign_keys", false)?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(m.sql)?;
    let violations: i64 =
        tx.query_row("SELECT COUNT(*) FROM pragma_foreign_key_check", [], |r| {
            r.get(0)
        })?;
    if violations > 0 {
        bail!("it would leave {violations} rows with dangling references");
    }
    tx.execute(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (?1, ?2, TRUE, ?3, ?4)",
        rusqlite::params![
            m.version,
            m.description,
            Sha384::digest(m.sql.as_bytes()).to_vec(),
            i64::try_from(started.elapsed().as_nanos()).unwrap_or(i64::MAX)
        ],
    )?;
    tx.commit()?;
    conn.pragma_update(None, "foreign_keys", true)?;
    Ok(())
}
