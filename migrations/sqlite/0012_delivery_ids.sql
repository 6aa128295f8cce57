-- Delivery ids are shown encrypted from now on (domain/ids.rs): the key, made once
-- per store, and the last row id made before, whose decimal spelling still reads.
INSERT INTO meta (key, value) VALUES ('delivery_id_key', randomblob(16))
ON CONFLICT (key) DO NOTHING;
INSERT INTO meta (key, value)
SELECT 'legacy_delivery_ids_upto', CAST(CAST(COALESCE(MAX(id), 0) AS TEXT) AS BLOB) FROM deliveries
WHERE true
ON CONFLICT (key) DO NOTHING;
