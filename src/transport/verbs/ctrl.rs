//! What a connection is made of before its peer is known: queue pairs in INIT state with
//! full receive queues, their completion queue, and the registered control block the
//! peer writes headers, eager messages and clear-to-send records into (layout in
//! `wire.rs`).
//!
//! Owns: creating those, moving the queue pairs to RTS once the peer's numbers are known,
//! and posting receive work requests (write-with-immediate consumes one per message).

use super::qp::{self, Cq, Mr, Path, Pd, Qp, QpEnd, QpSizes};
use super::sys::{self, Lib};
use super::wire::{CTRL_BYTES, CTS_IN, EAGER_IN, SLOTS};
use crate::error::{Error, Result};

/// Send-queue entries per QP: a message takes at most two on QP 0 (header, part), and CTS
/// records of the other direction share it.
pub(super) const SQ_DEPTH: u32 = 4 * SLOTS as u32;
/// Receive-queue entries per QP: every incoming write-with-immediate consumes one
/// (message parts and CTS records, at most `SLOTS` of each in flight).
pub(super) const RQ_DEPTH: u32 = 2 * SLOTS as u32 + 16;
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
    pub(super) fn new(lib: &'static Lib, pd: &Pd) -> Result<Ctrl> {
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

    pub(super) fn keys(&self) -> (u32, u32) {
        self.mr.as_ref().map_or((0, 0), |m| (m.lkey(), m.rkey()))
    }

    pub(super) fn at(&self, off: usize) -> *mut u8 {
        debug_assert!(off < CTRL_BYTES);
        // SAFETY: offsets come from the layout constants, inside the block.
        unsafe { self.ptr.add(off) }
    }

    /// Reads `N` bytes the peer wrote (after their completion was polled).
    pub(super) fn read<const N: usize>(&self, off: usize) -> [u8; N] {
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
    pub qps: Vec<Qp>,
    pub psns: Vec<u32>,
    pub cq: Cq,
    pub ctrl: Ctrl,
    pub max_inline: u32,
}

impl Prepared {
    /// `nqps` RC queue pairs in INIT state with full receive queues, on one new CQ.
    pub(super) fn new(
        lib: &'static Lib,
        dev: &super::device::Device,
        nqps: usize,
    ) -> Result<Prepared> {
        let cq = qp::create_cq(
            lib,
            &dev.ctx,
            &dev.channel,
            nqps as u32 * (SQ_DEPTH + RQ_DEPTH),
        )?;
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
            max_inline: if max_inline == u32::MAX {
                0
            } else {
                max_inline
            },
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
        let base = self.ctrl.at(0) as u64;
        RemoteCtrl {
            eager_in: base + EAGER_IN as u64,
            cts_in: base + CTS_IN as u64,
            rkey: self.ctrl.keys().1,
        }
    }
}

fn random_psn() -> Result<u32> {
    let mut b = [0u8; 4];
    crate::auth::nonce()
        .map(|s| {
            b.copy_from_slice(&s[..4]);
            u32::from_le_bytes(b) & 0x00ff_ffff
        })
        .map_err(|e| e.context("verbs: choosing a packet sequence number"))
}

/// Posts `n` receive work requests without buffers (write-with-immediate needs one each).
pub(super) fn post_recvs(q: &Qp, qi: usize, n: u32) -> Result<()> {
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
