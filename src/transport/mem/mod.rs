//! `mem`: the in-process test backend. N ranks run as threads of one process, each with
//! its own [`MemTransport`] endpoint of a shared [`MemFabric`].
//!
//! Every collective algorithm is tested here first: the fabric injects faults
//! ([`MemFaults`]: slow connects, back-pressure, a cap on requests in flight, hidden
//! completions) and can [`kill`](MemFabric::kill) an endpoint, so that races and ordering
//! assumptions in the engine show up as failures.
//!
//! Semantics, beyond the trait's:
//! * Rendezvous copy: a message is copied from the sender's buffer into the receiver's
//!   only once both the send and its matching receive are posted (by whichever side's post
//!   or `test` finds them both), and only then do both complete. An engine that reuses a
//!   send buffer before completion therefore sees corrupted data in tests.
//! * A message longer than the posted receive fails the receive with `InvalidUsage` and
//!   the send with `Remote`.
//! * Closing or dropping a connection end, or dropping the transport, fails the other
//!   end's pending and future operations with `Remote` ("connection closed by peer").
//!   Dropping an unfinished request abandons it: its buffer is never touched again and the
//!   operation it would have matched fails with `Remote`.
//!
//! Seeds: endpoint `i`'s fault decisions come from a generator derived from
//! (fabric seed, `i`), so a failing seed replays the fault pattern of each endpoint. The
//! interleaving of rank threads is left to the OS and is not replayed: a single-threaded
//! script replays exactly; a multi-threaded run replays only its fault pattern.

mod conn;
mod device;
mod fabric;
mod listen;
mod rng;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use conn::{MemRecvConn, MemRequest, MemSendConn};
pub use fabric::{MemFabric, MemFaults};
pub use listen::{MemConnecting, MemListener};

use self::conn::{Conn, Side};
use self::rng::Rng;
use crate::error::{Error, Result};
use crate::transport::{Completion, ConnectHandle, DeviceProps, Tag, Transport};

/// Longest sleep of one `wait_activity`, so that many rank threads on few cores keep
/// taking turns even when a wake-up is missed.
const MAX_WAIT: Duration = Duration::from_millis(1);

/// One rank's endpoint of a [`MemFabric`]. Dropping it closes its listeners and
/// connections.
pub struct MemTransport {
    id: usize,
    fabric: Arc<MemFabric>,
    /// Set by [`MemFabric::kill`].
    killed: Arc<AtomicBool>,
    rng: Rng,
    /// Activity generation seen by the last post or test: `wait_activity` sleeps only if
    /// nothing happened since.
    seen: u64,
}

impl fmt::Debug for MemTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemTransport")
            .field("id", &self.id)
            .field("seed", &self.fabric.seed())
            .finish_non_exhaustive()
    }
}

impl MemTransport {
    fn new(id: usize, fabric: Arc<MemFabric>, killed: Arc<AtomicBool>, rng: Rng) -> Self {
        MemTransport {
            id,
            fabric,
            killed,
            rng,
            seen: 0,
        }
    }

    /// This endpoint's id in its fabric (0, 1, 2, .. in creation order).
    pub fn id(&self) -> usize {
        self.id
    }

    /// Fails every call once this endpoint was killed.
    fn check_alive(&self, what: &str) -> Result<()> {
        if self.killed.load(Ordering::SeqCst) {
            return Err(Error::remote(format!(
                "{what}: endpoint {} was killed",
                self.id
            )));
        }
        Ok(())
    }

    /// Checks that `side` of `conn` belongs to this endpoint.
    fn check_owner(&self, conn: &Conn, side: Side, what: &str) -> Result<()> {
        let owner = conn.endpoint(side);
        if owner != self.id {
            return Err(Error::invalid_usage(format!(
                "{what}: connection end belongs to endpoint {owner}, not endpoint {}",
                self.id
            )));
        }
        Ok(())
    }

    /// Posts one side's operation, drawing the back-pressure fault first.
    fn post(
        &mut self,
        conn: &Arc<Conn>,
        side: Side,
        buf: *mut u8,
        len: usize,
        tag: Tag,
        what: &str,
    ) -> Result<Option<MemRequest>> {
        self.check_alive(what)?;
        self.check_owner(conn, side, what)?;
        if buf.is_null() && len > 0 {
            return Err(Error::invalid_argument(format!(
                "{what}: null buffer of {len} bytes"
            )));
        }
        self.seen = self.fabric.activity().generation();
        let faults = self.fabric.faults();
        // Drawn before looking at the connection, so the stream of decisions does not
        // depend on the peer's progress.
        let backpressure = self.rng.chance(faults.backpressure);
        let max = faults.effective_max_in_flight();
        let seq = conn
            .post(side, buf, len, tag, max, backpressure)
            .map_err(|e| e.context(what))?;
        Ok(seq.map(|seq| MemRequest::new(Arc::clone(conn), side, seq)))
    }
}

impl Drop for MemTransport {
    fn drop(&mut self) {
        self.fabric.drop_endpoint(self.id);
    }
}

impl Transport for MemTransport {
    type Listener = MemListener;
    type Connecting = MemConnecting;
    type SendConn = MemSendConn;
    type RecvConn = MemRecvConn;
    type MemRegion = ();
    type Request = MemRequest;

    fn name(&self) -> &'static str {
        device::DEVICE_NAME
    }

    fn devices(&self) -> Result<Vec<DeviceProps>> {
        self.check_alive("mem devices")?;
        Ok(device::devices(self.fabric.faults()))
    }

    fn listen(&mut self, dev: usize) -> Result<(ConnectHandle, MemListener)> {
        self.check_alive("mem listen")?;
        device::check_dev(dev, "mem listen")?;
        listen::listen(&self.fabric, self.id)
    }

    fn connect(&mut self, dev: usize, handle: &ConnectHandle) -> Result<MemConnecting> {
        self.check_alive("mem connect")?;
        device::check_dev(dev, "mem connect")?;
        let nonce = self.fabric.nonce();
        let listener =
            listen::decode_handle(nonce, handle).map_err(|e| e.context("mem connect"))?;
        let max_delay = self.fabric.faults().connect_delay_polls;
        let polls_left = self.rng.below(u64::from(max_delay) + 1) as u32;
        Ok(MemConnecting {
            nonce,
            listener,
            polls_left,
            established: false,
        })
    }

    fn poll_connect(&mut self, pending: &mut MemConnecting) -> Result<Option<MemSendConn>> {
        self.check_alive("mem poll_connect")?;
        if pending.established {
            return Err(Error::invalid_usage(
                "mem poll_connect: connection already established",
            ));
        }
        if pending.nonce != self.fabric.nonce() {
            return Err(Error::invalid_usage(
                "mem poll_connect: attempt started on another mem fabric",
            ));
        }
        if pending.polls_left > 0 {
            pending.polls_left -= 1;
            return Ok(None);
        }
        let conn = listen::establish(&self.fabric, self.id, pending.listener)
            .map_err(|e| e.context("mem poll_connect"))?;
        pending.established = true;
        Ok(Some(MemSendConn { conn }))
    }

    fn accept(&mut self, listener: &mut MemListener) -> Result<Option<MemRecvConn>> {
        self.check_alive("mem accept")?;
        if listener.owner != self.id || !Arc::ptr_eq(&listener.fabric, &self.fabric) {
            return Err(Error::invalid_usage(format!(
                "mem accept: listener belongs to endpoint {}, not to this endpoint {}",
                listener.owner, self.id
            )));
        }
        let conn = listen::accept(&self.fabric, listener)?;
        Ok(conn.map(|conn| MemRecvConn { conn }))
    }

    fn register(&mut self, ptr: *const u8, len: usize) -> Result<()> {
        self.check_alive("mem register")?;
        if ptr.is_null() && len > 0 {
            return Err(Error::invalid_argument(format!(
                "mem register: null pointer for {len} bytes"
            )));
        }
        Ok(())
    }

    fn deregister(&mut self, region: ()) -> Result<()> {
        let () = region;
        self.check_alive("mem deregister")
    }

    unsafe fn isend(
        &mut self,
        conn: &mut MemSendConn,
        data: *const u8,
        len: usize,
        tag: Tag,
        region: Option<&()>,
    ) -> Result<Option<MemRequest>> {
        let _ = region;
        // The send buffer is only ever read; `*mut` is the shared representation.
        self.post(
            &conn.conn,
            Side::Send,
            data.cast_mut(),
            len,
            tag,
            "mem isend",
        )
    }

    unsafe fn irecv(
        &mut self,
        conn: &mut MemRecvConn,
        data: *mut u8,
        len: usize,
        region: Option<&()>,
    ) -> Result<Option<MemRequest>> {
        let _ = region;
        self.post(&conn.conn, Side::Recv, data, len, [0; 3], "mem irecv")
    }

    fn test(&mut self, request: &mut MemRequest) -> Result<Option<Completion>> {
        let what = match request.side {
            Side::Send => "mem test (send)",
            Side::Recv => "mem test (recv)",
        };
        self.check_alive(what)?;
        if request.finished {
            return Err(Error::invalid_usage(format!(
                "{what}: request tested again after it finished"
            )));
        }
        self.check_owner(&request.conn, request.side, what)?;
        self.seen = self.fabric.activity().generation();
        let delay = self.fabric.faults().delay;
        match request
            .conn
            .test(request.side, request.seq, &mut self.rng, delay)
        {
            None => Ok(None),
            Some(outcome) => {
                request.finished = true;
                outcome.map(Some).map_err(|e| e.context(what))
            }
        }
    }

    fn wait_activity(&mut self, timeout: Duration) -> Result<()> {
        self.check_alive("mem wait_activity")?;
        let activity = self.fabric.activity();
        if activity.generation() == self.seen {
            activity.wait(self.seen, timeout.min(MAX_WAIT));
        } else {
            // Something already happened: let other rank threads run before re-polling.
            std::thread::yield_now();
        }
        // Whatever happened up to now is visible to the caller's next round of tests.
        self.seen = activity.generation();
        Ok(())
    }

    fn close_send(&mut self, conn: MemSendConn) -> Result<()> {
        let owned = self.check_owner(&conn.conn, Side::Send, "mem close_send");
        drop(conn);
        self.check_alive("mem close_send")?;
        owned
    }

    fn close_recv(&mut self, conn: MemRecvConn) -> Result<()> {
        let owned = self.check_owner(&conn.conn, Side::Recv, "mem close_recv");
        drop(conn);
        self.check_alive("mem close_recv")?;
        owned
    }

    fn close_listen(&mut self, listener: MemListener) -> Result<()> {
        drop(listener);
        self.check_alive("mem close_listen")
    }
}
