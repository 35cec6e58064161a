//! The job-wide error channel: a failure one rank detects reaches every rank (in the call
//! or the next one), and ranks stalled in different calls at one sequence number find out
//! that they disagree, instead of waiting for the timeout.

use std::time::{Duration, Instant};

use super::common::*;
use oxccl::transport::mem::MemFaults;
use oxccl::{Communicator, Error, ErrorKind, Result};

/// Runs `f`, then a barrier if `f` succeeded: the error either ends with (the call's, or
/// the next call's), and how long it took.
fn call_then_barrier(
    c: &Communicator,
    f: impl FnOnce(&Communicator) -> Result<()>,
) -> Result<Duration> {
    let t0 = Instant::now();
    match f(c).and_then(|()| c.barrier()) {
        Ok(()) => Err(Error::internal(format!(
            "rank {}: no failure reached this rank",
            c.rank()
        ))),
        Err(e) if e.kind() == ErrorKind::InvalidUsage => {
            let _ = t0;
            Err(e)
        }
        Err(e) => Err(e),
    }
}

/// Every rank failed with InvalidUsage, with one cause: the rank that detected it reports
/// its own message, the others quote it (the first cause the job's news carried).
fn expect_every_rank_invalid_usage(label: &str, res: Vec<Result<Duration>>, needles: &[&str]) {
    let msgs: Vec<String> = res
        .into_iter()
        .enumerate()
        .map(|(r, x)| {
            let e = x.expect_err("every rank fails");
            assert_eq!(e.kind(), ErrorKind::InvalidUsage, "{label}: rank {r}: {e}");
            e.to_string()
        })
        .collect();
    // The rank that detected a mismatch in a message reports it itself; the others (and
    // all ranks, when the channel found ranks stalled in different calls) quote the first
    // cause the job's news carried.
    let origins: Vec<&String> = msgs
        .iter()
        .filter(|m| !m.contains("the job failed at rank"))
        .collect();
    assert!(origins.len() <= 1, "{label}: more than one cause: {msgs:?}");
    let cause: String = match origins.first() {
        Some(o) => o.strip_prefix("invalid usage: ").unwrap_or(o).to_string(),
        None => {
            let m = &msgs[0];
            let at = m.find("the job failed at rank ").map_or(0, |i| i + 23);
            let rest = &m[at..];
            let rest = rest.split_once(": ").map_or(rest, |x| x.1);
            rest.split(" (seen here as")
                .next()
                .unwrap_or(rest)
                .to_string()
        }
    };
    for (r, m) in msgs.iter().enumerate() {
        assert!(
            m.contains(cause.as_str()),
            "{label}: rank {r}: '{m}' lacks the cause '{cause}'"
        );
        for n in needles {
            assert!(m.contains(n), "{label}: rank {r}: '{m}' lacks '{n}'");
        }
    }
}

#[test]
fn a_gather_with_different_roots_fails_on_every_rank_naming_both_calls() {
    for (label, net) in [
        ("tcp", Net::Tcp),
        ("mem", Net::Mem(11, MemFaults::default())),
    ] {
        let t0 = Instant::now();
        let res = run(3, net, config(None, 60), |c| {
            call_then_barrier(c, |c| {
                let root = if c.rank() == 2 { 1 } else { 0 };
                let mut out = vec![0.0f32; 12];
                c.gather(&[1.0f32; 4], &mut out, root)
            })
        });
        let took = t0.elapsed();
        // Which two calls meet first depends on timing (rank 2 may finish its gather and
        // reach the barrier), but every rank reports the same first cause.
        expect_every_rank_invalid_usage(label, res, &[]);
        assert!(
            took < Duration::from_secs(10),
            "{label}: took {took:?} (timeout 60 s)"
        );
    }
}

#[test]
fn an_alltoallv_disagreement_reaches_the_ranks_outside_the_pair() {
    for (label, net) in [
        ("tcp", Net::Tcp),
        ("mem", Net::Mem(12, MemFaults::default())),
    ] {
        let res = run(4, net, config(None, 60), |c| {
            call_then_barrier(c, |c| {
                let me = c.rank();
                // Rank 0 sends 3 elements to rank 1, which expects 2; every other pair agrees.
                let to: Vec<usize> = (0..4)
                    .map(|j| if me == 0 && j == 1 { 3 } else { 2 })
                    .collect();
                let from = vec![2usize; 4];
                let sd: Vec<usize> = (0..4).map(|j| j * 3).collect();
                let rd: Vec<usize> = (0..4).map(|j| j * 2).collect();
                let send = vec![1.0f32; 12];
                let mut recv = vec![0.0f32; 8];
                c.all_to_all_v(&send, &to, &sd, &mut recv, &from, &rd)
            })
        });
        expect_every_rank_invalid_usage(label, res, &["alltoallv #1"]);
    }
}

#[test]
fn ranks_in_different_collectives_all_learn_the_mismatch() {
    // Rank 3 calls broadcast where the others call allreduce: whoever sees it first tells
    // everyone.
    let res = run(4, Net::Tcp, config(None, 60), |c| {
        call_then_barrier(c, |c| {
            let mut v = vec![1.0f32; 100];
            if c.rank() == 3 {
                c.broadcast(&mut v, 0)
            } else {
                c.all_reduce_in_place(&mut v, oxccl::ReduceOp::Sum)
            }
        })
    });
    expect_every_rank_invalid_usage(
        "allreduce vs broadcast",
        res,
        &["allreduce #1", "broadcast #1"],
    );
}
