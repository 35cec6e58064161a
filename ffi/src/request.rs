//! `oxcclWait` and `oxcclTest`: finishing non-blocking calls. The call that sees a request
//! finish (successfully or not) releases it; its handle is dead afterwards.

use std::os::raw::c_int;

use oxccl_core::Error;

use crate::boundary::{guard, out_ptr, write_out};
use crate::handles;
use crate::types::{oxcclRequest_t, oxcclResult_t};

fn released() -> Error {
    Error::invalid_usage("the request was released already (waited on, or tested done)")
}

/// Blocks until the call of `request` is over, returns its result and releases it.
#[no_mangle]
pub extern "C" fn oxcclWait(request: oxcclRequest_t) -> oxcclResult_t {
    guard("oxcclWait", |ctx| {
        let entry = handles::request(request)?;
        handles::remove_request(request);
        let mut g = entry.lock().unwrap_or_else(|p| p.into_inner());
        ctx.comm = Some(g.comm.clone());
        let req = g.take().ok_or_else(released)?;
        // The entry (and so the communicator) stays alive while the request is waited on.
        let r = req.wait();
        drop(g);
        r
    })
}

/// Writes 1 to `done` and releases `request` if its call is over, else writes 0. A failed
/// call returns its error (and releases the request) instead.
#[no_mangle]
pub extern "C" fn oxcclTest(request: oxcclRequest_t, done: *mut c_int) -> oxcclResult_t {
    guard("oxcclTest", |ctx| {
        let entry = handles::request(request)?;
        out_ptr(done, "done")?;
        let mut g = entry.lock().unwrap_or_else(|p| p.into_inner());
        ctx.comm = Some(g.comm.clone());
        let req = g.request().ok_or_else(released)?;
        let finished = match req.test() {
            Ok(false) => false,
            Ok(true) => true,
            Err(e) => {
                handles::remove_request(request);
                drop(g.take());
                return Err(e);
            }
        };
        if finished {
            handles::remove_request(request);
            drop(g.take());
        }
        // SAFETY: checked non-null.
        unsafe { write_out(done, c_int::from(finished)) };
        Ok(())
    })
}
