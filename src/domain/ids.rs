//! Identifiers that cross the store boundary.
//!
//! Policy: internal row ids are newtypes over `i64`, never bare numbers, and each has
//! one public spelling (`dlv_42`). Event ids are minted here: `evt_`, the publish time
//! in milliseconds as 12 hex digits (so ids of one period sit together in the store's
//! unique index instead of scattering over it), and 10 random bytes.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};

use super::Timestamp;

/// A delivery: one event to one endpoint. Shown as `dlv_<n>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DeliveryId(pub i64);

impl DeliveryId {
    /// Reads the public spelling `dlv_<n>`.
    pub fn parse(raw: &str) -> Option<Self> {
        raw.strip_prefix("dlv_")
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse().ok())
            .map(Self)
    }
}

impl fmt::Display for DeliveryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "dlv_{}", self.0)
    }
}

/// An endpoint's stable internal id: it survives URL changes (the public id does not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EndpointUid(pub i64);

impl fmt::Display for EndpointUid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Tags the deliveries of one claim (or one publish handed straight to this process's
/// dispatcher): an outcome is applied only while the delivery still carries its tag,
/// so a late outcome of an expired lease never overrides the claim that took it over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ClaimToken(pub i64);

impl ClaimToken {
    /// A random token; 63 bits make a collision between nodes negligible.
    pub fn generate() -> Self {
        Self((rand::thread_rng().next_u64() >> 1) as i64 | 1)
    }
}

/// An event id (`evt_...`): the `webhook-id` of every delivery of the event.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventId(String);

impl EventId {
    pub fn generate(now: Timestamp) -> Self {
        let mut random = [0u8; 10];
        rand::thread_rng().fill_bytes(&mut random);
        let ms = now.millis().clamp(0, 0xFFFF_FFFF_FFFF);
        Self(format!("evt_{ms:012x}{}", URL_SAFE_NO_PAD.encode(random)))
    }

    /// An id as stored or as a client gave it (not checked: unknown ids find nothing).
    pub fn from_raw(raw: impl Into<String>) -> Self {
        Self(raw.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_ids_have_one_spelling() {
        assert_eq!(DeliveryId::parse("dlv_42"), Some(DeliveryId(42)));
        assert_eq!(DeliveryId(42).to_string(), "dlv_42");
        for bad in [
            "42",
            "dlv_",
            "dlv_-1",
            "dlv_+1",
            "dlv_1x",
            "dlv_99999999999999999999",
        ] {
            assert_eq!(DeliveryId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn event_ids_start_with_their_time() {
        let id = EventId::generate(Timestamp::from_millis(0x0193_0000_0001));
        assert!(id.as_str().starts_with("evt_019300000001"), "{id}");
        assert_eq!(id.as_str().len(), 4 + 12 + 14);
        assert_ne!(
            id,
            EventId::generate(Timestamp::from_millis(0x0193_0000_0001))
        );
    }
}
