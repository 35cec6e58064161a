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
    if let Err(why) = one_cause(label, res, needles) {
        panic!("{why}");
    }
}

/// As [`expect_every_rank_invalid_usage`], as a verdict.
fn one_cause(
    label: &str,
    res: Vec<Result<Duration>>,
    needles: &[&str],
) -> std::result::Result<(), String> {
    let mut msgs = Vec::new();
    for (r, x) in res.into_iter().enumerate() {
        let e = match x {
            Ok(_) => return Err(format!("{label}: rank {r} did not fail")),
            Err(e) => e,
        };
        if e.kind() != ErrorKind::InvalidUsage {
            return Err(format!("{label}: rank {r}: {e}"));
        }
        msgs.push(e.to_string());
    }
    // The rank that detected a mismatch in a message reports it itself; the others (and
    // all ranks, when the channel found ranks stalled in different calls) quote the first
    // cause the job's news carried.
    let origins: Vec<&String> = msgs
        .iter()
        .filter(|m| !m.contains("the job failed at rank"))
        .collect();
    if origins.len() > 1 {
        return Err(format!("{label}: more than one cause: {msgs:?}"));
    }
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
        if !m.contains(cause.as_str()) {
            return Err(format!(
                "{label}: rank {r}: '{m}' lacks the cause '{cause}'"
            ));
        }
        for n in needles {
            if !m.contains(n) {
                return Err(format!("{label}: rank {r}: '{m}' lacks '{n}'"));
            }
        }
    }
    Ok(())
}

/// One disagreement of the trial matrix: what the last rank does differently.
#[derive(Clone, Copy, Debug)]
enum Odd {
    Collective,
    Count,
    Dtype,
    Root,
    Op,
    ExtraCall,
}

/// The call every rank makes (the last rank's differs as `odd` says), then a barrier.
fn disagree(c: &Communicator, odd: Odd) -> Result<()> {
    use oxccl::ReduceOp;
    let me_odd = c.rank() + 1 == c.size();
    let mut v = vec![1.0f32; 100];
    match (odd, me_odd) {
        (Odd::Collective, true) => c.broadcast(&mut v, 0)?,
        (Odd::Count, true) => c.all_reduce_in_place(&mut v[..99], ReduceOp::Sum)?,
        (Odd::Dtype, true) => c.all_reduce_in_place(&mut [1i32; 100], ReduceOp::Sum)?,
        (Odd::Root, odd_rank) => c.broadcast(&mut v, usize::from(odd_rank))?,
        (Odd::Op, true) => c.all_reduce_in_place(&mut v, ReduceOp::Max)?,
        (Odd::ExtraCall, true) => {
            c.all_reduce_in_place(&mut [0u8; 8], ReduceOp::Sum)?;
            c.all_reduce_in_place(&mut v, ReduceOp::Sum)?
        }
        _ => c.all_reduce_in_place(&mut v, ReduceOp::Sum)?,
    }
    c.barrier()
}

/// The mismatch matrix: every kind of disagreement at 3 and 5 ranks over tcp and mem,
/// `OXCCL_TRIALS` times each (default 3): every rank must fail with InvalidUsage and one
/// cause, each within 1 s. Prints the counts. Ignored by default (about 0.1 s a trial), and
/// failing today in one cell: at 5 ranks, broadcast against allreduce is found only through
/// the stall records (no message reveals it), after about 1.01 s, and some ranks then report
/// the Remote echo instead of the cause.
#[test]
#[ignore]
fn mismatch_trial_matrix() {
    let trials: usize = std::env::var("OXCCL_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let odds = [
        Odd::Collective,
        Odd::Count,
        Odd::Dtype,
        Odd::Root,
        Odd::Op,
        Odd::ExtraCall,
    ];
    // OXCCL_CELLS (e.g. "tcp 5 Collective,mem 3 Root") runs only the cells it names.
    let cells = std::env::var("OXCCL_CELLS").unwrap_or_default();
    let mut failures = Vec::new();
    for net in ["tcp", "shm", "mem"] {
        for n in [3, 5] {
            for odd in odds {
                let cell = format!("{net} {n} {odd:?}");
                if !cells.is_empty() && !cells.split(',').any(|c| c.trim() == cell) {
                    continue;
                }
                let mut ok = 0;
                let mut slowest = Duration::ZERO;
                for t in 0..trials {
                    let netv = match net {
                        "tcp" => Net::Tcp,
                        "shm" => Net::Shm,
                        _ => Net::Mem(t as u64, MemFaults::default()),
                    };
                    let res = run(n, netv, config(None, 30), move |c| {
                        let t0 = Instant::now();
                        match disagree(c, odd) {
                            Ok(()) => Ok(t0.elapsed()),
                            Err(e) => Err(Error::new(
                                e.kind(),
                                format!("{} [after {:?}]", e.message(), t0.elapsed()),
                            )),
                        }
                    });
                    let took: Vec<Duration> = res
                        .iter()
                        .filter_map(|r| r.as_ref().err())
                        .filter_map(|e| {
                            e.message()
                                .rsplit("[after ")
                                .next()
                                .and_then(|s| s.strip_suffix(']'))
                                .map(String::from)
                        })
                        .filter_map(|s| parse_debug_duration(&s))
                        .collect();
                    let worst = took.iter().copied().max().unwrap_or(Duration::MAX);
                    slowest = slowest.max(worst);
                    let stripped: Vec<Result<Duration>> = res
                        .into_iter()
                        .map(|r| {
                            r.map_err(|e| {
                                let m = e.message();
                                Error::new(
                                    e.kind(),
                                    m[..m.rfind(" [after ").unwrap_or(m.len())].to_string(),
                                )
                            })
                        })
                        .collect();
                    match one_cause(&format!("{net} {n} {odd:?} #{t}"), stripped, &[]) {
                        Ok(()) if worst <= Duration::from_secs(1) => ok += 1,
                        Ok(()) => failures.push(format!("{net} {n} {odd:?} #{t}: took {worst:?}")),
                        Err(why) => failures.push(why),
                    }
                }
                eprintln!("{net} {n} ranks {odd:?}: {ok}/{trials} (slowest rank {slowest:?})");
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures: {:#?}",
        failures.len(),
        failures
    );
}

/// A `Duration`'s `Debug` text (`12.3ms`, `1.2s`, `800µs`, `5ns`).
fn parse_debug_duration(s: &str) -> Option<Duration> {
    let (num, unit) = s.split_at(s.find(|c: char| c.is_alphabetic() || c == 'µ')?);
    let v: f64 = num.parse().ok()?;
    let secs = match unit {
        "s" => v,
        "ms" => v / 1e3,
        "µs" => v / 1e6,
        "ns" => v / 1e9,
        _ => return None,
    };
    Some(Duration::from_secs_f64(secs))
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
