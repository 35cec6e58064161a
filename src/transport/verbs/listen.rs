//! Setting up connections: the connect handle, the side channel, and the exchange of
//! queue-pair numbers.
//!
//! Owns: the handle's byte format, a non-blocking TCP listener per `listen`, and the two
//! state machines that exchange what an RC connection needs from both sides (queue pair
//! numbers, first packet sequence numbers, GID/LID, MTU, and where the control block is).
//! RC queue pairs are created per connection, after the handle was published, so their
//! numbers cannot be in the handle; the handle carries what a peer needs to start
//! (the side channel's address, the port's GID, LID, MTU and link layer), and the rest
//! travels on the side channel, like NCCL's IB transport does:
//!
//! ```text
//! connector                                  acceptor
//! prepare QPs (INIT), TCP connect  ------->  accept
//! send Info (QPNs, PSNs, GID, ...) ------->  prepare QPs, move them to RTR/RTS
//! move QPs to RTR/RTS              <-------  send Info
//! send READY                       ------->  hand the connection to the engine
//! ```
//!
//! The acceptor is ready to receive before it answers and the connector before it says
//! READY, so no RDMA packet ever reaches a queue pair that is not yet listening. Nothing
//! blocks: every step is retried from `poll_connect`/`accept`. After set-up the socket
//! stays open and idle: its end (EOF, reset) is how a dead peer is noticed at once.
//!
//! Handle (44 bytes): `b"oxib"`, version, address family (4 or 6), TCP port (big endian),
//! address (16 bytes, IPv4 in the first 4), GID (16), LID (little endian), active MTU
//! (`ibv_mtu`), link layer (1 InfiniBand, 2 Ethernet).

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd};

use super::conn::Conn;
use super::ctrl::{Prepared, RemoteCtrl};
use super::device::Device;
use super::qp::{Path, QpEnd};
use super::sys::Lib;
use super::wire::{EAGER_BYTES, SLOTS, STRIDE};
use super::VerbsConfig;
use crate::error::{Error, ErrorKind, Result};
use crate::sys::socket::{self, ConnectState};
use crate::transport::ConnectHandle;

const MAGIC: [u8; 4] = *b"oxib";
const VERSION: u8 = 1;
const HANDLE_BYTES: usize = 44;
const INFO_MAGIC: [u8; 4] = *b"oxiq";
/// Most queue pairs per connection (`OXCCL_IB_QPS_PER_CONNECTION`).
pub(super) const MAX_QPS: usize = 16;
pub(super) const INFO_BYTES: usize = 60 + MAX_QPS * 8;
const READY: u8 = 0x5a;
/// Half-done incoming set-ups a listener keeps; beyond it the oldest is dropped, so that a
/// flood of strangers cannot shut out a real peer (whose set-up finishes at once).
const MAX_ACCEPTING: usize = 64;
/// Longest an incoming set-up may take; a stranger that connects and says nothing (or
/// stops half-way) is dropped after it.
const SETUP_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// What a handle says about the listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct HandleInfo {
    pub addr: SocketAddr,
    pub gid: [u8; 16],
    pub lid: u16,
    pub mtu: u8,
    pub roce: bool,
}

pub(super) fn encode_handle(h: &HandleInfo) -> Result<ConnectHandle> {
    let mut b = [0u8; HANDLE_BYTES];
    b[..4].copy_from_slice(&MAGIC);
    b[4] = VERSION;
    b[6..8].copy_from_slice(&h.addr.port().to_be_bytes());
    match h.addr.ip() {
        IpAddr::V4(a) => {
            b[5] = 4;
            b[8..12].copy_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            b[5] = 6;
            b[8..24].copy_from_slice(&a.octets());
        }
    }
    b[24..40].copy_from_slice(&h.gid);
    b[40..42].copy_from_slice(&h.lid.to_le_bytes());
    b[42] = h.mtu;
    b[43] = if h.roce { 2 } else { 1 };
    ConnectHandle::new(&b)
}

pub(super) fn decode_handle(handle: &ConnectHandle) -> Result<HandleInfo> {
    let b = handle.as_bytes();
    let bad = |why: &str| {
        Error::invalid_argument(format!(
            "verbs: connect handle of {} bytes is not a verbs handle: {why} (is another rank \
             using another OXCCL_TRANSPORT?)",
            b.len()
        ))
    };
    if b.len() != HANDLE_BYTES || b[..4] != MAGIC {
        return Err(bad("wrong size or magic"));
    }
    if b[4] != VERSION {
        return Err(bad("another protocol version (mixed oxccl versions?)"));
    }
    let port = u16::from_be_bytes([b[6], b[7]]);
    let ip = match b[5] {
        4 => IpAddr::V4(Ipv4Addr::new(b[8], b[9], b[10], b[11])),
        6 => {
            let mut o = [0u8; 16];
            o.copy_from_slice(&b[8..24]);
            IpAddr::V6(Ipv6Addr::from(o))
        }
        _ => return Err(bad("unknown address family")),
    };
    let mut gid = [0u8; 16];
    gid.copy_from_slice(&b[24..40]);
    Ok(HandleInfo {
        addr: SocketAddr::new(ip, port),
        gid,
        lid: u16::from_le_bytes([b[40], b[41]]),
        mtu: b[42],
        roce: b[43] == 2,
    })
}

/// What each side of a connection tells the other on the side channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Info {
    pub gid: [u8; 16],
    pub lid: u16,
    pub mtu: u8,
    pub roce: bool,
    pub ctrl: RemoteCtrl,
    pub qps: Vec<QpEnd>,
}

impl Info {
    pub(super) fn encode(&self) -> [u8; INFO_BYTES] {
        let mut b = [0u8; INFO_BYTES];
        b[..4].copy_from_slice(&INFO_MAGIC);
        b[4] = VERSION;
        b[5] = self.qps.len() as u8;
        b[6] = self.mtu;
        b[7] = u8::from(self.roce);
        b[8..24].copy_from_slice(&self.gid);
        b[24..26].copy_from_slice(&self.lid.to_le_bytes());
        b[28..32].copy_from_slice(&(SLOTS as u32).to_le_bytes());
        b[32..36].copy_from_slice(&(STRIDE as u32).to_le_bytes());
        b[36..40].copy_from_slice(&(EAGER_BYTES as u32).to_le_bytes());
        b[40..44].copy_from_slice(&self.ctrl.rkey.to_le_bytes());
        b[44..52].copy_from_slice(&self.ctrl.eager_in.to_le_bytes());
        b[52..60].copy_from_slice(&self.ctrl.cts_in.to_le_bytes());
        for (i, q) in self.qps.iter().take(MAX_QPS).enumerate() {
            let o = 60 + i * 8;
            b[o..o + 4].copy_from_slice(&q.qpn.to_le_bytes());
            b[o + 4..o + 8].copy_from_slice(&q.psn.to_le_bytes());
        }
        b
    }

    pub(super) fn decode(b: &[u8; INFO_BYTES], peer: SocketAddr) -> Result<Info> {
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let u64_at = |o: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[o..o + 8]);
            u64::from_le_bytes(w)
        };
        let bad = |why: String| Error::remote(format!("verbs: set-up from {peer}: {why}"));
        if b[..4] != INFO_MAGIC || b[4] != VERSION {
            return Err(bad("not an oxccl verbs peer (or another version)".into()));
        }
        let n = b[5] as usize;
        if n == 0 || n > MAX_QPS {
            return Err(bad(format!("{n} queue pairs")));
        }
        let (slots, stride, eager) = (u32_at(28), u32_at(32), u32_at(36));
        if (slots, stride, eager) != (SLOTS as u32, STRIDE as u32, EAGER_BYTES as u32) {
            return Err(bad(format!(
                "protocol sizes {slots}/{stride}/{eager} differ from this rank's \
                 {SLOTS}/{STRIDE}/{EAGER_BYTES} (mixed oxccl versions?)"
            )));
        }
        let mut gid = [0u8; 16];
        gid.copy_from_slice(&b[8..24]);
        Ok(Info {
            gid,
            lid: u16::from_le_bytes([b[24], b[25]]),
            mtu: b[6],
            roce: b[7] != 0,
            ctrl: RemoteCtrl {
                rkey: u32_at(40),
                eager_in: u64_at(44),
                cts_in: u64_at(52),
            },
            qps: (0..n)
                .map(|i| QpEnd {
                    qpn: u32_at(60 + i * 8),
                    psn: u32_at(64 + i * 8),
                })
                .collect(),
        })
    }
}

/// What set-up needs from the transport.
pub(super) struct SetupEnv<'a> {
    pub lib: &'static Lib,
    pub dev: &'a Device,
    pub cfg: &'a VerbsConfig,
}

impl SetupEnv<'_> {
    fn local_info(&self, prep: &Prepared) -> Info {
        Info {
            gid: self.dev.gid,
            lid: self.dev.lid,
            mtu: self.dev.mtu as u8,
            roce: self.dev.roce,
            ctrl: prep.ctrl(),
            qps: prep.ends(),
        }
    }

    /// The path to a peer with `remote` info; both link layers must agree.
    fn path(&self, remote: &Info, peer: SocketAddr) -> Result<Path> {
        if remote.roce != self.dev.roce {
            let name = |r: bool| if r { "RoCE (Ethernet)" } else { "InfiniBand" };
            return Err(Error::invalid_usage(format!(
                "verbs: {peer} is on {} but this rank's {} is on {}",
                name(remote.roce),
                self.dev.name,
                name(self.dev.roce)
            )));
        }
        Ok(Path {
            port: self.dev.port,
            gid_index: self.dev.gid_index,
            remote_gid: remote.gid,
            remote_lid: remote.lid,
            roce: self.dev.roce,
            mtu: self.dev.mtu.min(u32::from(remote.mtu)).max(1),
            traffic_class: self.cfg.traffic_class,
            service_level: self.cfg.service_level,
            timeout: self.cfg.timeout,
            retry_cnt: self.cfg.retry_cnt,
        })
    }

    fn peer_name(&self, addr: SocketAddr, info: &Info) -> String {
        format!(
            "{addr} (GID {}, QPN {})",
            Ipv6Addr::from(info.gid),
            info.qps.first().map_or(0, |q| q.qpn)
        )
    }
}

/// A listening side channel.
pub(super) struct Listener {
    sock: TcpListener,
    accepting: Vec<Accepting>,
}

impl Listener {
    /// Listens on `ip` with an OS-chosen port.
    pub(super) fn bind(ip: IpAddr) -> Result<Listener> {
        let sock = TcpListener::bind(SocketAddr::new(ip, 0))
            .map_err(|e| Error::io(format!("verbs: listening on {ip}"), e))?;
        sock.set_nonblocking(true)
            .map_err(|e| Error::io("verbs: listening socket", e))?;
        Ok(Listener {
            sock,
            accepting: Vec::new(),
        })
    }

    pub(super) fn addr(&self) -> Result<SocketAddr> {
        self.sock
            .local_addr()
            .map_err(|e| Error::io("verbs: address of the listening socket", e))
    }

    /// Descriptors to wait on: the listener and every half-done set-up.
    pub(super) fn fds(&self) -> impl Iterator<Item = libc::c_int> + '_ {
        std::iter::once(self.sock.as_raw_fd())
            .chain(self.accepting.iter().map(|a| a.sock.as_raw_fd()))
    }

    /// Takes new TCP connections and advances every set-up; one finished connection, if any.
    /// A set-up the peer botches (closes, sends garbage) is dropped; a local failure
    /// (creating queue pairs) is an error.
    pub(super) fn accept(&mut self, env: &SetupEnv<'_>) -> Result<Option<Conn>> {
        loop {
            match self.sock.accept() {
                Ok((s, addr)) => {
                    if self.accepting.len() >= MAX_ACCEPTING {
                        let old = self.accepting.remove(0);
                        drop_setup(&old, "too many set-ups at once; the oldest goes");
                    }
                    s.set_nonblocking(true)
                        .and_then(|()| s.set_nodelay(true))
                        .map_err(|e| Error::io("verbs: accepted socket", e))?;
                    self.accepting.push(Accepting::new(s, addr));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                Err(e) => return Err(Error::io("verbs: accepting a side-channel connection", e)),
            }
        }
        let mut i = 0;
        while i < self.accepting.len() {
            if self.accepting[i].since.elapsed() >= SETUP_WAIT {
                let old = self.accepting.swap_remove(i);
                drop_setup(&old, "no set-up in time");
                continue;
            }
            match self.accepting[i].step(env) {
                Ok(None) => i += 1,
                Ok(Some(c)) => {
                    self.accepting.swap_remove(i);
                    return Ok(Some(c));
                }
                Err(e) if e.kind() == ErrorKind::System || e.kind() == ErrorKind::Internal => {
                    self.accepting.swap_remove(i);
                    return Err(e);
                }
                Err(e) => {
                    // The peer botched it (closed, sent garbage, an impossible path).
                    let old = self.accepting.swap_remove(i);
                    drop_setup(&old, &e.to_string());
                }
            }
        }
        Ok(None)
    }
}

/// Logs an incoming set-up dropped before it finished.
fn drop_setup(a: &Accepting, why: &str) {
    tracing::warn!(
        target: "oxccl::NET",
        "verbs: dropped a side-channel connection from {}: {why}",
        a.peer
    );
}

/// Reads into `buf[*got..]`; true once full. EOF is a Remote error.
fn read_some(s: &mut TcpStream, buf: &mut [u8], got: &mut usize, peer: SocketAddr) -> Result<bool> {
    while *got < buf.len() {
        match s.read(&mut buf[*got..]) {
            Ok(0) => {
                return Err(Error::remote(format!(
                    "verbs: {peer} closed the side channel during connection set-up"
                )))
            }
            Ok(n) => *got += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(remote_io(format!("verbs: reading from {peer}"), e)),
        }
    }
    Ok(true)
}

/// Writes `buf[*sent..]`; true once all is written.
fn write_some(s: &mut TcpStream, buf: &[u8], sent: &mut usize, peer: SocketAddr) -> Result<bool> {
    while *sent < buf.len() {
        match s.write(&buf[*sent..]) {
            Ok(n) => *sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(remote_io(format!("verbs: writing to {peer}"), e)),
        }
    }
    Ok(true)
}

/// Socket failures caused by the peer are Remote, the rest System.
fn remote_io(what: String, e: io::Error) -> Error {
    use io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused
        | K::ConnectionReset
        | K::ConnectionAborted
        | K::BrokenPipe
        | K::TimedOut
        | K::HostUnreachable
        | K::NetworkUnreachable => Error::remote(format!("{what}: {e}")),
        _ => Error::io(what, e),
    }
}

enum AcceptPhase {
    /// Reading the connector's info.
    Info,
    /// Our QPs are ready to receive; our info is being written.
    Reply {
        conn_parts: Box<(Prepared, Info)>,
        out: Box<[u8; INFO_BYTES]>,
        sent: usize,
    },
    /// Waiting for READY.
    Ready {
        conn_parts: Box<(Prepared, Info)>,
    },
    Done,
}

/// An incoming set-up.
struct Accepting {
    sock: TcpStream,
    peer: SocketAddr,
    since: std::time::Instant,
    buf: Box<[u8; INFO_BYTES]>,
    got: usize,
    phase: AcceptPhase,
}

impl Accepting {
    fn new(sock: TcpStream, peer: SocketAddr) -> Self {
        Accepting {
            sock,
            peer,
            since: std::time::Instant::now(),
            buf: Box::new([0; INFO_BYTES]),
            got: 0,
            phase: AcceptPhase::Info,
        }
    }

    fn step(&mut self, env: &SetupEnv<'_>) -> Result<Option<Conn>> {
        loop {
            match std::mem::replace(&mut self.phase, AcceptPhase::Done) {
                AcceptPhase::Info => {
                    if !read_some(&mut self.sock, &mut self.buf[..], &mut self.got, self.peer)? {
                        self.phase = AcceptPhase::Info;
                        return Ok(None);
                    }
                    let theirs = Info::decode(&self.buf, self.peer)?;
                    let path = env.path(&theirs, self.peer)?;
                    let prep = Prepared::new(env.lib, env.dev, theirs.qps.len())?;
                    prep.connect(env.lib, &path, &theirs.qps)?;
                    let out = Box::new(env.local_info(&prep).encode());
                    self.phase = AcceptPhase::Reply {
                        conn_parts: Box::new((prep, theirs)),
                        out,
                        sent: 0,
                    };
                }
                AcceptPhase::Reply {
                    conn_parts,
                    out,
                    mut sent,
                } => {
                    if !write_some(&mut self.sock, &out[..], &mut sent, self.peer)? {
                        self.phase = AcceptPhase::Reply {
                            conn_parts,
                            out,
                            sent,
                        };
                        return Ok(None);
                    }
                    self.got = 0;
                    self.phase = AcceptPhase::Ready { conn_parts };
                }
                AcceptPhase::Ready { conn_parts } => {
                    if !read_some(&mut self.sock, &mut self.buf[..1], &mut self.got, self.peer)? {
                        self.phase = AcceptPhase::Ready { conn_parts };
                        return Ok(None);
                    }
                    if self.buf[0] != READY {
                        return Err(Error::remote(format!(
                            "verbs: {} sent a bad set-up confirmation",
                            self.peer
                        )));
                    }
                    let (prep, theirs) = *conn_parts;
                    let sock = self
                        .sock
                        .try_clone()
                        .map_err(|e| Error::io("verbs: side-channel socket", e))?;
                    let peer = env.peer_name(self.peer, &theirs);
                    return Conn::new(env.lib, prep, theirs.ctrl, sock, peer, env.dev.max_msg)
                        .map(Some);
                }
                AcceptPhase::Done => {
                    return Err(Error::internal("verbs: set-up stepped after its end"))
                }
            }
        }
    }
}

enum ConnectPhase {
    /// The TCP connect is in progress.
    Tcp,
    /// Writing our info.
    Send {
        sent: usize,
    },
    /// Reading the acceptor's info.
    Recv {
        got: usize,
    },
    /// QPs connected; writing READY.
    Ready {
        conn_parts: Box<(Prepared, Info)>,
    },
    Done,
}

/// An outgoing set-up.
pub(super) struct Connecting {
    sock: TcpStream,
    peer: SocketAddr,
    prep: Option<Prepared>,
    out: Box<[u8; INFO_BYTES]>,
    buf: Box<[u8; INFO_BYTES]>,
    phase: ConnectPhase,
}

impl Connecting {
    /// Prepares `nqps` queue pairs and starts the TCP connect to the listener of `h`.
    pub(super) fn start(env: &SetupEnv<'_>, h: &HandleInfo, nqps: usize) -> Result<Connecting> {
        if h.roce != env.dev.roce {
            let name = |r: bool| if r { "RoCE (Ethernet)" } else { "InfiniBand" };
            return Err(Error::invalid_usage(format!(
                "verbs: the peer at {} is on {} but this rank's {} is on {}",
                h.addr,
                name(h.roce),
                env.dev.name,
                name(env.dev.roce)
            )));
        }
        let prep = Prepared::new(env.lib, env.dev, nqps)?;
        let out = Box::new(env.local_info(&prep).encode());
        let sock = start_connect(h.addr)?;
        Ok(Connecting {
            sock,
            peer: h.addr,
            prep: Some(prep),
            out,
            buf: Box::new([0; INFO_BYTES]),
            phase: ConnectPhase::Tcp,
        })
    }

    pub(super) fn fd(&self) -> libc::c_int {
        self.sock.as_raw_fd()
    }

    /// Advances the set-up: the connection once the acceptor has it too.
    pub(super) fn poll(&mut self, env: &SetupEnv<'_>) -> Result<Option<Conn>> {
        loop {
            match std::mem::replace(&mut self.phase, ConnectPhase::Done) {
                ConnectPhase::Tcp => {
                    if !connect_done(&self.sock, self.peer)? {
                        self.phase = ConnectPhase::Tcp;
                        return Ok(None);
                    }
                    self.phase = ConnectPhase::Send { sent: 0 };
                }
                ConnectPhase::Send { mut sent } => {
                    if !write_some(&mut self.sock, &self.out[..], &mut sent, self.peer)? {
                        self.phase = ConnectPhase::Send { sent };
                        return Ok(None);
                    }
                    self.phase = ConnectPhase::Recv { got: 0 };
                }
                ConnectPhase::Recv { mut got } => {
                    if !read_some(&mut self.sock, &mut self.buf[..], &mut got, self.peer)? {
                        self.phase = ConnectPhase::Recv { got };
                        return Ok(None);
                    }
                    let theirs = Info::decode(&self.buf, self.peer)?;
                    let path = env.path(&theirs, self.peer)?;
                    let prep = self
                        .prep
                        .take()
                        .ok_or_else(|| Error::internal("verbs: set-up without queue pairs"))?;
                    prep.connect(env.lib, &path, &theirs.qps)?;
                    self.phase = ConnectPhase::Ready {
                        conn_parts: Box::new((prep, theirs)),
                    };
                }
                ConnectPhase::Ready { conn_parts } => {
                    let mut sent = 0;
                    if !write_some(&mut self.sock, &[READY], &mut sent, self.peer)? {
                        self.phase = ConnectPhase::Ready { conn_parts };
                        return Ok(None);
                    }
                    let (prep, theirs) = *conn_parts;
                    let sock = self
                        .sock
                        .try_clone()
                        .map_err(|e| Error::io("verbs: side-channel socket", e))?;
                    let peer = env.peer_name(self.peer, &theirs);
                    return Conn::new(env.lib, prep, theirs.ctrl, sock, peer, env.dev.max_msg)
                        .map(Some);
                }
                ConnectPhase::Done => {
                    return Err(Error::internal("verbs: set-up polled after its end"))
                }
            }
        }
    }
}

/// A non-blocking TCP connect to `addr`, in progress.
fn start_connect(addr: SocketAddr) -> Result<TcpStream> {
    let sock = TcpStream::from(
        socket::stream_socket(addr.ip()).map_err(|e| Error::io("verbs: creating a socket", e))?,
    );
    sock.set_nodelay(true)
        .map_err(|e| Error::io("verbs: TCP_NODELAY", e))?;
    socket::start_connect(sock.as_fd(), addr)
        .map_err(|e| remote_io(format!("verbs: connecting to {addr}"), e))?;
    Ok(sock)
}

/// Whether the connect has finished; its failure is an error.
fn connect_done(sock: &TcpStream, addr: SocketAddr) -> Result<bool> {
    match socket::connect_state(sock) {
        ConnectState::Connected => Ok(true),
        // A failed look is tried again at the next poll.
        ConnectState::InProgress | ConnectState::PollFailed(_) => Ok(false),
        ConnectState::Failed(e) | ConnectState::CheckFailed(e) => {
            Err(remote_io(format!("verbs: connecting to {addr}"), e))
        }
    }
}

/// Valid set-up messages for [`fuzz_setup`]: a queue pair info and a listen handle.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn fuzz_setup_seeds() -> Vec<Vec<u8>> {
    let info = Info {
        gid: [7; 16],
        lid: 9,
        mtu: 5,
        roce: true,
        ctrl: RemoteCtrl {
            eager_in: 0x1000,
            cts_in: 0x2000,
            rkey: 5,
        },
        qps: vec![QpEnd { qpn: 1, psn: 2 }],
    };
    let h = HandleInfo {
        addr: SocketAddr::from(([10, 0, 0, 1], 5)),
        gid: [1; 16],
        lid: 2,
        mtu: 3,
        roce: true,
    };
    let mut v = vec![info.encode().to_vec()];
    v.extend(encode_handle(&h).map(|c| c.as_bytes().to_vec()));
    v
}

/// Fuzz target (see `crate::fuzz`): bytes as a peer's queue pair info (decoded within
/// bounds or refused) and as a listen handle.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn fuzz_setup(b: &[u8]) {
    let peer = SocketAddr::from(([127, 0, 0, 1], 1));
    if let Ok(a) = <&[u8; INFO_BYTES]>::try_from(b) {
        if let Ok(i) = Info::decode(a, peer) {
            assert!(
                !i.qps.is_empty() && i.qps.len() <= MAX_QPS,
                "queue pairs out of bounds"
            );
        }
    }
    if let Ok(c) = ConnectHandle::new(b) {
        let _ = decode_handle(&c);
    }
}
