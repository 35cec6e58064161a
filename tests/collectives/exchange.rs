//! The exchange collectives (alltoall, alltoallv, gather, scatter, allgatherv,
//! reduce-scatterv) over mem with seeded faults and over TCP threads, against a serial
//! reference, with uneven counts (zeros included), gaps between blocks, the in-place
//! layouts, bitwise-equal results across ranks, and their failure cases.

use super::common::*;
use super::{expect_all_ok, fnv};
use oxccl::transport::mem::MemFaults;
use oxccl::{Bf16, Communicator, DataType, Error, ErrorKind, ReduceOp, Result, F16};

fn fail(c: &Communicator, what: String) -> Error {
    Error::internal(format!("rank {}: {what}", c.rank()))
}

/// What elements outside every block hold before and after a call (vals are 0..=4).
const UNSET: f64 = 9.0;

/// Element e of the block rank i sends to rank j: small integers, exact in every type.
fn val(i: usize, j: usize, e: usize) -> f64 {
    ((i * 7 + j * 3 + e) % 5) as f64
}

/// Elements rank i sends to rank j in the alltoallv of `count`: zeros included.
fn pair_count(i: usize, j: usize, count: usize) -> usize {
    if (i + 2 * j + count) % 3 == 0 {
        0
    } else {
        (count + i * 7 + j * 3) % (count + 1)
    }
}

/// Displacements of `lens` laid in reverse rank order with `gap` elements before each, and
/// the total length.
fn reversed(lens: &[usize], gap: usize) -> (Vec<usize>, usize) {
    let mut d = vec![0; lens.len()];
    let mut off = 0;
    for j in (0..lens.len()).rev() {
        off += gap;
        d[j] = off;
        off += lens[j];
    }
    (d, off)
}

fn check<T: Val>(
    c: &Communicator,
    what: &str,
    got: &[T],
    want: impl Fn(usize) -> Option<f64>,
) -> Result<()> {
    for (i, x) in got.iter().enumerate() {
        if let Some(w) = want(i) {
            if x.f() != w {
                return Err(fail(c, format!("{what} [{i}]: got {:?}, want {w}", x)));
            }
        }
    }
    Ok(())
}

/// Every exchange collective at every count for one element type; returns a hash of the
/// allgatherv result (equal on every rank).
pub fn exchanges<T: Val>(c: &Communicator, counts: &[usize]) -> Result<u64> {
    let (n, me) = (c.size(), c.rank());
    let mut hash = 0u64;
    for &count in counts {
        // alltoall
        let send: Vec<T> = (0..n * count)
            .map(|x| T::v(val(me, x / count.max(1), x % count.max(1))))
            .collect();
        let mut recv = vec![T::default(); n * count];
        c.all_to_all(&send, &mut recv)?;
        check(c, &format!("alltoall count {count}"), &recv, |x| {
            Some(val(x / count.max(1), me, x % count.max(1)))
        })?;

        // alltoallv with gaps: sends packed in reverse order after one free element each,
        // receives after two.
        let to: Vec<usize> = (0..n).map(|j| pair_count(me, j, count)).collect();
        let from: Vec<usize> = (0..n).map(|i| pair_count(i, me, count)).collect();
        let (sd, slen) = reversed(&to, 1);
        let (rd, rlen) = reversed(&from, 2);
        let mut send = vec![T::v(UNSET); slen];
        for j in 0..n {
            for e in 0..to[j] {
                send[sd[j] + e] = T::v(val(me, j, e));
            }
        }
        let mut recv = vec![T::v(UNSET); rlen];
        c.all_to_all_v(&send, &to, &sd, &mut recv, &from, &rd)?;
        let mut want = vec![Some(UNSET); rlen];
        for i in 0..n {
            for e in 0..from[i] {
                want[rd[i] + e] = Some(val(i, me, e));
            }
        }
        check(c, &format!("alltoallv count {count}"), &recv, |x| want[x])?;

        // gather and scatter, out of place and in place, at a root that moves with count
        let root = (count + 1) % n;
        let mine: Vec<T> = (0..count).map(|e| T::v(val(me, root, e))).collect();
        let mut all = vec![T::default(); if me == root { n * count } else { 0 }];
        c.gather(&mine, &mut all, root)?;
        check(c, &format!("gather count {count}"), &all, |x| {
            Some(val(x / count.max(1), root, x % count.max(1)))
        })?;
        let mut buf = if me == root {
            let mut b = vec![T::default(); n * count];
            b[me * count..(me + 1) * count].copy_from_slice(&mine);
            b
        } else {
            mine.clone()
        };
        c.gather_in_place(&mut buf, root)?;
        if me == root {
            check(c, &format!("gather in place count {count}"), &buf, |x| {
                Some(val(x / count.max(1), root, x % count.max(1)))
            })?;
        }
        let src: Vec<T> = (0..if me == root { n * count } else { 0 })
            .map(|x| T::v(val(root, x / count.max(1), x % count.max(1))))
            .collect();
        let mut part = vec![T::default(); count];
        c.scatter(&src, &mut part, root)?;
        check(c, &format!("scatter count {count}"), &part, |e| {
            Some(val(root, me, e))
        })?;
        let mut buf = if me == root {
            src.clone()
        } else {
            vec![T::default(); count]
        };
        c.scatter_in_place(&mut buf, root)?;
        let off = if me == root { me * count } else { 0 };
        check(
            c,
            &format!("scatter in place count {count}"),
            &buf[off..off + count],
            |e| Some(val(root, me, e)),
        )?;

        // allgatherv: every rank's block of its own size, placed in reverse order with gaps
        let lens: Vec<usize> = (0..n).map(|j| pair_count(0, j, count)).collect();
        let (displs, total) = reversed(&lens, 3);
        let mine: Vec<T> = (0..lens[me]).map(|e| T::v(val(me, 0, e))).collect();
        let mut out = vec![T::v(UNSET); total];
        c.all_gather_v(&mine, &mut out, &lens, &displs)?;
        let mut want = vec![Some(UNSET); total];
        for j in 0..n {
            for e in 0..lens[j] {
                want[displs[j] + e] = Some(val(j, 0, e));
            }
        }
        check(c, &format!("allgatherv count {count}"), &out, |x| want[x])?;
        hash ^= fnv(bytemuck::cast_slice(&out));

        // reduce-scatterv, every arithmetic op
        let offs: Vec<usize> = lens
            .iter()
            .scan(0, |o, &l| {
                let d = *o;
                *o += l;
                Some(d)
            })
            .collect();
        let sum: usize = lens.iter().sum();
        for op in ReduceOp::ARITH {
            let send: Vec<T> = (0..sum).map(|i| T::v(input(op, n, me, i))).collect();
            let mut got = vec![T::default(); lens[me]];
            c.reduce_scatter_v(&send, &mut got, &lens, op)?;
            for (e, x) in got.iter().enumerate() {
                let w = reference(op, n, offs[me] + e, T::FLOAT);
                if !close(*x, w, op) {
                    return Err(fail(
                        c,
                        format!("reduce_scatterv {op:?} count {count} [{e}]: {x:?}, want {w}"),
                    ));
                }
            }
        }
    }
    Ok(hash)
}

fn by_dtype(c: &Communicator, d: DataType, counts: &[usize]) -> Result<u64> {
    match d {
        DataType::I8 => exchanges::<i8>(c, counts),
        DataType::U8 => exchanges::<u8>(c, counts),
        DataType::I32 => exchanges::<i32>(c, counts),
        DataType::U32 => exchanges::<u32>(c, counts),
        DataType::I64 => exchanges::<i64>(c, counts),
        DataType::U64 => exchanges::<u64>(c, counts),
        DataType::F16 => exchanges::<F16>(c, counts),
        DataType::Bf16 => exchanges::<Bf16>(c, counts),
        DataType::F64 => exchanges::<f64>(c, counts),
        _ => exchanges::<f32>(c, counts),
    }
}

fn matrix(
    n: usize,
    net: Net,
    algo: Option<&'static str>,
    counts: &'static [usize],
    dts: &'static [DataType],
) {
    let label = format!("exchanges, {n} ranks, algo {algo:?}");
    let res = run(n, net, config(algo, 60), move |c| {
        let mut hs = Vec::new();
        for &d in dts {
            hs.push(by_dtype(c, d, counts)?);
        }
        Ok(hs)
    });
    expect_all_ok(&label, res);
}

const ALGOS: [Option<&str>; 5] = [
    None,
    Some("pairwise"),
    Some("tree"),
    Some("rd"),
    Some("ring"),
];

/// Every type but the fp8 ones (whose sums of these values are not exact).
const TYPES: &[DataType] = DataType::ALL.split_at(10).0;

#[test]
fn mem_exchange_matrix_every_rank_count_dtype_and_algorithm() {
    let faults = MemFaults {
        backpressure: 0.2,
        delay: 0.3,
        connect_delay_polls: 3,
        max_in_flight: 4,
    };
    for n in 1..=16usize {
        for (k, algo) in ALGOS.iter().enumerate() {
            let seed = (n * 100 + k) as u64;
            let dts: &'static [DataType] = if k == 0 {
                TYPES
            } else {
                &[DataType::F32, DataType::I8]
            };
            matrix(
                n,
                Net::Mem(seed, faults.clone()),
                *algo,
                &[0, 1, 7, 1000],
                dts,
            );
        }
    }
}

#[test]
fn mem_exchange_large_count() {
    for algo in ALGOS {
        matrix(
            3,
            Net::Mem(3, MemFaults::default()),
            algo,
            &[(1 << 18) + 3],
            &[DataType::F32],
        );
    }
}

#[test]
fn tcp_exchange_matrix_threads() {
    for n in 2..=8usize {
        for algo in ALGOS {
            matrix(
                n,
                Net::Tcp,
                algo,
                &[0, 1, 7, 1000, 65539],
                &[DataType::F32, DataType::U8],
            );
        }
    }
}

/// Every rank's error, once each rank has failed.
fn all_fail<R: std::fmt::Debug>(res: Vec<Result<R>>) -> Vec<Error> {
    res.into_iter()
        .enumerate()
        .map(|(r, x)| match x {
            Ok(v) => panic!("rank {r} succeeded ({v:?}) in a mismatched call"),
            Err(e) => e,
        })
        .collect()
}

#[test]
fn alltoallv_count_disagreement_is_seen_at_both_ends_of_the_pair() {
    for net in [Net::Tcp, Net::Mem(9, MemFaults::default())] {
        let res = run(2, net, config(None, 10), |c| {
            let me = c.rank();
            // Rank 0 sends 3 elements to rank 1, which expects 4.
            let to = if me == 0 { [2, 3] } else { [2, 2] };
            let from = if me == 0 { [2, 2] } else { [3 + 1, 2] };
            let (sd, rd) = ([0, to[0]], [0, from[0]]);
            let send = vec![1.0f32; to.iter().sum()];
            let mut recv = vec![0.0f32; from.iter().sum()];
            c.all_to_all_v(&send, &to, &sd, &mut recv, &from, &rd)
        });
        for (r, e) in all_fail(res).iter().enumerate() {
            assert_eq!(e.kind(), ErrorKind::InvalidUsage, "rank {r}: {e}");
            assert!(e.to_string().contains("alltoallv"), "rank {r}: {e}");
        }
    }
}

#[test]
fn mismatched_exchanges_fail_with_invalid_usage() {
    // An alltoall against a gather: the rank in the alltoall receives the gather's message
    // and names both calls; the gathering rank only sends, and may finish first.
    let res = run(2, Net::Tcp, config(None, 10), |c| {
        let mut out = vec![0.0f32; 8];
        if c.rank() == 0 {
            c.all_to_all(&[1.0f32; 8], &mut out)
        } else {
            c.gather(&[1.0f32; 4], &mut out, 0)
        }
    });
    let e = res[0].as_ref().expect_err("rank 0 must fail");
    assert_eq!(e.kind(), ErrorKind::InvalidUsage, "{e}");
    let m = e.to_string();
    assert!(m.contains("alltoall #1") && m.contains("gather #1"), "{m}");
    if let Err(e) = &res[1] {
        assert!(
            matches!(e.kind(), ErrorKind::Remote | ErrorKind::InvalidUsage),
            "{e}"
        );
    }
    // Allgatherv count vectors that differ: every rank receives in the ring, and fails.
    for net in [Net::Tcp, Net::Mem(4, MemFaults::default())] {
        let res = run(3, net, config(None, 10), |c| {
            let counts = if c.rank() == 1 { [2, 3, 2] } else { [2, 2, 2] };
            let displs = [0, 2, 5];
            let mut out = vec![0.0f32; 7];
            let mine = vec![1.0f32; counts[c.rank()]];
            c.all_gather_v(&mine, &mut out, &counts, &displs)
        });
        let errs = all_fail(res);
        // The rank that receives the longer block fails in the transport (a message longer
        // than the posted receive) or in the engine (the totals in the tags differ).
        assert!(
            errs.iter().any(|e| e.kind() == ErrorKind::InvalidUsage
                && e.to_string().contains("allgatherv #1 (count ")),
            "{errs:?}"
        );
        for e in &errs {
            assert!(
                matches!(e.kind(), ErrorKind::Remote | ErrorKind::InvalidUsage),
                "{e}"
            );
        }
    }
}

#[test]
fn bad_exchange_arguments_name_the_argument() {
    let res = run(
        2,
        Net::Mem(1, MemFaults::default()),
        config(None, 10),
        |c| {
            let mut msgs = Vec::new();
            let mut recv = vec![0.0f32; 8];
            let mut push = |r: Result<()>| match r {
                Err(e) if e.kind() == ErrorKind::InvalidArgument => {
                    msgs.push(e.to_string());
                    Ok(())
                }
                other => Err(Error::internal(format!(
                    "expected InvalidArgument, got {other:?}"
                ))),
            };
            // overlapping receive blocks
            push(c.all_to_all_v(&[1.0f32; 4], &[2, 2], &[0, 2], &mut recv, &[2, 2], &[0, 1]))?;
            // displacement + count overflow
            push(c.all_to_all_v(
                &[1.0f32; 4],
                &[2, 2],
                &[0, usize::MAX],
                &mut recv,
                &[2, 2],
                &[0, 2],
            ))?;
            // a count vector of the wrong length
            push(c.all_gather_v(&[1.0f32; 2], &mut recv, &[2, 2, 2], &[0, 2, 4]))?;
            // counts and displacements of different lengths
            push(c.all_gather_v(&[1.0f32; 2], &mut recv, &[2, 2], &[0]))?;
            // send count differing from the rank's own count
            push(c.all_gather_v(&[1.0f32; 3], &mut recv, &[2, 2], &[0, 2]))?;
            // a receive buffer too small for the blocks
            push(c.all_gather_v(&[1.0f32; 2], &mut recv[..3], &[2, 2], &[0, 2]))?;
            // alltoall buffers of different lengths, and not a multiple of the rank count
            push(c.all_to_all(&[1.0f32; 4], &mut recv[..6]))?;
            push(c.all_to_all(&[1.0f32; 3], &mut recv[..3]))?;
            // root out of range
            push(c.gather(&[1.0f32; 4], &mut recv, 2))?;
            push(c.scatter(&[1.0f32; 8], &mut recv[..4], 7))?;
            // reduce-scatterv counts overflowing
            push(c.reduce_scatter_v(
                &[1.0f32; 4],
                &mut recv[..2],
                &[usize::MAX, 2],
                ReduceOp::Sum,
            ))?;
            // the communicator is still usable after refused calls
            let mut out = vec![0.0f32; 4];
            c.all_to_all(&[1.0f32; 4], &mut out)?;
            Ok(msgs)
        },
    );
    for (r, x) in res.into_iter().enumerate() {
        let msgs = x.unwrap_or_else(|e| panic!("rank {r}: {e}"));
        let want = [
            "overlap",
            "overflow",
            "one per rank",
            "displs",
            "sendcount",
            "needs",
            "needs",
            "equal blocks",
            "root 2",
            "root 7",
            "overflow",
        ];
        assert_eq!(msgs.len(), want.len(), "rank {r}: {msgs:?}");
        for (m, w) in msgs.iter().zip(want) {
            assert!(
                m.contains(w) && m.contains(&format!("rank {r}")),
                "rank {r}: '{m}' lacks '{w}'"
            );
        }
    }
}
