-- Finding the rows of one claim by its token without scanning the queue.
CREATE INDEX deliveries_claim ON deliveries (claim_token) WHERE claim_token IS NOT NULL;
