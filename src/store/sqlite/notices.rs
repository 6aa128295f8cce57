//! Operational events on SQLite, written inside the transaction of the change that made
//! them (see `domain::notice` for what they are and where they go).

use rusqlite::params;

use super::sql::{execute, rows, scalar};
use super::thread::Write;
use crate::domain::notice::Notice;
use crate::domain::{EventId, OrgId, Timestamp};
use crate::store::StoreResult;

#[derive(serde::Deserialize)]
struct Uid {
    uid: i64,
}

/// Stores each notice as an event of its org (and of the operator org), with a delivery
/// due now to every enabled endpoint there subscribed to its name by name, except the
/// endpoint it is about. An org with no such endpoint stores nothing.
pub(super) fn store(
    w: &mut Write<'_>,
    notices: &[Notice],
    operator: Option<&OrgId>,
    now: Timestamp,
) -> StoreResult<()> {
    let conn = w.conn;
    for notice in notices {
        for org in notice.orgs(operator) {
            let targets = rows::<Uid>(
                conn,
                "SELECT e.uid FROM endpoint_event_types t JOIN endpoints e ON e.uid = t.endpoint_uid \
                 WHERE t.org_id = ?1 AND t.event_name = ?2 AND t.subcategory = '' \
                   AND e.enabled = 1 AND e.deleted_ms IS NULL AND e.uid <> ?3 ORDER BY e.uid",
                params![org.as_str(), notice.name, notice.subject.0],
            )?;
            if targets.is_empty() {
                continue;
            }
            let first: i64 = scalar::<i64>(
                conn,
                "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'deliveries'), 0)",
                [],
            )? + 1;
            let last = first + targets.len() as i64 - 1;
            execute(
                conn,
                "INSERT INTO events (id, org_id, event_name, subcategory, body, idempotency_key, deliveries, \
                   created_ms, first_delivery, last_delivery) VALUES (?1, ?2, ?3, NULL, ?4, NULL, ?5, ?6, ?7, ?8)",
                params![
                    EventId::generate(now).as_str(),
                    org.as_str(),
                    notice.name,
                    notice.body.as_ref(),
                    targets.len() as i64,
                    now.millis(),
                    first,
                    last
                ],
            )?;
            let seq = conn.last_insert_rowid();
            for (id, target) in (first..).zip(&targets) {
                execute(
                    conn,
                    "INSERT INTO deliveries (id, event_seq, endpoint_uid, org_id, state, attempts, \
                       next_attempt_ms, created_ms, updated_ms, held) VALUES (?1, ?2, ?3, ?4, 'pending', 0, ?5, ?5, ?5, \
                       (SELECT fifo OR rate_limit IS NOT NULL FROM endpoints WHERE uid = ?3))",
                    params![id, seq, target.uid, org.as_str(), now.millis()],
                )?;
                super::flow::look_by(conn, target.uid, now.millis())?;
            }
            w.wake = true;
        }
    }
    Ok(())
}
