//! One connection to a peer: its queue pairs, completion queue and control block, and the
//! state of both directions (this rank's sends and receives share the queue pairs).
//!
//! Owns: the requests of both directions, polling the completion queue and turning
//! completions into finished requests, keeping receive queues full, noticing a dead peer
//! (an error completion, or the side-channel socket closing), and letting the last writes
//! go before the queue pairs are destroyed. Posting is in `post.rs`, the protocol in
//! `wire.rs`.
//!
//! Send-queue accounting: every work request counts as posted; a signaled one (the last of
//! each zero-copy part, and at least one in every quarter of the queue) completes itself
//! and every unsignaled one before it, which frees their entries.

use std::collections::VecDeque;
use std::net::TcpStream;
use std::os::fd::AsRawFd;

use super::ctrl::{post_recvs, Ctrl, Prepared, RemoteCtrl, SQ_DEPTH};
use super::mr::{MrCache, VerbsRegion};
use super::post::write_wr;
use super::qp::{Cq, Mr, Pd, Qp};
use super::sys::{self, Lib};
use super::wire::{self, Cts, Imm, CTS, CTS_IN, EAGER_BYTES, EAGER_IN, HDR, SLOTS, STRIDE};
use crate::error::{Error, ErrorKind, Result};
use crate::transport::requests::Ring;
use crate::transport::{Completion, Tag};

pub(super) use super::wire::MAX_REQUESTS;

/// Longest a closing connection waits for its last writes to be acknowledged.
const LINGER: std::time::Duration = std::time::Duration::from_secs(2);

pub(super) struct QpState {
    pub(super) qp: Qp,
    pub(super) posted: u64,
    pub(super) completed: u64,
    pub(super) since_signal: u32,
    /// Posted count at each signaled request not yet completed, and the message it ends.
    pub(super) signaled: VecDeque<(u64, Option<u64>)>,
    /// Receive requests consumed and not yet replaced.
    pub(super) rq_missing: u32,
}

pub(super) struct SendOp {
    pub(super) data: *const u8,
    pub(super) len: usize,
    pub(super) tag: Tag,
    pub(super) lkey: u32,
    pub(super) parts_left: u8,
    /// A registration made for this request alone (memory no declared region covers).
    pub(super) _own: Option<Mr>,
}

pub(super) struct RecvOp {
    pub(super) data: *mut u8,
    pub(super) cap: usize,
    pub(super) _own: Option<Mr>,
}

// SAFETY: the pointers are only dereferenced (by this thread or the NIC) while the
// transport's owner drives it; the Transport contract keeps the buffers valid until
// completion or close.
unsafe impl Send for SendOp {}
// SAFETY: as above.
unsafe impl Send for RecvOp {}

pub(super) struct SendSide {
    pub(super) ring: Ring<SendOp, MAX_REQUESTS>,
    /// Next message to put on the wire (in order).
    pub(super) issued: u64,
    /// CTS records received so far (they arrive in order on QP 0).
    pub(super) cts_count: u64,
    pub(super) cts: [Cts; SLOTS],
}

pub(super) struct RecvSide {
    pub(super) ring: Ring<RecvOp, MAX_REQUESTS>,
    /// CTS records posted so far.
    pub(super) cts_sent: u64,
    /// The CTS of each posted receive, until it is sent.
    pub(super) cts: [Cts; SLOTS],
    /// Parts arrived and parts expected, per slot.
    pub(super) parts: [u8; SLOTS],
    pub(super) want: [u8; SLOTS],
}

/// An established connection.
pub(super) struct Conn {
    pub(super) lib: &'static Lib,
    // Drop order: queue pairs, then their CQ, then the memory they wrote into.
    pub(super) qps: Vec<QpState>,
    pub(super) cq: Cq,
    pub(super) ctrl: Ctrl,
    pub(super) remote: RemoteCtrl,
    pub(super) sock: TcpStream,
    pub(super) peer: String,
    pub(super) max_inline: usize,
    /// Largest part one work request may carry.
    pub(super) max_part: usize,
    pub(super) send: SendSide,
    pub(super) recv: RecvSide,
    pub(super) failed: Option<Error>,
    /// The side channel ended: the peer's process or communicator is gone. Not an error by
    /// itself (a peer that finished its part may leave); requests that still need the
    /// peer fail once every completion it caused has been polled.
    pub(super) peer_closed: Option<String>,
    /// Which ends the engine holds: bit 0 the sending end, bit 1 the receiving end.
    pub(super) ends: u8,
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
            peer_closed: None,
            ends: 0,
        })
    }

    pub(super) fn cq(&self) -> &Cq {
        &self.cq
    }

    pub(super) fn sock_fd(&self) -> libc::c_int {
        self.sock.as_raw_fd()
    }

    /// Failed, or the peer is known to be gone: nothing more to wait for here.
    pub(super) fn done_waiting(&self) -> bool {
        self.failed.is_some() || self.peer_closed.is_some()
    }

    /// Whether the engine waits on this connection for something only the peer can do.
    fn needs_peer(&self) -> bool {
        self.send.ring.unreported() > 0 || self.recv.ring.unreported() > 0
    }

    /// Whether anything is posted, queued or awaited on this connection.
    pub(super) fn busy(&self) -> bool {
        self.send.ring.unreported() > 0
            || self.recv.ring.unreported() > 0
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
        if self.send.ring.unreported() >= MAX_REQUESTS {
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
        if self.recv.ring.unreported() >= MAX_REQUESTS {
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
        if let Some(c) = take(&mut self.send.ring, seq, "send")? {
            return Ok(Some(c));
        }
        self.progress()?;
        take(&mut self.send.ring, seq, "send")
    }

    /// Reports receive `seq` if it finished, making progress first if needed.
    pub(super) fn test_recv(&mut self, seq: u64) -> Result<Option<Completion>> {
        if let Some(c) = take(&mut self.recv.ring, seq, "receive")? {
            return Ok(Some(c));
        }
        self.progress()?;
        take(&mut self.recv.ring, seq, "receive")
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
    /// completion came. Once the peer is gone, a request still waiting for it fails.
    pub(super) fn progress(&mut self) -> Result<bool> {
        self.run(|c| {
            let moved = c.poll()?;
            c.refill()?;
            c.complete_recvs()?;
            c.send_cts()?;
            c.issue()?;
            if let Some(why) = &c.peer_closed {
                if c.needs_peer() {
                    return Err(Error::remote(format!("verbs: peer {} {why}", c.peer)));
                }
            }
            Ok(moved)
        })
    }

    /// Looks at the side channel: its end means the peer is gone (see `peer_closed`);
    /// unexpected bytes fail the connection.
    pub(super) fn check_peer(&mut self) -> Result<()> {
        self.check()?;
        if self.peer_closed.is_some() {
            return Ok(());
        }
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
            n if n > 0 => {
                let e = Error::remote(format!(
                    "verbs: peer {} sent unexpected bytes on the side channel",
                    self.peer
                ));
                self.failed = Some(e.clone());
                return Err(e);
            }
            _ => {
                let e = sys::errno();
                match e.raw_os_error() {
                    Some(libc::EAGAIN) | Some(libc::EINTR) => return Ok(()),
                    _ => format!("lost the connection: {e}"),
                }
            }
        };
        self.peer_closed = Some(why);
        Ok(())
    }

    /// Before the queue pairs go: lets writes already posted reach the peer (a send the
    /// engine saw complete may still be on its way, eager ones in particular), as closing
    /// a TCP socket lets queued bytes go. A zero-length signaled write on each queue pair
    /// completes after everything before it; waits at most [`LINGER`], and not at all for
    /// a peer that failed or left.
    fn linger(&mut self) {
        if self.done_waiting() {
            return;
        }
        let mut fence = Vec::new();
        for qi in 0..self.qps.len() {
            let q = &self.qps[qi];
            if q.posted == q.completed || !self.room(qi, 1) {
                continue;
            }
            let mut wr = [write_wr(
                &mut [],
                self.remote.cts_in,
                self.remote.rkey,
                None,
            )];
            self.qps[qi].since_signal = SQ_DEPTH; // forces this one to be signaled
            if self.post(qi, &mut wr, None).is_err() {
                return;
            }
            fence.push(qi);
        }
        let deadline = std::time::Instant::now() + LINGER;
        while fence
            .iter()
            .any(|&qi| self.qps[qi].posted != self.qps[qi].completed)
        {
            if std::time::Instant::now() > deadline || self.poll().is_err() {
                return;
            }
            if self.check_peer().is_err() || self.peer_closed.is_some() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_micros(50));
        }
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
            .ok_or_else(|| {
                Error::internal(format!("verbs: completion for unknown QP {}", w.qp_num))
            })?;
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
            Error::internal(format!(
                "verbs: unexpected send completion from {}",
                self.peer
            ))
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
        let head = self.recv.ring.oldest();
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
        for seq in self.recv.ring.oldest()..self.recv.ring.next() {
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
                    crate::reduce::copy_bytes(self.ctrl.at(EAGER_IN + i * STRIDE + HDR), data, len)
                };
            }
            self.recv.parts[i] = 0;
            self.recv.want[i] = 0;
            self.recv.ring.finish(seq, Completion { bytes: len, tag });
            moved = true;
        }
        Ok(moved)
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.linger();
    }
}

/// Reports request `seq` of `ring` if it finished, naming the direction in the error.
fn take<T>(ring: &mut Ring<T, MAX_REQUESTS>, seq: u64, who: &str) -> Result<Option<Completion>> {
    ring.take(seq)
        .map_err(|e| Error::invalid_usage(format!("verbs: {who} {}", e.message())))
}
