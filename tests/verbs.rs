//! The verbs backend on real RDMA devices.
//!
//! On a machine without RDMA only the first test runs: choosing the backend must fail
//! with a clear error. The others need devices and are `#[ignore]`d; `ci/verbs.sh` runs
//! them (`--include-ignored`) in a VM with two SoftRoCE devices, rxe0 (10.99.0.1) and rxe1
//! (10.99.0.2) on the two ends of a veth pair. Ranks are threads bound to alternating
//! devices, so traffic between neighbours really crosses the pair; the killed-rank test
//! also runs a rank as a separate process and kills it.

mod common;

/// The transport conformance suite (`tests/conformance`) on verbs, rank 0's transport on
/// rxe0 and rank 1's on rxe1: `conformance::verbs::<property>`.
macro_rules! conformance_backends {
    () => {
        conformance_tests!(
            #[ignore = "needs RDMA devices: ci/verbs.sh runs it in a SoftRoCE VM"]
            verbs,
            crate::conformance_pair,
            stranger: backends::VERBS_STRANGER
        );
    };
}
mod conformance;

use std::net::IpAddr;
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use common::{close, exact_ops, input, reference, Val};
use oxccl::transport::verbs::{VerbsConfig, VerbsTransport};
use oxccl::transport::{ConnectHandle, Transport};
use oxccl::{
    Bf16, Communicator, Config, DataType, Error, ErrorKind, ReduceOp, Result, UniqueId, F16,
    F8E4M3, F8E5M2,
};

fn has_devices() -> bool {
    std::fs::read_dir("/sys/class/infiniband").is_ok_and(|d| d.count() > 0)
}

/// Rank r on rxe(r % 2), reached through loopback for set-up.
fn on_alternate_devices(r: usize, ip: IpAddr) -> VerbsConfig {
    VerbsConfig {
        hca: Some(format!("=rxe{}", r % 2)),
        ..VerbsConfig::new(ip, r)
    }
}

/// Two verbs transports on alternate devices, reached through loopback for set-up; `None`
/// (the conformance test passes) where there are no RDMA devices.
fn conformance_pair() -> conformance::Pair<VerbsTransport> {
    if !has_devices() {
        eprintln!("skipping: no RDMA devices");
        return None;
    }
    let lo: IpAddr = [127, 0, 0, 1].into();
    // One queue pair carries at most 8 MiB of a message (the engine's chunks are far
    // smaller); the suite's large message is 16 MiB and a byte, so use four.
    let mk = |r| {
        let cfg = VerbsConfig {
            qps_per_connection: 4,
            ..on_alternate_devices(r, lo)
        };
        VerbsTransport::new(cfg).expect("verbs transport")
    };
    Some((mk(0), mk(1)))
}

fn config(timeout_s: u64) -> Config {
    Config {
        timeout: Duration::from_secs(timeout_s),
        chunk_bytes: 64 << 10,
        spin: Some(50),
        ..Config::default()
    }
}

/// Runs `f` on `n` rank threads over verbs, rank r with the settings `vcfg(r, ip)`.
fn run<R: Send + 'static>(
    n: usize,
    cfg: Config,
    vcfg: impl Fn(usize, IpAddr) -> VerbsConfig + Send + Sync + 'static,
    f: impl Fn(&Communicator) -> Result<R> + Send + Sync + 'static,
) -> Vec<Result<R>> {
    let id = UniqueId::with_addr([127, 0, 0, 1].into()).expect("unique id");
    let (f, vcfg) = (Arc::new(f), Arc::new(vcfg));
    let start = Arc::new(Barrier::new(n));
    let hs: Vec<_> = (0..n)
        .map(|r| {
            let (id, f, vcfg, cfg, start) = (
                id.clone(),
                f.clone(),
                vcfg.clone(),
                cfg.clone(),
                start.clone(),
            );
            std::thread::spawn(move || {
                start.wait();
                let comm = Communicator::init_with(&id, r, n, cfg, move |ip| {
                    VerbsTransport::new(vcfg(r, ip))
                })?;
                f(&comm)
            })
        })
        .collect();
    hs.into_iter()
        .map(|h| {
            h.join()
                .unwrap_or_else(|_| Err(Error::internal("rank thread panicked")))
        })
        .collect()
}

fn fail(c: &Communicator, what: String) -> Error {
    Error::internal(format!("rank {}: {what}", c.rank()))
}

fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325, |h, &x| {
        (h ^ u64::from(x)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Every collective at every count for one element type, checked against the serial
/// reference; returns a hash of results that must be bitwise equal on every rank.
fn all_collectives<T: Val>(c: &Communicator, counts: &[usize]) -> Result<u64> {
    let (n, me) = (c.size(), c.rank());
    let mut h = 0u64;
    for &count in counts {
        for op in exact_ops::<T>(&ReduceOp::ARITH) {
            let send: Vec<T> = (0..count).map(|i| T::v(input(op, n, me, i))).collect();
            let mut recv = vec![T::default(); count];
            c.all_reduce(&send, &mut recv, op)?;
            let mut inplace = send.clone();
            c.all_reduce_in_place(&mut inplace, op)?;
            for i in 0..count {
                let want = reference(op, n, i, T::FLOAT);
                if !close(recv[i], want, op) || !close(inplace[i], want, op) {
                    return Err(fail(c, format!("allreduce {op:?} count {count} [{i}]")));
                }
            }
            h ^= fnv(bytemuck::cast_slice(&recv));
            let root = count % n;
            let mut out = vec![T::default(); if me == root { count } else { 0 }];
            c.reduce(&send, &mut out, op, root)?;
            for (i, x) in out.iter().enumerate() {
                if !close(*x, reference(op, n, i, T::FLOAT), op) {
                    return Err(fail(c, format!("reduce {op:?} count {count} [{i}]")));
                }
            }
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
        for (i, x) in all.iter().enumerate() {
            if x.f() != input(ReduceOp::Sum, n, i / count.max(1), i % count.max(1)) {
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
        if b.iter()
            .enumerate()
            .any(|(i, x)| x.f() != input(ReduceOp::Sum, n, root, i))
        {
            return Err(fail(c, format!("broadcast count {count}")));
        }
        c.barrier()?;
    }
    // Point to point around the ring, and inexact floats that must still agree bitwise.
    let (next, prev) = ((me + 1) % n, (me + n - 1) % n);
    let out: Vec<T> = (0..5003).map(|i| T::v(((i + me) % 5) as f64)).collect();
    let mut got = vec![T::default(); 5003];
    c.scope(|s| -> Result<()> {
        let rq = s.irecv(&mut got, prev)?;
        c.send(&out, next)?;
        rq.wait()
    })?;
    if got
        .iter()
        .enumerate()
        .any(|(i, x)| x.f() != ((i + prev) % 5) as f64)
    {
        return Err(fail(c, format!("recv from {prev}")));
    }
    let noisy: Vec<T> = (0..777)
        .map(|i| T::v(((i * 31 + me * 17) % 97) as f64 / 7.3 - 5.1))
        .collect();
    let mut r = vec![T::default(); 777];
    c.all_reduce(&noisy, &mut r, ReduceOp::Sum)?;
    Ok(h ^ fnv(bytemuck::cast_slice(&r)))
}

fn by_dtype(c: &Communicator, d: DataType, counts: &[usize]) -> Result<u64> {
    match d {
        DataType::I8 => all_collectives::<i8>(c, counts),
        DataType::U8 => all_collectives::<u8>(c, counts),
        DataType::I32 => all_collectives::<i32>(c, counts),
        DataType::U32 => all_collectives::<u32>(c, counts),
        DataType::I64 => all_collectives::<i64>(c, counts),
        DataType::U64 => all_collectives::<u64>(c, counts),
        DataType::F16 => all_collectives::<F16>(c, counts),
        DataType::F32 => all_collectives::<f32>(c, counts),
        DataType::F64 => all_collectives::<f64>(c, counts),
        DataType::Bf16 => all_collectives::<Bf16>(c, counts),
        DataType::F8E4M3 => all_collectives::<F8E4M3>(c, counts),
        DataType::F8E5M2 => all_collectives::<F8E5M2>(c, counts),
    }
}

fn expect_same(label: &str, res: Vec<Result<Vec<u64>>>) {
    let errs: Vec<String> = res
        .iter()
        .enumerate()
        .filter_map(|(r, x)| x.as_ref().err().map(|e| format!("rank {r}: {e}")))
        .collect();
    assert!(errs.is_empty(), "{label}:\n{}", errs.join("\n"));
    let mut first: Option<Vec<u64>> = None;
    for (r, x) in res.into_iter().enumerate() {
        let h = x.unwrap_or_else(|e| panic!("{label}: rank {r}: {e}"));
        match &first {
            None => first = Some(h),
            Some(h0) => assert_eq!(h0, &h, "{label}: rank {r} differs bitwise from rank 0"),
        }
    }
}

#[test]
fn without_rdma_the_verbs_transport_fails_with_a_clear_error() {
    let id = UniqueId::with_addr([127, 0, 0, 1].into()).expect("unique id");
    let cfg = Config {
        transport: "verbs".into(),
        ..config(20)
    };
    let res = Communicator::init_with_config(&id, 0, 1, cfg);
    if has_devices() {
        // The same call where RDMA exists (inside the CI's VM) must work.
        let c = res.expect("verbs on a machine with RDMA devices");
        assert_eq!(c.transport(), "verbs");
        return;
    }
    let e = res.err().expect("verbs without RDMA devices must fail");
    let m = e.to_string();
    assert_eq!(e.kind(), ErrorKind::System, "{m}");
    assert!(m.contains("rank 0 of 1: init"), "{m}");
    let lib = [
        "/usr/lib/x86_64-linux-gnu/libibverbs.so.1",
        "/usr/lib64/libibverbs.so.1",
    ];
    if lib.iter().any(|p| std::path::Path::new(p).exists()) {
        assert!(m.contains("no RDMA device"), "{m}");
    } else {
        assert!(m.contains("cannot load the RDMA verbs library"), "{m}");
    }
}

#[test]
#[ignore = "needs RDMA devices: ci/verbs.sh runs it in a SoftRoCE VM"]
fn device_and_gid_are_chosen_without_any_variable() {
    let lo: IpAddr = [127, 0, 0, 1].into();
    for r in 0..2 {
        let t = VerbsTransport::new(VerbsConfig::new(lo, r)).expect("open");
        let d = &t.devices().expect("devices")[0];
        // Ranks take the devices in turn when none carries their address; on rxe the
        // RoCE v2 IPv4 GID is index 1 (index 0 is link-local).
        assert_eq!(d.name, format!("rxe{r}"));
        assert_eq!(d.gid_index, Some(1), "{d:?}");
        assert_eq!(d.port, Some(1));
        assert!(
            d.speed_mbps > 0 && d.pci_path.is_none() && d.numa_node.is_none(),
            "{d:?}"
        );
    }
    // The device that carries the rank's address wins.
    let t = VerbsTransport::new(VerbsConfig::new([10, 99, 0, 2].into(), 0)).expect("open");
    assert_eq!(t.device().name, "rxe1");
    assert_eq!(t.device().gid_index, Some(1));
    // Overrides, and clear errors for choices that do not exist.
    let with = |f: &dyn Fn(&mut VerbsConfig)| {
        let mut c = VerbsConfig::new(lo, 0);
        f(&mut c);
        VerbsTransport::new(c)
    };
    let t = with(&|c| c.gid_index = Some(0)).expect("GID 0");
    assert_eq!(t.device().gid_index, Some(0));
    let e = with(&|c| c.gid_index = Some(9)).err().expect("no GID 9");
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(e.to_string().contains("OXCCL_IB_GID_INDEX=9"), "{e}");
    let t = with(&|c| c.hca = Some("^rxe0".into())).expect("all but rxe0");
    assert_eq!(t.device().name, "rxe1");
    let e = with(&|c| c.hca = Some("mlx5_0".into()))
        .err()
        .expect("no mlx5");
    assert!(
        e.to_string()
            .contains("OXCCL_IB_HCA='mlx5_0' selects no active port"),
        "{e}"
    );
    assert!(e.to_string().contains("rxe0, rxe1"), "{e}");
    // The same through the environment, as Communicator::init reads it.
    std::env::set_var("OXCCL_IB_HCA", "=rxe1:1");
    std::env::set_var("OXCCL_IB_QPS_PER_CONNECTION", "3");
    let c = VerbsConfig::from_env(lo, 0).expect("from env");
    std::env::set_var("OXCCL_IB_QPS_PER_CONNECTION", "99");
    let bad = VerbsConfig::from_env(lo, 0).expect_err("99 QPs");
    std::env::remove_var("OXCCL_IB_HCA");
    std::env::remove_var("OXCCL_IB_QPS_PER_CONNECTION");
    assert_eq!(
        (c.hca.as_deref(), c.qps_per_connection),
        (Some("=rxe1:1"), 3)
    );
    assert!(
        bad.to_string().contains("OXCCL_IB_QPS_PER_CONNECTION='99'"),
        "{bad}"
    );
}

#[test]
#[ignore = "needs RDMA devices: ci/verbs.sh runs it in a SoftRoCE VM"]
fn collective_matrix_on_two_three_and_four_ranks_across_the_veth_pair() {
    let dtypes = [
        DataType::F32,
        DataType::I32,
        DataType::Bf16,
        DataType::U8,
        DataType::F64,
    ];
    for n in [2, 3] {
        let res = run(n, config(120), on_alternate_devices, move |c| {
            dtypes
                .iter()
                .map(|&d| by_dtype(c, d, &[0, 1, 7, 4099]))
                .collect()
        });
        expect_same(&format!("{n} ranks"), res);
    }
    // Four ranks on the VM's two vCPUs: ranks that outnumber cores must not starve.
    let res = run(4, config(120), on_alternate_devices, |c| {
        Ok(vec![by_dtype(c, DataType::F32, &[1, 4099])?])
    });
    expect_same("4 ranks", res);
    // Every algorithm once, on 3 ranks.
    for algo in ["ring", "tree", "rd", "chain"] {
        let cfg = Config {
            algo: Some(algo.into()),
            ..config(120)
        };
        let res = run(3, cfg, on_alternate_devices, |c| {
            Ok(vec![by_dtype(c, DataType::F32, &[1, 4099])?])
        });
        expect_same(&format!("3 ranks, {algo}"), res);
    }
}

/// 16 MiB allreduce, broadcast, allgather and reduce-scatter with exact values.
fn sixteen_mib(c: &Communicator) -> Result<Vec<u64>> {
    let (n, me) = (c.size(), c.rank());
    let count = 4 << 20; // f32 elements: 16 MiB
    let v = |r: usize, i: usize| ((i * 7 + r * 3) % 13) as f32;
    let send: Vec<f32> = (0..count).map(|i| v(me, i)).collect();
    let mut sum = vec![0f32; count];
    c.all_reduce(&send, &mut sum, ReduceOp::Sum)?;
    if let Some(i) = (0..count).find(|&i| sum[i] != (0..n).map(|r| v(r, i)).sum::<f32>()) {
        return Err(fail(c, format!("16 MiB allreduce [{i}]")));
    }
    let mut b: Vec<u8> = (0..16 << 20)
        .map(|i| if me == 1 { (i % 251) as u8 } else { 0 })
        .collect();
    c.broadcast(&mut b, 1)?;
    if b.iter().enumerate().any(|(i, &x)| x != (i % 251) as u8) {
        return Err(fail(c, "16 MiB broadcast".into()));
    }
    let per = count / n;
    let mine: Vec<f32> = (0..per).map(|i| v(me, i)).collect();
    let mut all = vec![0f32; per * n];
    c.all_gather(&mine, &mut all)?;
    if (0..per * n).any(|i| all[i] != v(i / per, i % per)) {
        return Err(fail(c, "16 MiB allgather".into()));
    }
    let mut block = vec![0f32; per];
    c.reduce_scatter(&send[..per * n], &mut block, ReduceOp::Max)?;
    let want = |i: usize| (0..n).map(|r| v(r, me * per + i)).fold(f32::MIN, f32::max);
    if (0..per).any(|i| block[i] != want(i)) {
        return Err(fail(c, "16 MiB reduce_scatter".into()));
    }
    Ok(vec![
        fnv(bytemuck::cast_slice(&sum)),
        fnv(bytemuck::cast_slice(&all)),
    ])
}

#[test]
#[ignore = "needs RDMA devices: ci/verbs.sh runs it in a SoftRoCE VM"]
fn sixteen_mib_collectives_with_one_and_several_queue_pairs() {
    let res = run(3, config(300), on_alternate_devices, sixteen_mib);
    expect_same("3 ranks, 16 MiB", res);
    let four_qps = |r, ip| VerbsConfig {
        qps_per_connection: 4,
        ..on_alternate_devices(r, ip)
    };
    let res = run(2, config(300), four_qps, sixteen_mib);
    expect_same("2 ranks, 16 MiB, 4 QPs per connection", res);
}

/// Two transports, one per device, connected through the trait as the engine does it.
struct Pair {
    a: VerbsTransport,
    b: VerbsTransport,
    send: <VerbsTransport as Transport>::SendConn,
    recv: <VerbsTransport as Transport>::RecvConn,
}

/// With several queue pairs, also a traffic class and service level other than 0.
fn pair(qps: usize) -> Pair {
    pair_from(0, qps)
}

/// The sending side on rxe`first`, the receiving side on the other device.
fn pair_from(first: usize, qps: usize) -> Pair {
    let lo: IpAddr = [127, 0, 0, 1].into();
    let mk = |r: usize| {
        VerbsTransport::new(VerbsConfig {
            qps_per_connection: qps,
            traffic_class: if qps > 1 { 104 } else { 0 },
            service_level: if qps > 1 { 3 } else { 0 },
            ..on_alternate_devices(r, lo)
        })
        .expect("open")
    };
    let (mut a, mut b) = (mk(first), mk(1 - first));
    let (h, mut l): (ConnectHandle, _) = b.listen(0).expect("listen");
    let mut c = a.connect(0, &h).expect("connect");
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut send, mut recv) = (None, None);
    while send.is_none() || recv.is_none() {
        assert!(Instant::now() < deadline, "set-up took too long");
        if send.is_none() {
            send = a.poll_connect(&mut c).expect("poll_connect");
        }
        if recv.is_none() {
            recv = b.accept(&mut l).expect("accept");
        }
    }
    b.close_listen(l).expect("close listener");
    Pair {
        a,
        b,
        send: send.expect("send end"),
        recv: recv.expect("receive end"),
    }
}

impl Pair {
    /// Sends each buffer of `msgs` (with receives of `caps`), receives posted after the
    /// sends when `late`; returns each receive's outcome.
    fn exchange(&mut self, msgs: &[Vec<u8>], caps: &[usize], late: bool) -> Vec<Result<Vec<u8>>> {
        let mut bufs: Vec<Vec<u8>> = caps.iter().map(|&c| vec![0xee; c]).collect();
        let mut sends = Vec::new();
        let mut recvs = Vec::new();
        let (mut ns, mut nr) = (0, 0);
        let mut out: Vec<Option<Result<Vec<u8>>>> = (0..caps.len()).map(|_| None).collect();
        let mut sent = 0;
        let deadline = Instant::now() + Duration::from_secs(60);
        while out.iter().any(Option::is_none) || sent < msgs.len() {
            assert!(
                Instant::now() < deadline,
                "exchange stalled: {sent} sent, {out:?}"
            );
            if ns < msgs.len() {
                let tag = [ns as u64, 7, 9];
                // SAFETY: `msgs` outlives the requests (tested to completion below).
                match unsafe {
                    self.a
                        .isend(&mut self.send, msgs[ns].as_ptr(), msgs[ns].len(), tag, None)
                } {
                    Ok(Some(r)) => {
                        sends.push(r);
                        ns += 1;
                    }
                    Ok(None) => {}
                    Err(e) => panic!("isend {ns}: {e}"),
                }
            }
            if nr < caps.len() && (!late || ns == msgs.len() || ns >= 8) {
                // SAFETY: `bufs` is neither moved nor touched until its receive is reported.
                match unsafe {
                    self.b
                        .irecv(&mut self.recv, bufs[nr].as_mut_ptr(), caps[nr], None)
                } {
                    Ok(Some(r)) => {
                        recvs.push((nr, r));
                        nr += 1;
                    }
                    Ok(None) => {}
                    Err(e) => panic!("irecv {nr}: {e}"),
                }
            }
            sends.retain_mut(|r| match self.a.test(r) {
                Ok(Some(_)) => {
                    sent += 1;
                    false
                }
                Ok(None) => true,
                Err(_) => {
                    sent += 1; // a failing send is reported through its receive's outcome
                    false
                }
            });
            recvs.retain_mut(|(k, r)| match self.b.test(r) {
                Ok(Some(c)) => {
                    assert_eq!(c.tag, [*k as u64, 7, 9], "message {k} carries its tag");
                    out[*k] = Some(Ok(bufs[*k][..c.bytes].to_vec()));
                    false
                }
                Ok(None) => true,
                Err(e) => {
                    out[*k] = Some(Err(e));
                    false
                }
            });
            if out.iter().any(|o| matches!(o, Some(Err(_)))) {
                break;
            }
        }
        out.into_iter()
            .map(|o| o.unwrap_or_else(|| Err(Error::internal("not received"))))
            .collect()
    }
}

static CONSTANT: [u8; 20_000] = [7; 20_000];

#[test]
#[ignore = "needs RDMA devices: ci/verbs.sh runs it in a SoftRoCE VM"]
fn transport_sizes_order_and_mismatches() {
    let pattern = |len: usize, seed: usize| -> Vec<u8> {
        (0..len)
            .map(|i| ((i * 31 + seed * 7) % 251) as u8)
            .collect()
    };
    for qps in [1, 3] {
        let mut p = pair(qps);
        // Around the eager limit (8 KiB), zero, and a zero-copy message split over QPs.
        let sizes = [0, 1, 8191, 8192, 8193, (1 << 20) + 3, 5];
        let msgs: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(k, &n)| pattern(n, k))
            .collect();
        for late in [false, true] {
            let got = p.exchange(&msgs, &sizes, late);
            for (k, g) in got.into_iter().enumerate() {
                let g = g.unwrap_or_else(|e| panic!("{qps} QPs, late {late}, message {k}: {e}"));
                assert!(g == msgs[k], "{qps} QPs, late {late}: message {k} differs");
            }
        }
        // Many small messages: the sender runs ahead of the receiver's window.
        let many: Vec<Vec<u8>> = (0..40).map(|k| pattern(100 + k, k)).collect();
        let caps: Vec<usize> = many.iter().map(Vec::len).collect();
        for (k, g) in p.exchange(&many, &caps, true).into_iter().enumerate() {
            assert!(g.expect("small message") == many[k], "small message {k}");
        }
        // A send from read-only memory, larger than the eager limit.
        let ro = {
            let send: &'static [u8] = &CONSTANT;
            let mut buf = vec![0u8; 20_000];
            // SAFETY: a static source; `buf` lives until the receive is reported.
            let mut s = unsafe {
                p.a.isend(&mut p.send, send.as_ptr(), send.len(), [1, 2, 3], None)
            }
            .expect("isend")
            .expect("room");
            let mut r = unsafe { p.b.irecv(&mut p.recv, buf.as_mut_ptr(), buf.len(), None) }
                .expect("irecv")
                .expect("room");
            let deadline = Instant::now() + Duration::from_secs(30);
            let (mut sd, mut rd) = (false, false);
            while !(sd && rd) {
                assert!(Instant::now() < deadline, "read-only send stalled");
                sd = sd || p.a.test(&mut s).expect("send").is_some();
                rd = rd || p.b.test(&mut r).expect("recv").is_some();
            }
            buf
        };
        assert!(ro == CONSTANT, "send from read-only memory");
    }
    // Too large for the receive: eager, then zero-copy. The receiver names the sizes.
    for (len, cap) in [(200, 100), (20_000, 10_000)] {
        let mut p = pair(1);
        let got = p.exchange(&[pattern(len, 1)], &[cap], false);
        let e = got.into_iter().next().expect("one").expect_err("must fail");
        assert_eq!(e.kind(), ErrorKind::InvalidUsage, "{e}");
        let m = e.to_string();
        assert!(
            m.contains(&format!("{len} bytes")) && m.contains(&format!("{cap} bytes")),
            "{m}"
        );
    }
}

/// Rank 2 of the killed-rank test when this binary runs it as a child process.
#[test]
#[ignore = "helper entry point: the child process of a_killed_rank_fails_the_others_with_remote"]
fn zz_child_rank_entry() {
    let Ok(spec) = std::env::var("OXCCL_TEST_CHILD") else {
        return; // run directly, not as the child: nothing to do
    };
    let bytes: Vec<u8> = (0..spec.len() / 2)
        .map(|i| u8::from_str_radix(&spec[2 * i..2 * i + 2], 16).expect("hex id"))
        .collect();
    let id = UniqueId::from_bytes(&bytes).expect("id");
    let c = Communicator::init_with(&id, 2, 3, config(60), |ip| {
        VerbsTransport::new(on_alternate_devices(2, ip))
    })
    .expect("child init");
    let data = vec![1.0f32; 256 << 10];
    let mut out = vec![0.0f32; 256 << 10];
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(120) {
        if c.all_reduce(&data, &mut out, ReduceOp::Sum).is_err() {
            return;
        }
    }
}

#[test]
#[ignore = "needs RDMA devices: ci/verbs.sh runs it in a SoftRoCE VM"]
fn a_killed_rank_fails_the_others_with_remote() {
    let id = UniqueId::with_addr([127, 0, 0, 1].into()).expect("id");
    let hex: String = id.as_bytes().iter().map(|b| format!("{b:02x}")).collect();
    let exe = std::env::current_exe().expect("test binary");
    let child = std::process::Command::new(exe)
        .args([
            "zz_child_rank_entry",
            "--exact",
            "--include-ignored",
            "--test-threads",
            "1",
        ])
        .env("OXCCL_TEST_CHILD", hex)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start the child rank");
    let child = Arc::new(Mutex::new(child));
    let killed_at = Arc::new(Mutex::new(None::<Instant>));
    let hs: Vec<_> = (0..2)
        .map(|r| {
            let (id, child, killed_at) = (id.clone(), child.clone(), killed_at.clone());
            std::thread::spawn(move || -> Result<Duration> {
                let c = Communicator::init_with(&id, r, 3, config(60), move |ip| {
                    VerbsTransport::new(on_alternate_devices(r, ip))
                })?;
                let data = vec![1.0f32; 256 << 10];
                let mut out = vec![0.0f32; 256 << 10];
                for i in 0..10_000 {
                    if r == 0 && i == 3 {
                        let mut k = killed_at.lock().expect("lock");
                        child.lock().expect("lock").kill().expect("kill the child");
                        *k = Some(Instant::now());
                    }
                    if let Err(e) = c.all_reduce(&data, &mut out, ReduceOp::Sum) {
                        assert_eq!(e.kind(), ErrorKind::Remote, "rank {r}: {e}");
                        assert!(e.to_string().contains(&format!("rank {r}")), "{e}");
                        let t = killed_at
                            .lock()
                            .expect("lock")
                            .expect("failed before the kill");
                        return Ok(t.elapsed());
                    }
                }
                Err(Error::internal(format!("rank {r} never failed")))
            })
        })
        .collect();
    for (r, h) in hs.into_iter().enumerate() {
        let t = h
            .join()
            .expect("rank thread")
            .unwrap_or_else(|e| panic!("rank {r}: {e}"));
        assert!(t < Duration::from_secs(10), "rank {r} noticed after {t:?}");
    }
    let _ = child.lock().expect("lock").wait();
}

fn sh(cmd: &str) {
    let ok = std::process::Command::new("sh")
        .args(["-c", cmd])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "{cmd}");
}

#[test]
#[ignore = "needs RDMA devices: ci/verbs.sh runs it in a SoftRoCE VM"]
fn a_dead_link_is_a_remote_error_naming_the_peer_within_the_timeout() {
    // Every packet rxe0 sends is dropped (netem, 100% loss) while the side channel, on
    // loopback, stays up: only the queue pairs' retries (OXCCL_IB_TIMEOUT 14: 67 ms per
    // try, and the default 6 retries) can tell that the peer is unreachable. (Downing the
    // veth instead would not do: rxe retries a packet the local device refuses for ever.)
    let short = |r, ip| VerbsConfig {
        timeout: 14,
        ..on_alternate_devices(r, ip)
    };
    let cut = Arc::new(Mutex::new(None::<Instant>));
    let c2 = cut.clone();
    let res = run(2, config(60), short, move |c| {
        let data = vec![1.0f32; 64 << 10];
        let mut out = vec![0.0f32; 64 << 10];
        for i in 0..10_000 {
            if c.rank() == 0 && i == 3 {
                sh("tc qdisc add dev veth0 root netem loss 100%");
                *c2.lock().expect("lock") = Some(Instant::now());
            }
            if let Err(e) = c.all_reduce(&data, &mut out, ReduceOp::Sum) {
                let t = c2.lock().expect("lock").map(|t| t.elapsed());
                return Ok((e, t));
            }
        }
        Err(Error::internal("never failed"))
    });
    sh("tc qdisc del dev veth0 root");
    for (r, x) in res.into_iter().enumerate() {
        let (e, t) = x.unwrap_or_else(|e| panic!("rank {r}: {e}"));
        let m = e.to_string();
        assert_eq!(e.kind(), ErrorKind::Remote, "rank {r}: {m}");
        assert!(
            m.contains(&format!("rank {}", 1 - r)),
            "rank {r} must name its peer: {m}"
        );
        let t = t.expect("failed before the link was cut");
        assert!(
            t < Duration::from_secs(15),
            "rank {r} noticed after {t:?}: {m}"
        );
        eprintln!("rank {r} failed {t:?} after the cut: {m}");
    }
}

#[test]
#[ignore = "needs RDMA devices: ci/verbs.sh runs it in a SoftRoCE VM"]
fn path_mtu_is_the_smaller_of_both_ports() {
    // rxe1 gets a 4096-byte RDMA MTU (veth1 at 9000), rxe0 keeps 1024 (veth0 at 1500):
    // packets of 4096 from rxe1 would be dropped entering veth0, so a large message from
    // rxe1 to rxe0 only arrives if the connection uses the smaller MTU.
    sh("ip link set veth1 mtu 9000");
    std::thread::sleep(Duration::from_millis(300));
    let got = std::panic::catch_unwind(|| {
        let mut p = pair_from(1, 1);
        let msg: Vec<u8> = (0..(1 << 20) + 5).map(|i| (i % 253) as u8).collect();
        let got = p.exchange(std::slice::from_ref(&msg), &[msg.len()], false);
        (msg, got)
    });
    sh("ip link set veth1 mtu 1500");
    let (msg, got) = got.unwrap_or_else(|e| std::panic::resume_unwind(e));
    let g = got
        .into_iter()
        .next()
        .expect("one")
        .expect("1 MiB from rxe1 to rxe0");
    assert!(g == msg, "message differs");
}
