//! The fabric shared by all ranks of one in-process job: fault settings, endpoint slots,
//! the registries of listeners and connections, and the activity signal that
//! `wait_activity` sleeps on.
//!
//! Owns: endpoint creation, `kill`, and the teardown of a dropped endpoint. Lock order is
//! fabric state, then one connection; no path takes the fabric lock while holding a
//! connection lock, and the activity lock is a leaf.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use super::conn::{Conn, Side};
use super::listen::ListenerRegistry;
use super::rng::Rng;
use super::MemTransport;

/// Faults the mem fabric injects, each drawn from the acting endpoint's seeded generator.
#[derive(Clone, Debug)]
pub struct MemFaults {
    /// `poll_connect` answers `None` up to this many times before connecting (the count is
    /// drawn uniformly in `0..=connect_delay_polls` for each attempt).
    pub connect_delay_polls: u32,
    /// Probability that `isend`/`irecv` answer `None` ("no room now"). 1.0 never posts.
    pub backpressure: f64,
    /// Most posted-but-unfinished requests per connection end; further posts answer
    /// `None`. 0 is treated as 1, so that posting stays possible.
    pub max_in_flight: usize,
    /// Probability that `test` answers "not yet" for a request that has finished, which
    /// reorders the completions the engine observes.
    pub delay: f64,
}

impl Default for MemFaults {
    /// No faults, at most 64 requests in flight per connection end.
    fn default() -> Self {
        MemFaults {
            connect_delay_polls: 0,
            backpressure: 0.0,
            max_in_flight: 64,
            delay: 0.0,
        }
    }
}

impl MemFaults {
    /// The in-flight limit actually applied (never 0).
    pub(super) fn effective_max_in_flight(&self) -> usize {
        self.max_in_flight.max(1)
    }
}

/// Locks `m`, recovering the data of a poisoned mutex: every critical section in this
/// backend leaves its state consistent before anything that could panic.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Fabric-wide "something changed" signal: a generation counter plus a condition variable.
pub(super) struct Activity {
    generation: AtomicU64,
    mutex: Mutex<()>,
    cv: Condvar,
}

impl Activity {
    fn new() -> Self {
        Activity {
            generation: AtomicU64::new(0),
            mutex: Mutex::new(()),
            cv: Condvar::new(),
        }
    }

    /// The current generation; a waiter that saw it sleeps only while it is unchanged.
    pub(super) fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Announces a post, completion, close or kill to every waiting endpoint.
    pub(super) fn notify(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        // Taking the mutex orders this bump after any waiter's check-then-sleep, so the
        // waiter is either woken or never sleeps: no lost wake-up.
        drop(lock(&self.mutex));
        self.cv.notify_all();
    }

    /// Sleeps for at most `timeout` unless the generation already moved past `seen`.
    pub(super) fn wait(&self, seen: u64, timeout: Duration) {
        let guard = lock(&self.mutex);
        if self.generation() != seen {
            return;
        }
        // Spurious wake-ups and poisoning both just end the wait early.
        drop(self.cv.wait_timeout(guard, timeout));
    }
}

/// One endpoint's entry.
struct EndpointSlot {
    /// Set once `kill` has failed every connection of the endpoint; read by the
    /// endpoint's own calls without taking the fabric lock.
    killed: Arc<AtomicBool>,
    /// Set when `kill` starts: refuses new connections to or from the endpoint.
    dying: bool,
}

/// Everything behind the fabric lock.
pub(super) struct FabricState {
    endpoints: Vec<EndpointSlot>,
    /// Open listeners and their not yet accepted connections.
    pub(super) listeners: ListenerRegistry,
    /// Every connection created, so `kill` and endpoint teardown can reach them.
    conns: Vec<Weak<Conn>>,
    /// Registry length at which dead entries are next pruned.
    prune_at: usize,
}

impl FabricState {
    /// Whether `endpoint` is being or has been killed (unknown ids count as dead).
    pub(super) fn is_dying(&self, endpoint: usize) -> bool {
        self.endpoints.get(endpoint).map_or(true, |e| e.dying)
    }

    /// Records a new connection for `kill` and teardown.
    pub(super) fn register_conn(&mut self, conn: &Arc<Conn>) {
        if self.conns.len() >= self.prune_at {
            self.conns.retain(|w| w.strong_count() > 0);
            self.prune_at = (self.conns.len() * 2).max(64);
        }
        self.conns.push(Arc::downgrade(conn));
    }

    /// The live connections with `endpoint` at either end.
    fn conns_of(&self, endpoint: usize) -> Vec<Arc<Conn>> {
        self.conns
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|c| c.endpoint(Side::Send) == endpoint || c.endpoint(Side::Recv) == endpoint)
            .collect()
    }
}

/// Source of fabric nonces: unique within the process, so a handle is never mistaken for
/// one of another fabric, whatever the seeds.
static NEXT_NONCE: AtomicU64 = AtomicU64::new(1);

/// The in-process fabric shared by all ranks of one job; each rank takes an
/// [`endpoint`](MemFabric::endpoint).
pub struct MemFabric {
    seed: u64,
    faults: MemFaults,
    nonce: u64,
    state: Mutex<FabricState>,
    activity: Arc<Activity>,
}

impl fmt::Debug for MemFabric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemFabric")
            .field("seed", &self.seed)
            .field("faults", &self.faults)
            .finish_non_exhaustive()
    }
}

impl MemFabric {
    /// A fabric whose endpoints draw their faults from generators derived from `seed`.
    pub fn new(seed: u64, faults: MemFaults) -> Arc<MemFabric> {
        Arc::new(MemFabric {
            seed,
            faults,
            nonce: NEXT_NONCE.fetch_add(1, Ordering::Relaxed),
            state: Mutex::new(FabricState {
                endpoints: Vec::new(),
                listeners: ListenerRegistry::default(),
                conns: Vec::new(),
                prune_at: 64,
            }),
            activity: Arc::new(Activity::new()),
        })
    }

    /// A new endpoint (one per rank); ids are 0, 1, 2, .. in call order.
    pub fn endpoint(self: &Arc<Self>) -> MemTransport {
        let killed = Arc::new(AtomicBool::new(false));
        let id = {
            let mut st = self.state();
            st.endpoints.push(EndpointSlot {
                killed: Arc::clone(&killed),
                dying: false,
            });
            st.endpoints.len() - 1
        };
        let rng = Rng::for_endpoint(self.seed, id);
        MemTransport::new(id, Arc::clone(self), killed, rng)
    }

    /// Makes `endpoint` die: its own calls fail with `Remote` ("endpoint N was killed"),
    /// and every peer's pending or future operation on a connection with it fails with
    /// `Remote` ("peer endpoint N was killed"). Unknown ids are ignored.
    pub fn kill(&self, endpoint: usize) {
        let (flag, conns) = {
            let mut st = self.state();
            let Some(slot) = st.endpoints.get_mut(endpoint) else {
                return;
            };
            slot.dying = true;
            let flag = Arc::clone(&slot.killed);
            (flag, st.conns_of(endpoint))
        };
        // Every connection drops its posted buffers before the endpoint's own calls start
        // failing: once the endpoint sees an error it may free those buffers, so no copy
        // may still be using them.
        for conn in &conns {
            conn.mark_killed(endpoint);
        }
        flag.store(true, Ordering::SeqCst);
        self.activity.notify();
    }

    /// The seed this fabric was created with (print it to replay a failure).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The fault settings.
    pub fn faults(&self) -> &MemFaults {
        &self.faults
    }

    /// The nonce that handles of this fabric carry.
    pub(super) fn nonce(&self) -> u64 {
        self.nonce
    }

    /// The locked fabric state; keep the guard's scope short.
    pub(super) fn state(&self) -> MutexGuard<'_, FabricState> {
        lock(&self.state)
    }

    /// The activity signal.
    pub(super) fn activity(&self) -> &Arc<Activity> {
        &self.activity
    }

    /// Tears down a dropped endpoint: closes its listeners (refusing what they had not
    /// accepted) and its ends of every connection, so peers see "connection closed".
    pub(super) fn drop_endpoint(&self, endpoint: usize) {
        let (conns, unaccepted) = {
            let mut st = self.state();
            let unaccepted = st.listeners.close_owned_by(endpoint);
            (st.conns_of(endpoint), unaccepted)
        };
        // Unaccepted connections are registered too, so `conns` covers them.
        drop(unaccepted);
        for conn in &conns {
            if conn.endpoint(Side::Send) == endpoint {
                conn.close(Side::Send);
            }
            if conn.endpoint(Side::Recv) == endpoint {
                conn.close(Side::Recv);
            }
        }
    }
}
