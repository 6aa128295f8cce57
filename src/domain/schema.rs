//! The JSON Schema of an event type: given by an admin, checked against the draft
//! 2020-12 meta-schema and compiled once, then applied to every published `data`.
//!
//! Rules, so that checking an event costs bounded time whatever an admin writes:
//! - a schema is a JSON object of at most [`MAX_SCHEMA_BYTES`] (compact);
//! - `$ref` may only point inside the schema (`#` or `#/...`; nothing is fetched:
//!   posthorn never makes a request on a schema's behalf), never in a cycle, and the
//!   schema with every reference expanded has at most [`MAX_EXPANDED_NODES`] values
//!   (a reference used twice counts twice); `$dynamicRef` and `$recursiveRef` are
//!   refused;
//! - every reference resolves against the document root, exactly as the validator
//!   resolves it: the validator resolves `#/...` against the nearest enclosing `$id`,
//!   so `$id` and `$schema` are refused anywhere below the root (and the root's
//!   `$schema`, when given, must name draft 2020-12, whose rules the check follows),
//!   and so are `$anchor`, `$dynamicAnchor` and `$recursiveAnchor` (anchor references
//!   are refused anyway). The walk treats every object of the document as a possible
//!   schema (also inside `const`, `enum`, `default`, `examples`), so it never sees less
//!   than the validator does;
//! - at most [`MAX_PATTERNS`] regular expressions (`pattern`, `patternProperties`),
//!   run by the `regex` crate (linear time; no look-around or back-references), each
//!   compiled within 64 KiB;
//! - an example, when given, must match it.
//!
//! Within those bounds a check can still be long when `data` is large (a big array,
//! each element checked against a big schema), so a check can be given a deadline
//! ([`EventSchema::check_within`]): every subschema the validator enters first looks
//! at the clock, and past the deadline the check stops and says so. Where checks run
//! (off the async workers, a bounded share per org) is [`checks`]'.

pub mod checks;
mod clock;

use std::collections::HashMap;
use std::fmt;
use std::time::Instant;

use jsonschema::{Draft, PatternOptions, ValidationError};
use serde_json::{Map, Value};

pub use checks::SchemaChecks;
use clock::{with_clock, Armed, Clock, CLOCK};

pub const MAX_SCHEMA_BYTES: usize = 64 * 1024;
pub const MAX_EXPANDED_NODES: usize = 10_000;
pub const MAX_PATTERNS: usize = 100;
/// Longest message of one mismatch (jsonschema may quote the whole value).
const MAX_MESSAGE: usize = 300;

/// Why a check within a deadline did not pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckError {
    /// `data` does not match: where and which rule.
    Mismatch(String),
    /// The deadline came before the check ended; nothing is known of the result.
    OutOfTime,
}

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
                "is not a valid JSON Schema (draft 2020-12): at {}: {}",
                pointer(&e.instance_path().to_string()),
                short(&e.to_string())
            ));
        }
        if Draft::Draft202012.detect(&source) != Draft::Draft202012 {
            return Err(
                "$schema must be https://json-schema.org/draft/2020-12/schema when given".into(),
            );
        }
        let mut walk = Walk {
            root: &source,
            memo: HashMap::new(),
            open: Vec::new(),
            patterns: 0,
        };
        walk.size(&source)?;
        let mut clocked = source.clone();
        with_clock(&mut clocked);
        let validator = jsonschema::draft202012::options()
            .with_pattern_options(
                PatternOptions::regex()
                    .size_limit(64 * 1024)
                    .dfa_size_limit(256 * 1024),
            )
            .with_keyword(CLOCK, |_, _, _| Ok(Box::new(Clock)))
            .build(&clocked)
            .map_err(|e| format!("cannot be compiled: {}", short(&e.to_string())))?;
        Ok(Self { source, validator })
    }

    pub fn source(&self) -> &Value {
        &self.source
    }

    /// `Ok` when `data` matches; else the first mismatch, naming where in `data` it
    /// is and the rule (keyword path in the schema) it breaks.
    /// No deadline: for what was already checked within one (the store's re-check).
    pub fn check(&self, data: &Value) -> Result<(), String> {
        self.validator.validate(data).map_err(|e| mismatch(&e))
    }

    /// Like [`check`](Self::check), but stops soon after `deadline` (between two
    /// subschemas) with [`CheckError::OutOfTime`]. Blocks: run it off the async workers.
    pub fn check_within(&self, data: &Value, deadline: Instant) -> Result<(), CheckError> {
        let _armed = Armed::new(deadline);
        let result = self.validator.validate(data);
        if clock::passed() {
            return Err(CheckError::OutOfTime);
        }
        result.map_err(|e| CheckError::Mismatch(mismatch(&e)))
    }
}

fn mismatch(e: &ValidationError<'_>) -> String {
    format!(
        "does not match the event type's schema: at {}: {} (schema rule {})",
        pointer(&e.instance_path().to_string()),
        short(&e.to_string()),
        pointer(&e.schema_path().to_string())
    )
}

/// `text` cut to [`MAX_MESSAGE`] characters.
fn short(text: &str) -> String {
    match text.char_indices().nth(MAX_MESSAGE) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// The size of a schema with its references expanded, and its patterns counted.
struct Walk<'a> {
    root: &'a Value,
    /// Expanded size of each reference target already measured.
    memo: HashMap<String, usize>,
    /// The references being expanded (a repeat is a cycle).
    open: Vec<String>,
    patterns: usize,
}

impl<'a> Walk<'a> {
    fn size(&mut self, v: &'a Value) -> Result<usize, String> {
        let mut n = 1;
        match v {
            Value::Array(items) => {
                for item in items {
                    n += self.size(item)?;
                }
            }
            Value::Object(map) => {
                self.keywords(map, std::ptr::eq(v, self.root))?;
                if map.get("pattern").is_some_and(Value::is_string) {
                    self.patterns += 1;
                }
                if let Some(Value::Object(p)) = map.get("patternProperties") {
                    self.patterns += p.len();
                }
                if self.patterns > MAX_PATTERNS {
                    return Err(format!("may hold at most {MAX_PATTERNS} patterns"));
                }
                if let Some(Value::String(target)) = map.get("$ref") {
                    n += self.reference(target)?;
                }
                for item in map.values() {
                    n += self.size(item)?;
                }
            }
            _ => {}
        }
        if n > MAX_EXPANDED_NODES {
            return Err(format!(
                "is too large with its $refs expanded (at most {MAX_EXPANDED_NODES} values)"
            ));
        }
        Ok(n)
    }

    /// Refuses what would make the validator resolve a reference other than against
    /// the root, or resolve it dynamically. Only string values count: a name in
    /// `properties` (or `$defs`, ...) always maps to a schema, never a string.
    fn keywords(&self, map: &Map<String, Value>, root: bool) -> Result<(), String> {
        let given = |key: &str| map.get(key).is_some_and(Value::is_string);
        for key in ["$dynamicRef", "$recursiveRef"] {
            if given(key) {
                return Err(format!("may not use {key}"));
            }
        }
        for key in ["$anchor", "$dynamicAnchor"] {
            if given(key) {
                return Err(format!(
                    "may not use {key}: refer with #/... pointers from the root"
                ));
            }
        }
        if !root {
            for key in ["$id", "$schema"] {
                if given(key) {
                    return Err(format!(
                        "may use {key} only at its root: below it, {key} would make #/... references resolve elsewhere than the root"
                    ));
                }
            }
        }
        Ok(())
    }

    fn reference(&mut self, target: &str) -> Result<usize, String> {
        let Some(fragment) = target.strip_prefix('#') else {
            return Err(format!(
                "$ref {target:?} points outside the schema: only #/... references are allowed"
            ));
        };
        if !fragment.is_empty() && !fragment.starts_with('/') {
            return Err(format!(
                "$ref {target:?}: only #/... references are allowed (no anchors)"
            ));
        }
        if let Some(&n) = self.memo.get(fragment) {
            return Ok(n);
        }
        if self.open.iter().any(|f| f == fragment) {
            return Err(format!(
                "$ref {target:?} is recursive; recursive schemas are not supported"
            ));
        }
        let Some(to) = self.root.pointer(&unescape(fragment)) else {
            return Err(format!("$ref {target:?} points to nothing in the schema"));
        };
        self.open.push(fragment.to_owned());
        let n = self.size(to)?;
        self.open.pop();
        self.memo.insert(fragment.to_owned(), n);
        Ok(n)
    }
}

/// A URI fragment's percent-escapes undone (JSON pointers in `$ref` are URI-encoded).
fn unescape(fragment: &str) -> String {
    let bytes = fragment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
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
    use std::time::{Duration, Instant};

    use serde_json::json;

    use super::{CheckError, EventSchema};

    #[test]
    fn refuses_what_is_not_a_schema() {
        assert!(EventSchema::compile(json!(["x"])).is_err());
        assert!(EventSchema::compile(json!({"type": 5})).is_err());
        assert!(EventSchema::compile(json!({"$ref": "https://example.com/s.json"})).is_err());
        assert!(EventSchema::compile(json!({"type": "object"})).is_ok());
    }

    #[test]
    fn refuses_schemas_whose_checks_would_cost_too_much() {
        // Each level refers to the one below twice: 2^30 checks once expanded.
        let mut defs = serde_json::Map::new();
        defs.insert("a0".into(), json!({"type": "string"}));
        for i in 1..30 {
            let below = format!("#/$defs/a{}", i - 1);
            defs.insert(
                format!("a{i}"),
                json!({"allOf": [{"$ref": below}, {"$ref": below}]}),
            );
        }
        let doubling = json!({"$defs": defs, "$ref": "#/$defs/a29"});
        let e = EventSchema::compile(doubling).expect_err("too large");
        assert!(e.contains("expanded"), "{e}");
        let cycle =
            json!({"$defs": {"a": {"allOf": [{"$ref": "#/$defs/a"}]}}, "$ref": "#/$defs/a"});
        assert!(EventSchema::compile(cycle).is_err());
        assert!(EventSchema::compile(json!({"$dynamicRef": "#x"})).is_err());
        assert!(EventSchema::compile(json!({"$ref": "#anchor"})).is_err());
        let patterns: serde_json::Map<String, serde_json::Value> = (0..101)
            .map(|i| (format!("p{i}"), json!({"type": "string"})))
            .collect();
        assert!(EventSchema::compile(json!({"patternProperties": patterns})).is_err());
        // Back-references need backtracking: refused at save, never run.
        assert!(EventSchema::compile(json!({"pattern": "(a+)\\1"})).is_err());
        // Local references, shared or not, are fine.
        let shared = json!({
            "$defs": {"id": {"type": "string", "pattern": "^[a-z]+$"}},
            "properties": {"a": {"$ref": "#/$defs/id"}, "b": {"$ref": "#/$defs/id"}}
        });
        let schema = EventSchema::compile(shared).expect("valid");
        assert!(schema.check(&json!({"a": "x", "b": "y"})).is_ok());
        assert!(schema.check(&json!({"a": "X"})).is_err());
    }

    /// `a_k = allOf[$ref a_{k-1}, $ref a_{k-1}]` under `$id`: the validator resolves
    /// `#/$defs/...` against that `$id`, where the chain doubles `depth` times, while
    /// the root's `$defs` of the same names are small.
    pub(crate) fn doubling_under_id(depth: usize) -> serde_json::Value {
        let mut inner = serde_json::Map::new();
        let mut decoys = serde_json::Map::new();
        inner.insert("a0".into(), json!({"type": "string"}));
        for i in 1..=depth {
            let below = format!("#/$defs/a{}", i - 1);
            inner.insert(
                format!("a{i}"),
                json!({"allOf": [{"$ref": below}, {"$ref": below}]}),
            );
            decoys.insert(format!("a{i}"), json!({}));
        }
        decoys.insert("a0".into(), json!({}));
        decoys.insert(
            "inner".into(),
            json!({"$id": "https://posthorn.invalid/inner", "$defs": inner, "$ref": format!("#/$defs/a{depth}")}),
        );
        json!({"$defs": decoys, "properties": {"x": {"$ref": "#/$defs/inner"}}})
    }

    #[test]
    fn refuses_what_would_resolve_elsewhere_than_the_root() {
        let e = EventSchema::compile(doubling_under_id(28)).expect_err("refused");
        assert!(e.contains("$id"), "{e}");
        for below in [
            json!({"$id": "x"}),
            json!({"$schema": "https://json-schema.org/draft/2020-12/schema"}),
            json!({"$anchor": "x"}),
            json!({"$dynamicAnchor": "x"}),
        ] {
            let schema = json!({"properties": {"a": below}});
            assert!(EventSchema::compile(schema.clone()).is_err(), "{schema}");
            // Also where only a $ref would make it a schema.
            let schema = json!({"const": {"a": below}, "$ref": "#/const/a"});
            assert!(EventSchema::compile(schema.clone()).is_err(), "{schema}");
        }
        // The root may name itself and its draft, not another draft.
        let root = json!({
            "$id": "https://example.com/order",
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$defs": {"id": {"type": "string"}},
            "properties": {"id": {"$ref": "#/$defs/id"}}
        });
        let schema = EventSchema::compile(root).expect("valid");
        assert!(schema.check(&json!({"id": 5})).is_err());
        let draft7 = json!({"$schema": "http://json-schema.org/draft-07/schema#"});
        assert!(EventSchema::compile(draft7).is_err());
        // Property names are names, whatever they look like.
        let names = json!({"properties": {"$id": {"type": "string"}, "$anchor": {}}});
        let schema = EventSchema::compile(names).expect("valid");
        assert!(schema.check(&json!({"$id": 5})).is_err());
    }

    #[test]
    fn a_check_stops_at_its_deadline() {
        // 1,000 conditions for each of 20,000 items: long (about a second in a debug
        // build), but within the bounds.
        let conditions: Vec<_> = (0..1000)
            .map(|i| json!({"if": {"const": i}, "then": {"type": "string"}}))
            .collect();
        let schema = EventSchema::compile(json!({
            "properties": {"xs": {"items": {"allOf": conditions}}}
        }))
        .expect("valid");
        let data = json!({"xs": vec![-1; 20_000]});
        let start = Instant::now();
        let deadline = start + Duration::from_millis(50);
        assert_eq!(
            schema.check_within(&data, deadline),
            Err(CheckError::OutOfTime)
        );
        assert!(
            start.elapsed() < Duration::from_millis(500),
            "{:?}",
            start.elapsed()
        );
        // Without a deadline, or within it, the same schema answers as before.
        let far = Instant::now() + Duration::from_secs(60);
        assert!(schema.check_within(&json!({"xs": [-1, -2]}), far).is_ok());
        assert!(matches!(
            schema.check_within(&json!({"xs": [-1, 7]}), far),
            Err(CheckError::Mismatch(e)) if e.contains("/xs/1")
        ));
        assert!(schema.check(&json!({"xs": [7]})).is_err());
        // The keyword that looks at the clock is not part of the schema shown.
        assert!(!schema.source().to_string().contains("deadline"));
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
