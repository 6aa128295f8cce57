-- Per-endpoint flow control.
-- Configuration: a rate limit (deliveries per second, NULL: none) with its burst, and
-- FIFO ordering.
ALTER TABLE endpoints ADD COLUMN rate_limit INTEGER;
ALTER TABLE endpoints ADD COLUMN rate_burst INTEGER;
ALTER TABLE endpoints ADD COLUMN fifo BOOLEAN NOT NULL DEFAULT FALSE;
-- The flow queue of a rate-limited or FIFO endpoint: when to look at its held
-- deliveries next (NULL: nothing to do until something changes), the rate limiter's
-- theoretical arrival time (GCRA, in microseconds), and the delivery a FIFO endpoint has out now.
ALTER TABLE endpoints ADD COLUMN flow_next_ms BIGINT;
ALTER TABLE endpoints ADD COLUMN flow_tat_us BIGINT NOT NULL DEFAULT 0;
ALTER TABLE endpoints ADD COLUMN flow_busy BIGINT;
-- What receivers said: held back until then (after a 429, 502, 503 or 504).
ALTER TABLE endpoints ADD COLUMN paused_until_ms BIGINT;
CREATE INDEX endpoints_flow ON endpoints (flow_next_ms) WHERE flow_next_ms IS NOT NULL;

-- A held delivery waits in its endpoint's flow queue, not in the due queue: the due
-- index leaves it out, the held indexes find an endpoint's in publish order and by
-- when they may go (retries waiting in the queue).
ALTER TABLE deliveries ADD COLUMN held BOOLEAN NOT NULL DEFAULT FALSE;
DROP INDEX deliveries_due;
CREATE INDEX deliveries_due ON deliveries (next_attempt_ms) WHERE state = 'pending' AND NOT held;
CREATE INDEX deliveries_held ON deliveries (endpoint_uid, id) WHERE held;
CREATE INDEX deliveries_held_due ON deliveries (endpoint_uid, next_attempt_ms) WHERE held;
