-- posthorn schema, embedded SQLite. Times are milliseconds since the Unix epoch.

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
);

CREATE TABLE orgs (
    id         TEXT PRIMARY KEY,
    created_ms INTEGER NOT NULL
);

CREATE TABLE api_keys (
    id         TEXT PRIMARY KEY,
    org_id     TEXT NOT NULL REFERENCES orgs (id),
    hash       BLOB NOT NULL UNIQUE,
    role       TEXT NOT NULL CHECK (role IN ('admin', 'publisher', 'standard')),
    name       TEXT,
    created_ms INTEGER NOT NULL,
    revoked_ms INTEGER
);
CREATE INDEX api_keys_org ON api_keys (org_id, created_ms);

CREATE TABLE event_types (
    org_id            TEXT NOT NULL REFERENCES orgs (id),
    name              TEXT NOT NULL,
    display_name      TEXT NOT NULL,
    has_subcategories INTEGER NOT NULL,
    created_ms        INTEGER NOT NULL,
    PRIMARY KEY (org_id, name)
);

CREATE TABLE subcategories (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id       TEXT NOT NULL,
    event_name   TEXT NOT NULL,
    token        TEXT NOT NULL,
    display_name TEXT,
    created_ms   INTEGER NOT NULL,
    UNIQUE (org_id, event_name, token),
    FOREIGN KEY (org_id, event_name) REFERENCES event_types (org_id, name)
);

-- uid is the stable internal id; the public id is derived from url. Deleted endpoints
-- are kept (deleted_ms set) so that their delivery history stays readable.
CREATE TABLE endpoints (
    uid          INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id       TEXT NOT NULL REFERENCES orgs (id),
    url          TEXT NOT NULL,
    enabled      INTEGER NOT NULL,
    secret       BLOB NOT NULL,
    created_ms   INTEGER NOT NULL,
    modified_ms  INTEGER NOT NULL,
    deleted_ms   INTEGER
);
CREATE UNIQUE INDEX endpoints_live_url ON endpoints (org_id, url) WHERE deleted_ms IS NULL;
CREATE INDEX endpoints_org_uid ON endpoints (org_id, uid);

-- subcategory is '' for event types without subcategories.
CREATE TABLE endpoint_event_types (
    endpoint_uid INTEGER NOT NULL REFERENCES endpoints (uid) ON DELETE CASCADE,
    position     INTEGER NOT NULL,
    org_id       TEXT NOT NULL,
    event_name   TEXT NOT NULL,
    subcategory  TEXT NOT NULL,
    PRIMARY KEY (endpoint_uid, event_name, subcategory)
);
CREATE INDEX endpoint_event_types_route ON endpoint_event_types (org_id, event_name, subcategory);
