//! How a call waits when nothing moves: spin, yield, or sleep in the transport; when to say
//! it is stalled; when to give up. Time comes from a [`Clock`], the wall's in the engine and
//! a virtual one in the simulator, so timeouts are tested without waiting for them.

use std::time::{Duration, Instant};

/// How long a call makes no progress before its rank says what it is stalled in (the
/// engine's `News`). Ranks stalled in different calls then find out within a few store
/// round trips, so every rank ends a mismatch no message reveals in about 0.45 s; a
/// legitimately long wait costs one store write.
pub const STALL_NOTICE: Duration = Duration::from_millis(400);

/// Shortest spin before an idle rank with a core of its own sleeps. Through torch on 2
/// ranks over shm, 8-byte allreduces took 80-200 us when the spin's 2000 polls (about 60 us
/// of shared-memory polls) ended before a peer a little late, and each paid the sleep and
/// the wake-up; 16 us with a longer spin.
pub const SPIN_MIN: Duration = Duration::from_micros(500);

/// Longest single sleep in the transport: the loop looks again at least this often.
const NAP: Duration = Duration::from_millis(1);

/// A source of time.
pub trait Clock {
    /// Now.
    fn now(&self) -> Instant;
}

/// The wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct WallClock;

impl Clock for WallClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that moves only when told to (the simulator's).
#[derive(Debug, Clone, Copy)]
pub struct VirtualClock {
    start: Instant,
    elapsed: Duration,
}

impl Default for VirtualClock {
    fn default() -> Self {
        VirtualClock {
            start: Instant::now(),
            elapsed: Duration::ZERO,
        }
    }
}

impl VirtualClock {
    /// Moves time forward by `by`.
    pub fn advance(&mut self, by: Duration) {
        self.elapsed += by;
    }

    /// Time since the clock was made.
    pub fn elapsed(&self) -> Duration {
        self.elapsed
    }
}

impl Clock for VirtualClock {
    fn now(&self) -> Instant {
        self.start + self.elapsed
    }
}

/// The waiting rules of a rank (from the engine's configuration).
#[derive(Debug, Clone, Copy)]
pub struct PaceConfig {
    /// Polls without progress before sleeping.
    pub spin: u32,
    /// Whether each of those polls first yields the CPU.
    pub yield_when_idle: bool,
    /// Longest time without progress before the call fails.
    pub timeout: Duration,
}

/// What to do after a round in which nothing moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idle {
    /// Poll again at once (`hint`: with a spin-loop hint first).
    Spin {
        /// Whether to give the CPU a spin-loop hint.
        hint: bool,
    },
    /// Yield the CPU, then poll again.
    Yield,
    /// Look at the peers' liveness and the job's news, then sleep in the transport.
    Wait {
        /// Time since anything last moved.
        waited: Duration,
        /// How long to sleep at most.
        sleep: Duration,
        /// Whether this is the first wait past [`STALL_NOTICE`]: say what the call is in.
        notice_stall: bool,
    },
    /// Nothing moved for the whole timeout: the call fails.
    TimedOut {
        /// Time since anything last moved.
        waited: Duration,
    },
}

/// One call's idle state. The clock is read only once the count of polls ran out (reading
/// it on every round cost small calls 6% of their time).
#[derive(Debug, Default)]
pub struct Pace {
    idle: u32,
    /// When the current idle streak's count of polls ran out.
    spin_from: Option<Instant>,
    /// Since when nothing moved: taken when the idle path first needs it, so a wait is
    /// timed from the end of the spin that precedes it.
    since: Option<Instant>,
    stalled: bool,
}

impl Pace {
    /// Something moved. Returns whether the call had said it was stalled (the driver then
    /// withdraws the notice).
    pub fn moved(&mut self) -> bool {
        self.idle = 0;
        self.spin_from = None;
        self.since = None;
        std::mem::take(&mut self.stalled)
    }

    /// Nothing moved this round: what to do. A rank with a core of its own spins
    /// [`SPIN_MIN`] past its count of polls (polls of shared memory take tens of
    /// nanoseconds, so the count alone would sleep far sooner than over a socket); ranks
    /// that yield, or told not to spin, wait when the count says.
    pub fn idle(&mut self, cfg: &PaceConfig, clock: &impl Clock) -> Idle {
        self.idle = self.idle.saturating_add(1);
        let spun =
            self.idle > cfg.spin && (cfg.spin == 0 || cfg.yield_when_idle || self.spun_long(clock));
        if !spun {
            return if cfg.yield_when_idle {
                Idle::Yield
            } else {
                Idle::Spin {
                    hint: self.idle % 64 == 0,
                }
            };
        }
        let now = clock.now();
        let waited = now - *self.since.get_or_insert(now);
        if waited >= cfg.timeout {
            return Idle::TimedOut { waited };
        }
        let notice_stall = waited >= STALL_NOTICE && !self.stalled;
        self.stalled |= notice_stall;
        Idle::Wait {
            waited,
            sleep: NAP.min(cfg.timeout - waited),
            notice_stall,
        }
    }

    /// Whether the spin past the count of polls lasted [`SPIN_MIN`].
    fn spun_long(&mut self, clock: &impl Clock) -> bool {
        let now = clock.now();
        now - *self.spin_from.get_or_insert(now) >= SPIN_MIN
    }
}
