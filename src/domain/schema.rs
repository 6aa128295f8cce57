//! The JSON Schema of an event type: given by an admin, checked against the draft
//! 2020-12 meta-schema and compiled once, then applied to every published `data`.
//!
//! Rules: a schema is a JSON object of at most [`MAX_SCHEMA_BYTES`] (compact); it may
//! not reference anything outside itself (no remote `$ref` is fetched: posthorn never
//! makes a request on a schema's behalf). An example, when given, must match it.

use std::fmt;

use serde_json::Value;

pub const MAX_SCHEMA_BYTES: usize = 64 * 1024;

/// A compiled schema with the JSON it was made from.
pub struct EventSchema {
    source: Value,
    validator: jsonschema::Validator,
}

impl fmt::Debug for EventSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventSchema")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl PartialEq for EventSchema {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for EventSchema {}

impl EventSchema {
    /// Checks and compiles `source`; the error says what is wrong with it.
    pub fn compile(source: Value) -> Result<Self, String> {
        if !source.is_object() {
            return Err("must be a JSON Schema object".into());
        }
        let size = serde_json::to_vec(&source).map_or(usize::MAX, |b| b.len());
        if size > MAX_SCHEMA_BYTES {
            return Err(format!(
                "must be at most {MAX_SCHEMA_BYTES} bytes (compact JSON)"
            ));
        }
        if let Err(e) = jsonschema::draft202012::meta::validate(&source) {
            return Err(format!(
                "is not a valid JSON Schema (draft 2020-12): at {}: {e}",
                pointer(&e.instance_path().to_string())
            ));
        }
        let validator = jsonschema::draft202012::new(&source)
            .map_err(|e| format!("cannot be compiled: {e}"))?;
        Ok(Self { source, validator })
    }

    pub fn source(&self) -> &Value {
        &self.source
    }

    /// `Ok` when `data` matches; else the first mismatch, naming where in `data` it
    /// is and the rule (keyword path in the schema) it breaks.
    pub fn check(&self, data: &Value) -> Result<(), String> {
        match self.validator.validate(data) {
            Ok(()) => Ok(()),
            Err(e) => Err(format!(
                "does not match the event type's schema: at {}: {e} (schema rule {})",
                pointer(&e.instance_path().to_string()),
                pointer(&e.schema_path().to_string())
            )),
        }
    }
}

/// A JSON pointer as people read it: the root is `/`.
fn pointer(p: &str) -> String {
    if p.is_empty() {
        "/".into()
    } else {
        p.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::EventSchema;

    #[test]
    fn refuses_what_is_not_a_schema() {
        assert!(EventSchema::compile(json!(["x"])).is_err());
        assert!(EventSchema::compile(json!({"type": 5})).is_err());
        assert!(EventSchema::compile(json!({"$ref": "https://example.com/s.json"})).is_err());
        assert!(EventSchema::compile(json!({"type": "object"})).is_ok());
    }

    #[test]
    fn a_mismatch_names_the_path_and_the_rule() {
        let schema = EventSchema::compile(json!({
            "type": "object",
            "required": ["title"],
            "properties": {"title": {"type": "string"}}
        }))
        .expect("schema");
        assert!(schema.check(&json!({"title": "a"})).is_ok());
        let e = schema.check(&json!({"title": 5})).expect_err("mismatch");
        assert!(e.contains("/title") && e.contains("string"), "{e}");
        assert!(e.contains("/properties/title/type"), "{e}");
        let e = schema.check(&json!({})).expect_err("mismatch");
        assert!(e.contains("title") && e.contains("required"), "{e}");
    }
}
