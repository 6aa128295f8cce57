-- The second queue shape: fewer indexes to keep up per delivery.
--
-- Claim tokens become integers (leases written by the previous version end here: every
-- node is stopped for the upgrade). Claims no longer look deliveries up by token;
-- parking uses the due index; retention walks the tables in id order, so no index by
-- time is needed. Finished deliveries are counted in 5-minute buckets per endpoint, so
-- statistics never read the deliveries themselves.
DROP INDEX deliveries_claim;
DROP INDEX deliveries_endpoint_pending;
DROP INDEX deliveries_finished;
DROP INDEX events_org_created;
DROP INDEX events_created;
UPDATE deliveries SET claim_token = NULL WHERE claim_token IS NOT NULL;
ALTER TABLE deliveries ALTER COLUMN claim_token TYPE BIGINT USING NULL;

CREATE TABLE endpoint_stats (
    endpoint_uid BIGINT NOT NULL,
    bucket_ms    BIGINT NOT NULL,
    delivered    BIGINT NOT NULL,
    failed       BIGINT NOT NULL,
    PRIMARY KEY (endpoint_uid, bucket_ms)
);
INSERT INTO endpoint_stats (endpoint_uid, bucket_ms, delivered, failed)
SELECT endpoint_uid, updated_ms - updated_ms % 300000,
       COUNT(*) FILTER (WHERE state = 'delivered'), COUNT(*) FILTER (WHERE state = 'failed')
FROM deliveries WHERE state <> 'pending'
GROUP BY endpoint_uid, updated_ms - updated_ms % 300000;
