//! Collective correctness over the mem transport (seeded faults) and over TCP with threads,
//! against a serial reference, with bitwise equality across ranks; and the failure cases:
//! mismatched calls, abort, timeout and a dead peer. Also the transport conformance suite
//! (`tests/conformance`) on every backend that runs without RDMA devices.

#[path = "collectives/abuse.rs"]
mod abuse;
#[path = "collectives/channel.rs"]
mod channel;
mod common;

/// The backends the transport conformance suite (`tests/conformance`) runs on here, one
/// line each: `conformance::<backend>::<property>`.
macro_rules! conformance_backends {
    () => {
        // mem has no wire: no stranger can reach its listeners.
        conformance_tests!(mem, backends::mem);
        conformance_tests!(tcp, backends::tcp, stranger: backends::TCP_STRANGER);
        conformance_tests!(shm, backends::shm, stranger: backends::SHM_STRANGER);
        conformance_tests!(
            fabric_tcp,
            backends::fabric_tcp,
            stranger: backends::FABRIC_TCP_STRANGER
        );
        // libfabric's shm provider names endpoints by shared memory, not sockets: no
        // stranger can reach them.
        conformance_tests!(fabric_shm, backends::fabric_shm);
        conformance_tests!(hybrid, backends::hybrid, stranger: backends::HYBRID_STRANGER);
        conformance_tests!(
            hybrid_net,
            backends::hybrid_net,
            stranger: backends::HYBRID_STRANGER
        );
    };
}
mod conformance;

#[path = "collectives/exchange.rs"]
mod exchange;
#[path = "collectives/group.rs"]
mod group;
#[path = "collectives/threads.rs"]
mod threads;

use std::time::{Duration, Instant};

use common::*;
use oxccl::transport::mem::MemFaults;
use oxccl::{
    Bf16, Communicator, DataType, Error, ErrorKind, ReduceOp, Result, F16, F8E4M3, F8E5M2,
};

fn fail(c: &Communicator, what: String) -> Error {
    Error::internal(format!("rank {}: {what}", c.rank()))
}

/// Every collective at every count for one element type; returns a hash of the results of
/// a float-valued allreduce (for the bitwise comparison across ranks).
fn all_collectives<T: Val>(c: &Communicator, counts: &[usize], ops: &[ReduceOp]) -> Result<u64> {
    let (n, me) = (c.size(), c.rank());
    for &count in counts {
        for &op in ops {
            let send: Vec<T> = (0..count).map(|i| T::v(input(op, n, me, i))).collect();
            let mut recv = vec![T::default(); count];
            c.all_reduce(&send, &mut recv, op)?;
            let mut inplace = send.clone();
            c.all_reduce_in_place(&mut inplace, op)?;
            for (i, (&x, &y)) in recv.iter().zip(&inplace).enumerate() {
                let want = reference(op, n, i, T::FLOAT);
                if !close(x, want, op) || !close(y, want, op) {
                    return Err(fail(
                        c,
                        format!(
                            "allreduce {op:?} count {count} [{i}]: {:?}/{:?}, want {want}",
                            recv[i], inplace[i]
                        ),
                    ));
                }
            }
            let root = count % n;
            let mut out = vec![T::default(); if me == root { count } else { 0 }];
            c.reduce(&send, &mut out, op, root)?;
            if me == root {
                for (i, x) in out.iter().enumerate() {
                    if !close(*x, reference(op, n, i, T::FLOAT), op) {
                        return Err(fail(c, format!("reduce {op:?} count {count} [{i}]")));
                    }
                }
            }
            // Reduce-scatter: block r of every rank's input is `input(.., r*count + i)`.
            let big: Vec<T> = (0..count * n).map(|i| T::v(input(op, n, me, i))).collect();
            let mut block = vec![T::default(); count];
            c.reduce_scatter(&big, &mut block, op)?;
            for (i, &x) in block.iter().enumerate() {
                if !close(x, reference(op, n, me * count + i, T::FLOAT), op) {
                    return Err(fail(
                        c,
                        format!("reduce_scatter {op:?} count {count} [{i}]"),
                    ));
                }
            }
        }
        let mine: Vec<T> = (0..count)
            .map(|i| T::v(input(ReduceOp::Sum, n, me, i)))
            .collect();
        let mut all = vec![T::default(); count * n];
        c.all_gather(&mine, &mut all)?;
        let mut all2 = vec![T::default(); count * n];
        all2[me * count..(me + 1) * count].copy_from_slice(&mine);
        c.all_gather_in_place(&mut all2)?;
        for (i, (x, y)) in all.iter().zip(&all2).enumerate() {
            let want = input(ReduceOp::Sum, n, i / count.max(1), i % count.max(1));
            if x.f() != want || y.f() != want {
                return Err(fail(c, format!("allgather count {count} [{i}]")));
            }
        }
        let root = (count + 1) % n;
        let mut b: Vec<T> = (0..count)
            .map(|i| {
                T::v(if me == root {
                    input(ReduceOp::Sum, n, me, i)
                } else {
                    -1.0
                })
            })
            .collect();
        c.broadcast(&mut b, root)?;
        for (i, x) in b.iter().enumerate() {
            if x.f() != input(ReduceOp::Sum, n, root, i) {
                return Err(fail(c, format!("broadcast count {count} [{i}]")));
            }
        }
        c.barrier()?;
    }
    // Point to point around the ring.
    if n > 1 {
        let next = (me + 1) % n;
        let prev = (me + n - 1) % n;
        let out: Vec<T> = (0..1003).map(|i| T::v(((i + me) % 5) as f64)).collect();
        let mut got = vec![T::default(); 1003];
        c.scope(|s| -> Result<()> {
            let rq = s.irecv(&mut got, prev)?;
            c.send(&out, next)?;
            rq.wait()
        })?;
        for (i, x) in got.iter().enumerate() {
            if x.f() != ((i + prev) % 5) as f64 {
                return Err(fail(c, format!("recv from {prev} [{i}]")));
            }
        }
    }
    // Inexact floats: the results must still be bitwise identical on every rank.
    let noisy: Vec<T> = (0..777)
        .map(|i| T::v(((i * 31 + me * 17) % 97) as f64 / 7.3 - 5.1))
        .collect();
    let mut r = vec![T::default(); 777];
    c.all_reduce(&noisy, &mut r, ReduceOp::Sum)?;
    Ok(fnv(bytemuck::cast_slice(&r)))
}

fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325, |h, &x| {
        (h ^ u64::from(x)).wrapping_mul(0x100_0000_01b3)
    })
}

fn by_dtype(c: &Communicator, d: DataType, counts: &[usize], ops: &[ReduceOp]) -> Result<u64> {
    match d {
        DataType::I8 => all_collectives::<i8>(c, counts, ops),
        DataType::U8 => all_collectives::<u8>(c, counts, ops),
        DataType::I32 => all_collectives::<i32>(c, counts, ops),
        DataType::U32 => all_collectives::<u32>(c, counts, ops),
        DataType::I64 => all_collectives::<i64>(c, counts, ops),
        DataType::U64 => all_collectives::<u64>(c, counts, ops),
        DataType::F16 => all_collectives::<F16>(c, counts, ops),
        DataType::F32 => all_collectives::<f32>(c, counts, ops),
        DataType::F64 => all_collectives::<f64>(c, counts, ops),
        DataType::Bf16 => all_collectives::<Bf16>(c, counts, ops),
        DataType::F8E4M3 => all_collectives::<F8E4M3>(c, counts, &exact_ops::<F8E4M3>(ops)),
        DataType::F8E5M2 => all_collectives::<F8E5M2>(c, counts, &exact_ops::<F8E5M2>(ops)),
    }
}

fn expect_all_ok(label: &str, res: Vec<Result<Vec<u64>>>) {
    let mut hashes = None;
    for (r, x) in res.into_iter().enumerate() {
        match x {
            Ok(h) => match &hashes {
                None => hashes = Some(h),
                Some(h0) => assert_eq!(
                    h0, &h,
                    "{label}: rank {r} results differ bitwise from rank 0"
                ),
            },
            Err(e) => panic!("{label}: rank {r}: {e}"),
        }
    }
}

fn matrix(
    n: usize,
    net: Net,
    algo: Option<&'static str>,
    counts: &'static [usize],
    dts: &'static [DataType],
) {
    matrix_on_hosts(n, 0, net, algo, counts, dts)
}

/// As `matrix`, with the ranks dealt round-robin over `hosts` injected hosts (0: none).
fn matrix_on_hosts(
    n: usize,
    hosts: usize,
    net: Net,
    algo: Option<&'static str>,
    counts: &'static [usize],
    dts: &'static [DataType],
) {
    let seed = match &net {
        Net::Mem(seed, _) => format!(", mem seed {seed}"),
        Net::Tcp => ", tcp".to_string(),
        Net::Shm => ", shm".to_string(),
        Net::Hybrid(h) => format!(", shm within {h} hosts, tcp between"),
        Net::Fabric(p) => format!(", fabric({p})"),
    };
    let label = format!("{n} ranks on {hosts} hosts, algo {algo:?}{seed}");
    let topo = (hosts > 0).then(|| TopoFile::round_robin(n, hosts));
    let cfg = oxccl::Config {
        topo_file: topo.as_ref().map(|t| t.0.clone()),
        ..config(algo, 60)
    };
    let res = run(n, net, cfg, move |c| {
        let mut hs = Vec::new();
        for &d in dts {
            hs.push(by_dtype(c, d, counts, &ReduceOp::ARITH)?);
        }
        Ok(hs)
    });
    expect_all_ok(&label, res);
}

const ALGOS: [Option<&str>; 6] = [
    None,
    Some("ring"),
    Some("tree"),
    Some("rd"),
    Some("chain"),
    Some("pairwise"),
];

#[test]
fn mem_matrix_every_rank_count_dtype_op_and_algorithm() {
    let faults = MemFaults {
        backpressure: 0.2,
        delay: 0.3,
        connect_delay_polls: 3,
        max_in_flight: 4,
    };
    for n in 1..=16usize {
        for (k, algo) in ALGOS.iter().enumerate() {
            let seed = (n * 10 + k) as u64;
            matrix(
                n,
                Net::Mem(seed, faults.clone()),
                *algo,
                &[0, 1, 7, 1000],
                &DataType::ALL,
            );
        }
    }
}

#[test]
fn mem_large_counts() {
    // 2^20 + 3 elements: every type at 2 ranks with every algorithm, and at 5 ranks.
    for algo in ALGOS {
        matrix(
            2,
            Net::Mem(2, MemFaults::default()),
            algo,
            &[(1 << 20) + 3],
            &DataType::ALL,
        );
    }
    matrix(
        5,
        Net::Mem(5, MemFaults::default()),
        None,
        &[(1 << 20) + 3],
        &DataType::ALL,
    );
}

/// A backend's matrix at each of `ranks` (counts 0, 1, 7, 1000, 65539; f32 i32 bf16 u8;
/// every algorithm), as threads.
fn backend_matrix(ranks: std::ops::RangeInclusive<usize>, net: impl Fn() -> Net) {
    for n in ranks {
        for algo in ALGOS {
            matrix(
                n,
                net(),
                algo,
                &[0, 1, 7, 1000, 65539],
                &[DataType::F32, DataType::I32, DataType::Bf16, DataType::U8],
            );
        }
    }
}

/// A backend's large count: 1 Mi + 3 floats at 3 ranks, every algorithm.
fn backend_large_count(net: impl Fn() -> Net) {
    for algo in ALGOS {
        matrix(3, net(), algo, &[(1 << 20) + 3], &[DataType::F32]);
    }
}

#[test]
fn tcp_matrix_threads() {
    backend_matrix(2..=8, || Net::Tcp);
}

#[test]
fn shm_matrix_threads() {
    backend_matrix(1..=8, || Net::Shm);
    // Past the ring's capacity (1 MiB): messages stream through it.
    backend_large_count(|| Net::Shm);
}

/// The shm matrix as processes: this test binary, started by rankrun as every rank of a
/// job over `OXCCL_TRANSPORT=shm`, runs [`matrix_rank_of_a_process_job`]; every rank must
/// pass and report the same hashes. 1, 2, 3, 4 and 8 ranks, every algorithm, counts up to
/// 1 Mi + 3 (past the ring's capacity), every other algorithm with large messages copied out
/// of the sender's process (`OXCCL_SHM_CMA=1`, where the kernel allows it).
#[test]
fn shm_matrix_processes() {
    if std::env::var_os(MATRIX_CHILD).is_some() {
        return;
    }
    let exe = std::env::current_exe().expect("test binary path");
    for n in [1usize, 2, 3, 4, 8] {
        for (k, algo) in ALGOS.into_iter().enumerate() {
            let cma = if (n + k) % 2 == 0 { "1" } else { "0" };
            let label = format!("{n} processes over shm, algo {algo:?}, OXCCL_SHM_CMA={cma}");
            let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_rankrun"));
            cmd.args(["-n", &n.to_string(), "--timeout", "300", "--"])
                .arg(&exe)
                .args(["--exact", "matrix_rank_of_a_process_job", "--nocapture"])
                .env(MATRIX_CHILD, "1")
                .env("OXCCL_TRANSPORT", "shm")
                .env("OXCCL_SHM_CMA", cma)
                .env("OXCCL_TIMEOUT", "60");
            match algo {
                Some(a) => cmd.env("OXCCL_ALGO", a),
                None => cmd.env_remove("OXCCL_ALGO"),
            };
            let out = cmd.output().expect("rankrun starts");
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{label}: {}\n{text}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            let hashes: Vec<&str> = text
                .lines()
                .filter_map(|l| l.split_once("matrix hashes: ").map(|(_, h)| h))
                .collect();
            assert_eq!(hashes.len(), n, "{label}: one report per rank\n{text}");
            assert!(
                hashes.iter().all(|h| *h == hashes[0]),
                "{label}: results differ bitwise between ranks: {hashes:?}"
            );
        }
    }
}

/// Set for the ranks [`shm_matrix_processes`] starts.
const MATRIX_CHILD: &str = "OXCCL_TEST_MATRIX_RANK";

/// One rank of [`shm_matrix_processes`]'s jobs (it does nothing in a plain test run): the
/// collectives of every count, op and type against the serial reference.
#[test]
fn matrix_rank_of_a_process_job() {
    if std::env::var_os(MATRIX_CHILD).is_none() {
        return;
    }
    let c = Communicator::from_env().expect("joining the job");
    let mut hashes = Vec::new();
    for d in [DataType::F32, DataType::I32, DataType::Bf16, DataType::U8] {
        hashes.push(by_dtype(&c, d, &[0, 1, 7, 1000, 65539], &ReduceOp::ARITH).unwrap());
    }
    hashes.push(by_dtype(&c, DataType::F32, &[(1 << 20) + 3], &[ReduceOp::Sum]).unwrap());
    println!("rank {}: matrix hashes: {hashes:?}", c.rank());
}

#[test]
fn tcp_large_count() {
    backend_large_count(|| Net::Tcp);
}

#[test]
fn mismatched_calls_fail_with_invalid_usage_naming_both_calls() {
    let res = run(2, Net::Tcp, config(None, 10), |c| {
        if c.rank() == 0 {
            c.all_reduce(&[1.0f32; 10], &mut [0.0; 10], ReduceOp::Sum)
        } else {
            c.broadcast(&mut [0.0f32; 10], 0)
        }
    });
    let errs: Vec<Error> = res.into_iter().filter_map(|r| r.err()).collect();
    assert_eq!(errs.len(), 2, "both ranks must fail");
    let usage: Vec<&Error> = errs
        .iter()
        .filter(|e| e.kind() == ErrorKind::InvalidUsage)
        .collect();
    assert!(!usage.is_empty(), "no InvalidUsage among {errs:?}");
    let m = usage[0].to_string();
    assert!(m.contains("allreduce") && m.contains("broadcast"), "{m}");

    let res = run(
        3,
        Net::Mem(7, MemFaults::default()),
        config(Some("ring"), 10),
        |c| {
            let count = if c.rank() == 1 { 12 } else { 9 };
            c.all_reduce(&vec![1i32; count], &mut vec![0; count], ReduceOp::Sum)
        },
    );
    for (r, x) in res.iter().enumerate() {
        let e = x
            .as_ref()
            .expect_err("a count mismatch must fail on every rank");
        assert!(
            matches!(e.kind(), ErrorKind::InvalidUsage | ErrorKind::Remote),
            "rank {r}: {e}"
        );
    }
    assert!(res.iter().any(|x| x
        .as_ref()
        .is_err_and(|e| e.kind() == ErrorKind::InvalidUsage && e.to_string().contains("count"))));
}

#[test]
fn abort_from_another_thread_unblocks_the_call_and_the_peers() {
    let res = run(3, Net::Tcp, config(None, 60), |c| {
        let t0 = Instant::now();
        if c.rank() == 2 {
            std::thread::sleep(Duration::from_millis(300));
            c.abort();
            return Ok(t0.elapsed());
        }
        let h = c.abort_handle();
        let r = c.rank();
        let aborter = std::thread::spawn(move || {
            if r == 0 {
                std::thread::sleep(Duration::from_secs(30));
                h.abort();
            }
        });
        drop(aborter);
        match c.all_reduce(&[1.0f32; 1000], &mut [0.0; 1000], ReduceOp::Sum) {
            Ok(()) => Err(Error::internal("allreduce succeeded without rank 2")),
            Err(e) if e.kind() == ErrorKind::Remote => Ok(t0.elapsed()),
            Err(e) => Err(e),
        }
    });
    for (r, x) in res.into_iter().enumerate() {
        let t = x.unwrap_or_else(|e| panic!("rank {r}: {e}"));
        assert!(t < Duration::from_secs(5), "rank {r} took {t:?}");
    }
    // A blocked call is released by an abort from another thread.
    let res = run(2, Net::Tcp, config(None, 60), |c| {
        if c.rank() == 1 {
            std::thread::sleep(Duration::from_secs(2));
            return Ok(());
        }
        let h = c.abort_handle();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            h.abort();
        });
        let t0 = Instant::now();
        let e = c
            .all_reduce(&[1u8; 8], &mut [0; 8], ReduceOp::Sum)
            .expect_err("aborted");
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "abort took {:?}",
            t0.elapsed()
        );
        assert!(e.to_string().contains("aborted"), "{e}");
        let again = c.barrier().expect_err("stays aborted");
        assert!(again.to_string().contains("aborted"), "{again}");
        Ok(())
    });
    for r in res {
        r.expect("abort case");
    }
}

#[test]
fn a_stalled_peer_times_out_naming_it() {
    let res = run(2, Net::Tcp, config(None, 1), |c| {
        if c.rank() == 1 {
            std::thread::sleep(Duration::from_millis(2500));
            return Ok(String::new());
        }
        let t0 = Instant::now();
        let e = c
            .all_reduce(&[1.0f64; 4], &mut [0.0; 4], ReduceOp::Sum)
            .expect_err("must time out");
        assert!(t0.elapsed() < Duration::from_secs(3));
        Ok(format!("{:?}|{e}", e.kind()))
    });
    let msg = res.into_iter().next().unwrap().expect("rank 0");
    assert!(msg.starts_with("Timeout|"), "{msg}");
    assert!(
        msg.contains("rank 0") && msg.contains("rank 1") && msg.contains("allreduce"),
        "{msg}"
    );
}

#[test]
fn a_peer_that_disappears_mid_collective_fails_the_others_with_remote_within_5s() {
    let res = run(4, Net::Tcp, config(None, 60), |c| {
        let data = vec![1.0f32; 4 << 20];
        let mut out = vec![0.0f32; 4 << 20];
        for i in 0..1000 {
            if c.rank() == 3 && i == 3 {
                return Ok(Duration::ZERO); // drops the communicator: its sockets close
            }
            let t0 = Instant::now();
            if let Err(e) = c.all_reduce(&data, &mut out, ReduceOp::Sum) {
                assert_eq!(e.kind(), ErrorKind::Remote, "rank {}: {e}", c.rank());
                assert!(e.to_string().contains(&format!("rank {}", c.rank())), "{e}");
                return Ok(t0.elapsed());
            }
        }
        Err(Error::internal("never failed"))
    });
    for (r, x) in res.into_iter().enumerate() {
        let t = x.unwrap_or_else(|e| panic!("rank {r}: {e}"));
        assert!(t < Duration::from_secs(5), "rank {r} needed {t:?}");
    }
    // The same on mem, with the rank killed by the fabric.
    let fabric = oxccl::transport::mem::MemFabric::new(5, MemFaults::default());
    let id = oxccl::UniqueId::with_addr([127, 0, 0, 1].into()).unwrap();
    let hs: Vec<_> = (0..3)
        .map(|r| {
            let (id, fabric) = (id.clone(), fabric.clone());
            std::thread::spawn(move || -> Result<()> {
                let f2 = fabric.clone();
                let c = Communicator::init_with(&id, r, 3, config(None, 30), move |_| {
                    Ok(f2.endpoint())
                })?;
                let mut out = vec![0u32; 1 << 16];
                for i in 0..200 {
                    if r == 0 && i == 5 {
                        fabric.kill(0);
                    }
                    c.all_reduce(&vec![1u32; 1 << 16], &mut out, ReduceOp::Sum)?;
                }
                Ok(())
            })
        })
        .collect();
    for h in hs {
        let e = h
            .join()
            .unwrap()
            .expect_err("killed rank must fail everyone");
        assert_eq!(e.kind(), ErrorKind::Remote, "{e}");
    }
}

#[test]
fn nonblocking_calls_and_split() {
    let res = run(4, Net::Tcp, config(None, 30), |c| {
        let a = vec![c.rank() as f32; 5000];
        let mut b = vec![0.0f32; 5000];
        let mut x = vec![0i64; 8];
        let mine = [c.rank() as i64; 2];
        let (mut f, mut g) = (vec![0f64; 3000], vec![0u8; 3]);
        let peer = c.rank() ^ 1;
        let mut got = vec![0u32; 100];
        let sent = vec![c.rank() as u32; 100];
        c.scope(|s| -> Result<()> {
            let mut r1 = s.iall_reduce(&a, &mut b, ReduceOp::Sum)?;
            let r2 = s.iall_gather(&mine, &mut x)?;
            // Forgotten requests: the scope still waits for their calls before it ends.
            std::mem::forget(s.ibroadcast(&mut f, 3)?);
            std::mem::forget(s.ireduce_scatter(&[1u8; 12], &mut g, ReduceOp::Sum)?);
            let rs = s.isend(&sent, peer)?;
            let rr = s.irecv(&mut got, peer)?;
            while !r1.test()? {
                std::thread::yield_now();
            }
            r2.wait()?;
            rs.wait()?;
            rr.wait()
        })?;
        if b.iter().any(|&v| v != 6.0) || x != [0, 0, 1, 1, 2, 2, 3, 3] {
            return Err(fail(c, format!("nonblocking results {:?} {x:?}", &b[..2])));
        }
        if g != [4, 4, 4] || got.iter().any(|&v| v != peer as u32) {
            return Err(fail(
                c,
                format!("forgotten/p2p results {g:?} {:?}", &got[..2]),
            ));
        }
        let sub = c
            .split((c.rank() % 2) as i32, -(c.rank() as i32))?
            .expect("a color");
        assert_eq!(sub.size(), 2);
        assert_eq!(sub.rank(), 1 - c.rank() / 2, "keys order the new ranks");
        let mut s = [0u32];
        sub.all_reduce(&[c.rank() as u32], &mut s, ReduceOp::Sum)?;
        let none = c.split(if c.rank() == 0 { -1 } else { 1 }, 0)?;
        assert_eq!(none.is_none(), c.rank() == 0);
        Ok(s[0])
    });
    let sums: Vec<u32> = res.into_iter().map(|r| r.expect("rank")).collect();
    assert_eq!(sums, vec![2, 4, 2, 4]);
}

#[test]
fn bad_arguments_name_the_rank_and_call() {
    let res = run(
        2,
        Net::Mem(1, MemFaults::default()),
        config(None, 10),
        |c| {
            let e = c
                .all_reduce(&[1.0f32; 4], &mut [0.0; 3], ReduceOp::Sum)
                .expect_err("short buffer");
            assert_eq!(e.kind(), ErrorKind::InvalidArgument);
            assert!(
                e.to_string().contains("allreduce")
                    && e.to_string().contains(&format!("rank {}", c.rank())),
                "{e}"
            );
            let e = c
                .broadcast(&mut [0u8; 4], 7)
                .expect_err("root out of range");
            assert_eq!(e.kind(), ErrorKind::InvalidArgument);
            let e = c.send(&[1u8], c.rank()).expect_err("send to self");
            assert_eq!(e.kind(), ErrorKind::InvalidArgument);
            let e = c
                .all_gather(&[1u8; 2], &mut [0u8; 3])
                .expect_err("allgather size");
            assert!(e.to_string().contains("needs 4"), "{e}");
            c.barrier()
        },
    );
    for r in res {
        r.expect("rank");
    }
}

// The fabric backend (libfabric) on its tcp (`tcp;ofi_rxm`) and shm providers. Where
// libfabric is absent these print why and pass, except under CI, which installs it.

fn fabric_matrix(provider: &'static str) {
    if !have_libfabric() {
        return;
    }
    backend_matrix(2..=4, || Net::Fabric(provider));
    backend_large_count(|| Net::Fabric(provider));
}

#[test]
fn fabric_tcp_matrix_threads() {
    fabric_matrix("tcp");
}

#[test]
fn fabric_shm_matrix_threads() {
    fabric_matrix("shm");
}

/// A rank that leaves mid-collective (its communicator dropped) fails the others with a
/// Remote error naming them, within 5 s.
fn fabric_departure(provider: &'static str) {
    if !have_libfabric() {
        return;
    }
    departure(Net::Fabric(provider), provider);
}

fn departure(net: Net, provider: &'static str) {
    let res = run(4, net, config(None, 60), |c| {
        let data = vec![1.0f32; 1 << 20];
        let mut out = vec![0.0f32; 1 << 20];
        for i in 0..1000 {
            if c.rank() == 3 && i == 3 {
                return Ok(Duration::ZERO);
            }
            let t0 = Instant::now();
            if let Err(e) = c.all_reduce(&data, &mut out, ReduceOp::Sum) {
                assert_eq!(e.kind(), ErrorKind::Remote, "rank {}: {e}", c.rank());
                assert!(e.to_string().contains(&format!("rank {}", c.rank())), "{e}");
                return Ok(t0.elapsed());
            }
        }
        Err(Error::internal("never failed"))
    });
    for (r, x) in res.into_iter().enumerate() {
        let t = x.unwrap_or_else(|e| panic!("{provider}: rank {r}: {e}"));
        assert!(
            t < Duration::from_secs(5),
            "{provider}: rank {r} needed {t:?}"
        );
    }
}

#[test]
fn shm_a_departed_rank_fails_the_others_with_remote() {
    departure(Net::Shm, "shm backend");
}

#[test]
fn fabric_a_departed_rank_fails_the_others_with_remote() {
    fabric_departure("tcp");
    fabric_departure("shm");
}

/// Algorithms whose schedules follow the injected hosts: the hierarchical ones, and the ring,
/// trees and recursive doubling, which number ranks by ring position.
const TOPO_ALGOS: [Option<&str>; 6] = [
    None,
    Some("hier"),
    Some("hier-tree"),
    Some("ring"),
    Some("tree"),
    Some("rd"),
];

#[test]
fn mem_matrix_on_injected_hosts() {
    let faults = MemFaults {
        backpressure: 0.2,
        delay: 0.3,
        connect_delay_polls: 3,
        max_in_flight: 4,
    };
    // Uneven hosts where the host count does not divide the rank count; 2 ranks on 2 hosts
    // is one rank per host.
    for (n, hosts) in [
        (2, 2),
        (3, 2),
        (4, 2),
        (5, 2),
        (6, 3),
        (8, 3),
        (12, 3),
        (13, 4),
    ] {
        for (k, algo) in TOPO_ALGOS.iter().enumerate() {
            matrix_on_hosts(
                n,
                hosts,
                Net::Mem((n * 100 + k) as u64, faults.clone()),
                *algo,
                &[0, 1, 7, 1000],
                &[DataType::F32, DataType::I32, DataType::Bf16, DataType::U8],
            );
        }
    }
    for algo in [Some("hier"), Some("hier-tree")] {
        matrix_on_hosts(
            5,
            2,
            Net::Mem(3, MemFaults::default()),
            algo,
            &[(1 << 20) + 3],
            &[DataType::F32, DataType::F16],
        );
    }
}

#[test]
fn tcp_matrix_on_injected_hosts() {
    for (n, hosts) in [(4, 2), (6, 3), (7, 2)] {
        for algo in [None, Some("hier"), Some("hier-tree")] {
            matrix_on_hosts(
                n,
                hosts,
                Net::Tcp,
                algo,
                &[0, 1, 7, 1000, 65539],
                &[DataType::F32, DataType::I32],
            );
        }
    }
    for algo in [Some("hier"), Some("hier-tree")] {
        matrix_on_hosts(4, 2, Net::Tcp, algo, &[(1 << 20) + 3], &[DataType::F32]);
    }
}

/// Shared memory within hosts and tcp between them in one communicator (the hybrid
/// transport, threads playing hosts), with the hierarchical algorithms too.
#[test]
fn hybrid_matrix_on_injected_hosts() {
    for (n, hosts) in [(4, 2), (6, 3), (7, 2), (3, 1)] {
        for algo in [
            None,
            Some("ring"),
            Some("tree"),
            Some("hier"),
            Some("hier-tree"),
        ] {
            matrix_on_hosts(
                n,
                hosts,
                Net::Hybrid(hosts),
                algo,
                &[0, 1, 7, 1000, 65539],
                &[DataType::F32, DataType::I32],
            );
        }
    }
    for algo in [None, Some("hier")] {
        matrix_on_hosts(
            4,
            2,
            Net::Hybrid(2),
            algo,
            &[(1 << 20) + 3],
            &[DataType::F32],
        );
    }
}

/// Reads the dump written by rank 0: (ring, network crossings).
fn read_dump(path: &std::path::Path) -> (Vec<usize>, usize) {
    let text = std::fs::read_to_string(path).expect("the dump exists");
    let v = oxccl::topo::json::parse(&text).expect("the dump is JSON");
    let m = v.get("mapping").expect("a mapping");
    let ring = m
        .get("ring")
        .and_then(|r| r.as_array())
        .expect("a ring")
        .iter()
        .map(|x| x.as_u64().expect("a rank") as usize)
        .collect();
    let crossings = m
        .get("ring_stats")
        .and_then(|s| s.get("network_crossings"))
        .and_then(|x| x.as_u64())
        .expect("crossings") as usize;
    (ring, crossings)
}

#[test]
fn topology_dump_mapping_off_and_split_keep_the_injected_hosts() {
    let topo = TopoFile::round_robin(4, 2);
    let dump = TopoFile::with_text("");
    for aware in [true, false] {
        let cfg = oxccl::Config {
            topo_file: Some(topo.0.clone()),
            topo_dump_file: Some(dump.0.clone()),
            topo_aware: aware,
            ..config(None, 30)
        };
        let res = run(4, Net::Tcp, cfg, |c| {
            let mut out = vec![0u32; 1 << 16];
            c.all_reduce(&vec![c.rank() as u32; 1 << 16], &mut out, ReduceOp::Sum)?;
            let sub = c.split((c.rank() / 2) as i32, 0)?.expect("a color");
            let mut s = [0u32; 3];
            sub.all_reduce(&[c.rank() as u32; 3], &mut s, ReduceOp::Sum)?;
            Ok(out[0] * 100 + s[0])
        });
        let sums: Vec<u32> = res.into_iter().map(|r| r.expect("rank")).collect();
        assert_eq!(sums, vec![601, 601, 605, 605]);
        let (ring, crossings) = read_dump(&dump.0);
        let text = std::fs::read_to_string(&dump.0).expect("dump");
        // The hosts' interfaces come once per host, through the store, to rank 0.
        assert_eq!(text.matches("{\"name\": \"nic0\"").count(), 2, "{text}");
        if aware {
            // Hosts {0, 2} and {1, 3}: each entered and left once.
            assert_eq!((ring, crossings), (vec![0, 2, 3, 1], 2));
        } else {
            assert_eq!((ring, crossings), (vec![0, 1, 2, 3], 4));
        }
    }
}

#[test]
fn a_wrong_topology_file_fails_every_rank_promptly_naming_it() {
    let topo = TopoFile::round_robin(3, 2); // 3 ranks described, 2 join
    let cfg = oxccl::Config {
        topo_file: Some(topo.0.clone()),
        ..config(None, 60)
    };
    let t0 = Instant::now();
    let res = run(2, Net::Tcp, cfg, |_| Ok(()));
    for (r, x) in res.into_iter().enumerate() {
        let e = x.expect_err("a wrong topology file must fail init");
        let m = e.to_string();
        assert!(
            matches!(e.kind(), ErrorKind::InvalidArgument | ErrorKind::Remote),
            "rank {r}: {e}"
        );
        assert!(
            m.contains("OXCCL_TOPO_FILE") && m.contains("3 ranks"),
            "rank {r}: {m}"
        );
    }
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    let bad = TopoFile::with_text("{\"ranks\": [{\"host\": 7}]}");
    let cfg = oxccl::Config {
        topo_file: Some(bad.0.clone()),
        ..config(None, 60)
    };
    let e = run(1, Net::Tcp, cfg, |_| Ok(()))
        .pop()
        .expect("one rank")
        .expect_err("bad host index");
    assert!(e.to_string().contains("ranks[0].host"), "{e}");
}
