//! Encryption of endpoint secrets and custom headers at rest.
//!
//! Policy: secrets are sealed with XChaCha20-Poly1305 under a 32-byte master key, a
//! fresh random nonce each time, and the owning org's id as associated data (so a
//! ciphertext copied to another org does not open). The master key comes from
//! `POSTHORN_MASTER_KEY` (64 hex digits or base64 of 32 bytes); on the embedded SQLite
//! default without it, a key file is created beside the database with mode 0600.

use std::fmt;
use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;

use crate::domain::{CustomHeaders, OrgId, Secret};

const VERSION: u8 = 1;
const NONCE_LEN: usize = 24;
/// What is sealed into the store's meta table to detect a wrong master key at start.
pub const KEY_CHECK_PLAINTEXT: &[u8] = b"posthorn master key check v1";
pub const KEY_CHECK_AAD: &str = "posthorn-meta";

#[derive(Clone)]
pub struct MasterKey {
    cipher: XChaCha20Poly1305,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

impl MasterKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self {
            cipher: XChaCha20Poly1305::new(&bytes.into()),
        }
    }

    pub fn random() -> Self {
        let mut bytes = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut bytes);
        Self::from_bytes(bytes)
    }

    /// Parses a key given as 64 hex digits or as base64 of exactly 32 bytes.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let text = text.trim();
        let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            (0..32)
                .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16))
                .collect::<Result<Vec<u8>, _>>()?
        } else {
            STANDARD
                .decode(text)
                .context("master key is neither 64 hex digits nor base64")?
        };
        let Ok(bytes) = <[u8; 32]>::try_from(bytes.as_slice()) else {
            bail!("master key must be 32 bytes (64 hex digits or 44 base64 characters)");
        };
        Ok(Self::from_bytes(bytes))
    }

    /// Reads the key file at `path`, creating it (mode 0600) with a new key if absent.
    pub fn load_or_create_file(path: &Path) -> anyhow::Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                Self::parse(&text).with_context(|| format!("reading key file {}", path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut bytes = [0u8; 32];
                rand::thread_rng().fill_bytes(&mut bytes);
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                let mut file = options
                    .open(path)
                    .with_context(|| format!("creating key file {}", path.display()))?;
                writeln!(file, "{}", STANDARD.encode(bytes))
                    .and_then(|()| file.sync_all())
                    .with_context(|| format!("writing key file {}", path.display()))?;
                Ok(Self::from_bytes(bytes))
            }
            Err(e) => Err(e).with_context(|| format!("reading key file {}", path.display())),
        }
    }

    pub fn seal(&self, plaintext: &[u8], aad: &str) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: aad.as_bytes(),
                },
            )
            .unwrap_or_default(); // encryption fails only for inputs over 256 GiB
        let mut out = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    pub fn open(&self, sealed: &[u8], aad: &str) -> anyhow::Result<Vec<u8>> {
        if sealed.len() < 1 + NONCE_LEN || sealed[0] != VERSION {
            bail!("sealed value has an unknown format");
        }
        let (nonce, body) = sealed[1..].split_at(NONCE_LEN);
        self.cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: body,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| anyhow::anyhow!("sealed value does not open with this master key"))
    }

    pub fn seal_secret(&self, org: &OrgId, secret: &Secret) -> Vec<u8> {
        self.seal(secret.expose().as_bytes(), org.as_str())
    }

    /// Seals an endpoint's custom headers (as JSON), bound to its org and to their
    /// purpose, so a sealed secret does not open as headers or the other way round.
    pub fn seal_headers(&self, org: &OrgId, headers: &CustomHeaders) -> Vec<u8> {
        let json = serde_json::to_vec(headers).unwrap_or_default();
        self.seal(&json, &format!("{org}/headers"))
    }

    pub fn open_headers(&self, org: &OrgId, sealed: &[u8]) -> anyhow::Result<CustomHeaders> {
        let json = self.open(sealed, &format!("{org}/headers"))?;
        serde_json::from_slice(&json).context("stored headers are not a JSON object")
    }

    pub fn open_secret(&self, org: &OrgId, sealed: &[u8]) -> anyhow::Result<Secret> {
        let bytes = self.open(sealed, org.as_str())?;
        let text = String::from_utf8(bytes).context("secret is not UTF-8")?;
        Secret::parse(&text).map_err(|e| anyhow::anyhow!("stored secret is invalid: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_round_trips_and_binds_the_org() {
        let key = MasterKey::random();
        let org = OrgId::parse("o-1").expect("org");
        let other = OrgId::parse("o-2").expect("org");
        let secret = Secret::parse("s3cret-value").expect("secret");
        let sealed = key.seal_secret(&org, &secret);
        assert!(!sealed
            .windows(secret.expose().len())
            .any(|w| w == secret.expose().as_bytes()));
        assert_eq!(key.open_secret(&org, &sealed).expect("opens"), secret);
        assert!(key.open_secret(&other, &sealed).is_err());
        assert!(MasterKey::random().open_secret(&org, &sealed).is_err());
    }

    #[test]
    fn parses_hex_and_base64() {
        assert!(MasterKey::parse(&"ab".repeat(32)).is_ok());
        assert!(MasterKey::parse(&STANDARD.encode([7u8; 32])).is_ok());
        assert!(MasterKey::parse("short").is_err());
    }
}
