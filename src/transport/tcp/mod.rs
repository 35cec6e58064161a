//! The tcp backend: the default transport, over non-blocking kernel sockets.
//!
//! Owns [`TcpTransport`] and its `impl Transport`: the tables of listeners, pending connects
//! and connections, and `wait_activity`. Connections, listeners and requests handed to the
//! engine are small `Copy` ids (slot index plus generation) into those tables, so a stale id
//! is an error rather than a dangling reference, and the transport stays `Send`.
//!
//! * `device.rs`: the interface owning the bind address, and its properties;
//! * `listen.rs`: listen, connect, accept, socket options, the handle format;
//! * `congestion.rs`: which TCP congestion control a data socket uses;
//! * `conn.rs`: one connection's request queue, send progress and receive parser.
//!
//! A connection is one-way: the connecting side only writes, the accepting side only reads.
//! Every data socket is non-blocking with `TCP_NODELAY`; sends use `MSG_NOSIGNAL`, so a dead
//! peer is a `Remote` error and never a `SIGPIPE`.

mod congestion;
mod conn;
mod device;
mod listen;
#[cfg(test)]
mod tests;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

pub use self::congestion::TcpCongestion;
use self::conn::{Interest, RecvConnState, SendConnState};
use crate::error::{Error, ErrorKind, Result};
use crate::sys::poll;
use crate::transport::slab::{Id, Slab};
use crate::transport::{Completion, ConnectHandle, DeviceProps, Tag, Transport};

/// Settings of a [`TcpTransport`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpConfig {
    /// Address to listen on; it must belong to an interface of this host and be reachable
    /// by the peers (not `0.0.0.0`/`::`, since it is what the connect handle advertises).
    pub bind_ip: IpAddr,
    /// `SO_SNDBUF`/`SO_RCVBUF` of every data socket, in bytes; 0 keeps the OS default
    /// (and its auto-tuning).
    pub socket_buf_bytes: usize,
    /// The congestion control of every data socket (`OXCCL_TCP_CONGESTION`).
    pub congestion: TcpCongestion,
}

/// The tcp backend. One instance per rank, driven from one thread at a time. Dropping it
/// closes every socket it owns.
pub struct TcpTransport {
    cfg: TcpConfig,
    device: DeviceProps,
    listeners: Slab<ListenState>,
    connecting: Slab<ConnectingState>,
    sends: Slab<SendConnState>,
    recvs: Slab<RecvConnState>,
    /// Reused by `wait_activity` so that waiting allocates nothing once warm.
    pollfds: Vec<libc::pollfd>,
    /// One socket per peer pair and channel (`OXCCL_TCP_DUPLEX`, default on), or one per
    /// direction.
    duplex: bool,
}

/// A listening socket of a [`TcpTransport`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpListen(Id);

/// A connection attempt of a [`TcpTransport`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpConnecting(Id);

/// The sending end of a connection of a [`TcpTransport`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSendConn(Id);

/// The receiving end of a connection of a [`TcpTransport`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpRecvConn(Id);

/// A posted send or receive: its connection and its sequence number on that connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpRequest {
    side: Side,
    conn: Id,
    seq: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Send,
    Recv,
}

struct ListenState {
    fd: OwnedFd,
}

struct ConnectingState {
    fd: OwnedFd,
    addr: SocketAddr,
}

impl TcpTransport {
    /// A transport bound to `cfg.bind_ip`, which must be an address of this host.
    pub fn new(cfg: TcpConfig) -> Result<TcpTransport> {
        if cfg.bind_ip.is_unspecified() {
            return Err(Error::invalid_argument(format!(
                "tcp: bind address {} is unspecified; give an address of this host that peers \
                 can reach",
                cfg.bind_ip
            )));
        }
        let mut device = device::discover(cfg.bind_ip)?;
        // Linux allots twice the SO_SNDBUF asked for; 0 leaves the size to the kernel.
        device.caps.buffered_bytes = cfg.socket_buf_bytes.saturating_mul(2);
        // Over loopback the receiving half of TCP runs on the sending core whatever the
        // number of sockets, so a second channel only adds syscalls and data in flight: one
        // channel was faster at 2, 4 and 8 ranks on one host (docs/performance.md).
        device.caps.host_channels = 1;
        Ok(TcpTransport {
            cfg,
            device,
            listeners: Slab::new(),
            connecting: Slab::new(),
            sends: Slab::new(),
            recvs: Slab::new(),
            pollfds: Vec::new(),
            duplex: crate::config::vars::flag("OXCCL_TCP_DUPLEX")?.unwrap_or(true),
        })
    }

    fn check_dev(&self, dev: usize) -> Result<()> {
        if dev == 0 {
            Ok(())
        } else {
            Err(Error::invalid_argument(format!(
                "tcp: device {dev} does not exist (the tcp backend has one device, {})",
                self.device.name
            )))
        }
    }
}

impl Transport for TcpTransport {
    type Listener = TcpListen;
    type Connecting = TcpConnecting;
    type SendConn = TcpSendConn;
    type RecvConn = TcpRecvConn;
    type MemRegion = ();
    type Request = TcpRequest;

    fn name(&self) -> &'static str {
        "tcp"
    }

    fn devices(&self) -> Result<Vec<DeviceProps>> {
        Ok(vec![self.device.clone()])
    }

    fn listen(&mut self, dev: usize) -> Result<(ConnectHandle, TcpListen)> {
        self.check_dev(dev)?;
        let (fd, addr) = listen::listen_on(&self.cfg)?;
        let handle = listen::encode_handle(addr)?;
        Ok((handle, TcpListen(self.listeners.insert(ListenState { fd }))))
    }

    fn connect(&mut self, dev: usize, handle: &ConnectHandle) -> Result<TcpConnecting> {
        self.check_dev(dev)?;
        let addr = listen::decode_handle(handle)?;
        let fd = listen::start_connect(addr, &self.cfg)?;
        Ok(TcpConnecting(
            self.connecting.insert(ConnectingState { fd, addr }),
        ))
    }

    fn poll_connect(&mut self, pending: &mut TcpConnecting) -> Result<Option<TcpSendConn>> {
        let c = self
            .connecting
            .get_mut(pending.0)
            .ok_or_else(|| stale("connection attempt (already established or failed)"))?;
        match listen::connect_done(&c.fd, c.addr) {
            Ok(false) => Ok(None),
            Ok(true) => {
                let c = self
                    .connecting
                    .remove(pending.0)
                    .ok_or_else(|| stale("connection attempt"))?;
                let state = SendConnState::new(c.fd, c.addr);
                Ok(Some(TcpSendConn(self.sends.insert(state))))
            }
            Err(e) => {
                self.connecting.remove(pending.0);
                Err(e)
            }
        }
    }

    fn accept(&mut self, listener: &mut TcpListen) -> Result<Option<TcpRecvConn>> {
        let l = self
            .listeners
            .get_mut(listener.0)
            .ok_or_else(|| stale("listener"))?;
        Ok(listen::accept_one(&l.fd, &self.cfg)?
            .map(|(fd, peer)| TcpRecvConn(self.recvs.insert(RecvConnState::new(fd, peer)))))
    }

    fn register(&mut self, _ptr: *const u8, _len: usize) -> Result<()> {
        Ok(())
    }

    fn deregister(&mut self, _region: ()) -> Result<()> {
        Ok(())
    }

    unsafe fn isend(
        &mut self,
        conn: &mut TcpSendConn,
        data: *const u8,
        len: usize,
        tag: Tag,
        _region: Option<&()>,
    ) -> Result<Option<TcpRequest>> {
        crate::transport::check_buffer("tcp", true, data.is_null(), len)?;
        let c = self
            .sends
            .get_mut(conn.0)
            .ok_or_else(|| stale("send connection"))?;
        Ok(c.post(data, len, tag)?.map(|seq| TcpRequest {
            side: Side::Send,
            conn: conn.0,
            seq,
        }))
    }

    unsafe fn irecv(
        &mut self,
        conn: &mut TcpRecvConn,
        data: *mut u8,
        len: usize,
        _region: Option<&()>,
    ) -> Result<Option<TcpRequest>> {
        crate::transport::check_buffer("tcp", false, data.is_null(), len)?;
        let c = self
            .recvs
            .get_mut(conn.0)
            .ok_or_else(|| stale("receive connection"))?;
        Ok(c.post(data, len)?.map(|seq| TcpRequest {
            side: Side::Recv,
            conn: conn.0,
            seq,
        }))
    }

    fn test(&mut self, request: &mut TcpRequest) -> Result<Option<Completion>> {
        match request.side {
            Side::Send => self
                .sends
                .get_mut(request.conn)
                .ok_or_else(|| stale("send connection"))?
                .test(request.seq),
            Side::Recv => self
                .recvs
                .get_mut(request.conn)
                .ok_or_else(|| stale("receive connection"))?
                .test(request.seq),
        }
    }

    /// Sleeps in `ppoll` on every socket with work pending (POLLOUT for queued sends,
    /// POLLIN for posted receives, listeners and connects) until one is ready or `timeout`
    /// passes; returns at once if staged data or a failure can already be reported. An open
    /// listener with an unaccepted connection wakes it every time: close listeners once
    /// set-up is done.
    fn wait_activity(&mut self, timeout: Duration) -> Result<()> {
        let fds = &mut self.pollfds;
        fds.clear();
        let mut push = |fd, events| {
            fds.push(libc::pollfd {
                fd,
                events,
                revents: 0,
            })
        };
        for l in self.listeners.iter() {
            push(l.fd.as_raw_fd(), libc::POLLIN);
        }
        for c in self.connecting.iter() {
            push(c.fd.as_raw_fd(), libc::POLLOUT);
        }
        let send_interest = self.sends.iter().map(|c| (c.fd(), c.interest()));
        let recv_interest = self.recvs.iter().map(|c| (c.fd(), c.interest()));
        for (fd, interest) in send_interest.chain(recv_interest) {
            match interest {
                Interest::Idle => {}
                Interest::Ready => return Ok(()),
                Interest::Poll(events) => push(fd, events),
            }
        }
        poll::wait(fds, timeout, "tcp: waiting for socket activity (ppoll)")?;
        Ok(())
    }

    /// Listeners do not count: an incoming connection waits for at most the sleep of the
    /// transport beside this one, and a listener stays open for the job's whole life.
    fn pending(&self) -> bool {
        self.connecting.iter().next().is_some()
            || self
                .sends
                .iter()
                .any(|c| !matches!(c.interest(), Interest::Idle))
            || self
                .recvs
                .iter()
                .any(|c| !matches!(c.interest(), Interest::Idle))
    }

    fn duplex(&self) -> bool {
        self.duplex
    }

    fn recv_peer(&self, conn: &TcpRecvConn) -> String {
        self.recvs.get(conn.0).map_or_else(
            || "a closed connection".to_string(),
            |c| c.peer().to_string(),
        )
    }

    fn reverse_recv(&mut self, conn: &TcpSendConn) -> Result<TcpRecvConn> {
        let c = self
            .sends
            .get_mut(conn.0)
            .ok_or_else(|| stale("send connection"))?;
        let (fd, peer) = (dup_fd(c.fd())?, c.peer());
        Ok(TcpRecvConn(self.recvs.insert(RecvConnState::new(fd, peer))))
    }

    fn reverse_send(&mut self, conn: &TcpRecvConn) -> Result<TcpSendConn> {
        let c = self
            .recvs
            .get_mut(conn.0)
            .ok_or_else(|| stale("receive connection"))?;
        let (fd, peer) = (dup_fd(c.fd())?, c.peer());
        Ok(TcpSendConn(self.sends.insert(SendConnState::new(fd, peer))))
    }

    fn check_send(&mut self, conn: &mut TcpSendConn) -> Result<()> {
        let c = self
            .sends
            .get_mut(conn.0)
            .ok_or_else(|| stale("send connection"))?;
        let mut byte = 0u8;
        // SAFETY: a one-byte peek into a local; the fd is owned by the connection.
        let n = unsafe {
            libc::recv(
                c.fd(),
                (&mut byte as *mut u8).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        if n == 0 {
            return Err(Error::remote(format!(
                "tcp: connection closed by peer {}",
                c.peer()
            )));
        }
        if n < 0 {
            let err = std::io::Error::last_os_error();
            return match err.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(()),
                _ => Err(Error::remote(format!(
                    "tcp: connection to {} failed: {err}",
                    c.peer()
                ))),
            };
        }
        Ok(())
    }

    fn close_send(&mut self, conn: TcpSendConn) -> Result<()> {
        self.sends
            .remove(conn.0)
            .map(drop)
            .ok_or_else(|| stale("send connection"))
    }

    fn close_recv(&mut self, conn: TcpRecvConn) -> Result<()> {
        self.recvs
            .remove(conn.0)
            .map(drop)
            .ok_or_else(|| stale("receive connection"))
    }

    fn close_listen(&mut self, listener: TcpListen) -> Result<()> {
        self.listeners
            .remove(listener.0)
            .map(drop)
            .ok_or_else(|| stale("listener"))
    }
}

/// A second descriptor of the same socket, so each direction's state owns one.
fn dup_fd(fd: std::os::fd::RawFd) -> Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: `fd` is an open socket owned by a connection of this transport.
    let d = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if d < 0 {
        return Err(Error::io(
            "tcp: duplicating a socket",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: `d` is a fresh descriptor that nothing else owns.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(d) })
}

/// An OS error with what was being done; connection failures caused by the peer (refused,
/// reset, unreachable) are `Remote`, the rest `System`.
fn os_error(what: impl std::fmt::Display, err: io::Error) -> Error {
    let remote = matches!(
        err.raw_os_error(),
        Some(
            libc::ECONNREFUSED
                | libc::ECONNRESET
                | libc::ECONNABORTED
                | libc::EPIPE
                | libc::ETIMEDOUT
                | libc::EHOSTUNREACH
                | libc::ENETUNREACH
                | libc::EHOSTDOWN
        )
    );
    let kind = if remote {
        ErrorKind::Remote
    } else {
        ErrorKind::System
    };
    Error::new(kind, format!("{what}: {err}"))
}

fn stale(what: &str) -> Error {
    Error::invalid_usage(format!("tcp: {what} used after it was closed"))
}
