//! Endpoint signing secrets. Never logged (`Debug` is redacted), never returned after
//! the Create that minted them, and encrypted at rest by [`crate::crypto`].

use std::fmt;

use base64::Engine;
use rand::RngCore;

/// Longest secret accepted from a client.
pub const MAX_SECRET_LEN: usize = 256;
/// Shortest secret accepted from a client: a shorter one is too easy to guess.
pub const MIN_SECRET_LEN: usize = 8;

#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Mints a Standard Webhooks style secret: `whsec_` and 24 random bytes, base64.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 24];
        rand::thread_rng().fill_bytes(&mut bytes);
        Self(format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        ))
    }

    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.len() < MIN_SECRET_LEN || raw.len() > MAX_SECRET_LEN {
            return Err(format!(
                "must be between {MIN_SECRET_LEN} and {MAX_SECRET_LEN} characters"
            ));
        }
        if raw.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err("must not contain whitespace or control characters".into());
        }
        if let Some(b64) = raw.strip_prefix("whsec_") {
            if base64::engine::general_purpose::STANDARD
                .decode(b64)
                .is_err()
            {
                return Err("starts with whsec_ but the rest is not valid base64".into());
            }
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}
