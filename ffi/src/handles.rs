//! Registries of live communicators and requests.
//!
//! A handle given to C is never a pointer to memory: it is a key, taken from a counter that
//! never repeats, into a registry. Looking a handle up is therefore always safe: a destroyed
//! (or never created, or forged) handle is simply absent and yields `oxcclInvalidUsage`,
//! where dereferencing it would read freed memory. The registry holds an `Arc`, so a call
//! running on another thread keeps its communicator alive while `oxcclCommDestroy` removes it.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use oxccl_core::{Communicator, Error, Request, Result};

use crate::types::{oxcclComm_t, oxcclRequest_t};

/// A live communicator and its last error message.
pub(crate) struct CommEntry {
    pub comm: Communicator,
    /// The message of the last failed call on this communicator (`oxcclGetLastError(comm)`).
    pub last_error: Mutex<CString>,
    /// Pre-multiplied sums created on this communicator: op number -> (type, scalar).
    pub premul: Mutex<BTreeMap<std::os::raw::c_int, (oxccl_core::DataType, [u8; 8])>>,
}

/// A non-blocking call. The request borrows the communicator, which `comm` keeps alive: the
/// request must go first, hence the explicit `Drop`.
pub(crate) struct ReqEntry {
    req: Option<Request<'static>>,
    pub comm: Arc<CommEntry>,
}

impl ReqEntry {
    /// Wraps a request of `comm`'s communicator.
    ///
    /// # Safety
    /// `req` must borrow `comm.comm` (and nothing shorter-lived than the caller's promise
    /// about the buffers).
    pub(crate) unsafe fn new(req: Request<'_>, comm: Arc<CommEntry>) -> ReqEntry {
        // SAFETY: the request borrows the communicator inside `comm`'s allocation, which
        // does not move and lives as long as this entry holds the `Arc`; `Drop` ends the
        // request before the `Arc` is released.
        let req = unsafe { std::mem::transmute::<Request<'_>, Request<'static>>(req) };
        ReqEntry {
            req: Some(req),
            comm,
        }
    }

    /// The request, while it has not been waited on.
    pub(crate) fn request(&mut self) -> Option<&mut Request<'static>> {
        self.req.as_mut()
    }

    /// Takes the request out to wait on it (the entry must stay alive meanwhile).
    pub(crate) fn take(&mut self) -> Option<Request<'static>> {
        self.req.take()
    }
}

impl Drop for ReqEntry {
    fn drop(&mut self) {
        // Dropping an unfinished request waits for its call (bounded by OXCCL_TIMEOUT).
        drop(self.req.take());
    }
}

type Registry<T> = Mutex<BTreeMap<usize, Arc<T>>>;

static COMMS: Registry<CommEntry> = Mutex::new(BTreeMap::new());
static REQUESTS: Registry<Mutex<ReqEntry>> = Mutex::new(BTreeMap::new());

/// Handle values: distinct for every object ever made in this process, never 0.
static NEXT: AtomicUsize = AtomicUsize::new(1);

fn next_key() -> usize {
    // Multiples of 16 so that handles look like ordinary aligned pointers in a debugger.
    NEXT.fetch_add(1, Ordering::Relaxed) << 4
}

fn locked<T>(m: &Registry<T>) -> MutexGuard<'_, BTreeMap<usize, Arc<T>>> {
    // The maps stay consistent across a panic (every update is a single insert/remove).
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Registers a new communicator and returns its handle.
pub(crate) fn add_comm(comm: Communicator) -> oxcclComm_t {
    let key = next_key();
    let entry = Arc::new(CommEntry {
        comm,
        last_error: Mutex::new(CString::default()),
        premul: Mutex::new(BTreeMap::new()),
    });
    locked(&COMMS).insert(key, entry);
    key as oxcclComm_t
}

fn not_live(what: &str, h: usize) -> Error {
    Error::invalid_usage(format!(
        "{what} {h:#x} is not live: it was destroyed, aborted or released already, or never \
         created by oxccl"
    ))
}

/// The communicator behind `h`.
pub(crate) fn comm(h: oxcclComm_t) -> Result<Arc<CommEntry>> {
    if h.is_null() {
        return Err(Error::invalid_argument("comm is NULL"));
    }
    locked(&COMMS)
        .get(&(h as usize))
        .cloned()
        .ok_or_else(|| not_live("communicator", h as usize))
}

/// Unregisters `h`; the communicator ends when the last call or request using it is over.
pub(crate) fn remove_comm(h: oxcclComm_t) -> Result<Arc<CommEntry>> {
    locked(&COMMS)
        .remove(&(h as usize))
        .ok_or_else(|| not_live("communicator", h as usize))
}

/// Registers a request and returns its handle.
pub(crate) fn add_request(r: ReqEntry) -> oxcclRequest_t {
    let key = next_key();
    locked(&REQUESTS).insert(key, Arc::new(Mutex::new(r)));
    key as oxcclRequest_t
}

/// The request behind `h`.
pub(crate) fn request(h: oxcclRequest_t) -> Result<Arc<Mutex<ReqEntry>>> {
    if h.is_null() {
        return Err(Error::invalid_argument("request is NULL"));
    }
    locked(&REQUESTS)
        .get(&(h as usize))
        .cloned()
        .ok_or_else(|| not_live("request", h as usize))
}

/// Unregisters the request `h` (it is released when the caller drops it).
pub(crate) fn remove_request(h: oxcclRequest_t) -> Option<Arc<Mutex<ReqEntry>>> {
    locked(&REQUESTS).remove(&(h as usize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_distinct_and_unknown_ones_are_refused() {
        let a = next_key();
        let b = next_key();
        assert_ne!(a, b);
        assert_ne!(a, 0);
        let e = comm(b as oxcclComm_t).err().unwrap();
        assert_eq!(e.kind(), oxccl_core::ErrorKind::InvalidUsage);
        assert!(e.message().contains("not live"), "{e}");
        let e = comm(std::ptr::null_mut()).err().unwrap();
        assert_eq!(e.kind(), oxccl_core::ErrorKind::InvalidArgument);
        assert!(request(a as oxcclRequest_t).is_err());
        assert!(remove_request(a as oxcclRequest_t).is_none());
    }
}
