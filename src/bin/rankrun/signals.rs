//! Signals: handlers that record what arrived and wake the supervising loop through a
//! self-pipe, sending signals to process groups, and naming signals in messages.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::time::Duration;

/// Write end of the self-pipe (-1 before [`install`]).
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);
/// Bit `n` set: signal `n` arrived since the last [`take`].
static PENDING: AtomicU64 = AtomicU64::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    // Only async-signal-safe work here: an atomic or and a write(2), errno kept.
    // SAFETY: __errno_location returns this thread's errno slot.
    let saved = unsafe { *libc::__errno_location() };
    if (0..64).contains(&sig) {
        PENDING.fetch_or(1 << sig, Ordering::SeqCst);
    }
    let fd = WAKE_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        let b = 0u8;
        // SAFETY: writing one byte from a valid buffer; a full pipe just fails with EAGAIN.
        unsafe { libc::write(fd, (&b as *const u8).cast(), 1) };
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = saved };
}

/// The read end of the self-pipe: the supervising loop sleeps on it.
pub struct Wakeup {
    rd: OwnedFd,
}

/// Installs handlers for `signals` (with `SA_RESTART`) and returns the self-pipe they wake.
/// Call once per process.
pub fn install(signals: &[libc::c_int]) -> io::Result<Wakeup> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 just returned these descriptors; each is owned once.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // The write end lives as long as the process: handlers may run at any time.
    WAKE_FD.store(wr.as_raw_fd(), Ordering::SeqCst);
    std::mem::forget(wr);
    for &sig in signals {
        // SAFETY: a zeroed sigaction is valid; the handler is an extern "C" fn(c_int).
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            if libc::sigaction(sig, &sa, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(Wakeup { rd })
}

/// The signals that arrived since the last call, as a bit set (bit n = signal n).
pub fn take() -> u64 {
    PENDING.swap(0, Ordering::SeqCst)
}

impl Wakeup {
    /// Sleeps until a signal arrives, `watch` (if any) is readable or hung up, or `timeout`
    /// passes. Returns whether `watch` is ready.
    pub fn wait(&self, timeout: Duration, watch: Option<RawFd>) -> bool {
        let mut fds = [
            libc::pollfd {
                fd: self.rd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: watch.unwrap_or(-1),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let ms = timeout.as_millis().clamp(0, 60_000) as libc::c_int;
        // SAFETY: `fds` is a valid array of two pollfds; a negative fd is ignored by poll.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
        if n > 0 && fds[0].revents != 0 {
            let mut buf = [0u8; 64];
            // SAFETY: draining the non-blocking pipe into a local buffer.
            while unsafe { libc::read(self.rd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) } > 0
            {
            }
        }
        n > 0 && fds[1].revents != 0
    }
}

/// Sends `sig` to process group `pgid`; a group that is already gone is not an error.
pub fn to_group(pgid: u32, sig: libc::c_int) {
    if let Ok(p) = libc::pid_t::try_from(pgid) {
        if p > 0 {
            // SAFETY: kill(2) with a negative pid signals that process group only.
            unsafe { libc::kill(-p, sig) };
        }
    }
}

/// Restores the default action of `sig` and sends it to this process: how a wrapper dies
/// "by the same signal" as the process it wrapped.
pub fn die_by(sig: libc::c_int) -> ! {
    // SAFETY: resetting a disposition and signalling ourselves are plain syscalls.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::kill(libc::getpid(), sig);
    }
    // A signal whose default is to continue (or that was somehow not delivered).
    std::process::exit(128 + sig.clamp(0, 127))
}

/// `9 (SIGKILL)`.
pub fn describe(sig: i32) -> String {
    let name = match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGSYS => "SIGSYS",
        _ => return format!("{sig}"),
    };
    format!("{sig} ({name})")
}
