//! The shm backend's one device: this host's memory.

use crate::transport::requests::MAX_REQUESTS;
use crate::transport::{Capabilities, DeviceProps};

/// What the cost model assumes: one copy in and one out at memcpy speed (about 10 GB/s
/// end to end on the machines measured), and a cache line's trip between cores.
const SPEED_MBPS: u64 = 80_000;
const LATENCY_US: f64 = 0.3;

/// The device.
pub(super) fn device() -> DeviceProps {
    DeviceProps {
        name: "shm".to_string(),
        speed_mbps: SPEED_MBPS,
        latency_us: LATENCY_US,
        pci_path: None,
        numa_node: None,
        gid_index: None,
        port: None,
        caps: Capabilities::messages_only(MAX_REQUESTS),
    }
}
