-- The second queue shape: fewer indexes to keep up per delivery.
--
-- Claim tokens become integers (leases written by the previous version end here: its
-- process is gone). The deliveries of an event are found by their id range, kept on
-- the event (one publish stores them one after another), so neither a per-event index
-- nor a foreign key to events is needed; retention walks both tables in id order, so
-- no index by time is needed either. Finished deliveries are counted in 5-minute
-- buckets per endpoint, so statistics never read the deliveries themselves.
ALTER TABLE events ADD COLUMN first_delivery INTEGER;
ALTER TABLE events ADD COLUMN last_delivery INTEGER;
UPDATE events SET
    first_delivery = (SELECT MIN(d.id) FROM deliveries d WHERE d.event_seq = events.seq),
    last_delivery = (SELECT MAX(d.id) FROM deliveries d WHERE d.event_seq = events.seq);
DROP INDEX events_org_created;
DROP INDEX events_created;

CREATE TABLE deliveries_v2 (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    event_seq       INTEGER NOT NULL,
    endpoint_uid    INTEGER NOT NULL REFERENCES endpoints (uid),
    org_id          TEXT NOT NULL,
    -- (no IN list here: SQLite checks one with a temporary b-tree on every write)
    state           TEXT NOT NULL CHECK (state = 'pending' OR state = 'delivered' OR state = 'failed'),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL,
    claim_token     INTEGER,
    last_status     INTEGER,
    last_error      TEXT,
    created_ms      INTEGER NOT NULL,
    updated_ms      INTEGER NOT NULL,
    retry_base      INTEGER NOT NULL DEFAULT 0,
    retried_ms      INTEGER
);
INSERT INTO deliveries_v2 (id, event_seq, endpoint_uid, org_id, state, attempts, next_attempt_ms,
    claim_token, last_status, last_error, created_ms, updated_ms, retry_base, retried_ms)
SELECT id, event_seq, endpoint_uid, org_id, state, attempts, next_attempt_ms,
    NULL, last_status, last_error, created_ms, updated_ms, retry_base, retried_ms
FROM deliveries;
DROP TABLE deliveries;
ALTER TABLE deliveries_v2 RENAME TO deliveries;
-- The claim's scan reads both columns from the index alone.
CREATE INDEX deliveries_due ON deliveries (next_attempt_ms, endpoint_uid) WHERE state = 'pending';
CREATE INDEX deliveries_endpoint ON deliveries (endpoint_uid, id);

CREATE TABLE endpoint_stats (
    endpoint_uid INTEGER NOT NULL,
    bucket_ms    INTEGER NOT NULL,
    delivered    INTEGER NOT NULL,
    failed       INTEGER NOT NULL,
    PRIMARY KEY (endpoint_uid, bucket_ms)
) WITHOUT ROWID;
INSERT INTO endpoint_stats (endpoint_uid, bucket_ms, delivered, failed)
SELECT endpoint_uid, updated_ms - updated_ms % 300000,
       SUM(state = 'delivered'), SUM(state = 'failed')
FROM deliveries WHERE state <> 'pending'
GROUP BY endpoint_uid, updated_ms - updated_ms % 300000;
