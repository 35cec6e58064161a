//! What a rank learns about the job from outside its own connections: a failure another
//! rank posted (a mismatch, a timeout, an abort), ranks that left the job without a goodbye
//! (seen by the job's store), and what this rank itself is stalled in. The communicator's
//! channel (`comm::channel`) fills it from the store; the engine reads it when it has nothing
//! else to do, so it costs nothing while data moves.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

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

    /// Says this rank is stalled in call `seq` (`what`), or no longer (`None`).
    pub fn set_stalled(&self, s: Option<(u64, String)>) {
        *lock(&self.stalled) = s;
    }

    /// What this rank is stalled in, if anything.
    pub fn stalled(&self) -> Option<(u64, String)> {
        lock(&self.stalled).clone()
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
        if let Some((r, e)) = self.cause() {
            return Some(Error::new(
                e.kind(),
                format!(
                    "rank {rank}: {what}: the job failed at rank {r}: {}",
                    e.message()
                ),
            ));
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
}
