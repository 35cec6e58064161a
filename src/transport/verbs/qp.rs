//! Verbs objects as owned handles, and the RC queue pair's state transitions.
//!
//! Owns: one Rust value per verbs object (device context, protection domain, completion
//! channel, completion queue, queue pair, memory region), each destroying its object
//! when dropped, and `INIT -> RTR -> RTS` with the attributes RoCE and InfiniBand need.
//! Destruction errors are ignored in `Drop` (nothing sensible can be done with them, and
//! `Drop` must not panic). Owners keep the order the verbs API requires: queue pairs and
//! memory regions before their protection domain, completion queues before their channel,
//! everything before the context.

use std::ffi::c_int;

use super::sys::{self, Lib};
use crate::error::{Error, Result};

macro_rules! handle {
    ($(#[$doc:meta])* $name:ident, $ty:ty, $destroy:ident) => {
        $(#[$doc])*
        pub(super) struct $name {
            lib: &'static Lib,
            ptr: *mut $ty,
        }

        impl $name {
            /// Takes ownership of `ptr` (which must be non-null and live).
            pub(super) fn own(lib: &'static Lib, ptr: *mut $ty) -> Self {
                $name { lib, ptr }
            }

            /// The raw pointer, for calls into the library.
            #[allow(dead_code)] // not every kind of object is passed back to the library
            pub(super) fn ptr(&self) -> *mut $ty {
                self.ptr
            }
        }

        impl Drop for $name {
            fn drop(&mut self) {
                // SAFETY: `ptr` is a live object owned by this handle; owners drop handles
                // in the order the verbs API requires (see the module docs).
                let _ = unsafe { (self.lib.$destroy)(self.ptr) };
            }
        }

        // SAFETY: verbs objects may be used from any thread; each handle is used by one
        // thread at a time (the transport's owner).
        unsafe impl Send for $name {}
    };
}

handle!(
    /// An open device (`ibv_context`).
    Context,
    sys::ibv_context,
    close_device
);
handle!(
    /// A protection domain.
    Pd,
    sys::ibv_pd,
    dealloc_pd
);
handle!(
    /// A completion channel: one file descriptor that wakes for every armed CQ.
    Channel,
    sys::ibv_comp_channel,
    destroy_comp_channel
);
handle!(
    /// A completion queue.
    Cq,
    sys::ibv_cq,
    destroy_cq
);
handle!(
    /// A queue pair.
    Qp,
    sys::ibv_qp,
    destroy_qp
);
handle!(
    /// A memory region.
    Mr,
    sys::ibv_mr,
    dereg_mr
);

impl Channel {
    /// The channel's file descriptor (made non-blocking at creation).
    pub(super) fn fd(&self) -> c_int {
        // SAFETY: live channel.
        unsafe { (*self.ptr).fd }
    }
}

impl Cq {
    /// Polls at most `wc.len()` completions; the number written.
    pub(super) fn poll(&self, wc: &mut [sys::ibv_wc]) -> Result<usize> {
        // SAFETY: live CQ; `wc` has room for `wc.len()` entries.
        let n = unsafe { sys::poll_cq(self.ptr, wc) };
        usize::try_from(n).map_err(|_| {
            Error::system(format!(
                "verbs: polling a completion queue failed ({})",
                sys::rc_error(n)
            ))
        })
    }

    /// Asks for an event on the channel at the next completion.
    pub(super) fn arm(&self) -> Result<()> {
        // SAFETY: live CQ.
        let rc = unsafe { sys::req_notify_cq(self.ptr) };
        if rc != 0 {
            return Err(Error::system(format!(
                "verbs: arming a completion queue (ibv_req_notify_cq) failed: {}",
                sys::rc_error(rc)
            )));
        }
        Ok(())
    }
}

impl Qp {
    /// The queue pair number.
    pub(super) fn num(&self) -> u32 {
        // SAFETY: live QP.
        unsafe { (*self.ptr).qp_num }
    }
}

impl Mr {
    /// Local key (for scatter/gather entries).
    pub(super) fn lkey(&self) -> u32 {
        // SAFETY: live MR.
        unsafe { (*self.ptr).lkey }
    }

    /// Remote key (for peers' RDMA writes).
    pub(super) fn rkey(&self) -> u32 {
        // SAFETY: live MR.
        unsafe { (*self.ptr).rkey }
    }
}

/// Registers `len` bytes at `ptr`: for local writes and remote RDMA writes if `write`,
/// else for local reads only (sources of sends).
pub(super) fn register(
    lib: &'static Lib,
    pd: &Pd,
    ptr: *const u8,
    len: usize,
    write: bool,
) -> Result<Mr> {
    let access = if write {
        (sys::IBV_ACCESS_LOCAL_WRITE | sys::IBV_ACCESS_REMOTE_WRITE) as c_int
    } else {
        0
    };
    // SAFETY: live PD; the caller keeps the memory mapped while the region exists (the
    // library only pins the pages; it writes nothing here).
    let mr = unsafe { (lib.reg_mr)(pd.ptr(), ptr as *mut _, len, access) };
    if mr.is_null() {
        let e = sys::errno();
        let hint = if e.raw_os_error() == Some(libc::ENOMEM) {
            " (the locked-memory limit may be too low: raise `ulimit -l`)"
        } else {
            ""
        };
        return Err(Error::system(format!(
            "verbs: registering {len} bytes at {ptr:p} (ibv_reg_mr) failed: {e}{hint}"
        )));
    }
    Ok(Mr::own(lib, mr))
}

/// A completion queue of at least `entries` entries, raising events on `channel`.
pub(super) fn create_cq(
    lib: &'static Lib,
    ctx: &Context,
    channel: &Channel,
    entries: u32,
) -> Result<Cq> {
    let n = c_int::try_from(entries).unwrap_or(c_int::MAX);
    // SAFETY: live context and channel.
    let cq = unsafe { (lib.create_cq)(ctx.ptr(), n, std::ptr::null_mut(), channel.ptr(), 0) };
    if cq.is_null() {
        return Err(Error::system(format!(
            "verbs: creating a completion queue of {entries} entries failed: {}",
            sys::errno()
        )));
    }
    Ok(Cq::own(lib, cq))
}

/// Sizes of a queue pair's queues.
#[derive(Debug, Clone, Copy)]
pub(super) struct QpSizes {
    pub send: u32,
    pub recv: u32,
    /// Inline data wanted; the QP may grant less (see the returned value).
    pub inline: u32,
}

/// An RC queue pair on `cq` (both directions), in RESET state, and the inline size the
/// device granted. A device that refuses the inline size gets a second try without.
pub(super) fn create_rc(lib: &'static Lib, pd: &Pd, cq: &Cq, sizes: QpSizes) -> Result<(Qp, u32)> {
    let mut last = None;
    for inline in [sizes.inline, 0] {
        // SAFETY: all-zero is a valid ibv_qp_init_attr (null pointers, zero sizes).
        let mut a: sys::ibv_qp_init_attr = unsafe { std::mem::zeroed() };
        a.send_cq = cq.ptr();
        a.recv_cq = cq.ptr();
        a.qp_type = sys::IBV_QPT_RC;
        a.cap = sys::ibv_qp_cap {
            max_send_wr: sizes.send,
            max_recv_wr: sizes.recv,
            max_send_sge: 2,
            max_recv_sge: 1,
            max_inline_data: inline,
        };
        // SAFETY: live PD and CQ; `a` is initialised.
        let qp = unsafe { (lib.create_qp)(pd.ptr(), &mut a) };
        if !qp.is_null() {
            return Ok((Qp::own(lib, qp), a.cap.max_inline_data));
        }
        last = Some(sys::errno());
    }
    Err(Error::system(format!(
        "verbs: creating an RC queue pair ({} send / {} receive entries) failed: {}",
        sizes.send,
        sizes.recv,
        last.unwrap_or_else(|| std::io::Error::other("unknown"))
    )))
}

/// What one side tells the other about a queue pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct QpEnd {
    pub qpn: u32,
    pub psn: u32,
}

/// Where the peer's port is, and how this side reaches it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Path {
    pub port: u8,
    pub gid_index: u8,
    pub remote_gid: [u8; 16],
    pub remote_lid: u16,
    /// Ethernet link layer (RoCE): addressing is by GID, always with a GRH.
    pub roce: bool,
    /// `ibv_mtu` value: the smaller of both ports' active MTU.
    pub mtu: u32,
    pub traffic_class: u8,
    pub service_level: u8,
    /// Local ACK timeout exponent (4.096 us * 2^timeout per try).
    pub timeout: u8,
    pub retry_cnt: u8,
}

fn modify(lib: &Lib, qp: &Qp, attr: &mut sys::ibv_qp_attr, mask: u32, what: &str) -> Result<()> {
    // SAFETY: live QP; `attr` is initialised for the fields `mask` names.
    let rc = unsafe { (lib.modify_qp)(qp.ptr(), attr, mask as c_int) };
    if rc != 0 {
        return Err(Error::system(format!(
            "verbs: moving queue pair {} to {what} failed: {}",
            qp.num(),
            sys::rc_error(rc)
        )));
    }
    Ok(())
}

/// RESET -> INIT: bound to `port`, accepting remote writes.
pub(super) fn to_init(lib: &Lib, qp: &Qp, port: u8) -> Result<()> {
    // SAFETY: all-zero is a valid ibv_qp_attr.
    let mut a: sys::ibv_qp_attr = unsafe { std::mem::zeroed() };
    a.qp_state = sys::IBV_QPS_INIT;
    a.pkey_index = 0;
    a.port_num = port;
    a.qp_access_flags = sys::IBV_ACCESS_REMOTE_WRITE | sys::IBV_ACCESS_LOCAL_WRITE;
    let mask =
        sys::IBV_QP_STATE | sys::IBV_QP_PKEY_INDEX | sys::IBV_QP_PORT | sys::IBV_QP_ACCESS_FLAGS;
    modify(lib, qp, &mut a, mask, "INIT")
}

/// INIT -> RTR: connected to the peer's QP `remote` over `path`.
pub(super) fn to_rtr(lib: &Lib, qp: &Qp, path: &Path, remote: QpEnd) -> Result<()> {
    // SAFETY: all-zero is a valid ibv_qp_attr.
    let mut a: sys::ibv_qp_attr = unsafe { std::mem::zeroed() };
    a.qp_state = sys::IBV_QPS_RTR;
    a.path_mtu = path.mtu;
    a.dest_qp_num = remote.qpn;
    a.rq_psn = remote.psn;
    a.max_dest_rd_atomic = 1;
    // 0.64 ms before a sender retries a write that found no posted receive (we keep the
    // receive queue full, so this is a safety net, not a path taken).
    a.min_rnr_timer = 12;
    a.ah_attr.port_num = path.port;
    a.ah_attr.sl = path.service_level;
    if path.roce {
        // RoCE has no LIDs: every packet carries a GRH addressed by GID; the GID index
        // picks RoCE v1/v2 and the source IP.
        a.ah_attr.is_global = 1;
        a.ah_attr.grh.dgid.raw = path.remote_gid;
        a.ah_attr.grh.sgid_index = path.gid_index;
        a.ah_attr.grh.hop_limit = 64;
        a.ah_attr.grh.traffic_class = path.traffic_class;
    } else {
        a.ah_attr.dlid = path.remote_lid;
    }
    let mask = sys::IBV_QP_STATE
        | sys::IBV_QP_AV
        | sys::IBV_QP_PATH_MTU
        | sys::IBV_QP_DEST_QPN
        | sys::IBV_QP_RQ_PSN
        | sys::IBV_QP_MAX_DEST_RD_ATOMIC
        | sys::IBV_QP_MIN_RNR_TIMER;
    modify(lib, qp, &mut a, mask, "RTR")
}

/// RTR -> RTS: sending from `psn`, with the path's retry settings.
pub(super) fn to_rts(lib: &Lib, qp: &Qp, path: &Path, psn: u32) -> Result<()> {
    // SAFETY: all-zero is a valid ibv_qp_attr.
    let mut a: sys::ibv_qp_attr = unsafe { std::mem::zeroed() };
    a.qp_state = sys::IBV_QPS_RTS;
    a.sq_psn = psn;
    a.timeout = path.timeout;
    a.retry_cnt = path.retry_cnt;
    // 7 = retry for ever on "receiver not ready": see min_rnr_timer above.
    a.rnr_retry = 7;
    a.max_rd_atomic = 1;
    let mask = sys::IBV_QP_STATE
        | sys::IBV_QP_SQ_PSN
        | sys::IBV_QP_TIMEOUT
        | sys::IBV_QP_RETRY_CNT
        | sys::IBV_QP_RNR_RETRY
        | sys::IBV_QP_MAX_QP_RD_ATOMIC;
    modify(lib, qp, &mut a, mask, "RTS")
}
