//! What a web session may do, and the secrets that name sessions.
//!
//! Policy: a session's secret (the console or portal cookie, a portal grant's token) is
//! 32 random bytes in base64url and is stored only as its SHA-256, like an API key.

use std::fmt;

use super::KeyHash;

/// One thing a portal session may be allowed to do. Viewing is always allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    /// See the org's endpoints, delivery log, attempts and statistics.
    View,
    /// Create, edit, enable, disable, delete and test endpoints.
    ManageEndpoints,
    /// Retry a delivery; recover an endpoint's failed deliveries.
    Retry,
    /// Rotate an endpoint's secret (and see the new one once).
    RotateSecrets,
}

impl Capability {
    pub const ALL: [Self; 4] = [
        Self::View,
        Self::ManageEndpoints,
        Self::Retry,
        Self::RotateSecrets,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::View => "view",
            Self::ManageEndpoints => "manage_endpoints",
            Self::Retry => "retry",
            Self::RotateSecrets => "rotate_secrets",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of capabilities; `view` is always in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities(u8);

impl Capabilities {
    pub fn all() -> Self {
        Self(Capability::ALL.iter().fold(0, |acc, c| acc | c.bit()))
    }

    pub fn view_only() -> Self {
        Self(Capability::View.bit())
    }

    pub fn has(self, c: Capability) -> bool {
        self.0 & c.bit() != 0
    }

    /// The set named by `names` (view added); an unknown name is an error naming it.
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let mut set = Self::view_only();
        for name in names {
            let c = Capability::ALL
                .into_iter()
                .find(|c| c.as_str() == name)
                .ok_or_else(|| {
                    format!("{name:?} is not one of view, manage_endpoints, retry, rotate_secrets")
                })?;
            set.0 |= c.bit();
        }
        Ok(set)
    }

    /// The stored form, `view,retry` (what [`Capabilities::parse_stored`] reads).
    pub fn names(self) -> Vec<&'static str> {
        Capability::ALL
            .into_iter()
            .filter(|c| self.has(*c))
            .map(Capability::as_str)
            .collect()
    }

    /// Reads the stored form; unknown names (from a newer version) grant nothing.
    pub fn parse_stored(s: &str) -> Self {
        let mut set = Self::view_only();
        for c in Capability::ALL {
            if s.split(',').any(|n| n == c.as_str()) {
                set.0 |= c.bit();
            }
        }
        set
    }
}

impl fmt::Display for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.names().join(","))
    }
}

/// A session secret. Its `Debug` never shows it.
#[derive(Clone)]
pub struct SessionToken(String);

impl SessionToken {
    pub fn generate() -> Self {
        Self(super::api_key::random_token())
    }

    pub fn from_raw(raw: impl Into<String>) -> Self {
        Self(raw.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> KeyHash {
        KeyHash::of(&self.0)
    }
}

impl fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionToken(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_round_trip_and_always_view() {
        let set = Capabilities::from_names(["retry"]).expect("known");
        assert!(set.has(Capability::View) && set.has(Capability::Retry));
        assert!(!set.has(Capability::ManageEndpoints));
        assert_eq!(set.to_string(), "view,retry");
        assert_eq!(Capabilities::parse_stored(&set.to_string()), set);
        assert_eq!(
            Capabilities::parse_stored("future_thing"),
            Capabilities::view_only()
        );
        assert!(Capabilities::from_names(["everything"])
            .expect_err("unknown")
            .contains("everything"));
        assert_eq!(
            Capabilities::parse_stored(&Capabilities::all().to_string()),
            Capabilities::all()
        );
    }

    #[test]
    fn tokens_are_random_and_hash_stably() {
        let (a, b) = (SessionToken::generate(), SessionToken::generate());
        assert_ne!(a.expose(), b.expose());
        assert_eq!(a.expose().len(), 43);
        assert!(a.hash().ct_eq(&SessionToken::from_raw(a.expose()).hash()));
        assert!(!format!("{a:?}").contains(a.expose()));
    }
}
