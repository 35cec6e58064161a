//! Listening, connecting and accepting: socket creation, socket options, and the connect
//! handle's byte format.
//!
//! Owns every syscall that sets up a socket (the congestion control through
//! `congestion.rs`); once a data socket exists it is handed to `conn.rs` and nothing here
//! touches it again.
//!
//! Handle format (12 bytes for IPv4, 28 for IPv6, far below the 128-byte limit):
//! `b"oxtc"`, family (4 or 6), a zero byte, port (big endian), address bytes, and for IPv6
//! the scope id (little endian).

use std::io;
use std::mem;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use super::{os_error, TcpConfig};
use crate::error::{Error, Result};
use crate::sys::sockaddr::{from_sockaddr, to_sockaddr};
use crate::sys::socket::{self, ConnectState};
use crate::transport::ConnectHandle;

const MAGIC: [u8; 4] = *b"oxtc";
const FAMILY_V4: u8 = 4;
const FAMILY_V6: u8 = 6;
const V4_LEN: usize = 12;
const V6_LEN: usize = 28;
const BACKLOG: libc::c_int = 1024;

/// The handle a peer needs to reach the listener at `addr`.
pub(super) fn encode_handle(addr: SocketAddr) -> Result<ConnectHandle> {
    let mut b = [0u8; V6_LEN];
    b[..4].copy_from_slice(&MAGIC);
    b[6..8].copy_from_slice(&addr.port().to_be_bytes());
    let len = match addr {
        SocketAddr::V4(a) => {
            b[4] = FAMILY_V4;
            b[8..12].copy_from_slice(&a.ip().octets());
            V4_LEN
        }
        SocketAddr::V6(a) => {
            b[4] = FAMILY_V6;
            b[8..24].copy_from_slice(&a.ip().octets());
            b[24..28].copy_from_slice(&a.scope_id().to_le_bytes());
            V6_LEN
        }
    };
    ConnectHandle::new(&b[..len])
}

/// The listener address inside a handle made by [`encode_handle`].
pub(super) fn decode_handle(handle: &ConnectHandle) -> Result<SocketAddr> {
    let b = handle.as_bytes();
    let bad = || {
        Error::invalid_argument(format!(
            "tcp: connect handle of {} bytes is not a tcp handle (wrong transport on a peer?)",
            b.len()
        ))
    };
    if b.len() < V4_LEN || b[..4] != MAGIC {
        return Err(bad());
    }
    let port = u16::from_be_bytes([b[6], b[7]]);
    match (b[4], b.len()) {
        (FAMILY_V4, V4_LEN) => {
            let ip = Ipv4Addr::new(b[8], b[9], b[10], b[11]);
            Ok(SocketAddr::V4(SocketAddrV4::new(ip, port)))
        }
        (FAMILY_V6, V6_LEN) => {
            let mut o = [0u8; 16];
            o.copy_from_slice(&b[8..24]);
            let scope = u32::from_le_bytes([b[24], b[25], b[26], b[27]]);
            Ok(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(o),
                port,
                0,
                scope,
            )))
        }
        _ => Err(bad()),
    }
}

/// A bound, listening, non-blocking socket on `ip` with an OS-chosen port.
pub(super) fn listen_on(cfg: &TcpConfig) -> Result<(OwnedFd, SocketAddr)> {
    let ip = cfg.bind_ip;
    let fd = new_socket(ip)?;
    // Accepted sockets inherit buffer sizes from the listener; setting them before listen()
    // lets the window scale be negotiated for the full size.
    set_buffers(&fd, cfg.socket_buf_bytes)?;
    let (ss, len) = to_sockaddr(SocketAddr::new(ip, 0));
    // SAFETY: `ss` is a valid sockaddr of `len` bytes.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&ss as *const libc::sockaddr_storage).cast(),
            len,
        )
    };
    if rc != 0 {
        return Err(os_error(
            format!("tcp: binding {ip}:0"),
            io::Error::last_os_error(),
        ));
    }
    // SAFETY: plain syscall on an owned fd.
    if unsafe { libc::listen(fd.as_raw_fd(), BACKLOG) } != 0 {
        return Err(os_error(
            format!("tcp: listening on {ip}"),
            io::Error::last_os_error(),
        ));
    }
    let addr = local_addr(&fd).map_err(|e| {
        os_error(
            format!("tcp: reading the address of the listener on {ip}"),
            e,
        )
    })?;
    Ok((fd, addr))
}

/// Starts a non-blocking connect to `addr`; completion is checked by [`connect_done`].
pub(super) fn start_connect(addr: SocketAddr, cfg: &TcpConfig) -> Result<OwnedFd> {
    let fd = new_socket(addr.ip())?;
    set_buffers(&fd, cfg.socket_buf_bytes)?;
    set_nodelay(&fd)?;
    cfg.congestion.apply(&fd, cfg.bind_ip, addr.ip())?;
    socket::start_connect(fd.as_fd(), addr)
        .map_err(|e| os_error(format!("tcp: connecting to {addr}"), e))?;
    Ok(fd)
}

/// Whether the connect started by [`start_connect`] has finished; its failure is an error.
pub(super) fn connect_done(fd: &OwnedFd, addr: SocketAddr) -> Result<bool> {
    match socket::connect_state(fd) {
        ConnectState::InProgress => Ok(false),
        ConnectState::Connected => Ok(true),
        ConnectState::Failed(e) => Err(os_error(format!("tcp: connecting to {addr}"), e)),
        ConnectState::PollFailed(e) => Err(os_error(
            format!("tcp: polling the connection to {addr}"),
            e,
        )),
        ConnectState::CheckFailed(e) => Err(os_error(
            format!("tcp: checking the connection to {addr}"),
            e,
        )),
    }
}

/// One pending connection from `listener`, made ready for data, or `None` if none waits.
pub(super) fn accept_one(
    listener: &OwnedFd,
    cfg: &TcpConfig,
) -> Result<Option<(OwnedFd, SocketAddr)>> {
    loop {
        // SAFETY: zeroed sockaddr_storage is a valid out-buffer of the given length.
        let mut ss: libc::sockaddr_storage = unsafe { mem::zeroed() };
        let mut len = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        // SAFETY: `ss`/`len` describe a writable buffer; the fd is owned.
        let raw = unsafe {
            libc::accept4(
                listener.as_raw_fd(),
                (&mut ss as *mut libc::sockaddr_storage).cast(),
                &mut len,
                libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            )
        };
        if raw < 0 {
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EINTR) => return Ok(None),
                // The peer gave up before we accepted: not this listener's failure.
                Some(libc::ECONNABORTED) => continue,
                _ => return Err(os_error("tcp: accepting a connection", err)),
            }
        }
        // SAFETY: accept4 returned a fresh fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let peer = from_sockaddr(&ss).unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
        set_nodelay(&fd)?;
        set_buffers(&fd, cfg.socket_buf_bytes)?;
        cfg.congestion.apply(&fd, cfg.bind_ip, peer.ip())?;
        return Ok(Some((fd, peer)));
    }
}

fn new_socket(ip: IpAddr) -> Result<OwnedFd> {
    socket::stream_socket(ip).map_err(|e| os_error("tcp: creating a socket", e))
}

fn set_nodelay(fd: &OwnedFd) -> Result<()> {
    socket::set_int_option(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)
        .map_err(|e| os_error("tcp: setting TCP_NODELAY", e))
}

/// SO_SNDBUF/SO_RCVBUF; 0 keeps the kernel's auto-tuning.
fn set_buffers(fd: &OwnedFd, bytes: usize) -> Result<()> {
    if bytes == 0 {
        return Ok(());
    }
    let v = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    for (name, what) in [
        (libc::SO_SNDBUF, "SO_SNDBUF"),
        (libc::SO_RCVBUF, "SO_RCVBUF"),
    ] {
        socket::set_int_option(fd, libc::SOL_SOCKET, name, v)
            .map_err(|e| os_error(format!("tcp: setting {what} to {bytes} bytes"), e))?;
    }
    Ok(())
}

fn local_addr(fd: &OwnedFd) -> io::Result<SocketAddr> {
    // SAFETY: zeroed sockaddr_storage is a valid out-buffer of the given length.
    let mut ss: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `ss`/`len` describe a writable buffer.
    let rc = unsafe {
        libc::getsockname(
            fd.as_raw_fd(),
            (&mut ss as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    from_sockaddr(&ss).ok_or_else(|| io::Error::other("unexpected address family"))
}
