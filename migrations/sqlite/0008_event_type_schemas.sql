-- Event-type schemas: each type's current version, JSON Schema and example (JSON
-- text, NULL for none), and every version an update made, so the sample of an earlier
-- version can still be shown. Events carry the version they were published under in
-- their envelope.
ALTER TABLE event_types ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
ALTER TABLE event_types ADD COLUMN schema_json TEXT;
ALTER TABLE event_types ADD COLUMN example_json TEXT;
CREATE TABLE event_type_versions (
    org_id       TEXT NOT NULL,
    event_name   TEXT NOT NULL,
    version      INTEGER NOT NULL,
    schema_json  TEXT,
    example_json TEXT,
    created_ms   INTEGER NOT NULL,
    PRIMARY KEY (org_id, event_name, version)
);
