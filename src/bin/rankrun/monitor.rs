//! Supervising a running job: reaping ranks, reporting the first failure by rank and cause,
//! stopping the others (linger, SIGTERM, SIGKILL), forwarding SIGINT/SIGTERM, and
//! `--timeout`. Every phase has a deadline, so supervision ends even if a rank will not.

use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ChildStdin, ExitStatus};
use std::time::{Duration, Instant};

use oxccl::bootstrap::NewsItem;

use crate::signals::{self, describe, Wakeup};

/// After SIGKILL, how long to wait for ranks before leaving them behind.
const KILL_WAIT: Duration = Duration::from_secs(2);
/// Longest sleep between checks (the self-pipe wakes the loop sooner on SIGCHLD).
const TICK: Duration = Duration::from_millis(250);
/// Ranks that fail within this long of the first failure failed together: a peer that
/// notices a SIGKILLed rank's closed sockets may exit before the killed rank is reaped.
const SETTLE: Duration = Duration::from_millis(500);

/// Why the job failed: a rank's end, or rankrun's own reason (a start failure, a signal,
/// the timeout).
struct Failure {
    at: Instant,
    by_signal: bool,
    from_rank: bool,
    code: u8,
    line: String,
}

fn job_failed(failures: &mut Vec<Failure>, code: u8, line: String) {
    failures.push(Failure {
        at: Instant::now(),
        by_signal: false,
        from_rank: false,
        code,
        line,
    })
}

/// The failure to report as the job's: the first one, except that among ranks failing
/// together a death by signal is the likelier cause.
fn pick(failures: &[Failure]) -> Option<&Failure> {
    let first = failures.first()?;
    if !first.from_rank {
        return Some(first);
    }
    failures
        .iter()
        .take_while(|f| f.from_rank && f.at <= first.at + SETTLE)
        .find(|f| f.by_signal)
        .or(Some(first))
}

/// One running (or finished) rank.
pub struct Rank {
    pub rank: usize,
    pub host: String,
    pub child: Child,
    /// Remote ranks: the agent's stdin, dropped to make the agent stop the rank.
    pub lifeline: Option<ChildStdin>,
    pub status: Option<ExitStatus>,
    /// rankrun signalled this rank, so its death is not a failure of its own.
    pub signalled: bool,
}

impl Rank {
    fn who(&self) -> String {
        format!(
            "rank {} (pid {} on {})",
            self.rank,
            self.child.id(),
            self.host
        )
    }
}

/// The time limits of supervision.
pub struct Limits {
    pub timeout: Option<Duration>,
    pub grace: Duration,
    pub linger: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    /// A rank failed: the others may end on their own until then.
    Linger(Instant),
    /// SIGTERM (or the forwarded signal) sent: SIGKILL at this time.
    Term(Instant, libc::c_int),
    /// SIGKILL sent: give up waiting at this time.
    Kill(Instant),
}

/// How an exit status reads in a report, and the exit status rankrun passes on for it.
pub fn describe_status(st: ExitStatus) -> (String, u8) {
    match (st.code(), st.signal()) {
        (Some(c), _) => (format!("exited with status {c}"), c.clamp(0, 255) as u8),
        (None, Some(s)) => (
            format!(
                "was killed by signal {}{}",
                describe(s),
                if st.core_dumped() {
                    ", core dumped"
                } else {
                    ""
                }
            ),
            (128 + s.clamp(0, 127)) as u8,
        ),
        _ => (format!("ended with {st}"), 1),
    }
}

fn send(ranks: &mut [Rank], sig: libc::c_int) {
    for r in ranks.iter_mut().filter(|r| r.status.is_none()) {
        r.signalled = true;
        signals::to_group(r.child.id(), sig);
        if sig != libc::SIGINT {
            // A remote agent whose stdin closes stops its rank, even when the launcher
            // in between (ssh) swallowed the signal.
            r.lifeline = None;
        }
    }
}

fn live(ranks: &[Rank]) -> usize {
    ranks.iter().filter(|r| r.status.is_none()).count()
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// Supervises until every rank has ended (or would not die). `cause` is a failure that
/// already happened while starting the job: then the started ranks are stopped at once.
/// Returns rankrun's exit status.
pub fn supervise(
    ranks: &mut [Rank],
    wake: &Wakeup,
    lim: &Limits,
    start: Instant,
    cause: Option<(u8, String)>,
    news: &dyn Fn() -> Vec<NewsItem>,
) -> u8 {
    let mut phase = Phase::Running;
    let mut failures: Vec<Failure> = Vec::new();
    if let Some((code, line)) = cause {
        job_failed(&mut failures, code, line);
    }
    if !failures.is_empty() && live(ranks) > 0 {
        eprintln!("rankrun: stopping the {} started rank(s)", live(ranks));
        send(ranks, libc::SIGTERM);
        phase = Phase::Term(Instant::now() + lim.grace, libc::SIGTERM);
    }
    loop {
        let mut failed = Vec::new();
        for (i, r) in ranks.iter_mut().enumerate() {
            if r.status.is_some() {
                continue;
            }
            if r.lifeline.is_none() {
                release_if_killed(r.child.id());
            }
            match r.child.try_wait() {
                Ok(Some(st)) => {
                    r.status = Some(st);
                    r.lifeline = None;
                    if !st.success() && !r.signalled {
                        failed.push(i);
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    eprintln!("rankrun: {}: cannot wait for it: {e}", r.who());
                    r.status = Some(ExitStatus::from_raw(1 << 8));
                    failed.push(i);
                }
            }
        }
        // Of ranks reaped together, a death by signal is the likelier cause.
        failed.sort_by_key(|&i| {
            let st = ranks[i].status.map(|s| s.signal().is_none());
            (st, ranks[i].rank)
        });
        for i in failed {
            let r = &ranks[i];
            let st = r.status.unwrap_or_default();
            let (text, code) = describe_status(st);
            let line = format!("{} {text}", r.who());
            eprintln!("rankrun: {line}");
            failures.push(Failure {
                at: Instant::now(),
                by_signal: st.signal().is_some(),
                from_rank: true,
                code,
                line,
            });
        }
        let n_live = live(ranks);
        if n_live == 0 {
            break;
        }
        let now = Instant::now();
        let got = signals::take();
        if let Some(s) = [libc::SIGINT, libc::SIGTERM]
            .into_iter()
            .find(|&s| got & (1 << s) != 0)
        {
            match phase {
                Phase::Running | Phase::Linger(_) => {
                    eprintln!(
                        "rankrun: got signal {}: forwarding it to {n_live} rank{}",
                        describe(s),
                        plural(n_live)
                    );
                    send(ranks, s);
                    phase = Phase::Term(now + lim.grace, s);
                    let line = format!("rankrun got signal {}", describe(s));
                    job_failed(&mut failures, 128 + s as u8, line);
                }
                Phase::Term(..) => {
                    eprintln!(
                        "rankrun: got signal {} again: killing {n_live} rank{}",
                        describe(s),
                        plural(n_live)
                    );
                    send(ranks, libc::SIGKILL);
                    phase = Phase::Kill(now + KILL_WAIT);
                }
                Phase::Kill(_) => {}
            }
        }
        if phase == Phase::Running {
            if !failures.is_empty() {
                report_stopped(ranks);
                eprintln!(
                    "rankrun: stopping the other {n_live} rank{} (SIGTERM unless they end within \
                     {:?}, SIGKILL {:?} later)",
                    plural(n_live),
                    lim.linger,
                    lim.grace
                );
                phase = Phase::Linger(now + lim.linger);
            } else if let Some(t) = lim.timeout.filter(|&t| now.duration_since(start) >= t) {
                let line = format!("the job ran past --timeout {t:?}");
                eprintln!(
                    "rankrun: {line}: stopping {n_live} rank{} (SIGTERM, SIGKILL {:?} later)",
                    plural(n_live),
                    lim.grace
                );
                job_failed(&mut failures, 124, line);
                send(ranks, libc::SIGTERM);
                phase = Phase::Term(now + lim.grace, libc::SIGTERM);
            }
        }
        match phase {
            Phase::Linger(t) if now >= t => {
                send(ranks, libc::SIGTERM);
                phase = Phase::Term(now + lim.grace, libc::SIGTERM);
            }
            Phase::Term(t, sig) if now >= t => {
                eprintln!(
                    "rankrun: {n_live} rank{} still running {:?} after signal {}: sending SIGKILL",
                    plural(n_live),
                    lim.grace,
                    describe(sig)
                );
                send(ranks, libc::SIGKILL);
                phase = Phase::Kill(now + KILL_WAIT);
            }
            Phase::Kill(t) if now >= t => {
                let left: Vec<String> = ranks
                    .iter()
                    .filter(|r| r.status.is_none())
                    .map(Rank::who)
                    .collect();
                eprintln!(
                    "rankrun: {} did not end after SIGKILL; leaving {}",
                    left.join(", "),
                    if left.len() == 1 { "it" } else { "them" }
                );
                break;
            }
            _ => {}
        }
        let deadline = match phase {
            Phase::Running => lim.timeout.map(|t| start + t),
            Phase::Linger(t) | Phase::Term(t, _) | Phase::Kill(t) => Some(t),
        };
        let sleep = deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
            .map_or(TICK, |d| d.min(TICK));
        wake.wait(sleep, None);
    }
    match pick(&failures) {
        Some(f) => {
            match first_cause(&news()).filter(|_| f.from_rank && !f.by_signal) {
                // A rank that exited with an error often only echoes another's failure:
                // the job's first posted cause says what went wrong.
                Some((r, e)) => eprintln!(
                    "rankrun: job failed: {e} (reported first by rank {r}; then {})",
                    f.line
                ),
                None => eprintln!("rankrun: job failed: {}", f.line),
            }
            f.code.max(1)
        }
        None => 0,
    }
}

/// The first failure a rank posted to the job's news.
fn first_cause(news: &[NewsItem]) -> Option<(usize, oxccl::Error)> {
    news.iter().find_map(|i| match i {
        NewsItem::Cause(r, e) => Some((*r, e.clone())),
        _ => None,
    })
}

/// Says which local ranks are stopped (SIGSTOP, a debugger): they cannot end by themselves,
/// and their peers' timeouts are about them.
fn report_stopped(ranks: &[Rank]) {
    for r in ranks
        .iter()
        .filter(|r| r.status.is_none() && r.lifeline.is_none())
    {
        if is_stopped(r.child.id()) {
            eprintln!(
                "rankrun: {} is stopped (SIGSTOP or a debugger): it made no progress",
                r.who()
            );
        }
    }
}

/// Whether process `pid` is stopped (state `T` or `t` in `/proc/<pid>/stat`).
fn is_stopped(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // `pid (comm) S ...`: the state follows the last ')' (comm may contain anything).
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .is_some_and(|s| s == "T" || s == "t")
}

/// If the child `pid` was killed by a signal and is not reaped yet, removes what it could
/// not clean up itself: libfabric shm regions named after its pid. Looked at with `WNOWAIT`,
/// so the pid stays taken (and cannot name another process's files) until `try_wait`.
pub fn release_if_killed(pid: u32) {
    // SAFETY: waitid writes `info` only; WNOWAIT leaves the child waitable.
    let killed = unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let rc = libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        );
        rc == 0
            && info.si_pid() != 0
            && (info.si_code == libc::CLD_KILLED || info.si_code == libc::CLD_DUMPED)
    };
    if killed {
        oxccl::transport::fabric::remove_shm_regions_of(pid);
    }
}
