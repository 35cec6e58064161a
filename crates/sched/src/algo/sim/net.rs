//! The simulator's network: per connection (sender, receiver, channel) the sends posted and
//! not yet delivered, the messages delivered and not yet received, and the receives
//! posted; every request's outcome. Messages are read from the sender's memory when they
//! are delivered, not when posted, so bytes written under a send in flight are caught.

use std::collections::{BTreeMap, VecDeque};

/// A connection: (sender, receiver, channel).
pub(super) type Conn = (usize, usize, u16);

/// What became of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Under way.
    Pending,
    /// Finished; a receive's message had this many bytes.
    Done(usize),
    /// The connection broke (its other end left).
    Broken,
}

/// One posted request.
#[derive(Debug, Clone, Copy)]
pub(super) struct Request {
    pub conn: Conn,
    pub step: usize,
    /// Where a receive's bytes land: (arena offset, length), or a staging buffer.
    pub into: Landing,
    pub outcome: Outcome,
}

/// Where a received message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Landing {
    /// A send: nowhere.
    Nowhere,
    /// `len` bytes of the receiver's arena from `at`.
    Arena { at: usize, len: usize },
    /// The receiver's staging buffer `index`, of `len` bytes.
    Stage { index: usize, len: usize },
}

/// One connection's traffic.
#[derive(Debug, Default)]
pub(super) struct Link {
    /// Sends posted, not yet delivered (request ids).
    pub unsent: VecDeque<usize>,
    /// Messages delivered, not yet received.
    pub wire: VecDeque<Vec<u8>>,
    /// Receives posted, not yet matched (request ids).
    pub recvs: VecDeque<usize>,
}

/// Every connection and request of a run.
#[derive(Debug, Default)]
pub(super) struct Net {
    pub links: BTreeMap<Conn, Link>,
    pub requests: Vec<Request>,
    /// Ranks whose connections are closed (failed, or crashed).
    pub closed: Vec<bool>,
}

impl Net {
    /// A network of `n` ranks.
    pub fn new(n: usize) -> Net {
        Net {
            closed: vec![false; n],
            ..Net::default()
        }
    }

    /// Posts a request on `conn`; returns its id.
    pub fn post(&mut self, conn: Conn, step: usize, into: Landing) -> usize {
        let id = self.requests.len();
        self.requests.push(Request {
            conn,
            step,
            into,
            outcome: Outcome::Pending,
        });
        let link = self.links.entry(conn).or_default();
        match into {
            Landing::Nowhere => link.unsent.push_back(id),
            _ => link.recvs.push_back(id),
        }
        id
    }

    /// What became of request `id`: a pending receive whose sender left, with nothing left
    /// to come, is broken.
    pub fn outcome(&self, id: usize) -> Outcome {
        let r = &self.requests[id];
        if r.outcome != Outcome::Pending || r.into == Landing::Nowhere || !self.closed[r.conn.0] {
            return r.outcome;
        }
        let drained = self
            .links
            .get(&r.conn)
            .map_or(true, |l| l.wire.is_empty() && l.unsent.is_empty());
        if drained {
            Outcome::Broken
        } else {
            Outcome::Pending
        }
    }

    /// Rank `r` leaves: its sends not yet delivered vanish, sends to it break, its
    /// receives are dropped. Messages it delivered stay on the wire.
    pub fn close(&mut self, r: usize) {
        self.closed[r] = true;
        for (&(from, to, _), link) in self.links.iter_mut() {
            if from == r {
                link.unsent.clear();
            }
            if to == r {
                for id in link.unsent.drain(..) {
                    self.requests[id].outcome = Outcome::Broken;
                }
                link.recvs.clear();
            }
        }
    }

    /// Connections with a send to deliver.
    pub fn deliverable(&self) -> impl Iterator<Item = Conn> + '_ {
        self.links
            .iter()
            .filter(|(_, l)| !l.unsent.is_empty())
            .map(|(&k, _)| k)
    }

    /// Connections with a message and a receive for it.
    pub fn matchable(&self) -> impl Iterator<Item = Conn> + '_ {
        self.links
            .iter()
            .filter(|(_, l)| !l.wire.is_empty() && !l.recvs.is_empty())
            .map(|(&k, _)| k)
    }
}
