-- Events and the delivery queue (see migrations/sqlite/0002_delivery.sql).

CREATE TABLE events (
    seq             BIGSERIAL PRIMARY KEY,
    id              TEXT NOT NULL UNIQUE,
    org_id          TEXT NOT NULL REFERENCES orgs (id),
    event_name      TEXT NOT NULL,
    subcategory     TEXT,
    body            BYTEA NOT NULL,
    idempotency_key TEXT,
    deliveries      BIGINT NOT NULL,
    created_ms      BIGINT NOT NULL
);
CREATE UNIQUE INDEX events_idempotency ON events (org_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX events_org_created ON events (org_id, created_ms);

CREATE TABLE deliveries (
    id              BIGSERIAL PRIMARY KEY,
    event_seq       BIGINT NOT NULL REFERENCES events (seq),
    endpoint_uid    BIGINT NOT NULL REFERENCES endpoints (uid),
    org_id          TEXT NOT NULL,
    state           TEXT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_ms BIGINT NOT NULL,
    claim_token     TEXT,
    last_status     BIGINT,
    last_error      TEXT,
    created_ms      BIGINT NOT NULL,
    updated_ms      BIGINT NOT NULL
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_ms) WHERE state = 'pending';
CREATE INDEX deliveries_endpoint ON deliveries (endpoint_uid, id);
CREATE INDEX deliveries_event ON deliveries (event_seq);
CREATE INDEX deliveries_endpoint_pending ON deliveries (endpoint_uid, next_attempt_ms)
    WHERE state = 'pending';
CREATE INDEX deliveries_claim ON deliveries (claim_token) WHERE claim_token IS NOT NULL;

CREATE TABLE attempts (
    id            BIGSERIAL PRIMARY KEY,
    delivery_id   BIGINT NOT NULL REFERENCES deliveries (id),
    attempt_no    BIGINT NOT NULL,
    started_ms    BIGINT NOT NULL,
    latency_ms    BIGINT NOT NULL,
    status_code   BIGINT,
    error         TEXT,
    response_body TEXT
);
CREATE INDEX attempts_delivery ON attempts (delivery_id, attempt_no);

-- Per-key request counts in one-second windows: the API rate limit shared by nodes.
CREATE TABLE rate_windows (
    key_id    TEXT NOT NULL,
    window_ms BIGINT NOT NULL,
    hits      BIGINT NOT NULL,
    PRIMARY KEY (key_id, window_ms)
);
