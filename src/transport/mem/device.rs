//! The one device of the mem backend and its properties.
//!
//! Owns: what `devices()` reports and which device indices the other calls accept.

use super::fabric::MemFaults;
use crate::error::{Error, Result};
use crate::transport::{Capabilities, DeviceProps};

/// The device's name, as `devices()` reports it.
pub(super) const DEVICE_NAME: &str = "mem";

/// The single in-process device: nominally 100 Gb/s with 1 µs latency, so that the
/// engine's cost model treats it like a fast network.
pub(super) fn devices(faults: &MemFaults) -> Vec<DeviceProps> {
    vec![DeviceProps {
        name: DEVICE_NAME.to_string(),
        speed_mbps: 100_000,
        latency_us: 1.0,
        pci_path: None,
        numa_node: None,
        gid_index: None,
        port: None,
        caps: Capabilities::messages_only(faults.effective_max_in_flight()),
    }]
}

/// Accepts device 0 only; `what` names the call for the message.
pub(super) fn check_dev(dev: usize, what: &str) -> Result<()> {
    if dev == 0 {
        Ok(())
    } else {
        Err(Error::invalid_argument(format!(
            "{what}: mem has one device (0), not device {dev}"
        )))
    }
}
