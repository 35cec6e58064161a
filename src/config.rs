//! Run-time settings, read from `OXCCL_*` environment variables or set in code.
//!
//! Every variable is documented in `docs/environment.md`; a malformed value is an
//! `InvalidArgument` error naming the variable, never silently ignored.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};

/// Settings of one communicator. [`Config::from_env`] reads the `OXCCL_*` variables;
/// [`Config::default`] ignores the environment.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Backend name (`OXCCL_TRANSPORT`): `tcp` (default), `fabric` or `mem`.
    pub transport: String,
    /// Deadline for every blocking wait (`OXCCL_TIMEOUT`, seconds; default 300).
    pub timeout: Duration,
    /// Forced algorithm (`OXCCL_ALGO`: `ring`, `tree`, `rd`, `chain`, ...); `None` lets the
    /// cost model choose.
    pub algo: Option<String>,
    /// Connections per peer pair for large messages (`OXCCL_NCHANNELS`; default: the
    /// transport's choice).
    pub nchannels: Option<usize>,
    /// Pipelining chunk size in bytes (`OXCCL_CHUNK_SIZE`; default 128 KiB).
    pub chunk_bytes: usize,
    /// Messages below this size use one channel (`OXCCL_CHANNEL_THRESHOLD`; default 256 KiB).
    pub channel_threshold: usize,
    /// Socket send/receive buffer size in bytes (`OXCCL_SOCKET_BUFSIZE`; default 1 MiB).
    pub socket_buf_bytes: usize,
    /// Polls without progress before the engine sleeps in the transport (`OXCCL_SPIN`).
    /// 0 never spins. `None` chooses: [`SPIN_DEFAULT`], or [`SPIN_OVERSUBSCRIBED`] when this
    /// host runs more ranks of the communicator than this process may use CPUs.
    pub spin: Option<u32>,
    /// Whether each idle poll first yields the CPU (`OXCCL_YIELD_WHEN_IDLE`, 0 or 1, as
    /// Open MPI's `mpi_yield_when_idle`). `None` chooses: yes exactly when ranks
    /// outnumber CPUs, where a rank that spins takes the CPU from the peer it waits for.
    pub yield_when_idle: Option<bool>,
    /// A topology to use instead of the detected one (`OXCCL_TOPO_FILE`, JSON): entry r of
    /// its ranks gives rank r's host, NUMA node and rail. See docs/topology.md.
    pub topo_file: Option<PathBuf>,
    /// Where rank 0 writes the topology and the chosen rings and trees at init
    /// (`OXCCL_TOPO_DUMP_FILE`, JSON).
    pub topo_dump_file: Option<PathBuf>,
    /// Whether rings and trees follow the topology (`OXCCL_TOPO_AWARE`, default 1); with 0,
    /// plain rank order, for comparison.
    pub topo_aware: bool,
    /// The communicator's name (`OXCCL_COMM_NAME`, or the C config's `commName`), as
    /// [`Communicator::name`](crate::Communicator::name) reports it; `None`: unnamed.
    pub name: Option<String>,
}

/// Idle polls before sleeping when each rank on the host can have a CPU of its own.
pub const SPIN_DEFAULT: u32 = 2000;

/// Idle polls, each after yielding the CPU, before sleeping when ranks outnumber the CPUs
/// (see [`Config::spin`]). With 4 and 8 ranks on 2 cores this took 8-byte allreduce from
/// about 80 and 220 us (sleeping at once) to 30-55 and 110 us.
pub const SPIN_OVERSUBSCRIBED: u32 = 100;

/// How a rank waits when nothing moves (see [`Config::idle_for`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdlePolicy {
    /// Polls before sleeping in the transport.
    pub spin: u32,
    /// Whether each poll first yields the CPU.
    pub yield_when_idle: bool,
}

impl Config {
    /// How a rank of a communicator with `local_ranks` ranks on this host waits: the
    /// settings given, else spinning when every rank can have a CPU and yielding between
    /// polls when ranks outnumber the CPUs this process may use (affinity and cgroup
    /// quota counted).
    pub fn idle_for(&self, local_ranks: usize) -> IdlePolicy {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let over = local_ranks > cpus;
        IdlePolicy {
            spin: self.spin.unwrap_or(if over {
                SPIN_OVERSUBSCRIBED
            } else {
                SPIN_DEFAULT
            }),
            yield_when_idle: self.yield_when_idle.unwrap_or(over),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            transport: "tcp".into(),
            timeout: Duration::from_secs(300),
            algo: None,
            nchannels: None,
            chunk_bytes: 128 << 10,
            channel_threshold: 256 << 10,
            socket_buf_bytes: 1 << 20,
            spin: None,
            yield_when_idle: None,
            topo_file: None,
            topo_dump_file: None,
            topo_aware: true,
            name: None,
        }
    }
}

impl Config {
    /// Defaults overridden by the `OXCCL_*` environment variables that are set.
    pub fn from_env() -> Result<Config> {
        let mut c = Config::default();
        if let Some(v) = var("OXCCL_TRANSPORT") {
            c.transport = v.to_ascii_lowercase();
        }
        if let Some(v) = var("OXCCL_TIMEOUT") {
            let secs: f64 = parse("OXCCL_TIMEOUT", &v)?;
            if !(secs > 0.0 && secs.is_finite()) {
                return Err(bad("OXCCL_TIMEOUT", &v, "a positive number of seconds"));
            }
            c.timeout = Duration::from_secs_f64(secs);
        }
        if let Some(v) = var("OXCCL_ALGO") {
            c.algo = Some(v.to_ascii_lowercase());
        }
        if let Some(v) = var("OXCCL_NCHANNELS") {
            let n: usize = parse("OXCCL_NCHANNELS", &v)?;
            if !(1..=64).contains(&n) {
                return Err(bad("OXCCL_NCHANNELS", &v, "1..=64"));
            }
            c.nchannels = Some(n);
        }
        if let Some(v) = var("OXCCL_CHUNK_SIZE") {
            c.chunk_bytes = parse_bytes("OXCCL_CHUNK_SIZE", &v)?;
            if c.chunk_bytes < 64 {
                return Err(bad("OXCCL_CHUNK_SIZE", &v, "at least 64 bytes"));
            }
        }
        if let Some(v) = var("OXCCL_CHANNEL_THRESHOLD") {
            c.channel_threshold = parse_bytes("OXCCL_CHANNEL_THRESHOLD", &v)?;
        }
        if let Some(v) = var("OXCCL_SOCKET_BUFSIZE") {
            c.socket_buf_bytes = parse_bytes("OXCCL_SOCKET_BUFSIZE", &v)?;
        }
        if let Some(v) = var("OXCCL_SPIN") {
            c.spin = Some(parse("OXCCL_SPIN", &v)?);
        }
        if let Some(v) = var("OXCCL_YIELD_WHEN_IDLE") {
            c.yield_when_idle = Some(parse_flag("OXCCL_YIELD_WHEN_IDLE", &v)?);
        }
        c.topo_file = var("OXCCL_TOPO_FILE").map(PathBuf::from);
        c.topo_dump_file = var("OXCCL_TOPO_DUMP_FILE").map(PathBuf::from);
        if let Some(v) = var("OXCCL_TOPO_AWARE") {
            c.topo_aware = parse_flag("OXCCL_TOPO_AWARE", &v)?;
        }
        c.name = var("OXCCL_COMM_NAME");
        Ok(c)
    }
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn bad(name: &str, value: &str, want: &str) -> Error {
    Error::invalid_argument(format!("{name}='{value}' is not valid: expected {want}"))
}

fn parse<T: std::str::FromStr>(name: &str, value: &str) -> Result<T> {
    value
        .trim()
        .parse()
        .map_err(|_| bad(name, value, "a number"))
}

/// Parses `0` or `1`.
pub fn parse_flag(name: &str, value: &str) -> Result<bool> {
    match value.trim() {
        "1" => Ok(true),
        "0" => Ok(false),
        _ => Err(bad(name, value, "0 or 1")),
    }
}

/// Parses a byte count with an optional K, M or G suffix (powers of 1024), as nccl-tests does.
pub fn parse_bytes(name: &str, value: &str) -> Result<usize> {
    let v = value.trim();
    let (num, mult) = match v.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&v[..v.len() - 1], 1usize << 10),
        Some('M') => (&v[..v.len() - 1], 1 << 20),
        Some('G') => (&v[..v.len() - 1], 1 << 30),
        _ => (v, 1),
    };
    let n: usize = num
        .trim()
        .parse()
        .map_err(|_| bad(name, value, "a byte count such as 4096, 64K, 1M or 2G"))?;
    n.checked_mul(mult)
        .ok_or_else(|| bad(name, value, "a byte count that fits in memory"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_yield_when_they_outnumber_cpus() {
        let auto = Config::default();
        let alone = IdlePolicy {
            spin: SPIN_DEFAULT,
            yield_when_idle: false,
        };
        let crowded = IdlePolicy {
            spin: SPIN_OVERSUBSCRIBED,
            yield_when_idle: true,
        };
        assert_eq!(auto.idle_for(1), alone);
        assert_eq!(auto.idle_for(usize::MAX), crowded);
        let set = Config {
            spin: Some(7),
            yield_when_idle: Some(false),
            ..Config::default()
        };
        for n in [1, usize::MAX] {
            let p = set.idle_for(n);
            assert_eq!((p.spin, p.yield_when_idle), (7, false));
        }
    }

    #[test]
    fn flags_are_zero_or_one() {
        assert!(parse_flag("OXCCL_TOPO_AWARE", " 1 ").unwrap());
        assert!(!parse_flag("OXCCL_TOPO_AWARE", "0").unwrap());
        let e = parse_flag("OXCCL_TOPO_AWARE", "yes").unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::InvalidArgument);
        assert!(e.to_string().contains("OXCCL_TOPO_AWARE='yes'"), "{e}");
    }
}
