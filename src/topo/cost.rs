//! The alpha-beta cost model over a topology: predicted allreduce time per algorithm, the
//! traffic each collective puts on the busiest link, and the fit of measured times.
//!
//! Owns: every prediction of the algorithm choice (`coll::select`, which only applies
//! `OXCCL_ALGO` on top) and of `oxccl-topo`: the topology-aware allreduce formulas here
//! (documented in docs/topology.md) and the one-link formulas of every collective in
//! `flat.rs`. A message of `b` bytes costs `alpha + b / beta`;
//! `alpha` and `beta` are [`Links`]' intra-host or inter-host figures. Pipelined phases
//! overlap, so their bandwidth terms do not add: the slowest link sets the pace, while
//! latencies add step after step.

use super::mapping::Mapping;
use super::model::{Links, Topology};
use crate::algo::Algo;

/// The figures of a topology the model needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Ranks.
    pub n: usize,
    /// Hosts (as the mapping groups them: 1 with mapping off).
    pub hosts: usize,
    /// Ranks on the largest host.
    pub max_local: usize,
    /// Ranks on the smallest host: the leader groups of the hierarchical allreduce.
    pub leaders: usize,
    /// NICs a host's leaders spread over (the fewest on any host; at least 1).
    pub rails: usize,
    /// Most ring messages that leave one host over one rail at once (1 for a host-grouped
    /// ring; up to the ranks per host for plain rank order with ranks dealt round-robin).
    pub ring_share: usize,
    /// Ring edges between hosts.
    pub crossings: usize,
    /// Whether the schedules follow the hosts (mapping on): trees and recursive doubling
    /// then stay inside hosts for their first levels, and the hierarchical allreduce exists.
    pub grouped: bool,
    /// Depth of the deeper of the double binary trees over hosts.
    pub tree_depth: usize,
    /// Most half-segments one host sends in the double binary trees: over both trees, one
    /// up to its parent (if any) and one down to each child. 4 in large trees (inner in
    /// one tree with two children, a leaf in the other), 2 with two hosts.
    pub tree_load: usize,
    /// Rounds of recursive doubling (over ring positions) that stay inside hosts, and
    /// rounds in which some pair crosses the network.
    pub rd_rounds: (usize, usize),
    /// Most ranks of one host that send across the network over one rail in the same
    /// round of recursive doubling.
    pub rd_share: usize,
}

impl Shape {
    /// All ranks on one host.
    pub fn single_host(n: usize) -> Shape {
        Shape {
            n,
            hosts: 1,
            max_local: n,
            leaders: n,
            rails: 1,
            ring_share: 0,
            crossings: 0,
            grouped: true,
            tree_depth: 0,
            tree_load: 0,
            rd_rounds: (lg(n) as usize, 0),
            rd_share: 0,
        }
    }

    /// The shape of `topo` under `map`. Host counts are the real ones even when mapping is
    /// off; then the ring's crossings are those of plain rank order and the hierarchical
    /// schedules degenerate to the flat ring.
    pub fn of(topo: &Topology, map: &Mapping) -> Shape {
        let n = topo.size();
        let by_host = topo.ranks_by_host();
        // Ring messages leaving each (host, rail).
        let mut out: std::collections::HashMap<(usize, u32), usize> = Default::default();
        let mut crossings = 0;
        for i in 0..map.ring.len() {
            let a = &topo.ranks[map.ring[i]];
            let b = &topo.ranks[map.ring[(i + 1) % n]];
            if a.host != b.host {
                crossings += 1;
                *out.entry((a.host, a.rail.unwrap_or(0))).or_default() += 1;
            }
        }
        let leaders = by_host.iter().map(Vec::len).min().unwrap_or(n);
        let (rd_rounds, rd_share) = rd_rounds(topo, &map.ring);
        let rails = if map.aware {
            map.hosts
                .iter()
                .map(|h| {
                    let mut r: Vec<u32> = h
                        .iter()
                        .take(leaders)
                        .map(|&x| topo.ranks[x].rail.unwrap_or(0))
                        .collect();
                    r.sort_unstable();
                    r.dedup();
                    r.len()
                })
                .min()
                .unwrap_or(1)
        } else {
            1
        };
        Shape {
            n,
            hosts: by_host.len().max(1),
            max_local: by_host.iter().map(Vec::len).max().unwrap_or(n),
            leaders,
            rails: rails.max(1),
            ring_share: out.values().copied().max().unwrap_or(0),
            crossings,
            grouped: map.aware,
            tree_depth: map.trees.iter().map(|t| t.depth()).max().unwrap_or(0),
            tree_load: (0..map.trees[0].len())
                .map(|i| {
                    map.trees
                        .iter()
                        .map(|t| usize::from(t.parent[i].is_some()) + t.children[i].len())
                        .sum::<usize>()
                })
                .max()
                .unwrap_or(0),
            rd_rounds,
            rd_share,
        }
    }
}

/// The rounds of recursive doubling over `ring` positions among the largest power of two
/// of them: (rounds inside hosts, rounds crossing), and the most ranks of one (host, rail)
/// that send across in one round.
fn rd_rounds(topo: &Topology, ring: &[usize]) -> ((usize, usize), usize) {
    let n = ring.len();
    let pw = if n == 0 {
        0
    } else {
        1usize << (usize::BITS - 1 - n.leading_zeros())
    };
    let (mut local, mut remote, mut share) = (0, 0, 0);
    let mut count: std::collections::HashMap<(usize, u32), usize> = Default::default();
    let mut mask = 1;
    while mask < pw {
        count.clear();
        for p in 0..pw {
            let (a, b) = (&topo.ranks[ring[p]], &topo.ranks[ring[p ^ mask]]);
            if a.host != b.host {
                *count.entry((a.host, a.rail.unwrap_or(0))).or_default() += 1;
            }
        }
        match count.values().max() {
            Some(&m) => {
                remote += 1;
                share = share.max(m);
            }
            None => local += 1,
        }
        mask <<= 1;
    }
    ((local, remote), share)
}

/// Link figures in seconds and bytes per second.
#[derive(Debug, Clone, Copy)]
struct Ab {
    ai: f64,
    bi: f64,
    ae: f64,
    be: f64,
}

impl Ab {
    fn new(l: &Links) -> Ab {
        Ab {
            ai: l.intra_latency_us * 1e-6,
            bi: l.intra_gbps * 1e9 / 8.0,
            ae: l.inter_latency_us * 1e-6,
            be: l.inter_gbps * 1e9 / 8.0,
        }
    }
}

fn lg(n: usize) -> f64 {
    if n <= 1 {
        0.0
    } else {
        (usize::BITS - (n - 1).leading_zeros()) as f64
    }
}

/// The model: link figures, the shape, and the pipelining chunk.
#[derive(Debug, Clone, Copy)]
pub struct CostModel {
    /// Link parameters.
    pub links: Links,
    /// The communicator's shape.
    pub shape: Shape,
    /// Pipelining chunk in bytes (trees pay one chunk per level to fill the pipeline).
    pub chunk_bytes: usize,
}

/// Allreduce algorithms the model predicts, in the order tools print them.
pub const ALLREDUCE_ALGOS: [Algo; 5] = [
    Algo::Ring,
    Algo::Tree,
    Algo::RecursiveDoubling,
    Algo::Hier,
    Algo::HierTree,
];

impl CostModel {
    /// Predicted seconds of an allreduce of `bytes` with `algo` (`f64::INFINITY` for an
    /// algorithm that does not do allreduce).
    pub fn allreduce(&self, algo: Algo, bytes: f64) -> f64 {
        let s = self.shape;
        let ab = Ab::new(&self.links);
        let (n, h) = (s.n.max(1) as f64, s.hosts.max(1));
        if s.n <= 1 {
            return 0.0;
        }
        let multi = h > 1;
        let chunk = (self.chunk_bytes as f64).min(bytes);
        // Log-step levels inside hosts and between them: with mapping off, positions are
        // rank numbers and any level may cross the network.
        let (li, le) = if !multi {
            (lg(s.n), 0.0)
        } else if s.grouped {
            (lg(s.max_local), lg(h))
        } else {
            (0.0, lg(s.n))
        };
        if !s.grouped && matches!(algo, Algo::Hier | Algo::HierTree) {
            return self.allreduce(Algo::Ring, bytes);
        }
        match algo {
            Algo::Ring => {
                // 2(N-1) steps of S/N per link; the busiest link is a NIC carrying
                // `ring_share` ring messages, or an intra-host link.
                let steps = 2.0 * (n - 1.0);
                let per_byte = if multi {
                    (s.ring_share.max(1) as f64 / ab.be).max(1.0 / ab.bi)
                } else {
                    1.0 / ab.bi
                };
                let alpha = if multi { ab.ae } else { ab.ai };
                steps * alpha + steps / n * bytes * per_byte
            }
            Algo::Tree => {
                // Binomial reduce then broadcast over ring positions: log2(L) levels inside
                // hosts and log2(H) across. Links are full duplex: the reduce flows up while
                // the broadcast flows down, so the busiest sender is the root, which sends
                // the whole buffer to one child per level, the network's and the host's
                // links working at once.
                // A chunk takes the path up and down; the other chunks follow at the pace of
                // the busiest link.
                let lat = li * ab.ai + le * ab.ae;
                let rest = bytes - chunk;
                let bw = (li * rest / ab.bi).max(le * rest / ab.be);
                let fill = li * chunk / ab.bi + le * chunk / ab.be;
                2.0 * (lat + fill) + bw
            }
            Algo::RecursiveDoubling => {
                // log2 rounds exchanging the whole buffer; in a round between hosts every
                // rank of a host whose partner is remote sends at once, `rd_share` of them
                // on the busiest NIC.
                let extra = if s.n.is_power_of_two() { 0.0 } else { 2.0 };
                let share = s.rd_share.max(1) as f64;
                let (local, remote) = (s.rd_rounds.0 as f64, s.rd_rounds.1 as f64);
                let inner = local * (ab.ai + bytes / ab.bi);
                let outer = remote * (ab.ae + bytes * share / ab.be);
                let worst = if multi {
                    ab.ae + bytes * share / ab.be
                } else {
                    ab.ai + bytes / ab.bi
                };
                inner + outer + extra * worst
            }
            Algo::Hier | Algo::HierTree => {
                let (l, k) = (s.max_local as f64, s.leaders.max(1) as f64);
                // Inside hosts: reduce-scatter then allgather, L-1 steps each; a link
                // carries min(K, L-1) of the K segments.
                let intra_lat = 2.0 * (l - 1.0) * ab.ai;
                let intra_bw = 2.0 * bytes * (k.min(l - 1.0)) / k / ab.bi;
                if !multi {
                    return intra_lat + intra_bw;
                }
                let share = (k / s.rails as f64).ceil();
                let seg = bytes / k; // each leader group's part
                let (lat, bw) = if algo == Algo::Hier {
                    let steps = 2.0 * (h as f64 - 1.0);
                    (steps * ab.ae, steps / h as f64 * seg * share / ab.be)
                } else {
                    // Each tree carries half of the part; a host sends `tree_load` halves.
                    let depth = s.tree_depth.max(1) as f64;
                    let half = seg / 2.0;
                    let c = chunk.min(half);
                    let fill = 2.0 * depth * c * share / ab.be;
                    let load = s.tree_load.max(1) as f64;
                    (
                        2.0 * depth * ab.ae,
                        load * (half - c) * share / ab.be + fill,
                    )
                };
                intra_lat + lat + intra_bw.max(bw)
            }
            Algo::Chain | Algo::Direct | Algo::Pairwise => f64::INFINITY,
        }
    }

    /// The fastest of `algos` for `bytes`, with its predicted time.
    pub fn best(&self, algos: &[Algo], bytes: f64) -> (Algo, f64) {
        self.best_of(algos, bytes)
    }

    /// The allreduce this model predicts fastest for `bytes`, among ring, recursive
    /// doubling and (where ranks are grouped by host) the hierarchical algorithms.
    pub fn best_allreduce(&self, bytes: f64) -> Algo {
        let flat = [Algo::Ring, Algo::RecursiveDoubling];
        let grouped = [
            Algo::Ring,
            Algo::RecursiveDoubling,
            Algo::Hier,
            Algo::HierTree,
        ];
        let algos: &[Algo] = if self.shape.grouped { &grouped } else { &flat };
        self.best_of(algos, bytes).0
    }

    fn best_of(&self, algos: &[Algo], bytes: f64) -> (Algo, f64) {
        let mut best = (Algo::Ring, f64::INFINITY);
        for &a in algos {
            let t = self.allreduce(a, bytes);
            if t < best.1 {
                best = (a, t);
            }
        }
        best
    }

    /// The size ranges (powers of two from 8 bytes to `max_bytes`, ends included) in which
    /// `b` is predicted faster than `a`.
    pub fn faster_bands(&self, a: Algo, b: Algo, max_bytes: f64) -> Vec<(f64, f64)> {
        let mut out: Vec<(f64, f64)> = Vec::new();
        let mut open = false;
        let mut s = 8.0;
        while s <= max_bytes {
            let faster = self.allreduce(b, s) < self.allreduce(a, s);
            match (faster, open) {
                (true, false) => out.push((s, s)),
                (true, true) => {
                    if let Some(last) = out.last_mut() {
                        last.1 = s;
                    }
                }
                _ => {}
            }
            open = faster;
            s *= 2.0;
        }
        out
    }

    /// The smallest power-of-two size (up to `max_bytes`) from which `b` is predicted faster
    /// than `a` and stays so; `None` if it never is.
    pub fn crossover(&self, a: Algo, b: Algo, max_bytes: f64) -> Option<f64> {
        let mut from = None;
        let mut s = 8.0;
        while s <= max_bytes {
            if self.allreduce(b, s) < self.allreduce(a, s) {
                from.get_or_insert(s);
            } else {
                from = None;
            }
            s *= 2.0;
        }
        from
    }
}

/// Bytes one collective of `bytes` puts on links, per algorithm.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Traffic {
    /// Most bytes over one link between two ranks of a host.
    pub intra_link: f64,
    /// Most bytes leaving one host over one NIC.
    pub nic_egress: f64,
    /// Bytes crossing the network in total.
    pub network: f64,
}

/// The traffic of the ring algorithms: allreduce (factor 2(N-1)/N) and allgather or
/// reduce-scatter ((N-1)/N of the gathered size), chain broadcast (factor 1).
pub fn ring_traffic(shape: &Shape, bytes: f64, factor: f64) -> Traffic {
    let per_edge = factor * bytes;
    Traffic {
        intra_link: if shape.crossings < shape.n {
            per_edge
        } else {
            0.0
        },
        nic_egress: per_edge * shape.ring_share as f64,
        network: per_edge * shape.crossings as f64,
    }
}

/// The traffic of the hierarchical allreduce (both kinds: the ring and the double binary
/// trees between leaders move the same bytes, 2(H-1)/H of each leader's part per host).
pub fn hier_traffic(shape: &Shape, bytes: f64) -> Traffic {
    let (l, k, h) = (
        shape.max_local as f64,
        shape.leaders.max(1) as f64,
        shape.hosts as f64,
    );
    let share = (k / shape.rails as f64).ceil();
    Traffic {
        intra_link: if l > 1.0 {
            2.0 * bytes * k.min(l - 1.0) / k
        } else {
            0.0
        },
        nic_egress: if h > 1.0 {
            2.0 * (h - 1.0) / h * bytes / k * share
        } else {
            0.0
        },
        network: 2.0 * (h - 1.0) * bytes,
    }
}

/// Fits `alpha` (seconds per step) and `beta` (bytes per second) of a ring allreduce on `n`
/// ranks to measured (bytes, seconds) points: time = 2(N-1) alpha + 2(N-1)/N bytes / beta.
/// The bandwidth is the least-squares slope of the large sizes (within 1/64 of the largest,
/// at least the two largest), where the time grows with the size; the latency is what the
/// smallest size leaves once its bytes are paid for. (One straight line through every point
/// lets the large sizes decide the latency too, or, weighted, the small sizes the slope.)
/// `None` with fewer than two sizes or a fit that is not positive.
pub fn fit_ring(points: &[(f64, f64)], n: usize) -> Option<(f64, f64)> {
    let mut p: Vec<(f64, f64)> = points.to_vec();
    p.sort_by(|a, b| a.0.total_cmp(&b.0));
    let largest = p.last()?.0;
    if p.len() < 2 || n < 2 || p[0].0 == largest {
        return None;
    }
    let mut big: Vec<(f64, f64)> = p
        .iter()
        .copied()
        .filter(|x| x.0 * 64.0 >= largest)
        .collect();
    if big.iter().map(|x| x.0).fold(f64::INFINITY, f64::min) == largest {
        big = p[p.len() - 2..].to_vec();
    }
    let m = big.len() as f64;
    let mx = big.iter().map(|x| x.0).sum::<f64>() / m;
    let my = big.iter().map(|x| x.1).sum::<f64>() / m;
    let sxx: f64 = big.iter().map(|x| (x.0 - mx) * (x.0 - mx)).sum();
    let sxy: f64 = big.iter().map(|x| (x.0 - mx) * (x.1 - my)).sum();
    let slope = sxy / sxx;
    if !(slope > 0.0 && slope.is_finite()) {
        return None;
    }
    let steps = 2.0 * (n as f64 - 1.0);
    let beta = steps / n as f64 / slope;
    let (s0, t0) = p[0];
    let alpha = (t0 - slope * s0) / steps;
    Some((alpha.max(1e-7), beta))
}

pub mod flat;
#[cfg(test)]
mod tests;
