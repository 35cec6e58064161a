//! Memory registration: a cache of the regions the caller declared, keyed by address range.
//!
//! Owns: the `MemRegion`s handed out by `Transport::register` and the `ibv_mr` behind each.
//! A declared region costs nothing until a message needs its keys (a zero-copy receive or
//! a send too large to go eagerly); then the whole region is registered once, page
//! aligned, and every later message inside it — from any region or from a request made
//! without one — finds that registration by address.
//!
//! Why registrations end with their region instead of being kept for next time: a kept
//! registration pins the physical pages it was made on. If the program frees the buffer
//! and gets the same addresses back (glibc does this with `munmap` + `mmap` for large
//! blocks, and with `madvise(MADV_DONTNEED)` when it trims a thread's heap), the kept
//! registration still points at the old pages and RDMA writes land where nobody reads
//! them: silently wrong data. Keeping registrations across calls safely needs
//! notification of unmaps (the memory hooks of UCX or libfabric) or on-demand paging;
//! the engine instead declares its buffers for the length of one call, which bounds the
//! cost to one `ibv_reg_mr` per large buffer per call.

use std::collections::BTreeMap;

use super::qp::{self, Mr, Pd};
use super::sys::Lib;
use crate::error::{Error, Result};

const PAGE: usize = 4096;

/// A declared region (the backend's `MemRegion`).
#[derive(Debug, PartialEq, Eq)]
pub struct VerbsRegion {
    start: usize,
    end: usize,
}

struct Entry {
    /// Live `VerbsRegion`s declaring exactly this range.
    users: u32,
    /// Registrations of the range: a read-only one first if the memory is not writable
    /// (a send from a constant), then a writable one if a receive needs it. Earlier ones
    /// stay until the region ends, since requests may still use them.
    mrs: Vec<(Mr, bool)>,
}

/// Keys of a registration covering some memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Keys {
    pub lkey: u32,
    pub rkey: u32,
}

/// The declared regions, by `(start, end)`.
#[derive(Default)]
pub(super) struct MrCache {
    entries: BTreeMap<(usize, usize), Entry>,
}

impl MrCache {
    /// Declares `len` bytes at `ptr`; identical ranges share one entry.
    pub(super) fn declare(&mut self, ptr: *const u8, len: usize) -> Result<VerbsRegion> {
        let start = ptr as usize;
        let end = start.checked_add(len).ok_or_else(|| {
            Error::invalid_argument(format!("verbs: region of {len} bytes at {ptr:p} wraps"))
        })?;
        self.entries
            .entry((start, end))
            .or_insert(Entry {
                users: 0,
                mrs: Vec::new(),
            })
            .users += 1;
        Ok(VerbsRegion { start, end })
    }

    /// Ends one declaration; the registration goes with the last one.
    pub(super) fn undeclare(&mut self, r: VerbsRegion) -> Result<()> {
        let key = (r.start, r.end);
        let e = self.entries.get_mut(&key).ok_or_else(|| {
            Error::invalid_usage(format!(
                "verbs: deregistering {:#x}..{:#x}, which is not registered",
                r.start, r.end
            ))
        })?;
        e.users -= 1;
        if e.users == 0 {
            self.entries.remove(&key);
        }
        Ok(())
    }

    /// Keys covering `len` bytes at `ptr` (remotely writable if `write`): from an existing
    /// registration, else by registering the declared region `hint` (or, failing that, any
    /// declared region) that contains them. `None` when no declared region does: the
    /// caller then registers just the request's memory for its own lifetime.
    pub(super) fn keys(
        &mut self,
        lib: &'static Lib,
        pd: &Pd,
        ptr: *const u8,
        len: usize,
        write: bool,
        hint: Option<&VerbsRegion>,
    ) -> Result<Option<Keys>> {
        let (lo, hi) = (ptr as usize, ptr as usize + len);
        let covers = |&(s, e): &(usize, usize)| s <= lo && hi <= e;
        // Ranges that start at or before `lo`, nearest first.
        let mut fallback = None;
        for (k, e) in self.entries.range(..=(lo, usize::MAX)).rev() {
            if !covers(k) {
                continue;
            }
            if let Some((mr, _)) = e.mrs.iter().find(|(_, w)| *w || !write) {
                return Ok(Some(Keys {
                    lkey: mr.lkey(),
                    rkey: mr.rkey(),
                }));
            }
            if fallback.is_none() {
                fallback = Some(*k);
            }
        }
        let key = match hint.map(|h| (h.start, h.end)).filter(covers) {
            Some(k) if self.entries.contains_key(&k) => k,
            _ => match fallback {
                Some(k) => k,
                None => return Ok(None),
            },
        };
        let (mr, writable) = register_pages(lib, pd, key.0, key.1, write)?;
        let keys = Keys {
            lkey: mr.lkey(),
            rkey: mr.rkey(),
        };
        if let Some(e) = self.entries.get_mut(&key) {
            e.mrs.push((mr, writable));
        }
        Ok(Some(keys))
    }

    /// Regions declared and not yet undeclared.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// Registers the pages covering `start..end`: writable, or where only reading is needed
/// and the pages are read-only, read-only. Also says which it got.
pub(super) fn register_pages(
    lib: &'static Lib,
    pd: &Pd,
    start: usize,
    end: usize,
    write: bool,
) -> Result<(Mr, bool)> {
    let lo = start / PAGE * PAGE;
    let hi = end.div_ceil(PAGE) * PAGE;
    let (ptr, len) = (lo as *const u8, (hi - lo).max(PAGE));
    match qp::register(lib, pd, ptr, len, true) {
        Ok(mr) => Ok((mr, true)),
        Err(e) if write => Err(e),
        Err(_) => Ok((qp::register(lib, pd, ptr, len, false)?, false)),
    }
}
