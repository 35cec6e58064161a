//! Shared harness: N ranks as threads over mem or tcp, element helpers, a serial reference.

#![allow(dead_code)]

use std::sync::{Arc, Barrier};
use std::time::Duration;

use oxccl::transport::mem::{MemFabric, MemFaults};
use oxccl::{
    Bf16, Communicator, Config, DataType, Element, ReduceOp, Result, UniqueId, F16, F8E4M3, F8E5M2,
};

/// Which backend a test runs on.
#[derive(Clone)]
pub enum Net {
    Mem(u64, MemFaults),
    Tcp,
    /// The native shared-memory backend.
    Shm,
    /// tcp with shared memory beside it (the hybrid transport), rank r playing host
    /// r % hosts: shm within a host, tcp between hosts.
    Hybrid(usize),
    /// libfabric through the fabric backend, on the named provider (`tcp`, `shm`).
    Fabric(&'static str),
}

/// Whether libfabric can be loaded; where it cannot, prints why (the caller skips) — except
/// under CI (`CI` set), whose script installs it, where that is a failure.
pub fn have_libfabric() -> bool {
    match oxccl::transport::fabric::FabricTransport::available() {
        Ok(()) => true,
        Err(e) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "libfabric must be installed under CI: {e}"
            );
            eprintln!("skipping: {e}");
            false
        }
    }
}

pub fn config(algo: Option<&str>, timeout_s: u64) -> Config {
    Config {
        algo: algo.map(String::from),
        timeout: Duration::from_secs(timeout_s),
        chunk_bytes: 64 << 10,
        spin: Some(50),
        // Net::Tcp tests tcp itself; Net::Shm is shared memory.
        shm: false,
        ..Config::default()
    }
}

/// Runs `f(comm)` on `n` rank threads and returns each rank's result, in rank order.
pub fn run<R: Send + 'static>(
    n: usize,
    net: Net,
    cfg: Config,
    f: impl Fn(&Communicator) -> Result<R> + Send + Sync + 'static,
) -> Vec<Result<R>> {
    let id = UniqueId::with_addr([127, 0, 0, 1].into()).expect("unique id");
    let f = Arc::new(f);
    let fabric = match &net {
        Net::Mem(seed, faults) => Some(MemFabric::new(*seed, faults.clone())),
        Net::Tcp | Net::Shm | Net::Hybrid(_) | Net::Fabric(_) => None,
    };
    let provider = match net {
        Net::Fabric(p) => Some(p),
        _ => None,
    };
    let shm = matches!(net, Net::Shm);
    let hosts = match net {
        Net::Hybrid(h) => Some(h.max(1)),
        _ => None,
    };
    let start = Arc::new(Barrier::new(n));
    let hs: Vec<_> = (0..n)
        .map(|r| {
            let (id, f, cfg, fabric, start) = (
                id.clone(),
                f.clone(),
                cfg.clone(),
                fabric.clone(),
                start.clone(),
            );
            std::thread::spawn(move || {
                start.wait();
                let comm = match fabric {
                    Some(fab) => {
                        Communicator::init_with(&id, r, n, cfg, move |_| Ok(fab.endpoint()))?
                    }
                    None if shm => Communicator::init_with(&id, r, n, cfg, |_| {
                        oxccl::transport::shm::ShmTransport::new()
                    })?,
                    None if hosts.is_some() => {
                        let host = [(r % hosts.unwrap_or(1)) as u8; 16];
                        Communicator::init_with(&id, r, n, cfg, move |ip| {
                            let tcp = oxccl::transport::tcp::TcpTransport::new(
                                oxccl::transport::tcp::TcpConfig {
                                    bind_ip: ip,
                                    socket_buf_bytes: 1 << 20,
                                    congestion: Default::default(),
                                },
                            )?;
                            oxccl::transport::hybrid::Hybrid::new(tcp, true, host)
                        })?
                    }
                    None => match provider {
                        Some(p) => Communicator::init_with(&id, r, n, cfg, move |ip| {
                            oxccl::transport::fabric::FabricTransport::new(
                                oxccl::transport::fabric::FabricConfig {
                                    provider: Some(p.into()),
                                    bind_ip: Some(ip),
                                },
                            )
                        })?,
                        None => Communicator::init_with_config(&id, r, n, cfg)?,
                    },
                };
                f(&comm)
            })
        })
        .collect();
    hs.into_iter()
        .map(|h| {
            h.join()
                .unwrap_or_else(|_| Err(oxccl::Error::internal("rank thread panicked")))
        })
        .collect()
}

/// An element with exact small-integer values for checks.
pub trait Val: Element + Default + PartialEq + std::fmt::Debug {
    fn v(x: f64) -> Self;
    fn f(self) -> f64;
    const FLOAT: bool;
    /// Too narrow (fp8) for the sums of `input` over up to 16 ranks to be exact: see
    /// [`exact_ops`].
    const NARROW: bool = false;
}
macro_rules! val {
    ($($t:ty, $fl:expr);*) => {$( impl Val for $t {
        fn v(x: f64) -> Self { x as $t } fn f(self) -> f64 { self as f64 } const FLOAT: bool = $fl; } )*};
}
val!(i8, false; u8, false; i32, false; u32, false; i64, false; u64, false; f32, true; f64, true);
impl Val for F16 {
    fn v(x: f64) -> Self {
        F16::from_f32(x as f32)
    }
    fn f(self) -> f64 {
        f64::from(self.to_f32())
    }
    const FLOAT: bool = true;
}
impl Val for Bf16 {
    fn v(x: f64) -> Self {
        Bf16::from_f32(x as f32)
    }
    fn f(self) -> f64 {
        f64::from(self.to_f32())
    }
    const FLOAT: bool = true;
}
impl Val for F8E4M3 {
    fn v(x: f64) -> Self {
        F8E4M3::from_f32(x as f32)
    }
    fn f(self) -> f64 {
        f64::from(self.to_f32())
    }
    const FLOAT: bool = true;
    const NARROW: bool = true;
}
impl Val for F8E5M2 {
    fn v(x: f64) -> Self {
        F8E5M2::from_f32(x as f32)
    }
    fn f(self) -> f64 {
        f64::from(self.to_f32())
    }
    const FLOAT: bool = true;
    const NARROW: bool = true;
}

/// The ops of `ops` whose results `reference` gives exactly for `T`: all of them, except
/// that fp8 sums (and averages) of `input` round, in an order that depends on the algorithm,
/// so fp8 keeps prod, max and min (its sums are still compared bitwise across ranks).
pub fn exact_ops<T: Val>(ops: &[ReduceOp]) -> Vec<ReduceOp> {
    ops.iter()
        .copied()
        .filter(|o| !(T::NARROW && matches!(o, ReduceOp::Sum | ReduceOp::Avg)))
        .collect()
}

/// Rank r's input at element i for `op`: exact in every type for up to 16 ranks.
pub fn input(op: ReduceOp, n: usize, r: usize, i: usize) -> f64 {
    match op {
        ReduceOp::Prod => {
            if (i + r) % n == 0 {
                2.0
            } else {
                1.0
            }
        }
        ReduceOp::Min | ReduceOp::Max => ((i * 5 + r * 3) % 7) as f64,
        _ => ((i * 7 + r * 3) % 4) as f64,
    }
}

/// The serial reference: ranks 0..n reduced in order.
pub fn reference(op: ReduceOp, n: usize, i: usize, float: bool) -> f64 {
    let v = (0..n).map(|r| input(op, n, r, i));
    // The inputs are small non-negative integers.
    let bits = v.clone().map(|x| x as u64);
    match op {
        ReduceOp::Sum => v.sum(),
        ReduceOp::Prod => v.product(),
        ReduceOp::Max => v.fold(f64::MIN, f64::max),
        ReduceOp::Min => v.fold(f64::MAX, f64::min),
        ReduceOp::Avg => {
            let s: f64 = v.sum();
            if float {
                s / n as f64
            } else {
                (s / n as f64).trunc()
            }
        }
        ReduceOp::BAnd => bits.fold(u64::MAX, |a, b| a & b) as f64,
        ReduceOp::BOr => bits.fold(0, |a, b| a | b) as f64,
        ReduceOp::BXor => bits.fold(0, |a, b| a ^ b) as f64,
    }
}

pub fn close<T: Val>(got: T, want: f64, op: ReduceOp) -> bool {
    if T::FLOAT && op == ReduceOp::Avg {
        return (got.f() - want).abs() <= 1e-2 * want.abs().max(1.0);
    }
    got.f() == want
}

pub fn dtypes() -> [DataType; 12] {
    DataType::ALL
}

/// A topology file for `OXCCL_TOPO_FILE`, removed on drop.
pub struct TopoFile(pub std::path::PathBuf);

impl TopoFile {
    /// `n` ranks dealt round-robin over `hosts` hosts (rank r on host r mod hosts), as a
    /// launcher's `--map-by node` places them.
    pub fn round_robin(n: usize, hosts: usize) -> TopoFile {
        let sizes: Vec<String> = (0..hosts)
            .map(|h| (h..n).step_by(hosts).count().to_string())
            .collect();
        TopoFile::with_text(&format!(
            "{{\"layout\": {{\"sizes\": [{}], \"map_by\": \"node\"}}}}",
            sizes.join(", ")
        ))
    }

    /// A file holding `text`.
    pub fn with_text(text: &str) -> TopoFile {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "oxccl-topo-{}-{}.json",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&p, text).expect("writing a topology file");
        TopoFile(p)
    }
}

impl Drop for TopoFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
