//! A check's deadline: a keyword put into every subschema of the compiled copy looks
//! at the clock (every [`CLOCK_EVERY`] subschemas entered), and once the deadline has
//! passed every further subschema fails at once, so the validator unwinds.

use std::cell::Cell;
use std::time::Instant;

use jsonschema::{Draft, Keyword, ValidationError};
use serde_json::Value;

/// The keyword put into every subschema of the compiled copy: it looks at the clock.
pub(super) const CLOCK: &str = "x-posthorn-deadline";
/// Subschemas entered between two looks at the clock.
const CLOCK_EVERY: u32 = 64;

thread_local! {
    /// The deadline of the check running on this thread, if it has one.
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
    /// Whether the running check saw its deadline pass.
    static DEADLINE_PASSED: Cell<bool> = const { Cell::new(false) };
    /// Subschemas entered since the clock was last read.
    static TICKS: Cell<u32> = const { Cell::new(0) };
}

/// Sets this thread's deadline for one check; clears it when dropped (also on panic).
pub(super) struct Armed;

impl Armed {
    pub(super) fn new(deadline: Instant) -> Self {
        DEADLINE.set(Some(deadline));
        DEADLINE_PASSED.set(false);
        TICKS.set(0);
        Self
    }
}

impl Drop for Armed {
    fn drop(&mut self) {
        DEADLINE.set(None);
    }
}

/// Whether the running check may go on: false from its deadline on.
fn in_time() -> bool {
    let Some(deadline) = DEADLINE.get() else {
        return true;
    };
    if DEADLINE_PASSED.get() {
        return false;
    }
    let ticks = TICKS.get().wrapping_add(1);
    TICKS.set(ticks);
    if ticks.is_multiple_of(CLOCK_EVERY) && Instant::now() >= deadline {
        DEADLINE_PASSED.set(true);
        return false;
    }
    true
}

/// The [`CLOCK`] keyword: a subschema entered past the deadline fails at once, so the
/// validator unwinds in about as many steps as it is deep.
pub(super) struct Clock;

impl<'i> Keyword<'i> for Clock {
    fn validate(&self, _: &'i Value) -> Result<(), ValidationError<'i>> {
        if in_time() {
            Ok(())
        } else {
            Err(ValidationError::custom("the check ran out of time"))
        }
    }

    fn is_valid(&self, _: &'i Value) -> bool {
        in_time()
    }
}

/// Puts [`CLOCK`] into every subschema of `schema` the validator can enter: those of
/// the applicators of draft 2020-12 and `$defs`, and the objects under keywords it
/// does not know (a `$ref` may point there). The values of the keywords it knows and
/// reads as data (`const`, `enum`, `dependentRequired`, ...) are left as they are.
pub(super) fn with_clock(schema: &mut Value) {
    let Value::Object(map) = schema else {
        return;
    };
    for (key, value) in map.iter_mut() {
        match key.as_str() {
            "additionalProperties"
            | "contains"
            | "contentSchema"
            | "else"
            | "if"
            | "items"
            | "not"
            | "propertyNames"
            | "then"
            | "unevaluatedItems"
            | "unevaluatedProperties" => with_clock(value),
            "allOf" | "anyOf" | "oneOf" | "prefixItems" => {
                if let Value::Array(items) = value {
                    items.iter_mut().for_each(with_clock);
                }
            }
            "$defs" | "definitions" | "dependentSchemas" | "patternProperties" | "properties" => {
                if let Value::Object(members) = value {
                    members.values_mut().for_each(with_clock);
                }
            }
            key if Draft::Draft202012.is_known_keyword(key)
                || matches!(key, "$vocabulary" | "$comment" | CLOCK) => {}
            _ => clock_all(value),
        }
    }
    map.insert(CLOCK.to_owned(), Value::Bool(true));
}

/// [`with_clock`] on every object in `value`.
fn clock_all(value: &mut Value) {
    match value {
        Value::Object(_) => with_clock(value),
        Value::Array(items) => items.iter_mut().for_each(clock_all),
        _ => {}
    }
}

/// Whether the check that just ran on this thread saw its deadline pass.
pub(super) fn passed() -> bool {
    DEADLINE_PASSED.get()
}
