//! The mapping: everything the schedules need from the topology, computed once per
//! communicator and identical on every rank (it is a pure function of what all ranks
//! published).
//!
//! Owns: the ring order, the host groups in ring order (each host's ranks in intra-host
//! order, which is what the hierarchical schedules take), the leader groups of the
//! hierarchical allreduce (local index k of every host: one leader per rail), the double
//! binary trees over hosts, and the plain rank-order mapping used when mapping is off.

use super::model::Topology;
use super::ring::{self, RingStats};
use super::tree::{double_btree, BinTree};

/// The ring, host groups and trees of one communicator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    /// Whether the topology was used (`OXCCL_TOPO_AWARE`, default on).
    pub aware: bool,
    /// Ring order: `ring[i]` is the rank at position i.
    pub ring: Vec<usize>,
    /// Hosts in ring order, each with its ranks in intra-host order (NUMA node, rail, rank).
    /// With mapping off: one group holding every rank in rank order.
    pub hosts: Vec<Vec<usize>>,
    /// Double binary trees over `hosts` (node i is `hosts[i]`).
    pub trees: [BinTree; 2],
}

impl Mapping {
    /// The mapping of `topo`; with `aware` false, plain rank order and a single group.
    pub fn new(topo: &Topology, aware: bool) -> Mapping {
        let n = topo.size();
        let (ring, hosts) = if aware && n > 0 {
            let by_host = topo.ranks_by_host();
            let hosts: Vec<Vec<usize>> =
                by_host.iter().map(|r| ring::host_order(topo, r)).collect();
            (ring::ring(topo), hosts)
        } else {
            let all: Vec<usize> = (0..n).collect();
            (all.clone(), if n > 0 { vec![all] } else { Vec::new() })
        };
        let trees = double_btree(hosts.len());
        Mapping {
            aware,
            ring,
            hosts,
            trees,
        }
    }

    /// Number of leader groups of the hierarchical allreduce: the fewest ranks on a host.
    pub fn nleaders(&self) -> usize {
        self.hosts.iter().map(Vec::len).min().unwrap_or(0)
    }

    /// Leader group k: local rank k of every host, in host order (k below [`nleaders`]).
    ///
    /// [`nleaders`]: Mapping::nleaders
    pub fn leaders(&self, k: usize) -> Vec<usize> {
        self.hosts
            .iter()
            .filter_map(|h| h.get(k).copied())
            .collect()
    }

    /// How the ring sits on `topo`.
    pub fn ring_stats(&self, topo: &Topology) -> RingStats {
        ring::stats(topo, &self.ring)
    }
}

#[cfg(test)]
mod tests {
    use super::super::model::{Links, MapBy};
    use super::*;

    #[test]
    fn aware_and_plain_mappings() {
        let t = Topology::uniform(3, 4, 4, 1, MapBy::Node, Links::DEFAULT);
        let m = Mapping::new(&t, true);
        assert_eq!(
            m.hosts,
            vec![vec![0, 3, 6, 9], vec![1, 4, 7, 10], vec![2, 5, 8, 11]]
        );
        assert_eq!(m.nleaders(), 4);
        assert_eq!(m.leaders(1), vec![3, 4, 5]);
        for k in 0..4 {
            let rails: Vec<_> = m.leaders(k).iter().map(|&r| t.ranks[r].rail).collect();
            assert!(rails.iter().all(|&x| x == Some(k as u32)), "{rails:?}");
        }
        assert_eq!(m.trees[0].len(), 3);
        let s = m.ring_stats(&t);
        assert_eq!(s.crossings, 3);

        let p = Mapping::new(&t, false);
        assert_eq!(p.ring, (0..12).collect::<Vec<_>>());
        assert_eq!(p.hosts.len(), 1);
        assert_eq!(p.ring_stats(&t).crossings, 12);
    }

    #[test]
    fn uneven_hosts_have_as_many_leader_groups_as_the_smallest_host() {
        let t = Topology::with_sizes(&[3, 1, 2], 1, 1, MapBy::Slot, Links::DEFAULT);
        let m = Mapping::new(&t, true);
        assert_eq!(m.nleaders(), 1);
        assert_eq!(m.leaders(0), vec![0, 3, 4]);
    }
}
