//! The events of a run, applied: what a rank does through its state machine, and what the
//! network does.

use super::net::{Landing, Net, Outcome};
use super::{
    waiting_for, Action, BufId, DataType, End, Ev, Fault, Idle, Machine, Pace, PaceConfig,
    ReduceOp, Sim, SimRank, SplitMix, VirtualClock,
};
use crate::reduce::{finalize_avg, reduce_into, reduce_to};

impl<'a> Sim<'a> {
    /// Loads every rank's schedule into a machine of its own.
    pub(super) fn new(
        ranks: &'a mut [SimRank],
        dtype: DataType,
        op: ReduceOp,
        seed: u64,
    ) -> Result<Sim<'a>, String> {
        let n = ranks.len();
        let mut machines = Vec::with_capacity(n);
        let mut stages = Vec::with_capacity(n);
        let mut ends = Vec::with_capacity(n);
        for (r, rk) in ranks.iter().enumerate() {
            let mut m = Machine::default();
            let room = |_: usize, b: BufId| rk.arena.len().saturating_sub(rk.base(b));
            let stage_len = m
                .load(&rk.schedule, r, n, 4, room)
                .map_err(|e| format!("rank {r}: {e}"))?;
            ends.push(m.finished().then_some(End::Done));
            machines.push(m);
            stages.push((Vec::new(), Vec::new(), stage_len));
        }
        Ok(Sim {
            ranks,
            dtype,
            op,
            net: Net::new(n),
            machines,
            paces: (0..n).map(|_| Pace::default()).collect(),
            stages,
            locks: vec![Vec::new(); n],
            ends,
            clock: VirtualClock::default(),
            rng: SplitMix(seed),
        })
    }

    /// Applies the faults due after `events` events.
    pub(super) fn inject(&mut self, faults: &[Fault], events: usize) {
        for f in faults {
            match *f {
                Fault::Crash { rank, after } if after <= events && self.ends[rank].is_none() => {
                    self.ends[rank] = Some(End::Crashed);
                    self.net.close(rank);
                    self.locks[rank].clear();
                }
                Fault::Freeze { rank, after } if after <= events && self.ends[rank].is_none() => {
                    self.ends[rank] = Some(End::Frozen);
                }
                _ => {}
            }
        }
    }

    /// Everything that can happen next.
    pub(super) fn candidates(&self, evs: &mut Vec<Ev>) {
        evs.clear();
        for (r, m) in self.machines.iter().enumerate() {
            if self.ends[r].is_some() {
                continue;
            }
            if m.has_ready() {
                evs.push(Ev::Apply(r));
            }
            for (q, queue) in m.queues().iter().enumerate() {
                if queue
                    .oldest()
                    .is_some_and(|p| self.net.outcome(p.request) != Outcome::Pending)
                {
                    evs.push(Ev::Test(r, q));
                }
                if m.next_post(q, &self.ranks[r].schedule).is_some() {
                    evs.push(Ev::Post(r, q));
                }
            }
        }
        evs.extend(self.net.deliverable().map(Ev::Deliver));
        evs.extend(self.net.matchable().map(Ev::Match));
    }

    /// Runs one event. Errors are hazards: the schedule writes bytes under a send.
    pub(super) fn step(&mut self, ev: Ev) -> Result<(), String> {
        // Only a rank's own events move its machine, so only that rank can have finished.
        let r = match ev {
            Ev::Apply(r) => self.apply(r).map(|()| r)?,
            Ev::Test(r, q) => {
                self.test(r, q);
                r
            }
            Ev::Post(r, q) => {
                self.post(r, q);
                r
            }
            Ev::Deliver(k) => {
                self.deliver(k);
                return Ok(());
            }
            Ev::Match(k) => return self.receive(k),
        };
        if self.ends[r].is_none() && self.machines[r].finished() {
            self.ends[r] = Some(End::Done);
        }
        Ok(())
    }

    /// Rank `r` leaves with `end`: its connections close.
    fn fail(&mut self, r: usize, end: End) {
        self.ends[r] = Some(end);
        self.net.close(r);
        self.locks[r].clear();
    }

    /// Rank `r` applies a ready local step.
    fn apply(&mut self, r: usize) -> Result<(), String> {
        let Some(i) = self.machines[r].pop_ready() else {
            return Ok(());
        };
        let i = i as usize;
        let (dtype, op, n) = (self.dtype, self.op, self.ranks.len());
        let rk = &mut self.ranks[r];
        match rk.schedule.steps[i].action {
            Action::Copy { src, dst } => {
                let (a, _) = rk.addr(src);
                let (d, de) = rk.addr(dst);
                // Copying bytes onto themselves (in-place calls) writes nothing.
                if a != d {
                    check_lock(&self.locks[r], r, i, d, de)?;
                    rk.arena.copy_within(a..a + src.len, d);
                }
            }
            Action::Finalize { span } => {
                let (a, e) = rk.addr(span);
                check_lock(&self.locks[r], r, i, a, e)?;
                finalize_avg(dtype, &mut rk.arena[a..e], n);
            }
            Action::RecvReduce { dst, local, .. } => {
                let si = self.machines[r]
                    .take_arrived(i as u32)
                    .ok_or("internal: a reduce without data")?;
                let msg = &self.stages[r].0[si][..dst.len];
                let (d, de) = rk.addr(dst);
                let (l, le) = rk.addr(local);
                check_lock(&self.locks[r], r, i, d, de)?;
                if d == l {
                    reduce_into(dtype, op, &mut rk.arena[d..de], msg);
                } else {
                    let mine = rk.arena[l..le].to_vec();
                    reduce_to(dtype, op, &mut rk.arena[d..de], &mine, msg);
                }
                self.stages[r].1.push(si);
            }
            _ => return Err(format!("internal: rank {r} step {i} is not local")),
        }
        self.machines[r].complete_local(i as u32, &self.ranks[r].schedule);
        self.paces[r].moved();
        Ok(())
    }

    /// Rank `r` tests the oldest request of queue `q`, which has an outcome.
    fn test(&mut self, r: usize, q: usize) {
        let m = &mut self.machines[r];
        let queue = &m.queues()[q];
        let (peer, ch, sends) = (queue.peer(), queue.channel(), queue.sends());
        let Some(p) = m.oldest(q) else {
            return;
        };
        let step = p.step as usize;
        match self.net.outcome(p.request) {
            Outcome::Pending => return,
            Outcome::Broken => {
                let dir = if sends {
                    "sending to"
                } else {
                    "receiving from"
                };
                let why = format!("rank {r}: {dir} rank {peer} (channel {ch}): connection closed");
                return self.fail(r, End::Remote(why));
            }
            Outcome::Done(bytes) => {
                let want = match self.ranks[r].schedule.steps[step].action {
                    Action::Recv { dst, .. } | Action::RecvReduce { dst, .. } => dst.len,
                    _ => bytes,
                };
                if bytes != want {
                    let why = format!(
                        "rank {r} step {step} expects {want} bytes from rank {peer} (channel \
                         {ch}) but {bytes} came"
                    );
                    return self.fail(r, End::Mismatch(why));
                }
            }
        }
        m.complete_oldest(q, &self.ranks[r].schedule);
        self.paces[r].moved();
    }

    /// Rank `r` posts the next step of queue `q`.
    fn post(&mut self, r: usize, q: usize) {
        let m = &mut self.machines[r];
        let sched = &self.ranks[r].schedule;
        let Some(i) = m.next_post(q, sched) else {
            return;
        };
        let i = i as usize;
        let ch = sched.steps[i].channel;
        let (id, stage) = match sched.steps[i].action {
            Action::Send { peer, src } => {
                let (a, e) = self.ranks[r].addr(src);
                self.locks[r].push((a, e, i));
                let id = self.net.post((r, peer, ch), i, Landing::Nowhere);
                if self.net.closed[peer] {
                    self.net.requests[id].outcome = Outcome::Broken;
                }
                (id, None)
            }
            Action::Recv { peer, dst } => {
                let (at, _) = self.ranks[r].addr(dst);
                let into = Landing::Arena { at, len: dst.len };
                (self.net.post((peer, r, ch), i, into), None)
            }
            Action::RecvReduce { peer, dst, .. } => {
                let (pool, free, len) = &mut self.stages[r];
                let si = free.pop().unwrap_or_else(|| {
                    pool.push(vec![0; *len]);
                    pool.len() - 1
                });
                let into = Landing::Stage {
                    index: si,
                    len: dst.len,
                };
                (self.net.post((peer, r, ch), i, into), Some(si))
            }
            _ => return,
        };
        m.posted(q, id, stage);
        self.paces[r].moved();
    }

    /// The network delivers connection `k`'s oldest send: its bytes are read now.
    fn deliver(&mut self, k: super::Conn) {
        let Some(link) = self.net.links.get_mut(&k) else {
            return;
        };
        let Some(id) = link.unsent.pop_front() else {
            return;
        };
        let (r, step) = (k.0, self.net.requests[id].step);
        let data = match self.ranks[r].schedule.steps[step].action {
            Action::Send { src, .. } => {
                let (a, e) = self.ranks[r].addr(src);
                self.ranks[r].arena[a..e].to_vec()
            }
            _ => Vec::new(),
        };
        self.locks[r].retain(|l| l.2 != step);
        let bytes = data.len();
        link.wire.push_back(data);
        self.net.requests[id].outcome = Outcome::Done(bytes);
    }

    /// The network hands connection `k`'s oldest message to its oldest receive. A message
    /// longer than the receive writes nothing (the tcp and mem transports' rule); the
    /// receiver's check of the size fails the call.
    fn receive(&mut self, k: super::Conn) -> Result<(), String> {
        let Some(link) = self.net.links.get_mut(&k) else {
            return Ok(());
        };
        let (Some(id), Some(msg)) = (link.recvs.pop_front(), link.wire.pop_front()) else {
            return Err("internal: a match without a message or a receive".into());
        };
        let r = k.1;
        let req = self.net.requests[id];
        match req.into {
            Landing::Arena { at, len } if msg.len() <= len => {
                check_lock(&self.locks[r], r, req.step, at, at + msg.len())?;
                self.ranks[r].arena[at..at + msg.len()].copy_from_slice(&msg);
            }
            Landing::Stage { index, len } if msg.len() <= len => {
                self.stages[r].0[index][..msg.len()].copy_from_slice(&msg);
            }
            _ => {}
        }
        self.net.requests[id].outcome = Outcome::Done(msg.len());
        Ok(())
    }

    /// Nothing can happen: every running rank's pace is asked what to do. A rank whose
    /// busy peer has left fails as the engine's check of its connections would; one whose
    /// timeout passed fails with it; the clock moves to the next wake-up.
    pub(super) fn idle(&mut self, cfg: &PaceConfig) {
        let mut sleep = cfg.timeout;
        for r in 0..self.ranks.len() {
            if self.ends[r].is_some() {
                continue;
            }
            let m = &self.machines[r];
            if let Some(p) = (0..self.ranks.len()).find(|&p| self.net.closed[p] && m.busy(p)) {
                self.fail(r, End::Remote(format!("rank {r}: rank {p} left")));
                continue;
            }
            match self.paces[r].idle(cfg, &self.clock) {
                Idle::TimedOut { waited } => {
                    let why = format!(
                        "rank {r}: no progress for {:.1}s; {}",
                        waited.as_secs_f64(),
                        waiting_for(m, &[])
                    );
                    self.fail(r, End::Timeout(why));
                }
                Idle::Wait { sleep: s, .. } => sleep = sleep.min(s),
                Idle::Spin { .. } | Idle::Yield => sleep = std::time::Duration::ZERO,
            }
        }
        self.clock.advance(sleep);
    }

    /// The error of a run in which nothing can happen and no fault explains it.
    pub(super) fn deadlock(&self) -> String {
        let stuck: Vec<String> = (0..self.ranks.len())
            .filter(|&r| self.ends[r].is_none())
            .map(|r| format!("rank {r} {}", waiting_for(&self.machines[r], &[])))
            .collect();
        format!("deadlock: {}", stuck.join("; "))
    }
}

impl SimRank {
    /// Where buffer `b` starts in the arena.
    fn base(&self, b: BufId) -> usize {
        match b {
            BufId::Send => self.send_base,
            BufId::Recv => self.recv_base,
            BufId::Scratch => self.scratch_base,
        }
    }

    /// The arena range of span `s`.
    pub(super) fn addr(&self, s: super::Span) -> (usize, usize) {
        let base = self.base(s.buf);
        (base + s.off, base + s.off + s.len)
    }
}

/// The error of a write of bytes `a..e` by step `i` of rank `r` under a send in flight.
fn check_lock(
    locks: &[(usize, usize, usize)],
    r: usize,
    i: usize,
    a: usize,
    e: usize,
) -> Result<(), String> {
    match locks.iter().find(|l| a < l.1 && l.0 < e) {
        Some(l) => Err(format!(
            "hazard at rank {r}: step {i} writes bytes {a}..{e} while send step {} of bytes {}..{} is in flight",
            l.2, l.0, l.1
        )),
        None => Ok(()),
    }
}
