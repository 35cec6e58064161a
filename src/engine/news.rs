//! What a rank learns about the job from outside its own connections: a failure another
//! rank posted (a mismatch, a timeout, an abort), ranks that left the job without a goodbye
//! (seen by the job's store), and what this rank itself is stalled in. The communicator's
//! channel (`comm::channel`) fills it from the store; the engine reads it when it has nothing
//! else to do, so it costs nothing while data moves.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use crate::error::Error;

/// News shared between a communicator's channel thread and its engine.
#[derive(Debug, Default)]
pub struct News {
    /// Set whenever `cause` or `departed` changes (a cheap check for the idle path).
    flag: AtomicBool,
    /// The first failure a rank posted: (that rank, its error).
    cause: Mutex<Option<(usize, Error)>>,
    /// Ranks whose connection to the store ended without a goodbye.
    departed: Mutex<Vec<usize>>,
    /// What this rank has been stalled in for a while: (sequence number, description).
    stalled: Mutex<Option<(u64, String)>>,
    /// Ranks the store has heard nothing from for a while (stopped or frozen), and since
    /// when this rank knows.
    silent: Mutex<Vec<(usize, Instant)>>,
    /// The rank whose process serves the job's store, if known.
    store_host: Mutex<Option<usize>>,
    /// The channel lost the store.
    store_gone: AtomicBool,
    /// Rounds of the running call's progress loop (see [`News::beat`]).
    beats: AtomicU64,
    /// The running call, if any.
    calling: Mutex<Option<String>>,
    /// What of the transport lives in memory shared with peers and can be left locked by a
    /// peer that dies (see [`crate::transport::Transport::shared_locks`]).
    shared_locks: OnceLock<&'static str>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl News {
    /// Whether anything arrived since the news was made.
    pub fn any(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    /// The first failure posted, if any.
    pub fn cause(&self) -> Option<(usize, Error)> {
        lock(&self.cause).clone()
    }

    /// Records a posted failure (the first one wins).
    pub fn set_cause(&self, rank: usize, e: Error) {
        lock(&self.cause).get_or_insert((rank, e));
        self.flag.store(true, Ordering::Release);
    }

    /// Records a rank that left without a goodbye.
    pub fn add_departed(&self, rank: usize) {
        let mut d = lock(&self.departed);
        if !d.contains(&rank) {
            d.push(rank);
        }
        self.flag.store(true, Ordering::Release);
    }

    /// The ranks that left without a goodbye.
    pub fn departed(&self) -> Vec<usize> {
        lock(&self.departed).clone()
    }

    /// Names the rank whose process serves the job's store (`None`: not a rank's).
    pub fn set_store_host(&self, rank: Option<usize>) {
        *lock(&self.store_host) = rank;
    }

    /// The rank whose process serves the job's store, if known.
    pub fn store_host(&self) -> Option<usize> {
        *lock(&self.store_host)
    }

    /// Records that the job's store closed.
    pub fn set_store_gone(&self) {
        self.store_gone.store(true, Ordering::Release);
        self.flag.store(true, Ordering::Release);
    }

    /// The rank whose process served the job's store, once the store has closed: that
    /// process ended.
    pub fn host_gone(&self) -> Option<usize> {
        if self.store_gone.load(Ordering::Acquire) {
            *lock(&self.store_host)
        } else {
            None
        }
    }

    /// Records that the job's store stopped answering: the rank whose process serves it,
    /// if known, is taken as silent (stopped or frozen).
    pub fn set_host_silent(&self) {
        let host = *lock(&self.store_host);
        if let Some(h) = host {
            self.set_silent(h, true);
        }
    }

    /// Records that the store hears nothing from `rank` (`true`), or hears it again.
    pub fn set_silent(&self, rank: usize, silent: bool) {
        let mut s = lock(&self.silent);
        s.retain(|&(r, _)| r != rank);
        if silent {
            s.push((rank, Instant::now()));
        }
    }

    /// The ranks the store hears nothing from, with when this rank learned it.
    pub fn silent(&self) -> Vec<(usize, Instant)> {
        lock(&self.silent).clone()
    }

    /// Says this rank is stalled in call `seq` (`what`), or no longer (`None`).
    pub fn set_stalled(&self, s: Option<(u64, String)>) {
        *lock(&self.stalled) = s;
    }

    /// What this rank is stalled in, if anything.
    pub fn stalled(&self) -> Option<(u64, String)> {
        lock(&self.stalled).clone()
    }

    /// The posted failure a call of `rank` (described by `what`) must end with, if any.
    pub fn posted(&self, rank: usize, what: &dyn std::fmt::Display) -> Option<Error> {
        let (r, e) = self.cause()?;
        Some(Error::new(
            e.kind(),
            format!(
                "rank {rank}: {what}: the job failed at rank {r}: {}",
                e.message()
            ),
        ))
    }

    /// The failure a call of `rank` (described by `what`) must end with, given the news:
    /// a posted failure, or a departed rank among `waits_on`.
    pub fn failure(
        &self,
        rank: usize,
        what: &str,
        waits_on: impl Fn(usize) -> bool,
    ) -> Option<Error> {
        if !self.any() {
            return None;
        }
        if let Some(e) = self.posted(rank, &what) {
            return Some(e);
        }
        let gone: Vec<usize> = self
            .departed()
            .into_iter()
            .filter(|&p| waits_on(p))
            .collect();
        let first = *gone.first()?;
        Some(Error::remote(format!(
            "rank {rank}: {what}: rank {first} left the job: its connection to the job's store \
             closed without a goodbye (the process died or was killed)"
        )))
    }

    /// Says the engine runs the call `what` describes (`None`: no call runs). Kept only
    /// where the transport has shared locks (see [`News::shared_locks`]): elsewhere nothing
    /// reads it, and a call need not pay for its description.
    pub fn set_calling(&self, what: Option<&dyn std::fmt::Display>) {
        if self.shared_locks.get().is_some() {
            *lock(&self.calling) = what.map(|w| w.to_string());
        }
    }

    /// The call the engine runs, if any (see [`News::set_calling`]).
    pub fn calling(&self) -> Option<String> {
        lock(&self.calling).clone()
    }

    /// One more round of the running call's progress loop.
    pub fn beat(&self) {
        self.beats.fetch_add(1, Ordering::Relaxed);
    }

    /// The rounds so far: a count that stops while a call runs means the engine is stuck
    /// inside its transport.
    pub fn beats(&self) -> u64 {
        self.beats.load(Ordering::Relaxed)
    }

    /// Records what of the transport a dying peer can leave locked (`None`: nothing).
    pub fn set_shared_locks(&self, what: Option<&'static str>) {
        if let Some(w) = what {
            let _ = self.shared_locks.set(w);
        }
    }

    /// What of the transport a dying peer can leave locked, if anything.
    pub fn shared_locks(&self) -> Option<&'static str> {
        self.shared_locks.get().copied()
    }
}
