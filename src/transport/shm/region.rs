//! One connection's shared region: a memfd the sending side creates and passes to the
//! receiving side over the connection's Unix socket, mapped by both; it is freed by the
//! kernel when both have unmapped it, so a process that dies leaves nothing behind.
//!
//! Layout: a header line (magic, capacity), the sender's `tail` and the receiver's `head`
//! on lines of their own, then the data: a single-producer single-consumer byte ring of
//! `capacity` bytes (a power of two) that carries the messages as one stream, each a 32-byte
//! header (the three `Tag` words and the payload length) and its payload. `tail - head` is
//! what is written and not yet read; the sender publishes with a release store of `tail`
//! after its copy, the receiver frees with a release store of `head` after its own.
//!
//! An end with nothing to do may sleep: it raises its `waits` word (the reader's and the
//! writer's are on lines of their own), looks at the ring once more, and sleeps in `poll` on
//! the connection's socket; the other end, after publishing a position, sees the word and
//! rings: one byte on the socket (see `conn.rs`). Both sides order their store and load
//! with a sequentially consistent fence (Dekker), so a wake-up is never lost.
//!
//! Large messages may skip the ring (cross-memory attach, see `attach.rs`): the writer puts
//! its probe's address in the header, the reader tries to read the probe from the
//! writer's process and records whether it could; the writer then sends only the address
//! of such a message, and the reader counts the messages it has copied out, which is when
//! the writer's buffer is free again.
//!
//! The peer shares this memory, so nothing read from it is trusted: the counters are checked
//! against the capacity, and a length is checked against the posted receive.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{fence, AtomicU64, Ordering};

use crate::error::{Error, Result};

/// Bytes of the data ring of every connection.
pub(super) const CAPACITY: usize = 1 << 20;
/// Where the data starts (the header lines come first).
const DATA_AT: usize = 4096;
const MAGIC: u64 = u64::from_le_bytes(*b"oxshmrg1");
const TAIL_AT: usize = 64;
const HEAD_AT: usize = 128;
/// Raised while the reader sleeps: the writer rings after publishing `tail`.
const READER_WAITS_AT: usize = 192;
/// Raised while the writer sleeps for room: the reader rings after publishing `head`.
const WRITER_WAITS_AT: usize = 256;
/// The writer's probe: the address of a known word in its memory (0 until it says), and
/// the word's value.
const PROBE_AT: usize = 320;
const PROBE_VALUE_AT: usize = 328;
/// The reader's verdict on cross-memory attach from the writer: [`Attach`].
const ATTACH_AT: usize = 384;
/// Messages the reader has copied straight out of the writer's memory.
const ATTACHED_AT: usize = 448;

/// Whether a region's reader can copy straight out of the writer's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Attach {
    /// Not tried yet.
    Unknown = 0,
    /// The reader read the writer's probe.
    Works = 1,
    /// The kernel refused (ptrace rules, seccomp): messages go through the ring.
    Refused = 2,
}

/// A mapped region.
pub(super) struct Region {
    base: *mut u8,
    len: usize,
    cap: usize,
}

// SAFETY: the mapping is owned by this value; the shared counters are atomics, and the data
// is only touched through the ring discipline (one writer, one reader per byte range).
unsafe impl Send for Region {}

fn os(what: &str) -> Error {
    Error::system(format!("shm: {what}: {}", std::io::Error::last_os_error()))
}

impl Region {
    /// Creates a region in a new memfd (sealed against resizing, its pages reserved so that
    /// a full memory gives an error here rather than a SIGBUS later); returns the fd to pass.
    pub(super) fn create() -> Result<(Region, OwnedFd)> {
        let len = DATA_AT + CAPACITY;
        // SAFETY: a NUL-terminated name; flags are valid.
        let fd = unsafe {
            libc::memfd_create(
                c"oxccl-shm".as_ptr(),
                libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
            )
        };
        if fd < 0 {
            return Err(os("memfd_create"));
        }
        // SAFETY: a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: plain calls on the descriptor.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) } != 0 {
            return Err(os("sizing the shared region"));
        }
        // SAFETY: as above.
        let rc = unsafe { libc::fallocate(fd.as_raw_fd(), 0, 0, len as libc::off_t) };
        if rc != 0 {
            return Err(os(&format!(
                "reserving {} KiB of shared memory (is memory or /dev/shm's limit exhausted?)",
                len >> 10
            )));
        }
        let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
        // SAFETY: as above.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
            return Err(os("sealing the shared region"));
        }
        let r = Region::map(&fd, len)?;
        r.word(0).store(MAGIC, Ordering::Relaxed);
        r.word(8).store(CAPACITY as u64, Ordering::Release);
        Ok((r, fd))
    }

    /// Maps a region a peer created, after checking that it cannot shrink under us and
    /// holds what its header says.
    pub(super) fn open(fd: &OwnedFd) -> Result<Region> {
        // SAFETY: plain call on a descriptor we own.
        let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
        if seals < 0 || seals & libc::F_SEAL_SHRINK == 0 {
            return Err(Error::remote(
                "shm: the peer's region is not sealed against shrinking (not an oxccl peer?)",
            ));
        }
        // SAFETY: a zeroed stat is a valid out-parameter.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
            return Err(os("inspecting the peer's region"));
        }
        let len = usize::try_from(st.st_size).unwrap_or(0);
        if len != DATA_AT + CAPACITY {
            return Err(Error::remote(format!(
                "shm: the peer's region has {len} bytes, not {} (another oxccl version?)",
                DATA_AT + CAPACITY
            )));
        }
        let r = Region::map(fd, len)?;
        if r.word(0).load(Ordering::Relaxed) != MAGIC
            || r.word(8).load(Ordering::Acquire) != CAPACITY as u64
        {
            return Err(Error::remote(
                "shm: the peer's region has a foreign header (another oxccl version?)",
            ));
        }
        Ok(r)
    }

    fn map(fd: &OwnedFd, len: usize) -> Result<Region> {
        // SAFETY: a shared mapping of `len` bytes of a file at least that long (sized above
        // or checked with fstat; sealed against shrinking). Populated now: otherwise the
        // first pass of the ring takes a page fault per page on each side, in the calls.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(os("mapping the shared region"));
        }
        Ok(Region {
            base: p.cast(),
            len,
            cap: len - DATA_AT,
        })
    }

    fn word(&self, at: usize) -> &AtomicU64 {
        // SAFETY: `at` is one of the 8-aligned header offsets, inside the mapping, which
        // lives as long as `self`; the word is only accessed atomically.
        unsafe { &*(self.base.add(at) as *const AtomicU64) }
    }

    /// Bytes the writer may write at `tail` (`head` from the reader).
    pub(super) fn free_for_writer(&self, tail: u64) -> Result<usize> {
        let head = self.word(HEAD_AT).load(Ordering::Acquire);
        let used = tail.wrapping_sub(head);
        if used > self.cap as u64 {
            return Err(Error::remote(format!(
                "shm: the receiver's position {head} is inconsistent with the sender's {tail} \
                 (its memory was corrupted?)"
            )));
        }
        Ok(self.cap - used as usize)
    }

    /// Bytes the reader may read at `head` (`tail` from the writer).
    pub(super) fn avail_for_reader(&self, head: u64) -> Result<usize> {
        let tail = self.word(TAIL_AT).load(Ordering::Acquire);
        let avail = tail.wrapping_sub(head);
        if avail > self.cap as u64 {
            return Err(Error::remote(format!(
                "shm: the sender's position {tail} is inconsistent with the receiver's {head} \
                 (its memory was corrupted?)"
            )));
        }
        Ok(avail as usize)
    }

    /// Publishes the writer's position; `true` when the reader sleeps and must be rung.
    pub(super) fn set_tail(&self, tail: u64) -> bool {
        self.word(TAIL_AT).store(tail, Ordering::Release);
        fence(Ordering::SeqCst);
        self.word(READER_WAITS_AT).load(Ordering::Relaxed) != 0
    }

    /// Publishes the reader's position; `true` when the writer sleeps and must be rung.
    pub(super) fn set_head(&self, head: u64) -> bool {
        self.word(HEAD_AT).store(head, Ordering::Release);
        fence(Ordering::SeqCst);
        self.word(WRITER_WAITS_AT).load(Ordering::Relaxed) != 0
    }

    /// Raises or lowers the reader's `waits` word. After raising it the reader looks at
    /// the ring once more before it sleeps.
    pub(super) fn reader_waits(&self, on: bool) {
        Self::waits(self.word(READER_WAITS_AT), on);
    }

    /// Raises or lowers the writer's `waits` word (as `reader_waits`).
    pub(super) fn writer_waits(&self, on: bool) {
        Self::waits(self.word(WRITER_WAITS_AT), on);
    }

    /// Says where the writer's probe word is and what it holds (see `attach.rs`).
    pub(super) fn set_probe(&self, (addr, value): (u64, u64)) {
        self.word(PROBE_VALUE_AT).store(value, Ordering::Relaxed);
        self.word(PROBE_AT).store(addr, Ordering::Release);
    }

    /// Where the writer's probe word is and what it holds; `None` until the writer said.
    pub(super) fn probe(&self) -> Option<(u64, u64)> {
        let addr = self.word(PROBE_AT).load(Ordering::Acquire);
        (addr != 0).then(|| (addr, self.word(PROBE_VALUE_AT).load(Ordering::Relaxed)))
    }

    /// Records the reader's verdict on reading the writer's memory.
    pub(super) fn set_attach(&self, a: Attach) {
        self.word(ATTACH_AT).store(a as u64, Ordering::Release);
    }

    /// Whether the reader can read the writer's memory.
    pub(super) fn attach(&self) -> Attach {
        match self.word(ATTACH_AT).load(Ordering::Acquire) {
            1 => Attach::Works,
            2 => Attach::Refused,
            _ => Attach::Unknown,
        }
    }

    /// Publishes the count of messages the reader copied out of the writer's memory;
    /// `true` when the writer sleeps and must be rung.
    pub(super) fn set_attached(&self, n: u64) -> bool {
        self.word(ATTACHED_AT).store(n, Ordering::Release);
        fence(Ordering::SeqCst);
        self.word(WRITER_WAITS_AT).load(Ordering::Relaxed) != 0
    }

    /// The count of messages the reader copied out of the writer's memory.
    pub(super) fn attached(&self) -> u64 {
        self.word(ATTACHED_AT).load(Ordering::Acquire)
    }

    fn waits(word: &AtomicU64, on: bool) {
        word.store(u64::from(on), Ordering::Relaxed);
        if on {
            fence(Ordering::SeqCst);
        }
    }

    /// The ring's two pieces from stream position `pos`, `n` bytes long.
    fn pieces(&self, pos: u64, n: usize) -> [(usize, usize); 2] {
        let at = (pos % self.cap as u64) as usize;
        let first = n.min(self.cap - at);
        [(at, first), (0, n - first)]
    }

    /// Copies `n` bytes from `src` into the ring at stream position `pos`.
    ///
    /// # Safety
    /// `src..src+n` is readable; `n` is at most the free space at `pos` (so the reader is
    /// not reading these bytes).
    pub(super) unsafe fn write(&self, pos: u64, src: *const u8, n: usize) {
        let mut done = 0;
        for (at, k) in self.pieces(pos, n) {
            if k > 0 {
                // SAFETY: `at + k <= cap` inside the data area; the caller's contract.
                unsafe { crate::reduce::copy_bytes(src.add(done), self.base.add(DATA_AT + at), k) };
                done += k;
            }
        }
    }

    /// Copies `n` bytes at stream position `pos` out of the ring into `dst`.
    ///
    /// # Safety
    /// `dst..dst+n` is writable; `n` is at most what is available at `pos`.
    pub(super) unsafe fn read(&self, pos: u64, dst: *mut u8, n: usize) {
        let mut done = 0;
        for (at, k) in self.pieces(pos, n) {
            if k > 0 {
                // SAFETY: `at + k <= cap` inside the data area; the caller's contract.
                unsafe { crate::reduce::copy_bytes(self.base.add(DATA_AT + at), dst.add(done), k) };
                done += k;
            }
        }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, unmapped once.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}
