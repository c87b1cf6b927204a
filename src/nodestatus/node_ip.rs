//! The node's IP when `--node-ip` is unset, in upstream's order (the `NodeAddress` setter):
//!
//! 1. the hostname, when it is an IP literal;
//! 2. the hostname resolved (`/etc/hosts`, then DNS, through the C library's resolver): the
//!    first IPv4 address that is valid for a node (assigned to this host, not loopback,
//!    link-local, multicast or unspecified), else the first valid IPv6 one;
//! 3. the address of the default-route interface (upstream `ChooseHostInterface`), read
//!    from files only: IPv4 from `/proc/net/route` (default route → interface → its
//!    subnets) matched against this host's addresses in `/proc/net/fib_trie`; when none
//!    lies in those subnets (a `/32` with an on-link gateway), the first non-loopback local
//!    IPv4 address. Then IPv6 from `/proc/net/ipv6_route` and `/proc/net/if_inet6` (a
//!    global-scope address of the default interface).
//!
//! The kubelet calls [`detect_node_ip`] on the thread building node status inputs; step 2
//! may block on DNS for the resolver's timeout.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, ToSocketAddrs};
use std::path::Path;

/// Runs the three steps above against the host's `/` at `root`.
pub fn detect_node_ip(root: &Path, hostname: &str) -> Option<IpAddr> {
    if let Ok(ip) = hostname.parse::<IpAddr>() {
        return Some(ip);
    }
    let resolved: Vec<IpAddr> = match (hostname, 0u16).to_socket_addrs() {
        Ok(addrs) => addrs.map(|a| a.ip()).collect(),
        Err(e) => {
            log::debug!("Resolving hostname {hostname:?}: {e}");
            Vec::new()
        }
    };
    let local = local_addresses(root);
    choose_node_ip(hostname, &resolved, &local, || default_route_ip(root))
}

/// The choice of [`detect_node_ip`] on given facts: `resolved` are the hostname's addresses,
/// `local` this host's, `default_route` step 3 (only called when needed).
pub fn choose_node_ip(
    hostname: &str,
    resolved: &[IpAddr],
    local: &[IpAddr],
    default_route: impl FnOnce() -> Option<IpAddr>,
) -> Option<IpAddr> {
    if let Ok(ip) = hostname.parse::<IpAddr>() {
        return Some(ip);
    }
    let valid = || resolved.iter().filter(|ip| is_valid_node_ip(**ip, local));
    valid()
        .find(|ip| ip.is_ipv4())
        .or_else(|| valid().next())
        .copied()
        .or_else(default_route)
}

/// Upstream `validateNodeIP`: usable as a node address and assigned to this host.
pub fn is_valid_node_ip(ip: IpAddr, local: &[IpAddr]) -> bool {
    let special = match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
    };
    !(ip.is_loopback() || ip.is_multicast() || ip.is_unspecified() || special)
        && local.contains(&ip)
}

/// This host's addresses: the `LOCAL` /32 entries of `/proc/net/fib_trie` and every
/// address of `/proc/net/if_inet6`.
pub fn local_addresses(root: &Path) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = read(root, "proc/net/fib_trie")
        .map(|t| parse_fib_trie_local(&t))
        .unwrap_or_default()
        .into_iter()
        .map(IpAddr::V4)
        .collect();
    out.extend(
        read(root, "proc/net/if_inet6")
            .map(|t| parse_if_inet6(&t))
            .unwrap_or_default()
            .into_iter()
            .map(|a| IpAddr::V6(a.addr)),
    );
    out.dedup();
    out
}

/// Step 3: the default-route interface's address, IPv4 first.
pub fn default_route_ip(root: &Path) -> Option<IpAddr> {
    let v4 = read(root, "proc/net/route").and_then(|routes| {
        let local = read(root, "proc/net/fib_trie")
            .map(|t| parse_fib_trie_local(&t))
            .unwrap_or_default();
        default_route_ipv4(&parse_route_v4(&routes), &local)
    });
    v4.map(IpAddr::V4).or_else(|| {
        let iface = parse_ipv6_default_iface(&read(root, "proc/net/ipv6_route")?)?;
        parse_if_inet6(&read(root, "proc/net/if_inet6")?)
            .into_iter()
            .find(|a| a.iface == iface && a.scope == 0 && !a.addr.is_loopback())
            .map(|a| IpAddr::V6(a.addr))
    })
}

/// One line of `/proc/net/route`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RouteV4 {
    iface: String,
    destination: Ipv4Addr,
    mask: Ipv4Addr,
    metric: u32,
}

fn parse_route_v4(text: &str) -> Vec<RouteV4> {
    let hex = |s: &str| u32::from_str_radix(s, 16).ok();
    // The kernel prints the in-memory (network order) word as hex of a little-endian u32.
    let addr = |s: &str| hex(s).map(|v| Ipv4Addr::from(v.to_le_bytes()));
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let flags = hex(f.get(3)?)?;
            const RTF_UP: u32 = 0x1;
            (flags & RTF_UP != 0).then_some(())?;
            Some(RouteV4 {
                iface: f.first()?.to_string(),
                destination: addr(f.get(1)?)?,
                metric: f.get(6)?.parse().ok()?,
                mask: addr(f.get(7)?)?,
            })
        })
        .collect()
}

/// The default route with the lowest metric, and the local address on its interface.
fn default_route_ipv4(routes: &[RouteV4], local: &[Ipv4Addr]) -> Option<Ipv4Addr> {
    let default = routes
        .iter()
        .filter(|r| r.destination.is_unspecified() && r.mask.is_unspecified())
        .min_by_key(|r| r.metric)?;
    let in_subnet = |ip: &Ipv4Addr| {
        routes.iter().any(|r| {
            r.iface == default.iface
                && !r.mask.is_unspecified()
                && u32::from(*ip) & u32::from(r.mask) == u32::from(r.destination)
        })
    };
    let usable = |ip: &&Ipv4Addr| !ip.is_loopback() && !ip.is_link_local();
    local
        .iter()
        .filter(usable)
        .find(|ip| in_subnet(ip))
        .or_else(|| local.iter().find(usable))
        .copied()
}

/// Addresses listed as `/32 host LOCAL` in `/proc/net/fib_trie` (each `|-- a.b.c.d` line is
/// followed by its route kinds).
fn parse_fib_trie_local(text: &str) -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    let mut current: Option<Ipv4Addr> = None;
    for line in text.lines() {
        let line = line.trim();
        if let Some(addr) = line.strip_prefix("|-- ") {
            current = addr.trim().parse().ok();
        } else if line.starts_with("/32 host LOCAL") {
            if let Some(ip) = current {
                if !out.contains(&ip) {
                    out.push(ip);
                }
            }
        }
    }
    out
}

/// One line of `/proc/net/if_inet6`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Inet6Addr {
    addr: Ipv6Addr,
    scope: u8,
    iface: String,
}

fn parse_if_inet6(text: &str) -> Vec<Inet6Addr> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            Some(Inet6Addr {
                addr: parse_ipv6_hex(f.first()?)?,
                scope: u8::from_str_radix(f.get(3)?, 16).ok()?,
                iface: f.get(5)?.to_string(),
            })
        })
        .collect()
}

/// The interface of the first `::/0` route of `/proc/net/ipv6_route` not on `lo` (the
/// kernel keeps unreachable defaults there).
fn parse_ipv6_default_iface(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let default = parse_ipv6_hex(f.first()?)?.is_unspecified() && *f.get(1)? == "00";
        let iface = f.get(9)?;
        (default && *iface != "lo").then(|| iface.to_string())
    })
}

fn parse_ipv6_hex(s: &str) -> Option<Ipv6Addr> {
    (s.len() == 32)
        .then(|| u128::from_str_radix(s, 16).ok())
        .flatten()
        .map(Ipv6Addr::from)
}

fn read(root: &Path, rel: &str) -> Option<String> {
    std::fs::read_to_string(root.join(rel)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nodestatus::machine::tests::Fixture;

    /// This machine's files when the tests were written: eth0 192.0.2.2/24 via 192.0.2.1.
    const ROUTE: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
    const FIB_TRIE: &str = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n\
     +-- 127.0.0.0/8 2 0 2\n        +-- 127.0.0.0/31 1 0 0\n           |-- 127.0.0.0\n              /8 host LOCAL\n\
           |-- 127.0.0.1\n              /32 host LOCAL\n        |-- 127.255.255.255\n           /32 link BROADCAST\n\
     +-- 192.0.2.0/24 2 0 2\n        +-- 192.0.2.0/30 2 0 2\n           |-- 192.0.2.0\n              /24 link UNICAST\n\
           |-- 192.0.2.2\n              /32 host LOCAL\n        |-- 192.0.2.255\n           /32 link BROADCAST\n\
Local:\n  +-- 0.0.0.0/0 3 0 5\n           |-- 192.0.2.2\n              /32 host LOCAL\n";
    const IF_INET6: &str = "00000000000000000000000000000001 01 80 10 80       lo\n\
fd000000000000000000000000000002 04 40 00 82     eth0\n\
fe8000000000000000fc00fffe000001 04 40 20 80     eth0\n";
    const IPV6_ROUTE: &str = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo\n\
00000000000000000000000000000000 00 00000000000000000000000000000000 00 fd000000000000000000000000000001 00000400 00000001 00000000 00000003     eth0\n";

    fn v4(s: &str) -> IpAddr {
        IpAddr::V4(s.parse().unwrap())
    }

    #[test]
    fn parses_proc_net_files() {
        assert_eq!(
            parse_fib_trie_local(FIB_TRIE),
            vec![Ipv4Addr::new(127, 0, 0, 1), Ipv4Addr::new(192, 0, 2, 2)]
        );
        let routes = parse_route_v4(ROUTE);
        assert_eq!(routes.len(), 2);
        assert_eq!(routes[0].iface, "eth0");
        assert!(routes[0].destination.is_unspecified());
        assert_eq!(routes[1].destination, Ipv4Addr::new(192, 0, 2, 0));
        assert_eq!(routes[1].mask, Ipv4Addr::new(255, 255, 255, 0));
        let v6 = parse_if_inet6(IF_INET6);
        assert_eq!(v6.len(), 3);
        assert_eq!(v6[1].addr, "fd00::2".parse::<Ipv6Addr>().unwrap());
        assert_eq!(v6[1].scope, 0);
        assert_eq!(
            parse_ipv6_default_iface(IPV6_ROUTE).as_deref(),
            Some("eth0")
        );
    }

    #[test]
    fn default_route_interface_address() {
        let f = Fixture::new("route");
        f.write("proc/net/route", ROUTE)
            .write("proc/net/fib_trie", FIB_TRIE);
        assert_eq!(default_route_ip(&f.0), Some(v4("192.0.2.2")));
        // A /32 address with an on-link gateway: no subnet route matches it.
        let routes = parse_route_v4(
            "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n\
ens4\t00000000\t0100800A\t0003\t0\t0\t100\t00000000\n\
ens4\t0100800A\t00000000\t0005\t0\t0\t100\tFFFFFFFF\n",
        );
        let local = [Ipv4Addr::LOCALHOST, Ipv4Addr::new(10, 128, 0, 5)];
        assert_eq!(
            default_route_ipv4(&routes, &local),
            Some(Ipv4Addr::new(10, 128, 0, 5))
        );
        // IPv6 only.
        let g = Fixture::new("route6");
        g.write("proc/net/ipv6_route", IPV6_ROUTE)
            .write("proc/net/if_inet6", IF_INET6);
        assert_eq!(default_route_ip(&g.0), Some("fd00::2".parse().unwrap()));
        assert_eq!(default_route_ip(&Fixture::new("route-none").0), None);
    }

    #[test]
    fn choice_order() {
        let local = [v4("127.0.0.1"), v4("192.0.2.2"), "fd00::2".parse().unwrap()];
        let route = || Some(v4("192.0.2.99"));
        let cases: &[(&str, &[IpAddr], Option<IpAddr>)] = &[
            ("10.1.2.3", &[], Some(v4("10.1.2.3"))),
            ("rust-node", &[v4("192.0.2.2")], Some(v4("192.0.2.2"))),
            // IPv4 preferred over an earlier IPv6.
            (
                "rust-node",
                &["fd00::2".parse().unwrap(), v4("192.0.2.2")],
                Some(v4("192.0.2.2")),
            ),
            (
                "rust-node",
                &["fd00::2".parse().unwrap()],
                Some("fd00::2".parse().unwrap()),
            ),
            // Loopback (a Debian /etc/hosts 127.0.1.1) and foreign addresses are skipped.
            (
                "rust-node",
                &[v4("127.0.1.1"), v4("203.0.113.9")],
                Some(v4("192.0.2.99")),
            ),
            ("rust-node", &[], Some(v4("192.0.2.99"))),
        ];
        for (host, resolved, want) in cases {
            assert_eq!(
                choose_node_ip(host, resolved, &local, route),
                *want,
                "{host} {resolved:?}"
            );
        }
        assert_eq!(choose_node_ip("x", &[], &local, || None), None);
    }

    #[test]
    fn local_addresses_from_files() {
        let f = Fixture::new("local");
        f.write("proc/net/fib_trie", FIB_TRIE)
            .write("proc/net/if_inet6", IF_INET6);
        let local = local_addresses(&f.0);
        assert!(local.contains(&v4("192.0.2.2")));
        assert!(local.contains(&"fd00::2".parse().unwrap()));
        assert!(is_valid_node_ip(v4("192.0.2.2"), &local));
        assert!(!is_valid_node_ip(v4("127.0.0.1"), &local));
        assert!(!is_valid_node_ip(
            "fe80::fc:ff:fe00:1".parse().unwrap(),
            &[IpAddr::V6("fe80::fc:ff:fe00:1".parse().unwrap())]
        ));
    }
}
