//! Connections over one RDM endpoint: the wire header, and the state of each sending and
//! receiving end with its requests.
//!
//! An RDM endpoint is connectionless, so a connection is a pair of ids, one per side: the
//! sending end's id (chosen by the connecting rank) and the receiving end's id (chosen by
//! the accepting rank when the `Connect` message arrives). Every message names the id of
//! the connection end it is for on the destination endpoint (`dst`), so one endpoint
//! demultiplexes any number of connections from any number of peers without tag matching
//! and without directed receives. Requests on a connection are numbered (`seq`): the k-th
//! send meets the k-th receive whatever order messages arrive in.
//!
//! Wire header (64 bytes, little endian), in front of every message:
//! `magic u32 | kind u32 | dst u32 | src u32 | seq u64 | len u64 | w0 w1 w2 u64`, where for
//! data `len` is the payload length and `w` the engine's tag; for `Cts` (clear to send)
//! `len` is the receive buffer's size, `w0` its remote address and `w1` its key.
//!
//! Data: a message of at most [`EAGER_MAX`] bytes travels in one `Eager` message (header
//! and payload, copied out of a bounce buffer on the receiver). A larger one is written by
//! the sender straight into the receiver's buffer with `fi_writedata`, once the receiver
//! has posted that buffer's descriptor (`Cts`, sent when the receive is posted); the write's
//! 32-bit immediate data names the receiving end and request (`index << 16 | seq & 0xffff`),
//! and an `Rhdr` message carries the tag and length. The receive finishes when both came.

use crate::error::Error;
use crate::transport::{requests, slab, Tag};

use super::device::MAX_REQUESTS;

/// Bytes of the header.
pub(super) const HDR: usize = 64;
/// Largest payload sent eagerly (through bounce buffers); larger ones are RMA writes.
pub(super) const EAGER_MAX: usize = 16 << 10;
/// Size of a bounce buffer: header plus the largest eager payload.
pub(super) const MSG_BYTES: usize = HDR + EAGER_MAX;

const MAGIC: u32 = 0x4246_584f; // "OXFB"

/// What a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub(super) enum Kind {
    /// Opens a connection: `src` is the sender's id, the payload its endpoint address.
    Connect = 1,
    /// Answers `Connect`: `dst` the connecting end, `src` the new receiving end.
    Accept = 2,
    /// Data with its payload.
    Eager = 3,
    /// Header of data written by RMA.
    Rhdr = 4,
    /// A receive buffer's descriptor, for the sender's write.
    Cts = 5,
    /// The receiving end closed (to the sending end).
    CloseToSend = 6,
    /// The sending end closed after `seq` messages (to the receiving end).
    CloseToRecv = 7,
    /// Liveness probe; ignored by the receiver (a dead peer fails the send).
    Ping = 8,
    /// The sender's endpoint is closing (payload: its address).
    Bye = 9,
}

impl Kind {
    fn from_u32(v: u32) -> Option<Kind> {
        Some(match v {
            1 => Kind::Connect,
            2 => Kind::Accept,
            3 => Kind::Eager,
            4 => Kind::Rhdr,
            5 => Kind::Cts,
            6 => Kind::CloseToSend,
            7 => Kind::CloseToRecv,
            8 => Kind::Ping,
            9 => Kind::Bye,
            _ => return None,
        })
    }
}

/// The decoded header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Header {
    pub kind: Kind,
    pub dst: u32,
    pub src: u32,
    pub seq: u64,
    pub len: u64,
    pub w: [u64; 3],
}

impl Header {
    /// A header of `kind` for `dst`, everything else zero.
    pub fn new(kind: Kind, dst: u32) -> Header {
        Header {
            kind,
            dst,
            src: 0,
            seq: 0,
            len: 0,
            w: [0; 3],
        }
    }

    /// Writes the header into the first [`HDR`] bytes of `out`.
    pub fn encode(&self, out: &mut [u8]) {
        let words32 = [MAGIC, self.kind as u32, self.dst, self.src];
        for (i, w) in words32.iter().enumerate() {
            out[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
        }
        let words64 = [self.seq, self.len, self.w[0], self.w[1], self.w[2]];
        for (i, w) in words64.iter().enumerate() {
            out[16 + i * 8..24 + i * 8].copy_from_slice(&w.to_le_bytes());
        }
        out[56..HDR].fill(0);
    }

    /// Parses a header; `None` if `b` is not one of ours.
    pub fn decode(b: &[u8]) -> Option<Header> {
        if b.len() < HDR {
            return None;
        }
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap_or([0; 4]));
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
        if u32_at(0) != MAGIC {
            return None;
        }
        Some(Header {
            kind: Kind::from_u32(u32_at(4))?,
            dst: u32_at(8),
            src: u32_at(12),
            seq: u64_at(16),
            len: u64_at(24),
            w: [u64_at(32), u64_at(40), u64_at(48)],
        })
    }
}

/// The immediate data of a write for request `seq` of receiving end `index`.
pub(super) fn imm(index: u16, seq: u64) -> u64 {
    (u64::from(index) << 16) | (seq & 0xffff)
}

/// Splits immediate data into (receiving end index, low 16 bits of seq).
pub(super) fn split_imm(data: u64) -> (u16, u16) {
    (((data >> 16) & 0xffff) as u16, (data & 0xffff) as u16)
}

/// The id of a connection end: a slot of a `u16` [`Slab`], packed into the `u32` that
/// travels in headers ([`Id::pack`](slab::Id::pack)), so that a message for a closed
/// connection is recognised as stale rather than delivered to the slot's next occupant.
pub(super) type Id = slab::Id<u16>;

/// Connection ends by [`Id`]; at most 65536 live at once.
pub(super) type Slab<T> = slab::Slab<T, u16>;

/// Requests of one connection end by sequence number. They may finish in any order; each
/// keeps its outcome in its own state until `test` reports it and takes it out
/// ([`Ring::remove`](requests::Ring::remove)).
pub(super) type Ring<T> = requests::Ring<T, MAX_REQUESTS>;

/// A receive buffer's descriptor, from the receiver's `Cts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Cts {
    pub addr: u64,
    pub key: u64,
    pub cap: u64,
}

/// Where a send stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SendState {
    /// Finished (eager sends finish once copied into a bounce buffer).
    Done,
    /// Waiting for the receiver's buffer descriptor.
    WaitCts,
    /// Descriptor known; the write is to be posted (again, after `-FI_EAGAIN`).
    Ready(Cts),
    /// Write posted, waiting for its completion.
    Writing,
}

/// One send request.
pub(super) struct SendOp {
    pub data: *const u8,
    pub len: usize,
    pub tag: Tag,
    pub state: SendState,
    /// Registration of `data` under `FI_MR_LOCAL` (write path).
    pub mr: Option<u64>,
    pub error: Option<Error>,
}

/// The sending end of a connection.
pub(super) struct SendConn {
    pub peer: u32,
    /// The receiving end's id, once `Accept` came.
    pub remote: Option<u32>,
    pub failed: Option<Error>,
    /// The receiving end closed.
    pub closed: Option<Error>,
    /// The receiving end closed holding every message before this one: those sends are
    /// complete even if their own completion never comes (the peer may be gone).
    pub delivered: u64,
    pub ops: Ring<SendOp>,
    /// Descriptors that came before their send was posted.
    pub cts: Vec<(u64, Cts)>,
}

impl SendConn {
    pub fn new(peer: u32) -> SendConn {
        SendConn {
            peer,
            remote: None,
            failed: None,
            closed: None,
            delivered: 0,
            ops: Ring::new(),
            cts: Vec::new(),
        }
    }
}

/// One receive request.
pub(super) struct RecvOp {
    pub data: *mut u8,
    pub cap: usize,
    /// Tag and length once the message's header came; `true` if its data is an RMA write.
    pub hdr: Option<(Tag, usize, bool)>,
    /// A `Cts` was sent for this buffer.
    pub rndv: bool,
    /// The RMA write with this request's immediate data landed.
    pub written: bool,
    /// Registration exposed to the peer's write.
    pub mr: Option<u64>,
    pub error: Option<Error>,
}

impl RecvOp {
    pub fn done(&self) -> bool {
        match self.hdr {
            Some((_, _, rma)) => !rma || self.written,
            None => false,
        }
    }
}

/// A message that came before its receive was posted.
pub(super) struct Early {
    pub seq: u64,
    pub tag: Tag,
    pub len: usize,
    /// The payload of an eager message; `None` for an `Rhdr`.
    pub payload: Option<Vec<u8>>,
}

/// The receiving end of a connection.
pub(super) struct RecvConn {
    pub peer: u32,
    /// The sending end's id.
    pub remote: u32,
    pub failed: Option<Error>,
    /// The sender closed after this many messages.
    pub closed_at: Option<u64>,
    pub ops: Ring<RecvOp>,
    pub early: Vec<Early>,
}

impl RecvConn {
    pub fn new(peer: u32, remote: u32) -> RecvConn {
        RecvConn {
            peer,
            remote,
            failed: None,
            closed_at: None,
            ops: Ring::new(),
            early: Vec::new(),
        }
    }
}

// SAFETY: the raw pointers are the caller's buffers, only touched by the thread that owns
// the transport, kept valid by the `isend`/`irecv` contracts.
unsafe impl Send for SendOp {}
// SAFETY: as above.
unsafe impl Send for RecvOp {}

/// A valid header for [`fuzz_header`].
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn fuzz_header_seed() -> Vec<u8> {
    let mut h = Header::new(Kind::Rhdr, 7);
    (h.src, h.seq, h.len, h.w) = (3, 99, 1 << 20, [1, 2, 3]);
    let mut valid = vec![0u8; HDR];
    h.encode(&mut valid);
    valid
}

/// Fuzz target (see `crate::fuzz`): a header decodes, then re-encodes to itself, or is
/// refused.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn fuzz_header(b: &[u8]) {
    if let Some(d) = Header::decode(b) {
        let mut again = vec![0u8; HDR];
        d.encode(&mut again);
        assert!(
            Header::decode(&again) == Some(d),
            "a header did not round-trip"
        );
    }
}
