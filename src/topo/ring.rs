//! The ring: hosts one after another, each entered and left once, ranks inside a host
//! grouped by NUMA node, and the crossings between hosts kept on one rail where possible.
//!
//! Owns: the intra-host order, the ring, and the statistics that measure a ring against
//! the topology (network crossings against their minimum, the busiest host's egress, rail
//! changes on crossings, NUMA changes inside hosts).

use super::model::Topology;

/// A host's ranks ordered by (NUMA node, rail, rank): consecutive ranks share a NUMA node,
/// and local index k has the k-th rail on hosts that are alike (the leaders of rail k).
pub fn host_order(topo: &Topology, ranks: &[usize]) -> Vec<usize> {
    let mut v = ranks.to_vec();
    v.sort_by_key(|&r| {
        let p = &topo.ranks[r];
        (p.numa.unwrap_or(0), p.rail.unwrap_or(0), r)
    });
    v
}

/// The topology-aware ring. Hosts follow in the order of their first rank; inside host h
/// the ranks follow [`host_order`], forwards on even h and backwards on odd h, so that the
/// rank leaving a host and the rank entering the next sit on the same rail (both the
/// highest, or both the lowest) on hosts that are alike. The network is crossed once per
/// host, the minimum; with an odd number of hosts the crossing that closes the ring changes
/// rail.
pub fn ring(topo: &Topology) -> Vec<usize> {
    let by_host = topo.ranks_by_host();
    let mut out = Vec::with_capacity(topo.size());
    for (h, ranks) in by_host.iter().enumerate() {
        let mut o = host_order(topo, ranks);
        if h % 2 == 1 {
            o.reverse();
        }
        out.extend(o);
    }
    out
}

/// How a ring sits on a topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingStats {
    /// Ring edges between different hosts.
    pub crossings: usize,
    /// The fewest crossings any ring has: the host count when there are several hosts.
    pub min_crossings: usize,
    /// Most ring edges leaving one host: the number of ring messages that share a host's
    /// network at once (1 for a host-grouped ring).
    pub max_egress: usize,
    /// Crossings whose two ends use different rails.
    pub rail_changes: usize,
    /// Edges inside a host whose two ends are on different NUMA nodes.
    pub numa_changes: usize,
}

/// Measures `ring` (a permutation of the ranks) against `topo`.
pub fn stats(topo: &Topology, ring: &[usize]) -> RingStats {
    let n = ring.len();
    let mut egress = vec![0usize; topo.hosts.len()];
    let mut s = RingStats {
        crossings: 0,
        min_crossings: if topo.hosts.len() > 1 {
            topo.hosts.len()
        } else {
            0
        },
        max_egress: 0,
        rail_changes: 0,
        numa_changes: 0,
    };
    for i in 0..n {
        let (a, b) = (&topo.ranks[ring[i]], &topo.ranks[ring[(i + 1) % n]]);
        if a.host != b.host {
            s.crossings += 1;
            egress[a.host] += 1;
            if a.rail.unwrap_or(0) != b.rail.unwrap_or(0) {
                s.rail_changes += 1;
            }
        } else if n > 1 && a.numa.unwrap_or(0) != b.numa.unwrap_or(0) {
            s.numa_changes += 1;
        }
    }
    s.max_egress = egress.into_iter().max().unwrap_or(0);
    s
}

#[cfg(test)]
mod tests {
    use super::super::model::{Links, MapBy, Topology};
    use super::*;

    fn is_permutation(ring: &[usize], n: usize) -> bool {
        let mut seen = vec![false; n];
        ring.len() == n
            && ring
                .iter()
                .all(|&r| r < n && !std::mem::replace(&mut seen[r], true))
    }

    fn check(t: &Topology, max_rail_changes: usize) -> RingStats {
        let r = ring(t);
        assert!(is_permutation(&r, t.size()));
        let s = stats(t, &r);
        assert_eq!(s.crossings, s.min_crossings, "{s:?}");
        assert!(s.max_egress <= 1, "{s:?}");
        assert!(s.rail_changes <= max_rail_changes, "{s:?}");
        s
    }

    #[test]
    fn two_hosts_of_four_placed_by_node() {
        let t = Topology::uniform(2, 4, 1, 1, MapBy::Node, Links::DEFAULT);
        assert_eq!(ring(&t), vec![0, 2, 4, 6, 7, 5, 3, 1]);
        let s = check(&t, 0);
        assert_eq!(s.crossings, 2);
        // Plain rank order crosses at every edge.
        let plain: Vec<usize> = (0..8).collect();
        let p = stats(&t, &plain);
        assert_eq!((p.crossings, p.max_egress), (8, 4));
    }

    #[test]
    fn four_hosts_of_eight_with_rails_and_numa() {
        let t = Topology::uniform(4, 8, 8, 2, MapBy::Node, Links::DEFAULT);
        let s = check(&t, 0);
        assert_eq!(s.crossings, 4);
        assert_eq!(s.numa_changes, 4, "one NUMA change per host");
        // Odd host counts change rail once, where the ring closes.
        let t3 = Topology::uniform(3, 8, 8, 2, MapBy::Slot, Links::DEFAULT);
        assert_eq!(check(&t3, 1).rail_changes, 1);
    }

    #[test]
    fn uneven_hosts_and_one_rank_per_host() {
        let t = Topology::with_sizes(&[5, 1, 3, 2, 7], 2, 2, MapBy::Node, Links::DEFAULT);
        assert_eq!(check(&t, t.hosts.len()).crossings, 5);
        let one = Topology::uniform(9, 1, 1, 1, MapBy::Slot, Links::DEFAULT);
        assert_eq!(check(&one, 0).crossings, 9);
        let single = Topology::uniform(1, 6, 2, 2, MapBy::Slot, Links::DEFAULT);
        let s = check(&single, 0);
        assert_eq!((s.crossings, s.numa_changes), (0, 2));
        let empty = Topology::default();
        assert!(ring(&empty).is_empty());
    }

    #[test]
    fn a_hundred_thousand_ranks_in_well_under_a_second() {
        let t0 = std::time::Instant::now();
        let t = Topology::uniform(12_500, 8, 8, 2, MapBy::Node, Links::DEFAULT);
        let s = check(&t, 1);
        assert_eq!(s.crossings, 12_500);
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(5),
            "{:?}",
            t0.elapsed()
        );
    }
}
