-- The operator side: manual retries restart the schedule (retry_base), attempts say
-- what kind of failure they were, secrets rotate with a grace period, and endpoints
-- that fail for too long are disabled with a reason.
ALTER TABLE deliveries ADD COLUMN retry_base INTEGER NOT NULL DEFAULT 0;
ALTER TABLE attempts ADD COLUMN error_class TEXT;
ALTER TABLE endpoints ADD COLUMN old_secret BLOB;
ALTER TABLE endpoints ADD COLUMN old_secret_expires_ms INTEGER;
ALTER TABLE endpoints ADD COLUMN failing_since_ms INTEGER;
ALTER TABLE endpoints ADD COLUMN last_success_ms INTEGER;
ALTER TABLE endpoints ADD COLUMN last_failure_ms INTEGER;
ALTER TABLE endpoints ADD COLUMN disabled_reason TEXT;
ALTER TABLE endpoints ADD COLUMN disabled_ms INTEGER;
CREATE INDEX deliveries_finished ON deliveries (updated_ms) WHERE state <> 'pending';
CREATE INDEX events_created ON events (created_ms);

-- An endpoint without subscriptions takes every event: a wildcard row says so, so that
-- fan-out is one index lookup.
INSERT INTO endpoint_event_types (endpoint_uid, position, org_id, event_name, subcategory)
SELECT e.uid, 0, e.org_id, '*', '' FROM endpoints e
WHERE NOT EXISTS (SELECT 1 FROM endpoint_event_types t WHERE t.endpoint_uid = e.uid);
