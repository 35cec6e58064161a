//! The engine's side of the call state machine: it does the IO the machine
//! (`algo::machine`) asks for — posts, tests, local steps, sleeps — and turns failures
//! into errors that name this rank, the peer and the call.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::call::{Call, Staging};
use super::connect::Link;
use super::{EngineConfig, News};
use crate::algo::machine::{waiting_for, Idle, Machine, Pace, PaceConfig, WallClock};
use crate::algo::Action;
use crate::error::{Error, Result};
use crate::transport::Transport;

/// How long, after a mismatch, the sends already under way may take to reach the peer (so
/// that it sees the disagreement too instead of only this rank's departure).
const DRAIN: Duration = Duration::from_millis(200);

/// What a running call holds of its engine.
pub(super) struct Driver<'e, T: Transport> {
    pub link: Link<'e, T>,
    pub news: &'e News,
    pub abort: &'e AtomicBool,
    pub cfg: &'e EngineConfig,
    pub m: &'e mut Machine<T::Request>,
    pub stage: Staging<'e>,
    pub regions: &'e mut Vec<T::MemRegion>,
    pub need_send: &'e [(usize, u16)],
    pub need_recv: &'e [(usize, u16)],
    pub pace: Pace,
}

/// The words that name a queue in messages.
fn direction(sends: bool) -> &'static str {
    if sends {
        "sending to"
    } else {
        "receiving from"
    }
}

impl<T: Transport> Driver<'_, T> {
    /// Runs the call to its end: rounds of connecting, local steps, completions and posts;
    /// after a round in which nothing moved, what the machine's pace says.
    pub fn run(&mut self, call: &Call) -> Result<()> {
        let mut all_connected = self.connected();
        // Only a transport with shared locks has its loop watched (`comm::wedge`).
        let watched = self.news.shared_locks().is_some();
        let pace = PaceConfig {
            spin: self.cfg.spin,
            yield_when_idle: self.cfg.yield_when_idle,
            timeout: self.cfg.timeout,
        };
        while !self.m.finished() {
            if watched {
                self.news.beat();
            }
            let mut moved = false;
            if !all_connected {
                moved |= self.link.progress_pending(&call.what())?;
                all_connected = self.connected();
            }
            // Local work first: it may unblock sends.
            moved |= self.apply_ready(call)?;
            for q in 0..self.m.queues().len() {
                moved |= self.complete(call, q)?;
                moved |= self.post(call, q)?;
            }
            if moved {
                self.moved(call)?;
                continue;
            }
            if self.abort.load(Ordering::Relaxed) {
                return Err(Error::invalid_usage(format!(
                    "rank {}: {}: the communicator was aborted",
                    call.rank,
                    call.what()
                )));
            }
            match self.pace.idle(&pace, &WallClock) {
                Idle::Spin { hint: true } => std::hint::spin_loop(),
                Idle::Spin { hint: false } => {}
                Idle::Yield => std::thread::yield_now(),
                idle => self.wait(call, idle, all_connected)?,
            }
        }
        Ok(())
    }

    /// Whether every connection the call needs is up.
    fn connected(&self) -> bool {
        let c = &self.link.conns;
        self.need_recv.iter().all(|k| c.recv.contains_key(k))
            && self.need_send.iter().all(|k| c.send.contains_key(k))
    }

    /// After a round that moved: the stall notice withdrawn; a failure posted for the job
    /// (a rank's mismatch, a call from a second thread) ends a call that still moves too,
    /// as it may be paired wrongly.
    fn moved(&mut self, call: &Call) -> Result<()> {
        if self.pace.moved() {
            self.news.set_stalled(None);
        }
        if self.news.any() {
            if let Some(e) = self.news.posted(call.rank, &call.what()) {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Applies the local steps that are ready.
    fn apply_ready(&mut self, call: &Call) -> Result<bool> {
        let mut moved = false;
        while let Some(i) = self.m.pop_ready() {
            let staged = match call.sched.steps[i as usize].action {
                Action::RecvReduce { .. } => self.m.take_arrived(i),
                _ => None,
            };
            let incoming = staged.map(|si| &self.stage.pool[si][..]);
            // SAFETY: the machine made the step ready, so by the schedule's dependencies
            // nothing else touches its bytes; the buffers are valid for the call.
            unsafe { call.apply(i as usize, incoming) }
                .map_err(|e| e.context(format!("rank {}: {}", call.rank, call.what())))?;
            if let Some(si) = staged {
                self.stage.free.push(si);
            }
            self.m.complete_local(i, call.sched);
            moved = true;
        }
        Ok(moved)
    }

    /// Tests queue `q`'s requests, oldest first, and hands what finished to the machine.
    /// A received message that does not belong to the call fails it.
    fn complete(&mut self, call: &Call, q: usize) -> Result<bool> {
        let queue = &self.m.queues()[q];
        let (peer, ch, sends) = (queue.peer(), queue.channel(), queue.sends());
        let ctx = |e: Error| {
            let dir = direction(sends);
            e.context(format!(
                "rank {}: {}: {dir} rank {peer} (channel {ch})",
                call.rank,
                call.what()
            ))
        };
        let mut moved = false;
        while let Some(p) = self.m.oldest(q) {
            let Some(c) = self.link.transport.test(&mut p.request).map_err(ctx)? else {
                break;
            };
            let step = p.step as usize;
            moved = true;
            if !sends {
                if let Err(e) = call.check_message(step, c.tag, c.bytes) {
                    self.drain_sends(DRAIN);
                    return Err(ctx(e));
                }
            }
            self.m.complete_oldest(q, call.sched);
        }
        Ok(moved)
    }

    /// Posts queue `q`'s steps, in order, as far as the machine allows and the transport
    /// has room.
    fn post(&mut self, call: &Call, q: usize) -> Result<bool> {
        let queue = &self.m.queues()[q];
        let (key, sends) = ((queue.peer(), queue.channel()), queue.sends());
        let mut moved = false;
        while let Some(i) = self.m.next_post(q, call.sched) {
            let posted = self.post_step(call, i as usize, key).map_err(|e| {
                e.context(format!(
                    "rank {}: {}: {} rank {} (channel {})",
                    call.rank,
                    call.what(),
                    direction(sends),
                    key.0,
                    key.1
                ))
            })?;
            let Some((request, stage)) = posted else {
                break;
            };
            self.m.posted(q, request, stage);
            moved = true;
        }
        Ok(moved)
    }

    /// Posts step `i` on the connection `key`: `None` while the connection is not up yet or
    /// the transport has no room. A receive-reduce lands in a staging buffer.
    fn post_step(
        &mut self,
        call: &Call,
        i: usize,
        key: (usize, u16),
    ) -> Result<Option<(T::Request, Option<usize>)>> {
        let t = &mut *self.link.transport;
        let regions = &mut *self.regions;
        match call.sched.steps[i].action {
            Action::Send { src, .. } => {
                let Some(conn) = self.link.conns.send.get_mut(&key) else {
                    return Ok(None);
                };
                let region = call.region_of(i, &src).map(|k| &regions[k]);
                // SAFETY: the span is in bounds and, by the schedule's dependencies, nobody
                // writes it before this send completes.
                let r = unsafe { t.isend(conn, call.ptr(i, &src), src.len, call.tag(i), region) };
                Ok(r?.map(|r| (r, None)))
            }
            Action::Recv { dst, .. } => {
                let Some(conn) = self.link.conns.recv.get_mut(&key) else {
                    return Ok(None);
                };
                let region = call.region_of(i, &dst).map(|k| &regions[k]);
                // SAFETY: in bounds, and only this receive writes it until done.
                let r = unsafe { t.irecv(conn, call.ptr(i, &dst), dst.len, region) };
                Ok(r?.map(|r| (r, None)))
            }
            Action::RecvReduce { dst, .. } => {
                let Some(conn) = self.link.conns.recv.get_mut(&key) else {
                    return Ok(None);
                };
                let si = self.stage.take();
                let k = self.stage.region(si, t, regions)?;
                let buf = self.stage.pool[si].as_mut_ptr();
                // SAFETY: the staging buffer is ours until the reduce releases it.
                let r = unsafe { t.irecv(conn, buf, dst.len, Some(&regions[k])) }?;
                if r.is_none() {
                    self.stage.free.push(si);
                }
                Ok(r.map(|r| (r, Some(si))))
            }
            _ => Err(Error::internal(format!("local step {i} queued"))),
        }
    }

    /// A wait the pace asked for: first whether a peer left or the job failed (found now
    /// rather than at the timeout), then the timeout or the stall notice, then a sleep in
    /// the transport until something may move.
    fn wait(&mut self, call: &Call, idle: Idle, all_connected: bool) -> Result<()> {
        self.look_around(call)?;
        let (sleep, notice_stall) = match idle {
            Idle::TimedOut { waited } => return Err(self.timed_out(call, waited)),
            Idle::Wait {
                sleep,
                notice_stall,
                ..
            } => (sleep, notice_stall),
            _ => return Ok(()),
        };
        if notice_stall {
            // Collective calls say what they are stalled in, so that ranks stalled in
            // different calls at one sequence number find out (a mismatch that no message
            // reveals). Described only now: formatting it for every call costs small ones.
            let collective = call.parts.iter().all(|p| {
                !matches!(
                    p.desc.kind,
                    crate::algo::Kind::Send | crate::algo::Kind::Recv
                )
            });
            let seq = call.parts[0].desc.seq;
            self.news
                .set_stalled(collective.then(|| (seq, call.what().to_string())));
        }
        if all_connected {
            // A stranger waiting on the listener (a scanner, an idle connection) would wake
            // the wait below at once, every time: accept it, so that it is read, timed out
            // and dropped.
            self.link.progress_pending(&call.what())?;
        }
        self.link
            .transport
            .wait_activity(sleep)
            .map_err(|e| e.context(format!("rank {}: {}", call.rank, call.what())))
    }

    /// A peer that left (its own error, a mismatch, an abort) shows as a closed connection,
    /// or in the job's news. Only peers this rank still owes or expects data count: one
    /// whose part of the call is done may already have finished and exited, which is no
    /// failure.
    fn look_around(&mut self, call: &Call) -> Result<()> {
        let (rank, m) = (call.rank, &*self.m);
        for q in m.queues().iter().filter(|q| q.sends() && m.busy(q.peer())) {
            if let Some(c) = self.link.conns.send.get_mut(&(q.peer(), q.channel())) {
                self.link.transport.check_send(c).map_err(|e| {
                    e.context(format!(
                        "rank {rank}: {}: rank {} (channel {})",
                        call.what(),
                        q.peer(),
                        q.channel()
                    ))
                })?;
            }
        }
        if !self.news.any() {
            return Ok(());
        }
        if let Some(e) = self
            .news
            .failure(rank, &call.what().to_string(), |p| m.busy(p))
        {
            return Err(e);
        }
        // A rank that never connected and whose process (the store's) ended.
        if let Some(h) = self.news.host_gone().filter(|&h| h != rank) {
            if self.unconnected().contains(&h) {
                return Err(Error::remote(format!(
                    "rank {rank}: {}: rank {h} left the job: its process, which served the \
                     job's store, ended before it connected here",
                    call.what()
                )));
            }
        }
        Ok(())
    }

    /// The peers whose connections the call needs and does not have.
    fn unconnected(&self) -> Vec<usize> {
        let c = &self.link.conns;
        let recv = self.need_recv.iter().filter(|k| !c.recv.contains_key(k));
        let send = self.need_send.iter().filter(|k| !c.send.contains_key(k));
        recv.chain(send).map(|k| k.0).collect()
    }

    /// The error of a call that made no progress for `waited`: the frozen rank, where the
    /// job's store knows one, else what this rank waits for.
    fn timed_out(&self, call: &Call, waited: Duration) -> Error {
        let rank = call.rank;
        if let Some((f, _)) = self.news.silent().into_iter().find(|&(f, _)| f != rank) {
            return Error::timeout(format!(
                "rank {f} made no progress for {:.1}s: its process answers nothing, not even \
                 the job's store (stopped or frozen); rank {rank} waited for it in {}",
                waited.as_secs_f64(),
                call.what()
            ));
        }
        Error::timeout(format!(
            "rank {rank}: {}: no progress for {:.1}s; {}",
            call.what(),
            waited.as_secs_f64(),
            waiting_for(self.m, &self.unconnected())
        ))
    }

    /// After a mismatch: completes the sends already posted, for at most `bound` (errors
    /// are ignored, the call fails anyway). Nothing new is posted.
    fn drain_sends(&mut self, bound: Duration) {
        let end = Instant::now() + bound;
        let t = &mut *self.link.transport;
        loop {
            let mut pending = false;
            for q in self.m.queues_mut().iter_mut().filter(|q| q.sends()) {
                while let Some(p) = q.in_flight_mut().front_mut() {
                    if let Ok(None) = t.test(&mut p.request) {
                        pending = true;
                        break;
                    }
                    q.in_flight_mut().pop_front();
                }
            }
            let now = Instant::now();
            if !pending || now >= end {
                return;
            }
            let _ = t.wait_activity((end - now).min(Duration::from_millis(1)));
        }
    }
}
