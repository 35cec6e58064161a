//! call_timeline: where each of 2 ranks starts and ends every call, on the host's one clock.
//!
//! Times 2000 calls of an 8-byte allreduce or broadcast (root 0), each followed by a
//! barrier as the peers suite times a call, and prints the medians of: when rank 1 started
//! after rank 0, each rank's call, and when rank 1 ended after rank 0. With
//! `tools/call-timeline/mpi_timeline.c`, which prints the same for an MPI library, it
//! splits a latency difference into each rank's own time and the ranks' release order.
//!
//!     OXCCL_SHM=0 rankrun -n 2 target/release/examples/call_timeline allreduce|broadcast

use std::process::ExitCode;

use oxccl::{Communicator, ReduceOp};

const ITERS: usize = 2000;
const WARMUP: usize = 200;

/// Microseconds on `CLOCK_MONOTONIC`, which every process of the host shares.
fn now_us() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec to write; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    t.tv_sec as f64 * 1e6 + t.tv_nsec as f64 * 1e-3
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn run(allreduce: bool) -> Result<(), Box<dyn std::error::Error>> {
    let comm = Communicator::from_env()?;
    if comm.size() != 2 {
        return Err(format!("call_timeline needs 2 ranks, not {}", comm.size()).into());
    }
    let src = [1f32; 2];
    let mut buf = [0f32; 2];
    let call = |buf: &mut [f32]| -> oxccl::Result<()> {
        if allreduce {
            comm.all_reduce(&src, buf, ReduceOp::Sum)
        } else {
            comm.broadcast(buf, 0)
        }
    };
    for _ in 0..WARMUP {
        call(&mut buf)?;
        comm.barrier()?;
    }
    // Starts then ends, rank 0's then rank 1's after the gather.
    let mut mine = vec![0f64; 2 * ITERS];
    for i in 0..ITERS {
        mine[i] = now_us();
        call(&mut buf)?;
        mine[ITERS + i] = now_us();
        comm.barrier()?;
    }
    let mut all = vec![0f64; 4 * ITERS];
    comm.all_gather(&mine, &mut all)?;
    if comm.rank() == 0 {
        let (r0, r1) = all.split_at(2 * ITERS);
        let per = |f: &dyn Fn(usize) -> f64| median((0..ITERS).map(f).collect());
        println!(
            "{}: medians of {ITERS} calls, us: rank 1 starts {:.2} after rank 0, \
             rank 0's call {:.2}, rank 1's call {:.2}, rank 1 ends {:.2} after rank 0",
            if allreduce { "allreduce" } else { "broadcast" },
            per(&|i| r1[i] - r0[i]),
            per(&|i| r0[ITERS + i] - r0[i]),
            per(&|i| r1[ITERS + i] - r1[i]),
            per(&|i| r1[ITERS + i] - r0[ITERS + i]),
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    let allreduce = match std::env::args().nth(1).as_deref() {
        Some("allreduce") => true,
        Some("broadcast") => false,
        _ => {
            eprintln!("usage: call_timeline allreduce|broadcast");
            return ExitCode::from(2);
        }
    };
    match run(allreduce) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("call_timeline: {e}");
            ExitCode::FAILURE
        }
    }
}
