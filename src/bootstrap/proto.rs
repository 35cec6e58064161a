//! Wire format of the rendezvous store, shared by [`server`](super::server) and
//! [`client`](super::client).
//!
//! Owns: message layout, size limits, encoding and decoding, and the deadline-aware socket
//! reads both sides use. Knows nothing of store semantics.
//!
//! # Connection
//!
//! A challenge-response in both directions: the job secret never travels, and a recorded
//! handshake is worthless because both sides contribute a fresh nonce. Proofs are
//! HMAC-SHA256 under the store key derived from the secret ([`crate::auth`]).
//!
//! 1. Preamble, client to server, 44 bytes: magic `oxcclkv\0` (8), protocol version (u32),
//!    the client's nonce (32). The server reads exactly these bytes and nothing more
//!    before checking them.
//! 2. Challenge, server to client: one ack byte, [`ACK_OK`] or [`ACK_BAD_MAGIC`] (wrong magic
//!    or version, then the server closes); after `ACK_OK`, the server's nonce (32) and its
//!    proof over (`"server"`, both nonces) (32), so that a client learns at once when the
//!    store belongs to another job.
//! 3. Answer, client to server, 40 bytes: its proof over (`"client"`, both nonces, rank,
//!    size), then rank and size (u32 each).
//! 4. Verdict, server to client, 1 byte: [`ACK_OK`] or [`ACK_BAD_SECRET`] (then closed). The
//!    client waits for it before sending more, so a rejection is never lost to a reset.
//! 5. `HELLO` frame (rank, size, as proven), answered by `OK` or `ERROR` (then closed).
//! 6. Requests, each answered in order; `GOODBYE` ends the connection.
//!
//! # Frames
//!
//! `len: u32` then `len` body bytes (`len <= MAX_FRAME_BYTES`); the body starts with an opcode
//! byte. Integers are little-endian. `bytes` is a `u32` length then the bytes; `str` is `bytes`
//! holding UTF-8; `keys` is a `u32` count then that many `str`.
//!
//! | request | fields | reply |
//! | --- | --- | --- |
//! | `0x01 HELLO` | rank u32, size u32 | `OK` |
//! | `0x02 SET` | key str, value bytes | `OK` |
//! | `0x03 GET` | timeout_ms u64, keys | `VALUES` n, then n `VALUE` frames in key order; or `TIMEOUT` |
//! | `0x04 TRY_GET` | key str | `VALUE` or `NOT_FOUND` |
//! | `0x05 ADD` | key str, delta i64 | `INT` (the new value; stored as decimal ASCII) |
//! | `0x06 WAIT` | timeout_ms u64, keys | `OK` or `TIMEOUT` |
//! | `0x07 GOODBYE` | | `OK`, then the server closes |
//!
//! | reply | fields |
//! | --- | --- |
//! | `0x80 OK` | |
//! | `0x81 VALUE` | value bytes |
//! | `0x82 NOT_FOUND` | |
//! | `0x83 INT` | value i64 |
//! | `0x84 VALUES` | count u32 |
//! | `0x85 TIMEOUT` | missing_total u32, keys (the first [`MAX_MISSING_LISTED`] missing, in request order) |
//! | `0x86 ERROR` | kind u8 (1 System, 2 Remote, 3 InvalidArgument, 4 InvalidUsage, 5 Timeout, 6 Internal), message str |
//!
//! Any request may be answered by `ERROR`; the connection stays usable unless the error came
//! from `HELLO` or from a frame that broke framing (too large), after which the server closes.

use std::io::{self, Read};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::auth::{Key, Nonce, Proof, NONCE_BYTES, PROOF_BYTES};
use crate::error::ErrorKind;

/// First eight bytes a client sends.
pub(crate) const MAGIC: [u8; 8] = *b"oxcclkv\0";
/// Protocol version sent after the magic (2: challenge-response; 1 sent the secret).
pub(crate) const VERSION: u32 = 2;
/// Length of the client's preamble: magic, version, nonce.
pub(crate) const PREAMBLE_BYTES: usize = 8 + 4 + NONCE_BYTES;
/// Length of the server's challenge after its ack byte: nonce, proof.
pub(crate) const CHALLENGE_BYTES: usize = NONCE_BYTES + PROOF_BYTES;
/// Length of the client's answer: proof, rank, size.
pub(crate) const ANSWER_BYTES: usize = PROOF_BYTES + 8;
/// Ack byte: the preamble (or the answer) was accepted.
pub(crate) const ACK_OK: u8 = 0;
/// Ack byte: wrong magic or protocol version.
pub(crate) const ACK_BAD_MAGIC: u8 = 1;
/// Ack byte: the client's proof is wrong (it does not hold the job secret).
pub(crate) const ACK_BAD_SECRET: u8 = 2;

/// Largest value the store keeps (16 MiB).
pub const MAX_VALUE_BYTES: usize = 16 << 20;
/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 4096;
/// Largest frame body: one value plus room for keys and headers.
pub(crate) const MAX_FRAME_BYTES: usize = MAX_VALUE_BYTES + (1 << 20);
/// Most missing keys a `TIMEOUT` reply names.
pub(crate) const MAX_MISSING_LISTED: usize = 64;

/// How often blocked socket reads wake to check deadlines and shutdown.
pub(crate) const TICK: Duration = Duration::from_millis(100);

const OP_HELLO: u8 = 0x01;
const OP_SET: u8 = 0x02;
const OP_GET: u8 = 0x03;
const OP_TRY_GET: u8 = 0x04;
const OP_ADD: u8 = 0x05;
const OP_WAIT: u8 = 0x06;
const OP_GOODBYE: u8 = 0x07;
const RE_OK: u8 = 0x80;
const RE_VALUE: u8 = 0x81;
const RE_NOT_FOUND: u8 = 0x82;
const RE_INT: u8 = 0x83;
const RE_VALUES: u8 = 0x84;
const RE_TIMEOUT: u8 = 0x85;
const RE_ERROR: u8 = 0x86;

/// The client's preamble carrying its nonce.
pub(crate) fn preamble(nonce: &Nonce) -> [u8; PREAMBLE_BYTES] {
    let mut p = [0u8; PREAMBLE_BYTES];
    p[..8].copy_from_slice(&MAGIC);
    p[8..12].copy_from_slice(&VERSION.to_le_bytes());
    p[12..].copy_from_slice(nonce);
    p
}

/// The client's nonce in a preamble with the right magic and version.
pub(crate) fn check_preamble(p: &[u8; PREAMBLE_BYTES]) -> Option<Nonce> {
    if p[..8] != MAGIC || p[8..12] != VERSION.to_le_bytes() {
        return None;
    }
    let mut n = [0u8; NONCE_BYTES];
    n.copy_from_slice(&p[12..]);
    Some(n)
}

/// The server's proof: it holds the key, for these nonces.
pub(crate) fn server_proof(key: &Key, client: &Nonce, server: &Nonce) -> Proof {
    key.prove(&[b"server", client, server])
}

/// Whether `proof` is the server's proof for these nonces (constant time).
pub(crate) fn check_server_proof(key: &Key, client: &Nonce, server: &Nonce, proof: &[u8]) -> bool {
    key.verify(&[b"server", client, server], proof)
}

/// The client's answer: its proof for these nonces, rank and size, then rank and size.
pub(crate) fn answer(
    key: &Key,
    client: &Nonce,
    server: &Nonce,
    rank: u32,
    size: u32,
) -> [u8; ANSWER_BYTES] {
    let (r, n) = (rank.to_le_bytes(), size.to_le_bytes());
    let mut a = [0u8; ANSWER_BYTES];
    a[..PROOF_BYTES].copy_from_slice(&key.prove(&[b"client", client, server, &r, &n]));
    a[PROOF_BYTES..PROOF_BYTES + 4].copy_from_slice(&r);
    a[PROOF_BYTES + 4..].copy_from_slice(&n);
    a
}

/// The (rank, size) a client's answer proves, or `None` if its proof is wrong.
pub(crate) fn check_answer(
    key: &Key,
    client: &Nonce,
    server: &Nonce,
    a: &[u8; ANSWER_BYTES],
) -> Option<(u32, u32)> {
    let (proof, rest) = a.split_at(PROOF_BYTES);
    let (r, n) = rest.split_at(4);
    if !key.verify(&[b"client", client, server, r, n], proof) {
        return None;
    }
    let word = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    Some((word(r), word(n)))
}

/// A client request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Request {
    Hello { rank: u32, size: u32 },
    Set { key: String, value: Vec<u8> },
    Get { keys: Vec<String>, timeout_ms: u64 },
    TryGet { key: String },
    Add { key: String, delta: i64 },
    Wait { keys: Vec<String>, timeout_ms: u64 },
    Goodbye,
}

/// A server reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reply {
    Ok,
    Value(Vec<u8>),
    NotFound,
    Int(i64),
    Values(u32),
    Timeout {
        missing_total: u32,
        missing: Vec<String>,
    },
    Error {
        kind: ErrorKind,
        message: String,
    },
}

impl Request {
    /// The whole frame, length prefix included; too large is an error message.
    pub(crate) fn encode(&self) -> Result<Vec<u8>, String> {
        let e = match self {
            Request::Hello { rank, size } => Enc::new(OP_HELLO).u32(*rank).u32(*size),
            Request::Set { key, value } => Enc::new(OP_SET).str(key).bytes(value),
            Request::Get { keys, timeout_ms } => Enc::new(OP_GET).u64(*timeout_ms).keys(keys),
            Request::TryGet { key } => Enc::new(OP_TRY_GET).str(key),
            Request::Add { key, delta } => Enc::new(OP_ADD).str(key).i64(*delta),
            Request::Wait { keys, timeout_ms } => Enc::new(OP_WAIT).u64(*timeout_ms).keys(keys),
            Request::Goodbye => Enc::new(OP_GOODBYE),
        };
        e.finish()
    }

    /// Parses a frame body.
    pub(crate) fn decode(body: &[u8]) -> Result<Request, String> {
        let mut d = Dec::new(body);
        let r = match d.u8()? {
            OP_HELLO => Request::Hello {
                rank: d.u32()?,
                size: d.u32()?,
            },
            OP_SET => Request::Set {
                key: d.key()?,
                value: d.value()?,
            },
            OP_GET => Request::Get {
                timeout_ms: d.u64()?,
                keys: d.keys()?,
            },
            OP_TRY_GET => Request::TryGet { key: d.key()? },
            OP_ADD => Request::Add {
                key: d.key()?,
                delta: d.i64()?,
            },
            OP_WAIT => Request::Wait {
                timeout_ms: d.u64()?,
                keys: d.keys()?,
            },
            OP_GOODBYE => Request::Goodbye,
            op => return Err(format!("unknown request opcode {op:#04x}")),
        };
        d.end()?;
        Ok(r)
    }
}

impl Reply {
    /// The whole frame, length prefix included.
    pub(crate) fn encode(&self) -> Result<Vec<u8>, String> {
        let e = match self {
            Reply::Ok => Enc::new(RE_OK),
            Reply::Value(v) => Enc::new(RE_VALUE).bytes(v),
            Reply::NotFound => Enc::new(RE_NOT_FOUND),
            Reply::Int(v) => Enc::new(RE_INT).i64(*v),
            Reply::Values(n) => Enc::new(RE_VALUES).u32(*n),
            Reply::Timeout {
                missing_total,
                missing,
            } => Enc::new(RE_TIMEOUT).u32(*missing_total).keys(missing),
            Reply::Error { kind, message } => Enc::new(RE_ERROR).u8(kind_code(*kind)).str(message),
        };
        e.finish()
    }

    /// Parses a frame body.
    pub(crate) fn decode(body: &[u8]) -> Result<Reply, String> {
        let mut d = Dec::new(body);
        let r = match d.u8()? {
            RE_OK => Reply::Ok,
            RE_VALUE => Reply::Value(d.value()?),
            RE_NOT_FOUND => Reply::NotFound,
            RE_INT => Reply::Int(d.i64()?),
            RE_VALUES => Reply::Values(d.u32()?),
            RE_TIMEOUT => Reply::Timeout {
                missing_total: d.u32()?,
                missing: d.keys()?,
            },
            RE_ERROR => Reply::Error {
                kind: kind_from_code(d.u8()?),
                message: d.string(MAX_FRAME_BYTES)?,
            },
            op => return Err(format!("unknown reply opcode {op:#04x}")),
        };
        d.end()?;
        Ok(r)
    }
}

/// An error kind's number on the wire (store replies, news items).
pub(crate) fn kind_code(k: ErrorKind) -> u8 {
    match k {
        ErrorKind::System => 1,
        ErrorKind::Remote => 2,
        ErrorKind::InvalidArgument => 3,
        ErrorKind::InvalidUsage => 4,
        ErrorKind::Timeout => 5,
        ErrorKind::Internal => 6,
    }
}

/// The kind numbered `c` (an unknown number reads as Remote).
pub(crate) fn kind_from_code(c: u8) -> ErrorKind {
    match c {
        1 => ErrorKind::System,
        3 => ErrorKind::InvalidArgument,
        4 => ErrorKind::InvalidUsage,
        5 => ErrorKind::Timeout,
        6 => ErrorKind::Internal,
        // A kind this version does not know is still the server's failure.
        _ => ErrorKind::Remote,
    }
}

/// Builds one frame; the length prefix is filled in by `finish`.
struct Enc(Vec<u8>);

impl Enc {
    fn new(op: u8) -> Enc {
        let mut v = Vec::with_capacity(64);
        v.extend_from_slice(&[0; 4]);
        v.push(op);
        Enc(v)
    }
    fn u8(mut self, x: u8) -> Enc {
        self.0.push(x);
        self
    }
    fn u32(mut self, x: u32) -> Enc {
        self.0.extend_from_slice(&x.to_le_bytes());
        self
    }
    fn u64(mut self, x: u64) -> Enc {
        self.0.extend_from_slice(&x.to_le_bytes());
        self
    }
    fn i64(mut self, x: i64) -> Enc {
        self.0.extend_from_slice(&x.to_le_bytes());
        self
    }
    fn bytes(self, b: &[u8]) -> Enc {
        // Anything too long for u32 is far over MAX_FRAME_BYTES, which `finish` rejects.
        let n = u32::try_from(b.len()).unwrap_or(u32::MAX);
        let mut e = self.u32(n);
        e.0.extend_from_slice(b);
        e
    }
    fn str(self, s: &str) -> Enc {
        self.bytes(s.as_bytes())
    }
    fn keys(self, keys: &[String]) -> Enc {
        let n = u32::try_from(keys.len()).unwrap_or(u32::MAX);
        keys.iter().fold(self.u32(n), |e, k| e.str(k))
    }
    fn finish(mut self) -> Result<Vec<u8>, String> {
        let body = self.0.len() - 4;
        if body > MAX_FRAME_BYTES {
            return Err(format!(
                "message of {body} bytes exceeds the store's limit of {MAX_FRAME_BYTES} bytes"
            ));
        }
        self.0[..4].copy_from_slice(&(body as u32).to_le_bytes());
        Ok(self.0)
    }
}

/// Reads fields from a frame body; every shortfall is an error, never a panic.
struct Dec<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Dec<'a> {
    fn new(buf: &'a [u8]) -> Dec<'a> {
        Dec { buf, pos: 0 }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| format!("truncated message ({} bytes)", self.buf.len()))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.array::<1>()?[0])
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn i64(&mut self) -> Result<i64, String> {
        Ok(i64::from_le_bytes(self.array()?))
    }
    fn bytes(&mut self, max: usize, what: &str) -> Result<&'a [u8], String> {
        let n = self.u32()? as usize;
        if n > max {
            return Err(format!("{what} of {n} bytes exceeds the limit of {max}"));
        }
        self.take(n)
    }
    fn value(&mut self) -> Result<Vec<u8>, String> {
        Ok(self.bytes(MAX_VALUE_BYTES, "value")?.to_vec())
    }
    fn string(&mut self, max: usize) -> Result<String, String> {
        let b = self.bytes(max, "string")?;
        String::from_utf8(b.to_vec()).map_err(|_| "string is not UTF-8".to_string())
    }
    fn key(&mut self) -> Result<String, String> {
        let b = self.bytes(MAX_KEY_BYTES, "key")?;
        String::from_utf8(b.to_vec()).map_err(|_| "key is not UTF-8".to_string())
    }
    fn keys(&mut self) -> Result<Vec<String>, String> {
        let n = self.u32()? as usize;
        // Each key takes at least its 4-byte length, which bounds the allocation by the frame.
        if n > (self.buf.len() - self.pos) / 4 {
            return Err(format!("key count {n} does not fit in the message"));
        }
        (0..n).map(|_| self.key()).collect()
    }
    fn end(&self) -> Result<(), String> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(format!(
                "{} unexpected bytes at the end of a message",
                self.buf.len() - self.pos
            ))
        }
    }
}

/// Why a socket read did not complete.
#[derive(Debug)]
pub(crate) enum ReadFail {
    /// The peer closed the connection (or reset it).
    Closed,
    /// The deadline passed.
    TimedOut,
    /// `cancel` said to stop.
    Cancelled,
    /// A frame announced more than [`MAX_FRAME_BYTES`].
    TooLarge(usize),
    /// Any other socket error.
    Os(io::Error),
}

impl std::fmt::Display for ReadFail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadFail::Closed => f.write_str("connection closed by the peer"),
            ReadFail::TimedOut => f.write_str("no data before the deadline"),
            ReadFail::Cancelled => f.write_str("the store is shutting down"),
            ReadFail::TooLarge(n) => write!(
                f,
                "message of {n} bytes exceeds the store's limit of {MAX_FRAME_BYTES} bytes"
            ),
            ReadFail::Os(e) => write!(f, "{e}"),
        }
    }
}

/// Fills `buf`. The socket must have a read timeout (about [`TICK`]): each time it expires
/// the deadline (`None`: none) and `cancel` are checked.
pub(crate) fn read_full(
    stream: &mut TcpStream,
    buf: &mut [u8],
    deadline: Option<Instant>,
    cancel: &dyn Fn() -> bool,
) -> Result<(), ReadFail> {
    let mut filled = 0;
    while filled < buf.len() {
        match stream.read(&mut buf[filled..]) {
            Ok(0) => return Err(ReadFail::Closed),
            Ok(n) => filled += n,
            Err(e) => match e.kind() {
                io::ErrorKind::Interrupted => {}
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                    if cancel() {
                        return Err(ReadFail::Cancelled);
                    }
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Err(ReadFail::TimedOut);
                    }
                }
                io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::UnexpectedEof => return Err(ReadFail::Closed),
                _ => return Err(ReadFail::Os(e)),
            },
        }
    }
    Ok(())
}

/// Reads one frame body: the header must start arriving by `first_deadline`, the rest must
/// follow within `rest` of it.
pub(crate) fn read_frame(
    stream: &mut TcpStream,
    first_deadline: Option<Instant>,
    rest: Duration,
    cancel: &dyn Fn() -> bool,
) -> Result<Vec<u8>, ReadFail> {
    let mut hdr = [0u8; 4];
    read_full(stream, &mut hdr[..1], first_deadline, cancel)?;
    read_frame_rest(stream, hdr[0], rest, cancel)
}

/// Reads the rest of a frame whose first byte was `first`, within `rest`.
pub(crate) fn read_frame_rest(
    stream: &mut TcpStream,
    first: u8,
    rest: Duration,
    cancel: &dyn Fn() -> bool,
) -> Result<Vec<u8>, ReadFail> {
    let mut hdr = [first, 0, 0, 0];
    let deadline = after(rest);
    read_full(stream, &mut hdr[1..], deadline, cancel)?;
    let n = u32::from_le_bytes(hdr) as usize;
    if n > MAX_FRAME_BYTES {
        return Err(ReadFail::TooLarge(n));
    }
    let mut body = vec![0u8; n];
    read_full(stream, &mut body, deadline, cancel)?;
    Ok(body)
}

/// `now + d`, or `None` (no deadline) where that is beyond what `Instant` can hold.
pub(crate) fn after(d: Duration) -> Option<Instant> {
    Instant::now().checked_add(d)
}

/// A duration in whole milliseconds, rounded up so that a short wait is not turned into none.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_micros().div_ceil(1000)).unwrap_or(u64::MAX)
}

/// Valid frame bodies for [`fuzz_frame`]: one request and one reply of each kind.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn fuzz_frame_seeds() -> Vec<Vec<u8>> {
    let reqs = [
        Request::Hello { rank: 3, size: 8 },
        Request::Set {
            key: "oxccl/handle/3".into(),
            value: vec![1, 2, 3],
        },
        Request::Get {
            keys: vec!["a".into(), "bb".into()],
            timeout_ms: 5000,
        },
        Request::TryGet { key: "k".into() },
        Request::Add {
            key: "ctr".into(),
            delta: -4,
        },
        Request::Wait {
            keys: vec!["x".into()],
            timeout_ms: 1,
        },
        Request::Goodbye,
    ];
    let reps = [
        Reply::Ok,
        Reply::Value(vec![9; 40]),
        Reply::NotFound,
        Reply::Int(-7),
        Reply::Values(2),
        Reply::Timeout {
            missing_total: 3,
            missing: vec!["a".into()],
        },
        Reply::Error {
            kind: ErrorKind::Remote,
            message: "gone".into(),
        },
    ];
    let mut v: Vec<Vec<u8>> = reqs
        .iter()
        .filter_map(|r| r.encode().ok())
        .map(|f| f[4..].to_vec())
        .collect();
    v.extend(
        reps.iter()
            .filter_map(|r| r.encode().ok())
            .map(|f| f[4..].to_vec()),
    );
    v
}

/// Fuzz target (see `crate::fuzz`): a frame body decodes as a request or a reply, which
/// re-encodes to itself, or is refused. Returns whether it decoded as a request.
#[cfg(any(test, feature = "fuzzing"))]
#[allow(clippy::panic)]
pub(crate) fn fuzz_frame(b: &[u8]) -> bool {
    let request = Request::decode(b).ok();
    if let Some(r) = &request {
        let again = r.encode().map(|f| Request::decode(&f[4..]));
        assert!(
            matches!(&again, Ok(Ok(x)) if x == r),
            "request {r:?} from {b:?} re-decoded as {again:?}"
        );
    }
    if let Ok(r) = Reply::decode(b) {
        let again = r.encode().map(|f| Reply::decode(&f[4..]));
        assert!(
            matches!(&again, Ok(Ok(x)) if *x == r),
            "reply {r:?} from {b:?} re-decoded as {again:?}"
        );
    }
    request.is_some()
}

/// The key, nonces, rank and size of the fuzzed handshake.
#[cfg(any(test, feature = "fuzzing"))]
fn fuzz_parties() -> (Key, Nonce, Nonce) {
    (
        Key::derive(&[5; 32], crate::auth::STORE),
        [1u8; NONCE_BYTES],
        [2u8; NONCE_BYTES],
    )
}

/// A valid handshake for [`fuzz_handshake`]: the preamble, then rank 1 of 2's answer.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn fuzz_handshake_seed() -> Vec<u8> {
    let (k, c, s) = fuzz_parties();
    let mut v = preamble(&c).to_vec();
    v.extend_from_slice(&answer(&k, &c, &s, 1, 2));
    v
}

/// Fuzz target: the first bytes as a preamble, the last as an answer; only the real answer
/// proves the secret.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn fuzz_handshake(b: &[u8]) {
    let (k, c, s) = fuzz_parties();
    if let Ok(p) = <[u8; PREAMBLE_BYTES]>::try_from(&b[..b.len().min(PREAMBLE_BYTES)]) {
        let _ = check_preamble(&p);
    }
    if let Ok(a) = <[u8; ANSWER_BYTES]>::try_from(&b[b.len().saturating_sub(ANSWER_BYTES)..]) {
        if check_answer(&k, &c, &s, &a).is_some() {
            assert!(
                a == answer(&k, &c, &s, 1, 2),
                "a changed answer was accepted"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip_request(r: Request) {
        let f = r.encode().unwrap();
        assert_eq!(
            u32::from_le_bytes(f[..4].try_into().unwrap()) as usize,
            f.len() - 4
        );
        assert_eq!(Request::decode(&f[4..]).unwrap(), r);
    }

    fn round_trip_reply(r: Reply) {
        let f = r.encode().unwrap();
        assert_eq!(Reply::decode(&f[4..]).unwrap(), r);
    }

    #[test]
    fn requests_round_trip() {
        round_trip_request(Request::Hello { rank: 3, size: 8 });
        round_trip_request(Request::Set {
            key: "addr/3".into(),
            value: vec![1, 2, 3, 0, 255],
        });
        round_trip_request(Request::Get {
            keys: vec!["a".into(), "bé".into(), String::new()],
            timeout_ms: 1234,
        });
        round_trip_request(Request::TryGet { key: "k".into() });
        round_trip_request(Request::Add {
            key: "c".into(),
            delta: -7,
        });
        round_trip_request(Request::Wait {
            keys: vec![],
            timeout_ms: u64::MAX,
        });
        round_trip_request(Request::Goodbye);
    }

    #[test]
    fn replies_round_trip() {
        round_trip_reply(Reply::Ok);
        round_trip_reply(Reply::Value(vec![9; 1000]));
        round_trip_reply(Reply::NotFound);
        round_trip_reply(Reply::Int(i64::MIN));
        round_trip_reply(Reply::Values(17));
        round_trip_reply(Reply::Timeout {
            missing_total: 100,
            missing: vec!["x/1".into(), "x/3".into()],
        });
        for kind in [
            ErrorKind::System,
            ErrorKind::Remote,
            ErrorKind::InvalidArgument,
            ErrorKind::InvalidUsage,
            ErrorKind::Timeout,
            ErrorKind::Internal,
        ] {
            round_trip_reply(Reply::Error {
                kind,
                message: "size mismatch".into(),
            });
        }
    }

    #[test]
    fn malformed_bodies_are_errors() {
        let f = Request::Set {
            key: "key".into(),
            value: vec![1; 10],
        }
        .encode()
        .unwrap();
        let body = &f[4..];
        // Every truncation fails cleanly.
        for cut in 0..body.len() {
            assert!(Request::decode(&body[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = body.to_vec();
        long.push(0);
        assert!(Request::decode(&long)
            .unwrap_err()
            .contains("unexpected bytes"));
        assert!(Request::decode(&[0x7f]).unwrap_err().contains("opcode"));
        // A key count far larger than the body is refused before allocating.
        let mut huge = vec![OP_WAIT];
        huge.extend_from_slice(&5u64.to_le_bytes());
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(Request::decode(&huge).unwrap_err().contains("key count"));
        // Over-long key and non-UTF-8 key.
        let mut k = vec![OP_TRY_GET];
        k.extend_from_slice(&((MAX_KEY_BYTES + 1) as u32).to_le_bytes());
        k.extend(vec![b'a'; MAX_KEY_BYTES + 1]);
        assert!(Request::decode(&k).unwrap_err().contains("key of"));
        let bad = [OP_TRY_GET, 2, 0, 0, 0, 0xff, 0xfe];
        assert!(Request::decode(&bad).unwrap_err().contains("UTF-8"));
    }

    #[test]
    fn oversized_frames_are_refused_when_encoding() {
        let r = Request::Set {
            key: "k".into(),
            value: vec![0; MAX_FRAME_BYTES + 1],
        };
        assert!(r.encode().unwrap_err().contains("exceeds"));
    }

    /// Valid request and reply bodies (length prefix removed), the fuzzers' corpus.

    #[test]
    fn fuzz_store_frames_decode_or_refuse_and_round_trip() {
        let decoded = crate::fuzz::inputs(&fuzz_frame_seeds(), 30_000, 11)
            .filter(|b| fuzz_frame(b))
            .count();
        // Mutations reach past the first checks: some still decode.
        assert!(decoded > 1000, "only {decoded} inputs decoded");
    }

    #[test]
    fn fuzz_handshake_messages_are_refused_without_the_key() {
        let seed = fuzz_handshake_seed();
        for b in crate::fuzz::inputs(std::slice::from_ref(&seed), 20_000, 12) {
            fuzz_handshake(&b);
        }
    }

    #[test]
    fn preamble_checks_magic_and_version() {
        let n = [7u8; 32];
        let p = preamble(&n);
        assert_eq!(check_preamble(&p), Some(n));
        let mut v = preamble(&n);
        v[8] = 1; // version 1 sent the secret itself
        assert_eq!(check_preamble(&v), None);
        let mut m = preamble(&n);
        m[0] = b'X';
        assert_eq!(check_preamble(&m), None);
    }

    #[test]
    fn answers_prove_nonces_rank_and_size() {
        let k = Key::derive(&[3; 32], crate::auth::STORE);
        let (c, s) = ([1u8; 32], [2u8; 32]);
        let a = answer(&k, &c, &s, 5, 8);
        assert_eq!(check_answer(&k, &c, &s, &a), Some((5, 8)));
        // A recorded answer is worthless against a fresh server nonce.
        assert_eq!(check_answer(&k, &c, &[9u8; 32], &a), None);
        // Rank and size cannot be changed after the proof.
        let mut b = a;
        b[PROOF_BYTES] = 6;
        assert_eq!(check_answer(&k, &c, &s, &b), None);
        let other = Key::derive(&[4; 32], crate::auth::STORE);
        assert_eq!(check_answer(&other, &c, &s, &a), None);
        // The server's proof is not a client's answer (labels differ).
        let mut forged = a;
        forged[..PROOF_BYTES].copy_from_slice(&server_proof(&k, &c, &s));
        assert_eq!(check_answer(&k, &c, &s, &forged), None);
    }

    #[test]
    fn millis_rounds_up_and_saturates() {
        assert_eq!(millis(Duration::ZERO), 0);
        assert_eq!(millis(Duration::from_micros(1)), 1);
        assert_eq!(millis(Duration::from_millis(1500)), 1500);
        assert_eq!(millis(Duration::MAX), u64::MAX);
    }
}
