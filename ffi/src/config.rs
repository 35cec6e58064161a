//! `oxcclConfig_t`: per-communicator settings for `oxcclCommInitRankConfig` and
//! `oxcclCommSplit`, shaped as NCCL's `ncclConfig_t` (a size, a magic and a version first, so
//! the struct can grow: a library reads only the fields the caller's struct has). Fields left
//! as `OXCCL_CONFIG_INITIALIZER` sets them fall back to the `OXCCL_*` variables (or, for a
//! split, to the parent's settings).

use std::ffi::CStr;
use std::mem::{offset_of, size_of};
use std::os::raw::{c_char, c_int};
use std::time::Duration;

use oxccl_core::{Config, Error, Result};

/// The value of `oxcclConfig_t::magic` that `OXCCL_CONFIG_INITIALIZER` writes ("oxcl").
pub const OXCCL_CONFIG_MAGIC: u32 = 0x6f78_636c;

/// An `int` field left unset (the header's `OXCCL_CONFIG_UNDEF_INT`, INT_MIN).
pub const OXCCL_CONFIG_UNDEF_INT: c_int = c_int::MIN;

/// Settings of one communicator. Initialize it with `OXCCL_CONFIG_INITIALIZER`, then set the
/// fields wanted; strings are copied by the call that takes the config.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct oxcclConfig_t {
    /// `sizeof(oxcclConfig_t)` as the caller compiled it.
    pub size: usize,
    /// `OXCCL_CONFIG_MAGIC`.
    pub magic: u32,
    /// `OXCCL_VERSION_CODE` of the caller's header.
    pub version: u32,
    /// Deadline of every blocking wait in milliseconds (`OXCCL_TIMEOUT`), > 0.
    pub timeoutMs: c_int,
    /// Connections per peer pair for large messages (`OXCCL_NCHANNELS`), 1..=64.
    pub nChannels: c_int,
    /// Backend: "tcp", "verbs", "fabric" or "mem" (`OXCCL_TRANSPORT`); NULL: unset.
    pub transport: *const c_char,
    /// Forced algorithm (`OXCCL_ALGO`: "ring", "tree", "rd", "chain", "pairwise", ...);
    /// NULL: unset, the cost model chooses.
    pub algo: *const c_char,
    /// The communicator's name (`OXCCL_COMM_NAME`); NULL: unset.
    pub commName: *const c_char,
}

/// Whether the caller's struct of `size` bytes holds the field at `off` of `len` bytes.
fn has(size: usize, off: usize, len: usize) -> bool {
    off + len <= size
}

fn text(p: *const c_char, what: &str) -> Result<Option<String>> {
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: the caller passes a NUL-terminated string (the config's contract).
    let s = unsafe { CStr::from_ptr(p) };
    let s = s
        .to_str()
        .map_err(|_| Error::invalid_argument(format!("config.{what} is not UTF-8")))?;
    Ok(Some(s.to_string()))
}

/// `base` with the fields `config` sets; `config` NULL leaves `base` as it is.
///
/// # Safety
/// `config`, when not NULL, must point to a readable struct of at least `config.size` bytes
/// (at least the first three fields).
pub(crate) unsafe fn apply(config: *const oxcclConfig_t, base: Config) -> Result<Config> {
    if config.is_null() {
        return Ok(base);
    }
    // SAFETY: the header fields are there in every version.
    let (size, magic) = unsafe {
        (
            std::ptr::addr_of!((*config).size).read_unaligned(),
            std::ptr::addr_of!((*config).magic).read_unaligned(),
        )
    };
    if magic != OXCCL_CONFIG_MAGIC || size < offset_of!(oxcclConfig_t, timeoutMs) {
        return Err(Error::invalid_argument(
            "config was not initialized with OXCCL_CONFIG_INITIALIZER (wrong magic or size)",
        ));
    }
    // Fields past the caller's size are unset: copy only what it has.
    let mut c = oxcclConfig_t {
        size,
        magic,
        version: 0,
        timeoutMs: OXCCL_CONFIG_UNDEF_INT,
        nChannels: OXCCL_CONFIG_UNDEF_INT,
        transport: std::ptr::null(),
        algo: std::ptr::null(),
        commName: std::ptr::null(),
    };
    let n = size.min(size_of::<oxcclConfig_t>());
    // SAFETY: the caller's struct holds `size` bytes; `c` holds `n <= size_of` bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(
            config as *const u8,
            &mut c as *mut oxcclConfig_t as *mut u8,
            n,
        )
    };
    let mut cfg = base;
    if has(n, offset_of!(oxcclConfig_t, timeoutMs), size_of::<c_int>())
        && c.timeoutMs != OXCCL_CONFIG_UNDEF_INT
    {
        if c.timeoutMs <= 0 {
            return Err(Error::invalid_argument(format!(
                "config.timeoutMs {} must be > 0",
                c.timeoutMs
            )));
        }
        cfg.timeout = Duration::from_millis(c.timeoutMs as u64);
    }
    if has(n, offset_of!(oxcclConfig_t, nChannels), size_of::<c_int>())
        && c.nChannels != OXCCL_CONFIG_UNDEF_INT
    {
        if !(1..=64).contains(&c.nChannels) {
            return Err(Error::invalid_argument(format!(
                "config.nChannels {} is not in 1..=64",
                c.nChannels
            )));
        }
        cfg.nchannels = Some(c.nChannels as usize);
    }
    let ptr = size_of::<*const c_char>();
    if has(n, offset_of!(oxcclConfig_t, transport), ptr) {
        if let Some(t) = text(c.transport, "transport")? {
            cfg.transport = t.to_ascii_lowercase();
        }
    }
    if has(n, offset_of!(oxcclConfig_t, algo), ptr) {
        if let Some(a) = text(c.algo, "algo")? {
            cfg.algo = Some(a.to_ascii_lowercase());
        }
    }
    if has(n, offset_of!(oxcclConfig_t, commName), ptr) {
        if let Some(name) = text(c.commName, "commName")? {
            cfg.name = Some(name);
        }
    }
    Ok(cfg)
}
