//! `oxcclGroupStart` / `oxcclGroupEnd`: the calls a thread makes between them (on one or
//! more communicators) are checked at once, collected, and run together at the outermost
//! `oxcclGroupEnd`, as NCCL's groups: small allreduces of one type and op become one call,
//! and sends and receives cannot wait on each other. Calls on different communicators run
//! concurrently, so a group may span communicators that depend on each other.

use std::cell::RefCell;
use std::sync::Arc;

use oxccl_core::{Error, RawCall, Result};

use crate::boundary::guard;
use crate::handles::CommEntry;
use crate::types::oxcclResult_t;

/// The calling thread's open group.
#[derive(Default)]
struct Open {
    depth: usize,
    calls: Vec<(Arc<CommEntry>, RawCall)>,
}

thread_local! {
    static GROUP: RefCell<Open> = RefCell::new(Open::default());
}

/// Whether the calling thread is inside a group.
pub(crate) fn active() -> bool {
    GROUP.with(|g| g.borrow().depth > 0)
}

/// Adds a checked call to the calling thread's group.
pub(crate) fn push(comm: Arc<CommEntry>, call: RawCall) {
    GROUP.with(|g| g.borrow_mut().calls.push((comm, call)));
}

/// One communicator's share of a group, handed to the thread that runs it.
struct Share(Arc<CommEntry>, Vec<RawCall>);

// SAFETY: the raw pointers of the calls are the C caller's buffers, which it keeps valid
// until `oxcclGroupEnd` returns; `oxcclGroupEnd` joins every thread before returning, and
// each share is used by one thread only.
unsafe impl Send for Share {}
// SAFETY: as above; a share is only read.
unsafe impl Sync for Share {}

fn run_share(s: &Share) -> Result<()> {
    // SAFETY: the C caller's promise on the buffers of calls made inside a group lasts until
    // `oxcclGroupEnd` returns, and the run ends before that.
    unsafe { s.0.comm.run_raw_group(&s.1) }
}

/// Runs the calls of a group, each communicator's together, different communicators
/// concurrently. Returns the first failure, with the communicator it happened on.
fn run_all(
    calls: Vec<(Arc<CommEntry>, RawCall)>,
) -> std::result::Result<(), (Arc<CommEntry>, Error)> {
    let mut shares: Vec<Share> = Vec::new();
    for (e, c) in calls {
        match shares.iter_mut().find(|s| Arc::ptr_eq(&s.0, &e)) {
            Some(s) => s.1.push(c),
            None => shares.push(Share(e, vec![c])),
        }
    }
    let Some((first, rest)) = shares.split_first() else {
        return Ok(());
    };
    std::thread::scope(|scope| {
        let others: Vec<_> = rest
            .iter()
            .map(|s| (s.0.clone(), scope.spawn(move || run_share(s))))
            .collect();
        let mut result = run_share(first).map_err(|e| (first.0.clone(), e));
        for (entry, h) in others {
            let r = h
                .join()
                .unwrap_or_else(|_| Err(Error::internal("a group's thread panicked")));
            if let (Ok(()), Err(e)) = (&result, r) {
                result = Err((entry, e));
            }
        }
        result
    })
}

/// Opens a group (groups nest; only the outermost `oxcclGroupEnd` runs the calls). Until
/// then, collective and point-to-point calls of this thread return `oxcclSuccess` once
/// their arguments are checked, and run at `oxcclGroupEnd`: their buffers must stay valid
/// until it returns. `...Async` calls are refused inside a group.
#[no_mangle]
pub extern "C" fn oxcclGroupStart() -> oxcclResult_t {
    guard("oxcclGroupStart", |_| {
        GROUP.with(|g| g.borrow_mut().depth += 1);
        Ok(())
    })
}

/// Closes a group; the outermost one runs its calls and returns when all are done, with
/// the first failure (whose message `oxcclGetLastError` gives, for the thread and for the
/// communicator it happened on).
#[no_mangle]
pub extern "C" fn oxcclGroupEnd() -> oxcclResult_t {
    guard("oxcclGroupEnd", |ctx| {
        let calls = GROUP.with(|g| {
            let mut g = g.borrow_mut();
            if g.depth == 0 {
                return Err(Error::invalid_usage(
                    "oxcclGroupEnd without a matching oxcclGroupStart",
                ));
            }
            g.depth -= 1;
            Ok(if g.depth == 0 {
                std::mem::take(&mut g.calls)
            } else {
                Vec::new()
            })
        })?;
        run_all(calls).map_err(|(entry, e)| {
            ctx.comm = Some(entry);
            e
        })
    })
}
