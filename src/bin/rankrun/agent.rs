//! `rankrun --agent`: the remote side of a rank started through `--rsh`.
//!
//! Reads the rank's program, arguments, directory and environment from stdin (see
//! `payload`), starts the program with stdin from /dev/null, forwards SIGTERM, SIGINT,
//! SIGHUP and SIGQUIT to it, stops it (SIGTERM, then SIGKILL after the grace period) when
//! its stdin from rankrun closes, and ends the way the program ended: the same exit status,
//! or death by the same signal.

use std::ffi::OsString;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::payload::{Payload, MAX_BYTES};
use crate::signals::{self, Wakeup};

/// How long rankrun has to send the payload once the agent runs.
const PAYLOAD_TIMEOUT: Duration = Duration::from_secs(60);
/// After SIGKILL, how long to wait for the program before giving up on it.
const KILL_WAIT: Duration = Duration::from_secs(2);
/// Longest sleep between checks of the program.
const TICK: Duration = Duration::from_millis(200);

const FORWARDED: [libc::c_int; 4] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT];

fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

fn fail(what: &str) -> ! {
    eprintln!("rankrun agent on {}: {what}", host());
    std::process::exit(127)
}

/// Reads stdin until the payload's `end` line, within [`PAYLOAD_TIMEOUT`].
fn read_payload(wake: &Wakeup) -> Result<Payload, String> {
    let deadline = Instant::now() + PAYLOAD_TIMEOUT;
    let mut buf = Vec::new();
    loop {
        if buf.ends_with(b"\nend\n") {
            let text = String::from_utf8(buf).map_err(|_| "the payload is not text".to_string())?;
            return Payload::decode(&text);
        }
        if buf.len() > MAX_BYTES {
            return Err("the payload is too large".into());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "no launch description on stdin within {PAYLOAD_TIMEOUT:?} (this command is \
                 started by rankrun, not by hand)"
            ));
        }
        if !wake.wait(left.min(TICK), Some(0)) {
            if signals::take() & FORWARDED.iter().fold(0, |m, &s| m | 1 << s) != 0 {
                return Err("stopped by a signal before the rank started".into());
            }
            continue;
        }
        // Nothing but the payload is ever written to the lifeline, so reading past `end`
        // cannot swallow anything.
        let mut b = [0u8; 4096];
        // SAFETY: reading into a local buffer from fd 0.
        let n = unsafe { libc::read(0, b.as_mut_ptr().cast(), b.len()) };
        match n {
            0 => return Err("stdin closed before the launch description was complete".into()),
            n if n > 0 => buf.extend_from_slice(&b[..n as usize]),
            _ => {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted
                    && e.kind() != std::io::ErrorKind::WouldBlock
                {
                    return Err(format!("reading stdin: {e}"));
                }
            }
        }
    }
}

/// Runs the agent; never returns.
pub fn run() -> ! {
    let mut sigs = FORWARDED.to_vec();
    sigs.push(libc::SIGCHLD);
    let wake = signals::install(&sigs).unwrap_or_else(|e| fail(&format!("signal setup: {e}")));
    let p = read_payload(&wake).unwrap_or_else(|e| fail(&e));
    let rank = p
        .env
        .iter()
        .find(|(k, _)| k == oxccl::launch::vars::RANK)
        .map(|(_, v)| v.to_string_lossy().into_owned())
        .unwrap_or_else(|| "?".into());
    if !p.cwd.is_empty() {
        if let Err(e) = std::env::set_current_dir(&p.cwd) {
            eprintln!(
                "rankrun agent on {}: rank {rank}: staying in {} ({}: {e})",
                host(),
                std::env::current_dir()
                    .map(|d| d.display().to_string())
                    .unwrap_or_default(),
                std::path::Path::new(&p.cwd).display()
            );
        }
    }
    let mut cmd = Command::new(&p.argv[0]);
    cmd.args(&p.argv[1..])
        .envs(p.env.iter().cloned())
        .stdin(Stdio::null())
        .process_group(0);
    // SAFETY: getpid is async-signal-safe and runs before the fork.
    let me = unsafe { libc::getpid() };
    // SAFETY: only async-signal-safe syscalls in the child before exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != me {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    let prog: OsString = p.argv[0].clone();
    let mut child = cmd.spawn().unwrap_or_else(|e| {
        fail(&format!(
            "rank {rank}: cannot start '{}': {e}",
            prog.to_string_lossy()
        ))
    });
    let pgid = child.id();
    let mut lifeline_open = true;
    let mut kill_at: Option<Instant> = None;
    let mut give_up_at: Option<Instant> = None;
    loop {
        crate::monitor::release_if_killed(child.id());
        match child.try_wait() {
            Ok(Some(st)) => match (st.code(), st.signal()) {
                (Some(c), _) => std::process::exit(c),
                (None, Some(s)) => signals::die_by(s),
                _ => std::process::exit(1),
            },
            Ok(None) => {}
            Err(e) => fail(&format!("rank {rank}: waiting for the program: {e}")),
        }
        let now = Instant::now();
        if give_up_at.is_some_and(|t| now >= t) {
            fail(&format!("rank {rank}: the program survived SIGKILL"));
        }
        if kill_at.is_some_and(|t| now >= t) {
            signals::to_group(pgid, libc::SIGKILL);
            kill_at = None;
            give_up_at = Some(now + KILL_WAIT);
        }
        let next = [kill_at, give_up_at]
            .into_iter()
            .flatten()
            .map(|t| t.saturating_duration_since(now))
            .fold(TICK, Duration::min);
        let watch = lifeline_open.then_some(0);
        if wake.wait(next, watch) {
            let mut b = [0u8; 256];
            // SAFETY: reading into a local buffer from fd 0.
            let n = unsafe { libc::read(0, b.as_mut_ptr().cast(), b.len()) };
            let again = n < 0
                && matches!(
                    std::io::Error::last_os_error().kind(),
                    std::io::ErrorKind::Interrupted | std::io::ErrorKind::WouldBlock
                );
            if n == 0 || (n < 0 && !again) {
                // rankrun (or the ssh session) is gone: stop the rank.
                lifeline_open = false;
                signals::to_group(pgid, libc::SIGTERM);
                if kill_at.is_none() && give_up_at.is_none() {
                    kill_at = Instant::now().checked_add(p.grace);
                }
            }
        }
        let got = signals::take();
        for s in FORWARDED {
            if got & (1 << s) != 0 {
                signals::to_group(pgid, s);
            }
        }
    }
}
