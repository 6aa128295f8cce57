//! Endpoint URLs and the ids derived from them.
//!
//! Policy: an endpoint URL is an absolute `http` or `https` URL with a host, no
//! credentials and at most [`MAX_URL_LEN`] bytes. It is kept exactly as the client
//! wrote it, because the endpoint id is the unpadded base64url encoding of those bytes
//! (as Fullstory does). Whether its host may be dialled is a separate, async check
//! ([`EndpointUrl::check_public`]) because names must be resolved.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use url::{Host, Url};

use super::net::is_forbidden;

pub const MAX_URL_LEN: usize = 2048;
/// How long a save-time name lookup may take before it is given up (and the dial-time
/// check is left to guard the connection).
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointUrl {
    raw: String,
    parsed: Url,
}

impl EndpointUrl {
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.len() > MAX_URL_LEN {
            return Err(format!("must be at most {MAX_URL_LEN} characters"));
        }
        if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("must not contain whitespace".into());
        }
        let parsed = Url::parse(raw).map_err(|e| format!("is not a valid absolute URL ({e})"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err("must use http or https".into());
        }
        if parsed.host().is_none() {
            return Err("must have a host".into());
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err("must not contain credentials".into());
        }
        Ok(Self {
            raw: raw.to_owned(),
            parsed,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// Whether the host is `host` (letters compared without case).
    pub fn host_is(&self, host: &str) -> bool {
        self.parsed
            .host_str()
            .is_some_and(|h| h.trim_end_matches('.').eq_ignore_ascii_case(host))
    }

    pub fn id(&self) -> EndpointId {
        EndpointId(URL_SAFE_NO_PAD.encode(self.raw.as_bytes()))
    }

    /// Refuses a URL whose host is, or resolves to, an address that is not public.
    /// A name that does not resolve now is accepted: the dial-time check still applies.
    pub async fn check_public(&self) -> Result<(), String> {
        let refused = || {
            "must not point at a loopback, private, link-local, multicast or unspecified address"
                .to_string()
        };
        match self.parsed.host() {
            Some(Host::Ipv4(ip)) if is_forbidden(IpAddr::V4(ip)) => Err(refused()),
            Some(Host::Ipv6(ip)) if is_forbidden(IpAddr::V6(ip)) => Err(refused()),
            Some(Host::Domain(name)) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                if name == "localhost" || name.ends_with(".localhost") {
                    return Err(refused());
                }
                let port = self.parsed.port_or_known_default().unwrap_or(443);
                let target = format!("{name}:{port}");
                let lookup = tokio::net::lookup_host(target);
                match tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
                    Ok(Ok(addrs)) => {
                        let addrs: Vec<_> = addrs.collect();
                        if addrs.iter().any(|a| is_forbidden(a.ip())) {
                            Err(refused())
                        } else {
                            Ok(())
                        }
                    }
                    _ => Ok(()),
                }
            }
            _ => Ok(()),
        }
    }
}

impl fmt::Display for EndpointUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// The public id of an endpoint: unpadded base64url of its URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointId(String);

impl EndpointId {
    pub fn from_raw(raw: &str) -> Self {
        Self(raw.to_owned())
    }

    /// The URL this id names, if it decodes to text that could be one (padding is
    /// tolerated; control characters never are in a URL).
    pub fn url(&self) -> Option<String> {
        let bytes = URL_SAFE_NO_PAD.decode(self.0.trim_end_matches('=')).ok()?;
        let text = String::from_utf8(bytes).ok()?;
        (!text.chars().any(char::is_control)).then_some(text)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn for_url(url: &str) -> Self {
        Self(URL_SAFE_NO_PAD.encode(url.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_matches_fullstory_example() {
        let url = EndpointUrl::parse("https://example.com/fullstory-webhooks").expect("url");
        assert_eq!(
            url.id().as_str(),
            "aHR0cHM6Ly9leGFtcGxlLmNvbS9mdWxsc3Rvcnktd2ViaG9va3M"
        );
        assert_eq!(
            url.id().url().as_deref(),
            Some("https://example.com/fullstory-webhooks")
        );
    }

    #[test]
    fn rejects_bad_urls() {
        for bad in [
            "ftp://example.com/",
            "/relative",
            "https://user:pw@example.com/",
            "https://user@example.com/",
            "not a url",
            "mailto:a@b.c",
        ] {
            assert!(EndpointUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn refuses_private_targets_in_every_spelling() {
        for bad in [
            "http://127.0.0.1/",
            "http://2130706433/",
            "http://0x7f.0.0.1/",
            "http://0177.0.0.1/",
            "http://127.1/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
            "http://169.254.169.254/latest",
            "http://localhost:8080/",
            "http://LOCALHOST./",
            "http://foo.localhost/",
            "http://0.0.0.0/",
            "http://[fe80::1]/",
            "http://10.0.0.1/",
        ] {
            let url = EndpointUrl::parse(bad).expect("parses");
            assert!(url.check_public().await.is_err(), "{bad} should be refused");
        }
        let ok = EndpointUrl::parse("https://93.184.216.34/hook").expect("parses");
        assert!(ok.check_public().await.is_ok());
    }

    proptest::proptest! {
        /// Any text: a URL or a reason, never a panic; an accepted URL's id names it.
        #[test]
        fn any_text_parses_or_is_refused(text in "\\PC{0,80}") {
            if let Ok(url) = EndpointUrl::parse(&text) {
                let named = url.id().url();
                proptest::prop_assert_eq!(named.as_deref(), Some(url.as_str()));
            }
            let _ = EndpointId::from_raw(&text).url();
        }
    }
}
