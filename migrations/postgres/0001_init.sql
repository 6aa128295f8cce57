-- posthorn schema, PostgreSQL. Times are milliseconds since the Unix epoch.

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);

CREATE TABLE orgs (
    id         TEXT PRIMARY KEY,
    created_ms BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id         TEXT PRIMARY KEY,
    org_id     TEXT NOT NULL REFERENCES orgs (id),
    hash       BYTEA NOT NULL UNIQUE,
    role       TEXT NOT NULL CHECK (role IN ('admin', 'publisher', 'standard')),
    name       TEXT,
    created_ms BIGINT NOT NULL,
    revoked_ms BIGINT
);
CREATE INDEX api_keys_org ON api_keys (org_id, created_ms);

CREATE TABLE event_types (
    seq               BIGSERIAL UNIQUE,
    org_id            TEXT NOT NULL REFERENCES orgs (id),
    name              TEXT NOT NULL,
    display_name      TEXT NOT NULL,
    has_subcategories BOOLEAN NOT NULL,
    created_ms        BIGINT NOT NULL,
    PRIMARY KEY (org_id, name)
);

CREATE TABLE subcategories (
    seq          BIGSERIAL PRIMARY KEY,
    org_id       TEXT NOT NULL,
    event_name   TEXT NOT NULL,
    token        TEXT NOT NULL,
    display_name TEXT,
    created_ms   BIGINT NOT NULL,
    UNIQUE (org_id, event_name, token),
    FOREIGN KEY (org_id, event_name) REFERENCES event_types (org_id, name)
);

CREATE TABLE endpoints (
    uid          BIGSERIAL PRIMARY KEY,
    org_id       TEXT NOT NULL REFERENCES orgs (id),
    url          TEXT NOT NULL,
    enabled      BOOLEAN NOT NULL,
    secret       BYTEA NOT NULL,
    created_ms   BIGINT NOT NULL,
    modified_ms  BIGINT NOT NULL,
    deleted_ms   BIGINT
);
CREATE UNIQUE INDEX endpoints_live_url ON endpoints (org_id, url) WHERE deleted_ms IS NULL;
CREATE INDEX endpoints_org_uid ON endpoints (org_id, uid);

CREATE TABLE endpoint_event_types (
    endpoint_uid BIGINT NOT NULL REFERENCES endpoints (uid) ON DELETE CASCADE,
    position     BIGINT NOT NULL,
    org_id       TEXT NOT NULL,
    event_name   TEXT NOT NULL,
    subcategory  TEXT NOT NULL,
    PRIMARY KEY (endpoint_uid, event_name, subcategory)
);
CREATE INDEX endpoint_event_types_route ON endpoint_event_types (org_id, event_name, subcategory);
