//! The HTTP client deliveries go out on: pooled keep-alive connections, no redirects,
//! and the SSRF guard on the address actually dialled.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::domain::net::is_forbidden;

pub const USER_AGENT: &str = concat!("posthorn/", env!("CARGO_PKG_VERSION"));

/// The error a refused address produces; found again in the error chain to say why.
#[derive(Debug, thiserror::Error)]
#[error("refused: {0} resolves only to non-public addresses (SSRF guard)")]
pub struct SsrfRefused(pub String);

/// Resolves names with the system resolver and drops every non-public address, so the
/// connector can only dial what passed the check.
struct GuardedResolver;

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| !is_forbidden(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(Box::new(SsrfRefused(host)) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

pub fn build(allow_private: bool, pool_per_host: usize) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .redirect(reqwest::redirect::Policy::none())
        // A proxy would be the address dialled, and the SSRF guard would check it
        // instead of the endpoint: never use one from the environment.
        .no_proxy()
        .pool_max_idle_per_host(pool_per_host)
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(10));
    if !allow_private {
        builder = builder.dns_resolver(Arc::new(GuardedResolver));
    }
    Ok(builder.build()?)
}

/// True if any error in the chain is the SSRF guard's refusal.
pub fn is_ssrf_refusal(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(err);
    while let Some(e) = current {
        if e.is::<SsrfRefused>() {
            return true;
        }
        current = e.source();
    }
    false
}
