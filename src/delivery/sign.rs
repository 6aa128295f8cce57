//! Request signatures: Fullstory's and Standard Webhooks', over the same body.
//!
//! Policy: the HMAC key is the secret's bytes; a secret that starts with `whsec_` is
//! base64-decoded after the prefix (Standard Webhooks), and that same key signs both
//! headers, so one secret means one key everywhere.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::domain::Secret;

type HmacSha256 = Hmac<Sha256>;

/// The HMAC key bytes of a secret.
pub fn key_bytes(secret: &Secret) -> Vec<u8> {
    raw_key_bytes(secret.expose())
}

/// The HMAC key bytes of a secret given as text (the receiver side).
pub fn raw_key_bytes(raw: &str) -> Vec<u8> {
    match raw.strip_prefix("whsec_").map(|b64| STANDARD.decode(b64)) {
        Some(Ok(bytes)) => bytes,
        _ => raw.as_bytes().to_vec(),
    }
}

fn hmac_b64(key: &[u8], parts: &[&[u8]]) -> String {
    // HMAC accepts keys of any length.
    let mut mac = HmacSha256::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    for part in parts {
        mac.update(part);
    }
    STANDARD.encode(mac.finalize().into_bytes())
}

/// `Fullstory-Signature: o:<org>,t:<ts>,v:<base64 HMAC(body ":" org ":" ts)>`.
pub fn fullstory_header(key: &[u8], org: &str, ts: i64, body: &[u8]) -> String {
    let ts = ts.to_string();
    let v = hmac_b64(key, &[body, b":", org.as_bytes(), b":", ts.as_bytes()]);
    format!("o:{org},t:{ts},v:{v}")
}

/// One `webhook-signature` entry: `v1,<base64 HMAC("<id>.<ts>.<body>")>`.
pub fn standard_signature(key: &[u8], msg_id: &str, ts: i64, body: &[u8]) -> String {
    let ts = ts.to_string();
    let v = hmac_b64(key, &[msg_id.as_bytes(), b".", ts.as_bytes(), b".", body]);
    format!("v1,{v}")
}

/// Checks a `Fullstory-Signature` header against `key` (constant-time compare).
pub fn verify_fullstory(key: &[u8], header: &str, body: &[u8]) -> bool {
    let mut org = None;
    let mut ts = None;
    let mut sig = None;
    for part in header.split(',') {
        match part.split_once(':') {
            Some(("o", v)) => org = Some(v),
            Some(("t", v)) => ts = v.parse::<i64>().ok(),
            Some(("v", v)) => sig = Some(v),
            _ => {}
        }
    }
    let (Some(org), Some(ts), Some(sig)) = (org, ts, sig) else {
        return false;
    };
    let expected = fullstory_header(key, org, ts, body);
    let expected_v = expected.rsplit_once(",v:").map_or("", |(_, v)| v);
    constant_eq(expected_v.as_bytes(), sig.as_bytes())
}

/// Checks a space-separated `webhook-signature` header: true if any `v1` entry matches.
pub fn verify_standard(key: &[u8], msg_id: &str, ts: i64, header: &str, body: &[u8]) -> bool {
    let expected = standard_signature(key, msg_id, ts, body);
    header
        .split(' ')
        .any(|entry| constant_eq(entry.as_bytes(), expected.as_bytes()))
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_webhooks_spec_vector() {
        // The example of the Standard Webhooks reference libraries.
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("secret");
        let body = br#"{"test": 2432232314}"#;
        let sig = standard_signature(
            &key_bytes(&secret),
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            body,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn fullstory_round_trip() {
        let key = b"s3cret-value";
        let h = fullstory_header(key, "o-1", 1700000000, b"{}");
        assert!(h.starts_with("o:o-1,t:1700000000,v:"));
        assert!(verify_fullstory(key, &h, b"{}"));
        assert!(!verify_fullstory(b"other-key", &h, b"{}"));
        assert!(!verify_fullstory(key, &h, b"{ }"));
    }
}
