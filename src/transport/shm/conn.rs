//! One connection's state machine: the sending end copies each message (a 32-byte header,
//! then the payload) into the shared ring as far as it has room; the receiving end copies it
//! out into the posted receive. Requests finish in order; a send finishes once its last byte
//! is in the ring.
//!
//! Each end keeps the Unix socket the region came over. After the handshake it carries only
//! doorbells: one byte written to wake a peer that sleeps in `poll` on it (see
//! `region.rs`). Its read side shutting down (`POLLRDHUP`) means the peer closed it: it
//! closed the connection, or its process ended. A receive still finds what the peer wrote
//! before; past that, a request the peer can no longer serve fails with Remote.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Duration;

use super::attach::{self, ATTACH_MIN};
use super::region::{Attach, Region};
use crate::error::{Error, Result};
use crate::sys::poll;
use crate::sys::process::process_gone;
use crate::transport::requests::Ring;
use crate::transport::{Completion, Tag};

/// Bytes of the header in front of every message.
const HEADER_BYTES: usize = 32;
/// Bytes of the header of a message the reader copies out of the writer's memory: the
/// header, then the payload's address and a reserved word.
const ATTACHED_HEADER_BYTES: usize = HEADER_BYTES + 16;
/// Set in a header's length word: the payload stays in the writer's memory (`attach.rs`).
const ATTACHED: u64 = 1 << 63;
/// Empty polls between two looks at the socket for a departed peer.
const LOOK_EVERY: u32 = 512;

/// Who is at the other end, for errors.
#[derive(Debug, Clone, Copy)]
pub(super) struct Peer {
    pub pid: u32,
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the peer process {}", self.pid)
    }
}

/// The socket, the region and who is at the other end.
pub(super) struct Link {
    sock: OwnedFd,
    region: Region,
    peer: Peer,
    /// Empty polls since the last look at the socket.
    idle: u32,
    /// The peer closed its end.
    gone: bool,
}

impl Link {
    pub(super) fn new(sock: OwnedFd, region: Region, peer: Peer) -> Link {
        Link {
            sock,
            region,
            peer,
            idle: 0,
            gone: false,
        }
    }

    /// Whether the peer has closed its end (looked up now).
    pub(super) fn peer_gone(&mut self) -> bool {
        if !self.gone {
            let ended = libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR;
            self.gone = poll::revents(&self.sock, libc::POLLRDHUP, Duration::ZERO)
                .is_ok_and(|r| r & ended != 0);
        }
        self.gone
    }

    /// The socket, for `poll`.
    pub(super) fn fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    /// Wakes the peer, which sleeps in `poll` on its end of the socket.
    fn ring_bell(&self) {
        let b = 1u8;
        // SAFETY: one readable byte; the socket does not block. A full socket already holds
        // bytes that wake the peer, and a closed one shows as the peer's departure: the
        // result is not needed.
        unsafe {
            libc::send(
                self.sock.as_raw_fd(),
                (&b as *const u8).cast(),
                1,
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
    }

    /// Reads the doorbells that woke this end.
    pub(super) fn drain_bell(&self) {
        let mut buf = [0u8; 64];
        loop {
            // SAFETY: `buf` is writable for its length; the call does not block.
            let n = unsafe {
                libc::recv(
                    self.sock.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n < buf.len() as isize {
                return;
            }
        }
    }

    /// A link for the other direction of this connection: `region`, and this socket again.
    fn reverse(&self, region: Option<Region>) -> Result<Link> {
        let region = region.ok_or_else(|| {
            Error::invalid_usage("shm: the reverse of this connection was taken already")
        })?;
        let sock = self
            .sock
            .try_clone()
            .map_err(|e| Error::io("shm: duplicating a connection's socket", e))?;
        Ok(Link::new(sock, region, self.peer))
    }

    /// A Remote error when the peer has failed: it closed its end and its process has
    /// exited (a peer that closed in order, its part done, is no failure).
    pub(super) fn confirm(&mut self) -> Result<()> {
        if self.peer_gone() && process_gone(self.peer.pid as i32) {
            return Err(Error::remote(format!("shm: {} has exited", self.peer)));
        }
        Ok(())
    }

    /// After an empty poll: every so often, whether the peer has closed its end.
    fn idle_gone(&mut self) -> bool {
        self.idle += 1;
        if self.idle < LOOK_EVERY {
            return false;
        }
        self.idle = 0;
        self.peer_gone()
    }

    fn departed(&self, what: &str) -> Error {
        Error::remote(format!(
            "shm: {} closed the connection {what} (it left, or its process ended)",
            self.peer
        ))
    }
}

#[derive(Clone, Copy)]
struct SendOp {
    data: *const u8,
    len: usize,
    header: [u8; ATTACHED_HEADER_BYTES],
    /// Bytes of `header` this message has.
    hlen: usize,
    /// Bytes of payload that go through the ring: `len`, or 0 when the reader copies it
    /// out of this process.
    body: usize,
    /// Bytes of header and payload already in the ring.
    put: usize,
    /// For a message the reader copies out: its number among them, once its header is in
    /// the ring (0 before).
    ticket: u64,
}

// SAFETY: the pointer is the caller's buffer, valid until the request is reported (the
// contract of `Transport::isend`); it is only read on the driving thread.
unsafe impl Send for SendOp {}

/// The sending end.
pub(super) struct SendConn {
    link: Link,
    /// The region of the other direction, until `reverse` takes it.
    reverse: Option<Region>,
    ring: Ring<SendOp>,
    tail: u64,
    /// Messages sent for the reader to copy out of this process.
    tickets: u64,
    failed: Option<Error>,
}

impl SendConn {
    /// The sending end over `link`, keeping `reverse` for the other direction. It tells
    /// the reader where its probe is, so that the reader can find out whether it may copy
    /// large messages out of this process.
    pub(super) fn new(link: Link, reverse: Option<Region>) -> SendConn {
        link.region.set_probe(attach::probe());
        SendConn {
            link,
            reverse,
            ring: Ring::new(),
            tail: 0,
            tickets: 0,
            failed: None,
        }
    }

    pub(super) fn link(&mut self) -> &mut Link {
        &mut self.link
    }

    /// The link of the other direction (once).
    pub(super) fn reverse(&mut self) -> Result<Link> {
        self.link.reverse(self.reverse.take())
    }

    /// Queues a send; `None` when every request slot is taken.
    pub(super) fn post(&mut self, data: *const u8, len: usize, tag: Tag) -> Result<Option<u64>> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let attached = len >= ATTACH_MIN && self.link.region.attach() == Attach::Works;
        let (hlen, body, len_word) = if attached {
            (ATTACHED_HEADER_BYTES, 0, len as u64 | ATTACHED)
        } else {
            (HEADER_BYTES, len, len as u64)
        };
        let mut header = [0u8; ATTACHED_HEADER_BYTES];
        let words = [tag[0], tag[1], tag[2], len_word, data as u64, 0];
        for (i, w) in words.iter().enumerate() {
            header[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
        }
        let seq = self.ring.post(SendOp {
            data,
            len,
            header,
            hlen,
            body,
            put: 0,
            ticket: 0,
        });
        if seq.is_some() {
            self.progress()?;
        }
        Ok(seq)
    }

    /// Progresses, then reports request `seq` if it has finished.
    pub(super) fn test(&mut self, seq: u64) -> Result<Option<Completion>> {
        if let Some(c) = self.ring.take(seq)? {
            return Ok(Some(c));
        }
        let r = self.progress();
        match self.ring.take(seq)? {
            Some(c) => Ok(Some(c)),
            None => r.map(|()| None),
        }
    }

    /// Whether sends are waiting for room.
    pub(super) fn busy(&self) -> bool {
        self.ring.pending() > 0
    }

    /// Before sleeping: raises the writer's `waits` word; `true` when room appeared, or
    /// the reader finished the message this end waits for, meanwhile (then this end must
    /// not sleep).
    pub(super) fn sleep_begin(&mut self) -> bool {
        self.link.region.writer_waits(true);
        match self.ring.pending_mut(0).map(|op| op.ticket) {
            Some(t) if t > 0 => self.link.region.attached() >= t,
            _ => self
                .link
                .region
                .free_for_writer(self.tail)
                .map_or(true, |n| n > 0),
        }
    }

    /// After sleeping: lowers the `waits` word, and reads the doorbells if any rang.
    pub(super) fn sleep_end(&mut self, rang: bool) {
        self.link.region.writer_waits(false);
        if rang {
            self.link.drain_bell();
        }
    }

    /// The error a send towards a peer that closed its end gets.
    pub(super) fn check(&mut self) -> Result<()> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if self.busy() && self.link.peer_gone() {
            let e = self.link.departed("while sends were waiting for room");
            self.failed = Some(e.clone());
            return Err(e);
        }
        Ok(())
    }

    fn progress(&mut self) -> Result<()> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let r = self.put_queued();
        if let Err(e) = &r {
            self.failed = Some(e.clone());
        }
        r
    }

    fn put_queued(&mut self) -> Result<()> {
        let mut moved = false;
        while let Some(op) = self.ring.pending_mut(0) {
            let mut free = self.link.region.free_for_writer(self.tail)?;
            let total = op.hlen + op.body;
            while free > 0 && op.put < total {
                let (src, left) = if op.put < op.hlen {
                    (op.header[op.put..].as_ptr(), op.hlen - op.put)
                } else {
                    let off = op.put - op.hlen;
                    // SAFETY: `off < body <= len`: inside the caller's buffer.
                    (unsafe { op.data.add(off) }, op.body - off)
                };
                let k = left.min(free);
                // SAFETY: `k` readable bytes at `src`; at most the free space.
                unsafe { self.link.region.write(self.tail, src, k) };
                self.tail += k as u64;
                op.put += k;
                free -= k;
                moved = true;
            }
            if op.put < total {
                break;
            }
            if op.body < op.len {
                // The reader copies it out of this process: the buffer is in use until the
                // reader's count passes this message's number.
                if op.ticket == 0 {
                    self.tickets += 1;
                    op.ticket = self.tickets;
                }
                if self.link.region.attached() < op.ticket {
                    break;
                }
            }
            let c = Completion {
                bytes: op.len,
                tag: tag_of(&op.header),
            };
            self.ring.finish_head(c);
        }
        if moved {
            if self.link.region.set_tail(self.tail) {
                self.link.ring_bell();
            }
            self.link.idle = 0;
        } else if self.busy() && self.link.idle_gone() {
            return Err(self.link.departed("while sends were waiting for room"));
        }
        Ok(())
    }
}

/// Word `i` of a header.
fn header_word(h: &[u8; ATTACHED_HEADER_BYTES], i: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&h[i * 8..i * 8 + 8]);
    u64::from_le_bytes(b)
}

fn tag_of(h: &[u8; ATTACHED_HEADER_BYTES]) -> Tag {
    [header_word(h, 0), header_word(h, 1), header_word(h, 2)]
}

#[derive(Clone, Copy)]
struct RecvOp {
    data: *mut u8,
    cap: usize,
}

// SAFETY: as `SendOp`.
unsafe impl Send for RecvOp {}

/// The message being read: its header, and how much of its payload came.
#[derive(Clone, Copy)]
struct Incoming {
    tag: Tag,
    len: usize,
    got: usize,
}

/// The receiving end.
pub(super) struct RecvConn {
    link: Link,
    /// The region of the other direction, until `reverse` takes it.
    reverse: Option<Region>,
    ring: Ring<RecvOp>,
    head: u64,
    cur: Option<Incoming>,
    /// Whether this end has tried to read the writer's probe.
    probed: bool,
    /// Messages copied straight out of the writer's memory.
    attached: u64,
    failed: Option<Error>,
}

impl RecvConn {
    /// The receiving end over `link`, keeping `reverse` for the other direction; `attach`:
    /// whether to copy large messages out of the writer's process where the kernel allows.
    pub(super) fn new(link: Link, reverse: Option<Region>, attach: bool) -> RecvConn {
        RecvConn {
            link,
            reverse,
            ring: Ring::new(),
            head: 0,
            cur: None,
            probed: !attach,
            attached: 0,
            failed: None,
        }
    }

    /// Sets the verdict on cross-memory attach instead of probing (tests of both paths).
    #[cfg(test)]
    pub(super) fn force_attach(&mut self, a: Attach) {
        self.probed = true;
        self.link.region.set_attach(a);
    }

    /// The verdict on cross-memory attach, and how many messages came that way.
    #[cfg(test)]
    pub(super) fn attach_state(&self) -> (Attach, u64) {
        (self.link.region.attach(), self.attached)
    }

    /// Finds out, once the writer has said where its probe is, whether this end may copy
    /// messages straight out of the writer's process, and tells the writer.
    fn probe(&mut self) {
        let Some((addr, value)) = self.link.region.probe() else {
            return;
        };
        self.probed = true;
        let pid = self.link.peer.pid;
        let works = attach::can_read(pid, addr, value);
        self.link.region.set_attach(if works {
            Attach::Works
        } else {
            Attach::Refused
        });
        if works {
            tracing::debug!(
                target: "oxccl::NET",
                "shm: large messages from process {pid} are copied out of its memory \
                 (cross-memory attach)"
            );
        } else {
            tracing::info!(
                target: "oxccl::NET",
                "shm: large messages from process {pid} go through the ring: the kernel \
                 refused cross-memory attach (ptrace rules: Yama's ptrace_scope, seccomp)"
            );
        }
    }

    pub(super) fn link(&mut self) -> &mut Link {
        &mut self.link
    }

    /// The link of the other direction (once).
    pub(super) fn reverse(&mut self) -> Result<Link> {
        self.link.reverse(self.reverse.take())
    }

    /// Queues a receive of at most `cap` bytes; `None` when every request slot is taken.
    pub(super) fn post(&mut self, data: *mut u8, cap: usize) -> Result<Option<u64>> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if !self.probed {
            self.probe();
        }
        Ok(self.ring.post(RecvOp { data, cap }))
    }

    /// Progresses, then reports request `seq` if it has finished.
    pub(super) fn test(&mut self, seq: u64) -> Result<Option<Completion>> {
        if let Some(c) = self.ring.take(seq)? {
            return Ok(Some(c));
        }
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let r = self.take_arrived();
        if let Err(e) = &r {
            self.failed = Some(e.clone());
        }
        match self.ring.take(seq)? {
            Some(c) => Ok(Some(c)),
            None => r.map(|()| None),
        }
    }

    /// Whether receives are posted.
    pub(super) fn busy(&self) -> bool {
        self.ring.pending() > 0
    }

    /// Before sleeping: raises the reader's `waits` word; `true` when data came meanwhile
    /// (then this end must not sleep).
    pub(super) fn sleep_begin(&mut self) -> bool {
        self.link.region.reader_waits(true);
        self.link
            .region
            .avail_for_reader(self.head)
            .map_or(true, |n| n > 0)
    }

    /// After sleeping: lowers the `waits` word, and reads the doorbells if any rang.
    pub(super) fn sleep_end(&mut self, rang: bool) {
        self.link.region.reader_waits(false);
        if rang {
            self.link.drain_bell();
        }
    }

    /// Delivers what arrived into the posted receives, oldest first.
    fn take_arrived(&mut self) -> Result<()> {
        let mut moved = false;
        let r = self.deliver(&mut moved);
        if moved {
            if self.link.region.set_head(self.head) {
                self.link.ring_bell();
            }
            self.link.idle = 0;
        } else if r.is_ok() && self.busy() && self.link.idle_gone() {
            // What the peer wrote before it closed is read first.
            let mut again = false;
            self.deliver(&mut again)?;
            if again {
                self.link.region.set_head(self.head);
            } else if self.busy() {
                return Err(self.link.departed("while a receive was posted"));
            }
        }
        r
    }

    fn deliver(&mut self, moved: &mut bool) -> Result<()> {
        while let Some(&mut op) = self.ring.pending_mut(0) {
            let mut avail = self.link.region.avail_for_reader(self.head)?;
            let mut msg = match self.cur {
                Some(m) => m,
                None => {
                    if avail < HEADER_BYTES {
                        return Ok(());
                    }
                    let mut h = [0u8; ATTACHED_HEADER_BYTES];
                    // SAFETY: 32 writable bytes; 32 available.
                    unsafe {
                        self.link
                            .region
                            .read(self.head, h.as_mut_ptr(), HEADER_BYTES)
                    };
                    let len_word = header_word(&h, 3);
                    let attached = len_word & ATTACHED != 0;
                    let hlen = if attached {
                        ATTACHED_HEADER_BYTES
                    } else {
                        HEADER_BYTES
                    };
                    if avail < hlen {
                        // The rest of the header comes with the writer's next round.
                        return Ok(());
                    }
                    if attached {
                        // SAFETY: 16 writable bytes after the first 32; `hlen` available.
                        unsafe {
                            self.link.region.read(
                                self.head + HEADER_BYTES as u64,
                                h[HEADER_BYTES..].as_mut_ptr(),
                                hlen - HEADER_BYTES,
                            )
                        };
                    }
                    self.head += hlen as u64;
                    avail -= hlen;
                    *moved = true;
                    let len = usize::try_from(len_word & !ATTACHED).unwrap_or(usize::MAX);
                    let m = Incoming {
                        tag: tag_of(&h),
                        len,
                        got: 0,
                    };
                    if len > op.cap {
                        // The peer is in another call: complete with the message's length
                        // and tag, nothing written, so that the engine names both calls;
                        // the stream cannot be read further.
                        self.ring.finish_head(Completion {
                            bytes: len,
                            tag: m.tag,
                        });
                        return Err(Error::invalid_usage(format!(
                            "shm: message of {len} bytes from {} exceeds the posted receive of \
                             {} bytes",
                            self.link.peer, op.cap
                        )));
                    }
                    if attached {
                        attach::read(self.link.peer.pid, header_word(&h, 4), op.data, len)?;
                        self.attached += 1;
                        if self.link.region.set_attached(self.attached) {
                            self.link.ring_bell();
                        }
                        self.ring.finish_head(Completion {
                            bytes: len,
                            tag: m.tag,
                        });
                        continue;
                    }
                    m
                }
            };
            let k = avail.min(msg.len - msg.got);
            if k > 0 {
                // SAFETY: `got + k <= len <= cap`: inside the posted buffer; `k` available.
                unsafe { self.link.region.read(self.head, op.data.add(msg.got), k) };
                self.head += k as u64;
                msg.got += k;
                *moved = true;
            }
            if msg.got < msg.len {
                self.cur = Some(msg);
                return Ok(());
            }
            self.cur = None;
            self.ring.finish_head(Completion {
                bytes: msg.len,
                tag: msg.tag,
            });
        }
        Ok(())
    }
}
