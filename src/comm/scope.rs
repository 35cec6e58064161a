//! Non-blocking calls that safe code cannot make unsound: a [`Scope`], as
//! `std::thread::scope`, lends buffers to calls for the scope's lifetime and waits for every
//! call issued in it before [`Communicator::scope`] returns, whatever became of the
//! requests (waited, dropped, or forgotten with `std::mem::forget`).
//!
//! A buffer handed to a call in a scope must outlive the scope, so it cannot be freed while
//! the call may still use it:
//!
//! ```compile_fail,E0597
//! # fn main() -> oxccl::Result<()> {
//! # let id = oxccl::UniqueId::new()?;
//! # let comm = oxccl::Communicator::init(&id, 0, 1)?;
//! let mut out = vec![0f32; 4];
//! comm.scope(|s| -> oxccl::Result<()> {
//!     let buf = vec![1f32; 4]; // lives only inside the scope's closure
//!     let r = s.iall_reduce(&buf, &mut out, oxccl::ReduceOp::Sum)?;
//!     std::mem::forget(r); // the request's drop cannot be relied on ...
//!     drop(buf); // ... so this must not compile: `buf` does not live long enough
//!     Ok(())
//! })?;
//! # Ok(()) }
//! ```

use std::marker::PhantomData;
use std::sync::{Arc, Mutex};

use super::request::Slot;
use super::{Call, Communicator, Request};
use crate::algo::Kind;
use crate::error::Result;
use crate::reduce::{Element, ReduceOp};

/// A scope for non-blocking calls on one communicator (see [`Communicator::scope`]).
pub struct Scope<'scope, 'env: 'scope> {
    comm: &'env Communicator,
    /// Every call issued in the scope, waited for when it ends.
    slots: Mutex<Vec<Arc<Slot>>>,
    // Invariant in both lifetimes, as std's scoped threads are: 'scope cannot shrink.
    scope: PhantomData<&'scope mut &'scope ()>,
    env: PhantomData<&'env mut &'env ()>,
}

/// Waits for every call of a scope when dropped, also when the scope's closure panics.
struct WaitAll<'a, 'scope, 'env>(&'a Scope<'scope, 'env>);

impl Drop for WaitAll<'_, '_, '_> {
    fn drop(&mut self) {
        let s = self.0;
        // Start deferred sends and receives; a failure to start fills their slots with it.
        let _ = s.comm.flush();
        let slots = std::mem::take(&mut *s.slots.lock().unwrap_or_else(|p| p.into_inner()));
        for slot in slots {
            let _ = slot.wait_result();
        }
    }
}

impl Communicator {
    /// Runs `f` with a [`Scope`] in which non-blocking calls borrow their buffers until the
    /// scope ends; every call issued in it is over when `scope` returns (its outcome is
    /// reported by its request's `wait` or `test`). Calls run in the order issued, on the
    /// communicator's worker thread, and blocking calls made meanwhile queue behind them.
    ///
    /// ```
    /// # fn main() -> oxccl::Result<()> {
    /// # let id = oxccl::UniqueId::new()?;
    /// # let comm = oxccl::Communicator::init(&id, 0, 1)?;
    /// let (grads, mut sum) = (vec![1f32; 1024], vec![0f32; 1024]);
    /// let (mut params, mut forgotten) = (vec![2f64; 16], vec![0u8; 8]);
    /// comm.scope(|s| -> oxccl::Result<()> {
    ///     let a = s.iall_reduce(&grads, &mut sum, oxccl::ReduceOp::Sum)?;
    ///     let b = s.ibroadcast(&mut params, 0)?;
    ///     std::mem::forget(s.ibroadcast(&mut forgotten, 0)?); // harmless: the scope waits
    ///     a.wait()?;
    ///     b.wait()
    /// })?;
    /// assert_eq!(sum[0], 1.0);
    /// # Ok(()) }
    /// ```
    pub fn scope<'env, F, R>(&'env self, f: F) -> R
    where
        F: for<'scope> FnOnce(&'scope Scope<'scope, 'env>) -> R,
    {
        let scope = Scope {
            comm: self,
            slots: Mutex::new(Vec::new()),
            scope: PhantomData,
            env: PhantomData,
        };
        let wait = WaitAll(&scope);
        let r = f(&scope);
        drop(wait);
        r
    }
}

impl<'scope> Scope<'scope, '_> {
    /// Issues `call`, whose buffers the caller borrowed for 'scope.
    ///
    /// # Safety
    /// The call's pointers must be valid for its sizes for 'scope.
    unsafe fn issue(&'scope self, call: Call) -> Result<Request<'scope>> {
        // SAFETY: the buffers outlive 'scope and the scope waits for the call before it
        // ends (`WaitAll`), even if the request is forgotten.
        let req = unsafe { self.comm.submit(call) }?;
        self.slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(req.slot());
        Ok(req)
    }

    /// Non-blocking [`Communicator::all_reduce`].
    pub fn iall_reduce<T: Element>(
        &'scope self,
        send: &'scope [T],
        recv: &'scope mut [T],
        op: ReduceOp,
    ) -> Result<Request<'scope>> {
        let c = self
            .comm
            .checked(Kind::AllReduce, op, 0, send.len(), send, recv)?;
        // SAFETY: both buffers are borrowed for 'scope.
        unsafe { self.issue(c) }
    }

    /// Non-blocking [`Communicator::all_gather`].
    pub fn iall_gather<T: Element>(
        &'scope self,
        send: &'scope [T],
        recv: &'scope mut [T],
    ) -> Result<Request<'scope>> {
        let c = (self.comm).checked(Kind::AllGather, ReduceOp::Sum, 0, send.len(), send, recv)?;
        // SAFETY: as above.
        unsafe { self.issue(c) }
    }

    /// Non-blocking [`Communicator::reduce_scatter`].
    pub fn ireduce_scatter<T: Element>(
        &'scope self,
        send: &'scope [T],
        recv: &'scope mut [T],
        op: ReduceOp,
    ) -> Result<Request<'scope>> {
        let c = (self.comm).checked(Kind::ReduceScatter, op, 0, recv.len(), send, recv)?;
        // SAFETY: as above.
        unsafe { self.issue(c) }
    }

    /// Non-blocking [`Communicator::broadcast`].
    pub fn ibroadcast<T: Element>(
        &'scope self,
        buf: &'scope mut [T],
        root: usize,
    ) -> Result<Request<'scope>> {
        self.comm.check_root(Kind::Broadcast, root, "root")?;
        let p = buf.as_mut_ptr();
        let c = (self.comm).call(Kind::Broadcast, ReduceOp::Sum, root, buf.len(), p, p);
        // SAFETY: as above.
        unsafe { self.issue(c) }
    }

    /// Non-blocking [`Communicator::reduce`].
    pub fn ireduce<T: Element>(
        &'scope self,
        send: &'scope [T],
        recv: &'scope mut [T],
        op: ReduceOp,
        root: usize,
    ) -> Result<Request<'scope>> {
        let c = (self.comm).checked(Kind::Reduce, op, root, send.len(), send, recv)?;
        // SAFETY: as above.
        unsafe { self.issue(c) }
    }

    /// Non-blocking [`Communicator::send`]; sends and receives start together at the next
    /// wait, test, blocking call or the scope's end (as an NCCL group).
    pub fn isend<T: Element>(
        &'scope self,
        buf: &'scope [T],
        peer: usize,
    ) -> Result<Request<'scope>> {
        self.comm.check_peer(Kind::Send, peer)?;
        let (n, p) = (buf.len(), buf.as_ptr());
        let c = (self.comm).call(Kind::Send, ReduceOp::Sum, peer, n, p, std::ptr::null_mut());
        // SAFETY: as above.
        unsafe { self.issue(c) }
    }

    /// Non-blocking [`Communicator::recv`].
    pub fn irecv<T: Element>(
        &'scope self,
        buf: &'scope mut [T],
        peer: usize,
    ) -> Result<Request<'scope>> {
        self.comm.check_peer(Kind::Recv, peer)?;
        let (n, p) = (buf.len(), buf.as_mut_ptr());
        let c = (self.comm).call(Kind::Recv, ReduceOp::Sum, peer, n, std::ptr::null(), p);
        // SAFETY: as above.
        unsafe { self.issue(c) }
    }
}
