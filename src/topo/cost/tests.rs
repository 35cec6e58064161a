//! The model's predictions have the shape expected of them, and its traffic figures match
//! the bytes the schedules really send.

use super::*;
use crate::algo::{Action, Kind, Plan};
use crate::topo::model::MapBy;

fn model(t: &Topology, aware: bool) -> CostModel {
    let m = Mapping::new(t, aware);
    CostModel {
        links: t.links,
        shape: Shape::of(t, &m),
        chunk_bytes: 128 << 10,
    }
}

#[test]
fn shapes_of_aware_and_plain_mappings() {
    let t = Topology::uniform(2, 2, 1, 1, MapBy::Node, Links::DEFAULT);
    let a = Shape::of(&t, &Mapping::new(&t, true));
    assert_eq!(
        (a.hosts, a.leaders, a.ring_share, a.crossings),
        (2, 2, 1, 2)
    );
    assert!(a.grouped);
    let p = Shape::of(&t, &Mapping::new(&t, false));
    assert_eq!((p.hosts, p.ring_share, p.crossings), (2, 2, 4));
    assert!(!p.grouped);
    assert_eq!((a.tree_depth, a.tree_load), (1, 2));
    // Recursive doubling: the first round joins ring neighbours (same host) when mapping
    // is on; in rank order it is the round that crosses.
    assert_eq!((a.rd_rounds, a.rd_share), ((1, 1), 2));
    assert_eq!((p.rd_rounds, p.rd_share), ((1, 1), 2));
    let one = Topology::uniform(1, 4, 1, 1, MapBy::Slot, Links::DEFAULT);
    assert_eq!(Shape::of(&one, &Mapping::new(&one, true)).rd_rounds, (2, 0));
    let r = Topology::uniform(4, 8, 8, 2, MapBy::Slot, Links::DEFAULT);
    assert_eq!(Shape::of(&r, &Mapping::new(&r, true)).rails, 8);
    let big = Topology::uniform(64, 1, 1, 1, MapBy::Slot, Links::DEFAULT);
    let b = Shape::of(&big, &Mapping::new(&big, true));
    assert_eq!((b.tree_depth, b.tree_load), (6, 4));
}

#[test]
fn mapping_halves_the_ring_time_of_ranks_dealt_round_robin() {
    // Two hosts of two ranks, 1 Gb/s between them: the emulated measurement's setting.
    let links = Links {
        inter_gbps: 1.0,
        ..Links::DEFAULT
    };
    let t = Topology::uniform(2, 2, 1, 1, MapBy::Node, links);
    let s = 16.0 * (1 << 20) as f64;
    let on = model(&t, true).allreduce(Algo::Ring, s);
    let off = model(&t, false).allreduce(Algo::Ring, s);
    assert!((off / on - 2.0).abs() < 0.05, "{off} / {on}");
    // The hierarchical allreduce sends S over the network instead of 1.5 S.
    let hier = model(&t, true).allreduce(Algo::Hier, s);
    assert!(on / hier > 1.4 && on / hier < 1.6, "{on} / {hier}");
    // So do the trees: S up and S down, on opposite directions of the link.
    let tree = model(&t, true).allreduce(Algo::HierTree, s);
    assert!(on / tree > 1.35 && on / tree < 1.6, "{on} / {tree}");
    let binomial = model(&t, true).allreduce(Algo::Tree, s);
    assert!(
        on / binomial > 1.35 && on / binomial < 1.6,
        "{on} / {binomial}"
    );
    // With mapping off the hierarchical algorithms are the flat ring.
    assert_eq!(model(&t, false).allreduce(Algo::Hier, s), off);
}

#[test]
fn trees_win_small_rings_win_large_on_many_hosts() {
    let t = Topology::uniform(
        128,
        8,
        8,
        2,
        MapBy::Slot,
        Links {
            intra_gbps: 800.0,
            intra_latency_us: 2.0,
            inter_gbps: 100.0,
            inter_latency_us: 5.0,
        },
    );
    let m = model(&t, true);
    let small = 8.0;
    let large = (1u64 << 32) as f64;
    // Tiny messages: recursive doubling's log2(N) exchanges; then the trees.
    assert_eq!(m.best(&ALLREDUCE_ALGOS, small).0, Algo::RecursiveDoubling);
    assert_eq!(m.best(&ALLREDUCE_ALGOS, 1e6).0, Algo::HierTree);
    assert!(m.allreduce(Algo::HierTree, small) < m.allreduce(Algo::Ring, small) / 10.0);
    assert!(m.allreduce(Algo::Ring, large) < m.allreduce(Algo::Tree, large));
    // One ring uses one rail; the leader groups use all eight.
    assert!(m.allreduce(Algo::Hier, large) < m.allreduce(Algo::Ring, large) / 4.0);
    let x = m
        .crossover(Algo::Tree, Algo::Ring, 1e12)
        .expect("a crossover");
    assert!(
        x > 1e4 && x < 1e9,
        "ring beats the binomial tree from {x} bytes"
    );
    assert!(m.allreduce(Algo::Chain, 1.0).is_infinite());
}

#[test]
fn single_host_and_single_rank() {
    let m = CostModel {
        links: Links::DEFAULT,
        shape: Shape::single_host(1),
        chunk_bytes: 1 << 17,
    };
    assert_eq!(m.allreduce(Algo::Ring, 1e6), 0.0);
    let m = CostModel {
        shape: Shape::single_host(4),
        ..m
    };
    // On one host the hierarchical allreduce is the ring.
    let (r, h) = (m.allreduce(Algo::Ring, 1e8), m.allreduce(Algo::Hier, 1e8));
    assert!((r / h - 1.0).abs() < 0.35, "{r} {h}");
}

#[test]
fn fitting_recovers_alpha_and_beta() {
    let (alpha, beta, n) = (20e-6, 1.25e8, 4usize);
    let steps = 2.0 * (n as f64 - 1.0);
    let pts: Vec<(f64, f64)> = [1e3, 1e5, 1e6, 1.6e7]
        .iter()
        .map(|&s| (s, steps * alpha + steps / n as f64 * s / beta))
        .collect();
    let (a, b) = fit_ring(&pts, n).unwrap();
    assert!((a / alpha - 1.0).abs() < 1e-6 && (b / beta - 1.0).abs() < 1e-6);
    assert!(fit_ring(&pts[..1], n).is_none());
    assert!(fit_ring(&[(1.0, 2.0), (2.0, 1.0)], n).is_none());
}

/// Bytes each schedule of `topo`'s ranks sends to another host, summed, and the most any
/// one host sends out.
fn network_bytes(t: &Topology, algo: Algo, count: usize, aware: bool) -> (usize, usize) {
    let m = Mapping::new(t, aware);
    let mut total = 0;
    let mut out = vec![0usize; t.hosts.len()];
    for r in 0..t.size() {
        let plan = Plan {
            kind: Kind::AllReduce,
            algo,
            rank: r,
            size: t.size(),
            count,
            elem: 4,
            root: 0,
            avg: false,
            chunk_bytes: 1 << 20,
            nchannels: 2,
            ring: m.ring.clone(),
            hosts: m.hosts.clone(),
            blocks: Default::default(),
        };
        for st in plan.build().steps {
            if let Action::Send { peer, src } = st.action {
                if t.ranks[peer].host != t.ranks[r].host {
                    total += src.len;
                    out[t.ranks[r].host] += src.len;
                }
            }
        }
    }
    (total, out.into_iter().max().unwrap_or(0))
}

#[test]
fn traffic_figures_match_the_schedules() {
    for (hosts, per, map_by) in [
        (3, 4, MapBy::Node),
        (2, 2, MapBy::Node),
        (4, 1, MapBy::Slot),
    ] {
        let t = Topology::uniform(hosts, per, 1, 1, map_by, Links::DEFAULT);
        let n = t.size();
        let count = 2 * 3 * 4 * 5 * 7 * 8; // divisible by every part count used
        let s = (count * 4) as f64;
        for aware in [true, false] {
            let shape = Shape::of(&t, &Mapping::new(&t, aware));
            let want = ring_traffic(&shape, s, 2.0 * (n as f64 - 1.0) / n as f64);
            let (got, egress) = network_bytes(&t, Algo::Ring, count, aware);
            assert_eq!(got as f64, want.network, "ring {hosts}x{per} aware {aware}");
            assert_eq!(
                egress as f64, want.nic_egress,
                "ring {hosts}x{per} aware {aware}"
            );
        }
        let shape = Shape::of(&t, &Mapping::new(&t, true));
        let want = hier_traffic(&shape, s);
        for algo in [Algo::Hier, Algo::HierTree] {
            let (got, egress) = network_bytes(&t, algo, count, true);
            assert_eq!(got as f64, want.network, "{algo:?} {hosts}x{per}");
            if algo == Algo::Hier {
                assert_eq!(egress as f64, want.nic_egress, "{algo:?} {hosts}x{per}");
            }
        }
    }
}
