-- An endpoint's custom headers, sent on every attempt: a JSON object sealed with the
-- master key (like the secret), or NULL for none.
ALTER TABLE endpoints ADD COLUMN headers BYTEA;
