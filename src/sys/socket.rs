//! Non-blocking TCP sockets and connects, for the tcp backend and the verbs side channel,
//! and `setsockopt`.
//!
//! A connect is started with [`start_connect`] and finished by calling [`connect_state`]
//! until it says so; neither blocks. Errors come back as `io::Error`s (or in
//! [`ConnectState`]) for the caller to word and classify: the tcp backend and the verbs side
//! channel call a refused connect a remote failure by different rules.

use std::io;
use std::mem;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::poll;
use super::sockaddr::to_sockaddr;

/// A new TCP socket for addresses of `ip`'s family, non-blocking and close-on-exec.
pub(crate) fn stream_socket(ip: IpAddr) -> io::Result<OwnedFd> {
    let domain = match ip {
        IpAddr::V4(_) => libc::AF_INET,
        IpAddr::V6(_) => libc::AF_INET6,
    };
    // SAFETY: plain syscall.
    let raw = unsafe {
        libc::socket(
            domain,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: socket() returned a fresh fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Starts connecting the non-blocking socket `fd` to `addr`: `Ok` once the connect is made
/// or under way (EINPROGRESS), retried on EINTR. [`connect_state`] says when it is done.
pub(crate) fn start_connect(fd: BorrowedFd<'_>, addr: SocketAddr) -> io::Result<()> {
    let (ss, len) = to_sockaddr(addr);
    loop {
        // SAFETY: `ss` is a valid sockaddr of `len` bytes; `fd` is open.
        let rc = unsafe {
            libc::connect(
                fd.as_raw_fd(),
                (&ss as *const libc::sockaddr_storage).cast(),
                len,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINPROGRESS) => return Ok(()),
            Some(libc::EINTR) => continue,
            _ => return Err(err),
        }
    }
}

/// Where a connect started by [`start_connect`] stands.
#[derive(Debug)]
pub(crate) enum ConnectState {
    /// Not finished yet, or the look was interrupted (EINTR): ask again.
    InProgress,
    /// Connected: the socket is ready for data.
    Connected,
    /// The connect failed (the socket's `SO_ERROR`, e.g. ECONNREFUSED).
    Failed(io::Error),
    /// `poll` on the socket failed other than by EINTR.
    PollFailed(io::Error),
    /// Reading the socket's `SO_ERROR` failed.
    CheckFailed(io::Error),
}

/// Whether the connect on `fd` has finished, without waiting: `poll` for `POLLOUT`, then
/// the socket's `SO_ERROR`.
pub(crate) fn connect_state(fd: impl AsFd) -> ConnectState {
    let fd = fd.as_fd();
    match poll::revents(fd, libc::POLLOUT, std::time::Duration::ZERO) {
        Ok(0) => return ConnectState::InProgress,
        Ok(_) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINTR) => return ConnectState::InProgress,
        Err(e) => return ConnectState::PollFailed(e),
    }
    match so_error(fd) {
        Ok(0) => ConnectState::Connected,
        Ok(code) => ConnectState::Failed(io::Error::from_raw_os_error(code)),
        Err(e) => ConnectState::CheckFailed(e),
    }
}

/// The pending error of socket `fd` (`SO_ERROR`, which reading clears); 0 if none.
fn so_error(fd: BorrowedFd<'_>) -> io::Result<libc::c_int> {
    let mut v: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `v`/`len` describe a writable c_int; `fd` is open.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(v)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `setsockopt(fd, level, name)` with the bytes of `value`.
pub(crate) fn set_option(fd: impl AsFd, level: i32, name: i32, value: &[u8]) -> io::Result<()> {
    let len = libc::socklen_t::try_from(value.len())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `value` is valid for `len` bytes; the kernel copies at most that many.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_fd().as_raw_fd(),
            level,
            name,
            value.as_ptr().cast(),
            len,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `setsockopt` of an `int` option.
pub(crate) fn set_int_option(fd: impl AsFd, level: i32, name: i32, v: i32) -> io::Result<()> {
    set_option(fd, level, name, &v.to_ne_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::time::{Duration, Instant};

    /// Asks [`connect_state`] until it says something other than `InProgress`.
    fn settle(fd: &OwnedFd) -> ConnectState {
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            match connect_state(fd) {
                ConnectState::InProgress if Instant::now() < end => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                s => return s,
            }
        }
    }

    #[test]
    fn a_connect_to_a_listener_finishes() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let fd = stream_socket(addr.ip()).unwrap();
        start_connect(fd.as_fd(), addr).unwrap();
        assert!(matches!(settle(&fd), ConnectState::Connected));
    }

    #[test]
    fn a_refused_connect_is_its_socket_error() {
        // A port that was just free: nothing listens on it.
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let fd = stream_socket(addr.ip()).unwrap();
        match start_connect(fd.as_fd(), addr) {
            Err(e) => assert_eq!(e.raw_os_error(), Some(libc::ECONNREFUSED)),
            Ok(()) => match settle(&fd) {
                ConnectState::Failed(e) => assert_eq!(e.raw_os_error(), Some(libc::ECONNREFUSED)),
                s => panic!("{s:?}"),
            },
        }
    }
}
