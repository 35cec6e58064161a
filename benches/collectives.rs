//! The collectives themselves, nccl-tests style: allreduce, allgather, broadcast and
//! reduce-scatter of float32 at a few sizes, `OXCCL_BENCH_RANKS` ranks (default 2) as
//! threads of this process over the transport `OXCCL_TRANSPORT` names (tcp by default; any
//! `OXCCL_*` setting applies).
//!
//!     cargo bench --bench collectives [-- SIZE...]
//!
//! SIZEs in bytes with an optional K/M/G suffix (default 8 64K 1M 16M). For verbs,
//! `OXCCL_BENCH_HCAS=rxe0,rxe1` puts rank r on device r modulo the list (as the SoftRoCE VM
//! does). Each size runs a warm-up, then a fixed number of calls on every rank (about
//! `OXCCL_BENCH_MB` MiB, default 256, between 5 and 2000 calls); the time is the slowest rank's mean per call. busbw = algbw x 2(n-1)/n
//! (allreduce), (n-1)/n (allgather, reduce-scatter), 1 (broadcast), where size is the
//! allreduce and broadcast buffer, the allgather output and the reduce-scatter input.

use std::sync::Arc;
use std::time::Instant;

use oxccl::transport::verbs::{VerbsConfig, VerbsTransport};
use oxccl::{Communicator, Config, ReduceOp, Result, UniqueId};

const OPS: [&str; 4] = ["allreduce", "allgather", "broadcast", "reduce_scatter"];

/// A size in bytes with an optional K/M/G suffix, as the `OXCCL_*` byte variables take.
fn parse_size(s: &str) -> Option<usize> {
    oxccl::config::parse_bytes("SIZE", s).ok()
}

/// Calls per size: about `OXCCL_BENCH_MB` MiB moved (default 256), 5 to 2000 calls.
fn calls_for(bytes: usize) -> usize {
    let mib: usize = std::env::var("OXCCL_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    ((mib << 20) / bytes.max(1)).clamp(5, 2000)
}

/// One call of `op` on `bytes` bytes (rounded down to whole floats per rank).
fn call(c: &Communicator, op: &str, send: &[f32], recv: &mut [f32]) -> Result<()> {
    let n = c.size();
    match op {
        "allreduce" => c.all_reduce(send, recv, ReduceOp::Sum),
        "allgather" => c.all_gather(&send[..recv.len() / n], recv),
        "broadcast" => c.broadcast(recv, 0),
        _ => c.reduce_scatter(send, &mut recv[..send.len() / n], ReduceOp::Sum),
    }
}

/// Mean seconds per call of `op`, the slowest rank's.
fn time_op(c: &Communicator, op: &str, bytes: usize) -> Result<f64> {
    let n = c.size();
    let count = (bytes / 4 / n).max(1) * n;
    let send = vec![1.0f32; count];
    let mut recv = vec![0.0f32; count];
    for _ in 0..2 {
        call(c, op, &send, &mut recv)?;
    }
    let calls = calls_for(bytes);
    c.barrier()?;
    let t0 = Instant::now();
    for _ in 0..calls {
        call(c, op, &send, &mut recv)?;
    }
    let mut t = [t0.elapsed().as_secs_f64() / calls as f64];
    c.all_reduce_in_place(&mut t, ReduceOp::Max)?;
    Ok(t[0])
}

fn bus_factor(op: &str, n: usize) -> f64 {
    let n = n as f64;
    match op {
        "allreduce" => 2.0 * (n - 1.0) / n,
        "broadcast" => 1.0,
        _ => (n - 1.0) / n,
    }
}

/// Joins rank `r` of `n`: verbs ranks on the devices `OXCCL_BENCH_HCAS` lists, if set.
fn join(id: &UniqueId, r: usize, n: usize, cfg: Config) -> Result<Communicator> {
    let hcas = std::env::var("OXCCL_BENCH_HCAS").unwrap_or_default();
    let hcas: Vec<&str> = hcas.split(',').filter(|h| !h.is_empty()).collect();
    if cfg.transport != "verbs" || hcas.is_empty() {
        return Communicator::init_with_config(id, r, n, cfg);
    }
    let hca = format!("={}", hcas[r % hcas.len()]);
    Communicator::init_with(id, r, n, cfg, move |ip| {
        VerbsTransport::new(VerbsConfig {
            hca: Some(hca),
            ..VerbsConfig::new(ip, r)
        })
    })
}

fn main() -> Result<()> {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .filter_map(|a| parse_size(&a))
        .collect();
    let sizes = if sizes.is_empty() {
        vec![8, 64 << 10, 1 << 20, 16 << 20]
    } else {
        sizes
    };
    let n: usize = std::env::var("OXCCL_BENCH_RANKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let cfg = Config::from_env()?;
    println!(
        "# oxccl collectives bench: {n} ranks (threads of one process) over {}",
        cfg.transport
    );
    println!(
        "# {:>10} {:>10} {:>6} {:>5} {:>11} {:>11} {:>11}  op",
        "size", "count", "type", "redop", "time(us)", "algbw(GB/s)", "busbw(GB/s)"
    );
    let id = UniqueId::with_addr([127, 0, 0, 1].into())?;
    let sizes = Arc::new(sizes);
    let ranks: Vec<_> = (0..n)
        .map(|r| {
            let (id, cfg, sizes) = (id.clone(), cfg.clone(), sizes.clone());
            std::thread::spawn(move || -> Result<()> {
                let c = join(&id, r, n, cfg)?;
                for op in OPS {
                    for &bytes in sizes.iter() {
                        let t = time_op(&c, op, bytes)?;
                        if r == 0 {
                            let algbw = bytes as f64 / t / 1e9;
                            let redop = if matches!(op, "allreduce" | "reduce_scatter") {
                                "sum"
                            } else {
                                "none"
                            };
                            println!(
                                "  {bytes:>10} {:>10} {:>6} {redop:>5} {:>11.2} {algbw:>11.3} {:>11.3}  {op}",
                                bytes / 4,
                                "float",
                                t * 1e6,
                                algbw * bus_factor(op, n)
                            );
                        }
                    }
                }
                Ok(())
            })
        })
        .collect();
    for h in ranks {
        h.join()
            .unwrap_or_else(|_| Err(oxccl::Error::internal("rank thread panicked")))?;
    }
    Ok(())
}
