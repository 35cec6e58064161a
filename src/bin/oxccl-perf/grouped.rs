//! `--calls N`: N float allreduces of each size per iteration, issued as N separate calls
//! and as one group (`Communicator::group`), side by side: what grouping (NCCL's
//! `ncclGroupStart`/`End`, PyTorch's coalesced calls) buys for many small tensors.

use std::time::Instant;

use crate::args::Args;
use oxccl::{Communicator, ReduceOp, Result};

fn fill(bufs: &mut [Vec<f32>], rank: usize) {
    for (k, b) in bufs.iter_mut().enumerate() {
        for (i, x) in b.iter_mut().enumerate() {
            *x = ((k + i + rank) % 5) as f32;
        }
    }
}

fn wrong(bufs: &[Vec<f32>], n: usize) -> usize {
    let mut bad = 0;
    for (k, b) in bufs.iter().enumerate() {
        for (i, x) in b.iter().enumerate() {
            let want: f32 = (0..n).map(|r| ((k + i + r) % 5) as f32).sum();
            bad += usize::from(*x != want);
        }
    }
    bad
}

fn separate(comm: &Communicator, bufs: &mut [Vec<f32>]) -> Result<()> {
    for b in bufs.iter_mut() {
        comm.all_reduce_in_place(b, ReduceOp::Sum)?;
    }
    Ok(())
}

fn grouped(comm: &Communicator, bufs: &mut [Vec<f32>]) -> Result<()> {
    comm.group(|g| {
        for b in bufs.iter_mut() {
            g.all_reduce_in_place(b, ReduceOp::Sum)?;
        }
        Ok(())
    })
}

type Runner = fn(&Communicator, &mut [Vec<f32>]) -> Result<()>;

/// Mean time per iteration (slowest rank), and wrong elements over all ranks.
fn time(comm: &Communicator, bufs: &mut [Vec<f32>], a: &Args, f: Runner) -> Result<(f64, usize)> {
    let (n, me) = (comm.size(), comm.rank());
    for _ in 0..a.warmup {
        f(comm, bufs)?;
    }
    comm.barrier()?;
    let t0 = Instant::now();
    for _ in 0..a.iters {
        f(comm, bufs)?;
    }
    let t = t0.elapsed().as_secs_f64() / a.iters as f64;
    let mut tmax = [0.0f64];
    comm.all_reduce(&[t], &mut tmax, ReduceOp::Max)?;
    let mut bad = 0;
    if a.check {
        fill(bufs, me);
        f(comm, bufs)?;
        let mut total = [0u64];
        comm.all_reduce(&[wrong(bufs, n) as u64], &mut total, ReduceOp::Sum)?;
        bad = total[0] as usize;
    }
    Ok((tmax[0], bad))
}

/// The table of `--calls N`; returns the number of wrong results.
pub fn points(comm: &Communicator, a: &Args, calls: usize) -> Result<usize> {
    let me = comm.rank();
    if me == 0 {
        println!(
            "# oxccl-perf --calls {calls}: {} ranks as {}, transport {}, float sum allreduce in place",
            comm.size(),
            a.ranks_are,
            comm.transport()
        );
        println!(
            "#{:>11} {:>6} {:>12} {:>12} {:>8} {:>6}",
            "size (B)", "calls", "separate us", "grouped us", "speedup", "#wrong"
        );
    }
    let mut total_wrong = 0;
    let mut bytes = a.min_bytes;
    while bytes <= a.max_bytes {
        let count = (bytes / 4).max(1);
        let mut bufs: Vec<Vec<f32>> = vec![vec![0.0; count]; calls];
        fill(&mut bufs, me);
        let (ts, ws) = time(comm, &mut bufs, a, separate)?;
        fill(&mut bufs, me);
        let (tg, wg) = time(comm, &mut bufs, a, grouped)?;
        total_wrong += ws + wg;
        if me == 0 {
            println!(
                "{:>12} {:>6} {:>12.2} {:>12.2} {:>7.1}x {:>6}",
                count * 4,
                calls,
                ts * 1e6,
                tg * 1e6,
                ts / tg,
                ws + wg
            );
        }
        bytes = bytes.saturating_mul(a.factor);
    }
    if me == 0 {
        println!(
            "# Out of bounds values : {total_wrong} {}",
            if total_wrong == 0 { "OK" } else { "WRONG" }
        );
    }
    Ok(if me == 0 { total_wrong } else { 0 })
}
