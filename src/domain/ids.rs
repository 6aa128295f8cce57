//! Identifiers that cross the store boundary.
//!
//! Policy: internal row ids are newtypes over `i64`, never bare numbers. Event ids are
//! minted here: `evt_`, the publish time in milliseconds as 12 hex digits (so ids of
//! one period sit together in the store's unique index instead of scattering over it),
//! and 10 random bytes.
//!
//! A delivery's row id comes from one sequence for every org, so its number would tell
//! an org how much the others publish. It is never shown: outside, a delivery is
//! `dlv_` and 22 characters, the row id encrypted with AES-128 under a key of the
//! store's own ([`PublicIds`]: a block cipher is a keyed permutation, so every id has
//! one spelling and nothing can be read from it). A spelling that does not decrypt to
//! a row id names nothing. The decimal spelling of earlier versions (`dlv_42`) keeps
//! working for the deliveries made before the upgrade, and only them. Pagination
//! tokens, which resume a list after a row's sequence number, are encrypted alike
//! (tokens of earlier versions are refused: they would let an org step through the
//! sequence).

use std::fmt;

use aes::cipher::{BlockDecrypt, BlockEncrypt, KeyInit};
use aes::Aes128;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};

use super::Timestamp;

/// A delivery: one event to one endpoint, by its row id. Shown outside only through
/// [`PublicIds`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DeliveryId(pub i64);

impl DeliveryId {
    /// Reads the decimal spelling of earlier versions, `dlv_<n>`.
    fn parse_decimal(raw: &str) -> Option<Self> {
        raw.strip_prefix("dlv_")
            .filter(|n| !n.is_empty() && n.len() < 20 && n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse().ok())
            .map(Self)
    }
}

/// Length of an encrypted id's spelling: one AES block in base64url.
const SPELLED: usize = 22;

/// How row ids are spelled outside: delivery ids and pagination tokens (see the
/// module's policy). One per store: its key is kept in the store, so every node spells
/// an id alike.
pub struct PublicIds {
    cipher: Aes128,
    /// Deliveries up to this row id were made before ids were encrypted: their decimal
    /// spelling is still read.
    legacy_upto: i64,
}

impl fmt::Debug for PublicIds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicIds")
            .field("legacy_upto", &self.legacy_upto)
            .finish_non_exhaustive()
    }
}

/// What the first half of a block says it holds: a delivery id (zeros), or a
/// pagination token of one list (`p` and the list's letter).
fn tag(kind: Option<&str>) -> [u8; 8] {
    let mut tag = [0u8; 8];
    if let Some(kind) = kind {
        tag[0] = b'p';
        for (t, b) in tag[1..].iter_mut().zip(kind.bytes()) {
            *t = b;
        }
    }
    tag
}

impl PublicIds {
    pub fn new(key: &[u8; 16], legacy_upto: i64) -> Self {
        Self {
            cipher: Aes128::new(key.into()),
            legacy_upto,
        }
    }

    fn seal(&self, tag: [u8; 8], n: i64) -> String {
        let mut block = [0u8; 16];
        block[..8].copy_from_slice(&tag);
        block[8..].copy_from_slice(&n.to_be_bytes());
        let mut block = block.into();
        self.cipher.encrypt_block(&mut block);
        URL_SAFE_NO_PAD.encode(block)
    }

    fn open(&self, tag: [u8; 8], text: &str) -> Option<i64> {
        if text.len() != SPELLED {
            return None;
        }
        let bytes: [u8; 16] = URL_SAFE_NO_PAD.decode(text).ok()?.try_into().ok()?;
        let mut block = bytes.into();
        self.cipher.decrypt_block(&mut block);
        let (found, n) = block.split_at(8);
        if found != tag {
            return None;
        }
        Some(i64::from_be_bytes(n.try_into().ok()?))
    }

    /// The public spelling of a delivery: `dlv_` and 22 characters.
    pub fn delivery(&self, id: DeliveryId) -> String {
        format!("dlv_{}", self.seal(tag(None), id.0))
    }

    /// The delivery a public spelling names: one [`PublicIds::delivery`] made, or the
    /// decimal spelling of a delivery made before the upgrade.
    pub fn parse_delivery(&self, raw: &str) -> Option<DeliveryId> {
        let rest = raw.strip_prefix("dlv_")?;
        if rest.len() != SPELLED {
            return DeliveryId::parse_decimal(raw)
                .filter(|id| id.0 >= 1 && id.0 <= self.legacy_upto);
        }
        self.open(tag(None), rest)
            .filter(|&id| id >= 1)
            .map(DeliveryId)
    }

    /// A pagination token of list `kind` (a letter) that resumes after row `n`.
    pub fn token(&self, kind: &str, n: i64) -> String {
        self.seal(tag(Some(kind)), n)
    }

    /// The row a token of list `kind` resumes after; `None` for anything else.
    pub fn parse_token(&self, kind: &str, raw: &str) -> Option<i64> {
        self.open(tag(Some(kind)), raw).filter(|&n| n >= 0)
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
    fn delivery_ids_are_spelled_without_their_number() {
        let ids = PublicIds::new(&[7; 16], 41);
        let a = ids.delivery(DeliveryId(42));
        let b = ids.delivery(DeliveryId(43));
        assert!(a.starts_with("dlv_") && a.len() == 4 + 22, "{a}");
        assert!(!a.contains("42"));
        assert_eq!(ids.parse_delivery(&a), Some(DeliveryId(42)));
        assert_eq!(ids.parse_delivery(&b), Some(DeliveryId(43)));
        // Neighbours share nothing; another store's key spells them otherwise.
        let common = a
            .bytes()
            .zip(b.bytes())
            .skip(4)
            .filter(|(x, y)| x == y)
            .count();
        assert!(common < 8, "{a} {b}");
        assert_ne!(PublicIds::new(&[8; 16], 0).delivery(DeliveryId(42)), a);
        assert_eq!(PublicIds::new(&[8; 16], 0).parse_delivery(&a), None);
        // The decimal spelling reads only what was made before the upgrade.
        assert_eq!(ids.parse_delivery("dlv_41"), Some(DeliveryId(41)));
        assert_eq!(ids.parse_delivery("dlv_42"), None);
        let mut forged = a.clone().into_bytes();
        forged[10] = if forged[10] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(forged).expect("ascii");
        for bad in [
            "42",
            "dlv_",
            "dlv_0",
            "dlv_-1",
            "dlv_+1",
            "dlv_1x",
            "dlv_99999999999999999999",
            forged.as_str(),
            "dlv_AAAAAAAAAAAAAAAAAAAAAA",
            "dlv_!!!!!!!!!!!!!!!!!!!!!!",
        ] {
            assert_eq!(ids.parse_delivery(bad), None, "{bad}");
        }
    }

    #[test]
    fn tokens_name_their_list_and_nothing_else() {
        let ids = PublicIds::new(&[7; 16], 0);
        let t = ids.token("e", 12);
        assert_eq!(ids.parse_token("e", &t), Some(12));
        assert_eq!(ids.parse_token("d", &t), None);
        assert_eq!(ids.parse_delivery(&format!("dlv_{t}")), None);
        assert_eq!(
            ids.parse_token("d", &ids.delivery(DeliveryId(12))[4..]),
            None
        );
        assert!(!t.contains("12"));
        // The plain tokens of earlier versions read nothing.
        assert_eq!(ids.parse_token("e", "ZS4xMg"), None);
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
