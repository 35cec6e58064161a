//! A call stuck for good inside its transport. Some transports keep locks in memory shared
//! with their peers (libfabric 1.17's shm provider guards each process's region with a
//! spinlock its peers take): a peer killed while holding one leaves it held, and this rank's
//! next call into the provider spins on it forever, where no timeout and no error can reach
//! it. The channel thread watches for that: a call still running, its progress loop not
//! turning for [`WEDGED_AFTER`], and a rank that left the job without a goodbye. Then it
//! posts the cause for the job, prints it (logging may be off) and ends the process at once
//! with [`EXIT_WEDGED`]: nothing else can end the call, and ending the process is what a
//! launcher or a framework's watchdog would do with it an instant later.

use std::time::{Duration, Instant};

use crate::engine::News;
use crate::error::Error;

/// How long the progress loop of a running call may stand still, after a peer died, before
/// the call is taken as stuck. A round of the loop normally takes microseconds (at most
/// about a millisecond of waiting, or one chunk's reduction).
const WEDGED_AFTER: Duration = Duration::from_secs(2);

/// The exit status of a process ended because a call was stuck (EX_SOFTWARE).
pub(crate) const EXIT_WEDGED: i32 = 70;

/// What the watcher saw last.
pub(crate) struct Wedge {
    beats: u64,
    since: Instant,
}

impl Wedge {
    pub(crate) fn new() -> Wedge {
        Wedge {
            beats: 0,
            since: Instant::now(),
        }
    }

    /// The error of `rank`'s running call when it is stuck for good (see the module).
    pub(crate) fn check(&mut self, news: &News, rank: usize) -> Option<Error> {
        self.check_after(news, rank, WEDGED_AFTER)
    }

    fn check_after(&mut self, news: &News, rank: usize, after: Duration) -> Option<Error> {
        let shared = news.shared_locks()?;
        let beats = news.beats();
        let dead = news.departed().into_iter().find(|&r| r != rank);
        let calling = news.calling();
        let (Some(dead), Some(what)) = (dead, calling) else {
            self.beats = beats;
            self.since = Instant::now();
            return None;
        };
        if beats != self.beats {
            self.beats = beats;
            self.since = Instant::now();
            return None;
        }
        let stuck = self.since.elapsed();
        (stuck >= after).then(|| {
            Error::remote(format!(
                "rank {rank}: {what}: stuck for {:.1}s inside {shared}, after rank {dead} left \
                 the job (its process died or was killed): the dead process held a lock this \
                 rank needs, which nothing can release; this process ends now (exit status \
                 {EXIT_WEDGED})",
                stuck.as_secs_f64()
            ))
        })
    }
}

/// Prints `e` and ends the process without running exit handlers (libfabric's own would
/// spin on the same lock).
pub(crate) fn end_process(e: &Error) -> ! {
    tracing::error!(target: "oxccl::NET", "{e}");
    eprintln!("oxccl: {e}");
    // SAFETY: `_exit` ends the process at once; it touches no memory of this one.
    unsafe { libc::_exit(EXIT_WEDGED) }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOON: Duration = Duration::from_millis(20);

    fn stuck(news: &News, w: &mut Wedge) -> Option<Error> {
        w.check_after(news, 1, SOON);
        std::thread::sleep(SOON * 2);
        w.check_after(news, 1, SOON)
    }

    #[test]
    fn a_still_call_after_a_death_is_stuck_only_with_shared_locks() {
        let news = News::default();
        news.add_departed(2);
        news.set_calling(Some(&"allreduce #7"));
        assert!(stuck(&news, &mut Wedge::new()).is_none(), "no shared locks");
        news.set_shared_locks(Some("a provider"));
        news.set_calling(Some(&"allreduce #7"));
        let e = stuck(&news, &mut Wedge::new()).expect("stuck");
        let m = e.to_string();
        assert!(m.contains("rank 1: allreduce #7: stuck for"), "{m}");
        assert!(
            m.contains("inside a provider, after rank 2 left the job"),
            "{m}"
        );
    }

    #[test]
    fn a_turning_loop_an_idle_rank_or_no_death_is_not_stuck() {
        let news = News::default();
        news.set_shared_locks(Some("a provider"));
        news.set_calling(Some(&"allreduce #7"));
        assert!(stuck(&news, &mut Wedge::new()).is_none(), "nobody died");
        news.add_departed(2);
        let mut w = Wedge::new();
        w.check_after(&news, 1, SOON);
        std::thread::sleep(SOON * 2);
        news.beat();
        assert!(w.check_after(&news, 1, SOON).is_none(), "the loop turned");
        news.set_calling(None);
        assert!(stuck(&news, &mut Wedge::new()).is_none(), "no call runs");
        let alone = News::default();
        alone.set_shared_locks(Some("a provider"));
        alone.add_departed(1);
        alone.set_calling(Some(&"allreduce #7"));
        assert!(
            stuck(&alone, &mut Wedge::new()).is_none(),
            "only this rank departed"
        );
    }
}
