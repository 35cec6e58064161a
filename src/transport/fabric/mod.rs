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
//! * `conn.rs`: the wire header and each connection end's requests.
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
    clippy::all
)]
mod bindings;
mod conn;
mod device;
mod endpoint;
mod listen;
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
use crate::error::{Error, ErrorKind, Result};
use crate::transport::{Completion, ConnectHandle, DeviceProps, Tag, Transport};

/// Bounce buffers for outgoing messages (control and eager data).
const TX_SLOTS: usize = 64;
/// Receive buffers kept posted for incoming messages.
const RX_SLOTS: usize = 64;
/// Longest endpoint address accepted from a peer.
const MAX_ADDR: usize = 256;
/// A peer whose probe the provider has not sent for this long is unreachable.
const PROBE_DEADLINE: Duration = Duration::from_secs(3);
/// Least time between two liveness probes of one peer.
const PROBE_EVERY: Duration = Duration::from_millis(100);
/// Sleep between polls of a completion queue without a wait object.
const POLL_SLEEP: Duration = Duration::from_micros(50);
/// Completions read per `fi_cq_read`.
const CQ_BATCH: usize = 16;
/// Longest wait for queued messages (`Close`) to leave when the transport is dropped.
const FLUSH_ON_DROP: Duration = Duration::from_millis(500);
/// On `verbs;ofi_rxm`, longest wait of a dropped transport for its peers' `Bye`s (see
/// [`FabricTransport::drain_before_close`]).
const RXM_BYE_WAIT: Duration = Duration::from_secs(2);
/// On `verbs;ofi_rxm`, how long the completion queue must stay empty before the endpoint
/// of a dropped transport is closed.
const RXM_QUIET: Duration = Duration::from_millis(50);

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
            provider: std::env::var("OXCCL_FABRIC_PROVIDER")
                .ok()
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty()),
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

    fn alloc_ctx(&mut self, op: Op) -> *mut c_void {
        let i = match self.free_ctx.pop() {
            Some(i) => i,
            None => {
                let i = self.ctxs.len() as u32;
                self.ctxs.push(Box::new(Ctx {
                    provider_space: [0; 8],
                    op: Op::Free,
                    index: i,
                }));
                i
            }
        };
        let c = &mut self.ctxs[i as usize];
        c.op = op;
        (&mut **c as *mut Ctx).cast()
    }

    /// The op of a context handed back by a completion, freeing the context.
    fn take_ctx(&mut self, p: *mut c_void) -> Op {
        if p.is_null() {
            return Op::Free;
        }
        // SAFETY: non-null contexts in our completions are the boxed `Ctx`s handed out by
        // `alloc_ctx`, which live as long as the transport.
        let index = unsafe { (*(p as *const Ctx)).index };
        match self.ctxs.get_mut(index as usize) {
            Some(c) if std::ptr::eq(&**c, p as *const Ctx) => {
                let op = std::mem::replace(&mut c.op, Op::Free);
                if !matches!(op, Op::Free) {
                    self.free_ctx.push(index);
                }
                op
            }
            _ => Op::Free,
        }
    }

    fn release_ctx(&mut self, p: *mut c_void) {
        let _ = self.take_ctx(p);
    }

    fn post_receives(&mut self) -> Result<()> {
        while let Some(i) = self.rx_unposted.pop() {
            let ctx = self.alloc_ctx(Op::Rx(i));
            // SAFETY: slot `i` of rx_buf is ours until its completion; the context is live.
            let rc = unsafe {
                let buf = self.rx_buf.as_mut_ptr().add(i as usize * MSG_BYTES);
                self.ep.recv(buf, MSG_BYTES, self.rx_desc, ctx)
            };
            if rc != 0 {
                self.release_ctx(ctx);
                self.rx_unposted.push(i);
                if rc == EAGAIN {
                    return Ok(());
                }
                return Err(self.prov_err(
                    ErrorKind::System,
                    format!("posting a receive: {}", self.ep.strerror(rc as i64)),
                ));
            }
        }
        Ok(())
    }

    /// Queues a message `h` + `payload` to `peer` and tries to post it.
    fn queue(&mut self, peer: u32, h: &Header, payload: &[u8]) -> Result<()> {
        let len = HDR + payload.len();
        let out = match self.tx_free.pop() {
            Some(slot) => {
                let b = &mut self.tx_buf[slot as usize * MSG_BYTES..][..len];
                h.encode(b);
                b[HDR..].copy_from_slice(payload);
                Out {
                    peer,
                    slot: Some(slot),
                    bytes: Vec::new(),
                    len,
                }
            }
            None => {
                let mut bytes = vec![0u8; len];
                h.encode(&mut bytes);
                bytes[HDR..].copy_from_slice(payload);
                Out {
                    peer,
                    slot: None,
                    bytes,
                    len,
                }
            }
        };
        self.backlog.push_back(out);
        self.flush_backlog()?;
        Ok(())
    }

    /// Posts queued messages in order until the provider pushes back; true if any left.
    fn flush_backlog(&mut self) -> Result<bool> {
        let mut moved = false;
        while let Some(out) = self.backlog.front_mut() {
            let slot = match out.slot {
                Some(s) => s,
                None => {
                    let Some(s) = self.tx_free.pop() else { break };
                    self.tx_buf[s as usize * MSG_BYTES..][..out.len].copy_from_slice(&out.bytes);
                    out.slot = Some(s);
                    out.bytes = Vec::new();
                    s
                }
            };
            let (peer, len) = (out.peer, out.len);
            let Some(p) = self.peers.get(peer as usize) else {
                self.backlog.pop_front();
                continue;
            };
            if p.failed.is_some() || p.gone.is_some() {
                self.backlog.pop_front();
                self.tx_free.push(slot);
                continue;
            }
            let dest = p.addr;
            let ping = self.tx_buf[slot as usize * MSG_BYTES + 4] == Kind::Ping as u8;
            let ctx = self.alloc_ctx(Op::Tx { slot, peer, ping });
            // SAFETY: the slot is ours until the send completes; the context is live.
            let rc = unsafe {
                let buf = self.tx_buf.as_ptr().add(slot as usize * MSG_BYTES);
                self.ep.send(buf, len, self.tx_desc, dest, ctx)
            };
            if rc == EAGAIN {
                self.release_ctx(ctx);
                break;
            }
            self.backlog.pop_front();
            moved = true;
            if rc != 0 {
                self.release_ctx(ctx);
                self.tx_free.push(slot);
                let what = format!(
                    "sending to {}: {}",
                    self.peers[peer as usize].name,
                    self.ep.strerror(rc as i64)
                );
                self.fail_peer(peer, what);
            }
        }
        Ok(moved)
    }

    /// Marks `peer` failed: every connection with it fails with a Remote error.
    fn fail_peer(&mut self, peer: u32, what: String) {
        let e = self.prov_err(ErrorKind::Remote, format!("peer {what}"));
        if let Some(p) = self.peers.get_mut(peer as usize) {
            p.failed.get_or_insert(e);
        }
    }

    /// Why requests with `peer` cannot finish: it failed or closed its endpoint.
    fn peer_failed(&self, peer: u32) -> Option<Error> {
        let p = self.peers.get(peer as usize)?;
        p.failed.clone().or_else(|| p.gone.clone())
    }

    /// Reads the completion queue and posts what waits; true if anything happened.
    fn progress(&mut self) -> Result<bool> {
        let mut moved = false;
        // SAFETY: completion entries are plain data; zero is a valid value.
        let mut buf: [sys::fi_cq_data_entry; CQ_BATCH] = unsafe { std::mem::zeroed() };
        loop {
            let n = self.ep.read(&mut buf);
            if n > 0 {
                moved = true;
                for e in &buf[..n as usize] {
                    self.on_completion(e)?;
                }
                if (n as usize) < CQ_BATCH {
                    break;
                }
            } else if n == EAGAIN {
                break;
            } else if n == -(bindings::FI_EAVAIL as isize) {
                moved = true;
                self.on_error()?;
            } else {
                return Err(self.prov_err(
                    ErrorKind::System,
                    format!(
                        "reading the completion queue: {}",
                        self.ep.strerror(n as i64)
                    ),
                ));
            }
        }
        if !self.backlog.is_empty() {
            moved |= self.flush_backlog()?;
        }
        if !self.retry.is_empty() {
            for (id, seq) in std::mem::take(&mut self.retry) {
                self.post_write(id, seq);
            }
        }
        if !self.rx_unposted.is_empty() {
            self.post_receives()?;
        }
        Ok(moved)
    }

    fn on_completion(&mut self, e: &sys::fi_cq_data_entry) -> Result<()> {
        if e.flags & u64::from(bindings::FI_REMOTE_WRITE) != 0 {
            if e.flags & u64::from(bindings::FI_REMOTE_CQ_DATA) != 0 {
                self.on_write_landed(e.data);
            }
            return Ok(());
        }
        match self.take_ctx(e.op_context) {
            Op::Free => {}
            Op::Rx(i) => {
                let len = e.len.min(MSG_BYTES);
                self.on_message(i, len)?;
                self.rx_unposted.push(i);
                self.post_receives()?;
            }
            Op::Tx { slot, peer, ping } => {
                self.tx_free.push(slot);
                if ping {
                    if let Some(p) = self.peers.get_mut(peer as usize) {
                        p.probe_out = None;
                    }
                }
            }
            Op::Write { conn, seq, .. } => {
                if let Some(c) = self.sends.get_mut(conn) {
                    if let Some(op) = c.ops.get_mut(seq) {
                        op.state = SendState::Done;
                    }
                }
            }
        }
        Ok(())
    }

    fn on_error(&mut self) -> Result<()> {
        let Some(e) = self.ep.read_err() else {
            return Ok(());
        };
        let canceled = e.err == bindings::FI_ECANCELED as i32;
        let why = self.ep.strerror(i64::from(e.err));
        match self.take_ctx(e.op_context) {
            Op::Free => {}
            Op::Rx(i) => {
                self.rx_unposted.push(i);
                if !canceled {
                    // A message that did not fit a bounce buffer: not from an oxccl peer.
                    self.post_receives()?;
                }
            }
            Op::Tx { slot, peer, .. } => {
                self.tx_free.push(slot);
                if !canceled {
                    let what = format!(
                        "{}: a message failed: {why}",
                        self.peers[peer as usize].name
                    );
                    self.fail_peer(peer, what);
                }
            }
            Op::Write { conn, seq, peer } => {
                let what = format!(
                    "{}: an RMA write failed: {why}",
                    self.peers[peer as usize].name
                );
                let err = self.prov_err(ErrorKind::Remote, format!("peer {what}"));
                if let Some(c) = self.sends.get_mut(conn) {
                    if let Some(op) = c.ops.get_mut(seq) {
                        op.error = Some(err);
                    }
                }
                if !canceled {
                    self.fail_peer(peer, what);
                }
            }
        }
        Ok(())
    }

    /// A message in receive buffer `i`, `len` bytes long.
    fn on_message(&mut self, i: u32, len: usize) -> Result<()> {
        let start = i as usize * MSG_BYTES;
        let Some(h) = Header::decode(&self.rx_buf[start..start + len]) else {
            return Ok(()); // not one of ours
        };
        let payload_len = len - HDR;
        match h.kind {
            Kind::Connect => {
                let p = self.rx_buf[start + HDR..start + len].to_vec();
                self.on_connect(&h, &p)?;
            }
            Kind::Accept => self.on_accept(&h),
            Kind::Eager | Kind::Rhdr => {
                let rma = h.kind == Kind::Rhdr;
                if !rma && h.len as usize != payload_len {
                    return Ok(());
                }
                self.on_data(&h, i, rma);
            }
            Kind::Cts => self.on_cts(&h),
            Kind::CloseToSend => {
                let e = self.prov_err(ErrorKind::Remote, "the peer closed the connection".into());
                if let Some(c) = self.sends.get_mut(Id::unpack(h.dst)) {
                    c.closed.get_or_insert(e);
                }
            }
            Kind::CloseToRecv => {
                if let Some(c) = self.recvs.get_mut(Id::unpack(h.dst)) {
                    c.closed_at.get_or_insert(h.seq);
                }
            }
            Kind::Ping => {}
            Kind::Bye => {
                if let Some(&p) = self
                    .peer_by_name
                    .get(&self.rx_buf[start + HDR..start + len])
                {
                    let what = format!("peer {}: closed its endpoint", self.peers[p as usize].name);
                    let e = self.prov_err(ErrorKind::Remote, what);
                    self.peers[p as usize].gone.get_or_insert(e);
                }
            }
        }
        Ok(())
    }

    /// Data (eager payload in receive buffer `slot`, or an RMA header) for a receiving end.
    fn on_data(&mut self, h: &Header, slot: u32, rma: bool) {
        let id = Id::unpack(h.dst);
        let Some(c) = self.recvs.get_mut(id) else {
            return;
        };
        let (len, tag) = (h.len as usize, h.w);
        let start = slot as usize * MSG_BYTES + HDR;
        match c.ops.get_mut(h.seq) {
            Some(op) => {
                let payload = (!rma).then(|| &self.rx_buf[start..start + len]);
                fill(op, tag, len, payload, rma);
            }
            None => {
                let payload = (!rma).then(|| self.rx_buf[start..start + len].to_vec());
                c.early.push(Early {
                    seq: h.seq,
                    tag,
                    len,
                    payload,
                });
            }
        }
    }

    /// A receiver's buffer descriptor for send `h.seq`.
    fn on_cts(&mut self, h: &Header) {
        let id = Id::unpack(h.dst);
        let Some(c) = self.sends.get_mut(id) else {
            return;
        };
        let cts = Cts {
            addr: h.w[0],
            key: h.w[1],
            cap: h.len,
        };
        if h.seq >= c.ops.next {
            c.cts.push((h.seq, cts));
            return;
        }
        if let Some(op) = c.ops.get_mut(h.seq) {
            if op.state == SendState::WaitCts {
                op.state = SendState::Ready(cts);
                self.post_write(id, h.seq);
            }
        }
    }

    /// Posts the write of send `seq` on `id` if its descriptor is known.
    fn post_write(&mut self, id: Id, seq: u64) {
        let Some(c) = self.sends.get_mut(id) else {
            return;
        };
        let (peer, remote) = (c.peer, c.remote.unwrap_or(0));
        let Some(op) = c.ops.get_mut(seq) else {
            return;
        };
        let SendState::Ready(cts) = op.state else {
            return;
        };
        if op.len as u64 > cts.cap {
            op.error = Some(Error::invalid_usage(format!(
                "fabric: message of {} bytes exceeds the peer's receive buffer of {} bytes",
                op.len, cts.cap
            )));
            return;
        }
        let (data, len) = (op.data, op.len);
        let Some(p) = self.peers.get(peer as usize) else {
            return;
        };
        let dest = p.addr;
        let desc = match self.local_desc(id, seq) {
            Ok(d) => d,
            Err(e) => {
                if let Some(op) = self.sends.get_mut(id).and_then(|c| c.ops.get_mut(seq)) {
                    op.error = Some(e);
                }
                return;
            }
        };
        let ctx = self.alloc_ctx(Op::Write {
            conn: id,
            seq,
            peer,
        });
        let data_imm = imm(Id::unpack(remote).index, seq);
        // SAFETY: `data..data+len` is valid until the send is reported (isend's contract);
        // the descriptor names a registration of the peer of at least `len` bytes.
        let rc = unsafe {
            self.ep
                .writedata(data, len, desc, data_imm, dest, cts.addr, cts.key, ctx)
        };
        let failed = (rc != 0 && rc != EAGAIN).then(|| self.ep.strerror(rc as i64));
        if rc != 0 {
            self.release_ctx(ctx);
        }
        let Some(op) = self.sends.get_mut(id).and_then(|c| c.ops.get_mut(seq)) else {
            return;
        };
        if rc == 0 {
            op.state = SendState::Writing;
        } else if rc == EAGAIN {
            self.retry.push((id, seq));
        } else {
            op.error = Some(Error::system(format!(
                "fabric: posting an RMA write of {len} bytes: {}",
                failed.unwrap_or_default()
            )));
        }
    }

    /// The local descriptor of send `seq`'s buffer where `FI_MR_LOCAL` needs one.
    fn local_desc(&mut self, id: Id, seq: u64) -> Result<*mut c_void> {
        if !self.ep.chosen.mr(bindings::FI_MR_LOCAL) {
            return Ok(std::ptr::null_mut());
        }
        let Some(op) = self.sends.get_mut(id).and_then(|c| c.ops.get_mut(seq)) else {
            return Ok(std::ptr::null_mut());
        };
        let (data, len, had) = (op.data, op.len, op.mr);
        if let Some(m) = had {
            self.ep.release(m);
        }
        let u = self.ep.acquire(data, len)?;
        if let Some(op) = self.sends.get_mut(id).and_then(|c| c.ops.get_mut(seq)) {
            op.mr = Some(u.id);
        }
        Ok(u.desc)
    }

    /// An RMA write with immediate data `data` landed.
    fn on_write_landed(&mut self, data: u64) {
        let (index, low) = split_imm(data);
        if let Some((_, c)) = self.recvs.at_mut(index) {
            if let Some((_, op)) = c.ops.find_low(low) {
                if op.rndv {
                    op.written = true;
                }
            }
        }
    }

    /// Sends probes to peers with outstanding work that were not probed lately, and checks
    /// whether shm peers' processes still exist.
    fn probe_peers(&mut self) {
        let mut busy = vec![false; self.peers.len()];
        for (_, c) in self.sends.iter() {
            if c.ops.busy() || c.remote.is_none() {
                busy[c.peer as usize] = true;
            }
        }
        for (_, c) in self.recvs.iter() {
            if c.ops.busy() {
                busy[c.peer as usize] = true;
            }
        }
        for (p, b) in busy.into_iter().enumerate() {
            if b {
                self.probe(p as u32);
            }
        }
    }

    fn probe(&mut self, peer: u32) {
        let Some(p) = self.peers.get_mut(peer as usize) else {
            return;
        };
        if p.failed.is_some()
            || p.gone.is_some()
            || p.last_probe.is_some_and(|t| t.elapsed() < PROBE_EVERY)
        {
            return;
        }
        if let Some(t0) = p.probe_out {
            // A probe the provider has not sent for this long: the peer is unreachable
            // (tcp;ofi_rxm retries a refused connection forever instead of failing sends).
            if t0.elapsed() > PROBE_DEADLINE {
                let what = format!(
                    "{}: unreachable (a probe message was not sent within {}s)",
                    p.name,
                    PROBE_DEADLINE.as_secs()
                );
                self.fail_peer(peer, what);
            }
            return;
        }
        p.last_probe = Some(Instant::now());
        if self.check_process(peer) {
            return;
        }
        let Some(p) = self.peers.get_mut(peer as usize) else {
            return;
        };
        p.probe_out = Some(Instant::now());
        let _ = self.queue(peer, &Header::new(Kind::Ping, 0), &[]);
    }

    /// Whether the process of `peer`, when it runs on this host, has exited; if so, fails
    /// the peer. Cheap (one system call), so it ignores the probe's rate limit.
    fn check_process(&mut self, peer: u32) -> bool {
        let Some(p) = self.peers.get(peer as usize) else {
            return false;
        };
        let Some(pid) = p.pid else {
            return false;
        };
        if p.failed.is_some() || !process_gone(pid) {
            return false;
        }
        let what = format!("{}: process {pid} has exited", p.name);
        self.fail_peer(peer, what);
        true
    }

    /// The error a request fails with, if its connection or peer failed or closed.
    fn send_failure(&self, id: Id) -> Option<Error> {
        let c = self.sends.get(id)?;
        c.failed
            .clone()
            .or_else(|| c.closed.clone())
            .or_else(|| self.peer_failed(c.peer))
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
        if op.state == SendState::Done {
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

    /// Sends `Close` for a connection end to its peer (best effort).
    fn say_close(&mut self, peer: u32, h: Header) {
        if self.peer_failed(peer).is_none() {
            let _ = self.queue(peer, &h, &[]);
        }
    }
}

/// Applies a data header (and eager payload) to a posted receive.
fn fill(op: &mut RecvOp, tag: Tag, len: usize, payload: Option<&[u8]>, rma: bool) {
    if len > op.cap {
        op.error = Some(Error::invalid_usage(format!(
            "fabric: message of {len} bytes exceeds the receive buffer of {} bytes",
            op.cap
        )));
        return;
    }
    if rma && !op.rndv {
        op.error = Some(Error::internal(format!(
            "fabric: the peer wrote {len} bytes by RMA into a receive that offered no buffer"
        )));
        return;
    }
    if let Some(p) = payload {
        // SAFETY: `op.data` has `op.cap >= len` writable bytes reserved for this receive
        // (irecv's contract); `p` is our bounce buffer, which cannot overlap it.
        unsafe { std::ptr::copy_nonoverlapping(p.as_ptr(), op.data, len) };
    }
    op.hdr = Some((tag, len, rma));
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
        if data.is_null() && len > 0 {
            return Err(Error::invalid_argument(format!(
                "fabric: send of {len} bytes from a null pointer"
            )));
        }
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
        if data.is_null() && len > 0 {
            return Err(Error::invalid_argument(format!(
                "fabric: receive of {len} bytes into a null pointer"
            )));
        }
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
        let (peer, busy, failed) = (c.peer, c.ops.busy(), c.failed.clone());
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

    fn close_send(&mut self, conn: FabricSendConn) -> Result<()> {
        let c = self
            .sends
            .remove(conn.0)
            .ok_or_else(|| listen::stale("send connection"))?;
        if let Some(remote) = c.remote {
            let mut h = Header::new(Kind::CloseToRecv, remote);
            h.seq = c.ops.next;
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
        let c = self
            .recvs
            .remove(conn.0)
            .ok_or_else(|| listen::stale("receive connection"))?;
        self.say_close(c.peer, Header::new(Kind::CloseToSend, c.remote));
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

impl Drop for FabricTransport {
    /// Lets queued messages (the `Close`s of an orderly shutdown) leave before the
    /// endpoint closes, for a bounded time.
    fn drop(&mut self) {
        let name = self.ep.name.clone();
        for p in 0..self.peers.len() as u32 {
            if self.peer_failed(p).is_none() {
                let mut h = Header::new(Kind::Bye, 0);
                h.len = name.len() as u64;
                let _ = self.queue(p, &h, &name);
            }
        }
        let t0 = Instant::now();
        while (!self.backlog.is_empty() || self.tx_free.len() < TX_SLOTS)
            && t0.elapsed() < FLUSH_ON_DROP
        {
            match self.progress() {
                Ok(true) => {}
                Ok(false) => std::thread::yield_now(),
                Err(_) => break,
            }
        }
        if rxm_over_verbs(&self.ep.chosen.provider) {
            self.drain_before_close();
        }
        let me = i32::try_from(std::process::id()).ok();
        if self.peers.iter().any(|p| p.pid.is_some() && p.pid == me) {
            quarantine(self);
        }
    }
}

impl FabricTransport {
    /// Reads the completion queue until every live peer has said `Bye` and nothing has
    /// arrived for [`RXM_QUIET`], for at most [`RXM_BYE_WAIT`].
    ///
    /// libfabric's rxm (1.17 up to 2.6 at least) closes each connection's verbs endpoint
    /// before it drains the shared completion queue of those endpoints (`rxm_close_conn`),
    /// and a receive completion still queued there reposts its buffer on the freed endpoint:
    /// the process crashes in `fi_close` of the RDM endpoint. Peers' `Bye`s and rxm's own
    /// credit messages arriving just before the close are what is queued; reading them
    /// first leaves the queue empty. (tcp's rxm uses a shared receive context, where the
    /// repost is safe.)
    fn drain_before_close(&mut self) {
        let t0 = Instant::now();
        let mut last = Instant::now();
        while t0.elapsed() < RXM_BYE_WAIT {
            match self.progress() {
                Ok(true) => last = Instant::now(),
                Ok(false) => {
                    let waiting =
                        (0..self.peers.len() as u32).any(|p| self.peer_failed(p).is_none());
                    if !waiting && last.elapsed() >= RXM_QUIET {
                        return;
                    }
                    std::thread::sleep(POLL_SLEEP);
                }
                Err(_) => return,
            }
        }
    }
}

/// Whether `provider` is rxm over verbs (`verbs;ofi_rxm`).
fn rxm_over_verbs(provider: &str) -> bool {
    let parts: Vec<&str> = provider.split(';').collect();
    parts.contains(&"verbs") && parts.contains(&"ofi_rxm")
}

/// Endpoints of closed transports kept open for a while: libfabric 1.17's shm provider
/// hands an endpoint in the same process a pointer to its peer's region instead of a
/// mapping of its own, so a rank that sends to a closed in-process peer (its `Bye` not yet
/// read) would write to unmapped memory. Kept endpoints are never progressed; they are
/// closed once older than [`QUARANTINE`].
static KEPT: std::sync::Mutex<Vec<(Instant, Kept)>> = std::sync::Mutex::new(Vec::new());

/// How long a closed shm endpoint with in-process peers stays open.
const QUARANTINE: Duration = Duration::from_secs(10);

/// An endpoint and the buffers its posted operations point into.
struct Kept {
    _fids: endpoint::Detached,
    _bufs: (Vec<u8>, Vec<u8>),
}

fn quarantine(t: &mut FabricTransport) {
    let fids = t.ep.detach();
    let bufs = (std::mem::take(&mut t.tx_buf), std::mem::take(&mut t.rx_buf));
    let mut kept = KEPT.lock().unwrap_or_else(|p| p.into_inner());
    kept.retain(|(t0, _)| t0.elapsed() < QUARANTINE);
    kept.push((
        Instant::now(),
        Kept {
            _fids: fids,
            _bufs: bufs,
        },
    ));
}

/// Whether process `pid` on this host has exited: it no longer exists, or it is a zombie
/// its parent has not reaped yet (which `kill(pid, 0)` alone would report as alive).
fn process_gone(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    if unsafe { libc::kill(pid, 0) } != 0 {
        return std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
    }
    // The state follows the last ')' of /proc/<pid>/stat (the name may contain one).
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].trim_start().chars().next());
    matches!(state, Some('Z') | Some('X'))
}
