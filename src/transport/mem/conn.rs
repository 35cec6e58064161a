//! One connection's shared state: the queues of posted sends and receives, rendezvous
//! matching and copy, finished operations waiting for their `test`, and the close and kill
//! states that turn pending and future operations into errors.
//!
//! Owns: everything behind one connection's lock. Both ends (two endpoints, possibly two
//! threads) share it through an `Arc`; the fabric reaches it only to close or kill.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex};

use super::fabric::{lock, Activity};
use super::rng::Rng;
use crate::error::{Error, Result};
use crate::transport::{Completion, Tag};

/// Which end of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    Send,
    Recv,
}

/// A buffer address posted by one endpoint's thread and read or written by whichever
/// thread performs the match.
struct RawBuf(*mut u8);

// SAFETY: the address is only dereferenced by `Conn::match_pending`, under the connection
// lock, while the `Transport::isend`/`irecv` contract still holds: the poster keeps the
// buffer valid (and, for a send, unmodified; for a receive, written by no one else) until
// `test` reports completion or the connection is closed. Completion is reported only after
// the match under the same lock, and close, kill and dropping the request each take that
// lock and remove the address before the poster can observe them, so no thread touches the
// buffer after the poster may reuse it. Memory is shared by all threads of the process.
unsafe impl Send for RawBuf {}

/// A posted operation not yet matched.
struct Posted {
    seq: u64,
    /// `None` once its request was dropped unfinished: the slot still takes part in
    /// matching (keeping the k-th/k-th order) but its buffer is never touched.
    buf: Option<RawBuf>,
    len: usize,
    tag: Tag,
}

/// What a matched operation reports to its `test`; `None` for an abandoned request.
type Outcome = Option<Result<Completion>>;

/// The state of one end.
#[derive(Default)]
struct End {
    posted: VecDeque<Posted>,
    done: HashMap<u64, Result<Completion>>,
    next_seq: u64,
    in_flight: usize,
    closed: bool,
}

struct ConnState {
    send: End,
    recv: End,
    /// The endpoint whose death failed this connection (the first, if both died).
    killed: Option<usize>,
}

impl ConnState {
    fn end(&mut self, side: Side) -> &mut End {
        match side {
            Side::Send => &mut self.send,
            Side::Recv => &mut self.recv,
        }
    }

    /// Forgets every posted buffer: after close or kill the posters may free them.
    fn drop_posted(&mut self) {
        self.send.posted.clear();
        self.recv.posted.clear();
    }
}

/// A one-way connection from endpoint `sender` to endpoint `receiver`.
pub(super) struct Conn {
    sender: usize,
    receiver: usize,
    state: Mutex<ConnState>,
    activity: Arc<Activity>,
}

impl Conn {
    /// A fresh connection; the caller registers it with the fabric.
    pub(super) fn new(sender: usize, receiver: usize, activity: Arc<Activity>) -> Arc<Conn> {
        Arc::new(Conn {
            sender,
            receiver,
            state: Mutex::new(ConnState {
                send: End::default(),
                recv: End::default(),
                killed: None,
            }),
            activity,
        })
    }

    /// The endpoint at `side`.
    pub(super) fn endpoint(&self, side: Side) -> usize {
        match side {
            Side::Send => self.sender,
            Side::Recv => self.receiver,
        }
    }

    /// The error every operation of `side` gets once the connection is broken.
    fn broken(&self, st: &mut ConnState, side: Side) -> Option<Error> {
        let me = self.endpoint(side);
        if let Some(dead) = st.killed {
            return Some(if dead == me {
                Error::remote(format!("endpoint {dead} was killed"))
            } else {
                Error::remote(format!("peer endpoint {dead} was killed"))
            });
        }
        if st.end(side).closed {
            return Some(Error::invalid_usage(
                "connection end used after it was closed",
            ));
        }
        let (peer_side, peer) = match side {
            Side::Send => (Side::Recv, self.receiver),
            Side::Recv => (Side::Send, self.sender),
        };
        if st.end(peer_side).closed {
            return Some(Error::remote(format!(
                "connection closed by peer endpoint {peer}"
            )));
        }
        None
    }

    /// Posts an operation of `side` (buffer `buf` of `len` bytes; `tag` for sends) and
    /// returns its sequence number; `None` when `backpressure` was drawn or the end
    /// already has `max_in_flight` unfinished requests.
    pub(super) fn post(
        &self,
        side: Side,
        buf: *mut u8,
        len: usize,
        tag: Tag,
        max_in_flight: usize,
        backpressure: bool,
    ) -> Result<Option<u64>> {
        let seq = {
            let mut st = lock(&self.state);
            if let Some(err) = self.broken(&mut st, side) {
                return Err(err);
            }
            let end = st.end(side);
            if backpressure || end.in_flight >= max_in_flight {
                return Ok(None);
            }
            let seq = end.next_seq;
            end.next_seq += 1;
            end.in_flight += 1;
            end.posted.push_back(Posted {
                seq,
                buf: Some(RawBuf(buf)),
                len,
                tag,
            });
            self.match_pending(&mut st);
            seq
        };
        self.activity.notify();
        Ok(Some(seq))
    }

    /// Makes progress on request `seq` of `side`: `None` while it is pending (or `delay`
    /// hid its completion), `Some` with its outcome once it has finished.
    pub(super) fn test(
        &self,
        side: Side,
        seq: u64,
        rng: &mut Rng,
        delay: f64,
    ) -> Option<Result<Completion>> {
        let mut matched = false;
        let outcome = {
            let mut st = lock(&self.state);
            // A completion that happened before a close or kill still stands.
            if !st.end(side).done.contains_key(&seq) {
                if let Some(err) = self.broken(&mut st, side) {
                    let end = st.end(side);
                    end.in_flight = end.in_flight.saturating_sub(1);
                    return Some(Err(err));
                }
                matched = self.match_pending(&mut st);
            }
            let end = st.end(side);
            if end.done.contains_key(&seq) {
                if rng.chance(delay) {
                    None
                } else {
                    end.in_flight = end.in_flight.saturating_sub(1);
                    end.done.remove(&seq)
                }
            } else if end.posted.iter().any(|p| p.seq == seq) {
                None
            } else {
                end.in_flight = end.in_flight.saturating_sub(1);
                Some(Err(Error::internal(format!(
                    "request #{seq} is unknown to its connection"
                ))))
            }
        };
        if matched {
            self.activity.notify();
        }
        outcome
    }

    /// Matches the oldest posted send with the oldest posted receive while both exist,
    /// copying the data and recording both outcomes. True if anything matched.
    fn match_pending(&self, st: &mut ConnState) -> bool {
        if st.killed.is_some() || st.send.closed || st.recv.closed {
            return false;
        }
        let mut any = false;
        while !st.send.posted.is_empty() && !st.recv.posted.is_empty() {
            let (Some(s), Some(r)) = (st.send.posted.pop_front(), st.recv.posted.pop_front())
            else {
                break;
            };
            any = true;
            let (send_out, recv_out) = self.deliver(s.buf, r.buf, s.len, r.len, s.tag);
            if let Some(out) = send_out {
                st.send.done.insert(s.seq, out);
            }
            if let Some(out) = recv_out {
                st.recv.done.insert(r.seq, out);
            }
        }
        any
    }

    /// The rendezvous itself: copies a message of `len` bytes into a receive of `room`
    /// bytes. Returns the outcomes of the send and the receive (`None` for a side whose
    /// request was dropped, which nobody will test).
    fn deliver(
        &self,
        src: Option<RawBuf>,
        dst: Option<RawBuf>,
        len: usize,
        room: usize,
        tag: Tag,
    ) -> (Outcome, Outcome) {
        let (sender, receiver) = (self.sender, self.receiver);
        match (src, dst) {
            (Some(src), Some(dst)) => {
                if len > room {
                    return (
                        // A call mismatch, seen from both ends.
                        Some(Err(Error::invalid_usage(format!(
                            "endpoint {receiver} rejected a message of {len} bytes: \
                             its posted receive holds {room}"
                        )))),
                        // The receive reports what came, nothing written, so that the
                        // engine names the peer's call (as tcp does).
                        Some(Ok(Completion { bytes: len, tag })),
                    );
                }
                if len > 0 {
                    // SAFETY: see `RawBuf`: both buffers are still owned by pending,
                    // posted requests (we hold the connection lock, and their outcomes are
                    // recorded only below), `src` is readable and `dst` writable for
                    // `len <= room` bytes; `copy_bytes` also tolerates overlap.
                    unsafe { crate::reduce::copy_bytes(src.0.cast_const(), dst.0, len) };
                }
                let done = Completion { bytes: len, tag };
                (Some(Ok(done)), Some(Ok(done)))
            }
            (None, Some(_)) => (
                None,
                Some(Err(Error::remote(format!(
                    "the matching send of endpoint {sender} was abandoned before completion"
                )))),
            ),
            (Some(_), None) => (
                Some(Err(Error::remote(format!(
                    "the matching receive of endpoint {receiver} was abandoned before completion"
                )))),
                None,
            ),
            (None, None) => (None, None),
        }
    }

    /// Forgets request `seq` of `side`, dropped before it finished: its buffer is never
    /// touched again, and the peer operation it would have matched fails.
    fn cancel(&self, side: Side, seq: u64) {
        let mut st = lock(&self.state);
        let end = st.end(side);
        if end.done.remove(&seq).is_none() {
            if let Some(p) = end.posted.iter_mut().find(|p| p.seq == seq) {
                p.buf = None;
            }
        }
        end.in_flight = end.in_flight.saturating_sub(1);
    }

    /// Closes `side`: its posted buffers are forgotten and the peer's pending and future
    /// operations fail with `Remote`. Closing twice is harmless.
    pub(super) fn close(&self, side: Side) {
        let changed = {
            let mut st = lock(&self.state);
            let end = st.end(side);
            let changed = !end.closed;
            end.closed = true;
            st.drop_posted();
            changed
        };
        if changed {
            self.activity.notify();
        }
    }

    /// Fails the connection because `endpoint` (one of its ends) was killed. The caller
    /// notifies.
    pub(super) fn mark_killed(&self, endpoint: usize) {
        let mut st = lock(&self.state);
        st.killed.get_or_insert(endpoint);
        st.drop_posted();
    }
}

/// The sending end of a mem connection. Dropping it closes it.
pub struct MemSendConn {
    pub(super) conn: Arc<Conn>,
}

/// The receiving end of a mem connection. Dropping it closes it.
pub struct MemRecvConn {
    pub(super) conn: Arc<Conn>,
}

impl fmt::Debug for MemSendConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "MemSendConn({} -> {})",
            self.conn.sender, self.conn.receiver
        )
    }
}

impl fmt::Debug for MemRecvConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "MemRecvConn({} -> {})",
            self.conn.sender, self.conn.receiver
        )
    }
}

impl Drop for MemSendConn {
    fn drop(&mut self) {
        self.conn.close(Side::Send);
    }
}

impl Drop for MemRecvConn {
    fn drop(&mut self) {
        self.conn.close(Side::Recv);
    }
}

/// A posted mem transfer. Dropping it unfinished abandons it safely: its buffer is never
/// touched again and the matching peer operation fails with `Remote`.
pub struct MemRequest {
    pub(super) conn: Arc<Conn>,
    pub(super) side: Side,
    pub(super) seq: u64,
    pub(super) finished: bool,
}

impl fmt::Debug for MemRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemRequest")
            .field("side", &self.side)
            .field("seq", &self.seq)
            .field("finished", &self.finished)
            .finish()
    }
}

impl MemRequest {
    pub(super) fn new(conn: Arc<Conn>, side: Side, seq: u64) -> Self {
        MemRequest {
            conn,
            side,
            seq,
            finished: false,
        }
    }
}

impl Drop for MemRequest {
    fn drop(&mut self) {
        if !self.finished {
            self.conn.cancel(self.side, self.seq);
        }
    }
}
