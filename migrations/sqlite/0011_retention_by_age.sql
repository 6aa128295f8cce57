-- Retention by age, whatever else is pending. It walked deliveries and events in id
-- order from the oldest and stopped at the first rows it had to keep, so one org's
-- stuck backlog (a FIFO endpoint behind a failing receiver) stopped it for every org.
-- Now it takes finished deliveries by when they finished (a retry makes one pending
-- again, out of this index), an event once its last delivery goes, and events that
-- made no delivery by when they were published.
CREATE INDEX deliveries_finished ON deliveries (updated_ms) WHERE state <> 'pending';
CREATE INDEX events_undelivered ON events (created_ms) WHERE deliveries = 0;
-- Events whose deliveries that walk already deleted, left behind where it stopped:
-- deliveries go only by retention, so these are past it.
DELETE FROM events WHERE deliveries > 0 AND NOT EXISTS (SELECT 1 FROM deliveries d
    WHERE d.id BETWEEN events.first_delivery AND events.last_delivery AND d.event_seq = events.seq);
