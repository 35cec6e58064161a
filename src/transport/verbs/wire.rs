//! What travels between two connected ranks, and the per-connection memory it lands in.
//!
//! Owns: the sizes of the protocol, the layout of a connection's registered control block,
//! the 32-byte message header and clear-to-send record, and the 32-bit immediate values.
//!
//! Protocol, for the k-th message of a direction (sender S, receiver R):
//! * R's `irecv` k writes a clear-to-send (CTS) record into S's `cts_in[k % SLOTS]` with
//!   RDMA write-with-immediate: the receive buffer's address, rkey and capacity when it
//!   is larger than [`EAGER_BYTES`], else just the capacity. The immediate wakes S.
//! * A message of at most [`EAGER_BYTES`] goes eagerly, without waiting for its CTS: header
//!   and payload in one write-with-immediate into R's `eager_in[k % SLOTS]`, inline when
//!   small; R copies it out when the receive is (or is already) posted.
//! * A larger message waits for CTS k, then S writes the header into the eager slot and
//!   the payload straight into R's buffer (zero copy), split over up to
//!   `OXCCL_IB_QPS_PER_CONNECTION` queue pairs; every part is a write-with-immediate
//!   carrying (k, number of parts), and R completes the receive when all parts are in.
//!   Writes on one QP land in order, so the header is in place before part 0 completes.
//!
//! Flow control, with `R_MAX = MAX_REQUESTS` unreported requests per side and
//! `SLOTS = 2 * R_MAX`: posting receive j requires every message up to j - R_MAX to be
//! reported, so once S has seen CTS j it may write eager message k <= j + SLOTS - R_MAX
//! into slot k % SLOTS, whose previous message has been copied out; the same argument
//! bounds the reuse of CTS slots. No credit messages are needed.

use crate::transport::Tag;

/// Most unreported requests per connection and direction (the engine's in-flight window).
pub(super) const MAX_REQUESTS: usize = 8;
/// Eager slots and CTS slots per direction.
pub(super) const SLOTS: usize = 2 * MAX_REQUESTS;
/// Largest message sent eagerly (copied through the receiver's slot).
pub(super) const EAGER_BYTES: usize = 8 << 10;
/// Message header: the tag's three words and the length, little endian.
pub(super) const HDR: usize = 32;
/// Bytes of one eager slot (header + payload), cache-line aligned.
pub(super) const STRIDE: usize = (HDR + EAGER_BYTES).div_ceil(64) * 64;
/// Bytes of one CTS record.
pub(super) const CTS: usize = 32;

/// Offsets inside the control block, which both sides lay out the same way.
pub(super) const EAGER_IN: usize = 0;
pub(super) const EAGER_OUT: usize = EAGER_IN + SLOTS * STRIDE;
pub(super) const CTS_IN: usize = EAGER_OUT + SLOTS * STRIDE;
pub(super) const CTS_OUT: usize = CTS_IN + SLOTS * CTS;
pub(super) const HDR_OUT: usize = CTS_OUT + SLOTS * CTS;
pub(super) const CTRL_BYTES: usize = (HDR_OUT + SLOTS * HDR).div_ceil(4096) * 4096;

/// Immediate of a CTS record: the top bit, and the low 31 bits of the sequence number.
const IMM_CTS: u32 = 1 << 31;
/// Sequence bits of a message part's immediate (above 8 bits of part count).
const SEQ_BITS: u32 = 23;

/// The immediate of one part of message `seq` that has `parts` parts.
pub(super) fn imm_part(seq: u64, parts: u8) -> u32 {
    ((seq as u32 & ((1 << SEQ_BITS) - 1)) << 8) | u32::from(parts)
}

/// The immediate of CTS `seq`.
pub(super) fn imm_cts(seq: u64) -> u32 {
    IMM_CTS | (seq as u32 & !IMM_CTS)
}

/// What an immediate announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Imm {
    /// CTS with these low sequence bits.
    Cts(u32),
    /// A message part: low sequence bits, part count.
    Part(u32, u8),
}

pub(super) fn decode_imm(imm: u32) -> Imm {
    if imm & IMM_CTS != 0 {
        Imm::Cts(imm & !IMM_CTS)
    } else {
        Imm::Part(imm >> 8, (imm & 0xff) as u8)
    }
}

/// The full sequence number of a message part whose low bits are `low`, knowing it lies in
/// `[base, base + SLOTS)`.
pub(super) fn part_seq(base: u64, low: u32) -> Option<u64> {
    let m = 1u64 << SEQ_BITS;
    let d = (u64::from(low) + m - (base % m)) % m;
    (d < SLOTS as u64).then_some(base + d)
}

/// Whether `low` are the low bits of CTS `seq`.
pub(super) fn cts_matches(seq: u64, low: u32) -> bool {
    seq as u32 & !IMM_CTS == low
}

/// A message header.
pub(super) fn header(tag: Tag, len: usize) -> [u8; HDR] {
    let mut b = [0u8; HDR];
    for (i, w) in tag.iter().chain(std::iter::once(&(len as u64))).enumerate() {
        b[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
    }
    b
}

fn word(b: &[u8], i: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[i * 8..i * 8 + 8]);
    u64::from_le_bytes(w)
}

/// Tag and length of a header.
pub(super) fn parse_header(b: &[u8; HDR]) -> (Tag, u64) {
    ([word(b, 0), word(b, 1), word(b, 2)], word(b, 3))
}

/// A clear-to-send record: where message `seq` may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Cts {
    pub seq: u64,
    /// The receive's capacity in bytes.
    pub cap: u64,
    /// Zero-copy target (0 with `rkey` 0: eager only).
    pub addr: u64,
    pub rkey: u32,
}

impl Cts {
    pub(super) fn encode(&self) -> [u8; CTS] {
        let mut b = [0u8; CTS];
        b[0..8].copy_from_slice(&self.seq.to_le_bytes());
        b[8..16].copy_from_slice(&self.cap.to_le_bytes());
        b[16..24].copy_from_slice(&self.addr.to_le_bytes());
        b[24..28].copy_from_slice(&self.rkey.to_le_bytes());
        b
    }

    pub(super) fn decode(b: &[u8; CTS]) -> Cts {
        Cts {
            seq: word(b, 0),
            cap: word(b, 1),
            addr: word(b, 2),
            rkey: u32::from_le_bytes([b[24], b[25], b[26], b[27]]),
        }
    }

    /// Whether the receiver offered a zero-copy target.
    pub(super) fn zero_copy(&self) -> bool {
        self.rkey != 0 || self.addr != 0
    }
}
