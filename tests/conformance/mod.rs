//! The transport conformance suite: one generic set of checks of the semantics every
//! backend of the [`Transport`] trait must keep (documented at the top of
//! `src/transport/mod.rs`), run on each backend through the trait alone.
//!
//! A binary that includes this module defines `conformance_backends!` first, one
//! [`conformance_tests!`] line per backend; each line becomes a module of tests named
//! `conformance::<backend>::<property>`, so `cargo test --test collectives conformance`
//! lists a backend x property table. `tests/collectives.rs` runs mem, tcp, shm, fabric on
//! libfabric's tcp and shm providers, and the hybrid transport (shm beside tcp, through
//! shm on one host and through tcp between two); `tests/verbs.rs` runs verbs (`#[ignore]`d:
//! it needs the SoftRoCE VM of `ci/verbs.sh`). A new backend adds one line there.
//!
//! The properties, modelled on Gloo's transport tests:
//! * `ordering`: 200 messages of varied sizes (some of a megabyte, some empty) on one
//!   connection arrive in order with their bytes and tags; `two_connections`: two
//!   connections between the same pair do not mix;
//! * `zero_length`, `large_message` (16 MiB), `receive_larger_than_message` (the completion
//!   reports the message's length and tag; the rest of the buffer is not written);
//! * `back_pressure`: posting beyond `Capabilities::max_requests` answers `None` at once,
//!   never an error or a block, and posting resumes once the peer drains;
//! * `registration`: data calls with registered regions work, registrations of one range
//!   are balanced, a registration the backend cannot make is an error, never a panic;
//! * `handle_size`: handles fit `MAX_HANDLE_BYTES`, longer ones are refused, foreign bytes
//!   are an error;
//! * `connect_accept_never_block`: every call of the set-up returns promptly, also while
//!   the listener's owner does not accept, and the connection comes once both poll;
//! * `closed_receiver_is_remote`, `closed_sender_is_remote`: a peer that closed its end
//!   fails what is posted, and what is posted after, with `ErrorKind::Remote`;
//! * `stranger`, where the listener's address can be reached from a test: a raw client
//!   that connects and says nothing, or garbage, neither blocks `accept` nor keeps a real
//!   peer out, and a backend that greets its peers accepts no connection from it.
//!
//! A killed peer process (not a closed connection) is covered elsewhere: the mem backend's
//! `kill` tests, `tests/launch/faults.rs`, the verbs suite's killed rank, and
//! `ci/fabric-tests.sh`.
//!
//! Every loop runs against a deadline and fails rather than hangs; everything talks over
//! loopback.

#![allow(dead_code)]

pub mod backends;

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use oxccl::transport::{Completion, ConnectHandle, Tag, Transport, MAX_HANDLE_BYTES};
use oxccl::{ErrorKind, Result};

/// Longest any polling loop of a test may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(30);
/// Longest one non-blocking call may take (generous for a loaded two-core machine: in full
/// clean-clone runs libfabric's tcp;ofi_rxm progress has taken 58-60 ms inside one
/// `poll_connect`). A call that waits for its peer never returns in these single-threaded
/// tests (the peer is the same thread); this bound catches calls that wait with a timeout.
pub const PROMPT: Duration = Duration::from_millis(200);

/// Two transports of one backend: the first sends, the second listens and receives.
/// `None`: the backend cannot run here (the factory printed why), the test passes.
pub type Pair<T> = Option<(T, T)>;

/// Whether a backend's `accept` checks a greeting before it returns a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Greeting {
    /// It does: a stranger's socket never becomes a connection.
    Checked,
    /// It does not (tcp): every socket becomes a connection, and the engine's greeting
    /// (`src/engine/connect.rs`) is what refuses strangers.
    LeftToEngine,
}

/// Opens a raw socket to the listener of a handle (loopback only), as a stranger would.
pub type Stranger = fn(&ConnectHandle) -> Box<dyn Write>;

/// One `#[test]` per property for a backend: `conformance_tests!(name, pair_factory)`,
/// where the factory returns a [`Pair`]; with `stranger: (opener, greeting)` also the
/// `stranger` property. Attributes before the name (`#[ignore = ".."]`) go on every test.
macro_rules! conformance_tests {
    ($(#[$attr:meta])* $backend:ident, $pair:expr, stranger: $stranger:expr $(,)?) => {
        /// The transport conformance suite on this backend.
        mod $backend {
            #[allow(unused_imports)]
            use super::*;

            conformance_tests!(@common [$(#[$attr])*] $pair);

            #[test]
            $(#[$attr])*
            fn stranger() {
                let (open, greeting) = $stranger;
                $crate::conformance::stranger(($pair)(), open, greeting)
            }
        }
    };
    ($(#[$attr:meta])* $backend:ident, $pair:expr $(,)?) => {
        /// The transport conformance suite on this backend.
        mod $backend {
            #[allow(unused_imports)]
            use super::*;

            conformance_tests!(@common [$(#[$attr])*] $pair);
        }
    };
    (@common [$($attr:tt)*] $pair:expr) => {
        conformance_tests!(@each [$($attr)*] $pair;
            ordering two_connections zero_length large_message receive_larger_than_message
            back_pressure registration handle_size connect_accept_never_block
            closed_receiver_is_remote closed_sender_is_remote);
    };
    (@each $attrs:tt $pair:expr; $property:ident $($rest:ident)*) => {
        conformance_tests!(@one $attrs $pair, $property);
        conformance_tests!(@each $attrs $pair; $($rest)*);
    };
    (@each $attrs:tt $pair:expr;) => {};
    (@one [$($attr:tt)*] $pair:expr, $property:ident) => {
        #[test]
        $($attr)*
        fn $property() {
            $crate::conformance::$property(($pair)())
        }
    };
}

// One module of tests per backend: the binary that includes this module defines
// `conformance_backends!` (one `conformance_tests!` line per backend) before it.
conformance_backends!();

// ---------------------------------------------------------------------------------------
// Helpers

/// Runs `f`, failing if it took longer than [`PROMPT`] (a call that blocked).
fn prompt<R>(what: &str, f: impl FnOnce() -> R) -> R {
    let t0 = Instant::now();
    let r = f();
    let took = t0.elapsed();
    assert!(took < PROMPT, "{what} took {took:?}: it blocked");
    r
}

/// Fails the test once `t0` is older than [`DEADLINE`].
fn check_deadline(t0: Instant, what: &str) {
    assert!(
        t0.elapsed() < DEADLINE,
        "{what}: no outcome in {DEADLINE:?}"
    );
}

/// Lets both transports make progress without waiting (the calls a rank makes when idle).
fn progress<T: Transport>(a: &mut T, b: &mut T) {
    a.wait_activity(Duration::ZERO).expect("wait_activity");
    b.wait_activity(Duration::ZERO).expect("wait_activity");
}

/// A byte pattern that differs per message (`seed`) and per position.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The tag of message `k` of lane `lane`, of `len` bytes.
fn tag_of(lane: usize, k: usize, len: usize) -> Tag {
    [k as u64, lane as u64, 0x0c0f_fee0_0000_0000 | len as u64]
}

/// A connection from `a` to the listener `l` of `b` (handle `h`), polled on both sides.
fn connect_to<T: Transport>(
    a: &mut T,
    b: &mut T,
    h: &ConnectHandle,
    l: &mut T::Listener,
) -> (T::SendConn, T::RecvConn) {
    let mut c = a.connect(0, h).expect("connect");
    let (mut s, mut r) = (None, None);
    let t0 = Instant::now();
    while s.is_none() || r.is_none() {
        check_deadline(t0, "connecting");
        if s.is_none() {
            s = a.poll_connect(&mut c).expect("poll_connect");
        }
        if r.is_none() {
            r = b.accept(l).expect("accept");
        }
    }
    (s.unwrap(), r.unwrap())
}

/// A connection from `a` to a new listener of `b`, which is closed after.
fn connect<T: Transport>(a: &mut T, b: &mut T) -> (T::SendConn, T::RecvConn) {
    let (h, mut l) = b.listen(0).expect("listen");
    let conn = connect_to(a, b, &h, &mut l);
    b.close_listen(l).expect("close_listen");
    conn
}

/// The capabilities of device 0 of `t`.
fn caps<T: Transport>(t: &T) -> oxccl::transport::Capabilities {
    t.devices().expect("devices")[0].caps
}

/// Closes both ends of a connection.
fn close<T: Transport>(a: &mut T, b: &mut T, s: T::SendConn, r: T::RecvConn) {
    a.close_send(s).expect("close_send");
    b.close_recv(r).expect("close_recv");
}

/// Tests the send `qs` on `a` and the receive `qr` on `b` until both finish.
fn finish_both<T: Transport>(
    a: &mut T,
    b: &mut T,
    qs: &mut T::Request,
    qr: &mut T::Request,
) -> (Completion, Completion) {
    let (mut cs, mut cr) = (None, None);
    let t0 = Instant::now();
    while cs.is_none() || cr.is_none() {
        check_deadline(t0, "a send and its receive");
        if cs.is_none() {
            cs = a.test(qs).expect("send");
        }
        if cr.is_none() {
            cr = b.test(qr).expect("receive");
        }
    }
    (cs.unwrap(), cr.unwrap())
}

/// Polls `q` on `t` until it fails, letting `other` progress too; the error's kind. Between
/// tests `t` waits for activity as a rank does when idle: a backend may learn there that
/// its peer left (verbs, from its side channel).
fn failure<T: Transport>(t: &mut T, other: &mut T, q: &mut T::Request, what: &str) -> ErrorKind {
    let t0 = Instant::now();
    loop {
        match t.test(q) {
            Ok(None) => {}
            Ok(Some(c)) => panic!("{what}: completed ({c:?}) instead of failing"),
            Err(e) => return e.kind(),
        }
        // An error here is the connection's; the next test reports it.
        let _ = t.wait_activity(Duration::ZERO);
        other.wait_activity(Duration::ZERO).expect("wait_activity");
        check_deadline(t0, what);
    }
}

// ---------------------------------------------------------------------------------------
// Streams of messages

/// Messages from the first transport to the second over one connection: sends and receives
/// are posted as far as the backend has room, and every request is tested until it
/// finishes; each receive's completion and bytes are checked against its message.
struct Lane<T: Transport> {
    id: usize,
    send: T::SendConn,
    recv: T::RecvConn,
    msgs: Vec<Vec<u8>>,
    /// The receive buffers, as large as each receive's capacity; never resized.
    bufs: Vec<Vec<u8>>,
    posted_sends: usize,
    posted_recvs: usize,
    sends: VecDeque<(usize, T::Request)>,
    recvs: VecDeque<(usize, T::Request)>,
    sent: usize,
    received: usize,
}

/// Filler of receive buffers, to see what a receive wrote.
const FILL: u8 = 0xee;

impl<T: Transport> Lane<T> {
    /// A lane over `(send, recv)` carrying `msgs`, message k received with `caps[k]` bytes.
    fn new(
        id: usize,
        conn: (T::SendConn, T::RecvConn),
        msgs: Vec<Vec<u8>>,
        caps: &[usize],
    ) -> Self {
        assert_eq!(msgs.len(), caps.len());
        Lane {
            id,
            send: conn.0,
            recv: conn.1,
            bufs: caps.iter().map(|&c| vec![FILL; c]).collect(),
            msgs,
            posted_sends: 0,
            posted_recvs: 0,
            sends: VecDeque::new(),
            recvs: VecDeque::new(),
            sent: 0,
            received: 0,
        }
    }

    fn done(&self) -> bool {
        self.sent == self.msgs.len() && self.received == self.msgs.len()
    }

    /// Posts sends until all are posted or the backend has no room; whether any was.
    fn post_sends(&mut self, a: &mut T) -> bool {
        let start = self.posted_sends;
        while self.posted_sends < self.msgs.len() {
            let k = self.posted_sends;
            let m = &self.msgs[k];
            let tag = tag_of(self.id, k, m.len());
            // SAFETY: `msgs` is neither changed nor dropped before every send finished.
            let q = prompt("isend", || unsafe {
                a.isend(&mut self.send, m.as_ptr(), m.len(), tag, None)
            });
            match q.unwrap_or_else(|e| panic!("lane {} isend {k}: {e}", self.id)) {
                Some(q) => self.sends.push_back((k, q)),
                None => break,
            }
            self.posted_sends += 1;
        }
        self.posted_sends > start
    }

    /// Posts receives until all are posted or the backend has no room; whether any was.
    fn post_recvs(&mut self, b: &mut T) -> bool {
        let start = self.posted_recvs;
        while self.posted_recvs < self.msgs.len() {
            let k = self.posted_recvs;
            let buf = &mut self.bufs[k];
            // SAFETY: `bufs` is not touched before every receive finished.
            let q = prompt("irecv", || unsafe {
                b.irecv(&mut self.recv, buf.as_mut_ptr(), buf.len(), None)
            });
            match q.unwrap_or_else(|e| panic!("lane {} irecv {k}: {e}", self.id)) {
                Some(q) => self.recvs.push_back((k, q)),
                None => break,
            }
            self.posted_recvs += 1;
        }
        self.posted_recvs > start
    }

    /// Tests every unfinished request once; whether any finished.
    fn test_all(&mut self, a: &mut T, b: &mut T) -> bool {
        let (id, before) = (self.id, self.sent + self.received);
        let mut sent = 0;
        self.sends.retain_mut(|(k, q)| {
            let c = a
                .test(q)
                .unwrap_or_else(|e| panic!("lane {id} send {k}: {e}"));
            sent += usize::from(c.is_some());
            c.is_none()
        });
        self.sent += sent;
        let mut finished = Vec::new();
        self.recvs.retain_mut(|(k, q)| {
            let c = b
                .test(q)
                .unwrap_or_else(|e| panic!("lane {id} receive {k}: {e}"));
            if let Some(c) = c {
                finished.push((*k, c));
            }
            c.is_none()
        });
        for (k, c) in finished {
            self.check(k, c);
        }
        self.sent + self.received > before
    }

    /// Checks receive `k`'s completion and the bytes it wrote.
    fn check(&mut self, k: usize, c: Completion) {
        let (m, buf) = (&self.msgs[k], &self.bufs[k]);
        let id = self.id;
        assert_eq!(c.tag, tag_of(id, k, m.len()), "lane {id} receive {k}: tag");
        assert_eq!(c.bytes, m.len(), "lane {id} receive {k}: byte count");
        assert!(
            buf[..m.len()] == m[..],
            "lane {id} receive {k}: data differ"
        );
        assert!(
            buf[m.len()..].iter().all(|&x| x == FILL),
            "lane {id} receive {k}: written beyond the message's {} bytes",
            m.len()
        );
        self.received += 1;
    }
}

/// Drives `lanes` from `a` to `b` until every message of each arrived and was checked;
/// receives are posted only every other round, so that messages both wait for their
/// receive and find it waiting.
fn drive<T: Transport>(a: &mut T, b: &mut T, lanes: &mut [Lane<T>]) {
    let t0 = Instant::now();
    let mut round = 0u64;
    while !lanes.iter().all(Lane::done) {
        check_deadline(t0, "transfers");
        let mut moved = false;
        for lane in lanes.iter_mut() {
            moved |= lane.post_sends(a);
            if round % 2 == 0 {
                moved |= lane.post_recvs(b);
            }
            moved |= lane.test_all(a, b);
        }
        if !moved {
            progress(a, b);
        }
        round += 1;
    }
}

/// Sends `msgs` from `a` to `b` on a new connection, message k received with `caps[k]`
/// bytes, and checks every receive; closes the connection after.
fn transfer<T: Transport>(a: &mut T, b: &mut T, msgs: Vec<Vec<u8>>, caps: &[usize]) {
    let conn = connect(a, b);
    let mut lanes = [Lane::new(0, conn, msgs, caps)];
    drive(a, b, &mut lanes);
    let [lane] = lanes;
    close(a, b, lane.send, lane.recv);
}

/// Message `k` of the ordering stream: mostly small and medium, some empty, some of a
/// megabyte and more.
fn ordering_size(k: usize) -> usize {
    if k % 50 == 25 {
        return (1 << 20) + k;
    }
    if k % 37 == 0 {
        return 0;
    }
    [1, 7, 100, 4096, 8191, 8193, 65_536, 3, 1000, 70_001][k % 10]
}

// ---------------------------------------------------------------------------------------
// The properties

/// 200 messages on one connection arrive in order: the k-th send meets the k-th receive,
/// with its bytes and tag.
pub fn ordering<T: Transport>(pair: Pair<T>) {
    let Some((mut a, mut b)) = pair else { return };
    let sizes: Vec<usize> = (0..200).map(ordering_size).collect();
    let msgs = sizes
        .iter()
        .enumerate()
        .map(|(k, &n)| pattern(k as u64, n))
        .collect();
    // Some receives exactly as large as their message, some larger.
    let caps: Vec<usize> = sizes
        .iter()
        .enumerate()
        .map(|(k, &n)| n + (k % 3) * 17)
        .collect();
    transfer(&mut a, &mut b, msgs, &caps);
}

/// Two connections between the same two transports, used at once, keep their messages
/// apart.
pub fn two_connections<T: Transport>(pair: Pair<T>) {
    let Some((mut a, mut b)) = pair else { return };
    let mut lanes: Vec<Lane<T>> = (0..2)
        .map(|id| {
            let conn = connect(&mut a, &mut b);
            let sizes: Vec<usize> = (0..60).map(|k| ordering_size(k + id * 7)).collect();
            let msgs = sizes
                .iter()
                .enumerate()
                .map(|(k, &n)| pattern((id * 1000 + k) as u64, n))
                .collect();
            Lane::new(id, conn, msgs, &sizes)
        })
        .collect();
    drive(&mut a, &mut b, &mut lanes);
    for lane in lanes {
        close(&mut a, &mut b, lane.send, lane.recv);
    }
}

/// Empty messages, into empty receives and into larger ones, between non-empty messages
/// (so that an empty message that broke the stream shows in the next one).
pub fn zero_length<T: Transport>(pair: Pair<T>) {
    let Some((mut a, mut b)) = pair else { return };
    let sizes = [0, 5, 0, 0, 300, 0];
    let caps = [0, 5, 64, 0, 300, 4096];
    let msgs = sizes.iter().map(|&n| pattern(n as u64, n)).collect();
    transfer(&mut a, &mut b, msgs, &caps);
}

/// A 16 MiB message (and an odd byte), and a small one after it.
pub fn large_message<T: Transport>(pair: Pair<T>) {
    let Some((mut a, mut b)) = pair else { return };
    let sizes = [(16 << 20) + 1, 10];
    let msgs = sizes.iter().map(|&n| pattern(n as u64, n)).collect();
    transfer(&mut a, &mut b, msgs, &sizes);
}

/// Receives larger than their messages: the completion gives the message's byte count and
/// tag, and nothing past the message is written.
pub fn receive_larger_than_message<T: Transport>(pair: Pair<T>) {
    let Some((mut a, mut b)) = pair else { return };
    let sizes = [1, 1000, 100_000, (4 << 20) + 1, 3];
    let caps: Vec<usize> = sizes.iter().map(|&n| 2 * n + 100).collect();
    let msgs = sizes.iter().map(|&n| pattern(n as u64, n)).collect();
    transfer(&mut a, &mut b, msgs, &caps);
}

/// Posting beyond `max_requests` answers `None` at once (no error, no block), on both
/// sides; once the peer drains, posting resumes and every message arrives intact.
pub fn back_pressure<T: Transport>(pair: Pair<T>) {
    let Some((mut a, mut b)) = pair else { return };
    let max = caps(&a).max_requests.min(caps(&b).max_requests);
    assert!(max >= 1, "max_requests of {max}");
    let n = 3 * max + 5;
    // 64 KiB each: more than the socket buffers of some backends hold at once.
    let msgs: Vec<Vec<u8>> = (0..n).map(|k| pattern(k as u64, 64 << 10)).collect();
    let sizes: Vec<usize> = msgs.iter().map(Vec::len).collect();
    let conn = connect(&mut a, &mut b);
    let mut lanes = [Lane::new(0, conn, msgs, &sizes)];
    let lane = &mut lanes[0];
    lane.post_sends(&mut a);
    let sends = lane.posted_sends;
    assert!(
        (1..=max).contains(&sends),
        "{sends} sends posted before `None` (max_requests {max})"
    );
    lane.post_recvs(&mut b);
    let recvs = lane.posted_recvs;
    assert!(
        (1..=max).contains(&recvs),
        "{recvs} receives posted before `None` (max_requests {max})"
    );
    drive(&mut a, &mut b, &mut lanes);
    let [lane] = lanes;
    close(&mut a, &mut b, lane.send, lane.recv);
}

/// Data calls with registered regions carry data (also from inside a region); two
/// registrations of one range are released one by one; registering what cannot be is an
/// error, not a panic; where registration is not needed, data calls without it work.
pub fn registration<T: Transport>(pair: Pair<T>) {
    let Some((mut a, mut b)) = pair else { return };
    let (mut s, mut r) = connect(&mut a, &mut b);
    let src = pattern(1, 300_000);
    let mut dst = vec![FILL; 300_000];
    let rs = a
        .register(src.as_ptr(), src.len())
        .expect("register (send)");
    let rr = b
        .register(dst.as_ptr(), dst.len())
        .expect("register (receive)");
    for (off, len) in [(0, src.len()), (1000, 5000), (7, 0)] {
        let tag = [off as u64, len as u64, 1];
        // SAFETY: `src` and `dst` outlive both requests, which finish below.
        let (mut qs, mut qr) = unsafe {
            let qr = b.irecv(&mut r, dst.as_mut_ptr(), dst.len(), Some(&rr));
            let qs = a.isend(&mut s, src[off..].as_ptr(), len, tag, Some(&rs));
            (
                qs.expect("isend").expect("room"),
                qr.expect("irecv").expect("room"),
            )
        };
        let (cs, cr) = finish_both(&mut a, &mut b, &mut qs, &mut qr);
        assert_eq!(cs.bytes, len);
        assert_eq!((cr.bytes, cr.tag), (len, tag));
        assert!(
            dst[..len] == src[off..off + len],
            "data of {len} bytes at {off}"
        );
    }
    a.deregister(rs).expect("deregister (send)");
    b.deregister(rr).expect("deregister (receive)");
    // Registrations of one range are counted, not merged: both release without error.
    let twice = (
        a.register(src.as_ptr(), 4096),
        a.register(src.as_ptr(), 4096),
    );
    a.deregister(twice.0.expect("first registration"))
        .expect("first release");
    a.deregister(twice.1.expect("second registration"))
        .expect("second release");
    // A null pointer: an error or a no-op, never a panic.
    if let Ok(region) = a.register(std::ptr::null(), 4096) {
        a.deregister(region)
            .expect("deregister of a no-op registration");
    }
    if !caps(&a).needs_registration {
        let msgs = vec![pattern(9, 1000)];
        transfer(&mut a, &mut b, msgs, &[1000]);
    }
    close(&mut a, &mut b, s, r);
}

/// A listener's handle fits `MAX_HANDLE_BYTES` and works once copied through its bytes;
/// `ConnectHandle::new` refuses longer ones; bytes that are no handle of this backend are
/// an error for `connect`.
pub fn handle_size<T: Transport>(pair: Pair<T>) {
    let Some((mut a, mut b)) = pair else { return };
    let (h, mut l) = b.listen(0).expect("listen");
    let n = h.as_bytes().len();
    assert!((1..=MAX_HANDLE_BYTES).contains(&n), "a handle of {n} bytes");
    let full = ConnectHandle::new(&[0xab; MAX_HANDLE_BYTES]).expect("a full handle");
    assert_eq!(full.as_bytes().len(), MAX_HANDLE_BYTES);
    assert!(ConnectHandle::new(&[0xab; MAX_HANDLE_BYTES + 1]).is_err());
    for junk in [
        &b""[..],
        b"no handle of any backend",
        &[0xab; MAX_HANDLE_BYTES],
    ] {
        let junk = ConnectHandle::new(junk).unwrap();
        assert!(
            a.connect(0, &junk).is_err(),
            "{} junk bytes accepted",
            junk.as_bytes().len()
        );
    }
    let copy = ConnectHandle::new(h.as_bytes()).unwrap();
    assert_eq!(copy, h);
    let (s, r) = connect_to(&mut a, &mut b, &copy, &mut l);
    b.close_listen(l).expect("close_listen");
    close(&mut a, &mut b, s, r);
}

/// `accept` on an empty listener, `connect`, and `poll_connect` while the listener's owner
/// does not accept all return promptly; the connection comes once both sides poll, and
/// carries data.
pub fn connect_accept_never_block<T: Transport>(pair: Pair<T>) {
    let Some((mut a, mut b)) = pair else { return };
    let (h, mut l) = b.listen(0).expect("listen");
    for _ in 0..5 {
        let got = prompt("accept on an empty listener", || b.accept(&mut l));
        assert!(got.expect("accept").is_none(), "a connection nobody made");
    }
    let mut c = prompt("connect", || a.connect(0, &h)).expect("connect");
    // The listener's owner does not accept yet: the connecting side only polls.
    let mut s = None;
    for _ in 0..20 {
        if s.is_none() {
            s = prompt("poll_connect", || a.poll_connect(&mut c)).expect("poll_connect");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut r = None;
    let t0 = Instant::now();
    while s.is_none() || r.is_none() {
        check_deadline(t0, "connecting");
        if s.is_none() {
            s = prompt("poll_connect", || a.poll_connect(&mut c)).expect("poll_connect");
        }
        if r.is_none() {
            r = prompt("accept", || b.accept(&mut l)).expect("accept");
        }
    }
    b.close_listen(l).expect("close_listen");
    let conn = (s.unwrap(), r.unwrap());
    let mut lanes = [Lane::new(0, conn, vec![pattern(3, 100)], &[100])];
    drive(&mut a, &mut b, &mut lanes);
    let [lane] = lanes;
    close(&mut a, &mut b, lane.send, lane.recv);
}

/// What a post on a connection whose peer has gone gives: `Remote`, from the post or from
/// testing the request it made.
fn post_after_close_kind<T: Transport>(
    t: &mut T,
    other: &mut T,
    mut post: impl FnMut(&mut T) -> Result<Option<T::Request>>,
) -> ErrorKind {
    let t0 = Instant::now();
    loop {
        match post(t) {
            Err(e) => return e.kind(),
            Ok(Some(mut q)) => return failure(t, other, &mut q, "a post after the peer closed"),
            Ok(None) => {}
        }
        other.wait_activity(Duration::ZERO).expect("wait_activity");
        check_deadline(t0, "a post after the peer closed");
    }
}

/// A receiver that closes while a send waits for it fails that send, and later ones, with
/// `Remote`.
pub fn closed_receiver_is_remote<T: Transport>(pair: Pair<T>) {
    let Some((mut a, mut b)) = pair else { return };
    let (mut s, r) = connect(&mut a, &mut b);
    // Far more than socket buffers and rings hold: it cannot finish without a receive.
    let big = vec![5u8; 32 << 20];
    // SAFETY: `big` outlives the request (which fails below) and the connection.
    let mut q = unsafe { a.isend(&mut s, big.as_ptr(), big.len(), [5; 3], None) }
        .expect("isend")
        .expect("room");
    for _ in 0..10 {
        assert!(a.test(&mut q).expect("send before the close").is_none());
        b.wait_activity(Duration::ZERO).expect("wait_activity");
    }
    b.close_recv(r).expect("close_recv");
    let kind = failure(&mut a, &mut b, &mut q, "a send to a closed receiver");
    assert_eq!(kind, ErrorKind::Remote);
    let small = pattern(6, 100);
    // SAFETY: `small` outlives the request and the connection.
    let post = |t: &mut T| unsafe { t.isend(&mut s, small.as_ptr(), small.len(), [6; 3], None) };
    let kind = post_after_close_kind(&mut a, &mut b, post);
    assert_eq!(
        kind,
        ErrorKind::Remote,
        "a send posted after the receiver closed"
    );
    a.close_send(s).expect("close_send");
}

/// A sender that closes while a receive waits for it fails that receive, and later ones,
/// with `Remote`.
pub fn closed_sender_is_remote<T: Transport>(pair: Pair<T>) {
    let Some((mut a, mut b)) = pair else { return };
    let (s, mut r) = connect(&mut a, &mut b);
    let mut buf = vec![FILL; 1 << 20];
    let ptr = buf.as_mut_ptr();
    // SAFETY: `buf` outlives the request (which fails below) and the connection.
    let mut q = unsafe { b.irecv(&mut r, ptr, 1 << 20, None) }
        .expect("irecv")
        .expect("room");
    for _ in 0..10 {
        assert!(b.test(&mut q).expect("receive before the close").is_none());
        a.wait_activity(Duration::ZERO).expect("wait_activity");
    }
    a.close_send(s).expect("close_send");
    let kind = failure(&mut b, &mut a, &mut q, "a receive from a closed sender");
    assert_eq!(kind, ErrorKind::Remote);
    // SAFETY: as above.
    let post = |t: &mut T| unsafe { t.irecv(&mut r, ptr, 1 << 20, None) };
    let kind = post_after_close_kind(&mut b, &mut a, post);
    assert_eq!(
        kind,
        ErrorKind::Remote,
        "a receive posted after the sender closed"
    );
    b.close_recv(r).expect("close_recv");
    drop(buf);
}

/// Held by a test that counts the connections its listener accepts and by a test that
/// connects to every listener of this process (`tests/collectives/abuse.rs`), which would
/// otherwise add strangers to the count when the two run at once.
pub static LISTENERS: Mutex<()> = Mutex::new(());

/// [`LISTENERS`], also after a test that held it failed.
pub fn listeners_alone() -> MutexGuard<'static, ()> {
    LISTENERS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Bytes a stranger sends: long enough for any greeting to be read whole, and no greeting
/// of any backend.
fn garbage() -> Vec<u8> {
    let mut g = b"GET / HTTP/1.0\r\n\r\n".to_vec();
    g.extend(pattern(77, 494));
    g
}

/// Strangers that connect to a listener, one silent and one sending garbage: `accept`
/// stays prompt, a backend that greets its peers makes no connection of them (one that
/// leaves that to the engine hands both out), and a real peer still connects and sends.
pub fn stranger<T: Transport>(pair: Pair<T>, open: Stranger, greeting: Greeting) {
    let Some((mut a, mut b)) = pair else { return };
    let _alone = listeners_alone();
    let (h, mut l) = b.listen(0).expect("listen");
    let silent = open(&h);
    let mut noisy = open(&h);
    // A backend may already have dropped the stranger: then the write fails, which is fine.
    let _ = noisy.write_all(&garbage()).and_then(|()| noisy.flush());
    let want = match greeting {
        Greeting::Checked => 0,
        Greeting::LeftToEngine => 2,
    };
    let mut strangers = Vec::new();
    let t0 = Instant::now();
    // Long enough for a greeting to be read and judged; until both came where none is.
    while t0.elapsed() < Duration::from_millis(300) || strangers.len() < want {
        check_deadline(t0, "accepting strangers");
        if let Some(r) = prompt("accept", || b.accept(&mut l)).expect("accept") {
            strangers.push(r);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(strangers.len(), want, "connections accepted from strangers");
    for r in strangers {
        b.close_recv(r).expect("close_recv");
    }
    // The silent stranger is still connected: a real peer gets through all the same.
    let conn = connect_to(&mut a, &mut b, &h, &mut l);
    b.close_listen(l).expect("close_listen");
    let mut lanes = [Lane::new(0, conn, vec![pattern(8, 1000)], &[1000])];
    drive(&mut a, &mut b, &mut lanes);
    let [lane] = lanes;
    close(&mut a, &mut b, lane.send, lane.recv);
    drop((silent, noisy));
}
