//! Timestamps: stored as milliseconds since the Unix epoch, shown as RFC 3339 UTC with
//! millisecond precision (`2020-04-01T21:53:58.200Z`), as the contract fixes.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Serialize, Serializer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    pub fn now() -> Self {
        Self(Utc::now().timestamp_millis())
    }

    pub fn from_millis(ms: i64) -> Self {
        Self(ms)
    }

    pub fn millis(self) -> i64 {
        self.0
    }

    /// This time plus `d` (saturating).
    pub fn plus(self, d: std::time::Duration) -> Self {
        Self(self.0.saturating_add(duration_ms(d)))
    }

    /// This time minus `d` (saturating).
    pub fn minus(self, d: std::time::Duration) -> Self {
        Self(self.0.saturating_sub(duration_ms(d)))
    }

    pub fn to_rfc3339(self) -> String {
        DateTime::<Utc>::from_timestamp_millis(self.0)
            .unwrap_or_default()
            .to_rfc3339_opts(SecondsFormat::Millis, true)
    }
}

fn duration_ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_with_millis_and_z() {
        assert_eq!(
            Timestamp::from_millis(1_585_777_438_200).to_rfc3339(),
            "2020-04-01T21:43:58.200Z"
        );
    }
}
