//! Algorithm choice: `OXCCL_ALGO`, else the cost model (`topo::cost`, which owns every
//! prediction). The per-message latency and the link bandwidth come from the device's
//! properties; when the ranks span several hosts, allreduce is chosen by the topology's
//! model (the same figures `oxccl-topo` prints), which knows the hosts, the ring's network
//! crossings and the hierarchical algorithms, and the other collectives use the network's
//! figures.

use crate::algo::{Algo, Kind};
use crate::topo::cost::flat;
use crate::topo::CostModel;
use crate::transport::DeviceProps;

/// The sender's share of a message's cost: a send's syscall is most of the software path
/// (2-rank 8-byte broadcasts over loopback tcp, per rank: the root's call, one send, 5.8 us;
/// the receiver's 7.8).
const SEND_SHARE: f64 = 2.0 / 3.0;

/// What the choice needs to know beyond the call.
#[derive(Debug, Clone)]
pub(crate) struct Tuning {
    /// Per-message cost in seconds (device latency plus software overhead).
    pub alpha: f64,
    /// Seconds for each further send one rank makes back to back: the sender's share of a
    /// message's cost, which sharing CPUs does not change.
    pub send: f64,
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
        let alpha = (dev.latency_us + 2.0) * 1e-6;
        Tuning {
            alpha,
            send: alpha * SEND_SHARE,
            beta: (dev.speed_mbps.max(1) as f64) * 1e6 / 8.0,
            forced,
            model: None,
        }
    }

    /// With `ranks_per_cpu` ranks of this host on each CPU, a message also waits for the
    /// receiver to be scheduled: the per-message cost grows in proportion, which favours
    /// the algorithms with fewer messages (8 ranks on 2 CPUs over tcp, 64 KiB alltoall,
    /// alternating launches: Bruck's 137-173 us against pairwise's 154-227).
    pub fn sharing_cpus(mut self, ranks_per_cpu: f64) -> Tuning {
        self.alpha *= ranks_per_cpu.max(1.0);
        self
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

/// The algorithm for `kind` on `size` ranks moving `bytes` (the user buffer size; for
/// allgather, gather, scatter and alltoall the total over all ranks' blocks): `OXCCL_ALGO`
/// where it applies, else the cost model's prediction (`topo::cost`).
pub(crate) fn choose(t: &Tuning, kind: Kind, size: usize, bytes: usize) -> Algo {
    if let Some(a) = t.forced {
        if a.supports(kind) {
            return a;
        }
    }
    match (&t.model, kind) {
        (Some(model), Kind::AllReduce) => model.best_allreduce(bytes as f64),
        (model, _) => {
            let cost = flat::Costs {
                alpha: t.alpha,
                send: t.send,
                beta: t.beta,
            };
            flat::choose(kind, size, bytes, cost, model.is_some())
        }
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
    fn ranks_sharing_cpus_favour_fewer_messages() {
        // 8 ranks, 64 KiB alltoall: pairwise (7 messages) with a CPU each, Bruck's 3
        // messages with 4 ranks on each CPU; 1 MiB stays pairwise either way.
        let own = Tuning::new(&dev(), None);
        let shared = Tuning::new(&dev(), None).sharing_cpus(4.0);
        assert_eq!(choose(&own, Kind::AllToAll, 8, 64 << 10), Algo::Pairwise);
        assert_eq!(
            choose(&shared, Kind::AllToAll, 8, 64 << 10),
            Algo::RecursiveDoubling
        );
        assert_eq!(choose(&shared, Kind::AllToAll, 8, 1 << 20), Algo::Pairwise);
        // Fewer ranks than CPUs change nothing.
        assert_eq!(Tuning::new(&dev(), None).sharing_cpus(0.5).alpha, own.alpha);
    }

    #[test]
    fn ranks_sharing_cpus_broadcast_small_messages_linearly() {
        // A hop costs a rescheduling when ranks share CPUs; the root's sends do not.
        let own = Tuning::new(&dev(), None);
        assert_eq!(choose(&own, Kind::Broadcast, 4, 8), Algo::Tree);
        assert_eq!(choose(&own, Kind::Broadcast, 8, 8), Algo::Tree);
        for (n, per_cpu) in [(4, 2.0), (8, 4.0)] {
            let shared = Tuning::new(&dev(), None).sharing_cpus(per_cpu);
            assert_eq!(choose(&shared, Kind::Broadcast, n, 8), Algo::Pairwise);
            assert_eq!(choose(&shared, Kind::Broadcast, n, 1024), Algo::Pairwise);
            assert_eq!(choose(&shared, Kind::Broadcast, n, 64 << 20), Algo::Chain);
        }
        // The linear reduce does not exist: reduce keeps its tree.
        let shared = Tuning::new(&dev(), None).sharing_cpus(2.0);
        assert_eq!(choose(&shared, Kind::Reduce, 4, 8), Algo::Tree);
    }

    #[test]
    fn small_reduce_scatters_halve_on_powers_of_two() {
        let t = Tuning::new(&dev(), None);
        for n in [4, 8, 16] {
            assert_eq!(
                choose(&t, Kind::ReduceScatter, n, 1024),
                Algo::RecursiveDoubling
            );
        }
        // Two ranks: one exchange either way, without halving's copy. No halving on 6
        // ranks; large inputs keep the direct exchange or the ring.
        assert_eq!(choose(&t, Kind::ReduceScatter, 2, 1024), Algo::Pairwise);
        assert_eq!(choose(&t, Kind::ReduceScatter, 6, 1024), Algo::Pairwise);
        assert_eq!(choose(&t, Kind::ReduceScatter, 8, 64 << 20), Algo::Pairwise);
        let shared = Tuning::new(&dev(), None).sharing_cpus(4.0);
        assert_eq!(
            choose(&shared, Kind::ReduceScatter, 8, 64 << 10),
            Algo::RecursiveDoubling
        );
        assert_eq!(
            choose(&shared, Kind::ReduceScatter, 8, 1 << 20),
            Algo::Pairwise
        );
        assert_eq!(choose(&t, Kind::ReduceScatter, 16, 64 << 20), Algo::Ring);
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
