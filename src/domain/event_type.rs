use serde::Serialize;
use serde_json::Value;

/// The name `test` is reserved for the test operation and is never subscribable.
pub const TEST_EVENT: &str = "test";

/// An event type name: 1–128 characters, starting with a lowercase letter, then
/// lowercase letters, digits, `.`, `_` or `-` (`recording.event.custom`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventName(String);

impl EventName {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut bytes = raw.bytes();
        let ok = raw.len() <= 128
            && bytes.next().is_some_and(|b| b.is_ascii_lowercase())
            && bytes.all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
            });
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err("must be 1-128 characters: a lowercase letter, then lowercase letters, digits, '.', '_' or '-'".into())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// One subscription of an endpoint: an event name and, for types that have them, a
/// subcategory token.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventTypeRef {
    pub event_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subcategory: Option<String>,
}

/// The exact bytes every delivery of the event sends (compact JSON); `version` is the
/// event type's when the event was published.
pub fn envelope(
    event_name: &str,
    version: i64,
    data: &Value,
) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(b"{\"eventName\":");
    serde_json::to_writer(&mut out, event_name)?;
    out.extend_from_slice(b",\"version\":");
    serde_json::to_writer(&mut out, &version)?;
    out.extend_from_slice(b",\"data\":");
    serde_json::to_writer(&mut out, data)?;
    out.push(b'}');
    Ok(out)
}
