//! Putting messages on the wire: eager writes, zero-copy parts split over queue pairs,
//! clear-to-send records, and the send-queue accounting behind them (see `conn.rs`).

use super::conn::{Conn, MAX_REQUESTS};
use super::ctrl::SQ_DEPTH;
use super::sys;
use super::wire::{self, Cts, CTS, CTS_OUT, EAGER_BYTES, EAGER_OUT, HDR, HDR_OUT, SLOTS, STRIDE};
use crate::error::{Error, Result};
use crate::transport::{Completion, Tag};

/// Smallest part a zero-copy message is split into across queue pairs.
const MIN_PART: usize = 64 << 10;

impl Conn {
    pub(super) fn room(&self, qi: usize, n: u32) -> bool {
        let q = &self.qps[qi];
        q.posted - q.completed + u64::from(n) <= u64::from(SQ_DEPTH)
    }

    /// Posts CTS records for receives that have none yet.
    pub(super) fn send_cts(&mut self) -> Result<bool> {
        let mut moved = false;
        while self.recv.cts_sent < self.recv.ring.next() && self.room(0, 1) {
            let k = self.recv.cts_sent;
            let i = k as usize % SLOTS;
            let rec = self.recv.cts[i].encode();
            let src = self.stage(CTS_OUT + i * CTS, &rec);
            let remote = self.remote.cts_in + (i * CTS) as u64;
            let mut sge = [src];
            let mut wr = [write_wr(
                &mut sge,
                remote,
                self.remote.rkey,
                Some(wire::imm_cts(k)),
            )];
            self.inline_if_small(&mut wr[0], CTS);
            self.post(0, &mut wr, None)?;
            self.recv.cts_sent += 1;
            moved = true;
        }
        Ok(moved)
    }

    /// A scatter/gather entry for `bytes`, copied into the control block at `off` (so it
    /// stays valid while a non-inline write reads it).
    pub(super) fn stage(&mut self, off: usize, bytes: &[u8]) -> sys::ibv_sge {
        // SAFETY: `off + bytes.len()` lies inside the block (layout constants).
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ctrl.at(off), bytes.len()) };
        sys::ibv_sge {
            addr: self.ctrl.at(off) as u64,
            length: bytes.len() as u32,
            lkey: self.ctrl.keys().0,
        }
    }

    pub(super) fn inline_if_small(&self, wr: &mut sys::ibv_send_wr, bytes: usize) {
        if bytes <= self.max_inline {
            wr.send_flags |= sys::IBV_SEND_INLINE;
        }
    }

    /// Puts queued messages on the wire, in order, as far as credits, CTS records and
    /// send-queue room allow.
    pub(super) fn issue(&mut self) -> Result<bool> {
        let mut moved = false;
        while self.send.issued < self.send.ring.next() {
            let k = self.send.issued;
            let Some(op) = self.send.ring.get_mut(k) else {
                return Err(Error::internal("verbs: queued send vanished"));
            };
            let (data, len, tag, lkey) = (op.data, op.len, op.tag, op.lkey);
            if len <= EAGER_BYTES {
                // Eager slot k is free once CTS k + MAX_REQUESTS - SLOTS came (wire.rs).
                let credit = k + (MAX_REQUESTS as u64) < self.send.cts_count + SLOTS as u64;
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
            unsafe { crate::reduce::copy_bytes(data, self.ctrl.at(off + HDR), len) };
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
    pub(super) fn post(
        &mut self,
        qi: usize,
        wrs: &mut [sys::ibv_send_wr],
        msg: Option<u64>,
    ) -> Result<()> {
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
pub(super) fn write_wr(
    sge: &mut [sys::ibv_sge],
    remote: u64,
    rkey: u32,
    imm: Option<u32>,
) -> sys::ibv_send_wr {
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
