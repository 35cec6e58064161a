//! Waiting for descriptors: one with `poll`, many with `ppoll`.

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::time::Duration;

use crate::error::{Error, Result};

/// The events of `fd` among `events` (plus `POLLHUP`/`POLLERR`, which `poll` always
/// reports), waiting up to `timeout` (whole milliseconds; zero looks without waiting).
/// `Ok(0)`: none came in time. Every `poll` failure is returned, EINTR included, so that
/// each caller keeps its own reading of an interrupted look.
pub(crate) fn revents(
    fd: impl AsFd,
    events: libc::c_short,
    timeout: Duration,
) -> io::Result<libc::c_short> {
    let mut p = libc::pollfd {
        fd: fd.as_fd().as_raw_fd(),
        events,
        revents: 0,
    };
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: one valid pollfd that lives across the call; the borrowed fd stays open.
    let n = unsafe { libc::poll(&mut p, 1, ms) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(if n == 0 { 0 } else { p.revents })
}

/// Waits up to `timeout` (to the nanosecond) until one of `fds` has an event it asks for;
/// returns how many have one, each with its `revents` set. An interrupted wait (EINTR)
/// returns `Ok(0)` early, as if the time had passed; any other failure is a `System` error
/// "`what`: the OS error".
pub(crate) fn wait(fds: &mut [libc::pollfd], timeout: Duration, what: &str) -> Result<usize> {
    let ts = libc::timespec {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: timeout.subsec_nanos().into(),
    };
    // SAFETY: `fds` holds `len` initialised pollfds that live across the call; no signal
    // mask is passed.
    let rc = unsafe {
        libc::ppoll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            &ts,
            std::ptr::null(),
        )
    };
    if rc < 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EINTR) {
            return Ok(0);
        }
        return Err(Error::io(what, err));
    }
    Ok(rc as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    #[test]
    fn waits_see_readable_sockets_and_time_out_on_quiet_ones() {
        let (mut a, b) = UnixStream::pair().unwrap();
        assert_eq!(revents(&b, libc::POLLIN, Duration::ZERO).unwrap(), 0);
        let mut fds = [libc::pollfd {
            fd: b.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        assert_eq!(wait(&mut fds, Duration::from_millis(1), "t").unwrap(), 0);
        a.write_all(b"x").unwrap();
        assert_eq!(
            revents(&b, libc::POLLIN, Duration::from_secs(5)).unwrap(),
            libc::POLLIN
        );
        assert_eq!(wait(&mut fds, Duration::from_secs(5), "t").unwrap(), 1);
        assert_eq!(fds[0].revents, libc::POLLIN);
    }
}
