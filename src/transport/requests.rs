//! The requests of one connection (or one direction of it), by sequence number: a fixed
//! ring of slots, so that the hot path allocates nothing. Every backend with requests of
//! its own uses it (tcp, shm, verbs, fabric; mem queues whole messages instead).
//!
//! A request is posted (`Pending`), finishes (`Done`, holding its [`Completion`]) and is
//! reported by [`Ring::take`], which frees its slot. The window: request `seq` can be
//! posted only once request `seq - N` has been reported, so at most `N` are unreported.
//! Requests may finish in any order ([`Ring::finish`]); the tcp and shm backends finish
//! them in order ([`Ring::finish_head`]). A backend that keeps a request's outcome in its
//! own state instead takes the request out with [`Ring::remove`] (fabric).

use crate::error::{Error, Result};
use crate::transport::Completion;

/// Most requests in flight per connection (posted and not yet reported by `test`), unless
/// a backend picks its own `N` (verbs).
pub(crate) const MAX_REQUESTS: usize = 16;

enum Slot<T> {
    Free,
    Pending(u64, T),
    Done(u64, Completion),
}

/// Requests by sequence number; slot `seq % N`. A finished request keeps its slot (and its
/// result) until `test` reports it, so a request that completed while another was being
/// tested is never lost.
pub(crate) struct Ring<T, const N: usize = MAX_REQUESTS> {
    slots: [Slot<T>; N],
    /// Oldest unreported sequence number: `oldest..next` are `Pending` or `Done`.
    oldest: u64,
    /// Oldest unfinished sequence number (`next` when none): all before it have finished.
    head: u64,
    next: u64,
}

impl<T, const N: usize> Ring<T, N> {
    pub(crate) fn new() -> Self {
        Ring {
            slots: std::array::from_fn(|_| Slot::Free),
            oldest: 0,
            head: 0,
            next: 0,
        }
    }

    fn index(seq: u64) -> usize {
        (seq % N as u64) as usize
    }

    /// Queues `op` under the next sequence number; `None` while `N` are unreported.
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

    /// The sequence number the next post gets.
    pub(crate) fn next(&self) -> u64 {
        self.next
    }

    /// The oldest unreported sequence number (`next()` when none).
    pub(crate) fn oldest(&self) -> u64 {
        self.oldest
    }

    /// Requests posted and not yet reported.
    pub(crate) fn unreported(&self) -> usize {
        (self.next - self.oldest) as usize
    }

    /// Requests from the oldest unfinished one to the newest: the unfinished ones, where
    /// requests finish in order.
    pub(crate) fn pending(&self) -> usize {
        (self.next - self.head) as usize
    }

    /// The `k`-th request from the oldest unfinished one, while it is unfinished.
    pub(crate) fn pending_mut(&mut self, k: usize) -> Option<&mut T> {
        if k >= self.pending() {
            return None;
        }
        self.get_mut(self.head + k as u64)
    }

    /// Request `seq` while it is unfinished.
    pub(crate) fn get_mut(&mut self, seq: u64) -> Option<&mut T> {
        match &mut self.slots[Self::index(seq)] {
            Slot::Pending(s, op) if *s == seq => Some(op),
            _ => None,
        }
    }

    /// Every unfinished request, with its sequence number, in slot order.
    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (u64, &mut T)> {
        self.slots.iter_mut().filter_map(|s| match s {
            Slot::Pending(seq, op) => Some((*seq, op)),
            _ => None,
        })
    }

    /// Records that request `seq` finished with `c`, dropping its state; nothing if it is
    /// not unfinished.
    pub(crate) fn finish(&mut self, seq: u64, c: Completion) {
        let slot = &mut self.slots[Self::index(seq)];
        if matches!(slot, Slot::Pending(s, _) if *s == seq) {
            *slot = Slot::Done(seq, c);
            self.advance();
        }
    }

    /// Finishes the oldest unfinished request with `c`.
    pub(crate) fn finish_head(&mut self, c: Completion) {
        self.finish(self.head, c);
    }

    /// The result of request `seq` if it has finished (freeing its slot); `Ok(None)` while
    /// it is unfinished.
    pub(crate) fn take(&mut self, seq: u64) -> Result<Option<Completion>> {
        let i = Self::index(seq);
        match self.slots[i] {
            Slot::Done(s, c) if s == seq => {
                self.slots[i] = Slot::Free;
                self.advance();
                Ok(Some(c))
            }
            Slot::Pending(s, _) if s == seq => Ok(None),
            _ => Err(Error::invalid_usage(format!(
                "request #{seq} is not pending (tested again after it was reported complete?)"
            ))),
        }
    }

    /// Takes unfinished request `seq` out, freeing its slot: for a backend that keeps the
    /// outcome in `T` and reports it from there.
    pub(crate) fn remove(&mut self, seq: u64) -> Option<T> {
        let i = Self::index(seq);
        match std::mem::replace(&mut self.slots[i], Slot::Free) {
            Slot::Pending(s, op) if s == seq => {
                self.advance();
                Some(op)
            }
            other => {
                self.slots[i] = other;
                None
            }
        }
    }

    /// Moves `oldest` past reported requests and `head` past finished ones.
    fn advance(&mut self) {
        while self.oldest < self.next && matches!(self.slots[Self::index(self.oldest)], Slot::Free)
        {
            self.oldest += 1;
        }
        self.head = self.head.max(self.oldest);
        while self.head < self.next
            && !matches!(self.slots[Self::index(self.head)], Slot::Pending(s, _) if s == self.head)
        {
            self.head += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn done(bytes: usize) -> Completion {
        Completion { bytes, tag: [0; 3] }
    }

    #[test]
    fn ring_bounds_the_window_and_reports_each_request_once() {
        const N: usize = 8;
        let mut r: Ring<u32, N> = Ring::new();
        let seqs: Vec<u64> = (0..N).map(|i| r.post(i as u32).unwrap()).collect();
        assert_eq!(seqs, (0..N as u64).collect::<Vec<_>>());
        assert!(r.post(99).is_none(), "window full");
        // Out of order: 1 finishes and is reported first; the window still starts at 0.
        r.finish(1, done(1));
        assert_eq!(r.take(1).unwrap(), Some(done(1)));
        assert!(r.post(99).is_none(), "oldest is still request 0");
        assert_eq!(r.take(0).unwrap(), None, "0 is pending");
        r.finish(0, done(0));
        assert_eq!(r.take(0).unwrap(), Some(done(0)));
        assert_eq!(r.oldest(), 2, "oldest moves past every reported request");
        assert!(r.post(8).is_some() && r.post(9).is_some() && r.post(10).is_none());
        let e = r.take(0).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidUsage);
        assert!(e.to_string().contains("tested again"), "{e}");
    }

    #[test]
    fn in_order_requests_finish_at_the_head() {
        let mut r: Ring<u32> = Ring::new();
        for i in 0..3 {
            r.post(i).unwrap();
        }
        assert_eq!(r.pending(), 3);
        assert_eq!(r.pending_mut(2).copied(), Some(2));
        r.finish_head(done(10));
        assert_eq!((r.pending(), r.unreported()), (2, 3));
        assert_eq!(r.pending_mut(0).copied(), Some(1));
        assert_eq!(r.take(1).unwrap(), None);
        assert_eq!(r.take(0).unwrap(), Some(done(10)));
        assert_eq!((r.pending(), r.unreported()), (2, 2));
    }

    #[test]
    fn removed_requests_free_their_slot() {
        let mut r: Ring<u32, 2> = Ring::new();
        assert_eq!((r.post(5), r.post(6), r.post(7)), (Some(0), Some(1), None));
        assert_eq!(
            r.iter_mut().map(|(s, op)| (s, *op)).collect::<Vec<_>>(),
            [(0, 5), (1, 6)]
        );
        assert_eq!(r.remove(0), Some(5));
        assert_eq!(r.remove(0), None);
        assert_eq!((r.oldest(), r.unreported()), (1, 1));
        assert_eq!(r.post(7), Some(2));
    }
}
