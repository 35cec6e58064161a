//! Device discovery: the one device of the tcp backend is the network interface that owns
//! the configured bind address.
//!
//! Owns reading `getifaddrs` and `/sys/class/net`; knows nothing of sockets.

use std::net::IpAddr;
use std::path::Path;

use super::conn::MAX_REQUESTS;
use super::os_error;
use crate::error::{Error, Result};
use crate::sys::host::read;
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
    let sys = Path::new("/sys/class/net").join(&name);
    let speed_mbps = read(&sys, "speed")
        .and_then(|s| s.parse::<i64>().ok())
        .and_then(|v| u64::try_from(v).ok())
        .filter(|&v| v > 0)
        .unwrap_or(DEFAULT_SPEED_MBPS);
    let numa_node = read(&sys, "device/numa_node")
        .and_then(|s| s.parse::<i32>().ok())
        .filter(|&n| n >= 0);
    let pci_path = std::fs::canonicalize(sys.join("device"))
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

/// The name of the interface that has address `ip`, if any.
fn interface_of(ip: IpAddr) -> Result<Option<String>> {
    let all = crate::sys::ifaddr::addresses()
        .map_err(|e| os_error("tcp: listing network interfaces (getifaddrs)", e))?;
    Ok(all.into_iter().find(|a| a.ip == ip).map(|a| a.name))
}
