//! One connection to a peer: its queue pairs, completion queue and control block, and the
//! state of both directions (this rank's sends and receives share the queue pairs).
//!
//! Owns: posting work requests (eager writes, zero-copy parts, clear-to-send records),
//! polling the completion queue and turning completions into finished requests, keeping
//! receive queues full, and noticing a dead peer (an error completion, or the side-channel
//! socket closing). The protocol is described in `wire.rs`.
//!
//! Send-queue accounting: every work request counts as posted; a signaled one (the last of
//! each zero-copy part, and at least one in every quarter of the queue) completes itself
//! and every unsignaled one before it, which frees their entries.

use std::collections::VecDeque;
use std::net::TcpStream;
use std::os::fd::AsRawFd;

use super::mr::{MrCache, VerbsRegion};
use super::qp::{self, Cq, Mr, Path, Pd, Qp, QpEnd, QpSizes};
use super::sys::{self, Lib};
use super::wire::{
    self, Cts, Imm, Ring, CTRL_BYTES, CTS, CTS_IN, CTS_OUT, EAGER_BYTES, EAGER_IN, EAGER_OUT,
    HDR, HDR_OUT, SLOTS, STRIDE,
};
use crate::error::{Error, ErrorKind, Result};
use crate::transport::{Completion, Tag};

pub(super) use super::wire::MAX_REQUESTS;

/// Send-queue entries per QP: a message takes at most two on QP 0 (header, part), and CTS
/// records of the other direction share it.
const SQ_DEPTH: u32 = 4 * SLOTS as u32;
/// Receive-queue entries per QP: every incoming write-with-immediate consumes one
/// (message parts and CTS records, at most `SLOTS` of each in flight).
const RQ_DEPTH: u32 = 2 * SLOTS as u32 + 16;
/// Smallest part a zero-copy message is split into across queue pairs.
const MIN_PART: usize = 64 << 10;
/// Wanted inline size: headers and CTS records always, small messages with them.
const WANT_INLINE: u32 = 256;

/// The connection's registered control block (layout in `wire.rs`).
pub(super) struct Ctrl {
    ptr: *mut u8,
    mr: Option<Mr>,
}

// SAFETY: the block is owned by one connection, used by one thread at a time.
unsafe impl Send for Ctrl {}

fn ctrl_layout() -> std::alloc::Layout {
    // CTRL_BYTES is a non-zero multiple of 4096.
    std::alloc::Layout::from_size_align(CTRL_BYTES, 4096).unwrap_or(std::alloc::Layout::new::<u8>())
}

impl Ctrl {
    fn new(lib: &'static Lib, pd: &Pd) -> Result<Ctrl> {
        let layout = ctrl_layout();
        // SAFETY: non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            return Err(Error::system("verbs: out of memory for a connection"));
        }
        let mut c = Ctrl { ptr, mr: None };
        c.mr = Some(qp::register(lib, pd, ptr, CTRL_BYTES, true)?);
        Ok(c)
    }

    fn keys(&self) -> (u32, u32) {
        self.mr.as_ref().map_or((0, 0), |m| (m.lkey(), m.rkey()))
    }

    fn at(&self, off: usize) -> *mut u8 {
        debug_assert!(off < CTRL_BYTES);
        // SAFETY: offsets come from the layout constants, inside the block.
        unsafe { self.ptr.add(off) }
    }

    /// Reads `N` bytes the peer wrote (after their completion was polled).
    fn read<const N: usize>(&self, off: usize) -> [u8; N] {
        // SAFETY: inside the block; volatile because the NIC, not this thread, wrote it.
        unsafe { std::ptr::read_volatile(self.at(off) as *const [u8; N]) }
    }
}

impl Drop for Ctrl {
    fn drop(&mut self) {
        drop(self.mr.take()); // deregister before the memory goes
        // SAFETY: allocated in `new` with this layout, freed once.
        unsafe { std::alloc::dealloc(self.ptr, ctrl_layout()) };
    }
}

/// Where the peer's control block is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RemoteCtrl {
    pub eager_in: u64,
    pub cts_in: u64,
    pub rkey: u32,
}

/// Queue pairs, completion queue and control block made before the peer is known.
pub(super) struct Prepared {
    qps: Vec<Qp>,
    psns: Vec<u32>,
    cq: Cq,
    ctrl: Ctrl,
    max_inline: u32,
}

impl Prepared {
    /// `nqps` RC queue pairs in INIT state with full receive queues, on one new CQ.
    pub(super) fn new(
        lib: &'static Lib,
        dev: &super::device::Device,
        nqps: usize,
    ) -> Result<Prepared> {
        let cq = qp::create_cq(lib, &dev.ctx, &dev.channel, nqps as u32 * (SQ_DEPTH + RQ_DEPTH))?;
        let ctrl = Ctrl::new(lib, &dev.pd)?;
        let mut qps = Vec::with_capacity(nqps);
        let mut psns = Vec::with_capacity(nqps);
        let mut max_inline = u32::MAX;
        for _ in 0..nqps {
            let sizes = QpSizes {
                send: SQ_DEPTH,
                recv: RQ_DEPTH,
                inline: WANT_INLINE,
            };
            let (q, inline) = qp::create_rc(lib, &dev.pd, &cq, sizes)?;
            qp::to_init(lib, &q, dev.port)?;
            post_recvs(&q, 0, RQ_DEPTH)?;
            max_inline = max_inline.min(inline);
            qps.push(q);
            psns.push(random_psn()?);
        }
        Ok(Prepared {
            qps,
            psns,
            cq,
            ctrl,
            max_inline: if max_inline == u32::MAX { 0 } else { max_inline },
        })
    }

    /// This side's queue pairs, for the peer.
    pub(super) fn ends(&self) -> Vec<QpEnd> {
        self.qps
            .iter()
            .zip(&self.psns)
            .map(|(q, &psn)| QpEnd { qpn: q.num(), psn })
            .collect()
    }

    /// This side's control block, for the peer.
    pub(super) fn ctrl(&self) -> RemoteCtrl {
        let base = self.ctrl.ptr as u64;
        RemoteCtrl {
            eager_in: base + EAGER_IN as u64,
            cts_in: base + CTS_IN as u64,
            rkey: self.ctrl.keys().1,
        }
    }
}

fn random_psn() -> Result<u32> {
    let mut b = [0u8; 4];
    crate::bootstrap::random_secret()
        .map(|s| {
            b.copy_from_slice(&s[..4]);
            u32::from_le_bytes(b) & 0x00ff_ffff
        })
        .map_err(|e| e.context("verbs: choosing a packet sequence number"))
}

/// Posts `n` receive work requests without buffers (write-with-immediate needs one each).
fn post_recvs(q: &Qp, qi: usize, n: u32) -> Result<()> {
    let mut wrs: [sys::ibv_recv_wr; RQ_DEPTH as usize] =
        // SAFETY: all-zero is a valid ibv_recv_wr (no buffers, no next).
        unsafe { std::mem::zeroed() };
    let n = (n as usize).min(wrs.len());
    if n == 0 {
        return Ok(());
    }
    let base = wrs.as_mut_ptr();
    for i in 0..n {
        // SAFETY: i < n <= len: inside the array.
        unsafe {
            (*base.add(i)).wr_id = qi as u64;
            if i + 1 < n {
                (*base.add(i)).next = base.add(i + 1);
            }
        }
    }
    // SAFETY: live QP; a valid chain of `n` requests on the stack.
    let rc = unsafe { sys::post_recv(q.ptr(), base) };
    if rc != 0 {
        return Err(Error::system(format!(
            "verbs: posting receives on queue pair {} failed: {}",
            q.num(),
            sys::rc_error(rc)
        )));
    }
    Ok(())
}

struct QpState {
    qp: Qp,
    posted: u64,
    completed: u64,
    since_signal: u32,
    /// Posted count at each signaled request not yet completed, and the message it ends.
    signaled: VecDeque<(u64, Option<u64>)>,
    /// Receive requests consumed and not yet replaced.
    rq_missing: u32,
}

struct SendOp {
    data: *const u8,
    len: usize,
    tag: Tag,
    lkey: u32,
    parts_left: u8,
    /// A registration made for this request alone (memory no declared region covers).
    _own: Option<Mr>,
}

struct RecvOp {
    data: *mut u8,
    cap: usize,
    _own: Option<Mr>,
}

// SAFETY: the pointers are only dereferenced (by this thread or the NIC) while the
// transport's owner drives it; the Transport contract keeps the buffers valid until
// completion or close.
unsafe impl Send for SendOp {}
// SAFETY: as above.
unsafe impl Send for RecvOp {}

struct SendSide {
    ring: Ring<SendOp>,
    /// Next message to put on the wire (in order).
    issued: u64,
    /// CTS records received so far (they arrive in order on QP 0).
    cts_count: u64,
    cts: [Cts; SLOTS],
}

struct RecvSide {
    ring: Ring<RecvOp>,
    /// CTS records posted so far.
    cts_sent: u64,
    /// The CTS of each posted receive, until it is sent.
    cts: [Cts; SLOTS],
    /// Parts arrived and parts expected, per slot.
    parts: [u8; SLOTS],
    want: [u8; SLOTS],
}

/// An established connection.
pub(super) struct Conn {
    lib: &'static Lib,
    // Drop order: queue pairs, then their CQ, then the memory they wrote into.
    qps: Vec<QpState>,
    cq: Cq,
    ctrl: Ctrl,
    remote: RemoteCtrl,
    sock: TcpStream,
    peer: String,
    max_inline: usize,
    /// Largest part one work request may carry.
    max_part: usize,
    send: SendSide,
    recv: RecvSide,
    failed: Option<Error>,
    /// Which ends the engine holds: bit 0 the sending end, bit 1 the receiving end.
    pub ends: u8,
}

/// The transport state a connection needs to register memory.
pub(super) struct Mem<'a> {
    pub lib: &'static Lib,
    pub pd: &'a Pd,
    pub cache: &'a mut MrCache,
}

impl Mem<'_> {
    /// Keys for `len` bytes at `ptr`, and a registration of its own when no declared
    /// region covers the memory.
    fn keys(
        &mut self,
        ptr: *const u8,
        len: usize,
        write: bool,
        hint: Option<&VerbsRegion>,
    ) -> Result<(u32, u32, Option<Mr>)> {
        if let Some(k) = self.cache.keys(self.lib, self.pd, ptr, len, write, hint)? {
            return Ok((k.lkey, k.rkey, None));
        }
        let start = ptr as usize;
        let (mr, _) = super::mr::register_pages(self.lib, self.pd, start, start + len, write)?;
        Ok((mr.lkey(), mr.rkey(), Some(mr)))
    }
}

impl Prepared {
    /// Connects the queue pairs to the peer's (`INIT -> RTR -> RTS`).
    pub(super) fn connect(&self, lib: &Lib, path: &Path, remote_qps: &[QpEnd]) -> Result<()> {
        if remote_qps.len() != self.qps.len() {
            return Err(Error::remote(format!(
                "verbs: the peer has {} queue pairs where {} were offered",
                remote_qps.len(),
                self.qps.len()
            )));
        }
        for ((q, &psn), &r) in self.qps.iter().zip(&self.psns).zip(remote_qps) {
            qp::to_rtr(lib, q, path, r)?;
            qp::to_rts(lib, q, path, psn)?;
        }
        Ok(())
    }
}

impl Conn {
    /// A connection over prepared queue pairs already connected to the peer's
    /// ([`Prepared::connect`]); `sock` is the side channel, kept to notice the peer's end.
    pub(super) fn new(
        lib: &'static Lib,
        prep: Prepared,
        remote: RemoteCtrl,
        sock: TcpStream,
        peer: String,
        max_msg: u64,
    ) -> Result<Conn> {
        sock.set_nonblocking(true)
            .map_err(|e| Error::io("verbs: side-channel socket", e))?;
        let qps = prep
            .qps
            .into_iter()
            .map(|qp| QpState {
                qp,
                posted: 0,
                completed: 0,
                since_signal: 0,
                signaled: VecDeque::new(),
                rq_missing: 0,
            })
            .collect();
        Ok(Conn {
            lib,
            qps,
            cq: prep.cq,
            ctrl: prep.ctrl,
            remote,
            sock,
            peer,
            max_inline: prep.max_inline as usize,
            max_part: usize::try_from(max_msg.min(u64::from(u32::MAX))).unwrap_or(1 << 30),
            send: SendSide {
                ring: Ring::new(),
                issued: 0,
                cts_count: 0,
                cts: [Cts::default(); SLOTS],
            },
            recv: RecvSide {
                ring: Ring::new(),
                cts_sent: 0,
                cts: [Cts::default(); SLOTS],
                parts: [0; SLOTS],
                want: [0; SLOTS],
            },
            failed: None,
            ends: 0,
        })
    }

    pub(super) fn cq(&self) -> &Cq {
        &self.cq
    }

    pub(super) fn sock_fd(&self) -> libc::c_int {
        self.sock.as_raw_fd()
    }

    pub(super) fn failed(&self) -> bool {
        self.failed.is_some()
    }

    /// Whether anything is posted, queued or awaited on this connection.
    pub(super) fn busy(&self) -> bool {
        self.send.ring.pending() > 0
            || self.recv.ring.pending() > 0
            || self.qps.iter().any(|q| q.posted != q.completed)
    }

    /// Queues a send; `None` when [`MAX_REQUESTS`] are unreported.
    pub(super) fn post_send(
        &mut self,
        mem: &mut Mem<'_>,
        data: *const u8,
        len: usize,
        tag: Tag,
        hint: Option<&VerbsRegion>,
    ) -> Result<Option<u64>> {
        self.check()?;
        if self.send.ring.pending() >= MAX_REQUESTS {
            return Ok(None);
        }
        let (lkey, own) = if len > EAGER_BYTES {
            let (l, _, own) = mem.keys(data, len, false, hint)?;
            (l, own)
        } else {
            (0, None)
        };
        let op = SendOp {
            data,
            len,
            tag,
            lkey,
            parts_left: 0,
            _own: own,
        };
        let seq = self.send.ring.post(op);
        self.run(Self::issue)?;
        Ok(seq)
    }

    /// Queues a receive of at most `cap` bytes; `None` when [`MAX_REQUESTS`] are unreported.
    pub(super) fn post_recv(
        &mut self,
        mem: &mut Mem<'_>,
        data: *mut u8,
        cap: usize,
        hint: Option<&VerbsRegion>,
    ) -> Result<Option<u64>> {
        self.check()?;
        if self.recv.ring.pending() >= MAX_REQUESTS {
            return Ok(None);
        }
        let mut cts = Cts {
            seq: self.recv.ring.next(),
            cap: cap as u64,
            addr: 0,
            rkey: 0,
        };
        let own = if cap > EAGER_BYTES {
            let (_, rkey, own) = mem.keys(data, cap, true, hint)?;
            cts.addr = data as u64;
            cts.rkey = rkey;
            own
        } else {
            None
        };
        let seq = self.recv.ring.post(RecvOp {
            data,
            cap,
            _own: own,
        });
        if let Some(s) = seq {
            self.recv.cts[s as usize % SLOTS] = cts;
        }
        self.run(Self::complete_recvs)?;
        self.run(Self::send_cts)?;
        Ok(seq)
    }

    /// Reports send `seq` if it finished, making progress first if needed.
    pub(super) fn test_send(&mut self, seq: u64) -> Result<Option<Completion>> {
        if let Some(c) = self.send.ring.take(seq, "send")? {
            return Ok(Some(c));
        }
        self.progress()?;
        self.send.ring.take(seq, "send")
    }

    /// Reports receive `seq` if it finished, making progress first if needed.
    pub(super) fn test_recv(&mut self, seq: u64) -> Result<Option<Completion>> {
        if let Some(c) = self.recv.ring.take(seq, "receive")? {
            return Ok(Some(c));
        }
        self.progress()?;
        self.recv.ring.take(seq, "receive")
    }

    fn check(&self) -> Result<()> {
        match &self.failed {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// Runs one step; its error fails the connection for good.
    fn run(&mut self, step: fn(&mut Self) -> Result<bool>) -> Result<bool> {
        self.check()?;
        let r = step(self);
        if let Err(e) = &r {
            self.failed = Some(e.clone());
        }
        r
    }

    /// Polls completions and moves every request as far as it can go; true if any
    /// completion came.
    pub(super) fn progress(&mut self) -> Result<bool> {
        self.run(|c| {
            let moved = c.poll()?;
            c.refill()?;
            c.complete_recvs()?;
            c.send_cts()?;
            c.issue()?;
            Ok(moved)
        })
    }

    /// Whether the peer's side channel says it is gone; the connection is then failed.
    pub(super) fn check_peer(&mut self) -> Result<()> {
        self.check()?;
        let mut b = 0u8;
        // SAFETY: a one-byte peek into a local on a socket this connection owns.
        let n = unsafe {
            libc::recv(
                self.sock.as_raw_fd(),
                (&mut b as *mut u8).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        let why = match n {
            0 => "closed the connection: its process ended or its communicator was destroyed"
                .to_string(),
            n if n > 0 => "sent unexpected bytes on the side channel".to_string(),
            _ => {
                let e = sys::errno();
                match e.raw_os_error() {
                    Some(libc::EAGAIN) | Some(libc::EINTR) => return Ok(()),
                    _ => format!("side channel failed: {e}"),
                }
            }
        };
        let e = Error::remote(format!("verbs: peer {} {why}", self.peer));
        self.failed = Some(e.clone());
        Err(e)
    }

    fn poll(&mut self) -> Result<bool> {
        // SAFETY: all-zero is a valid ibv_wc.
        let mut wc: [sys::ibv_wc; 16] = unsafe { std::mem::zeroed() };
        let mut any = false;
        loop {
            let n = self.cq.poll(&mut wc)?;
            for w in &wc[..n] {
                self.completion(w)?;
            }
            any |= n > 0;
            if n < wc.len() {
                return Ok(any);
            }
        }
    }

    fn completion(&mut self, w: &sys::ibv_wc) -> Result<()> {
        let qi = self
            .qps
            .iter()
            .position(|q| q.qp.num() == w.qp_num)
            .ok_or_else(|| Error::internal(format!("verbs: completion for unknown QP {}", w.qp_num)))?;
        if w.status != sys::IBV_WC_SUCCESS {
            return Err(self.wc_error(w));
        }
        if w.opcode == sys::IBV_WC_RECV_RDMA_WITH_IMM {
            self.qps[qi].rq_missing += 1;
            // SAFETY: the union holds the immediate for this opcode.
            let imm = u32::from_be(unsafe { w.__bindgen_anon_1.imm_data });
            return match wire::decode_imm(imm) {
                Imm::Cts(low) => self.got_cts(low),
                Imm::Part(low, n) => self.got_part(low, n),
            };
        }
        let q = &mut self.qps[qi];
        let (count, msg) = q.signaled.pop_front().ok_or_else(|| {
            Error::internal(format!("verbs: unexpected send completion from {}", self.peer))
        })?;
        q.completed = count;
        if let Some(seq) = msg {
            if let Some(op) = self.send.ring.get_mut(seq) {
                op.parts_left = op.parts_left.saturating_sub(1);
                if op.parts_left == 0 {
                    let c = Completion {
                        bytes: op.len,
                        tag: op.tag,
                    };
                    self.send.ring.finish(seq, c);
                }
            }
        }
        Ok(())
    }

    fn wc_error(&self, w: &sys::ibv_wc) -> Error {
        let dir = if w.opcode == sys::IBV_WC_RECV_RDMA_WITH_IMM {
            "receiving from"
        } else {
            "writing to"
        };
        let hint = match w.status {
            sys::IBV_WC_RETRY_EXC_ERR => {
                ": the peer stopped answering (its process ended, a port went down, or the \
                 path is wrong: GID index, MTU, routing, PFC)"
            }
            sys::IBV_WC_WR_FLUSH_ERR => ": the queue pair had already failed",
            _ => "",
        };
        let local = matches!(
            w.status,
            sys::IBV_WC_LOC_LEN_ERR | sys::IBV_WC_LOC_QP_OP_ERR | sys::IBV_WC_LOC_PROT_ERR
        );
        let kind = if local {
            ErrorKind::System
        } else {
            ErrorKind::Remote
        };
        Error::new(
            kind,
            format!(
                "verbs: {dir} {} failed: {} (status {}, vendor error {:#x}){hint}",
                self.peer,
                self.lib.status_str(w.status),
                w.status,
                w.vendor_err
            ),
        )
    }

    fn protocol(&self, what: String) -> Error {
        Error::remote(format!("verbs: protocol error from {}: {what}", self.peer))
    }

    fn got_cts(&mut self, low: u32) -> Result<()> {
        let k = self.send.cts_count;
        if !wire::cts_matches(k, low) {
            return Err(self.protocol(format!("CTS {low} where {k} was next")));
        }
        let cts = Cts::decode(&self.ctrl.read::<CTS>(CTS_IN + k as usize % SLOTS * CTS));
        if cts.seq != k {
            return Err(self.protocol(format!("CTS record {} where {k} was next", cts.seq)));
        }
        self.send.cts[k as usize % SLOTS] = cts;
        self.send.cts_count += 1;
        Ok(())
    }

    fn got_part(&mut self, low: u32, n: u8) -> Result<()> {
        let head = self.recv.ring.head();
        let seq = wire::part_seq(head, low)
            .ok_or_else(|| self.protocol(format!("message {low} outside the window at {head}")))?;
        let i = seq as usize % SLOTS;
        if n == 0 || (self.recv.want[i] != 0 && self.recv.want[i] != n) {
            return Err(self.protocol(format!("message {seq} announced {n} parts")));
        }
        self.recv.want[i] = n;
        self.recv.parts[i] += 1;
        Ok(())
    }

    /// Replaces consumed receive requests.
    fn refill(&mut self) -> Result<bool> {
        for (qi, q) in self.qps.iter_mut().enumerate() {
            if q.rq_missing > 0 {
                post_recvs(&q.qp, qi, q.rq_missing)?;
                q.rq_missing = 0;
            }
        }
        Ok(false)
    }

    /// Finishes posted receives whose message is complete, oldest first.
    fn complete_recvs(&mut self) -> Result<bool> {
        let mut moved = false;
        for seq in self.recv.ring.head()..self.recv.ring.next() {
            let i = seq as usize % SLOTS;
            if self.recv.want[i] == 0 || self.recv.parts[i] < self.recv.want[i] {
                continue;
            }
            let hdr = self.ctrl.read::<HDR>(EAGER_IN + i * STRIDE);
            let (tag, len) = wire::parse_header(&hdr);
            let Some(&mut RecvOp { data, cap, .. }) = self.recv.ring.get_mut(seq) else {
                continue;
            };
            if len > cap as u64 {
                return Err(Error::invalid_usage(format!(
                    "verbs: message of {len} bytes from {} exceeds the posted receive of {cap} \
                     bytes",
                    self.peer
                )));
            }
            let len = len as usize;
            if len <= EAGER_BYTES && len > 0 {
                // SAFETY: the slot holds `len <= EAGER_BYTES` payload bytes after the header;
                // the receive buffer has room for `cap >= len` bytes and is ours until
                // completion; the two do not overlap (ours vs. the caller's memory).
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        self.ctrl.at(EAGER_IN + i * STRIDE + HDR),
                        data,
                        len,
                    )
                };
            }
            self.recv.parts[i] = 0;
            self.recv.want[i] = 0;
            self.recv.ring.finish(seq, Completion { bytes: len, tag });
            moved = true;
        }
        Ok(moved)
    }

    fn room(&self, qi: usize, n: u32) -> bool {
        let q = &self.qps[qi];
        q.posted - q.completed + u64::from(n) <= u64::from(SQ_DEPTH)
    }

    /// Posts CTS records for receives that have none yet.
    fn send_cts(&mut self) -> Result<bool> {
        let mut moved = false;
        while self.recv.cts_sent < self.recv.ring.next() && self.room(0, 1) {
            let k = self.recv.cts_sent;
            let i = k as usize % SLOTS;
            let rec = self.recv.cts[i].encode();
            let src = self.stage(CTS_OUT + i * CTS, &rec);
            let remote = self.remote.cts_in + (i * CTS) as u64;
            let mut sge = [src];
            let mut wr = [write_wr(&mut sge, remote, self.remote.rkey, Some(wire::imm_cts(k)))];
            self.inline_if_small(&mut wr[0], CTS);
            self.post(0, &mut wr, None)?;
            self.recv.cts_sent += 1;
            moved = true;
        }
        Ok(moved)
    }

    /// A scatter/gather entry for `bytes`, copied into the control block at `off` (so it
    /// stays valid while a non-inline write reads it).
    fn stage(&mut self, off: usize, bytes: &[u8]) -> sys::ibv_sge {
        // SAFETY: `off + bytes.len()` lies inside the block (layout constants).
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ctrl.at(off), bytes.len()) };
        sys::ibv_sge {
            addr: self.ctrl.at(off) as u64,
            length: bytes.len() as u32,
            lkey: self.ctrl.keys().0,
        }
    }

    fn inline_if_small(&self, wr: &mut sys::ibv_send_wr, bytes: usize) {
        if bytes <= self.max_inline {
            wr.send_flags |= sys::IBV_SEND_INLINE;
        }
    }

    /// Puts queued messages on the wire, in order, as far as credits, CTS records and
    /// send-queue room allow.
    fn issue(&mut self) -> Result<bool> {
        let mut moved = false;
        while self.send.issued < self.send.ring.next() {
            let k = self.send.issued;
            let Some(op) = self.send.ring.get_mut(k) else {
                return Err(Error::internal("verbs: queued send vanished"));
            };
            let (data, len, tag, lkey) = (op.data, op.len, op.tag, op.lkey);
            if len <= EAGER_BYTES {
                // Eager slot k is free once CTS k + MAX_REQUESTS - SLOTS came (wire.rs).
                let credit = k + MAX_REQUESTS as u64 + 1 <= self.send.cts_count + SLOTS as u64;
                if !credit || !self.room(0, 1) {
                    break;
                }
                self.post_eager(k, data, len, len, tag)?;
                self.send.ring.finish(k, Completion { bytes: len, tag });
            } else {
                if self.send.cts_count <= k {
                    break;
                }
                let cts = self.send.cts[k as usize % SLOTS];
                if !cts.zero_copy() || cts.cap < len as u64 {
                    if !self.room(0, 1) {
                        break;
                    }
                    // Tell the receiver too (a header with the length and no data), so
                    // both sides report the mismatch.
                    self.post_eager(k, data, 0, len, tag)?;
                    return Err(Error::invalid_usage(format!(
                        "verbs: message of {len} bytes to {} exceeds the posted receive of {} \
                         bytes",
                        self.peer, cts.cap
                    )));
                }
                let parts = self.split(len)?;
                let fits = (0..parts).all(|p| self.room(p, if p == 0 { 2 } else { 1 }));
                if !fits {
                    break;
                }
                self.post_parts(k, data, len, tag, lkey, parts, cts)?;
                if let Some(op) = self.send.ring.get_mut(k) {
                    op.parts_left = parts as u8;
                }
            }
            self.send.issued += 1;
            moved = true;
        }
        Ok(moved)
    }

    /// Parts a zero-copy message of `len` bytes is split into.
    fn split(&self, len: usize) -> Result<usize> {
        let parts = len.div_ceil(MIN_PART).clamp(1, self.qps.len());
        if len.div_ceil(parts) > self.max_part {
            return Err(Error::invalid_argument(format!(
                "verbs: a message of {len} bytes to {} needs parts of at most {} bytes: raise \
                 OXCCL_IB_QPS_PER_CONNECTION or lower OXCCL_CHUNK_SIZE",
                self.peer, self.max_part
            )));
        }
        Ok(parts)
    }

    /// Header (announcing `announce` bytes) and `len` payload bytes of message `k` into the
    /// peer's eager slot, in one write. A header announcing more than is sent is how a
    /// message too large for the peer's receive is reported.
    fn post_eager(
        &mut self,
        k: u64,
        data: *const u8,
        len: usize,
        announce: usize,
        tag: Tag,
    ) -> Result<()> {
        let i = k as usize % SLOTS;
        let hdr = wire::header(tag, announce);
        let remote = self.remote.eager_in + (i * STRIDE) as u64;
        let imm = Some(wire::imm_part(k, 1));
        if HDR + len <= self.max_inline {
            // Inline: the library copies both pieces while posting.
            let mut sge = [
                sys::ibv_sge {
                    addr: hdr.as_ptr() as u64,
                    length: HDR as u32,
                    lkey: 0,
                },
                sys::ibv_sge {
                    addr: data as u64,
                    length: len as u32,
                    lkey: 0,
                },
            ];
            let n = if len == 0 { 1 } else { 2 };
            let mut wr = [write_wr(&mut sge[..n], remote, self.remote.rkey, imm)];
            wr[0].send_flags |= sys::IBV_SEND_INLINE;
            return self.post(0, &mut wr, None);
        }
        let off = EAGER_OUT + i * STRIDE;
        self.stage(off, &hdr);
        if len > 0 {
            // SAFETY: `len <= EAGER_BYTES` fits the slot after the header; the caller's
            // buffer holds `len` readable bytes.
            unsafe { std::ptr::copy_nonoverlapping(data, self.ctrl.at(off + HDR), len) };
        }
        let mut sge = [sys::ibv_sge {
            addr: self.ctrl.at(off) as u64,
            length: (HDR + len) as u32,
            lkey: self.ctrl.keys().0,
        }];
        let mut wr = [write_wr(&mut sge, remote, self.remote.rkey, imm)];
        self.post(0, &mut wr, None)
    }

    /// Header into the peer's eager slot, then the payload straight into the receive
    /// buffer, split over `parts` queue pairs.
    #[allow(clippy::too_many_arguments)] // the parts of one message
    fn post_parts(
        &mut self,
        k: u64,
        data: *const u8,
        len: usize,
        tag: Tag,
        lkey: u32,
        parts: usize,
        cts: Cts,
    ) -> Result<()> {
        let i = k as usize % SLOTS;
        let hdr = wire::header(tag, len);
        let hdr_sge = self.stage(HDR_OUT + i * HDR, &hdr);
        let size = len.div_ceil(parts).div_ceil(4096) * 4096;
        let imm = Some(wire::imm_part(k, parts as u8));
        for p in 0..parts {
            let off = (p * size).min(len);
            let plen = size.min(len - off);
            let mut sge = [sys::ibv_sge {
                // SAFETY: off <= len: inside (or at the end of) the caller's buffer.
                addr: unsafe { data.add(off) } as u64,
                length: plen as u32,
                lkey,
            }];
            let mut part = write_wr(&mut sge, cts.addr + off as u64, cts.rkey, imm);
            if p == 0 {
                let mut hsge = [hdr_sge];
                let remote = self.remote.eager_in + (i * STRIDE) as u64;
                let mut h = write_wr(&mut hsge, remote, self.remote.rkey, None);
                self.inline_if_small(&mut h, HDR);
                let mut wrs = [h, part];
                self.post(0, &mut wrs, Some(k))?;
            } else {
                self.post(p, std::slice::from_mut(&mut part), Some(k))?;
            }
        }
        Ok(())
    }

    /// Posts a chain on QP `qi`; the last request is signaled if it ends a part of message
    /// `msg`, or if a quarter of the queue went unsignaled.
    fn post(&mut self, qi: usize, wrs: &mut [sys::ibv_send_wr], msg: Option<u64>) -> Result<()> {
        let n = wrs.len();
        let q = &mut self.qps[qi];
        let base = wrs.as_mut_ptr();
        for i in 0..n.saturating_sub(1) {
            // SAFETY: i + 1 < n: both inside the slice.
            unsafe { (*base.add(i)).next = base.add(i + 1) };
        }
        q.since_signal += n as u32;
        let signal = msg.is_some() || q.since_signal >= SQ_DEPTH / 4;
        if signal {
            wrs[n - 1].send_flags |= sys::IBV_SEND_SIGNALED;
            q.since_signal = 0;
        }
        // SAFETY: live QP; a valid chain whose buffers are registered or inline.
        let rc = unsafe { sys::post_send(q.qp.ptr(), base) };
        if rc != 0 {
            return Err(Error::system(format!(
                "verbs: posting a write to {} failed: {}",
                self.peer,
                sys::rc_error(rc)
            )));
        }
        q.posted += n as u64;
        if signal {
            q.signaled.push_back((q.posted, msg));
        }
        Ok(())
    }
}

/// An RDMA write (with immediate if `imm`) of the entries `sge` to `remote`/`rkey`.
fn write_wr(sge: &mut [sys::ibv_sge], remote: u64, rkey: u32, imm: Option<u32>) -> sys::ibv_send_wr {
    // SAFETY: all-zero is a valid ibv_send_wr.
    let mut wr: sys::ibv_send_wr = unsafe { std::mem::zeroed() };
    wr.sg_list = sge.as_mut_ptr();
    wr.num_sge = sge.len() as i32;
    match imm {
        Some(v) => {
            wr.opcode = sys::IBV_WR_RDMA_WRITE_WITH_IMM;
            wr.__bindgen_anon_1.imm_data = v.to_be();
        }
        None => wr.opcode = sys::IBV_WR_RDMA_WRITE,
    }
    wr.wr.rdma = sys::ibv_send_wr__bindgen_ty_2__bindgen_ty_1 {
        remote_addr: remote,
        rkey,
    };
    wr
}
