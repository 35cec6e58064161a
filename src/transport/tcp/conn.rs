//! One connection's state machine: the queue of posted requests, the send progress (gathered
//! `sendmsg`) and the receive parser (staging buffer, direct reads into user memory).
//!
//! Owns a data socket once `listen.rs` has set it up. Wire format, per message: a 32-byte
//! header (the three `Tag` words, then the payload length, all u64 little endian) followed
//! by the payload.
//!
//! The hot path allocates nothing: requests live in a fixed ring of [`MAX_REQUESTS`] slots
//! indexed by sequence number, and the staging buffer is allocated once per connection.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Duration;

use super::os_error;
use crate::error::{Error, Result};
use crate::sys::poll;
use crate::transport::requests::Ring;
use crate::transport::{Completion, Tag};

pub(super) use crate::transport::requests::MAX_REQUESTS;
/// Bytes of the header in front of every message.
pub(super) const HEADER_BYTES: usize = 32;
/// Size of a receive connection's staging buffer. Payload remainders at least this large
/// are read straight into the user's buffer; smaller ones go through staging, which lets
/// one `recv` pick up several small messages.
pub(super) const STAGE_BYTES: usize = 64 << 10;
/// Two iovecs (header, payload) per queued send.
const MAX_IOV: usize = 2 * MAX_REQUESTS;

/// What a connection waits for, for `wait_activity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Interest {
    /// Nothing posted: nothing to wait for.
    Idle,
    /// Progress is possible without waiting (staged data, or a failure to report).
    Ready,
    /// Wait for these `poll` events on the socket.
    Poll(libc::c_short),
}

struct SendOp {
    data: *const u8,
    len: usize,
    tag: Tag,
    header: [u8; HEADER_BYTES],
    /// Bytes of header + payload already written.
    sent: usize,
}

// SAFETY: the pointer is only dereferenced (by the kernel, through sendmsg) from whichever
// thread owns the transport; `isend`'s contract keeps the buffer valid until completion.
unsafe impl Send for SendOp {}

/// The sending end of a connection.
pub(super) struct SendConnState {
    fd: OwnedFd,
    peer: SocketAddr,
    ring: Ring<SendOp>,
    failed: Option<Error>,
}

impl SendConnState {
    pub(super) fn new(fd: OwnedFd, peer: SocketAddr) -> Self {
        SendConnState {
            fd,
            peer,
            ring: Ring::new(),
            failed: None,
        }
    }

    /// The peer's address.
    pub(super) fn peer(&self) -> SocketAddr {
        self.peer
    }

    pub(super) fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Queues a send; `None` when [`MAX_REQUESTS`] are unreported. The caller guarantees
    /// `data..data+len` stays valid until the request is reported.
    pub(super) fn post(&mut self, data: *const u8, len: usize, tag: Tag) -> Result<Option<u64>> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let mut header = [0u8; HEADER_BYTES];
        for (i, w) in tag.iter().chain(std::iter::once(&(len as u64))).enumerate() {
            header[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
        }
        Ok(self.ring.post(SendOp {
            data,
            len,
            tag,
            header,
            sent: 0,
        }))
    }

    /// Progresses the queue, then reports request `seq` if it has finished.
    pub(super) fn test(&mut self, seq: u64) -> Result<Option<Completion>> {
        if let Some(c) = self.ring.take(seq)? {
            return Ok(Some(c));
        }
        let progressed = self.progress();
        match self.ring.take(seq)? {
            Some(c) => Ok(Some(c)),
            None => progressed.map(|()| None),
        }
    }

    pub(super) fn interest(&self) -> Interest {
        if self.ring.pending() == 0 {
            Interest::Idle
        } else if self.failed.is_some() {
            Interest::Ready
        } else {
            Interest::Poll(libc::POLLOUT)
        }
    }

    fn progress(&mut self) -> Result<()> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let r = self.write_queued();
        if let Err(e) = &r {
            self.failed = Some(e.clone());
        }
        r
    }

    /// Writes queued messages, several per `sendmsg`, until done or the socket is full.
    fn write_queued(&mut self) -> Result<()> {
        loop {
            let mut iov = [libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            }; MAX_IOV];
            let mut cnt = 0;
            let mut total = 0;
            for k in 0..self.ring.pending() {
                let Some(op) = self.ring.pending_mut(k) else {
                    break;
                };
                if op.sent < HEADER_BYTES {
                    iov[cnt] = libc::iovec {
                        iov_base: op.header[op.sent..].as_mut_ptr().cast(),
                        iov_len: HEADER_BYTES - op.sent,
                    };
                    cnt += 1;
                }
                let off = op.sent.saturating_sub(HEADER_BYTES);
                if op.len > off {
                    iov[cnt] = libc::iovec {
                        // SAFETY: off < len, inside the caller's buffer. The kernel only
                        // reads through this pointer despite the iovec's `*mut` type.
                        iov_base: unsafe { op.data.add(off) } as *mut libc::c_void,
                        iov_len: op.len - off,
                    };
                    cnt += 1;
                }
                total += HEADER_BYTES + op.len - op.sent;
            }
            if cnt == 0 {
                return Ok(());
            }
            // SAFETY: zeroed msghdr is valid; it then points at `cnt` initialised iovecs.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_iov = iov.as_mut_ptr();
            msg.msg_iovlen = cnt as _;
            // SAFETY: every iovec describes memory that stays valid during the call.
            let n = unsafe {
                libc::sendmsg(
                    self.fd.as_raw_fd(),
                    &msg,
                    libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                let err = io::Error::last_os_error();
                match err.raw_os_error() {
                    Some(libc::EAGAIN) => return Ok(()),
                    Some(libc::EINTR) => continue,
                    _ => return Err(os_error(format!("tcp: sending to {}", self.peer), err)),
                }
            }
            self.advance(n as usize);
            if (n as usize) < total {
                // The socket buffer is full; another call now would only see EAGAIN.
                return Ok(());
            }
        }
    }

    /// Accounts `n` written bytes to the queue, completing the messages they finish.
    fn advance(&mut self, mut n: usize) {
        while n > 0 {
            let Some(op) = self.ring.pending_mut(0) else {
                return;
            };
            let need = HEADER_BYTES + op.len - op.sent;
            if n < need {
                op.sent += n;
                return;
            }
            n -= need;
            let c = Completion {
                bytes: op.len,
                tag: op.tag,
            };
            self.ring.finish_head(c);
        }
    }
}

#[derive(Clone, Copy)]
struct RecvOp {
    data: *mut u8,
    cap: usize,
}

// SAFETY: as for SendOp; `irecv`'s contract gives us exclusive use of the buffer.
unsafe impl Send for RecvOp {}

/// The message being delivered into the oldest posted receive.
#[derive(Clone, Copy)]
struct Incoming {
    tag: Tag,
    len: usize,
    got: usize,
}

/// The receiving end of a connection.
pub(super) struct RecvConnState {
    fd: OwnedFd,
    peer: SocketAddr,
    ring: Ring<RecvOp>,
    stage: Box<[u8]>,
    /// Unconsumed staged bytes are `stage[start..end]`.
    start: usize,
    end: usize,
    cur: Option<Incoming>,
    /// The last message delivered was at least `STAGE_BYTES` long.
    last_large: bool,
    /// The last `recv` found the socket empty: look with `poll` before the next one.
    empty: bool,
    failed: Option<Error>,
}

impl RecvConnState {
    pub(super) fn new(fd: OwnedFd, peer: SocketAddr) -> Self {
        RecvConnState {
            fd,
            peer,
            ring: Ring::new(),
            stage: vec![0u8; STAGE_BYTES].into_boxed_slice(),
            start: 0,
            end: 0,
            cur: None,
            last_large: false,
            empty: false,
            failed: None,
        }
    }

    /// The peer's address.
    pub(super) fn peer(&self) -> SocketAddr {
        self.peer
    }

    pub(super) fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Queues a receive of at most `cap` bytes; `None` when [`MAX_REQUESTS`] are
    /// unreported. The caller guarantees exclusive use of `data..data+cap` until reported.
    pub(super) fn post(&mut self, data: *mut u8, cap: usize) -> Result<Option<u64>> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        Ok(self.ring.post(RecvOp { data, cap }))
    }

    /// Progresses the queue, then reports request `seq` if it has finished.
    pub(super) fn test(&mut self, seq: u64) -> Result<Option<Completion>> {
        if let Some(c) = self.ring.take(seq)? {
            return Ok(Some(c));
        }
        let progressed = self.progress();
        match self.ring.take(seq)? {
            Some(c) => Ok(Some(c)),
            None => progressed.map(|()| None),
        }
    }

    pub(super) fn interest(&self) -> Interest {
        let staged = self.end - self.start;
        if self.ring.pending() == 0 {
            Interest::Idle
        } else if self.failed.is_some()
            || (self.cur.is_some() && staged > 0)
            || (self.cur.is_none() && staged >= HEADER_BYTES)
        {
            Interest::Ready
        } else {
            Interest::Poll(libc::POLLIN)
        }
    }

    fn progress(&mut self) -> Result<()> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let r = self.read_posted();
        if let Err(e) = &r {
            self.failed = Some(e.clone());
        }
        r
    }

    /// Delivers incoming messages into posted receives, oldest first, until none is posted
    /// or the socket has nothing more.
    fn read_posted(&mut self) -> Result<()> {
        // Set once a read returned less than asked: the socket was empty a moment ago, so
        // another read in this call would most likely be a wasted syscall.
        let mut drained = false;
        loop {
            let Some(&mut op) = self.ring.pending_mut(0) else {
                return Ok(());
            };
            let mut msg = match self.cur {
                Some(m) => m,
                None => {
                    let staged = self.end - self.start;
                    if staged < HEADER_BYTES {
                        // After a large message the next one is likely large too: reading
                        // just its header lets the payload go straight to the user's buffer
                        // instead of through staging and a copy.
                        let want = if self.last_large {
                            HEADER_BYTES - staged
                        } else {
                            STAGE_BYTES
                        };
                        if drained || !self.fill(want, &mut drained)? {
                            return Ok(());
                        }
                        continue;
                    }
                    let m = self.parse_header();
                    if m.len > op.cap {
                        // The peer is in another call (or passed another count). The
                        // receive completes with the message's length and tag, nothing
                        // written, so that the engine names both calls; the stream cannot
                        // be read further.
                        self.ring.finish_head(Completion {
                            bytes: m.len,
                            tag: m.tag,
                        });
                        return Err(Error::invalid_usage(format!(
                            "tcp: message of {} bytes from {} exceeds the posted receive of {} bytes",
                            m.len, self.peer, op.cap
                        )));
                    }
                    m
                }
            };
            let n = (self.end - self.start).min(msg.len - msg.got);
            if n > 0 {
                // SAFETY: `start + n <= end <= STAGE_BYTES` and `got + n <= len <= cap`;
                // staging and the user's buffer are distinct allocations.
                unsafe {
                    crate::reduce::copy_bytes(
                        self.stage.as_ptr().add(self.start),
                        op.data.add(msg.got),
                        n,
                    );
                }
                self.start += n;
                msg.got += n;
            }
            let rem = msg.len - msg.got;
            if rem == 0 {
                self.cur = None;
                self.last_large = msg.len >= STAGE_BYTES;
                self.ring.finish_head(Completion {
                    bytes: msg.len,
                    tag: msg.tag,
                });
                continue;
            }
            self.cur = Some(msg);
            if drained {
                return Ok(());
            }
            if rem >= STAGE_BYTES {
                // SAFETY: `got + rem == len <= cap`: exactly the rest of this message.
                let k = self.recv_into(unsafe { op.data.add(msg.got) }, rem, &mut drained)?;
                msg.got += k;
                self.cur = Some(msg);
            } else if !self.fill(STAGE_BYTES, &mut drained)? {
                return Ok(());
            }
        }
    }

    fn parse_header(&mut self) -> Incoming {
        let mut w = [0u64; 4];
        for (i, x) in w.iter_mut().enumerate() {
            let at = self.start + i * 8;
            let mut b = [0u8; 8];
            b.copy_from_slice(&self.stage[at..at + 8]);
            *x = u64::from_le_bytes(b);
        }
        self.start += HEADER_BYTES;
        Incoming {
            tag: [w[0], w[1], w[2]],
            // A length beyond usize cannot fit any receive; saturating keeps it rejected.
            len: usize::try_from(w[3]).unwrap_or(usize::MAX),
            got: 0,
        }
    }

    /// Reads at most `want` bytes into the staging buffer. `Ok(false)`: nothing to read now.
    fn fill(&mut self, want: usize, drained: &mut bool) -> Result<bool> {
        // Called only with less than a header staged: moving it to the front is cheap and
        // leaves nearly the whole buffer free.
        if self.start > 0 {
            self.stage.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let room = (STAGE_BYTES - self.end).min(want);
        // SAFETY: `end + room <= STAGE_BYTES`: inside the staging buffer.
        let ptr = unsafe { self.stage.as_mut_ptr().add(self.end) };
        let k = self.recv_into(ptr, room, drained)?;
        self.end += k;
        Ok(k > 0)
    }

    /// One `recv` of at most `len` bytes into `dst`; 0 when the socket has nothing now.
    /// End of stream while a receive is posted is a `Remote` error.
    fn recv_into(&mut self, dst: *mut u8, len: usize, drained: &mut bool) -> Result<usize> {
        if self.empty && !self.readable() {
            *drained = true;
            return Ok(0);
        }
        loop {
            // SAFETY: the callers pass `len` writable bytes at `dst`.
            let n = unsafe { libc::recv(self.fd.as_raw_fd(), dst.cast(), len, 0) };
            self.empty = n < 0;
            if n > 0 {
                let n = n as usize;
                if n < len {
                    *drained = true;
                }
                return Ok(n);
            }
            if n == 0 {
                let when = if self.cur.is_some() || self.end > self.start {
                    "in the middle of a message"
                } else {
                    "while a receive was posted"
                };
                return Err(Error::remote(format!(
                    "tcp: connection closed by peer {} {when}",
                    self.peer
                )));
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EAGAIN) => {
                    *drained = true;
                    return Ok(0);
                }
                Some(libc::EINTR) => continue,
                _ => return Err(os_error(format!("tcp: receiving from {}", self.peer), err)),
            }
        }
    }

    /// Whether the socket has data (or an end or error) to read. `poll` reads the socket's
    /// state without its lock, where a `recv` that finds nothing takes the lock and makes the
    /// peer's delivery of the next message wait for it (the polling rank spins on this).
    /// A failed `poll` says yes, so that the `recv` that follows reports the socket's state.
    fn readable(&self) -> bool {
        poll::revents(&self.fd, libc::POLLIN, Duration::ZERO).map_or(true, |r| r != 0)
    }
}
