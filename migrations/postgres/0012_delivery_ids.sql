-- Delivery ids are shown encrypted from now on (domain/ids.rs): the key, made once
-- per store, and the last row id made before, whose decimal spelling still reads.
INSERT INTO meta (key, value) VALUES ('delivery_id_key', uuid_send(gen_random_uuid()))
ON CONFLICT (key) DO NOTHING;
INSERT INTO meta (key, value)
SELECT 'legacy_delivery_ids_upto', convert_to(COALESCE(MAX(id), 0)::text, 'UTF8') FROM deliveries
ON CONFLICT (key) DO NOTHING;
