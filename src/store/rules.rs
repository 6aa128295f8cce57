//! Rules both stores apply in the same way, as plain functions: idempotency keys
//! repeated inside one batch, what a batch of outcomes means for each endpoint's
//! health, and the buckets of the delivery statistics.

use std::collections::HashMap;
use std::time::Duration;

use super::model::{
    AttemptRecord, EventTypeChange, EventTypeRecord, EventTypeVersion, NewEvent, Outcome,
    Published, Signal,
};
use super::{StoreError, StoreResult};
use crate::domain::{EndpointUid, EventSchema, Timestamp};

/// The events of a batch, with repeats of one idempotency key folded into its first use.
pub(crate) struct Deduped<'a> {
    /// For each event of the batch, the index in `unique` of the event that answers it.
    slots: Vec<usize>,
    /// The events to store or look up, in batch order.
    pub unique: Vec<&'a NewEvent>,
}

impl<'a> Deduped<'a> {
    pub fn new(events: &'a [NewEvent]) -> Self {
        let mut slots = Vec::with_capacity(events.len());
        let mut unique: Vec<&NewEvent> = Vec::with_capacity(events.len());
        let mut first: HashMap<(&str, &str), usize> = HashMap::new();
        for ev in events {
            if let Some(key) = &ev.idempotency_key {
                if let Some(&n) = first.get(&(ev.org_id.as_str(), key.as_str())) {
                    slots.push(n);
                    continue;
                }
                first.insert((ev.org_id.as_str(), key.as_str()), unique.len());
            }
            slots.push(unique.len());
            unique.push(ev);
        }
        Self { slots, unique }
    }

    /// One answer per event of the batch, from the answers of the unique events.
    pub fn answers(&self, unique: &[Published]) -> Vec<Published> {
        self.slots.iter().map(|&n| unique[n].clone()).collect()
    }
}

/// What one batch of outcomes says about one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Health {
    pub endpoint: EndpointUid,
    /// Some attempt succeeded: the endpoint is healthy again.
    pub succeeded: bool,
    /// Otherwise, when the earliest failed attempt started.
    pub failing_from: Option<Timestamp>,
    /// It answered `410 Gone`: disable it.
    pub gone: bool,
    /// It answered as overloaded: hold it back until then.
    pub paused_until: Option<Timestamp>,
}

/// Why an endpoint that answered `410 Gone` was disabled.
pub(crate) const GONE_REASON: &str = "disabled automatically: the endpoint answered 410 Gone";

/// The health of each endpoint that had an attempt made in `records`.
pub(crate) fn health(records: &[AttemptRecord]) -> Vec<Health> {
    let mut by_endpoint: HashMap<EndpointUid, Health> = HashMap::new();
    for r in records.iter().filter(|r| r.attempt_no.is_some()) {
        let h = by_endpoint.entry(r.endpoint).or_insert(Health {
            endpoint: r.endpoint,
            succeeded: false,
            failing_from: None,
            gone: false,
            paused_until: None,
        });
        match r.signal {
            Some(Signal::Gone) => h.gone = true,
            Some(Signal::Overloaded { until }) => {
                h.paused_until = Some(h.paused_until.map_or(until, |u| u.max(until)));
            }
            None => {}
        }
        if r.outcome == Outcome::Delivered {
            h.succeeded = true;
        } else {
            h.failing_from = Some(h.failing_from.map_or(r.started, |t| t.min(r.started)));
        }
    }
    let mut out: Vec<Health> = by_endpoint.into_values().collect();
    out.sort_by_key(|h| h.endpoint);
    out
}

/// Why an endpoint was disabled automatically.
pub(crate) fn auto_disable_reason(after: Duration) -> String {
    format!(
        "disabled automatically: every delivery attempt failed for {}",
        humantime::format_duration(after)
    )
}

/// Finished deliveries are counted in buckets of this many milliseconds (by the time
/// they finished), so statistics and charts read a few rows per endpoint and window
/// instead of the deliveries themselves.
pub const STATS_BUCKET_MS: i64 = 5 * 60 * 1000;

/// The bucket `t` falls in.
pub(crate) fn stats_bucket(t: Timestamp) -> i64 {
    t.millis() - t.millis().rem_euclid(STATS_BUCKET_MS)
}

/// What an update of an event type writes (JSON as text).
pub(crate) struct TypeUpdate {
    pub display_name: String,
    pub version: i64,
    pub schema_json: Option<String>,
    pub example_json: Option<String>,
}

/// Applies `change` to `current`: a schema that differs from the current one (given,
/// changed or removed) raises the version; a new example or display name does not.
/// Run inside the change's transaction, it refuses an example that does not match the
/// resulting schema (the handler checks first; this catches a concurrent change).
pub(crate) fn type_update(
    current: &EventTypeRecord,
    change: &EventTypeChange,
) -> StoreResult<TypeUpdate> {
    let current_schema = current.schema.as_ref().map(|s| s.source().clone());
    let schema = match &change.schema {
        None => current_schema.clone(),
        Some(given) => given.clone(),
    };
    let example = match &change.example {
        None => current.example.clone(),
        Some(given) => given.clone(),
    };
    if let (Some(schema), Some(example)) = (&schema, &example) {
        let compiled = EventSchema::compile(schema.clone()).map_err(|why| StoreError::Invalid {
            field: "schema",
            why,
        })?;
        compiled.check(example).map_err(|why| StoreError::Invalid {
            field: "example",
            why: format!("{why} (the type was changed meanwhile?)"),
        })?;
    }
    let text = |v: Option<serde_json::Value>| v.map(|v| v.to_string());
    Ok(TypeUpdate {
        display_name: change
            .display_name
            .clone()
            .unwrap_or_else(|| current.display_name.clone()),
        version: current.version + i64::from(schema != current_schema),
        schema_json: text(schema),
        example_json: text(example),
    })
}

/// The current version of a type as a version record.
pub(crate) fn current_version(t: &EventTypeRecord) -> EventTypeVersion {
    EventTypeVersion {
        version: t.version,
        schema: t.schema.as_ref().map(|s| s.source().clone()),
        example: t.example.clone(),
    }
}

/// Version `version` of `current` where it is known without reading the history:
/// `Some(Some(_))` for the current version, `Some(None)` for none outside 1..=current;
/// `None`: read it (then [`recorded_version`]).
pub(crate) fn known_version(
    current: &EventTypeRecord,
    version: i64,
) -> Option<Option<EventTypeVersion>> {
    if version == current.version {
        return Some(Some(current_version(current)));
    }
    (version < 1 || version > current.version).then_some(None)
}

/// A version as the history has it; one no update recorded had neither schema nor
/// example (the type was created without them).
pub(crate) fn recorded_version(version: i64, kept: Option<EventTypeVersion>) -> EventTypeVersion {
    kept.unwrap_or(EventTypeVersion {
        version,
        schema: None,
        example: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{EventId, OrgId};

    fn event(key: Option<&str>) -> NewEvent {
        NewEvent {
            id: EventId::generate(Timestamp::now()),
            org_id: OrgId::parse("o-1").expect("org"),
            event_name: "note.created".into(),
            subcategory: None,
            body: Default::default(),
            idempotency_key: key.map(str::to_owned),
        }
    }

    #[test]
    fn a_key_repeated_in_a_batch_is_one_event() {
        let events = [event(Some("a")), event(None), event(Some("a")), event(None)];
        let d = Deduped::new(&events);
        assert_eq!(d.unique.len(), 3);
        let answers: Vec<Published> = d
            .unique
            .iter()
            .map(|e| Published {
                id: e.id.clone(),
                deliveries: 1,
            })
            .collect();
        let all = d.answers(&answers);
        assert_eq!(all[0], all[2]);
        assert_ne!(all[1], all[3]);
    }

    #[test]
    fn health_says_success_or_the_earliest_failure() {
        let record = |uid, started, outcome| {
            AttemptRecord::sample(EndpointUid(uid), Timestamp::from_millis(started), outcome)
        };
        let h = health(&[
            record(1, 5, Outcome::Failed),
            record(
                1,
                3,
                Outcome::Retry {
                    at: Timestamp::from_millis(9),
                },
            ),
            record(2, 4, Outcome::Failed),
            record(2, 6, Outcome::Delivered),
        ]);
        assert_eq!(h[0].failing_from, Some(Timestamp::from_millis(3)));
        assert!(!h[0].succeeded);
        assert!(h[1].succeeded);
        assert_eq!(
            stats_bucket(Timestamp::from_millis(STATS_BUCKET_MS + 7)),
            STATS_BUCKET_MS
        );
    }

    #[test]
    fn a_type_update_raises_the_version_only_for_a_new_schema_and_keeps_examples_valid() {
        use serde_json::json;
        let mut current = EventTypeRecord::new("note.created".into(), "Note".into(), false);
        let schema = |v| Some(Some(v));
        let change = EventTypeChange {
            schema: schema(json!({"required": ["title"]})),
            example: Some(Some(json!({"title": "a"}))),
            ..EventTypeChange::default()
        };
        let u = type_update(&current, &change).expect("valid");
        assert_eq!(u.version, 2);
        current.version = 2;
        current.schema = Some(std::sync::Arc::new(
            EventSchema::compile(json!({"required": ["title"]})).expect("schema"),
        ));
        current.example = Some(json!({"title": "a"}));
        let example_only = EventTypeChange {
            example: Some(Some(json!({"title": "b"}))),
            ..EventTypeChange::default()
        };
        assert_eq!(
            type_update(&current, &example_only).expect("valid").version,
            2
        );
        // A schema the stored example does not match (another request changed it).
        let stricter = EventTypeChange {
            schema: schema(json!({"required": ["body"]})),
            ..EventTypeChange::default()
        };
        assert!(matches!(
            type_update(&current, &stricter),
            Err(StoreError::Invalid {
                field: "example",
                ..
            })
        ));
    }
}
