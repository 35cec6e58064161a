//! libfabric, loaded at run time, and the calls oxccl makes into it.
//!
//! Owns: `dlopen("libfabric.so.1")` and the few exported symbols (`fi_getinfo`,
//! `fi_freeinfo`, `fi_dupinfo`, `fi_fabric`, `fi_strerror`, `fi_version`), and thin
//! wrappers for libfabric's `static inline` calls (`fi_domain`, `fi_endpoint`, `fi_send`,
//! `fi_writedata`, `fi_cq_read`, `fi_close`, ...). Those inline functions only follow a
//! pointer to an ops table inside the object and call through it; the wrappers here do the
//! same, so nothing has to be compiled against libfabric's headers. A missing entry in an
//! ops table is reported as `-FI_ENOSYS`, as libfabric's own `fi_no_*` stubs do.
//!
//! The library is loaded once per process and never unloaded (providers may keep threads).

use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::OnceLock;

use super::bindings as fi;
use crate::error::{Error, Result};
use crate::sys::dl::Library;

pub(super) use fi::{fi_addr_t, fi_cq_data_entry, fi_cq_err_entry, fi_info};

/// `FI_ADDR_UNSPEC` (`(uint64_t)-1`; a cast bindgen cannot translate).
pub(super) const FI_ADDR_UNSPEC: fi_addr_t = u64::MAX;

/// The API version oxccl asks for: the one of the headers its bindings come from.
pub(super) const API_VERSION: u32 = fi_version(1, 17);

/// `FI_VERSION(major, minor)` (a macro bindgen cannot translate).
pub(super) const fn fi_version(major: u32, minor: u32) -> u32 {
    (major << 16) | minor
}

/// The shared object oxccl loads.
pub(super) const LIBRARY: &str = "libfabric.so.1";

const ENOSYS: c_int = fi::FI_ENOSYS as c_int;

type GetInfo = unsafe extern "C" fn(
    u32,
    *const c_char,
    *const c_char,
    u64,
    *const fi_info,
    *mut *mut fi_info,
) -> c_int;
type FreeInfo = unsafe extern "C" fn(*mut fi_info);
type DupInfo = unsafe extern "C" fn(*const fi_info) -> *mut fi_info;
type Fabric =
    unsafe extern "C" fn(*mut fi::fi_fabric_attr, *mut *mut fi::fid_fabric, *mut c_void) -> c_int;
type StrError = unsafe extern "C" fn(c_int) -> *const c_char;
type Version = unsafe extern "C" fn() -> u32;

/// The exported entry points of a loaded libfabric.
pub(super) struct Lib {
    getinfo: GetInfo,
    freeinfo: FreeInfo,
    dupinfo: DupInfo,
    fabric: Fabric,
    strerror: StrError,
    /// The library's own version (`fi_version()`), for messages.
    pub version: u32,
}

// SAFETY: the fields are plain function pointers into a library that is never unloaded;
// libfabric's global entry points are thread-safe.
unsafe impl Send for Lib {}
// SAFETY: as above.
unsafe impl Sync for Lib {}

static LIB: OnceLock<std::result::Result<Lib, String>> = OnceLock::new();

/// The process's libfabric, loaded on first use; a clear error when it is not installed.
pub(super) fn lib() -> Result<&'static Lib> {
    LIB.get_or_init(load)
        .as_ref()
        .map_err(|m| Error::system(m.clone()))
}

fn load() -> std::result::Result<Lib, String> {
    let dl = Library::open(LIBRARY).map_err(|e| {
        format!(
            "fabric: cannot load {LIBRARY} ({e}); install libfabric (Debian: apt-get install \
             libfabric1) or add its directory to LD_LIBRARY_PATH"
        )
    })?;
    let sym = |s: &str| {
        dl.sym(s)
            .map_err(|e| format!("fabric: {LIBRARY} has no symbol {s} ({e}); is it libfabric?"))
    };
    // SAFETY: each symbol is the libfabric function of that name, whose C signature the
    // type alias repeats (from rdma/fabric.h).
    unsafe {
        let version: Version = std::mem::transmute::<*mut c_void, Version>(sym("fi_version")?);
        let lib = Lib {
            getinfo: std::mem::transmute::<*mut c_void, GetInfo>(sym("fi_getinfo")?),
            freeinfo: std::mem::transmute::<*mut c_void, FreeInfo>(sym("fi_freeinfo")?),
            dupinfo: std::mem::transmute::<*mut c_void, DupInfo>(sym("fi_dupinfo")?),
            fabric: std::mem::transmute::<*mut c_void, Fabric>(sym("fi_fabric")?),
            strerror: std::mem::transmute::<*mut c_void, StrError>(sym("fi_strerror")?),
            version: version(),
        };
        if lib.version < API_VERSION {
            return Err(format!(
                "fabric: {LIBRARY} is libfabric {}.{}; oxccl needs 1.17 or newer",
                lib.version >> 16,
                lib.version & 0xffff
            ));
        }
        Ok(lib)
    }
}

impl Lib {
    /// `fi_strerror` of a libfabric return code (negative or positive).
    pub fn strerror(&self, rc: i64) -> String {
        let code = c_int::try_from(rc.unsigned_abs()).unwrap_or(c_int::MAX);
        // SAFETY: fi_strerror accepts any code and returns a static string.
        let p = unsafe { (self.strerror)(code) };
        if p.is_null() {
            format!("error {code}")
        } else {
            // SAFETY: non-null static NUL-terminated string.
            unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
        }
    }

    /// An empty `fi_info` allocated by the library (`fi_allocinfo`), so that its size and
    /// sub-structures are the library's own.
    pub fn alloc_info(&self) -> Result<*mut fi_info> {
        // SAFETY: fi_dupinfo(NULL) allocates a zeroed info with all attribute structs.
        let p = unsafe { (self.dupinfo)(std::ptr::null()) };
        if p.is_null() {
            Err(Error::system("fabric: fi_allocinfo failed (out of memory)"))
        } else {
            Ok(p)
        }
    }

    /// `fi_getinfo`. `Ok(None)` when no provider matches (`-FI_ENODATA`).
    ///
    /// # Safety
    /// `hints` must be null or an info from [`Lib::alloc_info`] / the library.
    pub unsafe fn getinfo(
        &self,
        node: Option<&CStr>,
        flags: u64,
        hints: *const fi_info,
    ) -> std::result::Result<Option<*mut fi_info>, c_int> {
        let mut out: *mut fi_info = std::ptr::null_mut();
        let node = node.map_or(std::ptr::null(), |n| n.as_ptr());
        // SAFETY: forwarded from the caller; `out` is a local.
        let rc =
            unsafe { (self.getinfo)(API_VERSION, node, std::ptr::null(), flags, hints, &mut out) };
        if rc == -(fi::FI_ENODATA as c_int) || (rc == 0 && out.is_null()) {
            return Ok(None);
        }
        if rc != 0 {
            return Err(rc);
        }
        Ok(Some(out))
    }

    /// `fi_freeinfo` (null is ignored).
    ///
    /// # Safety
    /// `info` must come from this library and not be used afterwards.
    pub unsafe fn freeinfo(&self, info: *mut fi_info) {
        if !info.is_null() {
            // SAFETY: forwarded.
            unsafe { (self.freeinfo)(info) }
        }
    }

    /// `fi_dupinfo`.
    ///
    /// # Safety
    /// `info` must be a valid info of this library.
    pub unsafe fn dupinfo(&self, info: *const fi_info) -> Result<*mut fi_info> {
        // SAFETY: forwarded.
        let p = unsafe { (self.dupinfo)(info) };
        if p.is_null() {
            Err(Error::system("fabric: fi_dupinfo failed (out of memory)"))
        } else {
            Ok(p)
        }
    }

    /// `fi_fabric`.
    ///
    /// # Safety
    /// `attr` must be the fabric attributes of an info returned by `fi_getinfo`.
    pub unsafe fn fabric(
        &self,
        attr: *mut fi::fi_fabric_attr,
        out: &mut *mut fi::fid_fabric,
    ) -> c_int {
        // SAFETY: forwarded.
        unsafe { (self.fabric)(attr, out, std::ptr::null_mut()) }
    }
}

/// Calls an entry of an ops table, or yields `-FI_ENOSYS` where the provider left it empty.
macro_rules! op {
    ($table:expr, $f:ident ( $($arg:expr),* $(,)? ), $ret:ty) => {{
        let table = $table;
        if table.is_null() {
            -(ENOSYS as $ret)
        } else {
            match (*table).$f {
                Some(f) => f($($arg),*),
                None => -(ENOSYS as $ret),
            }
        }
    }};
}

// The wrappers below are libfabric's inline functions (rdma/fi_*.h) spelled out. Each is
// unsafe: the objects must be live objects of the loaded library, buffers valid as the
// libfabric man pages require.

/// `fi_domain`.
pub(super) unsafe fn domain(
    fabric: *mut fi::fid_fabric,
    info: *mut fi_info,
    out: &mut *mut fi::fid_domain,
) -> c_int {
    // SAFETY: see the section comment.
    unsafe {
        op!(
            (*fabric).ops,
            domain(fabric, info, out, std::ptr::null_mut()),
            c_int
        )
    }
}

/// `fi_endpoint`.
pub(super) unsafe fn endpoint(
    dom: *mut fi::fid_domain,
    info: *mut fi_info,
    out: &mut *mut fi::fid_ep,
) -> c_int {
    // SAFETY: see the section comment.
    unsafe {
        op!(
            (*dom).ops,
            endpoint(dom, info, out, std::ptr::null_mut()),
            c_int
        )
    }
}

/// `fi_cq_open`.
pub(super) unsafe fn cq_open(
    dom: *mut fi::fid_domain,
    attr: *mut fi::fi_cq_attr,
    out: &mut *mut fi::fid_cq,
) -> c_int {
    // SAFETY: see the section comment.
    unsafe {
        op!(
            (*dom).ops,
            cq_open(dom, attr, out, std::ptr::null_mut()),
            c_int
        )
    }
}

/// `fi_av_open`.
pub(super) unsafe fn av_open(
    dom: *mut fi::fid_domain,
    attr: *mut fi::fi_av_attr,
    out: &mut *mut fi::fid_av,
) -> c_int {
    // SAFETY: see the section comment.
    unsafe {
        op!(
            (*dom).ops,
            av_open(dom, attr, out, std::ptr::null_mut()),
            c_int
        )
    }
}

/// `fi_close`.
pub(super) unsafe fn close(f: *mut fi::fid) -> c_int {
    if f.is_null() {
        return 0;
    }
    // SAFETY: see the section comment.
    unsafe { op!((*f).ops, close(f), c_int) }
}

/// `fi_ep_bind` / `fi_mr_bind`: binds `what` to `f`.
pub(super) unsafe fn bind(f: *mut fi::fid, what: *mut fi::fid, flags: u64) -> c_int {
    // SAFETY: see the section comment.
    unsafe { op!((*f).ops, bind(f, what, flags), c_int) }
}

/// `fi_enable` / `fi_mr_enable`.
pub(super) unsafe fn enable(f: *mut fi::fid) -> c_int {
    // SAFETY: see the section comment.
    unsafe {
        op!(
            (*f).ops,
            control(f, fi::FI_ENABLE as c_int, std::ptr::null_mut()),
            c_int
        )
    }
}

/// `fi_getname` of an endpoint.
pub(super) unsafe fn getname(
    ep: *mut fi::fid_ep,
    buf: &mut [u8],
) -> std::result::Result<usize, c_int> {
    let mut len = buf.len();
    // SAFETY: see the section comment; `buf` is writable for `len` bytes.
    let rc = unsafe {
        op!(
            (*ep).cm,
            getname(&mut (*ep).fid, buf.as_mut_ptr().cast(), &mut len),
            c_int
        )
    };
    if rc == 0 {
        Ok(len)
    } else if rc == -(fi::FI_ETOOSMALL as c_int) {
        Err(-(fi::FI_ETOOSMALL as c_int))
    } else {
        Err(rc)
    }
}

/// `fi_av_insert` of one address; the number of addresses inserted (1 on success).
pub(super) unsafe fn av_insert(av: *mut fi::fid_av, addr: &[u8], out: &mut fi_addr_t) -> c_int {
    // SAFETY: see the section comment; `addr` is a provider address of the right format.
    unsafe {
        op!(
            (*av).ops,
            insert(av, addr.as_ptr().cast(), 1, out, 0, std::ptr::null_mut()),
            c_int
        )
    }
}

/// `fi_mr_reg`.
#[allow(clippy::too_many_arguments)] // the C call's arguments
pub(super) unsafe fn mr_reg(
    dom: *mut fi::fid_domain,
    buf: *const u8,
    len: usize,
    access: u64,
    key: u64,
    out: &mut *mut fi::fid_mr,
) -> c_int {
    // SAFETY: see the section comment.
    unsafe {
        op!(
            (*dom).mr,
            reg(
                &mut (*dom).fid,
                buf.cast(),
                len,
                access,
                0,
                key,
                0,
                out,
                std::ptr::null_mut()
            ),
            c_int
        )
    }
}

/// `fi_send`.
pub(super) unsafe fn send(
    ep: *mut fi::fid_ep,
    buf: *const u8,
    len: usize,
    desc: *mut c_void,
    dest: fi_addr_t,
    ctx: *mut c_void,
) -> isize {
    // SAFETY: see the section comment.
    unsafe { op!((*ep).msg, send(ep, buf.cast(), len, desc, dest, ctx), isize) }
}

/// `fi_recv`.
pub(super) unsafe fn recv(
    ep: *mut fi::fid_ep,
    buf: *mut u8,
    len: usize,
    desc: *mut c_void,
    ctx: *mut c_void,
) -> isize {
    // SAFETY: see the section comment.
    unsafe {
        op!(
            (*ep).msg,
            recv(ep, buf.cast(), len, desc, FI_ADDR_UNSPEC, ctx),
            isize
        )
    }
}

/// `fi_tsend`.
pub(super) unsafe fn tsend(
    ep: *mut fi::fid_ep,
    buf: *const u8,
    len: usize,
    desc: *mut c_void,
    dest: fi_addr_t,
    tag: u64,
    ctx: *mut c_void,
) -> isize {
    // SAFETY: see the section comment.
    unsafe {
        op!(
            (*ep).tagged,
            send(ep, buf.cast(), len, desc, dest, tag, ctx),
            isize
        )
    }
}

/// `fi_trecv` from anyone.
pub(super) unsafe fn trecv(
    ep: *mut fi::fid_ep,
    buf: *mut u8,
    len: usize,
    desc: *mut c_void,
    tag: u64,
    ignore: u64,
    ctx: *mut c_void,
) -> isize {
    // SAFETY: see the section comment.
    unsafe {
        op!(
            (*ep).tagged,
            recv(ep, buf.cast(), len, desc, FI_ADDR_UNSPEC, tag, ignore, ctx),
            isize
        )
    }
}

/// `fi_writedata`.
#[allow(clippy::too_many_arguments)] // the C call's arguments
pub(super) unsafe fn writedata(
    ep: *mut fi::fid_ep,
    buf: *const u8,
    len: usize,
    desc: *mut c_void,
    data: u64,
    dest: fi_addr_t,
    addr: u64,
    key: u64,
    ctx: *mut c_void,
) -> isize {
    // SAFETY: see the section comment.
    unsafe {
        op!(
            (*ep).rma,
            writedata(ep, buf.cast(), len, desc, data, dest, addr, key, ctx),
            isize
        )
    }
}

/// `fi_cq_read` into `buf`.
pub(super) unsafe fn cq_read(cq: *mut fi::fid_cq, buf: &mut [fi_cq_data_entry]) -> isize {
    // SAFETY: see the section comment; `buf` holds `len` entries of the CQ's format.
    unsafe {
        op!(
            (*cq).ops,
            read(cq, buf.as_mut_ptr().cast(), buf.len()),
            isize
        )
    }
}

/// `fi_cq_sread` into `buf`, waiting at most `timeout_ms`.
pub(super) unsafe fn cq_sread(
    cq: *mut fi::fid_cq,
    buf: &mut [fi_cq_data_entry],
    timeout_ms: c_int,
) -> isize {
    // SAFETY: see the section comment.
    unsafe {
        op!(
            (*cq).ops,
            sread(
                cq,
                buf.as_mut_ptr().cast(),
                buf.len(),
                std::ptr::null(),
                timeout_ms
            ),
            isize
        )
    }
}

/// `fi_cq_readerr`.
pub(super) unsafe fn cq_readerr(cq: *mut fi::fid_cq, entry: &mut fi_cq_err_entry) -> isize {
    // SAFETY: see the section comment.
    unsafe { op!((*cq).ops, readerr(cq, entry, 0), isize) }
}

/// A C string from a provider's attribute (null: empty).
///
/// # Safety
/// `p` must be null or a NUL-terminated string.
pub(super) unsafe fn cstr(p: *const c_char) -> String {
    if p.is_null() {
        String::new()
    } else {
        // SAFETY: forwarded.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}
