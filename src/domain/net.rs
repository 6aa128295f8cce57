//! Which IP addresses posthorn refuses to send to (the SSRF guard).
//!
//! Policy: an address is refused unless IANA's special-purpose address registries
//! (IPv4: <https://www.iana.org/assignments/iana-ipv4-special-registry>, IPv6:
//! <https://www.iana.org/assignments/iana-ipv6-special-registry>) mark it globally
//! reachable. The most specific entry that holds the address decides; an entry whose
//! reachability is "N/A" (6to4, Teredo, the deprecated 6to4 relay anycast) counts as
//! not reachable. Besides the registries: IPv4 multicast is refused (not unicast), and
//! IPv6 outside `2000::/3` (everything IANA has not allocated as global unicast). IPv6
//! forms that carry an IPv4 address (mapped `::ffff:a.b.c.d`, translated
//! `::ffff:0:a.b.c.d`, compatible `::a.b.c.d`, NAT64 `64:ff9b::/96`) are judged by the
//! IPv4 rules. The same function is used when an endpoint is saved, on the address
//! actually dialled, and for test events.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// One registry entry: a prefix, and whether IANA marks it globally reachable.
struct Entry<A> {
    net: A,
    len: u8,
    reachable: bool,
}

const fn v4(a: u8, b: u8, c: u8, d: u8, len: u8, reachable: bool) -> Entry<Ipv4Addr> {
    Entry {
        net: Ipv4Addr::new(a, b, c, d),
        len,
        reachable,
    }
}

/// IANA IPv4 Special-Purpose Address Registry (and multicast, which is not unicast).
const V4: &[Entry<Ipv4Addr>] = &[
    v4(0, 0, 0, 0, 8, false),          // "this network"
    v4(0, 0, 0, 0, 32, false),         // "this host on this network"
    v4(10, 0, 0, 0, 8, false),         // private use
    v4(100, 64, 0, 0, 10, false),      // shared address space
    v4(127, 0, 0, 0, 8, false),        // loopback
    v4(169, 254, 0, 0, 16, false),     // link local
    v4(172, 16, 0, 0, 12, false),      // private use
    v4(192, 0, 0, 0, 24, false),       // IETF protocol assignments
    v4(192, 0, 0, 0, 29, false),       // IPv4 service continuity prefix
    v4(192, 0, 0, 8, 32, false),       // IPv4 dummy address
    v4(192, 0, 0, 9, 32, true),        // port control protocol anycast
    v4(192, 0, 0, 10, 32, true),       // TURN anycast
    v4(192, 0, 0, 170, 32, false),     // NAT64/DNS64 discovery
    v4(192, 0, 0, 171, 32, false),     // NAT64/DNS64 discovery
    v4(192, 0, 2, 0, 24, false),       // documentation (TEST-NET-1)
    v4(192, 31, 196, 0, 24, true),     // AS112-v4
    v4(192, 52, 193, 0, 24, true),     // AMT
    v4(192, 88, 99, 0, 24, false),     // deprecated 6to4 relay anycast (N/A)
    v4(192, 168, 0, 0, 16, false),     // private use
    v4(192, 175, 48, 0, 24, true),     // direct delegation AS112 service
    v4(198, 18, 0, 0, 15, false),      // benchmarking
    v4(198, 51, 100, 0, 24, false),    // documentation (TEST-NET-2)
    v4(203, 0, 113, 0, 24, false),     // documentation (TEST-NET-3)
    v4(224, 0, 0, 0, 4, false),        // multicast
    v4(240, 0, 0, 0, 4, false),        // reserved
    v4(255, 255, 255, 255, 32, false), // limited broadcast
];

const fn v6(s: [u16; 8], len: u8, reachable: bool) -> Entry<Ipv6Addr> {
    Entry {
        net: Ipv6Addr::new(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]),
        len,
        reachable,
    }
}

/// IANA IPv6 Special-Purpose Address Registry (the IPv4-carrying forms are judged by
/// their IPv4 address before this table is asked), and the deprecated site-local and
/// multicast ranges.
const V6: &[Entry<Ipv6Addr>] = &[
    v6([0, 0, 0, 0, 0, 0, 0, 1], 128, false),         // loopback
    v6([0, 0, 0, 0, 0, 0, 0, 0], 128, false),         // unspecified
    v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48, false),  // IPv4-IPv6 translation, local use
    v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64, false),      // discard-only
    v6([0x100, 0, 0, 1, 0, 0, 0, 0], 64, false),      // dummy IPv6 prefix
    v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 23, false),     // IETF protocol assignments
    v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 32, false),     // Teredo (N/A)
    v6([0x2001, 1, 0, 0, 0, 0, 0, 1], 128, true),     // PCP anycast
    v6([0x2001, 1, 0, 0, 0, 0, 0, 2], 128, true),     // TURN anycast
    v6([0x2001, 1, 0, 0, 0, 0, 0, 3], 128, true),     // DNS-SD SRP anycast
    v6([0x2001, 2, 0, 0, 0, 0, 0, 0], 48, false),     // benchmarking
    v6([0x2001, 3, 0, 0, 0, 0, 0, 0], 32, true),      // AMT
    v6([0x2001, 4, 0x112, 0, 0, 0, 0, 0], 48, true),  // AS112-v6
    v6([0x2001, 0x10, 0, 0, 0, 0, 0, 0], 28, false),  // deprecated ORCHID
    v6([0x2001, 0x20, 0, 0, 0, 0, 0, 0], 28, true),   // ORCHIDv2
    v6([0x2001, 0x30, 0, 0, 0, 0, 0, 0], 28, true),   // drone remote ID entity tags
    v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32, false), // documentation
    v6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16, false),     // 6to4 (N/A)
    v6([0x2620, 0x4f, 0x8000, 0, 0, 0, 0, 0], 48, true), // direct delegation AS112
    v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20, false),     // documentation
    v6([0x5f00, 0, 0, 0, 0, 0, 0, 0], 16, false),     // segment routing SIDs
    v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7, false),      // unique local
    v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10, false),     // link-local unicast
    v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10, false),     // site-local (deprecated)
    v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8, false),      // multicast
];

/// True when `ip` is not a globally reachable unicast address.
pub fn is_forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !reachable_v4(v4),
        IpAddr::V6(v6) => !reachable_v6(v6),
    }
}

fn within(ip: u128, net: u128, len: u8, bits: u8) -> bool {
    len == 0 || (ip ^ net) >> (bits - len) == 0
}

/// The reachability of the most specific entry holding `ip`, if any does.
fn most_specific<A: Copy>(
    table: &[Entry<A>],
    ip: u128,
    bits: u8,
    raw: fn(A) -> u128,
) -> Option<bool> {
    table
        .iter()
        .filter(|e| within(ip, raw(e.net), e.len, bits))
        .max_by_key(|e| e.len)
        .map(|e| e.reachable)
}

fn reachable_v4(ip: Ipv4Addr) -> bool {
    most_specific(V4, u32::from(ip).into(), 32, |a| u32::from(a).into()).unwrap_or(true)
}

fn reachable_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = embedded_v4(ip) {
        return reachable_v4(v4);
    }
    let raw = u128::from(ip);
    most_specific(V6, raw, 128, u128::from)
        // Outside the registry: only global unicast (2000::/3) is allocated.
        .unwrap_or_else(|| within(raw, 0x2000 << 112, 3, 128))
}

/// The IPv4 address an IPv6 address stands for, in the forms that carry one: mapped
/// (`::ffff:0:0/96`), translated (`::ffff:0:0:0/96`), compatible (`::/96`, deprecated;
/// not `::` and `::1`) and the NAT64 well-known prefix (`64:ff9b::/96`).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let low = || Ipv4Addr::from((u32::from(s[6]) << 16) | u32::from(s[7]));
    match s[..6] {
        [0, 0, 0, 0, 0, 0xffff] | [0, 0, 0, 0, 0xffff, 0] | [0x64, 0xff9b, 0, 0, 0, 0] => {
            Some(low())
        }
        [0, 0, 0, 0, 0, 0] if !(s[6] == 0 && s[7] <= 1) => Some(low()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forbidden(s: &str) -> bool {
        is_forbidden(s.parse().expect("ip"))
    }

    /// One row per registry entry (an address inside it and outside any more specific
    /// entry), and whether it may be dialled.
    const ROWS: &[(&str, bool)] = &[
        // IPv4 registry
        ("0.1.2.3", false),
        ("0.0.0.0", false),
        ("10.1.2.3", false),
        ("100.64.0.1", false),
        ("127.0.0.1", false),
        ("169.254.169.254", false),
        ("172.16.0.1", false),
        ("192.0.0.100", false),
        ("192.0.0.1", false),
        ("192.0.0.8", false),
        ("192.0.0.9", true),
        ("192.0.0.10", true),
        ("192.0.0.170", false),
        ("192.0.0.171", false),
        ("192.0.2.1", false),
        ("192.31.196.1", true),
        ("192.52.193.1", true),
        ("192.88.99.1", false),
        ("192.168.1.1", false),
        ("192.175.48.1", true),
        ("198.18.0.1", false),
        ("198.51.100.1", false),
        ("203.0.113.1", false),
        ("224.0.0.1", false),
        ("240.0.0.1", false),
        ("255.255.255.255", false),
        // IPv6 registry
        ("::1", false),
        ("::", false),
        ("64:ff9b:1::1", false),
        ("100::1", false),
        ("100:0:0:1::1", false),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", false),
        ("2001:1::1", true),
        ("2001:1::2", true),
        ("2001:1::3", true),
        ("2001:1::4", false),
        ("2001:2::1", false),
        ("2001:3::1", true),
        ("2001:4:112::1", true),
        ("2001:10::1", false),
        ("2001:20::1", true),
        ("2001:30::1", true),
        ("2001:db8::1", false),
        ("2002:5db8:d822::1", false),
        ("2620:4f:8000::1", true),
        ("3fff::1", false),
        ("5f00::1", false),
        ("fc00::1", false),
        ("fd12::1", false),
        ("fe80::1", false),
        ("fec0::1", false),
        ("ff02::1", false),
        // IPv4 inside IPv6: judged by the IPv4 rules
        ("::ffff:127.0.0.1", false),
        ("::ffff:10.0.0.1", false),
        ("::ffff:8.8.8.8", true),
        ("::ffff:0:127.0.0.1", false),
        ("::ffff:0:8.8.8.8", true),
        ("::127.0.0.1", false),
        ("::8.8.8.8", true),
        ("64:ff9b::a00:1", false),
        ("64:ff9b::808:808", true),
        // Outside the registry
        ("4000::1", false),
        ("::2:0:0:1", false),
        ("93.184.216.34", true),
        ("8.8.8.8", true),
        ("2606:4700::1111", true),
        ("2a00:1450:4001::1", true),
    ];

    #[test]
    fn every_registry_entry_decides_as_iana_marks_it() {
        for (ip, allowed) in ROWS {
            assert_eq!(!forbidden(ip), *allowed, "{ip}");
        }
    }

    #[test]
    fn the_tables_are_well_formed() {
        for e in V4 {
            assert!(e.len <= 32);
            let host = u32::from(e.net) & (u32::MAX.checked_shr(u32::from(e.len)).unwrap_or(0));
            assert_eq!(host, 0, "{}/{} has host bits", e.net, e.len);
        }
        for e in V6 {
            let host = u128::from(e.net) & (u128::MAX.checked_shr(u32::from(e.len)).unwrap_or(0));
            assert_eq!(host, 0, "{}/{} has host bits", e.net, e.len);
        }
    }

    proptest::proptest! {
        /// An IPv4 address written inside IPv6 is judged as that IPv4 address.
        #[test]
        fn ipv4_inside_ipv6_is_judged_as_ipv4(raw: u32) {
            let v4 = Ipv4Addr::from(raw);
            let expected = is_forbidden(IpAddr::V4(v4));
            let [a, b] = [(raw >> 16) as u16, raw as u16];
            for v6 in [
                v4.to_ipv6_mapped(),
                Ipv6Addr::new(0, 0, 0, 0, 0xffff, 0, a, b),
                Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, a, b),
            ] {
                proptest::prop_assert_eq!(is_forbidden(IpAddr::V6(v6)), expected, "{}", v6);
            }
        }

        /// Nothing outside 2000::/3 is dialled, except IPv4 carried inside IPv6.
        #[test]
        fn ipv6_outside_global_unicast_is_refused(raw: u128) {
            let ip = Ipv6Addr::from(raw);
            if embedded_v4(ip).is_none() && raw >> 125 != 1 {
                proptest::prop_assert!(is_forbidden(IpAddr::V6(ip)), "{}", ip);
            }
        }
    }
}
