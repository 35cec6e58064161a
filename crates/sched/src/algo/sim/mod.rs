//! The simulator: every rank's schedule run by the engine's own call state machine
//! ([`super::machine`]) over simulated connections, in a random order drawn from a seed,
//! on a virtual clock: the proof that a schedule is right before any socket is involved,
//! and a test of the machine itself.
//!
//! Each event is one thing a rank or the network does: a rank applies a ready local step,
//! tests its oldest request on a connection, or posts the next step the machine allows;
//! the network delivers a posted send (reading the sender's bytes then, not when posted)
//! or hands a delivered message to a posted receive. Writing bytes under a send still in
//! flight is reported as a hazard, so a missing dependency shows up even when the data
//! happens to be right. Failures can be injected ([`Fault`]): a rank that crashes closes
//! its connections, a frozen one stops answering; the others must each end with an error
//! (from their peers' closed connections, or from the machine's timeout on the virtual
//! clock), never hang. A run that exceeds its bound on events is a livelock.

mod net;
mod step;

use std::time::Duration;

use super::machine::{waiting_for, Idle, Machine, Pace, PaceConfig, VirtualClock};
use super::{Action, BufId, Schedule, Span};
use crate::reduce::{DataType, ReduceOp};
use net::{Conn, Net};

/// One rank's memory and schedule. The three buffers live in one arena so that in-place
/// calls (send and receive buffers overlapping) can be modelled.
#[derive(Debug, Clone)]
pub struct SimRank {
    /// All of this rank's bytes.
    pub arena: Vec<u8>,
    /// Where the send buffer starts in the arena.
    pub send_base: usize,
    /// Where the receive buffer starts in the arena.
    pub recv_base: usize,
    /// Where scratch starts in the arena.
    pub scratch_base: usize,
    /// What this rank does.
    pub schedule: Schedule,
}

/// A tiny deterministic generator (splitmix64).
#[derive(Debug, Clone)]
pub struct SplitMix(pub u64);

impl SplitMix {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number below `n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// A failure injected into a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// After `after` events, `rank`'s process dies: its connections close.
    Crash {
        /// The rank.
        rank: usize,
        /// Events before it dies.
        after: usize,
    },
    /// After `after` events, `rank` stops doing anything; its connections stay open (a
    /// stopped or frozen process).
    Freeze {
        /// The rank.
        rank: usize,
        /// Events before it stops.
        after: usize,
    },
}

/// How a run goes.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// The seed of the order of events.
    pub seed: u64,
    /// Failures to inject.
    pub faults: Vec<Fault>,
    /// Every rank's timeout, on the virtual clock.
    pub timeout: Duration,
}

impl SimOptions {
    /// A run without faults, in the order `seed` draws, with a 1 s timeout.
    pub fn seeded(seed: u64) -> SimOptions {
        SimOptions {
            seed,
            faults: Vec::new(),
            timeout: Duration::from_secs(1),
        }
    }
}

/// How a rank's call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// Every step done.
    Done,
    /// A peer left: a connection closed under a request.
    Remote(String),
    /// Nothing moved for the timeout.
    Timeout(String),
    /// A message of the wrong size came.
    Mismatch(String),
    /// Crashed by a [`Fault`].
    Crashed,
    /// Frozen by a [`Fault`].
    Frozen,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct SimReport {
    /// Each rank's end.
    pub ends: Vec<End>,
    /// Events run.
    pub events: usize,
    /// Virtual time the run took.
    pub virtual_time: Duration,
}

/// Runs all ranks' schedules to completion in a random order drawn from `seed`.
/// Errors describe the first hazard, size mismatch or deadlock found.
pub fn run(ranks: &mut [SimRank], dtype: DataType, op: ReduceOp, seed: u64) -> Result<(), String> {
    let report = run_with(ranks, dtype, op, &SimOptions::seeded(seed))?;
    for end in report.ends {
        match end {
            End::Done => {}
            End::Remote(m) | End::Timeout(m) | End::Mismatch(m) => return Err(m),
            End::Crashed | End::Frozen => return Err("internal: a fault without faults".into()),
        }
    }
    Ok(())
}

/// Runs all ranks' schedules with `opts`: each rank's end, or an error for a hazard, a
/// deadlock (without faults), a livelock, or a schedule the machine refuses.
pub fn run_with(
    ranks: &mut [SimRank],
    dtype: DataType,
    op: ReduceOp,
    opts: &SimOptions,
) -> Result<SimReport, String> {
    check_pairs(ranks)?;
    let total: usize = ranks.iter().map(|r| r.schedule.steps.len()).sum();
    let n = ranks.len();
    let mut sim = Sim::new(ranks, dtype, op, opts.seed)?;
    let pace = PaceConfig {
        spin: 0,
        yield_when_idle: false,
        timeout: opts.timeout,
    };
    let event_bound = 20 * total + 1000;
    let idle_bound = (n + 2) * (opts.timeout.as_millis() as usize + 10);
    let (mut events, mut idle_rounds) = (0, 0);
    let mut evs = Vec::new();
    while sim.ends.iter().any(Option::is_none) {
        sim.inject(&opts.faults, events);
        sim.candidates(&mut evs);
        if evs.is_empty() {
            if opts.faults.is_empty() {
                return Err(sim.deadlock());
            }
            idle_rounds += 1;
            if idle_rounds > idle_bound {
                return Err(format!("livelock: {idle_rounds} idle rounds"));
            }
            sim.idle(&pace);
            continue;
        }
        events += 1;
        if events > event_bound {
            return Err(format!("livelock: more than {event_bound} events"));
        }
        let ev = evs[sim.rng.below(evs.len())];
        sim.step(ev)?;
        sim.clock.advance(Duration::from_micros(1));
    }
    Ok(SimReport {
        ends: sim
            .ends
            .into_iter()
            .map(|e| e.unwrap_or(End::Done))
            .collect(),
        events,
        virtual_time: sim.clock.elapsed(),
    })
}

/// Every connection's sender sends as many messages as its receiver receives.
fn check_pairs(ranks: &[SimRank]) -> Result<(), String> {
    let mut count: std::collections::BTreeMap<Conn, (usize, usize)> = Default::default();
    for (r, rk) in ranks.iter().enumerate() {
        for s in &rk.schedule.steps {
            match s.action {
                Action::Send { peer, .. } => count.entry((r, peer, s.channel)).or_default().0 += 1,
                Action::Recv { peer, .. } | Action::RecvReduce { peer, .. } => {
                    count.entry((peer, r, s.channel)).or_default().1 += 1
                }
                _ => {}
            }
        }
    }
    for (&(a, b, ch), &(sent, received)) in &count {
        if sent == 0 {
            return Err(format!(
                "rank {b} receives {received} messages from rank {a} on channel {ch}, which sends none"
            ));
        }
        if sent != received {
            return Err(format!(
                "rank {a} sends {sent} messages to rank {b} on channel {ch}, which receives {received}"
            ));
        }
    }
    Ok(())
}

/// One event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ev {
    /// A rank applies a ready local step.
    Apply(usize),
    /// A rank tests the oldest request of a queue, which has an outcome.
    Test(usize, usize),
    /// A rank posts the next step of a queue.
    Post(usize, usize),
    /// The network delivers a connection's oldest send.
    Deliver(Conn),
    /// The network hands a connection's oldest message to its oldest receive.
    Match(Conn),
}

/// A run in progress.
struct Sim<'a> {
    ranks: &'a mut [SimRank],
    dtype: DataType,
    op: ReduceOp,
    net: Net,
    machines: Vec<Machine<usize>>,
    paces: Vec<Pace>,
    /// Per rank: staging buffers, the free ones, their length.
    stages: Vec<(Vec<Vec<u8>>, Vec<usize>, usize)>,
    /// Per rank: (start, end, step) of the sends in flight.
    locks: Vec<Vec<(usize, usize, usize)>>,
    ends: Vec<Option<End>>,
    clock: VirtualClock,
    rng: SplitMix,
}
