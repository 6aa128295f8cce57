//! The per-key API rate limit.
//!
//! Policy: `POSTHORN_RATE_LIMIT` requests per second per key, with a burst of
//! `POSTHORN_RATE_LIMIT_BURST`. Where the store is shared by several processes it counts
//! requests in one-second windows in the database, so the limit holds across nodes;
//! otherwise a token bucket in this process (governor) is exact and costs no I/O.

use std::num::NonZeroU32;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::domain::Timestamp;
use crate::error::ApiError;
use crate::store::DynStore;

pub struct RateLimiter {
    local: DefaultKeyedRateLimiter<String>,
    /// Requests allowed in one shared one-second window.
    per_window: u32,
}

impl RateLimiter {
    /// `None` when `rate` is 0 (no limit).
    pub fn new(rate: u32, burst: Option<u32>) -> Option<Self> {
        let rate = NonZeroU32::new(rate)?;
        let burst = burst.and_then(NonZeroU32::new).unwrap_or(rate);
        Some(Self {
            local: governor::RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
            per_window: rate.get().max(burst.get()),
        })
    }

    /// Counts one request of `key_id`; a 429 with its `Retry-After` when over the limit.
    pub async fn check(&self, store: &DynStore, key_id: &str) -> Result<(), ApiError> {
        let now = Timestamp::now().millis();
        let window = now - now.rem_euclid(1000);
        if let Some(hits) = store.hit_rate_window(key_id, window).await? {
            return if hits <= self.per_window {
                Ok(())
            } else {
                Err(ApiError::TooManyRequests {
                    retry_after_secs: 1,
                })
            };
        }
        self.local
            .check_key(&key_id.to_owned())
            .map_err(|not_until| {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                ApiError::TooManyRequests {
                    retry_after_secs: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
                }
            })
    }
}

/// Failed authentication per client address.
///
/// Policy: `POSTHORN_FAILED_AUTH_LIMIT` failed authentications (no key, an unknown or a
/// revoked one) per minute per client address, with as many at once; beyond them the
/// failure is answered 429 instead of 401 until the address has earned a try back. A
/// valid key is never counted nor slowed, from any address. IPv6 clients are counted
/// per /64 (what one host usually holds). Counted per process, on the connecting
/// address: behind a reverse proxy that is the proxy's.
pub struct FailedAuthLimiter {
    local: DefaultKeyedRateLimiter<std::net::IpAddr>,
}

/// Addresses remembered before forgotten ones (whose allowance is whole again) are
/// dropped.
const FAILED_AUTH_ADDRESSES: usize = 10_000;

impl FailedAuthLimiter {
    /// `None` when `per_minute` is 0 (no limit).
    pub fn new(per_minute: u32) -> Option<Self> {
        let per_minute = NonZeroU32::new(per_minute)?;
        Some(Self {
            local: governor::RateLimiter::keyed(Quota::per_minute(per_minute)),
        })
    }

    /// Counts one failed authentication from `addr`: the error to answer with.
    pub fn failed(&self, addr: std::net::IpAddr) -> ApiError {
        let addr = match addr {
            std::net::IpAddr::V6(v6) => {
                let mut octets = v6.octets();
                octets[8..].fill(0);
                std::net::IpAddr::from(octets)
            }
            v4 => v4,
        };
        if self.local.len() >= FAILED_AUTH_ADDRESSES {
            self.local.retain_recent();
        }
        match self.local.check_key(&addr) {
            Ok(()) => ApiError::Unauthorized,
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                ApiError::TooManyRequests {
                    retry_after_secs: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
                }
            }
        }
    }
}
