//! Opening connections to peers on first use, and accepting theirs: the greeting
//! (`greet.rs`) that proves a connection belongs to this communicator is sent and checked
//! here, and strangers (scanners, junk, floods, idle connections) are dropped without
//! costing the job anything: at most [`MAX_UNGREETED`] wait for their greeting, each at
//! most [`GREETING_WAIT`], and nothing a stranger does fails a call.

use std::time::{Duration, Instant};

use super::greet::{Greeter, HELLO};
use super::tag::HELLO_TAG;
use super::{ConnMap, Engine};
use crate::algo::machine::ranks;
use crate::error::{Error, Result};
use crate::transport::Transport;

/// Longest wait for the greeting of an accepted connection.
pub(super) const GREETING_WAIT: Duration = Duration::from_secs(5);
/// Most accepted connections waiting for their greeting; the oldest go first beyond it.
pub(super) const MAX_UNGREETED: usize = 64;

/// Established and half-established connections.
pub(super) struct Conns<T: Transport> {
    pub send: ConnMap<T::SendConn>,
    pub recv: ConnMap<T::RecvConn>,
    pub pending: Vec<Pending<T>>,
}

impl<T: Transport> Default for Conns<T> {
    fn default() -> Self {
        Conns {
            send: ConnMap::default(),
            recv: ConnMap::default(),
            pending: Vec::new(),
        }
    }
}

/// A connection on its way up.
pub(super) enum Pending<T: Transport> {
    /// We are connecting to `peer`.
    Connecting {
        peer: usize,
        ch: u16,
        c: T::Connecting,
    },
    /// Connected; our greeting is being sent.
    Greeting {
        peer: usize,
        ch: u16,
        conn: T::SendConn,
        req: Option<T::Request>,
        hello: Box<[u8; HELLO]>,
    },
    /// Someone connected to us; their greeting is being received.
    Accepted {
        conn: T::RecvConn,
        req: Option<T::Request>,
        hello: Box<[u8; HELLO]>,
        since: Instant,
    },
}

impl<T: Transport> Pending<T> {
    /// Closes whatever this holds, ignoring errors.
    pub fn close(self, t: &mut T) {
        match self {
            Pending::Connecting { .. } => {}
            Pending::Greeting { conn, .. } => {
                let _ = t.close_send(conn);
            }
            Pending::Accepted { conn, .. } => {
                let _ = t.close_recv(conn);
            }
        }
    }

    fn is_for(&self, p: usize, c: u16) -> bool {
        matches!(*self, Pending::Connecting { peer, ch, .. } | Pending::Greeting { peer, ch, .. } if peer == p && ch == c)
    }
}

impl<T: Transport> Engine<T> {
    /// Opens the connections this rank initiates for the links `send` (to peer, channel) and
    /// `recv` (from peer, channel), and waits until they are up. Without duplex connections
    /// a rank opens its sending ends; with them, the lower rank of each pair opens the one
    /// connection both directions share. The rest arrive through `accept` while the
    /// schedule runs. `what` names the call for messages.
    pub(super) fn connect_all(
        &mut self,
        send: &[(usize, u16)],
        recv: &[(usize, u16)],
        what: &dyn std::fmt::Display,
    ) -> Result<()> {
        self.check_open()?;
        let duplex = self.transport.duplex();
        let rank = self.rank;
        let mine: Vec<(usize, u16)> = if duplex {
            send.iter()
                .chain(recv)
                .copied()
                .filter(|k| k.0 > rank)
                .collect()
        } else {
            send.to_vec()
        };
        if mine.iter().all(|k| self.conns.send.contains_key(k)) {
            return Ok(());
        }
        for &(peer, ch) in &mine {
            if self.conns.send.contains_key(&(peer, ch))
                || self.conns.pending.iter().any(|p| p.is_for(peer, ch))
            {
                continue;
            }
            let handle = self.handles.get(peer).ok_or_else(|| {
                Error::internal(format!(
                    "rank {}: {what}: no connect handle for rank {peer}",
                    self.rank
                ))
            })?;
            let c = self.transport.connect(0, handle).map_err(|e| {
                e.context(format!(
                    "rank {}: {what}: connecting to rank {peer}",
                    self.rank
                ))
            })?;
            self.conns.pending.push(Pending::Connecting { peer, ch, c });
        }
        self.await_connections(&mine, what)
    }

    /// Drives the pending connections until every one to `send` (peer, channel) is up,
    /// or the timeout passes without progress.
    fn await_connections(
        &mut self,
        send: &[(usize, u16)],
        what: &dyn std::fmt::Display,
    ) -> Result<()> {
        let mut last_progress = Instant::now();
        loop {
            if self.progress_pending(what)? {
                last_progress = Instant::now();
            }
            let miss: Vec<usize> = send
                .iter()
                .filter(|k| !self.conns.send.contains_key(k))
                .map(|k| k.0)
                .collect();
            if miss.is_empty() {
                return Ok(());
            }
            self.check_abort(what)?;
            let waited = last_progress.elapsed();
            if waited >= self.cfg.timeout {
                return Err(Error::timeout(format!(
                    "rank {}: {what}: waited {:.1}s for connections to {}",
                    self.rank,
                    waited.as_secs_f64(),
                    ranks(&miss)
                )));
            }
            self.transport.wait_activity(Duration::from_micros(200))?;
        }
    }

    /// Advances every half-open connection and accepts new ones; true if anything moved.
    pub(super) fn progress_pending(&mut self, what: &dyn std::fmt::Display) -> Result<bool> {
        Link {
            transport: &mut self.transport,
            conns: &mut self.conns,
            listener: &mut self.listener,
            greeter: &mut self.greeter,
            rank: self.rank,
            size: self.size,
        }
        .progress_pending(what)
    }
}

/// The parts of an engine that connection setup uses, borrowed together so that the
/// schedule runner can keep accepting while it holds the rest.
pub(super) struct Link<'a, T: Transport> {
    pub transport: &'a mut T,
    pub conns: &'a mut Conns<T>,
    pub listener: &'a mut Option<T::Listener>,
    pub greeter: &'a mut Greeter,
    pub rank: usize,
    pub size: usize,
}

impl<T: Transport> Link<'_, T> {
    /// Advances every half-open connection and accepts new ones; true if anything moved.
    pub(super) fn progress_pending(&mut self, what: &dyn std::fmt::Display) -> Result<bool> {
        let mut moved = self.accept_new(what)?;
        let pending = std::mem::take(&mut self.conns.pending);
        let mut keep = Vec::with_capacity(pending.len());
        for p in pending {
            let (back, m) = self.advance(p, what)?;
            moved |= m;
            keep.extend(back);
        }
        self.conns.pending.extend(keep);
        self.drop_strangers();
        Ok(moved)
    }

    /// Accepts what waits on the listener, reading each greeting at once (a real peer's is
    /// usually there already, so a flood cannot push it out before it is read).
    fn accept_new(&mut self, what: &dyn std::fmt::Display) -> Result<bool> {
        let mut moved = false;
        loop {
            let Some(l) = self.listener.as_mut() else {
                return Ok(moved);
            };
            let conn = match self.transport.accept(l) {
                Ok(Some(c)) => c,
                Ok(None) => return Ok(moved),
                Err(e) => {
                    // Accepting is never fatal: a stranger may have reset its connection,
                    // or the process may be out of descriptors for a moment.
                    tracing::warn!(
                        target: "oxccl::NET",
                        "rank {}: {what}: accepting a connection: {e}",
                        self.rank
                    );
                    return Ok(moved);
                }
            };
            moved = true;
            let p = Pending::Accepted {
                conn,
                req: None,
                hello: Box::new([0; HELLO]),
                since: Instant::now(),
            };
            let (back, _) = self.advance(p, what)?;
            self.conns.pending.extend(back);
            self.drop_strangers();
        }
    }

    /// Closes accepted connections whose greeting is overdue, and the oldest beyond
    /// [`MAX_UNGREETED`].
    fn drop_strangers(&mut self) {
        let waiting = |p: &Pending<T>| matches!(p, Pending::Accepted { .. });
        let mut n = self.conns.pending.iter().filter(|p| waiting(p)).count();
        if n == 0 {
            return;
        }
        let now = Instant::now();
        let pending = std::mem::take(&mut self.conns.pending);
        for p in pending {
            match p {
                Pending::Accepted { conn, since, .. }
                    if n > MAX_UNGREETED || now.duration_since(since) >= GREETING_WAIT =>
                {
                    n -= 1;
                    self.reject(&conn, "no greeting in time");
                    let _ = self.transport.close_recv(conn);
                }
                p => self.conns.pending.push(p),
            }
        }
    }

    /// Logs a connection turned away.
    fn reject(&self, conn: &T::RecvConn, why: &str) {
        tracing::warn!(
            target: "oxccl::NET",
            "rank {}: rejected a connection from {}: {why}",
            self.rank,
            self.transport.recv_peer(conn)
        );
    }

    /// One step of one pending connection: the entry back if it is not done yet, and
    /// whether anything moved.
    fn advance(
        &mut self,
        p: Pending<T>,
        what: &dyn std::fmt::Display,
    ) -> Result<(Option<Pending<T>>, bool)> {
        match p {
            Pending::Connecting { peer, ch, c } => self.advance_connecting(peer, ch, c, what),
            Pending::Greeting {
                peer,
                ch,
                conn,
                req,
                hello,
            } => self.advance_greeting(peer, ch, conn, req, hello, what),
            Pending::Accepted {
                conn,
                req,
                hello,
                since,
            } => self.advance_accepted(conn, req, hello, since, what),
        }
    }

    /// Our connection to `peer`: once up, its greeting is made.
    fn advance_connecting(
        &mut self,
        peer: usize,
        ch: u16,
        mut c: T::Connecting,
        what: &dyn std::fmt::Display,
    ) -> Result<(Option<Pending<T>>, bool)> {
        let rank = self.rank;
        let ctx = |e: Error| e.context(format!("rank {rank}: {what}: connecting to rank {peer}"));
        let Some(conn) = self.transport.poll_connect(&mut c).map_err(ctx)? else {
            return Ok((Some(Pending::Connecting { peer, ch, c }), false));
        };
        let hello = self.greeter.hello(peer, ch).map_err(ctx)?;
        let p = Pending::Greeting {
            peer,
            ch,
            conn,
            req: None,
            hello,
        };
        Ok((Some(p), true))
    }

    /// Our greeting to `peer`: once sent, the connection is ready.
    #[allow(clippy::too_many_arguments)] // the fields of one `Pending::Greeting`
    fn advance_greeting(
        &mut self,
        peer: usize,
        ch: u16,
        mut conn: T::SendConn,
        mut req: Option<T::Request>,
        hello: Box<[u8; HELLO]>,
        what: &dyn std::fmt::Display,
    ) -> Result<(Option<Pending<T>>, bool)> {
        let rank = self.rank;
        let t = &mut *self.transport;
        let ctx = |e: Error| e.context(format!("rank {rank}: {what}: greeting rank {peer}"));
        if req.is_none() {
            // SAFETY: `hello` is boxed and stays in this entry until the send completes or
            // the connection is closed.
            req = unsafe { t.isend(&mut conn, hello.as_ptr(), HELLO, HELLO_TAG, None) }
                .map_err(ctx)?;
        }
        let done = match req.as_mut() {
            Some(r) => t.test(r).map_err(ctx)?.is_some(),
            None => false,
        };
        if !done {
            let p = Pending::Greeting {
                peer,
                ch,
                conn,
                req,
                hello,
            };
            return Ok((Some(p), false));
        }
        if t.duplex() {
            let back = t.reverse_recv(&conn).map_err(ctx)?;
            self.conns.recv.insert((peer, ch), back);
        }
        self.conns.send.insert((peer, ch), conn);
        Ok((None, true))
    }

    /// A peer's (or a stranger's) connection: its greeting is read and checked; a
    /// stranger is turned away, never failing the call.
    fn advance_accepted(
        &mut self,
        mut conn: T::RecvConn,
        mut req: Option<T::Request>,
        mut hello: Box<[u8; HELLO]>,
        since: Instant,
        what: &dyn std::fmt::Display,
    ) -> Result<(Option<Pending<T>>, bool)> {
        let t = &mut *self.transport;
        let got = (|| -> Result<Option<crate::transport::Completion>> {
            if req.is_none() {
                // SAFETY: as for the greeting sent, the box outlives the receive.
                req = unsafe { t.irecv(&mut conn, hello.as_mut_ptr(), HELLO, None) }?;
            }
            match req.as_mut() {
                Some(r) => t.test(r),
                None => Ok(None),
            }
        })();
        let c = match got {
            Ok(None) => {
                let p = Pending::Accepted {
                    conn,
                    req,
                    hello,
                    since,
                };
                return Ok((Some(p), false));
            }
            Ok(Some(c)) => c,
            Err(e) => {
                // Junk, a reset, an over-long "message": never this call's failure.
                self.reject(&conn, &e.to_string());
                let _ = self.transport.close_recv(conn);
                return Ok((None, true));
            }
        };
        let recv = &self.conns.recv;
        let checked = if c.tag != HELLO_TAG || c.bytes != HELLO {
            Err("not an oxccl greeting")
        } else {
            self.greeter
                .check(&hello[..], self.size, |p, ch| recv.contains_key(&(p, ch)))
        };
        match checked {
            Ok((peer, ch)) => self.greeted(conn, peer, ch, what),
            Err(why) => {
                self.reject(&conn, why);
                let _ = self.transport.close_recv(conn);
                Ok((None, true))
            }
        }
    }

    /// An accepted connection proved to come from `peer`: it is ready (both ways, where
    /// connections are duplex).
    fn greeted(
        &mut self,
        conn: T::RecvConn,
        peer: usize,
        ch: u16,
        what: &dyn std::fmt::Display,
    ) -> Result<(Option<Pending<T>>, bool)> {
        let t = &mut *self.transport;
        if t.duplex() {
            let back = t.reverse_send(&conn).map_err(|e| {
                e.context(format!("rank {}: {what}: answering rank {peer}", self.rank))
            })?;
            self.conns.send.insert((peer, ch), back);
        }
        self.conns.recv.insert((peer, ch), conn);
        Ok((None, true))
    }
}
