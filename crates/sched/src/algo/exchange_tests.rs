//! The exchange collectives (alltoall(v), gather, scatter, allgatherv, reduce-scatterv) run
//! against all their peers in the simulator and checked against a serial reference,
//! including uneven count vectors with zeros, gaps between blocks (left untouched) and the
//! in-place layouts.

use super::sim::{run, SimRank, SplitMix};
use super::tests::{fold, supported};
use super::*;
use crate::reduce::{DataType, ReduceOp};
use proptest::prelude::*;

const E: usize = 4; // i32 elements
const UNTOUCHED: u8 = 0xEE;

fn input(rank: usize, i: usize) -> i32 {
    ((rank * 13 + i * 5) % 17) as i32 - 6
}

#[derive(Debug, Clone)]
struct Case {
    kind: Kind,
    algo: Algo,
    n: usize,
    count: usize,
    root: usize,
    chunk_elems: usize,
    nch: usize,
    in_place: bool,
    op: ReduceOp,
    seed: u64,
}

/// The uneven layouts of a case, all ranks' views.
struct Layout {
    /// m[i][j]: elements rank i sends to rank j (alltoallv), or counts[j] repeated.
    m: Vec<Vec<usize>>,
    /// Per rank: its send blocks and receive blocks (empty where the kind has none).
    blocks: Vec<Blocks>,
}

/// Counts from the seed, about a third of them zero, at most `count` each.
fn counts(rng: &mut SplitMix, n: usize, count: usize) -> Vec<usize> {
    (0..n)
        .map(|_| match rng.below(3) {
            0 => 0,
            _ => rng.below(count + 1),
        })
        .collect()
}

/// Blocks of `lens` placed in reverse rank order with a gap of `gap` elements before each.
fn scattered(lens: &[usize], gap: usize) -> Vec<Block> {
    let mut out = vec![Block::default(); lens.len()];
    let mut off = 0;
    for j in (0..lens.len()).rev() {
        off += gap;
        out[j] = Block { off, len: lens[j] };
        off += lens[j];
    }
    out
}

fn packed(lens: &[usize]) -> Vec<Block> {
    let mut off = 0;
    lens.iter()
        .map(|&len| {
            let b = Block { off, len };
            off += len;
            b
        })
        .collect()
}

fn layout(c: &Case) -> Layout {
    let n = c.n;
    let mut rng = SplitMix(c.seed ^ 0x5eed);
    let (m, blocks) = match c.kind {
        Kind::AllToAllV => {
            let m: Vec<Vec<usize>> = (0..n).map(|_| counts(&mut rng, n, c.count)).collect();
            let blocks = (0..n)
                .map(|r| {
                    let to: Vec<usize> = (0..n).map(|j| m[r][j]).collect();
                    let from: Vec<usize> = (0..n).map(|i| m[i][r]).collect();
                    Blocks {
                        send: if r % 2 == 0 {
                            packed(&to)
                        } else {
                            scattered(&to, 1)
                        },
                        recv: scattered(&from, 2),
                    }
                })
                .collect();
            (m, blocks)
        }
        Kind::AllGatherV | Kind::ReduceScatterV => {
            let v = counts(&mut rng, n, c.count);
            let m = vec![v.clone(); n];
            let b = if c.kind == Kind::AllGatherV {
                Blocks {
                    send: Vec::new(),
                    recv: scattered(&v, if c.in_place { 0 } else { 3 }),
                }
            } else {
                Blocks {
                    send: packed(&v),
                    recv: Vec::new(),
                }
            };
            (m, vec![b; n])
        }
        _ => (vec![vec![c.count; n]; n], vec![Blocks::default(); n]),
    };
    Layout { m, blocks }
}

fn end(v: &[Block]) -> usize {
    v.iter().map(|b| b.end()).max().unwrap_or(0)
}

/// Send and receive lengths in elements, and the in-place offset (send inside recv when
/// positive, recv inside send when negative) for rank r.
fn shape(c: &Case, l: &Layout, r: usize) -> (usize, usize, Option<(bool, usize)>) {
    let (n, k) = (c.n, c.count);
    let b = &l.blocks[r];
    let (s, rl) = match c.kind {
        Kind::AllToAll => (n * k, n * k),
        Kind::AllToAllV => (end(&b.send), end(&b.recv)),
        Kind::Gather => (k, if r == c.root { n * k } else { 0 }),
        Kind::Scatter => (if r == c.root { n * k } else { 0 }, k),
        Kind::AllGatherV => (b.recv[r].len, end(&b.recv)),
        Kind::ReduceScatterV => (end(&b.send), b.send[r].len),
        _ => (0, 0),
    };
    let ip = match c.kind {
        _ if !c.in_place => None,
        Kind::Gather if r == c.root => Some((true, r * k)),
        Kind::Scatter if r == c.root => Some((false, r * k)),
        Kind::AllGatherV => Some((true, b.recv[r].off)),
        Kind::ReduceScatterV => Some((false, b.send[r].off)),
        _ => None,
    };
    (s, rl, ip)
}

fn check(c: &Case) -> Result<(), String> {
    let n = c.n;
    let l = layout(c);
    let mut ranks = Vec::new();
    for r in 0..n {
        let plan = Plan {
            kind: c.kind,
            algo: c.algo,
            rank: r,
            size: n,
            count: c.count,
            elem: E,
            root: c.root,
            avg: c.op == ReduceOp::Avg,
            chunk_bytes: c.chunk_elems * E,
            nchannels: c.nch,
            ring: (0..n).rev().collect(),
            hosts: Vec::new(),
            blocks: l.blocks[r].clone(),
        };
        let schedule = plan.build();
        let (ns, nr, ip) = shape(c, &l, r);
        let (send_base, recv_base, len) = match ip {
            None => (0, ns * E, (ns + nr) * E),
            Some((true, off)) => (off * E, 0, nr * E),
            Some((false, off)) => (0, off * E, ns * E),
        };
        let scratch_base = len.div_ceil(64) * 64;
        let mut arena = vec![UNTOUCHED; scratch_base + schedule.scratch_bytes];
        for i in 0..ns {
            let v = input(r, i).to_le_bytes();
            arena[send_base + i * E..send_base + (i + 1) * E].copy_from_slice(&v);
        }
        ranks.push(SimRank {
            arena,
            send_base,
            recv_base,
            scratch_base,
            schedule,
        });
    }
    run(&mut ranks, DataType::I32, c.op, c.seed)?;
    for (r, rk) in ranks.iter().enumerate() {
        let (_, nr, ip) = shape(c, &l, r);
        // want[i]: the value element i of the receive buffer must hold; None: untouched.
        let mut want: Vec<Option<i32>> = vec![None; nr];
        let k = c.count;
        match c.kind {
            Kind::AllToAll => {
                for i in 0..n {
                    for e in 0..k {
                        want[i * k + e] = Some(input(i, r * k + e));
                    }
                }
            }
            Kind::AllToAllV => {
                for i in 0..n {
                    let rb = l.blocks[r].recv[i];
                    let sb = l.blocks[i].send[r];
                    for e in 0..l.m[i][r] {
                        want[rb.off + e] = Some(input(i, sb.off + e));
                    }
                }
            }
            Kind::Gather if r == c.root => {
                for j in 0..n {
                    for e in 0..k {
                        want[j * k + e] = Some(input(j, e));
                    }
                }
            }
            Kind::Gather => {}
            Kind::Scatter => {
                for (e, w) in want.iter_mut().enumerate().take(k) {
                    *w = Some(input(c.root, r * k + e));
                }
            }
            Kind::AllGatherV => {
                for j in 0..n {
                    let b = l.blocks[r].recv[j];
                    for e in 0..b.len {
                        want[b.off + e] = Some(input(j, e));
                    }
                }
            }
            Kind::ReduceScatterV => {
                let b = l.blocks[r].send[r];
                for (e, w) in want.iter_mut().enumerate().take(b.len) {
                    *w = Some(fold(c.op, (0..n).map(|q| input(q, b.off + e)), n));
                }
            }
            _ => return Err(format!("{:?} is not an exchange", c.kind)),
        }
        for (i, w) in want.iter().enumerate() {
            let a = rk.recv_base + i * E;
            let bytes: [u8; 4] = rk.arena[a..a + 4].try_into().map_err(|_| "short")?;
            match w {
                Some(v) if i32::from_le_bytes(bytes) != *v => {
                    return Err(format!(
                        "rank {r} element {i}: got {}, want {v}",
                        i32::from_le_bytes(bytes)
                    ))
                }
                // Gaps must stay untouched, except where the input lives (in place).
                None if ip.is_none() && bytes != [UNTOUCHED; 4] => {
                    return Err(format!(
                        "rank {r} element {i} outside every block was written"
                    ))
                }
                _ => {}
            }
        }
    }
    Ok(())
}

fn kinds() -> Vec<(Kind, Algo)> {
    supported(&[
        Kind::AllToAll,
        Kind::AllToAllV,
        Kind::Gather,
        Kind::Scatter,
        Kind::AllGatherV,
        Kind::ReduceScatterV,
    ])
}

fn in_place_ok(k: Kind) -> bool {
    matches!(
        k,
        Kind::Gather | Kind::Scatter | Kind::AllGatherV | Kind::ReduceScatterV
    )
}

#[test]
fn every_exchange_schedule_matches_the_serial_reference() {
    let mut cases = 0u64;
    for (kind, algo) in kinds() {
        for n in [1, 2, 3, 4, 5, 6, 7, 8, 11, 16] {
            for count in [0, 1, 7, 40, 1000] {
                let chunking: &[(usize, usize)] = if count >= 1000 {
                    // 4 chunks a block, and 143 (alltoall's rounds then run one ahead).
                    &[(256, 2), (7, 2)]
                } else {
                    &[(1000, 1), (3, 2), (1, 3)]
                };
                for &(chunk_elems, nch) in chunking {
                    for in_place in [false, true] {
                        if in_place && !in_place_ok(kind) {
                            continue;
                        }
                        let ops: &[ReduceOp] = if kind.reduces() {
                            &ReduceOp::ARITH
                        } else {
                            &[ReduceOp::Sum]
                        };
                        for &op in ops {
                            let c = Case {
                                kind,
                                algo,
                                n,
                                count,
                                root: (n / 2 + 1) % n,
                                chunk_elems,
                                nch,
                                in_place,
                                op,
                                seed: cases,
                            };
                            if let Err(e) = check(&c) {
                                panic!("{c:?}: {e}");
                            }
                            cases += 1;
                        }
                    }
                }
            }
        }
    }
    assert!(cases > 1000, "only {cases} cases ran");
}

#[test]
fn alltoallv_pairs_carry_both_counts() {
    // Rank 0 sends 3 elements to rank 1 and expects 5 back: the words of the two messages
    // of the pair are mirror images, so each end can check the other's view.
    let mk = |rank: usize, to: usize, from: usize| Plan {
        kind: Kind::AllToAllV,
        algo: Algo::Pairwise,
        rank,
        size: 2,
        count: 0,
        elem: E,
        root: 0,
        avg: false,
        chunk_bytes: 1 << 20,
        nchannels: 1,
        ring: vec![0, 1],
        hosts: Vec::new(),
        blocks: Blocks {
            send: packed(&if rank == 0 { [1, to] } else { [to, 1] }),
            recv: packed(&if rank == 0 { [1, from] } else { [from, 1] }),
        },
    };
    let s0 = mk(0, 3, 5).build();
    let s1 = mk(1, 5, 3).build();
    let word = |s: &Schedule, send: bool| {
        s.steps
            .iter()
            .find(|st| {
                matches!(st.action, Action::Send { .. }) == send && st.action.peer().is_some()
            })
            .and_then(|st| st.word)
    };
    assert_eq!(word(&s0, true), Some(pair_word(3, 5)));
    assert_eq!(word(&s1, false), Some(pair_word(3, 5)));
    assert_eq!(word(&s1, true), word(&s0, false));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
    #[test]
    fn random_exchange_schedules_are_right(
        which in 0usize..16,
        n in 1usize..13,
        count in 0usize..120,
        chunk_elems in 1usize..64,
        nch in 1usize..4,
        in_place: bool,
        opi in 0usize..5,
        root_pick in 0usize..64,
        seed: u64,
    ) {
        let ks = kinds();
        let (kind, algo) = ks[which % ks.len()];
        let c = Case { kind, algo, n, count, root: root_pick % n, chunk_elems, nch,
                       in_place: in_place && in_place_ok(kind),
                       op: if kind.reduces() { ReduceOp::ARITH[opi] } else { ReduceOp::Sum },
                       seed };
        prop_assert!(check(&c).is_ok(), "{:?}: {:?}", c, check(&c));
    }
}

#[test]
fn alltoall_rounds_of_big_blocks_run_one_ahead() {
    // 8 ranks: the sends of round k wait for the receive of round k-1 with blocks of 64
    // chunks or more, of round k-5 with smaller ones.
    let plan = |chunk_elems: usize| Plan {
        kind: Kind::AllToAll,
        algo: Algo::Pairwise,
        rank: 0,
        size: 8,
        count: 640,
        elem: E,
        root: 0,
        avg: false,
        chunk_bytes: chunk_elems * E,
        nchannels: 1,
        ring: (0..8).collect(),
        hosts: Vec::new(),
        blocks: Blocks::default(),
    };
    // The rounds whose first send waits for something.
    let gated = |chunk_elems: usize| -> Vec<usize> {
        let s = plan(chunk_elems).build();
        let mut peers_seen = Vec::new();
        let mut rounds = Vec::new();
        for st in &s.steps {
            if let Action::Send { peer, .. } = st.action {
                if !peers_seen.contains(&peer) {
                    peers_seen.push(peer);
                    if !st.deps.is_empty() {
                        rounds.push(peers_seen.len());
                    }
                }
            }
        }
        rounds
    };
    assert_eq!(gated(10), vec![2, 3, 4, 5, 6, 7], "64 chunks a block");
    assert_eq!(gated(20), vec![5, 6, 7], "32 chunks a block");
}
