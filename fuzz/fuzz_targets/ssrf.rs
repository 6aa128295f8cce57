//! The SSRF decision: an IPv4 address written inside IPv6 is judged as that address.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use libfuzzer_sys::fuzz_target;
use posthorn::domain::net::is_forbidden;

fuzz_target!(|raw: (u32, u128)| {
    let v4 = Ipv4Addr::from(raw.0);
    assert_eq!(
        is_forbidden(IpAddr::V6(v4.to_ipv6_mapped())),
        is_forbidden(IpAddr::V4(v4))
    );
    let _ = is_forbidden(IpAddr::V6(Ipv6Addr::from(raw.1)));
});
