//! Two threads calling one communicator at once: the call that comes second is refused with
//! InvalidUsage naming both calls, and the job fails with that cause (the running call and
//! every other rank too), so that no call is paired with another thread's call elsewhere.

use std::time::{Duration, Instant};

use super::common::*;
use oxccl::transport::mem::MemFaults;
use oxccl::{Communicator, ErrorKind, ReduceOp, Result};

/// What one rank saw: the first thread's call, the second's, and how long it all took.
type Seen = (Result<()>, Result<()>, Duration);

/// Thread one waits in a receive no rank answers; thread two starts an allreduce beside it.
fn recv_then_allreduce(c: &Communicator) -> Result<Seen> {
    let t0 = Instant::now();
    let peer = (c.rank() + 1) % c.size();
    std::thread::scope(|s| {
        let first = s.spawn(|| {
            let mut b = [0f32; 4];
            c.recv(&mut b, peer)
        });
        std::thread::sleep(Duration::from_millis(200));
        let mut v = vec![1.0f32; 1000];
        let second = c.all_reduce_in_place(&mut v, ReduceOp::Sum);
        let first = first
            .join()
            .unwrap_or_else(|_| Err(oxccl::Error::internal("thread panicked")));
        Ok((first, second, t0.elapsed()))
    })
}

#[test]
fn a_second_thread_is_refused_and_the_job_fails() {
    for (name, net) in [
        ("tcp", Net::Tcp),
        ("mem", Net::Mem(11, MemFaults::default())),
    ] {
        let res = run(3, net, config(None, 30), recv_then_allreduce);
        for (r, x) in res.into_iter().enumerate() {
            let (first, second, took) = x.unwrap_or_else(|e| panic!("{name} rank {r}: {e}"));
            let second = second.expect_err("the second thread's call must be refused");
            assert_eq!(
                second.kind(),
                ErrorKind::InvalidUsage,
                "{name} rank {r}: {second}"
            );
            assert!(
                second.message().contains(&format!(
                    "rank {r}: allreduce called while another thread's recv is running"
                )),
                "{name} rank {r}: {second}"
            );
            // The running call ends with the same cause, at once.
            let first = first.expect_err("the running call must fail");
            assert_eq!(
                first.kind(),
                ErrorKind::InvalidUsage,
                "{name} rank {r}: {first}"
            );
            assert!(
                first.message().contains("called while another thread's"),
                "{name} rank {r}: {first}"
            );
            assert!(
                took < Duration::from_secs(2),
                "{name} rank {r}: took {took:?}"
            );
        }
    }
}

/// Both threads of every rank start an allreduce at once (released together), with
/// values that tell the threads apart. Every call must either fail with InvalidUsage or
/// return its own thread's sum: never the other thread's data.
fn racing_allreduces(c: &Communicator, count: usize) -> Result<(usize, usize, usize)> {
    let n = c.size() as f32;
    // Connections up first, so that the racing calls are as short as they can be.
    c.barrier()?;
    let go = std::sync::Barrier::new(2);
    std::thread::scope(|s| {
        let hs: Vec<_> = [1.0f32, 1000.0]
            .into_iter()
            .map(|val| {
                let go = &go;
                s.spawn(move || {
                    let mut v = vec![val; count];
                    go.wait();
                    c.all_reduce_in_place(&mut v, ReduceOp::Sum).map(|()| v)
                })
            })
            .collect();
        let (mut ok, mut refused, mut wrong) = (0, 0, 0);
        for (h, val) in hs.into_iter().zip([1.0f32, 1000.0]) {
            match h.join() {
                Ok(Ok(v)) if v.iter().all(|&x| x == val * n) => ok += 1,
                Ok(Ok(_)) => wrong += 1,
                Ok(Err(e)) if e.kind() == ErrorKind::InvalidUsage => refused += 1,
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(oxccl::Error::internal("thread panicked")),
            }
        }
        Ok((ok, refused, wrong))
    })
}

/// `OXCCL_TRIALS` (default 3) jobs of racing allreduces at 3 ranks over tcp and mem, at a
/// small and a large count: prints how many calls succeeded, were refused, or returned
/// another thread's data (which must be none). Ignored by default.
#[test]
#[ignore]
fn racing_threads_trials() {
    let trials: usize = std::env::var("OXCCL_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let mut total_wrong = 0;
    for name in ["tcp", "mem"] {
        for count in [16usize, 1 << 20] {
            let (mut ok, mut refused, mut wrong) = (0, 0, 0);
            for t in 0..trials {
                let net = if name == "tcp" {
                    Net::Tcp
                } else {
                    Net::Mem(t as u64, MemFaults::default())
                };
                for x in run(3, net, config(None, 30), move |c| {
                    racing_allreduces(c, count)
                }) {
                    let (o, r, w) = x.unwrap_or_else(|e| panic!("{name} {count}: {e}"));
                    ok += o;
                    refused += r;
                    wrong += w;
                }
            }
            eprintln!(
                "{name} 3 ranks, count {count}: {trials} jobs, calls ok {ok}, refused {refused}, \
                 wrong {wrong}"
            );
            total_wrong += wrong;
        }
    }
    assert_eq!(total_wrong, 0, "calls returned another thread's data");
}
