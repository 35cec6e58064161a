//! The libfabric objects of one rank — fabric, domain, completion queue, address vector,
//! one `FI_EP_RDM` endpoint — memory registration, and the posting primitives.
//!
//! Owns every `fid` it opens and closes them in dependency order on drop. Knows nothing of
//! connections: callers pass destination addresses and completion contexts.
//!
//! Memory registration honours the provider's `mr_mode`: keys are the provider's
//! (`FI_MR_PROV_KEY`) or chosen here, unique per domain; remote addresses are virtual
//! addresses (`FI_MR_VIRT_ADDR`) or offsets into the registration; a registration is bound
//! to the endpoint and enabled where `FI_MR_ENDPOINT` asks for it; local descriptors are
//! passed where `FI_MR_LOCAL` requires them. A registration is reused while a call lasts and
//! closed when the call ends ([`Endpoint::drop_unused`]): kept longer, it could outlive the
//! memory it covers, and a later buffer at the same address would silently reach the old
//! pages on hardware that pins them. Providers for such hardware keep their own cache,
//! which watches for freed memory.

use std::ffi::{c_int, c_void};

use super::bindings as fi;
use super::device::Chosen;
use super::sys::{self, fi_addr_t, fi_cq_data_entry, fi_cq_err_entry, Lib};
use crate::error::{Error, Result};

/// Unused registrations kept for reuse within a call.
const MR_CACHE: usize = 64;

/// Return code of a posting call that means "no room now, progress and retry".
pub(super) const EAGAIN: isize = -(fi::FI_EAGAIN as isize);

/// One cached registration.
struct Mr {
    base: usize,
    len: usize,
    mr: *mut fi::fid_mr,
    /// Requests using it; only unused entries are evicted.
    refs: u32,
    /// Last use, for eviction.
    stamp: u64,
    id: u64,
}

/// A registration in use: what data calls and peers need.
#[derive(Debug, Clone, Copy)]
pub(super) struct MrUse {
    /// Identifies the cache entry for [`Endpoint::release`].
    pub id: u64,
    /// Local descriptor (`fi_mr_desc`).
    pub desc: *mut c_void,
    /// Remote key (`fi_mr_key`).
    pub key: u64,
    /// The address a peer writes to for the registered pointer: the virtual address under
    /// `FI_MR_VIRT_ADDR`, else the offset into the registration.
    pub remote_addr: u64,
}

/// A rank's libfabric objects.
pub(super) struct Endpoint {
    lib: &'static Lib,
    /// The provider and its info.
    pub chosen: Chosen,
    fabric: *mut fi::fid_fabric,
    domain: *mut fi::fid_domain,
    cq: *mut fi::fid_cq,
    av: *mut fi::fid_av,
    ep: *mut fi::fid_ep,
    /// The CQ has a wait object: `fi_cq_sread` can sleep.
    pub cq_wait: bool,
    /// This endpoint's address (`fi_getname`).
    pub name: Vec<u8>,
    mrs: Vec<Mr>,
    next_key: u64,
    next_id: u64,
    clock: u64,
}

// SAFETY: the objects are used from one thread at a time (the transport is driven by one
// thread, `FI_THREAD_DOMAIN`); the raw pointers are owned by this value.
unsafe impl Send for Endpoint {}

impl Endpoint {
    /// Opens fabric, domain, CQ, AV and an enabled RDM endpoint for `chosen`.
    pub fn open(chosen: Chosen) -> Result<Endpoint> {
        let lib = sys::lib()?;
        if chosen.provider.split(';').any(|p| p == "shm") {
            clear_stale_shm_names();
        }
        let mut e = Endpoint {
            lib,
            chosen,
            fabric: std::ptr::null_mut(),
            domain: std::ptr::null_mut(),
            cq: std::ptr::null_mut(),
            av: std::ptr::null_mut(),
            ep: std::ptr::null_mut(),
            cq_wait: false,
            name: Vec::new(),
            mrs: Vec::new(),
            next_key: 1,
            next_id: 1,
            clock: 0,
        };
        // On error `e` drops and closes whatever was opened.
        e.open_all()?;
        Ok(e)
    }

    fn check(&self, what: &str, rc: c_int) -> Result<()> {
        if rc == 0 {
            Ok(())
        } else {
            Err(Error::system(format!(
                "fabric({}/{}): {what} failed: {}",
                self.chosen.provider,
                self.chosen.domain,
                self.lib.strerror(rc.into())
            )))
        }
    }

    fn open_all(&mut self) -> Result<()> {
        let info = self.chosen.info;
        // SAFETY: `info` is a complete info of the library; every out-pointer is a field of
        // `self`, closed on drop if set.
        unsafe {
            let rc = self.lib.fabric((*info).fabric_attr, &mut self.fabric);
            self.check("fi_fabric", rc)?;
            let rc = sys::domain(self.fabric, info, &mut self.domain);
            self.check("fi_domain", rc)?;
            // A CQ with a wait object lets an idle rank sleep in fi_cq_sread; not every
            // provider has one, so fall back to polling. shm's sread (libfabric 1.17) spins
            // in sched_yield past its timeout while the peer's progress is what it waits
            // for, so shm always polls.
            let mut attr: fi::fi_cq_attr = std::mem::zeroed();
            attr.format = fi::FI_CQ_FORMAT_DATA;
            attr.wait_obj = fi::FI_WAIT_UNSPEC;
            let shm = self.chosen.provider.split(';').any(|p| p == "shm");
            if !shm && sys::cq_open(self.domain, &mut attr, &mut self.cq) == 0 {
                self.cq_wait = true;
            } else {
                self.cq = std::ptr::null_mut();
                attr.wait_obj = fi::FI_WAIT_NONE;
                let rc = sys::cq_open(self.domain, &mut attr, &mut self.cq);
                self.check("fi_cq_open", rc)?;
            }
            let mut av: fi::fi_av_attr = std::mem::zeroed();
            let want = (*(*info).domain_attr).av_type;
            av.type_ = if want == fi::FI_AV_UNSPEC {
                fi::FI_AV_TABLE
            } else {
                want
            };
            let rc = sys::av_open(self.domain, &mut av, &mut self.av);
            self.check("fi_av_open", rc)?;
            let rc = sys::endpoint(self.domain, info, &mut self.ep);
            self.check("fi_endpoint", rc)?;
            let ep = &mut (*self.ep).fid as *mut fi::fid;
            let rc = sys::bind(ep, &mut (*self.av).fid, 0);
            self.check("fi_ep_bind(av)", rc)?;
            let rc = sys::bind(
                ep,
                &mut (*self.cq).fid,
                (fi::FI_TRANSMIT | fi::FI_RECV) as u64,
            );
            self.check("fi_ep_bind(cq)", rc)?;
            let rc = sys::enable(ep);
            if rc == -(fi::FI_EINVAL as c_int) && self.chosen.provider.starts_with("verbs;") {
                // rxm asks the device for a completion queue of (128 + 128) entries per
                // peer of FI_UNIVERSE_SIZE (default 1024): 262144, more than SoftRoCE
                // (32767) and some other devices allow.
                self.check(
                    "fi_enable (verbs;ofi_rxm sizes its completion queue as 256 entries \
                     times FI_UNIVERSE_SIZE, default 1024; on a device with fewer, such as \
                     SoftRoCE with 32767, set FI_UNIVERSE_SIZE to at most max_cqe / 256, \
                     e.g. 64)",
                    rc,
                )?;
            }
            self.check("fi_enable", rc)?;
            let mut buf = [0u8; 256];
            match sys::getname(self.ep, &mut buf) {
                Ok(n) if n <= buf.len() => self.name = buf[..n].to_vec(),
                Ok(n) => self.check("fi_getname", -(n as c_int))?,
                Err(rc) => self.check("fi_getname", rc)?,
            }
        }
        Ok(())
    }

    /// Inserts a peer's address into the address vector.
    pub fn insert(&mut self, addr: &[u8]) -> Result<fi_addr_t> {
        let mut out: fi_addr_t = sys::FI_ADDR_UNSPEC;
        // SAFETY: `av` is open; `addr` is a name a peer's fi_getname produced.
        let rc = unsafe { sys::av_insert(self.av, addr, &mut out) };
        if rc == 1 {
            return Ok(out);
        }
        Err(Error::system(format!(
            "fabric({}): fi_av_insert rejected a peer address of {} bytes{}",
            self.chosen.provider,
            addr.len(),
            if rc < 0 {
                format!(": {}", self.lib.strerror(rc.into()))
            } else {
                String::new()
            }
        )))
    }

    /// Posts a message (`fi_send`, or `fi_tsend` with tag 0 on tagged-only providers).
    ///
    /// # Safety
    /// `buf..buf+len` stays valid until the completion for `ctx` is read; `ctx` points to
    /// a live context of at least `FI_CONTEXT2`'s size.
    pub unsafe fn send(
        &mut self,
        buf: *const u8,
        len: usize,
        desc: *mut c_void,
        dest: fi_addr_t,
        ctx: *mut c_void,
    ) -> isize {
        // SAFETY: forwarded.
        unsafe {
            if self.chosen.tagged_only {
                sys::tsend(self.ep, buf, len, desc, dest, 0, ctx)
            } else {
                sys::send(self.ep, buf, len, desc, dest, ctx)
            }
        }
    }

    /// Posts a receive from anyone (`fi_recv`, or `fi_trecv` matching every tag).
    ///
    /// # Safety
    /// As [`Endpoint::send`], for a writable buffer.
    pub unsafe fn recv(
        &mut self,
        buf: *mut u8,
        len: usize,
        desc: *mut c_void,
        ctx: *mut c_void,
    ) -> isize {
        // SAFETY: forwarded.
        unsafe {
            if self.chosen.tagged_only {
                sys::trecv(self.ep, buf, len, desc, 0, u64::MAX, ctx)
            } else {
                sys::recv(self.ep, buf, len, desc, ctx)
            }
        }
    }

    /// Posts an RMA write with remote CQ data (`fi_writedata`).
    ///
    /// # Safety
    /// As [`Endpoint::send`]; `addr`/`key` describe a peer registration of at least `len`
    /// bytes.
    #[allow(clippy::too_many_arguments)] // the C call's arguments
    pub unsafe fn writedata(
        &mut self,
        buf: *const u8,
        len: usize,
        desc: *mut c_void,
        data: u64,
        dest: fi_addr_t,
        addr: u64,
        key: u64,
        ctx: *mut c_void,
    ) -> isize {
        // SAFETY: forwarded.
        unsafe { sys::writedata(self.ep, buf, len, desc, data, dest, addr, key, ctx) }
    }

    /// Reads completions into `buf`: the count, `-FI_EAGAIN` when none, `-FI_EAVAIL` when
    /// an error entry is next.
    pub fn read(&mut self, buf: &mut [fi_cq_data_entry]) -> isize {
        // SAFETY: the CQ is open and was created with the DATA format.
        unsafe { sys::cq_read(self.cq, buf) }
    }

    /// Waits up to `timeout_ms` for completions (`fi_cq_sread`); as [`Endpoint::read`].
    pub fn sread(&mut self, buf: &mut [fi_cq_data_entry], timeout_ms: c_int) -> isize {
        // SAFETY: as `read`; only called when the CQ has a wait object.
        unsafe { sys::cq_sread(self.cq, buf, timeout_ms) }
    }

    /// Reads the next error entry.
    pub fn read_err(&mut self) -> Option<fi_cq_err_entry> {
        // SAFETY: a zeroed entry (no err_data buffer) is valid input to fi_cq_readerr.
        let mut e: fi_cq_err_entry = unsafe { std::mem::zeroed() };
        // SAFETY: the CQ is open.
        let rc = unsafe { sys::cq_readerr(self.cq, &mut e) };
        (rc > 0).then_some(e)
    }

    /// libfabric's text for a return code.
    pub fn strerror(&self, rc: i64) -> String {
        self.lib.strerror(rc)
    }

    /// A registration covering `ptr..ptr+len` for local use and remote writes, from the
    /// cache or new; pair with [`Endpoint::release`].
    pub fn acquire(&mut self, ptr: *const u8, len: usize) -> Result<MrUse> {
        let (start, end) = (ptr as usize, ptr as usize + len);
        self.clock += 1;
        let found = self
            .mrs
            .iter()
            .position(|m| m.base <= start && end <= m.base + m.len);
        let i = match found {
            Some(i) => i,
            None => {
                self.evict();
                let mr = self.register(ptr, len)?;
                self.next_id += 1;
                self.mrs.push(Mr {
                    base: start,
                    len,
                    mr,
                    refs: 0,
                    stamp: 0,
                    id: self.next_id,
                });
                self.mrs.len() - 1
            }
        };
        let m = &mut self.mrs[i];
        m.refs += 1;
        m.stamp = self.clock;
        // SAFETY: `m.mr` is an open registration.
        let (desc, key) = unsafe { ((*m.mr).mem_desc, (*m.mr).key) };
        let remote_addr = if self.chosen.mr(fi::FI_MR_VIRT_ADDR) {
            start as u64
        } else {
            (start - m.base) as u64
        };
        Ok(MrUse {
            id: m.id,
            desc,
            key,
            remote_addr,
        })
    }

    /// Closes every registration no request uses: the engine's call ended, and the memory
    /// they cover may be freed from now on.
    pub fn drop_unused(&mut self) {
        let mut i = 0;
        while i < self.mrs.len() {
            if self.mrs[i].refs == 0 {
                let m = self.mrs.swap_remove(i);
                // SAFETY: an open, unused registration, removed from the list before closing.
                unsafe { sys::close(&mut (*m.mr).fid) };
            } else {
                i += 1;
            }
        }
    }

    /// Ends one use of a registration (it stays open until the call ends).
    pub fn release(&mut self, id: u64) {
        if let Some(m) = self.mrs.iter_mut().find(|m| m.id == id) {
            m.refs = m.refs.saturating_sub(1);
        }
    }

    /// Closes a registration now, whoever uses it: a buffer that must no longer be
    /// reachable by peers' writes (its receive was abandoned).
    pub fn revoke(&mut self, id: u64) {
        if let Some(i) = self.mrs.iter().position(|m| m.id == id) {
            let m = self.mrs.swap_remove(i);
            // SAFETY: an open registration, removed from the cache before closing.
            unsafe { sys::close(&mut (*m.mr).fid) };
        }
    }

    /// Drops the least recently used unused registrations beyond the cache size.
    fn evict(&mut self) {
        while self.mrs.iter().filter(|m| m.refs == 0).count() >= MR_CACHE {
            let Some(i) = self
                .mrs
                .iter()
                .enumerate()
                .filter(|(_, m)| m.refs == 0)
                .min_by_key(|(_, m)| m.stamp)
                .map(|(i, _)| i)
            else {
                return;
            };
            let m = self.mrs.swap_remove(i);
            // SAFETY: an open, unused registration.
            unsafe { sys::close(&mut (*m.mr).fid) };
        }
    }

    /// `fi_mr_reg` with the provider's mr_mode honoured.
    fn register(&mut self, ptr: *const u8, len: usize) -> Result<*mut fi::fid_mr> {
        let access = (fi::FI_SEND
            | fi::FI_RECV
            | fi::FI_READ
            | fi::FI_WRITE
            | fi::FI_REMOTE_READ
            | fi::FI_REMOTE_WRITE) as u64;
        // Keys we choose must be unique per domain; with FI_MR_PROV_KEY they are ignored.
        let key = if self.chosen.mr(fi::FI_MR_PROV_KEY) {
            0
        } else {
            self.next_key += 1;
            self.next_key
        };
        let mut mr: *mut fi::fid_mr = std::ptr::null_mut();
        // SAFETY: the domain is open; `ptr..ptr+len` is memory the caller keeps alive while
        // the registration is used (and the cache only hands it out for that range).
        let rc = unsafe { sys::mr_reg(self.domain, ptr, len, access, key, &mut mr) };
        self.check(&format!("fi_mr_reg of {len} bytes"), rc)?;
        if self.chosen.mr(fi::FI_MR_ENDPOINT) {
            // SAFETY: `mr` and the endpoint are open.
            let rc = unsafe {
                let r = sys::bind(&mut (*mr).fid, &mut (*self.ep).fid, 0);
                if r == 0 {
                    sys::enable(&mut (*mr).fid)
                } else {
                    r
                }
            };
            if rc != 0 {
                // SAFETY: the registration just opened.
                unsafe { sys::close(&mut (*mr).fid) };
                self.check(
                    "binding a registration to the endpoint (FI_MR_ENDPOINT)",
                    rc,
                )?;
            }
        }
        Ok(mr)
    }

    /// Registers a buffer that lives as long as the endpoint (bounce buffers), outside the
    /// cache. Only needed under `FI_MR_LOCAL`; the descriptor is null otherwise.
    pub fn register_local(&mut self, buf: &mut [u8]) -> Result<*mut c_void> {
        if !self.chosen.mr(fi::FI_MR_LOCAL) {
            return Ok(std::ptr::null_mut());
        }
        let u = self.acquire(buf.as_ptr(), buf.len())?;
        Ok(u.desc)
    }
}

/// The libfabric objects of an endpoint, taken out of it; closed (endpoint first) when
/// dropped.
pub(super) struct Detached {
    fabric: *mut fi::fid_fabric,
    domain: *mut fi::fid_domain,
    cq: *mut fi::fid_cq,
    av: *mut fi::fid_av,
    ep: *mut fi::fid_ep,
    mrs: Vec<*mut fi::fid_mr>,
}

// SAFETY: nothing uses the objects any more but `Drop`, on whichever thread.
unsafe impl Send for Detached {}

impl Endpoint {
    /// Takes the objects out, leaving this endpoint empty (its drop closes nothing).
    pub fn detach(&mut self) -> Detached {
        Detached {
            fabric: std::mem::replace(&mut self.fabric, std::ptr::null_mut()),
            domain: std::mem::replace(&mut self.domain, std::ptr::null_mut()),
            cq: std::mem::replace(&mut self.cq, std::ptr::null_mut()),
            av: std::mem::replace(&mut self.av, std::ptr::null_mut()),
            ep: std::mem::replace(&mut self.ep, std::ptr::null_mut()),
            mrs: self.mrs.drain(..).map(|m| m.mr).collect(),
        }
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        drop(self.detach());
    }
}

impl Drop for Detached {
    fn drop(&mut self) {
        // SAFETY: each object was opened by `open_all` (or is null, which close ignores) and
        // is closed once, endpoint first so that nothing is in flight on the rest.
        unsafe {
            if !self.ep.is_null() {
                sys::close(&mut (*self.ep).fid);
            }
            for m in self.mrs.drain(..) {
                sys::close(&mut (*m).fid);
            }
            if !self.av.is_null() {
                sys::close(&mut (*self.av).fid);
            }
            if !self.cq.is_null() {
                sys::close(&mut (*self.cq).fid);
            }
            if !self.domain.is_null() {
                sys::close(&mut (*self.domain).fid);
            }
            if !self.fabric.is_null() {
                sys::close(&mut (*self.fabric).fid);
            }
        }
    }
}

/// libfabric's shm provider keeps an endpoint's region in `/dev/shm/<pid>:<domain>:<index>`,
/// created exclusively. A process that ends without closing its endpoints (killed, or
/// exiting with one in quarantine) leaves the files behind, and a later process given the
/// same pid then fails `fi_enable` with EBUSY. Before this process opens its first shm
/// endpoint no such file can be in use, so those carrying its pid are removed, once; and at
/// exit the names of endpoints still open are removed (the mappings stay valid).
fn clear_stale_shm_names() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        remove_own_shm_names();
        // SAFETY: registers a function without arguments that only removes files.
        unsafe { libc::atexit(remove_own_shm_names_at_exit) };
    });
}

fn remove_own_shm_names() {
    remove_names_of(std::path::Path::new("/dev/shm"), std::process::id());
}

extern "C" fn remove_own_shm_names_at_exit() {
    remove_own_shm_names();
}

/// Removes the files of `dir` named `<pid>:<digits and colons>`.
pub(super) fn remove_names_of(dir: &std::path::Path, pid: u32) {
    let prefix = format!("{pid}:");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let stale = name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .is_some_and(|rest| {
                !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit() || b == b':')
            });
        if stale {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}
