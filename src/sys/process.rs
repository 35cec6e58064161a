//! Facts about other processes of this host, for the backends that reach them directly.

/// Whether process `pid` on this host has exited: it no longer exists, or it is a zombie
/// its parent has not reaped yet (which `kill(pid, 0)` alone would report as alive).
pub(crate) fn process_gone(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    if unsafe { libc::kill(pid, 0) } != 0 {
        return std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
    }
    // The state follows the last ')' of /proc/<pid>/stat (the name may contain one).
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].trim_start().chars().next());
    matches!(state, Some('Z') | Some('X'))
}
