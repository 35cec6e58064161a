//! The fabric backend: libfabric `FI_EP_RDM` endpoints, written to the shape of Ultra
//! Ethernet's provider (RMA write with remote CQ data as the data path, provider-chosen
//! keys, offset addressing, manual progress) and tested on libfabric's `tcp;ofi_rxm` and
//! `shm` providers.
//!
//! Owns [`FabricTransport`] and its `impl Transport`: the peers (address-vector entries),
//! the connection tables, the completion contexts, the bounce buffers and the progress
//! loop that reads the completion queue. libfabric is loaded at run time (`sys.rs`); the
//! default build needs neither its headers nor the library.
//!
//! * `sys.rs`: dlopen, the exported symbols, the ops-table calls;
//! * `bindings.rs`: declarations generated from libfabric 1.17's headers
//!   (`ci/gen-fabric-bindings.sh`);
//! * `device.rs`: provider selection (`OXCCL_FABRIC_PROVIDER`) and device properties;
//! * `endpoint.rs`: the libfabric objects, memory registration;
//! * `listen.rs`: connect handles and the connect/accept handshake;
//! * `conn.rs`: the wire header and each connection end's requests;
//! * `progress.rs`: reading the completion queue and acting on what arrives;
//! * `liveness.rs`: probes, process checks and failed peers;
//! * `close.rs`: closing connection ends and the transport.
//!
//! Progress is manual: every `test`, `accept`, `poll_connect` and `wait_activity` reads the
//! completion queue, which is also what moves the provider's data (and makes RMA writes
//! land on targets). `-FI_EAGAIN` from a post is back-pressure: the message stays queued
//! here (or the request is refused with `None`) and is posted again after progress.
//!
//! A dead peer is seen three ways: its `Close` messages (a rank that shuts down says so),
//! an error completion for an operation towards it (tcp: connection refused or reset), and,
//! for shm, its process being gone. While idle, the engine's `check_send` and
//! `wait_activity` send small probes to peers with outstanding work, so the error arrives
//! even when nothing else is being sent to that peer.

// Generated declarations: C naming, and more items than oxccl uses.
#[allow(
    dead_code,
    non_camel_case_types,
    non_upper_case_globals,
    non_snake_case,
    missing_docs,
    clippy::all,
    clippy::undocumented_unsafe_blocks
)]
mod bindings;
mod close;
mod conn;
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) use conn::{fuzz_header, fuzz_header_seed};
mod device;
mod endpoint;
mod listen;
mod liveness;
mod progress;
mod sys;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::ffi::c_void;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use self::conn::{
    imm, split_imm, Cts, Early, Header, Id, Kind, RecvConn, RecvOp, SendConn, SendOp, SendState,
    Slab, EAGER_MAX, HDR, MSG_BYTES,
};
use self::endpoint::{Endpoint, EAGAIN};
use self::progress::fill;
use crate::error::{Error, ErrorKind, Result};
use crate::transport::{Completion, ConnectHandle, DeviceProps, Tag, Transport};

/// Bounce buffers for outgoing messages (control and eager data).
const TX_SLOTS: usize = 64;
/// Receive buffers kept posted for incoming messages.
const RX_SLOTS: usize = 64;
/// Longest endpoint address accepted from a peer.
const MAX_ADDR: usize = 256;
/// Sleep between polls of a completion queue without a wait object.
const POLL_SLEEP: Duration = Duration::from_micros(50);
/// Completions read per `fi_cq_read`.
const CQ_BATCH: usize = 16;

/// Removes the shared-memory regions libfabric's shm provider left in `/dev/shm` for process
/// `pid`, which must have ended without closing its endpoints (killed by a signal) and not
/// been reaped yet, so that no other process can have its pid. A launcher calls it for such
/// a rank: each region is as large as 16 MiB of memory, kept until removed.
pub fn remove_shm_regions_of(pid: u32) {
    endpoint::remove_names_of(std::path::Path::new("/dev/shm"), pid);
}

/// Settings of a [`FabricTransport`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FabricConfig {
    /// Provider to use (`OXCCL_FABRIC_PROVIDER`: `uet`, `verbs`, `tcp`, `shm`, ...);
    /// `None`: `uet` when present, then hardware providers, then `tcp`.
    pub provider: Option<String>,
    /// Address to bind the endpoint to, for providers whose addresses are IP addresses
    /// (the address this rank reaches the bootstrap root from).
    pub bind_ip: Option<IpAddr>,
}

impl FabricConfig {
    /// `OXCCL_FABRIC_PROVIDER` from the environment, and `bind_ip`.
    pub fn from_env(bind_ip: IpAddr) -> FabricConfig {
        FabricConfig {
            provider: crate::config::vars::text("OXCCL_FABRIC_PROVIDER")
                .ok()
                .flatten(),
            bind_ip: Some(bind_ip),
        }
    }
}

/// The fabric backend. One instance (one endpoint) per rank, driven from one thread at a
/// time. Dropping it tells connected peers, then closes every libfabric object.
pub struct FabricTransport {
    ep: Endpoint,
    device: DeviceProps,
    handle: ConnectHandle,
    addr_format: u32,
    peers: Vec<Peer>,
    peer_by_name: HashMap<Vec<u8>, u32>,
    sends: Slab<SendConn>,
    recvs: Slab<RecvConn>,
    listening: Option<u32>,
    listeners: u32,
    accepted: VecDeque<Id>,
    /// Boxed: the provider holds their addresses while the vector grows.
    #[allow(clippy::vec_box)]
    ctxs: Vec<Box<Ctx>>,
    free_ctx: Vec<u32>,
    tx_buf: Vec<u8>,
    tx_desc: *mut c_void,
    tx_free: Vec<u32>,
    /// Messages not yet accepted by the provider, oldest first.
    backlog: VecDeque<Out>,
    rx_buf: Vec<u8>,
    rx_desc: *mut c_void,
    /// Receive buffers to post again (the provider said `-FI_EAGAIN`).
    rx_unposted: Vec<u32>,
    /// Sends whose write is to be posted again.
    retry: Vec<(Id, u64)>,
}

// SAFETY: every raw pointer (libfabric objects, descriptors, callers' buffers) is used only
// by the thread currently driving the transport; libfabric is opened with
// FI_THREAD_DOMAIN, which allows that.
unsafe impl Send for FabricTransport {}

/// A listener of a [`FabricTransport`] (its endpoint accepts while it is open).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FabricListen(u32);

/// A connection attempt of a [`FabricTransport`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FabricConnecting(Id);

/// The sending end of a connection of a [`FabricTransport`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FabricSendConn(Id);

/// The receiving end of a connection of a [`FabricTransport`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FabricRecvConn(Id);

/// A posted send or receive: its connection end and sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FabricRequest {
    send: bool,
    conn: Id,
    seq: u64,
}

/// A remote endpoint in the address vector.
struct Peer {
    addr: sys::fi_addr_t,
    name: String,
    /// Process id of a shm peer.
    pid: Option<i32>,
    failed: Option<Error>,
    /// The peer said `Bye` (an orderly close): nothing more is sent to it.
    gone: Option<Error>,
    last_probe: Option<Instant>,
    /// When the probe not yet completed was queued.
    probe_out: Option<Instant>,
}

/// A message waiting for the provider: in a bounce slot, or (no slot free) owned here.
struct Out {
    peer: u32,
    slot: Option<u32>,
    bytes: Vec<u8>,
    len: usize,
}

/// What a completion context stands for.
#[derive(Debug, Clone, Copy)]
enum Op {
    Free,
    Rx(u32),
    Tx { slot: u32, peer: u32, ping: bool },
    Write { conn: Id, seq: u64, peer: u32 },
}

/// A completion context: starts with room for the provider's `fi_context2` (the
/// `FI_CONTEXT`/`FI_CONTEXT2` modes), boxed so that its address is stable.
#[repr(C)]
struct Ctx {
    provider_space: [usize; 8],
    op: Op,
    index: u32,
}

impl FabricTransport {
    /// Chooses a provider (see [`FabricConfig`]) and opens an endpoint on it.
    pub fn new(cfg: FabricConfig) -> Result<FabricTransport> {
        let chosen = device::choose(cfg.provider.as_deref(), cfg.bind_ip)?;
        if chosen.mr(bindings::FI_MR_RAW) {
            return Err(Error::system(format!(
                "fabric({}): the provider needs raw memory keys (FI_MR_RAW), which oxccl does \
                 not support",
                chosen.provider
            )));
        }
        let device = device::props(&chosen);
        // SAFETY: the info is valid while `chosen` lives.
        let addr_format = unsafe { (*chosen.info).addr_format };
        let mut ep = Endpoint::open(chosen)?;
        let handle = listen::encode_handle(&ep.chosen.provider, &ep.name)?;
        let mut tx_buf = vec![0u8; TX_SLOTS * MSG_BYTES];
        let mut rx_buf = vec![0u8; RX_SLOTS * MSG_BYTES];
        let tx_desc = ep.register_local(&mut tx_buf)?;
        let rx_desc = ep.register_local(&mut rx_buf)?;
        let mut t = FabricTransport {
            ep,
            device,
            handle,
            addr_format,
            peers: Vec::new(),
            peer_by_name: HashMap::new(),
            sends: Slab::new(),
            recvs: Slab::new(),
            listening: None,
            listeners: 0,
            accepted: VecDeque::new(),
            ctxs: Vec::new(),
            free_ctx: Vec::new(),
            tx_buf,
            tx_desc,
            tx_free: (0..TX_SLOTS as u32).rev().collect(),
            backlog: VecDeque::new(),
            rx_buf,
            rx_desc,
            rx_unposted: (0..RX_SLOTS as u32).collect(),
            retry: Vec::new(),
        };
        t.post_receives()?;
        Ok(t)
    }

    /// Whether libfabric can be loaded here (`Err` says why not).
    pub fn available() -> Result<()> {
        sys::lib().map(|_| ())
    }

    /// The provider in use, as libfabric names it (`tcp;ofi_rxm`, `shm`, ...).
    pub fn provider(&self) -> &str {
        &self.ep.chosen.provider
    }

    fn prov_err(&self, kind: ErrorKind, what: String) -> Error {
        Error::new(kind, format!("fabric({}): {what}", self.ep.chosen.provider))
    }

    fn test_send(&mut self, id: Id, seq: u64) -> Result<Option<Completion>> {
        let c = self
            .sends
            .get_mut(id)
            .ok_or_else(|| listen::stale("send connection"))?;
        let op = c.ops.get_mut(seq).ok_or_else(|| not_pending(seq))?;
        if let Some(e) = op.error.take() {
            return Err(e);
        }
        // A receiver that closed holding this message makes the send complete: its own
        // completion may come after the close (shm completes a write once the receiver
        // answers) or never (the receiver's process may be gone).
        if op.state == SendState::Done || seq < c.delivered {
            let (len, tag) = (op.len, op.tag);
            if let Some(m) = c.ops.remove(seq).and_then(|op| op.mr) {
                self.ep.release(m);
            }
            return Ok(Some(Completion { bytes: len, tag }));
        }
        match self.send_failure(id) {
            Some(e) => Err(e),
            None => Ok(None),
        }
    }

    fn test_recv(&mut self, id: Id, seq: u64) -> Result<Option<Completion>> {
        let c = self
            .recvs
            .get_mut(id)
            .ok_or_else(|| listen::stale("receive connection"))?;
        let peer = c.peer;
        let closed = c.closed_at.is_some_and(|n| seq >= n);
        let failed = c.failed.clone();
        let op = c.ops.get_mut(seq).ok_or_else(|| not_pending(seq))?;
        if let Some(e) = op.error.take() {
            return Err(e);
        }
        if op.done() {
            let (tag, len) = op.hdr.map(|(t, l, _)| (t, l)).unwrap_or_default();
            if let Some(m) = c.ops.remove(seq).and_then(|op| op.mr) {
                self.ep.release(m);
            }
            return Ok(Some(Completion { bytes: len, tag }));
        }
        if let Some(e) = failed.or_else(|| self.peer_failed(peer)) {
            return Err(e);
        }
        if closed {
            return Err(self.prov_err(
                ErrorKind::Remote,
                format!(
                    "peer {} closed the connection before sending message #{seq}",
                    self.peers[peer as usize].name
                ),
            ));
        }
        Ok(None)
    }
}

fn not_pending(seq: u64) -> Error {
    Error::invalid_usage(format!(
        "fabric: request #{seq} is not pending (tested again after it was reported complete?)"
    ))
}

impl Transport for FabricTransport {
    type Listener = FabricListen;
    type Connecting = FabricConnecting;
    type SendConn = FabricSendConn;
    type RecvConn = FabricRecvConn;
    type MemRegion = ();
    type Request = FabricRequest;

    fn shared_locks(&self) -> Option<&'static str> {
        // libfabric 1.17's shm provider guards each process's region with a spinlock that
        // peers take to write into it.
        let shm = self.ep.chosen.provider.split(';').any(|p| p == "shm");
        shm.then_some("libfabric's shm provider, whose locks live in memory shared with the peers")
    }

    fn name(&self) -> &'static str {
        "fabric"
    }

    fn devices(&self) -> Result<Vec<DeviceProps>> {
        Ok(vec![self.device.clone()])
    }

    fn listen(&mut self, dev: usize) -> Result<(ConnectHandle, FabricListen)> {
        self.check_dev(dev)?;
        self.do_listen()
    }

    fn connect(&mut self, dev: usize, handle: &ConnectHandle) -> Result<FabricConnecting> {
        self.check_dev(dev)?;
        self.do_connect(handle)
    }

    fn poll_connect(&mut self, pending: &mut FabricConnecting) -> Result<Option<FabricSendConn>> {
        self.do_poll_connect(pending)
    }

    fn accept(&mut self, listener: &mut FabricListen) -> Result<Option<FabricRecvConn>> {
        self.do_accept(listener)
    }

    /// Registration is done inside the backend, on first use of a buffer in a call, since
    /// the engine hands plain pointers to `isend`/`irecv`.
    fn register(&mut self, _ptr: *const u8, _len: usize) -> Result<()> {
        Ok(())
    }

    /// Called for each of the call's buffers when the call ends: its registrations close.
    fn deregister(&mut self, _region: ()) -> Result<()> {
        self.ep.drop_unused();
        Ok(())
    }

    unsafe fn isend(
        &mut self,
        conn: &mut FabricSendConn,
        data: *const u8,
        len: usize,
        tag: Tag,
        _region: Option<&()>,
    ) -> Result<Option<FabricRequest>> {
        crate::transport::check_buffer("fabric", true, data.is_null(), len)?;
        let id = conn.0;
        if let Some(e) = self.send_failure(id) {
            return Err(e);
        }
        let max = self.ep.chosen.max_msg_size;
        if len > max {
            return Err(Error::invalid_argument(format!(
                "fabric({}): message of {len} bytes exceeds the provider's limit of {max}",
                self.ep.chosen.provider
            )));
        }
        let eager = len <= EAGER_MAX;
        if eager && self.tx_free.is_empty() {
            self.progress()?;
            if self.tx_free.is_empty() {
                return Ok(None);
            }
        }
        let c = self
            .sends
            .get_mut(id)
            .ok_or_else(|| listen::stale("send connection"))?;
        let (peer, remote) = (c.peer, c.remote.unwrap_or(0));
        let Some(seq) = c.ops.post(SendOp {
            data,
            len,
            tag,
            state: if eager {
                SendState::Done
            } else {
                SendState::WaitCts
            },
            mr: None,
            error: None,
        }) else {
            return Ok(None);
        };
        // A descriptor for this request may have come already; an eager send discards it.
        let early = c.cts.iter().position(|&(s, _)| s == seq);
        let cts = early.map(|k| c.cts.swap_remove(k).1);
        let mut h = Header::new(if eager { Kind::Eager } else { Kind::Rhdr }, remote);
        h.seq = seq;
        h.len = len as u64;
        h.w = tag;
        let payload: &[u8] = if eager && len > 0 {
            // SAFETY: isend's contract: `data..data+len` is readable.
            unsafe { std::slice::from_raw_parts(data, len) }
        } else {
            &[]
        };
        self.queue(peer, &h, payload)?;
        if let (false, Some(cts)) = (eager, cts) {
            if let Some(op) = self.sends.get_mut(id).and_then(|c| c.ops.get_mut(seq)) {
                op.state = SendState::Ready(cts);
            }
            self.post_write(id, seq);
        }
        Ok(Some(FabricRequest {
            send: true,
            conn: id,
            seq,
        }))
    }

    unsafe fn irecv(
        &mut self,
        conn: &mut FabricRecvConn,
        data: *mut u8,
        len: usize,
        _region: Option<&()>,
    ) -> Result<Option<FabricRequest>> {
        crate::transport::check_buffer("fabric", false, data.is_null(), len)?;
        let id = conn.0;
        let rndv = len > EAGER_MAX;
        // The buffer is exposed to the peer's write before the peer learns of it.
        let mr = if rndv {
            Some(self.ep.acquire(data, len)?)
        } else {
            None
        };
        let c = self
            .recvs
            .get_mut(id)
            .ok_or_else(|| listen::stale("receive connection"))?;
        if let Some(e) = c.failed.clone() {
            return Err(e);
        }
        let (peer, remote) = (c.peer, c.remote);
        let Some(seq) = c.ops.post(RecvOp {
            data,
            cap: len,
            hdr: None,
            rndv,
            written: false,
            mr: mr.map(|u| u.id),
            error: None,
        }) else {
            if let Some(u) = mr {
                self.ep.release(u.id);
            }
            return Ok(None);
        };
        if let Some(k) = c.early.iter().position(|e| e.seq == seq) {
            let e = c.early.swap_remove(k);
            if let Some(op) = c.ops.get_mut(seq) {
                fill(op, e.tag, e.len, e.payload.as_deref(), e.payload.is_none());
            }
        }
        if let Some(u) = mr {
            let mut h = Header::new(Kind::Cts, remote);
            h.seq = seq;
            h.len = len as u64;
            h.w = [u.remote_addr, u.key, 0];
            self.queue(peer, &h, &[])?;
        }
        Ok(Some(FabricRequest {
            send: false,
            conn: id,
            seq,
        }))
    }

    fn test(&mut self, request: &mut FabricRequest) -> Result<Option<Completion>> {
        let r = *request;
        let first = if r.send {
            self.test_send(r.conn, r.seq)?
        } else {
            self.test_recv(r.conn, r.seq)?
        };
        if first.is_some() {
            return Ok(first);
        }
        if !self.progress()? {
            return Ok(None);
        }
        if r.send {
            self.test_send(r.conn, r.seq)
        } else {
            self.test_recv(r.conn, r.seq)
        }
    }

    /// Reads the completion queue; if nothing happened, sleeps in `fi_cq_sread` (or, for
    /// providers without a wait object, briefly) for at most `timeout`. Also probes idle
    /// peers with outstanding work.
    fn wait_activity(&mut self, timeout: Duration) -> Result<()> {
        self.probe_peers();
        if self.progress()? {
            return Ok(());
        }
        if !self.backlog.is_empty() || !self.retry.is_empty() {
            std::thread::yield_now();
            return Ok(());
        }
        if !self.ep.cq_wait {
            // Poll with short sleeps, so that ranks sharing cores leave them to each other.
            let t0 = Instant::now();
            while t0.elapsed() < timeout {
                std::thread::sleep(POLL_SLEEP.min(timeout));
                if self.progress()? {
                    break;
                }
            }
            return Ok(());
        }
        let ms = timeout.as_millis().clamp(1, 1000) as i32;
        // SAFETY: as in `progress`.
        let mut buf: [sys::fi_cq_data_entry; CQ_BATCH] = unsafe { std::mem::zeroed() };
        let n = self.ep.sread(&mut buf, ms);
        if n > 0 {
            for e in &buf[..n as usize] {
                self.on_completion(e)?;
            }
        } else if n == -(bindings::FI_EAVAIL as isize) {
            self.on_error()?;
        } else if n != EAGAIN
            && n != -(bindings::FI_ETIMEDOUT as isize)
            && n != -(libc::EINTR as isize)
        {
            // A provider whose wait object cannot be used this way: poll from now on.
            self.ep.cq_wait = false;
        }
        Ok(())
    }

    /// A failed peer is an error; one that closed in order (it finished and left) is an
    /// error only while this connection still has sends for it.
    fn check_send(&mut self, conn: &mut FabricSendConn) -> Result<()> {
        let c = self
            .sends
            .get(conn.0)
            .ok_or_else(|| listen::stale("send connection"))?;
        let (peer, busy, failed) = (c.peer, c.ops.unreported() > 0, c.failed.clone());
        self.probe(peer);
        let hard = failed.or_else(|| self.peers.get(peer as usize).and_then(|p| p.failed.clone()));
        if let Some(e) = hard {
            return Err(e);
        }
        if busy {
            if let Some(e) = self.send_failure(conn.0) {
                return Err(e);
            }
        }
        Ok(())
    }

    fn confirm_send(&mut self, conn: &mut FabricSendConn) -> Result<()> {
        if let Some(peer) = self.sends.get(conn.0).map(|c| c.peer) {
            self.check_process(peer);
        }
        self.check_send(conn)
    }

    fn confirm_recv(&mut self, conn: &mut FabricRecvConn) -> Result<()> {
        let c = self
            .recvs
            .get(conn.0)
            .ok_or_else(|| listen::stale("receive connection"))?;
        let (peer, failed) = (c.peer, c.failed.clone());
        self.check_process(peer);
        match failed.or_else(|| self.peers.get(peer as usize).and_then(|p| p.failed.clone())) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn close_send(&mut self, conn: FabricSendConn) -> Result<()> {
        let c = self
            .sends
            .remove(conn.0)
            .ok_or_else(|| listen::stale("send connection"))?;
        if let Some(remote) = c.remote {
            let mut h = Header::new(Kind::CloseToRecv, remote);
            h.seq = c.ops.next();
            self.say_close(c.peer, h);
        }
        let mut ops = c.ops;
        for (_, op) in ops.iter_mut() {
            if let Some(m) = op.mr.take() {
                self.ep.release(m);
            }
        }
        Ok(())
    }

    fn close_recv(&mut self, conn: FabricRecvConn) -> Result<()> {
        let mut c = self
            .recvs
            .remove(conn.0)
            .ok_or_else(|| listen::stale("receive connection"))?;
        // Tell the sender how many messages arrived whole, so that its sends of those
        // complete even when their own completions come after this `Close`.
        let next = c.ops.next();
        let mut h = Header::new(Kind::CloseToSend, c.remote);
        h.seq = (c.ops.iter_mut())
            .filter(|(_, op)| !op.done())
            .map(|(seq, _)| seq)
            .min()
            .unwrap_or(next);
        self.say_close(c.peer, h);
        let mut ops = c.ops;
        for (_, op) in ops.iter_mut() {
            if let Some(m) = op.mr.take() {
                // The buffer was offered to the peer's write: make sure no write can land
                // in it once the caller has it back.
                if op.rndv && !op.written {
                    self.ep.revoke(m);
                } else {
                    self.ep.release(m);
                }
            }
        }
        Ok(())
    }

    fn close_listen(&mut self, listener: FabricListen) -> Result<()> {
        self.do_close_listen(listener)
    }
}

impl FabricTransport {
    fn check_dev(&self, dev: usize) -> Result<()> {
        if dev == 0 {
            Ok(())
        } else {
            Err(Error::invalid_argument(format!(
                "fabric: device {dev} does not exist (one endpoint per rank: {})",
                self.device.name
            )))
        }
    }
}
