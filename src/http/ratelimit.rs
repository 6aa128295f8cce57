//! Request budgets: per API key, per portal session and portal link, portal-link trades,
//! and failed authentications per client address.
//!
//! Policy: every budget is counted per principal, never shared by two.
//! - An API key: `POSTHORN_RATE_LIMIT` requests per second, with a burst of
//!   `POSTHORN_RATE_LIMIT_BURST`. A console session counts as the key it signed in with
//!   (the operator themself).
//! - A portal session: `POSTHORN_PORTAL_RATE_LIMIT` per second, and all the sessions of
//!   one portal link together `POSTHORN_PORTAL_LINK_RATE_LIMIT` per second (each with one
//!   second's worth at once). A customer's portal never spends the budget of the key that
//!   minted the link.
//! - Trading a portal link for a session: `POSTHORN_PORTAL_TRADE_LIMIT` per minute per
//!   link and `POSTHORN_PORTAL_TRADE_ADDRESS_LIMIT` per minute per client address.
//! - Failed authentications: see [`FailedAuthLimiter`].
//!
//! Per-second budgets are counted in one-second windows in the database where the store
//! is shared by several processes, so they hold across nodes; otherwise (and for the
//! per-minute budgets, always) a token bucket in this process is exact and costs no I/O.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::config::ServeConfig;
use crate::domain::{KeyHash, Timestamp};
use crate::error::ApiError;
use crate::store::DynStore;

/// Principals remembered before the forgotten ones (whose budget is whole again) are
/// dropped.
const REMEMBERED: usize = 10_000;

/// A request budget per principal.
pub struct RateLimiter {
    local: DefaultKeyedRateLimiter<String>,
    /// Requests allowed in one shared one-second window; `None`: counted in this
    /// process only.
    per_window: Option<u32>,
}

impl RateLimiter {
    /// `rate` per second with `burst` at once (default: one second's worth); `None`
    /// when `rate` is 0 (no limit).
    pub fn new(rate: u32, burst: Option<u32>) -> Option<Self> {
        let rate = NonZeroU32::new(rate)?;
        let burst = burst.and_then(NonZeroU32::new).unwrap_or(rate);
        Some(Self {
            local: governor::RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
            per_window: Some(rate.get().max(burst.get())),
        })
    }

    /// `n` per minute with as many at once, counted in this process; `None` when `n` is
    /// 0 (no limit).
    pub fn per_minute(n: u32) -> Option<Self> {
        let n = NonZeroU32::new(n)?;
        Some(Self {
            local: governor::RateLimiter::keyed(Quota::per_minute(n)),
            per_window: None,
        })
    }

    /// Counts one request of `who`; a 429 with its `Retry-After` when over the limit.
    pub async fn check(&self, store: &DynStore, who: &str) -> Result<(), ApiError> {
        if let Some(per_window) = self.per_window {
            let now = Timestamp::now().millis();
            let window = now - now.rem_euclid(1000);
            if let Some(hits) = store.hit_rate_window(who, window).await? {
                return if hits <= per_window {
                    Ok(())
                } else {
                    Err(ApiError::TooManyRequests {
                        retry_after_secs: 1,
                    })
                };
            }
        }
        if self.local.len() >= REMEMBERED {
            self.local.retain_recent();
        }
        self.local.check_key(&who.to_owned()).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            ApiError::TooManyRequests {
                retry_after_secs: whole_secs(wait),
            }
        })
    }
}

fn whole_secs(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

/// The budgets of the customer portal (see the module's policy).
pub struct PortalLimits {
    /// Requests per portal session.
    pub session: Option<RateLimiter>,
    /// Requests of all the sessions of one portal link.
    pub link: Option<RateLimiter>,
    /// Trades of one portal link for a session.
    pub trades_per_link: Option<RateLimiter>,
    /// Trades from one client address, whatever the link.
    pub trades_per_address: Option<RateLimiter>,
    /// Live sessions one link may have: a trade beyond it ends the link's oldest.
    pub sessions_per_link: u32,
}

impl PortalLimits {
    pub fn new(config: &ServeConfig) -> Self {
        let web = &config.web;
        Self {
            session: RateLimiter::new(web.portal_rate_limit, None),
            link: RateLimiter::new(web.portal_link_rate_limit, None),
            trades_per_link: RateLimiter::per_minute(web.portal_trade_limit),
            trades_per_address: RateLimiter::per_minute(web.portal_trade_address_limit),
            sessions_per_link: web.portal_sessions_per_link.max(1),
        }
    }

    /// Counts one request of a portal session made from link `grant`.
    pub async fn request(
        &self,
        store: &DynStore,
        session: &KeyHash,
        grant: Option<&KeyHash>,
    ) -> Result<(), ApiError> {
        if let Some(limiter) = &self.session {
            limiter
                .check(store, &format!("portal-session:{}", hex(session)))
                .await?;
        }
        if let (Some(limiter), Some(grant)) = (&self.link, grant) {
            limiter
                .check(store, &format!("portal-link:{}", hex(grant)))
                .await?;
        }
        Ok(())
    }

    /// Counts one trade from client address `addr`.
    pub async fn trade_from(&self, store: &DynStore, addr: IpAddr) -> Result<(), ApiError> {
        match &self.trades_per_address {
            Some(limiter) => limiter.check(store, &per_host(addr).to_string()).await,
            None => Ok(()),
        }
    }

    /// Counts one trade of link `grant`.
    pub async fn trade_of(&self, store: &DynStore, grant: &KeyHash) -> Result<(), ApiError> {
        match &self.trades_per_link {
            Some(limiter) => limiter.check(store, &hex(grant)).await,
            None => Ok(()),
        }
    }
}

fn hex(hash: &KeyHash) -> String {
    hash.0.iter().map(|b| format!("{b:02x}")).collect()
}

/// An address as one client is counted, as the connection limits count it: IPv6 per
/// /64 (what one host usually holds), an IPv4-mapped one as its IPv4 address.
fn per_host(addr: IpAddr) -> IpAddr {
    super::conn_limits::client_of(addr)
}

/// Failed authentication per client address.
///
/// Policy: `POSTHORN_FAILED_AUTH_LIMIT` failed authentications (no key, an unknown or a
/// revoked one; a wrong console sign-in key or portal link) per minute per client
/// address, with as many at once. Once an address has used them up, every request from
/// it that authenticates (API calls, sign-ins, portal-link trades) is answered 429 with
/// `Retry-After`, whatever key it carries, valid or not, until the address has earned a
/// try back (one per `60 s / limit`): a right guess cannot be told from a wrong one.
/// Valid keys are not counted. IPv6 clients are counted per /64. Counted per process,
/// on the connecting address: behind a reverse proxy that is the proxy's.
pub struct FailedAuthLimiter {
    /// Time between two allowed failures.
    interval: Duration,
    /// Failures allowed at once.
    burst: u32,
    /// Per address, the theoretical arrival time of its next failure (GCRA): the address
    /// is over its limit while that is more than `burst - 1` intervals ahead.
    next: RwLock<HashMap<IpAddr, Instant>>,
}

impl FailedAuthLimiter {
    /// `None` when `per_minute` is 0 (no limit).
    pub fn new(per_minute: u32) -> Option<Self> {
        let per_minute = NonZeroU32::new(per_minute)?;
        Some(Self {
            interval: Duration::from_secs(60) / per_minute.get(),
            burst: per_minute.get(),
            next: RwLock::new(HashMap::new()),
        })
    }

    /// How far ahead an address's arrival time may be while it still has a try.
    fn tolerance(&self) -> Duration {
        self.interval * (self.burst - 1)
    }

    /// `Err(429)` while `addr` is over its limit, whatever it presents.
    pub fn admit(&self, addr: IpAddr) -> Result<(), ApiError> {
        let now = Instant::now();
        let next = self.next.read().unwrap_or_else(|e| e.into_inner());
        match next.get(&per_host(addr)) {
            Some(&tat) if tat > now + self.tolerance() => Err(ApiError::TooManyRequests {
                retry_after_secs: whole_secs(tat - self.tolerance() - now),
            }),
            _ => Ok(()),
        }
    }

    /// Counts one failed authentication from `addr`: the error to answer with (401, or
    /// 429 when the address was already over its limit).
    pub fn failed(&self, addr: IpAddr) -> ApiError {
        let now = Instant::now();
        let addr = per_host(addr);
        let mut next = self.next.write().unwrap_or_else(|e| e.into_inner());
        if next.len() >= REMEMBERED {
            next.retain(|_, tat| *tat > now);
        }
        let tat = next.get(&addr).copied().filter(|t| *t > now).unwrap_or(now);
        if tat > now + self.tolerance() {
            return ApiError::TooManyRequests {
                retry_after_secs: whole_secs(tat - self.tolerance() - now),
            };
        }
        next.insert(addr, tat + self.interval);
        ApiError::Unauthorized
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_over_its_failures_waits_whatever_it_presents() {
        let limiter = FailedAuthLimiter::new(3).expect("a limit");
        let addr: IpAddr = [192, 0, 2, 1].into();
        for _ in 0..3 {
            assert!(limiter.admit(addr).is_ok());
            assert!(matches!(limiter.failed(addr), ApiError::Unauthorized));
        }
        let Err(ApiError::TooManyRequests { retry_after_secs }) = limiter.admit(addr) else {
            panic!("an address over its limit is admitted");
        };
        assert!((1..=20).contains(&retry_after_secs), "{retry_after_secs}");
        assert!(limiter.admit([192, 0, 2, 2].into()).is_ok());
        let v6: IpAddr = "2001:db8::1".parse().expect("v6");
        for _ in 0..3 {
            limiter.failed(v6);
        }
        assert!(limiter.admit("2001:db8::2".parse().expect("v6")).is_err());
    }
}
