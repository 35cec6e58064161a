//! Device discovery: the one device of the tcp backend is the network interface that owns
//! the configured bind address.
//!
//! Owns reading `getifaddrs` and `/sys/class/net`; knows nothing of sockets.

use std::ffi::CStr;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::conn::MAX_REQUESTS;
use super::os_error;
use crate::error::{Error, Result};
use crate::transport::{Capabilities, DeviceProps};

/// Link speed assumed when the interface does not report one (loopback, many virtual NICs).
const DEFAULT_SPEED_MBPS: u64 = 10_000;

/// One-way latency of a small message. A typical figure for loopback and a switched LAN
/// through the kernel stack (a few microseconds of syscalls on each side plus the wire);
/// used only to rank algorithms, never as a timeout.
const LATENCY_US: f64 = 10.0;

/// Properties of the interface that owns `ip`; an address no interface owns is an error.
pub(super) fn discover(ip: IpAddr) -> Result<DeviceProps> {
    let name = interface_of(ip)?.ok_or_else(|| {
        Error::invalid_argument(format!(
            "tcp: no network interface of this host has the address {ip}"
        ))
    })?;
    let sys = format!("/sys/class/net/{name}");
    let speed_mbps = read_trimmed(&format!("{sys}/speed"))
        .and_then(|s| s.parse::<i64>().ok())
        .and_then(|v| u64::try_from(v).ok())
        .filter(|&v| v > 0)
        .unwrap_or(DEFAULT_SPEED_MBPS);
    let numa_node = read_trimmed(&format!("{sys}/device/numa_node"))
        .and_then(|s| s.parse::<i32>().ok())
        .filter(|&n| n >= 0);
    let pci_path = std::fs::canonicalize(format!("{sys}/device"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned());
    Ok(DeviceProps {
        name,
        speed_mbps,
        latency_us: LATENCY_US,
        pci_path,
        numa_node,
        gid_index: None,
        port: None,
        caps: Capabilities::messages_only(MAX_REQUESTS),
    })
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

/// The name of the interface that has address `ip`, if any.
fn interface_of(ip: IpAddr) -> Result<Option<String>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head that we free below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(os_error(
            "tcp: listing network interfaces (getifaddrs)",
            io::Error::last_os_error(),
        ));
    }
    let mut found = None;
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: non-null ifa_addr points to a sockaddr whose family says its real type.
        let addr = unsafe { sockaddr_ip(ifa.ifa_addr) };
        if addr == Some(ip) {
            // SAFETY: ifa_name is a NUL-terminated string owned by the list.
            let name = unsafe { CStr::from_ptr(ifa.ifa_name) };
            found = Some(name.to_string_lossy().into_owned());
            break;
        }
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(found)
}

/// # Safety
/// `sa` must point to a valid sockaddr of the size its family implies.
unsafe fn sockaddr_ip(sa: *const libc::sockaddr) -> Option<IpAddr> {
    // SAFETY: the caller guarantees `sa` is valid; the family selects the concrete type.
    unsafe {
        match (*sa).sa_family as libc::c_int {
            libc::AF_INET => {
                let sin = &*(sa as *const libc::sockaddr_in);
                Some(IpAddr::V4(Ipv4Addr::from(
                    sin.sin_addr.s_addr.to_ne_bytes(),
                )))
            }
            libc::AF_INET6 => {
                let sin6 = &*(sa as *const libc::sockaddr_in6);
                Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
            }
            _ => None,
        }
    }
}
