//! What a delivery can be and why an attempt failed: closed sets, stored as short text.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    /// Waiting for its first attempt or a retry (or an attempt is in flight).
    Pending,
    /// An attempt was answered 2xx.
    Delivered,
    /// Every attempt of the schedule failed, or the endpoint went away.
    Failed,
}

impl DeliveryState {
    pub const ALL: [Self; 3] = [Self::Pending, Self::Delivered, Self::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }
}

impl FromStr for DeliveryState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| format!("{s:?} is not a delivery state"))
    }
}

impl fmt::Display for DeliveryState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// The endpoint answered, with a status other than 2xx.
    HttpStatus,
    /// No complete answer within the attempt timeout.
    Timeout,
    /// The connection could not be made.
    Connect,
    /// The address is not public (SSRF guard); nothing was sent.
    Ssrf,
    /// The request failed after connecting (reset, bad answer).
    Request,
    /// The endpoint's secret cannot be opened with this master key; nothing was sent.
    Secret,
}

impl ErrorClass {
    pub const ALL: [Self; 6] = [
        Self::HttpStatus,
        Self::Timeout,
        Self::Connect,
        Self::Ssrf,
        Self::Request,
        Self::Secret,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::HttpStatus => "http_status",
            Self::Timeout => "timeout",
            Self::Connect => "connect",
            Self::Ssrf => "ssrf",
            Self::Request => "request",
            Self::Secret => "secret",
        }
    }
}

impl FromStr for ErrorClass {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|class| class.as_str() == s)
            .ok_or_else(|| format!("{s:?} is not an error class"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_and_classes_round_trip_through_text() {
        for s in DeliveryState::ALL {
            assert_eq!(s.as_str().parse::<DeliveryState>(), Ok(s));
            assert_eq!(serde_json::to_value(s).ok(), Some(s.as_str().into()));
        }
        for c in ErrorClass::ALL {
            assert_eq!(c.as_str().parse::<ErrorClass>(), Ok(c));
            assert_eq!(serde_json::to_value(c).ok(), Some(c.as_str().into()));
        }
        assert!("sent".parse::<DeliveryState>().is_err());
    }
}
