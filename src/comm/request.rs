//! Non-blocking calls: a background worker per communicator runs them in the order issued,
//! and a [`Request`] reports one. Safe code issues them in a [`Scope`](super::Scope), which
//! waits for all of them; the C ABI and Python issue raw calls whose buffers they keep.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::{execute, lock, Call, Communicator, Shared, State};
use crate::algo::Kind;
use crate::error::{Error, Result};

/// Where a call's outcome lands.
pub(crate) struct Slot {
    result: Mutex<Option<Result<()>>>,
    cv: Condvar,
}

impl Slot {
    fn new() -> Arc<Slot> {
        Arc::new(Slot {
            result: Mutex::new(None),
            cv: Condvar::new(),
        })
    }

    fn put(&self, r: Result<()>) {
        *self.result.lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
        self.cv.notify_all();
    }

    fn peek(&self) -> Option<Result<()>> {
        self.result
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Blocks until the call is over. The engine bounds every call by `OXCCL_TIMEOUT` without
    /// progress, so this returns; it wakes periodically only to be robust to lost wake-ups.
    pub(crate) fn wait_result(&self) -> Result<()> {
        let mut g = self.result.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(r) = g.as_ref() {
                return r.clone();
            }
            g = match self.cv.wait_timeout(g, Duration::from_millis(100)) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
    }
}

/// Calls the worker runs together, with one slot each.
struct Job {
    calls: Vec<Call>,
    slots: Vec<Arc<Slot>>,
}

// SAFETY: a job's raw pointers are only dereferenced by the worker while the submitting
// `Request` (which borrows the buffers, and whose drop waits for the job) is alive.
unsafe impl Send for Job {}

/// The background thread of one communicator.
pub(crate) struct Worker {
    tx: mpsc::Sender<Job>,
    handle: JoinHandle<()>,
    pending: Arc<AtomicUsize>,
}

impl Worker {
    fn start(shared: Arc<Shared>, state: Arc<Mutex<State>>) -> Result<Worker> {
        let (tx, rx) = mpsc::channel::<Job>();
        let pending = Arc::new(AtomicUsize::new(0));
        let p = pending.clone();
        let handle = std::thread::Builder::new()
            .name(format!("oxccl-rank{}", shared.rank))
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    let r = {
                        let mut st = lock(&state);
                        // SAFETY: see `Job`.
                        unsafe { execute(&shared, &mut st, &job.calls) }
                    };
                    p.fetch_sub(1, Ordering::SeqCst);
                    for s in &job.slots {
                        s.put(r.clone());
                    }
                }
            })
            .map_err(|e| Error::io("starting the communicator's worker thread", e))?;
        Ok(Worker {
            tx,
            handle,
            pending,
        })
    }

    /// Lets the queued calls finish, then ends the thread.
    pub(crate) fn stop(self) {
        drop(self.tx);
        let _ = self.handle.join();
    }
}

/// A non-blocking call in flight. Dropping it waits for the call to finish, because the
/// call still uses the buffers the request borrows.
#[must_use = "a request must be waited on; dropping it waits anyway"]
pub struct Request<'a> {
    slot: Arc<Slot>,
    finished: bool,
    comm: &'a Communicator,
    _buffers: PhantomData<&'a mut [u8]>,
}

impl Request<'_> {
    /// Where the call's outcome lands (a scope waits on it at its end).
    pub(crate) fn slot(&self) -> Arc<Slot> {
        self.slot.clone()
    }

    /// Blocks until the call is over and returns its result.
    pub fn wait(mut self) -> Result<()> {
        self.finished = true;
        self.comm.flush()?;
        self.slot.wait_result()
    }

    /// Whether the call is over (`Ok(true)`), still running (`Ok(false)`), or failed.
    /// Send/recv requests start here or at the next wait or blocking call.
    pub fn test(&mut self) -> Result<bool> {
        self.comm.flush()?;
        match self.slot.peek() {
            None => Ok(false),
            Some(r) => {
                self.finished = true;
                r.map(|_| true)
            }
        }
    }
}

impl Drop for Request<'_> {
    fn drop(&mut self) {
        if !self.finished && self.comm.flush().is_ok() {
            let _ = self.slot.wait_result();
        }
    }
}

impl Communicator {
    /// Hands `calls` to the worker as one job. On failure the slots get the error, so
    /// that nothing waits for a call that never started.
    fn enqueue(&self, calls: Vec<Call>, slots: Vec<Arc<Slot>>) -> Result<()> {
        let r = self.try_enqueue(calls, &slots);
        if let Err(e) = &r {
            for s in &slots {
                s.put(Err(e.clone()));
            }
        }
        r
    }

    fn try_enqueue(&self, calls: Vec<Call>, slots: &[Arc<Slot>]) -> Result<()> {
        let mut w = self.worker.lock().unwrap_or_else(|p| p.into_inner());
        if w.is_none() {
            *w = Some(Worker::start(self.shared.clone(), self.state.clone())?);
        }
        let worker = w
            .as_ref()
            .ok_or_else(|| Error::internal("worker missing"))?;
        worker.pending.fetch_add(1, Ordering::SeqCst);
        let job = Job {
            calls,
            slots: slots.to_vec(),
        };
        if worker.tx.send(job).is_err() {
            worker.pending.fetch_sub(1, Ordering::SeqCst);
            return Err(Error::internal(format!(
                "rank {}: the worker thread is gone",
                self.rank()
            )));
        }
        Ok(())
    }

    /// Starts the deferred send/recv calls, all together.
    pub(crate) fn flush(&self) -> Result<()> {
        let group = std::mem::take(&mut *self.deferred.lock().unwrap_or_else(|p| p.into_inner()));
        if group.is_empty() {
            return Ok(());
        }
        let (calls, slots): (Vec<Call>, Vec<Arc<Slot>>) =
            group.into_iter().map(|d| (d.0, d.1)).unzip();
        self.enqueue(calls, slots)
    }

    /// Queues `call` on the worker (send/recv wait to be started with the next ones, as in
    /// an NCCL group).
    ///
    /// # Safety
    /// The call's buffers must stay valid until the returned request is finished; the
    /// typed callers guarantee it with the request's lifetime.
    pub(crate) unsafe fn submit<'a>(&'a self, call: Call) -> Result<Request<'a>> {
        let _entry = self.shared.enter(call.kind)?;
        let slot = Slot::new();
        if matches!(call.kind, Kind::Send | Kind::Recv) {
            self.deferred
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(Deferred(call, slot.clone()));
        } else {
            self.flush()?;
            self.enqueue(vec![call], vec![slot.clone()])?;
        }
        Ok(Request {
            slot,
            finished: false,
            comm: self,
            _buffers: PhantomData,
        })
    }

    /// When earlier non-blocking calls are queued or deferred, queues `calls` behind them as
    /// one job and returns its slot; otherwise `None` and the caller runs them inline.
    ///
    /// # Safety
    /// As [`Communicator::submit`]; the caller waits on the slot before returning.
    pub(crate) unsafe fn submit_group_if_busy(&self, calls: &[Call]) -> Result<Option<Arc<Slot>>> {
        if !self.busy() {
            return Ok(None);
        }
        self.flush()?;
        let slot = Slot::new();
        self.enqueue(calls.to_vec(), vec![slot.clone()])?;
        Ok(Some(slot))
    }

    /// Whether earlier non-blocking calls are queued, running or deferred.
    fn busy(&self) -> bool {
        let deferred = !self
            .deferred
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty();
        deferred || {
            let w = self.worker.lock().unwrap_or_else(|p| p.into_inner());
            w.as_ref()
                .is_some_and(|w| w.pending.load(Ordering::SeqCst) > 0)
        }
    }

    /// When earlier non-blocking calls are queued or deferred, queues `call` behind them (a
    /// send or recv joins the deferred group) and returns its slot; otherwise `None` and
    /// the caller runs it inline.
    ///
    /// # Safety
    /// As [`Communicator::submit`]; the caller waits on the slot before returning.
    pub(crate) unsafe fn submit_if_busy(&self, call: Call) -> Result<Option<Arc<Slot>>> {
        let deferred = !self
            .deferred
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty();
        let busy = deferred || {
            let w = self.worker.lock().unwrap_or_else(|p| p.into_inner());
            w.as_ref()
                .is_some_and(|w| w.pending.load(Ordering::SeqCst) > 0)
        };
        if !busy {
            return Ok(None);
        }
        // SAFETY: forwarded; the caller waits for the slot.
        let mut req = unsafe { self.submit(call) }?;
        req.finished = true;
        self.flush()?;
        Ok(Some(req.slot.clone()))
    }
}

/// A send or recv waiting for the group to start.
pub(crate) struct Deferred(Call, Arc<Slot>);

// SAFETY: as for `Job`: the pointers are used only while the owning request lives.
unsafe impl Send for Deferred {}
