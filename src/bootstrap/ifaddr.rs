//! Network interface discovery and the choice of the root's listen address.
//!
//! Owns: listing interfaces (`getifaddrs`) and NCCL's `NCCL_SOCKET_IFNAME` syntax, read here
//! from `OXCCL_SOCKET_IFNAME`: comma-separated name prefixes; a leading `^` excludes the
//! listed names instead; a leading `=` (after any `^`) matches exact names instead of
//! prefixes. Examples: `eth,ib`, `^docker,lo`, `=eth0`, `^=eth1`.

use std::net::{IpAddr, Ipv4Addr};

pub use crate::sys::ifaddr::list_interfaces;

use crate::error::{Error, Result};

/// Interfaces skipped when no spec is given, as NCCL skips them: container bridges do not
/// reach other hosts.
const DEFAULT_SKIP: &[&str] = &["docker", "virbr"];

/// Chooses the address to listen on for the root: `OXCCL_SOCKET_IFNAME` with NCCL's syntax
/// (comma-separated prefixes; leading `^` excludes; leading `=` means exact names), else the first
/// up, non-loopback IPv4 interface, else 127.0.0.1. Returns (interface name, ip).
///
/// `spec` is the variable's value (`None` or blank: the default rule, which also skips
/// `docker*` and `virbr*` bridges). Among the interfaces a spec matches, the first IPv4
/// address wins, else the first IPv6 one.
pub fn pick_interface(spec: Option<&str>) -> Result<(String, IpAddr)> {
    pick_from(spec, &list_interfaces()?)
}

/// [`pick_interface`] over a given list, so the rules can be tested on any machine.
fn pick_from(spec: Option<&str>, all: &[(String, IpAddr)]) -> Result<(String, IpAddr)> {
    let Some(spec) = spec.map(str::trim).filter(|s| !s.is_empty()) else {
        let skip = Filter {
            exclude: true,
            exact: false,
            names: DEFAULT_SKIP.iter().map(|s| s.to_string()).collect(),
        };
        let found = all
            .iter()
            .find(|(n, ip)| ip.is_ipv4() && !ip.is_loopback() && skip.matches(n));
        return Ok(found.cloned().unwrap_or_else(|| {
            let lo = all.iter().find(|(_, ip)| *ip == Ipv4Addr::LOCALHOST);
            (
                lo.map_or("lo".to_string(), |(n, _)| n.clone()),
                Ipv4Addr::LOCALHOST.into(),
            )
        }));
    };
    let filter = Filter::parse(spec)?;
    let matching = || all.iter().filter(|(n, _)| filter.matches(n));
    matching()
        .find(|(_, ip)| ip.is_ipv4())
        .or_else(|| matching().next())
        .cloned()
        .ok_or_else(|| {
            Error::invalid_argument(format!(
                "OXCCL_SOCKET_IFNAME='{spec}' matches no interface that is up with an address; \
                 interfaces: {}",
                describe(all)
            ))
        })
}

/// A parsed interface spec.
struct Filter {
    exclude: bool,
    exact: bool,
    names: Vec<String>,
}

impl Filter {
    fn parse(spec: &str) -> Result<Filter> {
        let (exclude, rest) = match spec.strip_prefix('^') {
            Some(r) => (true, r),
            None => (false, spec),
        };
        let (exact, rest) = match rest.strip_prefix('=') {
            Some(r) => (true, r),
            None => (false, rest),
        };
        let names: Vec<String> = rest
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        if names.is_empty() {
            return Err(Error::invalid_argument(format!(
                "OXCCL_SOCKET_IFNAME='{spec}' names no interface (expected e.g. 'eth0', '^lo', '=ib0')"
            )));
        }
        Ok(Filter {
            exclude,
            exact,
            names,
        })
    }

    fn matches(&self, name: &str) -> bool {
        let hit = self.names.iter().any(|p| {
            if self.exact {
                name == p
            } else {
                name.starts_with(p.as_str())
            }
        });
        hit != self.exclude
    }
}

/// "lo (127.0.0.1, ::1), eth0 (192.0.2.2)" for error messages.
fn describe(all: &[(String, IpAddr)]) -> String {
    let mut groups: Vec<(&str, Vec<String>)> = Vec::new();
    for (name, ip) in all {
        match groups.iter_mut().find(|(n, _)| n == name) {
            Some((_, ips)) => ips.push(ip.to_string()),
            None => groups.push((name, vec![ip.to_string()])),
        }
    }
    if groups.is_empty() {
        return "none".to_string();
    }
    groups
        .iter()
        .map(|(n, ips)| format!("{n} ({})", ips.join(", ")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The address a rank advertises for data connections, given the local address of its
/// connection to the store: that address, unless `OXCCL_SOCKET_IFNAME` names an interface
/// and the store was not reached over loopback (then every peer is on this host anyway).
pub fn advertised_ip(via_root: IpAddr) -> Result<IpAddr> {
    let spec = crate::config::vars::text("OXCCL_SOCKET_IFNAME")
        .ok()
        .flatten();
    advertised_ip_for(via_root, spec.as_deref())
}

/// [`advertised_ip`] with the interface spec given.
pub(super) fn advertised_ip_for(via_root: IpAddr, spec: Option<&str>) -> Result<IpAddr> {
    match spec.map(str::trim).filter(|s| !s.is_empty()) {
        Some(spec) if !via_root.is_loopback() => Ok(pick_interface(Some(spec))?.1),
        _ => Ok(via_root),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<(String, IpAddr)> {
        [
            ("lo", "127.0.0.1"),
            ("lo", "::1"),
            ("docker0", "172.17.0.1"),
            ("eth0", "fd00::2"),
            ("eth0", "192.0.2.2"),
            ("eth10", "198.51.100.7"),
            ("ib0", "fd00::9"),
        ]
        .iter()
        .map(|(n, ip)| (n.to_string(), ip.parse().unwrap()))
        .collect()
    }

    fn pick(spec: Option<&str>) -> Result<(String, IpAddr)> {
        pick_from(spec, &sample())
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn default_skips_loopback_and_bridges_and_prefers_ipv4() {
        assert_eq!(pick(None).unwrap(), ("eth0".into(), ip("192.0.2.2")));
        assert_eq!(pick(Some("  ")).unwrap(), ("eth0".into(), ip("192.0.2.2")));
        let only_lo = vec![
            ("lo".to_string(), ip("127.0.0.1")),
            ("ib0".into(), ip("fd00::9")),
        ];
        assert_eq!(
            pick_from(None, &only_lo).unwrap(),
            ("lo".into(), ip("127.0.0.1"))
        );
        assert_eq!(
            pick_from(None, &[]).unwrap(),
            ("lo".into(), ip("127.0.0.1"))
        );
    }

    #[test]
    fn prefix_exclude_and_exact_specs() {
        assert_eq!(pick(Some("lo")).unwrap(), ("lo".into(), ip("127.0.0.1")));
        assert_eq!(pick(Some("eth")).unwrap(), ("eth0".into(), ip("192.0.2.2")));
        assert_eq!(
            pick(Some("=eth10")).unwrap(),
            ("eth10".into(), ip("198.51.100.7"))
        );
        assert_eq!(pick(Some("ib,lo")).unwrap(), ("lo".into(), ip("127.0.0.1")));
        assert_eq!(pick(Some("ib")).unwrap(), ("ib0".into(), ip("fd00::9")));
        // `^lo` leaves docker0 as the first IPv4 match.
        assert_eq!(
            pick(Some("^lo")).unwrap(),
            ("docker0".into(), ip("172.17.0.1"))
        );
        assert_eq!(
            pick(Some("^lo,docker")).unwrap(),
            ("eth0".into(), ip("192.0.2.2"))
        );
        assert_eq!(
            pick(Some("^=lo,docker0,eth0")).unwrap(),
            ("eth10".into(), ip("198.51.100.7"))
        );
        // Exact means exact: `=eth` matches neither eth0 nor eth10.
        let e = pick(Some("=eth")).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::InvalidArgument);
    }

    #[test]
    fn no_match_names_the_spec_and_lists_interfaces() {
        let e = pick(Some("nosuch0")).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::InvalidArgument);
        let m = e.message();
        assert!(m.contains("'nosuch0'"), "{m}");
        assert!(m.contains("lo (127.0.0.1, ::1)"), "{m}");
        assert!(m.contains("eth0 (fd00::2, 192.0.2.2)"), "{m}");
        for bad in ["^", "=", "^=", ",,"] {
            let e = pick(Some(bad)).unwrap_err();
            assert!(e.message().contains("names no interface"), "{bad}: {e}");
        }
    }

    #[test]
    fn real_interfaces_include_loopback() {
        let all = list_interfaces().unwrap();
        assert!(
            all.iter().any(|(_, ip)| *ip == Ipv4Addr::LOCALHOST),
            "{all:?}"
        );
        assert!(all.iter().all(|(n, _)| !n.is_empty()));
        let (name, lo) = pick_interface(Some("lo")).unwrap();
        assert_eq!(
            (name.as_str(), lo),
            ("lo", IpAddr::from(Ipv4Addr::LOCALHOST))
        );
        assert_eq!(pick_interface(Some("=lo")).unwrap().1, lo);
        match pick_interface(Some("^lo")) {
            Ok((n, _)) => assert_ne!(n, "lo"),
            Err(e) => assert!(e.message().contains("'^lo'"), "{e}"),
        }
        let e = pick_interface(Some("nosuch-if")).unwrap_err();
        assert!(
            e.message().contains("'nosuch-if'") && e.message().contains("lo ("),
            "{e}"
        );
        // The default always yields an address: one of the machine's, or 127.0.0.1.
        let (_, ip) = pick_interface(None).unwrap();
        assert!(ip == lo || all.iter().any(|(_, a)| *a == ip), "{ip}");
    }
}
