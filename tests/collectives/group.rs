//! Grouped calls, pre-multiplied sums and the async error, over mem and TCP threads.

use std::time::{Duration, Instant};

use super::common::*;
use oxccl::transport::mem::MemFaults;
use oxccl::{Communicator, Error, ErrorKind, ReduceOp, Result, F16};

fn fail(c: &Communicator, what: String) -> Error {
    Error::internal(format!("rank {}: {what}", c.rank()))
}

/// 64 small allreduces, two types and two ops (fused per type and op), a large one (not
/// fused), an allgather, a broadcast, an alltoall and a ring exchange, all in one group.
fn mixed_group(c: &Communicator) -> Result<()> {
    let (n, me) = (c.size(), c.rank());
    let mut small: Vec<Vec<f32>> = (0..64)
        .map(|k| (0..256).map(|i| ((k + i + me) % 5) as f32).collect())
        .collect();
    let mut ints: Vec<Vec<i32>> = (0..8).map(|k| vec![(me * 3 + k) as i32; 17]).collect();
    let big_in: Vec<f32> = (0..100_003).map(|i| ((i + me) % 3) as f32).collect();
    let mut big = vec![0.0f32; big_in.len()];
    let mine = vec![me as u8; 5];
    let mut all = vec![0u8; 5 * n];
    let mut bc: Vec<i64> = (0..9).map(|i| if me == 1 % n { i } else { -1 }).collect();
    let a2a_in: Vec<u32> = (0..3 * n).map(|x| (me * 100 + x / 3) as u32).collect();
    let mut a2a = vec![0u32; 3 * n];
    let out: Vec<f32> = vec![me as f32; 33];
    let mut got = vec![0.0f32; 33];
    c.group(|g| {
        for (k, v) in small.iter_mut().enumerate() {
            let op = if k % 2 == 0 {
                ReduceOp::Sum
            } else {
                ReduceOp::Max
            };
            g.all_reduce_in_place(v, op)?;
        }
        for v in ints.iter_mut() {
            g.all_reduce_in_place(v, ReduceOp::Sum)?;
        }
        g.all_reduce(&big_in, &mut big, ReduceOp::Sum)?;
        g.all_gather(&mine, &mut all)?;
        g.broadcast(&mut bc, 1 % n)?;
        g.all_to_all(&a2a_in, &mut a2a)?;
        if n > 1 {
            g.send(&out, (me + 1) % n)?;
            g.recv(&mut got, (me + n - 1) % n)?;
        }
        Ok(())
    })?;
    for (k, v) in small.iter().enumerate() {
        for (i, x) in v.iter().enumerate() {
            let vals = (0..n).map(|r| ((k + i + r) % 5) as f32);
            let want = if k % 2 == 0 {
                vals.sum()
            } else {
                vals.fold(0.0, f32::max)
            };
            if *x != want {
                return Err(fail(
                    c,
                    format!("grouped allreduce {k} [{i}]: {x}, want {want}"),
                ));
            }
        }
    }
    for (k, v) in ints.iter().enumerate() {
        let want: i32 = (0..n).map(|r| (r * 3 + k) as i32).sum();
        if v.iter().any(|&x| x != want) {
            return Err(fail(
                c,
                format!("grouped int allreduce {k}: {v:?}, want {want}"),
            ));
        }
    }
    for (i, x) in big.iter().enumerate() {
        let want: f32 = (0..n).map(|r| ((i + r) % 3) as f32).sum();
        if *x != want {
            return Err(fail(
                c,
                format!("grouped large allreduce [{i}]: {x}, want {want}"),
            ));
        }
    }
    if all != (0..n).flat_map(|r| [r as u8; 5]).collect::<Vec<_>>() {
        return Err(fail(c, format!("grouped allgather: {all:?}")));
    }
    if bc != (0..9).collect::<Vec<i64>>() {
        return Err(fail(c, format!("grouped broadcast: {bc:?}")));
    }
    let want: Vec<u32> = (0..3 * n).map(|x| ((x / 3) * 100 + me) as u32).collect();
    if a2a != want {
        return Err(fail(c, format!("grouped alltoall: {a2a:?}, want {want:?}")));
    }
    if n > 1 && got.iter().any(|&x| x != ((me + n - 1) % n) as f32) {
        return Err(fail(c, format!("grouped recv: {got:?}")));
    }
    Ok(())
}

#[test]
fn groups_run_every_call_and_fuse_small_allreduces() {
    for n in 1..=5 {
        let faults = MemFaults {
            backpressure: 0.2,
            delay: 0.3,
            connect_delay_polls: 3,
            max_in_flight: 4,
        };
        for (r, x) in run(n, Net::Mem(n as u64, faults), config(None, 30), mixed_group)
            .into_iter()
            .enumerate()
        {
            x.unwrap_or_else(|e| panic!("mem, {n} ranks, rank {r}: {e}"));
        }
    }
    for n in [2, 3, 4] {
        for (r, x) in run(n, Net::Tcp, config(None, 30), mixed_group)
            .into_iter()
            .enumerate()
        {
            x.unwrap_or_else(|e| panic!("tcp, {n} ranks, rank {r}: {e}"));
        }
    }
}

#[test]
fn groups_that_differ_between_ranks_fail_with_invalid_usage_on_every_rank() {
    let res = run(3, Net::Tcp, config(None, 60), |c| {
        let mut a = vec![1.0f32; 64];
        let mut b = vec![1.0f32; 64];
        let mut d = vec![1.0f32; 64];
        let three = c.rank() == 0;
        let r = c.group(|g| {
            g.all_reduce_in_place(&mut a, ReduceOp::Sum)?;
            g.all_reduce_in_place(&mut b, ReduceOp::Sum)?;
            if three {
                g.all_reduce_in_place(&mut d, ReduceOp::Sum)?;
            }
            Ok(())
        });
        // A rank whose group went through fails at its next call.
        r.and_then(|()| c.barrier())
    });
    let errs: Vec<Error> = res
        .into_iter()
        .enumerate()
        .map(|(r, x)| x.expect_err(&format!("rank {r} must fail")))
        .collect();
    for e in &errs {
        assert_eq!(e.kind(), ErrorKind::InvalidUsage, "{errs:?}");
        // The fused allreduce of rank 0 holds 192 elements, the others' 128.
        assert!(
            e.to_string().contains("count 192") && e.to_string().contains("count 128"),
            "{errs:?}"
        );
    }
}

#[test]
fn a_refused_call_in_a_group_runs_nothing_and_leaves_the_communicator_usable() {
    let res = run(
        2,
        Net::Mem(3, MemFaults::default()),
        config(None, 10),
        |c| {
            let mut a = vec![1.0f32; 8];
            let mut b = [0u8; 4];
            let r = c.group(|g| {
                g.all_reduce_in_place(&mut a, ReduceOp::Sum)?;
                g.broadcast(&mut b, 7)
            });
            match r {
                Err(e)
                    if e.kind() == ErrorKind::InvalidArgument
                        && e.to_string().contains("root 7") => {}
                other => return Err(fail(c, format!("expected InvalidArgument, got {other:?}"))),
            }
            if a != vec![1.0f32; 8] {
                return Err(fail(c, "a refused group ran a call".into()));
            }
            c.all_reduce_in_place(&mut a, ReduceOp::Sum)?;
            if a != vec![2.0f32; 8] {
                return Err(fail(c, format!("after a refused group: {a:?}")));
            }
            // A bitwise op on floats is refused before anything is numbered.
            let r = c.all_reduce_in_place(&mut a, ReduceOp::BAnd);
            match r {
                Err(e)
                    if e.kind() == ErrorKind::InvalidArgument && e.to_string().contains("band") => {
                }
                other => {
                    return Err(fail(
                        c,
                        format!("expected InvalidArgument for band, got {other:?}"),
                    ))
                }
            }
            let mut bits = vec![0b1010u32 | c.rank() as u32; 3];
            c.all_reduce_in_place(&mut bits, ReduceOp::BOr)?;
            if bits != vec![0b1011u32; 3] {
                return Err(fail(c, format!("bor: {bits:?}")));
            }
            Ok(())
        },
    );
    for (r, x) in res.into_iter().enumerate() {
        x.unwrap_or_else(|e| panic!("rank {r}: {e}"));
    }
}

#[test]
fn premul_sums_scale_each_input_once_and_agree_bitwise() {
    for net in [Net::Mem(5, MemFaults::default()), Net::Tcp] {
        let res = run(3, net, config(None, 30), |c| {
            let (n, me) = (c.size(), c.rank());
            // f32: noisy inputs; the results must be equal on every rank.
            let x: Vec<f32> = (0..1001)
                .map(|i| ((i * 31 + me * 17) % 97) as f32 / 7.3)
                .collect();
            let mut y = vec![0.0f32; x.len()];
            c.all_reduce_premul(&x, &mut y, 0.37f32)?;
            // i32 and f16: exact values, against the serial reference.
            let xi: Vec<i32> = (0..10).map(|i| (i + me) as i32).collect();
            let mut yi = vec![0i32; 10];
            c.all_reduce_premul(&xi, &mut yi, -3)?;
            for (i, v) in yi.iter().enumerate() {
                let want: i32 = (0..n).map(|r| -3 * (i + r) as i32).sum();
                if *v != want {
                    return Err(fail(c, format!("premul i32 [{i}]: {v}, want {want}")));
                }
            }
            let xh: Vec<F16> = (0..8).map(|i| F16::from_f32((i + me) as f32)).collect();
            let mut yh = vec![F16::from_f32(0.0); 8];
            c.all_reduce_premul(&xh, &mut yh, F16::from_f32(0.5))?;
            for (i, v) in yh.iter().enumerate() {
                let want: f32 = (0..n).map(|r| 0.5 * (i + r) as f32).sum();
                if v.to_f32() != want {
                    return Err(fail(
                        c,
                        format!("premul f16 [{i}]: {}, want {want}", v.to_f32()),
                    ));
                }
            }
            // reduce-scatter and reduce, and a group mixing a premul sum with a plain one.
            let xs: Vec<i64> = (0..3 * n).map(|i| (i * (me + 1)) as i64).collect();
            let mut ys = vec![0i64; 3];
            c.reduce_scatter_premul(&xs, &mut ys, 2)?;
            for (e, v) in ys.iter().enumerate() {
                let i = me * 3 + e;
                let want: i64 = (0..n).map(|r| 2 * (i * (r + 1)) as i64).sum();
                if *v != want {
                    return Err(fail(
                        c,
                        format!("premul reduce_scatter [{e}]: {v}, want {want}"),
                    ));
                }
            }
            let mut yr = vec![0i32; if me == 0 { 10 } else { 0 }];
            c.reduce_premul(&xi, &mut yr, 5, 0)?;
            if me == 0
                && yr
                    .iter()
                    .enumerate()
                    .any(|(i, v)| *v != (0..n).map(|r| 5 * (i + r) as i32).sum::<i32>())
            {
                return Err(fail(c, format!("premul reduce: {yr:?}")));
            }
            let (mut g1, mut g2) = (vec![0i32; 10], xi.clone());
            c.group(|g| {
                g.all_reduce_premul(&xi, &mut g1, 7)?;
                g.all_reduce_in_place(&mut g2, ReduceOp::Sum)
            })?;
            for i in 0..10 {
                let s: i32 = (0..n).map(|r| (i + r) as i32).sum();
                if g1[i] != 7 * s || g2[i] != s {
                    return Err(fail(
                        c,
                        format!("grouped premul [{i}]: {} {}", g1[i], g2[i]),
                    ));
                }
            }
            Ok(y.iter().map(|v| v.to_bits()).collect::<Vec<u32>>())
        });
        let mut first = None;
        for (r, x) in res.into_iter().enumerate() {
            let bits = x.unwrap_or_else(|e| panic!("rank {r}: {e}"));
            match &first {
                None => first = Some(bits),
                Some(f) => assert_eq!(f, &bits, "rank {r}: premul sum differs bitwise"),
            }
        }
    }
}

#[test]
fn async_error_is_seen_while_another_thread_holds_the_communicator() {
    let res = run(2, Net::Tcp, config(None, 30), |c| {
        if c.rank() == 1 {
            // Joins nothing: rank 0's allreduce waits for it until aborted.
            std::thread::sleep(Duration::from_millis(1500));
            return Ok(None);
        }
        let h = c.abort_handle();
        std::thread::scope(|s| {
            let call = s.spawn(|| c.all_reduce_in_place(&mut [1.0f32; 4], ReduceOp::Sum));
            std::thread::sleep(Duration::from_millis(300));
            if let Some(e) = c.async_error() {
                return Err(fail(c, format!("async error before any failure: {e}")));
            }
            h.abort();
            let t0 = Instant::now();
            let seen = c.async_error();
            let r = call
                .join()
                .map_err(|_| fail(c, "call thread panicked".into()))?;
            match (seen, r) {
                (Some(e), Err(_)) if e.kind() == ErrorKind::InvalidUsage => Ok(Some(t0.elapsed())),
                (seen, r) => Err(fail(c, format!("async error {seen:?}, call {r:?}"))),
            }
        })
    });
    for (r, x) in res.into_iter().enumerate() {
        x.unwrap_or_else(|e| panic!("rank {r}: {e}"));
    }
}
