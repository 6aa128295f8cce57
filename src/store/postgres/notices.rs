//! Operational events on PostgreSQL, written inside the transaction of the change that
//! made them (see `domain::notice` for what they are and where they go).

use sqlx::PgConnection;

use super::WORK_CHANNEL;
use crate::domain::notice::Notice;
use crate::domain::{EventId, OrgId, Timestamp};

/// Stores each notice as an event of its org (and of the operator org), with a delivery
/// due now to every enabled endpoint there subscribed to its name by name, except the
/// endpoint it is about, and wakes the nodes when the transaction commits. An org with
/// no such endpoint stores nothing.
pub(super) async fn store(
    conn: &mut PgConnection,
    notices: &[Notice],
    operator: Option<&OrgId>,
    now: Timestamp,
) -> Result<(), sqlx::Error> {
    for notice in notices {
        for org in notice.orgs(operator) {
            sqlx::query(
                "WITH subs AS (SELECT e.uid, (e.fifo OR e.rate_limit IS NOT NULL) AS queued \
                               FROM endpoint_event_types t JOIN endpoints e ON e.uid = t.endpoint_uid \
                               WHERE t.org_id = $2 AND t.event_name = $3 AND t.subcategory = '' \
                                 AND e.enabled AND e.deleted_ms IS NULL AND e.uid <> $6), \
                 ev AS (INSERT INTO events (id, org_id, event_name, subcategory, body, deliveries, created_ms) \
                        SELECT $1, $2, $3, NULL, $4, (SELECT COUNT(*) FROM subs), $5 \
                        WHERE EXISTS (SELECT 1 FROM subs) RETURNING seq), \
                 d AS (INSERT INTO deliveries (event_seq, endpoint_uid, org_id, state, attempts, next_attempt_ms, \
                         created_ms, updated_ms, held) \
                       SELECT ev.seq, subs.uid, $2, 'pending', 0, $5, $5, $5, subs.queued FROM ev, subs RETURNING id), \
                 f AS (UPDATE endpoints SET flow_next_ms = LEAST(COALESCE(flow_next_ms, $5), $5) \
                       WHERE uid IN (SELECT uid FROM subs WHERE queued) AND EXISTS (SELECT 1 FROM ev)) \
                 SELECT pg_notify($7, '') FROM (SELECT 1 FROM d LIMIT 1) AS stored",
            )
            .bind(EventId::generate(now).as_str())
            .bind(org.as_str())
            .bind(notice.name)
            .bind(notice.body.as_ref())
            .bind(now.millis())
            .bind(notice.subject.0)
            .bind(WORK_CHANNEL)
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(())
}
