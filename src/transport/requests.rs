//! The requests of one connection, by sequence number: a fixed ring of slots, so that the
//! hot path allocates nothing (the tcp and shm backends).

use crate::error::{Error, Result};
use crate::transport::Completion;

/// Most requests in flight per connection (posted and not yet reported by `test`).
pub(crate) const MAX_REQUESTS: usize = 16;

enum Slot<T> {
    Free,
    Pending(u64, T),
    Done(u64, Completion),
}

/// Requests of one connection by sequence number. Requests finish in order; a finished one
/// keeps its slot (and its result) until `test` reports it, so a request that completed
/// while another was being tested is never lost.
pub(crate) struct Ring<T> {
    slots: [Slot<T>; MAX_REQUESTS],
    /// First unfinished sequence number: `head..next` are all `Pending`.
    head: u64,
    next: u64,
}

impl<T> Ring<T> {
    pub(crate) fn new() -> Self {
        Ring {
            slots: std::array::from_fn(|_| Slot::Free),
            head: 0,
            next: 0,
        }
    }

    fn index(seq: u64) -> usize {
        (seq % MAX_REQUESTS as u64) as usize
    }

    /// Queues `op`; `None` while its slot still holds an unreported request.
    pub(crate) fn post(&mut self, op: T) -> Option<u64> {
        let seq = self.next;
        let slot = &mut self.slots[Self::index(seq)];
        if !matches!(slot, Slot::Free) {
            return None;
        }
        *slot = Slot::Pending(seq, op);
        self.next += 1;
        Some(seq)
    }

    pub(crate) fn pending(&self) -> usize {
        (self.next - self.head) as usize
    }

    /// The `k`-th unfinished request, oldest first.
    pub(crate) fn pending_mut(&mut self, k: usize) -> Option<&mut T> {
        if k >= self.pending() {
            return None;
        }
        match &mut self.slots[Self::index(self.head + k as u64)] {
            Slot::Pending(_, op) => Some(op),
            _ => None,
        }
    }

    pub(crate) fn finish_head(&mut self, c: Completion) {
        let seq = self.head;
        self.slots[Self::index(seq)] = Slot::Done(seq, c);
        self.head += 1;
    }

    /// The result of request `seq` if it has finished (freeing its slot).
    pub(crate) fn take(&mut self, seq: u64) -> Result<Option<Completion>> {
        let i = Self::index(seq);
        match self.slots[i] {
            Slot::Done(s, c) if s == seq => {
                self.slots[i] = Slot::Free;
                Ok(Some(c))
            }
            Slot::Pending(s, _) if s == seq => Ok(None),
            _ => Err(Error::invalid_usage(format!(
                "request #{seq} is not pending (tested again after it was reported complete?)"
            ))),
        }
    }
}
