//! Run-time settings, read from `OXCCL_*` environment variables or set in code.
//!
//! Every variable is declared once in [`vars`] (what it accepts, its default) and documented
//! in `docs/environment.md` (a test keeps the two equal); a malformed or out-of-range value
//! is an `InvalidArgument` error naming the variable, its value and what is accepted, never
//! silently ignored.

#[cfg(test)]
mod tests;
pub mod vars;

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};

/// Settings of one communicator. [`Config::from_env`] reads the `OXCCL_*` variables;
/// [`Config::default`] ignores the environment.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Backend name (`OXCCL_TRANSPORT`): `tcp` (default), `shm`, `fabric`, `verbs` or `mem`.
    pub transport: String,
    /// Whether ranks of one host talk through shared memory beside the network backend
    /// (`OXCCL_SHM`, default 1; NCCL_SHM_DISABLE's opposite). Only the network backends (tcp,
    /// verbs, fabric) have it; [`Config::default`] sets it, tests of a backend turn it off.
    pub shm: bool,
    /// Whether this rank copies large messages from peers of its host straight out of their
    /// processes (`OXCCL_SHM_CMA`, cross-memory attach, default 0): where the kernel allows
    /// it, one copy instead of two through the shared ring; off by default because on the
    /// machines measured `process_vm_readv` copied at a fraction of memcpy's speed (see
    /// docs/performance.md).
    pub shm_cma: bool,
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
    /// The rank whose process serves the job's store, where one does: `from_env` sets 0
    /// under the launcher contracts in which rank 0 serves it, `split` its group's leader.
    /// When the store closes, a rank still waiting for that rank's connection knows the
    /// rank is gone instead of waiting for the timeout. `None`: the store runs elsewhere
    /// (rankrun) or where is not known.
    pub store_host: Option<usize>,
}

/// Idle polls before sleeping when each rank on the host can have a CPU of its own.
pub const SPIN_DEFAULT: u32 = 2000;

/// Idle polls, each after yielding the CPU, before sleeping when ranks outnumber the CPUs
/// (see [`Config::spin`]). With 4 and 8 ranks on 2 cores this took 8-byte allreduce from
/// about 80 and 220 us (sleeping at once) to 30-55 and 110 us.
pub const SPIN_OVERSUBSCRIBED: u32 = 100;

/// How a rank waits when nothing moves (see [`Config::idle_for`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IdlePolicy {
    /// Polls before sleeping in the transport.
    pub spin: u32,
    /// Whether each poll first yields the CPU.
    pub yield_when_idle: bool,
}

/// CPUs this process may use (affinity and cgroup quota counted), at least 1.
pub fn usable_cpus() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX))
}

impl Config {
    /// How a rank of a communicator with `local_ranks` ranks on this host waits: the
    /// settings given, else spinning when every rank can have a CPU and yielding between
    /// polls when ranks outnumber the CPUs this process may use (affinity and cgroup
    /// quota counted).
    pub fn idle_for(&self, local_ranks: usize) -> IdlePolicy {
        let cpus = usable_cpus() as usize;
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
            shm: true,
            shm_cma: false,
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
            store_host: None,
        }
    }
}

impl Config {
    /// Defaults overridden by the `OXCCL_*` environment variables that are set, each
    /// checked against its declaration in [`vars`]; `OXCCL_*` variables oxccl does not
    /// know are reported (at `OXCCL_DEBUG=WARN`), since a typo would otherwise go unseen.
    pub fn from_env() -> Result<Config> {
        let mut c = Config::default();
        if let Some(v) = vars::text("OXCCL_TRANSPORT")? {
            c.transport = v;
        }
        if let Some(s) = vars::seconds("OXCCL_TIMEOUT")? {
            c.timeout = Duration::from_secs_f64(s);
        }
        c.algo = vars::text("OXCCL_ALGO")?.map(|v| v.to_ascii_lowercase());
        c.nchannels = vars::int("OXCCL_NCHANNELS")?.map(|n| n as usize);
        if let Some(n) = vars::byte_count("OXCCL_CHUNK_SIZE")? {
            c.chunk_bytes = n;
        }
        if let Some(n) = vars::byte_count("OXCCL_CHANNEL_THRESHOLD")? {
            c.channel_threshold = n;
        }
        if let Some(n) = vars::byte_count("OXCCL_SOCKET_BUFSIZE")? {
            c.socket_buf_bytes = n;
        }
        c.spin = vars::int("OXCCL_SPIN")?.map(|n| n as u32);
        c.yield_when_idle = vars::flag("OXCCL_YIELD_WHEN_IDLE")?;
        if let Some(b) = vars::flag("OXCCL_SHM")? {
            c.shm = b;
        }
        if let Some(b) = vars::flag("OXCCL_SHM_CMA")? {
            c.shm_cma = b;
        }
        c.topo_file = vars::text("OXCCL_TOPO_FILE")?.map(PathBuf::from);
        c.topo_dump_file = vars::text("OXCCL_TOPO_DUMP_FILE")?.map(PathBuf::from);
        if let Some(b) = vars::flag("OXCCL_TOPO_AWARE")? {
            c.topo_aware = b;
        }
        c.name = vars::text("OXCCL_COMM_NAME")?;
        // Every declared variable that is set is checked here, also those this
        // configuration does not read (an `OXCCL_IB_TC=abc` beside `OXCCL_TRANSPORT=tcp`),
        // so that a bad value fails init rather than passing unseen.
        for v in vars::VARS {
            vars::get(v.name)?;
        }
        crate::debug::Settings::parse(
            vars::text("OXCCL_DEBUG")?.as_deref(),
            vars::text("OXCCL_DEBUG_SUBSYS")?.as_deref(),
            None,
        )
        .map_err(Error::invalid_argument)?;
        for name in vars::unknown_in_env() {
            tracing::warn!(target: "oxccl::ENV", "{name} is set but is not an oxccl variable");
        }
        Ok(c)
    }
}

fn bad(name: &str, value: &str, want: &str) -> Error {
    Error::invalid_argument(format!("{name}='{value}' is not valid: expected {want}"))
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
