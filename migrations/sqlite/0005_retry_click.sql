-- A manual retry within a few seconds of the previous one is the same click.
ALTER TABLE deliveries ADD COLUMN retried_ms INTEGER;
