//! The host's network interfaces and their addresses (`getifaddrs`).

use std::ffi::CStr;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::error::{Error, Result};

/// One address of one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Address {
    /// The interface's name (`lo`, `eth0`).
    pub name: String,
    /// The address.
    pub ip: IpAddr,
    /// Whether the interface is up.
    pub up: bool,
}

/// Every IPv4 and IPv6 address of every interface, in the order the system lists them.
pub(crate) fn addresses() -> io::Result<Vec<Address>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: `head` is a valid out-pointer; on success the list is freed by `List` below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let list = List(head);
    let mut out = Vec::new();
    let mut cur = list.0;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, alive until `list` drops.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: `ifa_addr` is non-null and points to a sockaddr of the family it names.
        let Some(ip) = (unsafe { sockaddr_ip(ifa.ifa_addr) }) else {
            continue;
        };
        // SAFETY: `ifa_name` is a non-null NUL-terminated string owned by the list.
        let name = unsafe { CStr::from_ptr(ifa.ifa_name) };
        out.push(Address {
            name: name.to_string_lossy().into_owned(),
            ip,
            up: ifa.ifa_flags & (libc::IFF_UP as libc::c_uint) != 0,
        });
    }
    Ok(out)
}

/// Every address of every interface that is up: `(interface name, ip)`, in the order the
/// system lists them. IPv6 link-local addresses are left out (they need a scope to be
/// reached, and other hosts' scopes differ).
pub fn list_interfaces() -> Result<Vec<(String, IpAddr)>> {
    let all = addresses().map_err(|e| Error::io("listing network interfaces (getifaddrs)", e))?;
    Ok(all
        .into_iter()
        .filter(|a| a.up && !is_link_local(&a.ip))
        .map(|a| (a.name, a.ip))
        .collect())
}

/// Whether `ip` is an IPv6 link-local address (reachable only with a scope, which other
/// hosts' differ in).
pub(crate) fn is_link_local(ip: &IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80)
}

/// Frees the getifaddrs list, on every path.
struct List(*mut libc::ifaddrs);

impl Drop for List {
    fn drop(&mut self) {
        // SAFETY: the pointer came from a successful getifaddrs and is freed only here.
        unsafe { libc::freeifaddrs(self.0) }
    }
}

/// The IP in `sa`, for IPv4 and IPv6.
///
/// # Safety
/// `sa` must point to a valid socket address whose size fits its `sa_family`.
unsafe fn sockaddr_ip(sa: *const libc::sockaddr) -> Option<IpAddr> {
    // SAFETY: the caller guarantees `sa` is valid; reads are unaligned-safe.
    let family = unsafe { std::ptr::addr_of!((*sa).sa_family).read_unaligned() };
    match libc::c_int::from(family) {
        libc::AF_INET => {
            // SAFETY: the family says this is a sockaddr_in.
            let sin = unsafe { sa.cast::<libc::sockaddr_in>().read_unaligned() };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(IpAddr::V4(ip))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this is a sockaddr_in6.
            let sin6 = unsafe { sa.cast::<libc::sockaddr_in6>().read_unaligned() };
            Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_listed_and_up() {
        let all = addresses().unwrap();
        let lo = all.iter().find(|a| a.ip == IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert!(lo.is_some_and(|a| a.up && !a.name.is_empty()), "{all:?}");
        assert!(is_link_local(&"fe80::1".parse().unwrap()));
        assert!(!is_link_local(&"fd00::1".parse().unwrap()));
    }
}
