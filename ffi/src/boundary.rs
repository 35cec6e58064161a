//! What every entry point shares: the panic boundary, the mapping of errors to result codes,
//! the last-error messages (per thread and per communicator), and checked out-parameters.

use std::cell::RefCell;
use std::ffi::{CStr, CString};
use std::os::raw::c_char;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use oxccl_core::{Error, Result};

use crate::handles::CommEntry;
use crate::types::{code_of, oxcclResult_t};

thread_local! {
    /// The message of the calling thread's last failed call (`oxcclGetLastError(NULL)`).
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
    /// This thread's copy of a communicator's last error (`oxcclGetLastError(comm)`): another
    /// thread's failure on the communicator replaces the communicator's string, never this.
    static COMM_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// What an entry point learned before failing: the communicator whose last error the
/// failure also becomes.
#[derive(Default)]
pub(crate) struct Ctx {
    pub comm: Option<Arc<CommEntry>>,
}

/// Runs an entry point's body: catches panics, records the message of a failure, and
/// returns the result code.
pub(crate) fn guard(name: &str, body: impl FnOnce(&mut Ctx) -> Result<()>) -> oxcclResult_t {
    let mut ctx = Ctx::default();
    let err = match catch_unwind(AssertUnwindSafe(|| body(&mut ctx))) {
        Ok(Ok(())) => return oxcclResult_t::oxcclSuccess,
        Ok(Err(e)) => e,
        Err(payload) => Error::internal(format!("panic inside oxccl: {}", panic_text(&payload))),
    };
    let code = code_of(err.kind());
    // Recording allocates; a panic there (it cannot, short of an allocator failure, which
    // aborts anyway) must not cross into C either.
    let _ = catch_unwind(AssertUnwindSafe(|| {
        record(&format!("{name}: {err}"), ctx.comm.as_deref())
    }));
    code
}

/// Like [`guard`] for entry points that return a string instead of a code: `fallback` is
/// returned if the body panics.
pub(crate) fn guard_str(
    body: impl FnOnce() -> *const c_char,
    fallback: &'static CStr,
) -> *const c_char {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or(fallback.as_ptr())
}

fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    }
}

fn to_cstring(msg: &str) -> CString {
    CString::new(msg.replace('\0', "\\0")).unwrap_or_default()
}

/// Makes `msg` the calling thread's last error and, given one, the communicator's.
fn record(msg: &str, comm: Option<&CommEntry>) {
    let c = to_cstring(msg);
    if let Some(entry) = comm {
        *entry.last_error.lock().unwrap_or_else(|p| p.into_inner()) = c.clone();
    }
    LAST_ERROR.with(|l| *l.borrow_mut() = c);
}

/// The calling thread's last error message; valid until its next failing call.
pub(crate) fn thread_last_error() -> *const c_char {
    LAST_ERROR.with(|l| l.borrow().as_ptr())
}

/// The communicator's last error message, copied for the calling thread: valid until this
/// thread's next `oxcclGetLastError(comm)`, whatever other threads do meanwhile.
pub(crate) fn comm_last_error(entry: &CommEntry) -> *const c_char {
    let c = entry
        .last_error
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    COMM_ERROR.with(|l| {
        *l.borrow_mut() = c;
        l.borrow().as_ptr()
    })
}

/// Checks that an out-parameter is not NULL (before any work is done).
pub(crate) fn out_ptr<T>(p: *mut T, what: &str) -> Result<()> {
    if p.is_null() {
        return Err(Error::invalid_argument(format!(
            "the out-parameter `{what}` is NULL"
        )));
    }
    Ok(())
}

/// Writes an out-parameter, once the call has succeeded.
///
/// # Safety
/// `p` must have been checked by [`out_ptr`] and point to writable memory for a `T`.
pub(crate) unsafe fn write_out<T>(p: *mut T, v: T) {
    // SAFETY: non-null by `out_ptr`, writable by the caller's contract; C callers' memory
    // need not be aligned for Rust's view of `T`, so write unaligned.
    unsafe { p.write_unaligned(v) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panics_become_internal_errors_with_the_message() {
        let code = guard("oxcclTest", |_| panic!("boom {}", 7));
        assert_eq!(code, oxcclResult_t::oxcclInternalError);
        // SAFETY: the thread's message lives until its next failing call.
        let msg = unsafe { CStr::from_ptr(thread_last_error()) };
        assert_eq!(
            msg.to_str().unwrap(),
            "oxcclTest: internal error: panic inside oxccl: boom 7"
        );
    }

    #[test]
    fn errors_keep_their_kind_and_success_keeps_the_last_message() {
        let code = guard("oxcclX", |_| Err(Error::timeout("rank 1: peer 2: waited")));
        assert_eq!(code, oxcclResult_t::oxcclTimeout);
        assert_eq!(guard("oxcclY", |_| Ok(())), oxcclResult_t::oxcclSuccess);
        // SAFETY: as above.
        let msg = unsafe { CStr::from_ptr(thread_last_error()) };
        assert_eq!(
            msg.to_str().unwrap(),
            "oxcclX: timeout: rank 1: peer 2: waited"
        );
    }

    #[test]
    fn messages_with_nul_survive() {
        assert_eq!(to_cstring("a\0b").to_str().unwrap(), "a\\0b");
    }

    #[test]
    fn null_out_parameters_are_refused() {
        let e = out_ptr(std::ptr::null_mut::<i32>(), "count").unwrap_err();
        assert!(e.message().contains("`count` is NULL"), "{e}");
        let mut x = 0i32;
        assert!(out_ptr(&mut x, "count").is_ok());
    }
}
