//! The alpha-beta choice on one kind of link: every collective on one host, and every
//! collective but allreduce across hosts (with the network's latency and bandwidth). A
//! message of `b` bytes costs `alpha + b / beta`; the formulas count each algorithm's
//! messages and bytes on the critical path.

use crate::algo::{Algo, Kind};

/// Bytes per second of a local copy, for the algorithms that pack and unpack.
const COPY_BYTES_PER_S: f64 = 8e9;

/// The link figures the choice weighs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Costs {
    /// Seconds per message on the critical path (a hop).
    pub alpha: f64,
    /// Seconds for each further send one rank makes back to back.
    pub send: f64,
    /// Bytes per second of one link.
    pub beta: f64,
}

fn log2_ceil(n: usize) -> f64 {
    (usize::BITS - (n.max(1) - 1).leading_zeros()) as f64
}

/// The predicted-fastest algorithm for `kind` on `size` ranks moving `bytes` (the user
/// buffer; for allgather, gather, scatter and alltoall the total over all ranks' blocks),
/// with per-message cost `alpha` seconds (a hop: from a send's start to the receiver
/// holding the data), `send` seconds for each further send one rank makes after its first
/// (its share of the software path alone), and `beta` bytes per second; `across_hosts` when
/// the ranks span several hosts.
pub fn choose(kind: Kind, size: usize, bytes: usize, cost: Costs, across_hosts: bool) -> Algo {
    let Costs { alpha, send, beta } = cost;
    let n = size as f64;
    let b = bytes as f64;
    let (a, bw) = (alpha, beta);
    let lg = log2_ceil(size);
    let pick = |log_step: f64, other: f64, log_algo: Algo, other_algo: Algo| {
        if log_step <= other {
            log_algo
        } else {
            other_algo
        }
    };
    match kind {
        Kind::AllReduce => {
            let ring = 2.0 * (n - 1.0) * a + 2.0 * (n - 1.0) / n * b / bw;
            let extra = if size.is_power_of_two() { 0.0 } else { 2.0 };
            let rd = (lg + extra) * (a + b / bw);
            pick(rd, ring, Algo::RecursiveDoubling, Algo::Ring)
        }
        Kind::AllGather => {
            let ring = (n - 1.0) * a + (n - 1.0) / n * b / bw;
            let bruck = lg * a + (n - 1.0) / n * b / bw * 1.25;
            pick(bruck, ring, Algo::RecursiveDoubling, Algo::Ring)
        }
        Kind::Broadcast | Kind::Reduce => {
            let tree = lg * (a + b / bw);
            let chain = (n - 1.0) * a + b / bw * 1.1;
            // Broadcast only: the root's N-1 sends back to back, the last one's hop, no
            // forwarding: ahead of the tree where a hop costs much more than a send (ranks
            // sharing CPUs wait to be scheduled before they forward: 4 ranks on 2 CPUs over
            // tcp, 8 B, 14-20 us against the tree's 21-30; 8 ranks, 65-81 against 66-111).
            let linear = (n - 2.0) * send + a + (n - 1.0) * b / bw;
            if kind == Kind::Broadcast && linear < tree.min(chain) {
                Algo::Pairwise
            } else {
                pick(tree, chain, Algo::Tree, Algo::Chain)
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
        Kind::ReduceScatter if size.is_power_of_two() && halving_wins(n, lg, b, a) => {
            Algo::RecursiveDoubling
        }
        Kind::ReduceScatter | Kind::ReduceScatterV if size <= 8 && !across_hosts => Algo::Pairwise,
        Kind::ReduceScatter | Kind::AllGatherV | Kind::ReduceScatterV => Algo::Ring,
        Kind::Barrier => Algo::RecursiveDoubling,
        Kind::Send | Kind::Recv => Algo::Direct,
    }
}

/// Whether recursive halving (log2 N messages, and a copy of the whole input to scratch)
/// beats the N-1 messages of the direct and ring reduce-scatters, which move as much: for
/// small and middling blocks (8 ranks on 2 CPUs over tcp, paired launches: 32 B 177-255 us
/// against the direct exchange's 215-335, 64 KiB 191-300 against 222-385).
/// Past [`HALVING_MAX_BYTES`] its rounds, each waiting for the last, lose to the direct
/// exchange's transfers all in flight at once (8 ranks on 2 CPUs over shm, 1 MiB: 570-780
/// against 505-600 us).
fn halving_wins(n: f64, lg: f64, b: f64, a: f64) -> bool {
    // Both move (N-1)/N of the input: only the hops and the copy differ.
    b <= HALVING_MAX_BYTES && lg * a + b / COPY_BYTES_PER_S < (n - 1.0) * a
}

/// The largest input recursive halving is chosen for.
const HALVING_MAX_BYTES: f64 = 64.0 * 1024.0;
