//! Cross-memory attach: a receiver copies a large message straight out of the sender's
//! process with `process_vm_readv`, one copy instead of two through the ring, and the
//! sender's core is free meanwhile.
//!
//! The kernel allows it where the reader may ptrace the writer (same user, and Yama's
//! `ptrace_scope` 0, or a container without it; seccomp may forbid the call). Each reader
//! finds out once per connection by reading the writer's probe, a known word whose address
//! the writer put in the region; where that fails, messages keep going through the ring.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// Messages from this size up skip the ring where cross-memory attach works.
pub(super) const ATTACH_MIN: usize = 64 << 10;

/// The probe word: a random value, so that a reader that reaches another process (a pid
/// seen through another pid namespace) cannot mistake it for the writer.
static PROBE: AtomicU64 = AtomicU64::new(0);

/// The address and value of this process's probe word.
pub(super) fn probe() -> (u64, u64) {
    let mut v = PROBE.load(Ordering::Acquire);
    if v == 0 {
        let fresh = crate::auth::nonce()
            .map(|n| u64::from_le_bytes([n[0], n[1], n[2], n[3], n[4], n[5], n[6], n[7]]))
            .unwrap_or_else(|_| u64::from(std::process::id()) << 32 | 0x6f78)
            | 1;
        v = match PROBE.compare_exchange(0, fresh, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => fresh,
            Err(set) => set,
        };
    }
    (PROBE.as_ptr() as u64, v)
}

/// Whether this process can read process `pid`'s probe word at `addr`, holding `value`.
pub(super) fn can_read(pid: u32, addr: u64, value: u64) -> bool {
    let mut v = 0u64;
    read(pid, addr, (&mut v as *mut u64).cast(), 8).is_ok() && v == value
}

/// Copies `len` bytes at `addr` in process `pid` to `dst`.
///
/// `dst` must be writable for `len` bytes; nothing else is assumed (the kernel checks the
/// remote range, so a wrong address is an error, never a fault here).
pub(super) fn read(pid: u32, addr: u64, dst: *mut u8, len: usize) -> Result<()> {
    let mut done = 0usize;
    while done < len {
        let local = libc::iovec {
            // SAFETY: `done < len`: inside the caller's buffer.
            iov_base: unsafe { dst.add(done) }.cast(),
            iov_len: len - done,
        };
        let remote = libc::iovec {
            iov_base: (addr as usize).wrapping_add(done) as *mut libc::c_void,
            iov_len: len - done,
        };
        // SAFETY: `local` is writable (the caller's contract); the kernel checks `remote`
        // against the other process's mappings.
        let n = unsafe { libc::process_vm_readv(pid as libc::pid_t, &local, 1, &remote, 1, 0) };
        if n <= 0 {
            let e = std::io::Error::last_os_error();
            if n < 0 && e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(Error::remote(format!(
                "shm: copying {len} bytes out of the peer process {pid} (cross-memory attach): \
                 {}",
                if n == 0 {
                    "its buffer ended early".to_string()
                } else {
                    e.to_string()
                }
            )));
        }
        done += n as usize;
    }
    Ok(())
}
