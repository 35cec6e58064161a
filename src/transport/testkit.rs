//! What the backends' tests share: connecting two transports of one thread, and a byte
//! pattern that differs per message and position.

use std::time::{Duration, Instant};

use super::{Completion, ConnectHandle, Transport};

/// How long a test's polling loop may take before it fails.
pub(crate) const DEADLINE: Duration = Duration::from_secs(8);

/// A connection from `x` to the listener `l` of `y` (handle `h`), polled on both sides
/// until established (bounded).
pub(crate) fn connect_to<T: Transport>(
    x: &mut T,
    y: &mut T,
    h: &ConnectHandle,
    l: &mut T::Listener,
) -> (T::SendConn, T::RecvConn) {
    let mut c = x.connect(0, h).unwrap();
    let (mut s, mut r) = (None, None);
    let t0 = Instant::now();
    while s.is_none() || r.is_none() {
        assert!(
            t0.elapsed() < DEADLINE,
            "connection not established in time"
        );
        if s.is_none() {
            s = x.poll_connect(&mut c).unwrap();
        }
        if r.is_none() {
            r = y.accept(l).unwrap();
        }
    }
    (s.unwrap(), r.unwrap())
}

/// A connection from `x` to a new listener of `y`, which is closed after.
pub(crate) fn connect_pair<T: Transport>(x: &mut T, y: &mut T) -> (T::SendConn, T::RecvConn) {
    let (h, mut l) = y.listen(0).unwrap();
    let pair = connect_to(x, y, &h, &mut l);
    y.close_listen(l).unwrap();
    pair
}

/// A byte pattern that differs per message (`seed`) and per position.
pub(crate) fn pattern(seed: u64, len: usize) -> Vec<u8> {
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

/// Tests `q` of `t` until it finishes (bounded by [`DEADLINE`]).
pub(crate) fn finish<T: Transport>(t: &mut T, q: &mut T::Request) -> Completion {
    let t0 = Instant::now();
    loop {
        if let Some(c) = t.test(q).unwrap() {
            return c;
        }
        assert!(t0.elapsed() < DEADLINE, "request did not finish in time");
    }
}
