//! One caller at a time: a communicator takes calls from one thread at a time, because
//! every rank must make the same calls in the same order and no rank can know which of two
//! threads' calls another rank will take first. A call that starts while another thread's
//! call is still inside this communicator is refused with InvalidUsage naming both, and the
//! job fails with that cause (the running call too, and every other rank's), so that the
//! two calls cannot be paired with the wrong calls elsewhere. Calls from several threads
//! that do not overlap are ordered by the caller, as in NCCL and MPI.
//!
//! The same thread may enter again (a blocking call queued behind its own non-blocking
//! ones); [`Communicator::abort`](super::Communicator::abort) and the queries never enter.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use super::Shared;
use crate::algo::Kind;
use crate::engine::kind_name;
use crate::error::{Error, Result};

/// Who is inside a communicator: (the thread's token, what it called).
pub(crate) type Inside = Mutex<Option<(u64, &'static str)>>;

static NEXT_TOKEN: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// This thread's token (never 0; unlike `ThreadId`, a plain number to compare).
    static TOKEN: u64 = NEXT_TOKEN.fetch_add(1, Ordering::Relaxed);
}

fn lock(m: &Inside) -> MutexGuard<'_, Option<(u64, &'static str)>> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A thread's stay inside a communicator; leaving it lets another thread in.
pub(crate) struct Entry<'a> {
    /// `None` when this thread was inside already (an inner entry leaves nothing).
    inside: Option<&'a Inside>,
}

impl Drop for Entry<'_> {
    fn drop(&mut self) {
        if let Some(m) = self.inside {
            *lock(m) = None;
        }
    }
}

impl Shared {
    /// Lets this thread in for a call of `kind`, or refuses it (and fails the job) when
    /// another thread is inside.
    pub(crate) fn enter(&self, kind: Kind) -> Result<Entry<'_>> {
        let me = TOKEN.with(|t| *t);
        let mut g = lock(&self.inside);
        match *g {
            None => {
                *g = Some((me, kind_name(kind)));
                Ok(Entry {
                    inside: Some(&self.inside),
                })
            }
            Some((t, _)) if t == me => Ok(Entry { inside: None }),
            Some((_, other)) => {
                drop(g);
                Err(self.concurrent(kind, other))
            }
        }
    }

    /// The error of a call made while another thread's `other` runs, posted as the job's
    /// cause: the running call ends with it, as do the other ranks' calls.
    fn concurrent(&self, kind: Kind, other: &str) -> Error {
        let e = Error::invalid_usage(format!(
            "rank {}: {} called while another thread's {other} is running on this \
             communicator: a communicator takes one call at a time, in the same order on every \
             rank (calls from several threads must be ordered by the caller)",
            self.rank,
            kind_name(kind)
        ));
        self.news.set_cause(self.rank, e.clone());
        self.error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert_with(|| e.clone());
        let chan = self.channel.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = chan.as_ref() {
            c.post(e.clone());
        }
        e
    }
}
