//! Algorithm choice by an alpha-beta cost model: time = hops x latency + bytes / bandwidth,
//! with the per-message latency and the link bandwidth taken from the device's properties.

use crate::algo::{Algo, Kind};
use crate::transport::DeviceProps;

/// What the choice needs to know beyond the call.
#[derive(Debug, Clone)]
pub(crate) struct Tuning {
    /// Per-message cost in seconds (device latency plus software overhead).
    pub alpha: f64,
    /// Bytes per second of one link.
    pub beta: f64,
    /// Forced algorithm, if any (`OXCCL_ALGO`).
    pub forced: Option<Algo>,
}

impl Tuning {
    /// From a device's properties; `forced` is honoured where the algorithm supports the call.
    pub fn new(dev: &DeviceProps, forced: Option<Algo>) -> Tuning {
        Tuning {
            alpha: (dev.latency_us + 2.0) * 1e-6,
            beta: (dev.speed_mbps.max(1) as f64) * 1e6 / 8.0,
            forced,
        }
    }
}

fn log2_ceil(n: usize) -> f64 {
    (usize::BITS - (n.max(1) - 1).leading_zeros()) as f64
}

/// The algorithm for `kind` on `size` ranks moving `bytes` (the user buffer size; for
/// allgather the gathered total).
pub(crate) fn choose(t: &Tuning, kind: Kind, size: usize, bytes: usize) -> Algo {
    if let Some(a) = t.forced {
        if a.supports(kind) {
            return a;
        }
    }
    let n = size as f64;
    let b = bytes as f64;
    let (a, bw) = (t.alpha, t.beta);
    let lg = log2_ceil(size);
    match kind {
        Kind::AllReduce => {
            let ring = 2.0 * (n - 1.0) * a + 2.0 * (n - 1.0) / n * b / bw;
            let extra = if size.is_power_of_two() { 0.0 } else { 2.0 };
            let rd = (lg + extra) * (a + b / bw);
            if rd <= ring {
                Algo::RecursiveDoubling
            } else {
                Algo::Ring
            }
        }
        Kind::AllGather => {
            let ring = (n - 1.0) * a + (n - 1.0) / n * b / bw;
            let bruck = lg * a + (n - 1.0) / n * b / bw * 1.25;
            if bruck <= ring {
                Algo::RecursiveDoubling
            } else {
                Algo::Ring
            }
        }
        Kind::Broadcast | Kind::Reduce => {
            let tree = lg * (a + b / bw);
            let chain = (n - 1.0) * a + b / bw * 1.1;
            if tree <= chain {
                Algo::Tree
            } else {
                Algo::Chain
            }
        }
        Kind::ReduceScatter => Algo::Ring,
        Kind::Barrier => Algo::RecursiveDoubling,
        Kind::Send | Kind::Recv => Algo::Direct,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::Capabilities;

    fn dev() -> DeviceProps {
        DeviceProps {
            name: "lo".into(),
            speed_mbps: 10_000,
            latency_us: 10.0,
            pci_path: None,
            numa_node: None,
            gid_index: None,
            port: None,
            caps: Capabilities::default(),
        }
    }

    #[test]
    fn small_messages_take_log_step_algorithms_and_large_ones_rings() {
        let t = Tuning::new(&dev(), None);
        assert_eq!(choose(&t, Kind::AllReduce, 8, 8), Algo::RecursiveDoubling);
        assert_eq!(choose(&t, Kind::AllReduce, 8, 64 << 20), Algo::Ring);
        assert_eq!(choose(&t, Kind::AllGather, 8, 64), Algo::RecursiveDoubling);
        assert_eq!(choose(&t, Kind::AllGather, 8, 64 << 20), Algo::Ring);
        assert_eq!(choose(&t, Kind::Broadcast, 8, 8), Algo::Tree);
        assert_eq!(choose(&t, Kind::Broadcast, 8, 64 << 20), Algo::Chain);
    }

    #[test]
    fn a_forced_algorithm_applies_only_where_it_exists() {
        let t = Tuning::new(&dev(), Some(Algo::Tree));
        assert_eq!(choose(&t, Kind::AllReduce, 4, 64 << 20), Algo::Tree);
        assert_eq!(choose(&t, Kind::AllGather, 4, 64), Algo::RecursiveDoubling);
    }
}
