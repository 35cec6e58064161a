//! Algorithm choice by an alpha-beta cost model: time = hops x latency + bytes / bandwidth,
//! with the per-message latency and the link bandwidth taken from the device's properties.
//! When the ranks span several hosts, allreduce is chosen by the topology's model
//! (`topo::cost`: the same figures `oxccl-topo` prints), which knows the hosts, the ring's
//! network crossings and the hierarchical algorithms, and the other collectives use the
//! network's figures.

use crate::algo::{Algo, Kind};
use crate::topo::CostModel;
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
    /// The topology's model, when the ranks span several hosts.
    pub model: Option<CostModel>,
}

impl Tuning {
    /// From a device's properties; `forced` is honoured where the algorithm supports the call.
    pub fn new(dev: &DeviceProps, forced: Option<Algo>) -> Tuning {
        Tuning {
            alpha: (dev.latency_us + 2.0) * 1e-6,
            beta: (dev.speed_mbps.max(1) as f64) * 1e6 / 8.0,
            forced,
            model: None,
        }
    }

    /// Uses `model` when it spans several hosts: allreduce by the model, the other
    /// collectives with the network's latency and bandwidth.
    pub fn with_model(mut self, model: CostModel) -> Tuning {
        if model.shape.hosts > 1 {
            self.alpha = self.alpha.max(model.links.inter_latency_us * 1e-6);
            self.beta = self.beta.min(model.links.inter_gbps * 1e9 / 8.0);
            self.model = Some(model);
        }
        self
    }
}

/// Bytes per second of a local copy, for the algorithms that pack and unpack.
const COPY_BYTES_PER_S: f64 = 8e9;

fn log2_ceil(n: usize) -> f64 {
    (usize::BITS - (n.max(1) - 1).leading_zeros()) as f64
}

/// The algorithm for `kind` on `size` ranks moving `bytes` (the user buffer size; for
/// allgather, gather, scatter and alltoall the total over all ranks' blocks).
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
        Kind::AllReduce if t.model.is_some() => {
            let m = t.model.as_ref().map_or(&[][..], |m| {
                if m.shape.grouped {
                    &[
                        Algo::Ring,
                        Algo::RecursiveDoubling,
                        Algo::Hier,
                        Algo::HierTree,
                    ][..]
                } else {
                    &[Algo::Ring, Algo::RecursiveDoubling][..]
                }
            });
            t.model
                .as_ref()
                .map_or(Algo::Ring, |model| model.best(m, b).0)
        }
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
        Kind::AllToAll => {
            // Pairwise: N-1 messages of one block each. Bruck: log2(N) messages of about
            // half the data each, plus two local copies of everything (rotations, packing).
            let pairwise = (n - 1.0) * a + (n - 1.0) / n * b / bw;
            let bruck = lg * (a + b / (2.0 * bw)) + b / COPY_BYTES_PER_S * 3.0;
            if bruck < pairwise {
                Algo::RecursiveDoubling
            } else {
                Algo::Pairwise
            }
        }
        Kind::Gather | Kind::Scatter => {
            // The root moves (N-1)/N of the data either way; the tree saves messages at
            // the root but forwards subtrees through scratch (log2 N copies of half the data).
            let linear = (n - 1.0) * a + (n - 1.0) / n * b / bw;
            let tree = lg * a + (n - 1.0) / n * b / bw + lg * b / (2.0 * COPY_BYTES_PER_S);
            if tree < linear {
                Algo::Tree
            } else {
                Algo::Pairwise
            }
        }
        Kind::AllToAllV => Algo::Pairwise,
        // The direct reduce-scatter moves what the ring moves in one step of latency
        // instead of N-1; measured at 4 ranks over tcp (oxccl-perf, OXCCL_ALGO): 64 KiB
        // 0.95 against 0.53 GB/s busbw, 1 MiB 2.3 against 1.2. Past a few ranks, or across
        // hosts, the ring's neighbour traffic (and its topology-aware order) wins.
        Kind::ReduceScatter | Kind::ReduceScatterV if size <= 8 && t.model.is_none() => {
            Algo::Pairwise
        }
        Kind::ReduceScatter | Kind::AllGatherV | Kind::ReduceScatterV => Algo::Ring,
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
    fn on_several_hosts_the_topology_model_chooses() {
        use crate::topo::{Links, MapBy, Mapping, Shape, Topology};
        let links = Links {
            inter_gbps: 1.0,
            ..Links::DEFAULT
        };
        let topo = Topology::uniform(2, 2, 1, 1, MapBy::Node, links);
        let model = |aware| CostModel {
            links,
            shape: Shape::of(&topo, &Mapping::new(&topo, aware)),
            chunk_bytes: 1 << 17,
        };
        let t = Tuning::new(&dev(), None).with_model(model(true));
        assert_eq!(choose(&t, Kind::AllReduce, 4, 16 << 20), Algo::Hier);
        assert_eq!(choose(&t, Kind::AllReduce, 4, 8), Algo::RecursiveDoubling);
        assert!(t.beta <= 1e9 / 8.0);
        // In rank order the ring crosses the network four times; recursive doubling's one
        // crossing round moves less (as measured on the emulated hosts, docs/topology.md).
        let off = Tuning::new(&dev(), None).with_model(model(false));
        assert_eq!(
            choose(&off, Kind::AllReduce, 4, 16 << 20),
            Algo::RecursiveDoubling
        );
        // One host: the model is not used.
        let one = Topology::uniform(1, 4, 1, 1, MapBy::Slot, links);
        let single = CostModel {
            links,
            shape: Shape::of(&one, &Mapping::new(&one, true)),
            chunk_bytes: 1 << 17,
        };
        assert!(Tuning::new(&dev(), None).with_model(single).model.is_none());
        let forced = Tuning::new(&dev(), Some(Algo::HierTree)).with_model(model(true));
        assert_eq!(choose(&forced, Kind::AllReduce, 4, 8), Algo::HierTree);
        assert_eq!(choose(&forced, Kind::Broadcast, 4, 8), Algo::Tree);
    }

    #[test]
    fn a_forced_algorithm_applies_only_where_it_exists() {
        let t = Tuning::new(&dev(), Some(Algo::Tree));
        assert_eq!(choose(&t, Kind::AllReduce, 4, 64 << 20), Algo::Tree);
        assert_eq!(choose(&t, Kind::AllGather, 4, 64), Algo::RecursiveDoubling);
    }
}
