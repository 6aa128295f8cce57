//! An endpoint's custom headers: static headers sent on every attempt (a receiver's
//! `Authorization`, a tenant tag), what may be set, and which values answers mask.
//!
//! Rules:
//! - at most [`MAX_HEADERS`] headers, names and values together at most
//!   [`MAX_TOTAL_BYTES`]; a name is an HTTP token, a value visible ASCII (spaces and
//!   tabs inside);
//! - no header posthorn sets itself or that belongs to the connection: `Content-Type`,
//!   `Content-Length`, `Content-Encoding`, `Transfer-Encoding`, `Host`, `User-Agent`,
//!   `Fullstory-Signature`, any `webhook-*`, and the hop-by-hop headers;
//! - names are matched without regard to case; two names that differ only in case
//!   are refused;
//! - in answers, the value of a sensitive name (`Authorization`, `Cookie`, or a name
//!   containing `key`, `token`, `secret`, `auth`, `pass`, `session`, `signature`,
//!   `credential`) shows as [`MASK`]; an Update that sends [`MASK`] back for a header
//!   it has keeps the stored value, so what a Get shows can be sent back unchanged
//!   ([`MASK`] for a header it does not have is refused).
//! - Masking hides values from readers of answers, not from admins: an admin who
//!   changes the URL keeps the headers, so they go to the new URL.

use std::collections::BTreeMap;

use hyper::header::{HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};

pub const MAX_HEADERS: usize = 20;
pub const MAX_TOTAL_BYTES: usize = 8 * 1024;
/// What a sensitive value shows as.
pub const MASK: &str = "********";

/// Names posthorn sets or that describe the connection, not the request.
const RESERVED: &[&str] = &[
    "content-type",
    "content-length",
    "content-encoding",
    "transfer-encoding",
    "host",
    "user-agent",
    "fullstory-signature",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
    "expect",
];

const SENSITIVE_PARTS: &[&str] = &[
    "key",
    "token",
    "secret",
    "auth",
    "pass",
    "session",
    "signature",
    "credential",
];

/// Valid custom headers, by name as given (sorted, one per name whatever its case).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CustomHeaders(BTreeMap<String, String>);

/// Whether answers mask the value of `name`.
pub fn is_sensitive(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower == "cookie" || SENSITIVE_PARTS.iter().any(|part| lower.contains(part))
}

impl CustomHeaders {
    /// Checks the headers given in a request; the error names the header at fault.
    pub fn parse(given: BTreeMap<String, String>) -> Result<Self, String> {
        if given.len() > MAX_HEADERS {
            return Err(format!("may hold at most {MAX_HEADERS} headers"));
        }
        check_total(&given)?;
        let mut seen: Vec<String> = Vec::with_capacity(given.len());
        for (name, value) in &given {
            let lower = name.to_ascii_lowercase();
            if HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(format!("has an invalid header name {name:?}"));
            }
            if RESERVED.contains(&lower.as_str()) || lower.starts_with("webhook-") {
                return Err(format!(
                    "may not set {name}: posthorn sets it, or it belongs to the connection"
                ));
            }
            if seen.contains(&lower) {
                return Err(format!("names {name} twice (names are not case-sensitive)"));
            }
            if HeaderValue::from_str(value).is_err() {
                return Err(format!(
                    "has an invalid value for {name}: visible ASCII only, no line breaks"
                ));
            }
            seen.push(lower);
        }
        Ok(Self(given))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// As answers show them: sensitive values masked.
    pub fn masked(&self) -> BTreeMap<String, String> {
        self.0
            .iter()
            .map(|(name, value)| {
                let shown = if is_sensitive(name) { MASK } else { value };
                (name.clone(), shown.to_owned())
            })
            .collect()
    }

    /// Whether a value is [`MASK`] (to be replaced by [`CustomHeaders::keeping_masked`]).
    pub fn has_masked(&self) -> bool {
        self.0.values().any(|v| v == MASK)
    }

    /// `self` with each value that is [`MASK`] replaced by the value `current` holds
    /// for that name (an answer's headers sent back unchanged change nothing). A
    /// [`MASK`] for a name `current` does not have is refused, as is a result over the
    /// size limit.
    pub fn keeping_masked(mut self, current: &Self) -> Result<Self, String> {
        for (name, value) in self.0.iter_mut() {
            if value == MASK {
                let kept = current.get(name).ok_or_else(|| {
                    format!("gives {name} as {MASK}, but the endpoint has no {name} to keep")
                })?;
                kept.clone_into(value);
            }
        }
        check_total(&self.0)?;
        Ok(self)
    }

    fn get(&self, name: &str) -> Option<&String> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// The headers for a request (every one valid: checked at parse).
    pub fn to_header_pairs(&self) -> Vec<(HeaderName, HeaderValue)> {
        self.0
            .iter()
            .filter_map(|(n, v)| {
                Some((
                    HeaderName::from_bytes(n.as_bytes()).ok()?,
                    HeaderValue::from_str(v).ok()?,
                ))
            })
            .collect()
    }
}

fn check_total(headers: &BTreeMap<String, String>) -> Result<(), String> {
    let total: usize = headers.iter().map(|(n, v)| n.len() + v.len()).sum();
    if total > MAX_TOTAL_BYTES {
        return Err(format!(
            "names and values together may be at most {MAX_TOTAL_BYTES} bytes"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<CustomHeaders, String> {
        CustomHeaders::parse(
            pairs
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn refuses_what_posthorn_sets_and_bad_names_or_values() {
        for name in [
            "Content-Type",
            "user-agent",
            "Fullstory-Signature",
            "webhook-id",
            "Webhook-Signature",
            "Transfer-Encoding",
            "Connection",
            "Host",
        ] {
            assert!(parse(&[(name, "x")]).is_err(), "{name}");
        }
        assert!(parse(&[("bad name", "x")]).is_err());
        assert!(parse(&[("X-A", "line\nbreak")]).is_err());
        assert!(parse(&[("X-A", "1"), ("x-a", "2")]).is_err());
        let many: Vec<(String, String)> = (0..21).map(|i| (format!("x-{i}"), "v".into())).collect();
        assert!(CustomHeaders::parse(many.into_iter().collect()).is_err());
        assert!(parse(&[("X-Big", &"v".repeat(9000))]).is_err());
        assert!(parse(&[("Authorization", "Bearer abc"), ("X-Tenant", "a")]).is_ok());
    }

    #[test]
    fn masks_sensitive_values_and_keeps_them_when_sent_back() {
        let stored = parse(&[("Authorization", "Bearer abc"), ("X-Tenant", "a")]).expect("valid");
        let shown = stored.masked();
        assert_eq!(shown["Authorization"], MASK);
        assert_eq!(shown["X-Tenant"], "a");
        assert!(is_sensitive("X-Api-Key") && is_sensitive("cookie"));
        let sent_back = parse(&[("authorization", MASK), ("X-Tenant", "b")]).expect("valid");
        let kept = sent_back.keeping_masked(&stored).expect("kept");
        assert_eq!(
            kept.get("Authorization").map(String::as_str),
            Some("Bearer abc")
        );
        assert_eq!(kept.get("X-Tenant").map(String::as_str), Some("b"));
        // A mask for a header the endpoint does not have is a mistake, not a value.
        let typo = parse(&[("Authorisation", MASK)]).expect("valid");
        assert!(typo.keeping_masked(&stored).is_err());
        // Kept values count toward the size limit.
        let long = parse(&[("X-Long", &"v".repeat(8000))]).expect("valid");
        let grown = parse(&[("X-Long", MASK), ("X-More", &"w".repeat(4000))]).expect("valid");
        assert!(grown.keeping_masked(&long).is_err());
        assert!(is_sensitive("X-Hub-Signature") && is_sensitive("X-Passwd"));
    }

    proptest::proptest! {
        #[test]
        fn what_is_accepted_makes_valid_headers(
            given in proptest::collection::btree_map("[ -~]{0,12}", "[\\x00-\\x7f]{0,12}", 0..25)
        ) {
            let n = given.len();
            if let Ok(headers) = CustomHeaders::parse(given) {
                proptest::prop_assert_eq!(headers.to_header_pairs().len(), n);
                proptest::prop_assert!(n <= MAX_HEADERS);
            }
        }
    }
}
