//! The measurement loops: nccl-tests' table, and the CSV points of the peer suite.

use std::time::Instant;

use crate::args::{Args, Op};
use crate::data::{input, moved, reduced, same, Val, UNWRITTEN};
use oxccl::{Bf16, Communicator, DataType, ReduceOp, Result, F16, F8E4M3, F8E5M2};

/// Every point of every requested op; returns the number of wrong results (rank 0 counts
/// all ranks').
pub fn all_points(comm: &Communicator, a: &Args) -> Result<usize> {
    if let Some(calls) = a.calls {
        return crate::grouped::points(comm, a, calls);
    }
    match a.dtype {
        DataType::I8 => points::<i8>(comm, a),
        DataType::U8 => points::<u8>(comm, a),
        DataType::I32 => points::<i32>(comm, a),
        DataType::U32 => points::<u32>(comm, a),
        DataType::I64 => points::<i64>(comm, a),
        DataType::U64 => points::<u64>(comm, a),
        DataType::F16 => points::<F16>(comm, a),
        DataType::F32 => points::<f32>(comm, a),
        DataType::F64 => points::<f64>(comm, a),
        DataType::Bf16 => points::<Bf16>(comm, a),
        DataType::F8E4M3 => points::<F8E4M3>(comm, a),
        DataType::F8E5M2 => points::<F8E5M2>(comm, a),
    }
}

struct Bufs<T> {
    send: Vec<T>,
    recv: Vec<T>,
}

/// Element counts of one point: (count printed, send elements, receive elements, bytes).
fn shape(
    op: Op,
    bytes: usize,
    elem: usize,
    n: usize,
    at_least_one: bool,
) -> (usize, usize, usize, usize) {
    let min = usize::from(at_least_one);
    match op {
        // nccl-tests: the size is the whole buffer of size blocks (gathered, scattered, or
        // each rank's alltoall send buffer). Gather and scatter get the whole buffer on every
        // rank, for the in-place layout (a rank's block of it).
        Op::AllGather | Op::ReduceScatter | Op::AllToAll | Op::Gather | Op::Scatter => {
            let c = (bytes / elem / n).max(min);
            let (s, r) = match op {
                Op::AllGather | Op::Gather => (c, c * n),
                Op::ReduceScatter | Op::Scatter => (c * n, c),
                _ => (c * n, c * n),
            };
            (c * n, s, r, c * n * elem)
        }
        _ => {
            let c = (bytes / elem).max(min);
            (c, c, c, c * elem)
        }
    }
}

/// The block length of a gather, scatter or alltoall's buffers.
fn block<T>(b: &Bufs<T>, op: Op, n: usize) -> usize {
    match op {
        Op::Gather => b.send.len(),
        Op::Scatter => b.recv.len(),
        _ => b.send.len() / n,
    }
}

/// Inputs of the data-movement ops, and their outputs unwritten. In place, gather's input
/// is this rank's block of the receive buffer, and scatter's output this rank's block of
/// the send buffer (nccl-tests' layouts).
fn fill_moved<T: Val>(b: &mut Bufs<T>, op: Op, rank: usize, n: usize, root: usize, in_place: bool) {
    let c = block(b, op, n);
    let unwritten = T::from_f64(UNWRITTEN);
    b.recv.fill(unwritten);
    match op {
        Op::AllToAll => {
            for (j, x) in b.send.iter_mut().enumerate() {
                *x = T::from_f64(moved(rank, j / c, j % c));
            }
        }
        Op::Gather => {
            let own = if in_place {
                &mut b.recv[rank * c..(rank + 1) * c]
            } else {
                &mut b.send[..]
            };
            for (k, x) in own.iter_mut().enumerate() {
                *x = T::from_f64(moved(rank, root, k));
            }
        }
        _ => {
            for (j, x) in b.send.iter_mut().enumerate() {
                *x = if rank == root {
                    T::from_f64(moved(root, j / c, j % c))
                } else {
                    unwritten
                };
            }
        }
    }
}

fn fill<T: Val>(
    b: &mut Bufs<T>,
    op: Op,
    redop: ReduceOp,
    rank: usize,
    n: usize,
    root: usize,
    in_place: bool,
) {
    if matches!(op, Op::AllToAll | Op::Gather | Op::Scatter) {
        return fill_moved(b, op, rank, n, root, in_place);
    }
    let ro = if op.reduces() { redop } else { ReduceOp::Sum };
    let (sl, rl) = (b.send.len(), b.recv.len());
    // The in-place buffer: for reduce-scatter the whole (size x count) input, which is the
    // send buffer; for allgather this rank's block of the output; otherwise the output.
    let src: &mut [T] = if in_place && op == Op::AllGather {
        &mut b.recv[rank * sl..(rank + 1) * sl]
    } else if in_place && op != Op::ReduceScatter {
        &mut b.recv[..]
    } else {
        &mut b.send[..]
    };

    for (i, x) in src.iter_mut().enumerate() {
        *x = T::from_f64(input(ro, n, rank, i, T::NARROW && op.reduces()));
    }
    if !in_place {
        for x in b.recv[..rl].iter_mut() {
            *x = T::from_f64(-1.0);
        }
    }
}

/// Wrong elements of this rank's result.
fn wrong<T: Val>(
    b: &Bufs<T>,
    op: Op,
    redop: ReduceOp,
    rank: usize,
    n: usize,
    root: usize,
    in_place: bool,
) -> usize {
    let out = if op == Op::Scatter && in_place {
        let c = block(b, op, n);
        &b.send[rank * c..(rank + 1) * c]
    } else {
        &b.recv[..]
    };
    let count = match op {
        Op::AllGather | Op::AllToAll | Op::Gather => out.len() / n,
        _ => out.len(),
    };
    // Data that only moves must arrive exactly (the average's tolerance is for reductions).
    let redop = if op.reduces() { redop } else { ReduceOp::Sum };
    let mut bad = 0;
    for (i, &x) in out.iter().enumerate() {
        let want = match op {
            Op::AllReduce => reduced::<T>(redop, n, i),
            Op::Reduce if rank != root => continue,
            Op::Reduce => reduced::<T>(redop, n, i),
            Op::ReduceScatter => reduced::<T>(redop, n, rank * count + i),
            Op::AllGather => input(ReduceOp::Sum, n, i / count, i % count, false),
            Op::Broadcast => input(ReduceOp::Sum, n, root, i, false),
            Op::AllToAll => moved(i / count, rank, i % count),
            Op::Gather if rank != root => continue,
            Op::Gather => moved(i / count, root, i % count),
            Op::Scatter => moved(root, rank, i),
        };
        if !same(x, want, redop) {
            bad += 1;
        }
    }
    bad
}

fn call<T: Val>(
    comm: &Communicator,
    b: &mut Bufs<T>,
    op: Op,
    a: &Args,
    in_place: bool,
) -> Result<()> {
    let (redop, root) = (a.redop, a.root);
    match (op, in_place) {
        (Op::AllReduce, false) => comm.all_reduce(&b.send, &mut b.recv, redop),
        (Op::AllReduce, true) => comm.all_reduce_in_place(&mut b.recv, redop),
        (Op::AllGather, false) => comm.all_gather(&b.send, &mut b.recv),
        (Op::AllGather, true) => comm.all_gather_in_place(&mut b.recv),
        (Op::ReduceScatter, false) => comm.reduce_scatter(&b.send, &mut b.recv, redop),
        (Op::ReduceScatter, true) => {
            let r = comm.rank() * b.recv.len();
            let len = b.recv.len();
            comm.reduce_scatter_in_place(&mut b.send, redop)?;
            b.recv.copy_from_slice(&b.send[r..r + len]);
            Ok(())
        }
        (Op::Broadcast, false) => comm.broadcast_into(&b.send, &mut b.recv, root),
        (Op::Broadcast, true) => comm.broadcast(&mut b.recv, root),
        (Op::Reduce, false) => comm.reduce(&b.send, &mut b.recv, redop, root),
        (Op::Reduce, true) => comm.reduce_in_place(&mut b.recv, redop, root),
        (Op::AllToAll, false) => comm.all_to_all(&b.send, &mut b.recv),
        (Op::AllToAll, true) => Err(oxccl::Error::invalid_argument(
            "alltoall has no in-place form",
        )),
        // Outside the root, gather's receive and scatter's send buffers are not needed.
        (Op::Gather, false) => {
            let recv = if comm.rank() == root {
                &mut b.recv[..]
            } else {
                &mut []
            };
            comm.gather(&b.send, recv, root)
        }
        (Op::Gather, true) => {
            let (me, c) = (comm.rank(), b.send.len());
            let buf = if me == root {
                &mut b.recv[..]
            } else {
                &mut b.recv[me * c..(me + 1) * c]
            };
            comm.gather_in_place(buf, root)
        }
        (Op::Scatter, false) => {
            let send = if comm.rank() == root {
                &b.send[..]
            } else {
                &[]
            };
            comm.scatter(send, &mut b.recv, root)
        }
        (Op::Scatter, true) => {
            let (me, c) = (comm.rank(), b.recv.len());
            let buf = if me == root {
                &mut b.send[..]
            } else {
                &mut b.send[me * c..(me + 1) * c]
            };
            comm.scatter_in_place(buf, root)
        }
    }
}

fn max_over_ranks(comm: &Communicator, v: f64) -> Result<f64> {
    let mut out = [0.0f64];
    comm.all_reduce(&[v], &mut out, ReduceOp::Max)?;
    Ok(out[0])
}

fn sum_over_ranks(comm: &Communicator, v: f64) -> Result<f64> {
    let mut out = [0.0f64];
    comm.all_reduce(&[v], &mut out, ReduceOp::Sum)?;
    Ok(out[0])
}

fn points<T: Val>(comm: &Communicator, a: &Args) -> Result<usize> {
    if a.csv {
        return csv_points::<T>(comm, a);
    }
    let n = comm.size();
    let e = std::mem::size_of::<T>();
    let me = comm.rank();
    let root = a.root;
    if root >= n {
        return Err(oxccl::Error::invalid_argument(format!(
            "-r {root} is out of range for {n} ranks"
        )));
    }
    if me == 0 {
        println!(
            "# oxccl-perf: {} ranks as {}, transport {}, {} {}",
            n,
            a.ranks_are,
            comm.transport(),
            a.dtype.name(),
            a.redop.name()
        );
        println!("# {:>62}   {:>30}", "out-of-place", "in-place");
        println!(
            "#{:>11} {:>12} {:>9} {:>6} {:>6} {:>9} {:>7} {:>7} {:>6} {:>9} {:>7} {:>7} {:>6}",
            "size",
            "count",
            "type",
            "redop",
            "root",
            "time",
            "algbw",
            "busbw",
            "#wrong",
            "time",
            "algbw",
            "busbw",
            "#wrong"
        );
        println!(
            "#{:>11} {:>12} {:>9} {:>6} {:>6} {:>9} {:>7} {:>7} {:>6} {:>9} {:>7} {:>7} {:>6}",
            "(B)",
            "(elements)",
            "",
            "",
            "",
            "(us)",
            "(GB/s)",
            "(GB/s)",
            "",
            "(us)",
            "(GB/s)",
            "(GB/s)",
            ""
        );
    }
    let mut total_wrong = 0usize;
    let mut bus_sum = 0.0;
    let mut bus_n = 0usize;
    for &op in &a.ops {
        let mut bytes = a.min_bytes;
        while bytes <= a.max_bytes {
            let (count, sn, rn, real) = shape(op, bytes, e, n, false);
            let mut b = Bufs {
                send: vec![T::default(); sn],
                recv: vec![T::default(); rn],
            };

            let mut row = String::new();
            for in_place in [false, true] {
                if in_place && !op.has_in_place() {
                    // Like nccl-tests' in-place alltoall, nothing to report; here nothing
                    // runs either.
                    row += &format!(" {:>9} {:>7} {:>7} {:>6}", "N/A", "N/A", "N/A", "N/A");
                    continue;
                }
                fill(&mut b, op, a.redop, me, n, root, in_place);
                for _ in 0..a.warmup {
                    call(comm, &mut b, op, a, in_place)?;
                }
                comm.barrier()?;
                let t0 = Instant::now();
                for _ in 0..a.iters {
                    call(comm, &mut b, op, a, in_place)?;
                }
                let t = t0.elapsed().as_secs_f64() / a.iters as f64;
                let t = max_over_ranks(comm, t)?;
                let mut bad = 0.0;
                if a.check {
                    fill(&mut b, op, a.redop, me, n, root, in_place);
                    call(comm, &mut b, op, a, in_place)?;
                    let w = wrong(&b, op, a.redop, me, n, root, in_place);
                    bad = sum_over_ranks(comm, w as f64)?;
                }
                total_wrong += bad as usize;
                let algbw = real as f64 / t / 1e9;
                let busbw = algbw * op.bus_factor(n);
                bus_sum += busbw;
                bus_n += 1;
                row += &format!(
                    " {:>9.2} {:>7.2} {:>7.2} {:>6}",
                    t * 1e6,
                    algbw,
                    busbw,
                    if a.check {
                        format!("{}", bad as usize)
                    } else {
                        "N/A".into()
                    }
                );
            }
            if me == 0 {
                let redop = if op.reduces() { a.redop.name() } else { "none" };
                let r = if op.rooted() { root as i64 } else { -1 };
                println!(
                    "{:>12} {:>12} {:>9} {:>6} {:>6}{row}  {}",
                    real,
                    count,
                    a.dtype.name(),
                    redop,
                    r,
                    op.name()
                );
            }
            bytes = bytes.saturating_mul(a.factor);
        }
    }
    if me == 0 {
        println!(
            "# Out of bounds values : {total_wrong} {}",
            if total_wrong == 0 { "OK" } else { "WRONG" }
        );
        println!(
            "# Avg bus bandwidth    : {:.4}",
            if bus_n > 0 {
                bus_sum / bus_n as f64
            } else {
                0.0
            }
        );
    }
    Ok(if me == 0 { total_wrong } else { 0 })
}

/// The peer suite's method (shared/peers/src/mpi_coll_bench.c): per point a warm-up sized to
/// a tenth of the target, then enough calls for the target time, each timed alone and
/// followed by an untimed barrier; per-rank mean and median averaged over ranks.
fn csv_points<T: Val>(comm: &Communicator, a: &Args) -> Result<usize> {
    const SIZES: [usize; 6] = [8, 1 << 10, 64 << 10, 1 << 20, 16 << 20, 64 << 20];
    let n = comm.size();
    let me = comm.rank();
    let e = std::mem::size_of::<T>();
    let mut total_wrong = 0;
    // The suite's default OPS; with --op {O}, its OPS.
    let ops: Vec<Op> = if a.ops_given {
        a.ops.clone()
    } else {
        vec![Op::AllReduce, Op::AllGather, Op::Broadcast]
    };
    let mut samples = Vec::new();
    for &op in &ops {
        for &size in SIZES
            .iter()
            .filter(|&&s| (a.min_bytes..=a.max_bytes).contains(&s))
        {
            // Broadcast is timed in place: MPI_Bcast (what the suite's MPI peers run) has one
            // buffer, and the out-of-place form adds a copy at the root that it has not.
            let ip = op == Op::Broadcast;
            let (_, sn, rn, bytes) = shape(op, size, e, n, true);
            let mut b = Bufs {
                send: vec![T::default(); sn],
                recv: vec![T::default(); rn],
            };
            fill(&mut b, op, ReduceOp::Sum, me, n, 0, ip);
            let sum_args = Args {
                redop: ReduceOp::Sum,
                root: 0,
                ..a.clone()
            };
            comm.barrier()?;
            let t0 = Instant::now();
            call(comm, &mut b, op, &sum_args, ip)?;
            let est = max_over_ranks(comm, t0.elapsed().as_secs_f64())?;
            let nwarm = ((0.1 * a.target_secs / est.max(1e-7)) as usize).clamp(1, 50);
            comm.barrier()?;
            let t0 = Instant::now();
            for _ in 0..nwarm {
                call(comm, &mut b, op, &sum_args, ip)?;
            }
            let est = max_over_ranks(comm, t0.elapsed().as_secs_f64() / nwarm as f64)?;
            let iters = ((a.target_secs / est.max(1e-7)) as usize).clamp(3, 1000);
            samples.clear();
            comm.barrier()?;
            for _ in 0..iters {
                let s = Instant::now();
                call(comm, &mut b, op, &sum_args, ip)?;
                samples.push(s.elapsed().as_secs_f64());
                comm.barrier()?;
            }
            let mine = samples.iter().sum::<f64>() / iters as f64;
            samples.sort_by(|x, y| x.total_cmp(y));
            let p50 = if iters % 2 == 1 {
                samples[iters / 2]
            } else {
                0.5 * (samples[iters / 2 - 1] + samples[iters / 2])
            };
            let mut v = [mine, p50];
            let mut sums = [0.0f64; 2];
            comm.all_reduce(&v, &mut sums, ReduceOp::Sum)?;
            let mut mn = [0.0f64];
            comm.all_reduce(&[mine], &mut mn, ReduceOp::Min)?;
            let mx = max_over_ranks(comm, mine)?;
            fill(&mut b, op, ReduceOp::Sum, me, n, 0, ip);
            call(comm, &mut b, op, &sum_args, ip)?;
            let w = wrong(&b, op, ReduceOp::Sum, me, n, 0, ip);
            let bad = sum_over_ranks(comm, w as f64)?;
            total_wrong += bad as usize;
            v[0] = sums[0] / n as f64;
            if me == 0 {
                let algbw = bytes as f64 / v[0] / 1e9;
                println!(
                    "{},{},{},{},{},{:.3},{:.3},{:.3},{:.4},{:.4},{},{:.3}",
                    a.label,
                    n,
                    op.name(),
                    bytes,
                    iters,
                    v[0] * 1e6,
                    mn[0] * 1e6,
                    mx * 1e6,
                    algbw,
                    algbw * op.bus_factor(n),
                    if bad == 0.0 { "ok" } else { "WRONG" },
                    sums[1] / n as f64 * 1e6
                );
            }
        }
    }
    Ok(if me == 0 { total_wrong } else { 0 })
}
