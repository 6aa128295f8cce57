-- Events and the delivery queue. The database is the queue: an event and all of its
-- deliveries are written in one transaction; workers claim deliveries by moving
-- next_attempt_ms into the future (a lease) under a fresh claim token, so work whose
-- claimer died becomes due again when the lease runs out.

CREATE TABLE events (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT NOT NULL UNIQUE,
    org_id          TEXT NOT NULL REFERENCES orgs (id),
    event_name      TEXT NOT NULL,
    subcategory     TEXT,
    -- the exact bytes sent: {"eventName":...,"version":1,"data":...}
    body            BLOB NOT NULL,
    idempotency_key TEXT,
    deliveries      INTEGER NOT NULL,
    created_ms      INTEGER NOT NULL
);
CREATE UNIQUE INDEX events_idempotency ON events (org_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX events_org_created ON events (org_id, created_ms);

-- state: pending | delivered | failed
CREATE TABLE deliveries (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    event_seq       INTEGER NOT NULL REFERENCES events (seq),
    endpoint_uid    INTEGER NOT NULL REFERENCES endpoints (uid),
    org_id          TEXT NOT NULL,
    state           TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL,
    claim_token     TEXT,
    last_status     INTEGER,
    last_error      TEXT,
    created_ms      INTEGER NOT NULL,
    updated_ms      INTEGER NOT NULL
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_ms) WHERE state = 'pending';
CREATE INDEX deliveries_endpoint ON deliveries (endpoint_uid, id);
CREATE INDEX deliveries_event ON deliveries (event_seq);

CREATE TABLE attempts (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id   INTEGER NOT NULL REFERENCES deliveries (id),
    attempt_no    INTEGER NOT NULL,
    started_ms    INTEGER NOT NULL,
    latency_ms    INTEGER NOT NULL,
    status_code   INTEGER,
    error         TEXT,
    response_body TEXT
);
CREATE INDEX attempts_delivery ON attempts (delivery_id, attempt_no);
CREATE INDEX deliveries_endpoint_pending ON deliveries (endpoint_uid, next_attempt_ms)
    WHERE state = 'pending';
