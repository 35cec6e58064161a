//! The backends the conformance suite runs on: a factory of two transports each, and, where
//! a listener's address can be reached from a test, a stranger's raw socket to it (the
//! address decoded from the handle as the backend's `listen.rs` encodes it).

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use oxccl::transport::fabric::{FabricConfig, FabricTransport};
use oxccl::transport::hybrid::{this_host, Hybrid};
use oxccl::transport::mem::{MemFabric, MemFaults, MemTransport};
use oxccl::transport::shm::ShmTransport;
use oxccl::transport::tcp::{TcpConfig, TcpTransport};
use oxccl::transport::ConnectHandle;

use super::{Greeting, Pair, Stranger};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Two endpoints of a fault-free mem fabric.
pub fn mem() -> Pair<MemTransport> {
    let fabric = MemFabric::new(7, MemFaults::default());
    Some((fabric.endpoint(), fabric.endpoint()))
}

fn tcp_on_loopback() -> TcpTransport {
    TcpTransport::new(TcpConfig {
        bind_ip: LOOPBACK,
        socket_buf_bytes: 0,
        congestion: Default::default(),
    })
    .expect("tcp transport")
}

/// Two tcp transports on loopback.
pub fn tcp() -> Pair<TcpTransport> {
    Some((tcp_on_loopback(), tcp_on_loopback()))
}

/// Two shm transports.
pub fn shm() -> Pair<ShmTransport> {
    Some((
        ShmTransport::new().expect("shm transport"),
        ShmTransport::new().expect("shm transport"),
    ))
}

/// Two fabric transports on libfabric's `provider`, or `None` where libfabric is absent.
fn fabric(provider: &str) -> Pair<FabricTransport> {
    if !crate::common::have_libfabric() {
        return None;
    }
    let mk = || {
        FabricTransport::new(FabricConfig {
            provider: Some(provider.into()),
            bind_ip: Some(LOOPBACK),
        })
        .expect("fabric transport")
    };
    Some((mk(), mk()))
}

/// Two fabric transports on libfabric's tcp provider.
pub fn fabric_tcp() -> Pair<FabricTransport> {
    fabric("tcp")
}

/// Two fabric transports on libfabric's shm provider.
pub fn fabric_shm() -> Pair<FabricTransport> {
    fabric("shm")
}

/// Two hybrid transports (tcp with shm beside it) with the host keys `x` and `y`.
fn hybrid_on(x: [u8; 16], y: [u8; 16]) -> Pair<Hybrid<TcpTransport>> {
    let mk = |host| Hybrid::new(tcp_on_loopback(), true, host).expect("hybrid transport");
    Some((mk(x), mk(y)))
}

/// Two hybrid transports of this host: their connections go through shm.
pub fn hybrid() -> Pair<Hybrid<TcpTransport>> {
    hybrid_on(this_host(), this_host())
}

/// Two hybrid transports playing two hosts: their connections go through tcp.
pub fn hybrid_net() -> Pair<Hybrid<TcpTransport>> {
    hybrid_on([1; 16], [2; 16])
}

/// A raw TCP connection to `addr`.
fn tcp_to(addr: SocketAddr) -> Box<dyn Write> {
    assert!(
        addr.ip().is_loopback(),
        "a stranger only connects on loopback"
    );
    Box::new(TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("stranger connects"))
}

/// An IPv4 address from a port (big endian) and four address bytes.
fn v4(port: &[u8], ip: &[u8]) -> SocketAddr {
    let ip = Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]);
    SocketAddr::from((ip, u16::from_be_bytes([port[0], port[1]])))
}

/// tcp: `b"oxtc"`, family 4, a zero byte, port, address (`tcp/listen.rs`). tcp has no
/// greeting of its own.
pub const TCP_STRANGER: (Stranger, Greeting) = (tcp_stranger, Greeting::LeftToEngine);

fn tcp_stranger(h: &ConnectHandle) -> Box<dyn Write> {
    let b = h.as_bytes();
    assert!(
        b.len() == 12 && &b[..4] == b"oxtc" && b[4] == 4,
        "an IPv4 tcp handle"
    );
    tcp_to(v4(&b[6..8], &b[8..12]))
}

/// shm: `oxshm1`, boot id (16 bytes), pid (4), then the abstract socket's name
/// (`shm/listen.rs`); a peer's first message is its hello with the regions.
pub const SHM_STRANGER: (Stranger, Greeting) = (shm_stranger, Greeting::Checked);

fn shm_stranger(h: &ConnectHandle) -> Box<dyn Write> {
    let b = h.as_bytes();
    assert!(b.len() > 26 && &b[..6] == b"oxshm1", "a shm handle");
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(&b[26..]).unwrap();
    Box::new(UnixStream::connect_addr(&addr).expect("stranger connects"))
}

/// hybrid: `oxhy`, host key (16 bytes), the network handle's length and bytes, then the
/// shm handle (`hybrid/mod.rs`): the stranger goes to the shm listener.
pub const HYBRID_STRANGER: (Stranger, Greeting) = (hybrid_stranger, Greeting::Checked);

fn hybrid_stranger(h: &ConnectHandle) -> Box<dyn Write> {
    let b = h.as_bytes();
    assert!(b.len() > 21 && &b[..4] == b"oxhy", "a hybrid handle");
    let shm = &b[21 + usize::from(b[20])..];
    shm_stranger(&ConnectHandle::new(shm).unwrap())
}

/// fabric on tcp: `F`, version, provider name's length and bytes, address length, then
/// the endpoint's `sockaddr_in` (`fabric/listen.rs`); libfabric's tcp provider speaks its
/// own protocol on that socket, and the backend's handshake follows it.
pub const FABRIC_TCP_STRANGER: (Stranger, Greeting) = (fabric_tcp_stranger, Greeting::Checked);

fn fabric_tcp_stranger(h: &ConnectHandle) -> Box<dyn Write> {
    let b = h.as_bytes();
    assert!(b.len() > 4 && b[0] == b'F', "a fabric handle");
    let pl = usize::from(b[2]);
    let provider = String::from_utf8_lossy(&b[3..3 + pl]);
    assert!(provider.starts_with("tcp"), "provider {provider}");
    let addr = &b[4 + pl..];
    assert!(
        addr.len() >= 8 && u16::from_ne_bytes([addr[0], addr[1]]) == libc::AF_INET as u16,
        "an IPv4 endpoint address"
    );
    tcp_to(v4(&addr[2..4], &addr[4..8]))
}

/// verbs: `b"oxib"`, version, family (4), TCP port of the side channel, address
/// (`verbs/listen.rs`); a peer's first message there is its set-up info.
pub const VERBS_STRANGER: (Stranger, Greeting) = (verbs_stranger, Greeting::Checked);

fn verbs_stranger(h: &ConnectHandle) -> Box<dyn Write> {
    let b = h.as_bytes();
    assert!(
        b.len() == 44 && &b[..4] == b"oxib" && b[5] == 4,
        "an IPv4 verbs handle"
    );
    tcp_to(v4(&b[6..8], &b[8..12]))
}
