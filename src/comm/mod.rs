//! The communicator: what users hold. Creation (bootstrap, transport, engine), the call path
//! shared by every collective, error state and abort.
//!
//! Owns: the order of calls (a sequence number per collective, per peer for send/recv), the
//! sticky error state after a failure (as NCCL's async error), and the hand-off to the
//! background worker that runs non-blocking calls.

mod calls;
mod channel;
mod core;
mod entry;
mod exchange;
mod group;
mod placement;
mod raw;
mod recent;
mod request;
mod scope;
mod split;
mod stage;
mod wedge;

pub use group::Group;
pub use raw::RawCall;
pub use request::Request;
pub use scope::Scope;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use self::core::Core;
use crate::algo::Schedule;
use crate::algo::{Kind, Plan};
use crate::bootstrap::{StoreClient, UniqueId};
use crate::coll::{choose, Tuning};
use crate::config::Config;
use crate::engine::{Buffers, CallDesc, Engine, EngineConfig, Greeter, Part};
use crate::error::{Error, ErrorKind, Result};
use crate::reduce::{DataType, ReduceOp};
use crate::transport::fabric::{FabricConfig, FabricTransport};
use crate::transport::hybrid::Hybrid;
use crate::transport::mem::{MemFabric, MemFaults};
use crate::transport::shm::ShmTransport;
use crate::transport::tcp::{TcpConfig, TcpCongestion, TcpTransport};
use crate::transport::verbs::{VerbsConfig, VerbsTransport};
use crate::transport::Tag;
use crate::transport::Transport;

/// A group of ranks that run collectives together (NCCL's `ncclComm_t`, MPI's communicator).
///
/// Calls are collective: every rank of the communicator makes the same calls in the same
/// order. Blocking calls run on the calling thread; non-blocking ones (`i*`) on a background
/// worker, in the order issued. After any failure the communicator stays failed and every
/// later call returns the first error. A `Communicator` is `Send + Sync`, but takes calls
/// from one thread at a time: a call made while another thread's call is running is
/// refused (InvalidUsage) and fails the job, since ranks cannot agree on the order of
/// concurrent calls. [`abort`] may be called from any thread.
///
/// [`abort`]: Communicator::abort
pub struct Communicator {
    shared: Arc<Shared>,
    state: Arc<Mutex<State>>,
    worker: Mutex<Option<request::Worker>>,
    deferred: Mutex<Vec<request::Deferred>>,
}

/// Read-only facts of a communicator, shared with its worker and abort handles.
pub(crate) struct Shared {
    pub rank: usize,
    pub size: usize,
    pub abort: Arc<AtomicBool>,
    pub cfg: Config,
    pub tuning: Tuning,
    pub ring: Vec<usize>,
    /// Hosts in ring order, each host's ranks in intra-host order (hierarchical schedules).
    pub hosts: Vec<Vec<usize>>,
    /// What this rank published about where it sits (reused by `split`).
    pub info: crate::topo::RankInfo,
    pub nchannels: usize,
    pub bind_ip: IpAddr,
    pub transport: &'static str,
    /// The first error of any call, readable without the state lock (NCCL's async error:
    /// a watchdog thread asks while a call is still running).
    pub error: Arc<Mutex<Option<Error>>>,
    /// The job's news, which the channel fills and the engine reads.
    pub news: Arc<crate::engine::News>,
    /// The job-wide error channel (`None` once stopped, or if it could not start).
    pub channel: Mutex<Option<channel::Channel>>,
    /// The thread inside a call, if any (see `entry`).
    pub inside: entry::Inside,
}

impl Shared {
    /// Records `e` as the communicator's failure: later calls fail with it, and
    /// [`Communicator::async_error`] reports it.
    pub(crate) fn fail(&self, st: &mut State, e: Error) {
        st.broken.get_or_insert_with(|| e.clone());
        self.error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(e);
    }
}

/// Mutable state, behind the communicator's lock.
pub(crate) struct State {
    core: Box<dyn Core>,
    seq: u64,
    sent: HashMap<usize, u64>,
    received: HashMap<usize, u64>,
    broken: Option<Error>,
    /// Schedules already built: a training loop repeats the same calls, and building costs
    /// allocations on the latency-critical path.
    plans: HashMap<PlanKey, Arc<Schedule>>,
    /// The schedules used last, looked up before `plans`: a loop of a few call shapes
    /// skips the hashing.
    recent: recent::Recent<PlanKey, Schedule>,
}

/// What a schedule depends on besides the communicator's fixed rank, size and ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct PlanKey {
    kind: Kind,
    algo: crate::algo::Algo,
    count: usize,
    elem: usize,
    root: usize,
    avg: bool,
    chunk: usize,
    nchannels: usize,
}

/// Most schedules a communicator keeps.
const PLAN_CACHE: usize = 256;

/// A raw call: what the C ABI and the typed methods reduce to.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    pub kind: Kind,
    pub dtype: DataType,
    pub op: ReduceOp,
    pub root: usize,
    pub count: usize,
    pub send: *const u8,
    pub recv: *mut u8,
    /// Per-rank blocks of the uneven-count kinds (empty otherwise).
    pub blocks: crate::algo::Blocks,
    /// A pre-multiplied sum's scalar (one element of `dtype`, native byte order): the
    /// call reduces `send x scalar` with `Sum`.
    pub scale: Option<[u8; 8]>,
}

/// Aborts a communicator from any thread, even while a call is blocked in it.
#[derive(Clone)]
pub struct AbortHandle {
    abort: Arc<AtomicBool>,
    state: Weak<Mutex<State>>,
    error: Arc<Mutex<Option<Error>>>,
    rank: usize,
}

impl AbortHandle {
    /// Makes the communicator's blocked and future calls fail promptly, and closes its
    /// connections so that peers waiting on this rank fail with a Remote error.
    pub fn abort(&self) {
        self.abort.store(true, Ordering::SeqCst);
        let e = Error::invalid_usage(format!("rank {}: the communicator was aborted", self.rank));
        self.error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert_with(|| e.clone());
        if let Some(state) = self.state.upgrade() {
            if let Ok(mut s) = state.try_lock() {
                s.core.shutdown();
                s.broken.get_or_insert(e);
            }
        }
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic while holding the lock cannot leave State inconsistent in a way that matters:
    // the engine is shut down on every error path. Recover instead of propagating the panic.
    state.lock().unwrap_or_else(|p| p.into_inner())
}

impl Communicator {
    /// Joins the communicator of `size` ranks named by `id` as `rank`, with settings from the
    /// `OXCCL_*` environment and the backend it names (`OXCCL_TRANSPORT`, default tcp).
    pub fn init(id: &UniqueId, rank: usize, size: usize) -> Result<Communicator> {
        Communicator::init_with_config(id, rank, size, Config::from_env()?)
    }

    /// As [`Communicator::init`] with explicit settings.
    pub fn init_with_config(
        id: &UniqueId,
        rank: usize,
        size: usize,
        cfg: Config,
    ) -> Result<Communicator> {
        Communicator::init_placed(id, rank, size, cfg, None)
    }

    /// As [`Communicator::init_with_config`], publishing `place` as where this rank sits
    /// instead of detecting it (communicators made by `split` keep their parent's places).
    pub(crate) fn init_placed(
        id: &UniqueId,
        rank: usize,
        size: usize,
        cfg: Config,
        place: Option<crate::topo::RankInfo>,
    ) -> Result<Communicator> {
        check_rank(rank, size)?;
        match cfg.transport.as_str() {
            "tcp" => {
                let socket_buf_bytes = cfg.socket_buf_bytes;
                let congestion = TcpCongestion::from_env()?;
                let tcp = move |ip| {
                    TcpTransport::new(TcpConfig {
                        bind_ip: ip,
                        socket_buf_bytes,
                        congestion: congestion.clone(),
                    })
                };
                if cfg.shm {
                    let cma = cfg.shm_cma;
                    Communicator::init_inner(id, rank, size, cfg, place, |ip| {
                        with_shm(tcp(ip), cma)
                    })
                } else {
                    Communicator::init_inner(id, rank, size, cfg, place, tcp)
                }
            }
            "shm" => {
                let cma = cfg.shm_cma;
                Communicator::init_inner(id, rank, size, cfg, place, |_| {
                    ShmTransport::new().map(|t| t.with_attach(cma))
                })
            }
            "fabric" if cfg.shm => {
                let cma = cfg.shm_cma;
                Communicator::init_inner(id, rank, size, cfg, place, |ip| {
                    with_shm(FabricTransport::new(FabricConfig::from_env(ip)), cma)
                })
            }
            "fabric" => Communicator::init_inner(id, rank, size, cfg, place, |ip| {
                FabricTransport::new(FabricConfig::from_env(ip))
            }),
            "mem" => {
                let fabric = mem_fabric(id);
                Communicator::init_inner(id, rank, size, cfg, place, move |_| Ok(fabric.endpoint()))
            }
            "verbs" if cfg.shm => {
                let cma = cfg.shm_cma;
                Communicator::init_inner(id, rank, size, cfg, place, |ip| {
                    with_shm(VerbsTransport::new(VerbsConfig::from_env(ip, rank)?), cma)
                })
            }
            "verbs" => Communicator::init_inner(id, rank, size, cfg, place, move |ip| {
                VerbsTransport::new(VerbsConfig::from_env(ip, rank)?)
            }),
            other => Err(Error::invalid_argument(format!(
                "rank {rank}: OXCCL_TRANSPORT='{other}' is not a backend of this build (tcp, shm, \
                 fabric, mem, verbs)"
            ))),
        }
    }

    /// Joins with a transport made by `make` (given the IP address this rank reaches the
    /// root from). Tests use it to pass a [`MemFabric`] endpoint with faults.
    pub fn init_with<T: Transport>(
        id: &UniqueId,
        rank: usize,
        size: usize,
        cfg: Config,
        make: impl FnOnce(IpAddr) -> Result<T>,
    ) -> Result<Communicator> {
        Communicator::init_inner(id, rank, size, cfg, None, make)
    }

    fn init_inner<T: Transport>(
        id: &UniqueId,
        rank: usize,
        size: usize,
        cfg: Config,
        place: Option<crate::topo::RankInfo>,
        make: impl FnOnce(IpAddr) -> Result<T>,
    ) -> Result<Communicator> {
        check_rank(rank, size)?;
        crate::debug::init_from_env();
        let ctx = |e: Error| e.context(format!("rank {rank} of {size}: init"));
        let mut store = StoreClient::connect(id.root_addr(), id.secret(), rank, size, cfg.timeout)
            .map_err(ctx)?;
        let bind_ip = crate::bootstrap::advertised_ip(store.local_ip()).map_err(ctx)?;
        let mut transport = make(bind_ip).map_err(ctx)?;
        let devices = transport.devices().map_err(ctx)?;
        let dev = devices.first().cloned().ok_or_else(|| {
            ctx(Error::system(format!(
                "transport '{}' found no device",
                transport.name()
            )))
        })?;
        let (handle, listener) = transport.listen(0).map_err(ctx)?;
        let nonce = Greeter::listener_nonce().map_err(ctx)?;
        let placed = placement::exchange(
            &mut store,
            &cfg,
            (rank, size),
            bind_ip,
            (&handle, &nonce),
            place,
        )
        .map_err(ctx)?;
        // The store connection stays open as the job-wide error channel.
        let news = Arc::new(crate::engine::News::default());
        news.set_store_host(cfg.store_host);
        let chan = channel::Channel::start(store, rank, size, news.clone()).ok();
        let forced = match cfg.algo.as_deref() {
            None => None,
            Some(name) => Some(
                crate::algo::Algo::ALL
                    .into_iter()
                    .find(|a| a.name() == name)
                    .ok_or_else(|| {
                        let names: Vec<&str> = crate::algo::Algo::ALL
                            .iter()
                            .filter(|a| **a != crate::algo::Algo::Direct)
                            .map(|a| a.name())
                            .collect();
                        Error::invalid_argument(format!(
                            "OXCCL_ALGO='{name}' is not an algorithm ({})",
                            names.join(", ")
                        ))
                    })?,
            ),
        };
        let abort = Arc::new(AtomicBool::new(false));
        let local_ranks = placed
            .hosts
            .iter()
            .find(|h| h.contains(&rank))
            .map_or(1, |h| h.len());
        let idle = cfg.idle_for(local_ranks);
        let nchannels = cfg
            .nchannels
            .unwrap_or_else(|| placement::default_channels(&dev.caps, placed.hosts.len()));
        log_init(
            (rank, size, nchannels),
            transport.name(),
            &dev,
            bind_ip,
            &placed,
            &cfg,
        );
        let mut engine = Engine::new(
            transport,
            rank,
            size,
            placed.handles,
            listener,
            Greeter::new(
                id.secret(),
                id.root_addr().to_string().as_bytes(),
                rank,
                nonce,
                placed.nonces,
            ),
            EngineConfig {
                timeout: cfg.timeout,
                spin: idle.spin,
                yield_when_idle: idle.yield_when_idle,
                max_in_flight: crate::engine::in_flight_depth(&dev.caps, cfg.chunk_bytes),
            },
            abort.clone(),
        );
        engine.set_news(news.clone());
        let name = engine.transport_name();
        let shared = Shared {
            rank,
            size,
            abort,
            tuning: Tuning::new(&dev, forced)
                .sharing_cpus(placed.ranks_per_cpu)
                .with_model(placed.model),
            ring: placed.ring,
            hosts: placed.hosts,
            info: placed.info,
            nchannels,
            bind_ip,
            transport: name,
            cfg,
            error: Arc::new(Mutex::new(None)),
            news,
            channel: Mutex::new(chan),
            inside: Mutex::new(None),
        };
        Ok(Communicator {
            shared: Arc::new(shared),
            state: Arc::new(Mutex::new(State {
                core: Box::new(engine),
                seq: 0,
                sent: HashMap::new(),
                received: HashMap::new(),
                broken: None,
                plans: HashMap::new(),
                recent: recent::Recent::new(),
            })),
            worker: Mutex::new(None),
            deferred: Mutex::new(Vec::new()),
        })
    }

    /// This rank's number, 0..size.
    pub fn rank(&self) -> usize {
        self.shared.rank
    }

    /// Number of ranks.
    pub fn size(&self) -> usize {
        self.shared.size
    }

    /// The communicator's name, if its [`Config`] gave one.
    pub fn name(&self) -> Option<&str> {
        self.shared.cfg.name.as_deref()
    }

    /// The settings this communicator was made with.
    pub fn config(&self) -> &Config {
        &self.shared.cfg
    }

    /// The backend in use (`tcp`, `shm`, `fabric`, `verbs` or `mem`; a network backend with shm
    /// beside it gives its own name).
    pub fn transport(&self) -> &'static str {
        self.shared.transport
    }

    /// The first error this communicator met, if any (NCCL's `ncclCommGetAsyncError`),
    /// including a call's failure seen while another thread's call still runs, so that a
    /// watchdog thread can [`abort`](Communicator::abort) a communicator that is stuck.
    pub fn async_error(&self) -> Option<Error> {
        self.shared
            .error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Aborts: see [`AbortHandle::abort`].
    pub fn abort(&self) {
        self.abort_handle().abort();
    }

    /// A handle that aborts this communicator from another thread.
    pub fn abort_handle(&self) -> AbortHandle {
        AbortHandle {
            abort: self.shared.abort.clone(),
            state: Arc::downgrade(&self.state),
            error: self.shared.error.clone(),
            rank: self.shared.rank,
        }
    }

    /// Runs one call on this thread, after any non-blocking calls issued before it.
    ///
    /// # Safety
    /// The call's pointers must be valid for the buffer sizes its kind implies (see
    /// [`Kind`]) for the whole call.
    pub(crate) unsafe fn run_blocking(&self, call: Call) -> Result<()> {
        let _entry = self.shared.enter(call.kind)?;
        // SAFETY: forwarded; the slot is waited on before returning.
        // (Cloning a call allocates nothing unless it carries blocks.)
        if let Some(slot) = unsafe { self.submit_if_busy(call.clone()) }? {
            return slot.wait_result();
        }
        let mut st = lock(&self.state);
        // SAFETY: forwarded.
        unsafe { execute(&self.shared, &mut st, &[call]) }
    }
}

impl Drop for Communicator {
    fn drop(&mut self) {
        let worker = match self.worker.get_mut() {
            Ok(w) => w.take(),
            Err(p) => p.into_inner().take(),
        };
        if let Some(w) = worker {
            w.stop();
        }
        lock(&self.state).core.shutdown();
        let chan = self
            .shared
            .channel
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        drop(chan);
    }
}

/// What NCCL_DEBUG=INFO prints at init: version, transport, device, rings, configuration.
fn log_init(
    (rank, size, nchannels): (usize, usize, usize),
    transport: &str,
    dev: &crate::transport::DeviceProps,
    bind_ip: IpAddr,
    placed: &placement::Placement,
    cfg: &Config,
) {
    if !tracing::enabled!(target: "oxccl::INIT", tracing::Level::INFO) {
        return;
    }
    if rank == 0 {
        tracing::info!(target: "oxccl::INIT", "oxccl version {}", env!("CARGO_PKG_VERSION"));
    }
    tracing::info!(
        target: "oxccl::INIT",
        "rank {rank} of {size}: transport {transport}{}, device {} ({} Mb/s, {:.1} us{}{}{}), \
         address {bind_ip}",
        if cfg.shm && matches!(transport, "tcp" | "fabric" | "verbs") {
            " (shared memory to the ranks of this host: OXCCL_SHM)"
        } else {
            ""
        },
        dev.name,
        dev.speed_mbps,
        dev.latency_us,
        dev.gid_index.map(|g| format!(", GID index {g}")).unwrap_or_default(),
        dev.port.map(|p| format!(", port {p}")).unwrap_or_default(),
        dev.numa_node.map(|n| format!(", NUMA node {n}")).unwrap_or_default(),
    );
    if rank == 0 {
        tracing::info!(
            target: "oxccl::INIT",
            "ring {:?}; hosts {:?}; {nchannels} channel(s) from {} bytes",
            placed.ring,
            placed.hosts,
            cfg.channel_threshold
        );
        // Host leaders (the first rank of each host) joined by the hierarchical allreduce's
        // double binary tree; within a host and for reduce/broadcast, binomial trees.
        let leaders: Vec<usize> = placed
            .hosts
            .iter()
            .filter_map(|h| h.first().copied())
            .collect();
        for (t, tree) in crate::topo::tree::double_btree(leaders.len())
            .iter()
            .enumerate()
        {
            let edges: Vec<String> = (tree.parent.iter().enumerate())
                .filter_map(|(i, p)| p.map(|p| format!("{}->{}", leaders[i], leaders[p])))
                .collect();
            tracing::info!(
                target: "oxccl::INIT",
                "tree {t} over host leaders: root {}, edges [{}]",
                leaders.get(tree.root).copied().unwrap_or(0),
                edges.join(" ")
            );
        }
        tracing::info!(target: "oxccl::ENV", "configuration {cfg:?}");
    }
}

fn check_rank(rank: usize, size: usize) -> Result<()> {
    if size == 0 {
        return Err(Error::invalid_argument(
            "communicator size must be at least 1",
        ));
    }
    if rank >= size {
        return Err(Error::invalid_argument(format!(
            "rank {rank} is out of range for {size} ranks"
        )));
    }
    Ok(())
}

/// The in-process fabric for `id`: ranks of one process that join with the same id share it.
fn mem_fabric(id: &UniqueId) -> Arc<MemFabric> {
    static FABRICS: Mutex<Vec<(std::net::SocketAddr, Weak<MemFabric>)>> = Mutex::new(Vec::new());
    let mut all = FABRICS.lock().unwrap_or_else(|p| p.into_inner());
    all.retain(|(_, w)| w.strong_count() > 0);
    if let Some(f) = all
        .iter()
        .find(|(a, _)| *a == id.root_addr())
        .and_then(|(_, w)| w.upgrade())
    {
        return f;
    }
    // Checked by `Config::from_env` (the mem backend is chosen through it).
    let seed = crate::config::vars::int("OXCCL_MEM_SEED")
        .ok()
        .flatten()
        .unwrap_or(0);
    let f = MemFabric::new(seed, MemFaults::default());
    all.push((id.root_addr(), Arc::downgrade(&f)));
    f
}

/// `net` with shared memory beside it for the ranks of this host (`OXCCL_SHM`), copying
/// large messages out of peers' processes as `cma` says (`OXCCL_SHM_CMA`).
fn with_shm<N: Transport>(net: Result<N>, cma: bool) -> Result<Hybrid<N>> {
    Ok(Hybrid::new(net?, true, crate::transport::hybrid::this_host())?.with_attach(cma))
}

/// The call path shared by blocking calls and the worker: runs `calls` as one group (one
/// call, or send/recv calls that must progress together).
///
/// # Safety
/// As [`Communicator::run_blocking`], for every call.
pub(crate) unsafe fn execute(sh: &Shared, st: &mut State, calls: &[Call]) -> Result<()> {
    let rank = sh.rank;
    if let Some(e) = &st.broken {
        return Err(Error::new(
            e.kind(),
            format!(
                "rank {rank}: the communicator failed earlier and cannot be used: {}",
                e.message()
            ),
        ));
    }
    if sh.abort.load(Ordering::SeqCst) {
        let e = Error::invalid_usage(format!("rank {rank}: the communicator was aborted"));
        sh.fail(st, e.clone());
        return Err(e);
    }
    if let Some((r, cause)) = sh.news.any().then(|| sh.news.cause()).flatten() {
        let e = Error::new(
            cause.kind(),
            format!(
                "rank {rank}: the job failed at rank {r}: {}",
                cause.message()
            ),
        );
        sh.fail(st, e.clone());
        return Err(e);
    }
    // Every call is checked before any is numbered, so a refused call leaves the
    // communicator's sequence as every other rank's.
    for call in calls {
        calls::buffer_bytes(call, rank, sh.size)?;
    }
    let t0 = tracing::enabled!(target: "oxccl::COLL", tracing::Level::TRACE)
        .then(std::time::Instant::now);
    let r = match calls {
        // One call with nothing to stage goes straight to the engine.
        // SAFETY: forwarded from the caller.
        [call] if call.scale.is_none() => unsafe { run_one(sh, st, call) }?,
        // SAFETY: forwarded from the caller.
        _ => unsafe { run_staged(sh, st, calls) }?,
    };
    match r {
        Ok(()) => {
            if let Some(t0) = t0 {
                tracing::trace!(
                    target: "oxccl::COLL",
                    "rank {rank}: {} call(s) done in {:.1} us",
                    calls.len(),
                    t0.elapsed().as_secs_f64() * 1e6
                );
            }
            Ok(())
        }
        Err(e) => {
            let e = sh.explain(e);
            tracing::warn!(target: "oxccl::COLL", "{e}");
            sh.fail(st, e.clone());
            Err(e)
        }
    }
}

/// Runs one call that needs no staging. The outer error is the call's own, found before
/// anything ran (the communicator stays usable); the inner one is the run's.
///
/// # Safety
/// As [`execute`].
unsafe fn run_one(sh: &Shared, st: &mut State, call: &Call) -> Result<Result<()>> {
    let (desc, expect, sched, bufs) = prepare(sh, st, call)?;
    let part = Part {
        desc,
        expect,
        sched: sched.as_ref(),
        bufs,
    };
    // SAFETY: forwarded from the caller.
    Ok(unsafe { st.core.run_group(std::slice::from_ref(&part)) })
}

/// Stages `calls` (pre-multiplied inputs, fused allreduces), runs them batch by batch and
/// copies fused results back. Errors as [`run_one`]'s.
///
/// # Safety
/// As [`execute`].
unsafe fn run_staged(sh: &Shared, st: &mut State, calls: &[Call]) -> Result<Result<()>> {
    let rank = sh.rank;
    // SAFETY: forwarded from the caller.
    let staged = unsafe { stage::stage(calls, rank, sh.size) }?;
    for batch in stage::batches(&staged, rank, sh.size) {
        let mut prepared = Vec::with_capacity(batch.len());
        for &i in &batch {
            prepared.push(prepare(sh, st, &staged.calls[i])?);
        }
        let parts: Vec<Part<'_>> = prepared
            .iter()
            .map(|(desc, expect, sched, bufs)| Part {
                desc: *desc,
                expect: *expect,
                sched: sched.as_ref(),
                bufs: *bufs,
            })
            .collect();
        // SAFETY: forwarded from the caller.
        let r = unsafe { st.core.run_group(&parts) };
        if r.is_err() {
            return Ok(r);
        }
    }
    // SAFETY: the callers' buffers are valid for the whole call.
    unsafe { staged.finish() };
    Ok(Ok(()))
}

/// `e` with `ranks` named where its message does not name them yet, after `why` (a
/// survivor's error may have come from another survivor, or be the echo of a neighbour
/// that timed out waiting for them).
fn with_ranks_named(e: Error, ranks: impl IntoIterator<Item = usize>, why: &str) -> Error {
    let missing: Vec<String> = ranks
        .into_iter()
        .filter(|&r| !names(e.message(), r))
        .map(|r| format!("rank {r}"))
        .collect();
    if missing.is_empty() {
        return e;
    }
    let m = format!("{}; {why}: {}", e.message(), missing.join(", "));
    Error::new(e.kind(), m)
}

/// Whether `msg` names `rank r` (not `rank r0`...).
fn names(msg: &str, r: usize) -> bool {
    let k = format!("rank {r}");
    msg.match_indices(&k).any(|(i, _)| {
        !msg[i + k.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit())
    })
}

/// How long a rank whose own call failed waits for the job's news to carry the first cause
/// (its own post, or an earlier one of another rank).
const CAUSE_GRACE: std::time::Duration = std::time::Duration::from_secs(1);
/// How long a rank that lost a peer waits for the news that says why: a posted cause takes
/// a few tens of milliseconds; a rank that died need not hold the survivors up.
const ECHO_GRACE: std::time::Duration = std::time::Duration::from_millis(300);

impl Shared {
    /// Makes every rank end with the same cause. This rank's own failure (a mismatch, a
    /// timeout) goes to every rank through the channel; a Remote error is often the echo of
    /// another rank's failure (it closed its connections). Either way, wait briefly for the
    /// job's news and report its first cause: the same on every rank. A rank that died
    /// shows in the news as departed, which ends the wait of a Remote error.
    fn explain(&self, e: Error) -> Error {
        let chan = self.channel.lock().unwrap_or_else(|p| p.into_inner());
        let Some(c) = chan.as_ref() else {
            return e;
        };
        let own = matches!(e.kind(), ErrorKind::InvalidUsage | ErrorKind::Timeout);
        if own && self.news.cause().is_none() {
            c.post(e.clone());
        } else if e.kind() != ErrorKind::Remote {
            return e;
        }
        drop(chan);
        let end = std::time::Instant::now() + if own { CAUSE_GRACE } else { ECHO_GRACE };
        let settled = |n: &crate::engine::News| {
            if own {
                n.cause().is_some()
            } else {
                n.any()
            }
        };
        while !settled(&self.news) && std::time::Instant::now() < end {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        match self.news.cause() {
            None => with_ranks_named(
                with_ranks_named(
                    e,
                    self.news.departed(),
                    "left the job (store connection closed without a goodbye)",
                ),
                self.news.silent().into_iter().map(|(r, _)| r),
                "made no progress, answering nothing, not even the job's store (stopped or \
                 frozen)",
            ),
            // This rank's own failure, posted: it is the cause. (A cause this rank's channel
            // posted, such as a stall mismatch, is quoted like any other rank's.)
            Some((r, cause)) if r == self.rank && cause.message() == e.message() => e,
            Some((r, cause)) => Error::new(
                cause.kind(),
                format!(
                    "rank {}: the job failed at rank {r}: {} (seen here as: {})",
                    self.rank,
                    cause.message(),
                    e.message()
                ),
            ),
        }
    }
}

/// Numbers a call, checks its sizes, picks its algorithm and builds its schedule.
fn prepare(
    sh: &Shared,
    st: &mut State,
    call: &Call,
) -> Result<(CallDesc, Tag, Arc<Schedule>, Buffers)> {
    let rank = sh.rank;
    let elem = call.dtype.size();
    let op = if call.kind.reduces() {
        call.op
    } else {
        ReduceOp::Sum
    };
    // Uneven calls carry a count every rank agrees on: the total of the blocks all ranks
    // share (alltoallv's pairs check their own counts, see `algo::pair_word`).
    let count = match call.kind {
        Kind::AllGatherV => call.blocks.recv.iter().map(|b| b.len as u64).sum(),
        Kind::ReduceScatterV => call.blocks.send.iter().map(|b| b.len as u64).sum(),
        Kind::AllToAllV => 0,
        _ => call.count as u64,
    };
    let mut desc = CallDesc {
        seq: 0,
        kind: call.kind,
        dtype: call.dtype,
        op,
        root: call.root as u32,
        count,
    };
    let expect = match call.kind {
        Kind::Send => {
            let s = st.sent.entry(call.root).or_insert(0);
            *s += 1;
            desc.seq = *s;
            desc.tag()
        }
        Kind::Recv => {
            let s = st.received.entry(call.root).or_insert(0);
            *s += 1;
            desc.seq = *s;
            CallDesc {
                kind: Kind::Send,
                root: rank as u32,
                ..desc
            }
            .tag()
        }
        _ => {
            st.seq += 1;
            desc.seq = st.seq;
            desc.tag()
        }
    };
    let (send_len, recv_len) = calls::buffer_bytes(call, rank, sh.size)?;
    let bytes = match call.kind {
        Kind::ReduceScatter => recv_len.saturating_mul(sh.size),
        Kind::AllGather | Kind::AllToAll | Kind::AllToAllV | Kind::AllGatherV => recv_len,
        Kind::Gather | Kind::Scatter => call.count.saturating_mul(elem * sh.size),
        Kind::ReduceScatterV => send_len,
        _ => call.count.saturating_mul(elem),
    };
    let algo = choose(&sh.tuning, call.kind, sh.size, bytes);
    let nchannels = if bytes >= sh.cfg.channel_threshold {
        sh.nchannels
    } else {
        1
    };
    tracing::trace!(
        target: "oxccl::COLL",
        "rank {rank}: {} of {} {:?} ({bytes} bytes, root {}): {} over {nchannels} channel(s)",
        crate::engine::kind_name(call.kind),
        call.count,
        call.dtype,
        call.root,
        algo.name()
    );
    let key = PlanKey {
        kind: call.kind,
        algo,
        count: call.count,
        elem,
        root: call.root,
        avg: op == ReduceOp::Avg,
        chunk: sh.cfg.chunk_bytes,
        nchannels,
    };
    let cached = if call.kind.uneven() {
        None
    } else {
        st.recent.get(&key).or_else(|| {
            let s = st.plans.get(&key).cloned()?;
            st.recent.put(key, s.clone());
            Some(s)
        })
    };
    let sched = match cached {
        Some(s) => s,
        None => {
            let plan = Plan {
                kind: call.kind,
                algo,
                rank,
                size: sh.size,
                count: call.count,
                elem,
                root: call.root,
                avg: key.avg,
                chunk_bytes: sh.cfg.chunk_bytes,
                nchannels,
                ring: sh.ring.clone(),
                hosts: sh.hosts.clone(),
                blocks: call.blocks.clone(),
            };
            let s = Arc::new(plan.build());
            if !call.kind.uneven() {
                if st.plans.len() >= PLAN_CACHE {
                    st.plans.clear();
                }
                st.plans.insert(key, s.clone());
                st.recent.put(key, s.clone());
            }
            s
        }
    };
    let bufs = Buffers {
        send: call.send,
        send_len,
        recv: call.recv,
        recv_len,
    };
    Ok((desc, expect, sched, bufs))
}
