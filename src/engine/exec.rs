//! Running calls: the entry points (`run`, `run_group`), the call's preparation (its
//! schedule loaded into the state machine, connections, registrations) and its ending
//! (errors named, registrations released). The loop itself is `drive.rs`; what to post,
//! test and apply next is decided by the sans-IO state machine in `algo::machine`, which
//! the simulator runs too.

use super::call::{register_buffers, Call, Staging};
use super::connect::Link;
use super::drive::Driver;
use super::tag::CallDesc;
use super::Engine;
use crate::algo::machine::{Machine, Pace};
use crate::algo::{BufId, Schedule};
use crate::error::{Error, Result};
use crate::transport::{Tag, Transport};

/// The caller's buffers for one call. Either may be null when its length is zero.
#[derive(Debug, Clone, Copy)]
pub struct Buffers {
    /// Input.
    pub send: *const u8,
    /// Input length in bytes.
    pub send_len: usize,
    /// Output.
    pub recv: *mut u8,
    /// Output length in bytes.
    pub recv_len: usize,
}

/// The calls of a run, described only when a message needs it.
pub(super) struct Described<'a, 'b>(pub(super) &'a [Part<'b>]);

impl std::fmt::Display for Described<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (k, p) in self.0.iter().enumerate() {
            if k > 0 {
                f.write_str(" + ")?;
            }
            f.write_str(&p.desc.describe())?;
        }
        Ok(())
    }
}

/// One call of a group run.
#[derive(Debug, Clone, Copy)]
pub struct Part<'a> {
    /// The call; its tag goes on every message sent.
    pub desc: CallDesc,
    /// The tag every received message must carry.
    pub expect: Tag,
    /// This rank's steps.
    pub sched: &'a Schedule,
    /// The caller's buffers.
    pub bufs: Buffers,
}

/// A run's working memory, kept by the engine between calls: a warm call of a shape it
/// ran before allocates nothing (each allocation and free cost a small call several
/// percent of its time). Every field is cleared by the run that uses it.
pub(crate) struct Work<R> {
    machine: Machine<R>,
    need_send: Vec<(usize, u16)>,
    need_recv: Vec<(usize, u16)>,
    stage_free: Vec<usize>,
    stage_reg: Vec<Option<usize>>,
    part_regs: Vec<(Option<usize>, Option<usize>)>,
    tags: Vec<Tag>,
}

impl<R> Default for Work<R> {
    fn default() -> Self {
        Work {
            machine: Machine::default(),
            need_send: Vec::new(),
            need_recv: Vec::new(),
            stage_free: Vec::new(),
            stage_reg: Vec::new(),
            part_regs: Vec::new(),
            tags: Vec::new(),
        }
    }
}

impl<T: Transport> Engine<T> {
    /// Runs `sched` for the call `desc`: messages carry `desc.tag()`, received ones must carry
    /// `expect`. On error the engine shuts down (no request may outlive the call with a
    /// pointer into the caller's buffers) and the error names this rank, the peer and the call.
    ///
    /// # Safety
    /// `bufs` must describe valid memory for the whole call: `send_len` readable bytes at
    /// `send`, `recv_len` writable bytes at `recv` that nothing else touches during the call
    /// (they may overlap `send` as in-place calls do).
    pub unsafe fn run(
        &mut self,
        desc: &CallDesc,
        expect: Tag,
        sched: &Schedule,
        bufs: Buffers,
    ) -> Result<()> {
        // SAFETY: forwarded.
        unsafe {
            self.run_group(&[Part {
                desc: *desc,
                expect,
                sched,
                bufs,
            }])
        }
    }

    /// Runs several calls as one (NCCL's group semantics): their steps progress together, so
    /// a receive and a send issued back to back cannot wait on each other. Parts that share a
    /// connection use it in the order given.
    ///
    /// # Safety
    /// As [`Engine::run`], for every part.
    pub unsafe fn run_group(&mut self, parts: &[Part<'_>]) -> Result<()> {
        if parts.iter().all(|p| p.sched.steps.is_empty()) {
            return Ok(());
        }
        let mut regions = Vec::new();
        self.news.set_calling(Some(&Described(parts)));
        if let [one] = parts {
            // SAFETY: forwarded from the caller.
            let r = unsafe { self.run_inner(parts, one.sched, &[], &mut regions) };
            return self.end_call(r, regions);
        }
        // One schedule of all parts: dependencies and scratch offsets shifted per part.
        let mut merged = Schedule::default();
        let mut part_of: Vec<u32> = Vec::new();
        for (pi, p) in parts.iter().enumerate() {
            merged.append(p.sched, pi as u32, &mut part_of);
        }
        // SAFETY: forwarded from the caller.
        let r = unsafe { self.run_inner(parts, &merged, &part_of, &mut regions) };
        self.end_call(r, regions)
    }

    /// After a run: on error, shuts down (so no request outlives the call), then releases
    /// the call's memory registrations.
    fn end_call(&mut self, r: Result<()>, regions: Vec<T::MemRegion>) -> Result<()> {
        self.news.set_stalled(None);
        self.news.set_calling(None);
        // Before the shutdown closes them: which connections are gone names the dead rank.
        let r = r.map_err(|e| self.name_departed(e));
        if r.is_err() {
            self.shutdown();
        }
        let mut released = Ok(());
        for reg in regions {
            if let Err(e) = self.transport.deregister(reg) {
                released = released.and(Err(e));
            }
        }
        r.and(released.map_err(|e| e.context(format!("rank {}: releasing buffers", self.rank))))
    }

    /// A Remote error names the connection it was noticed on, which may be a peer that
    /// itself failed because another rank died first. Add every peer whose connection is
    /// gone by now, so that each survivor's message names the rank that died.
    fn name_departed(&mut self, e: Error) -> Error {
        if e.kind() != crate::ErrorKind::Remote {
            return e;
        }
        let mut gone: Vec<usize> = Vec::new();
        for (&(peer, _), c) in self.conns.send.iter_mut() {
            if !gone.contains(&peer) && self.transport.confirm_send(c).is_err() {
                gone.push(peer);
            }
        }
        for (&(peer, _), c) in self.conns.recv.iter_mut() {
            if !gone.contains(&peer) && self.transport.confirm_recv(c).is_err() {
                gone.push(peer);
            }
        }
        if gone.is_empty() {
            return e;
        }
        gone.sort_unstable();
        let list: Vec<String> = gone.iter().map(|p| format!("rank {p}")).collect();
        let msg = format!("{}; connections lost to {}", e.message(), list.join(", "));
        Error::new(e.kind(), msg)
    }

    /// `part_of[i]` is the part of step `i`; empty when there is one part. The buffers the
    /// call uses are registered with the transport into `regions`, for this call only: a
    /// registration kept longer could outlive the memory (see `transport::verbs`'s `mr.rs`).
    unsafe fn run_inner(
        &mut self,
        parts: &[Part<'_>],
        sched: &Schedule,
        part_of: &[u32],
        regions: &mut Vec<T::MemRegion>,
    ) -> Result<()> {
        let mut work = std::mem::take(&mut self.work);
        // SAFETY: forwarded from the caller.
        let r = unsafe { self.run_steps(&mut work, parts, sched, part_of, regions) };
        work.machine.recycle();
        self.work = work;
        r
    }

    /// Loads the call into the state machine (which checks every step against the
    /// buffers) and opens the connections it needs. Returns the staging length.
    fn load(
        &mut self,
        w: &mut Work<T::Request>,
        parts: &[Part<'_>],
        sched: &Schedule,
        part_of: &[u32],
    ) -> Result<usize> {
        let (rank, what) = (self.rank, Described(parts));
        if self.scratch.len() < sched.scratch_bytes {
            self.scratch.resize(sched.scratch_bytes, 0);
        }
        let scratch_len = self.scratch.len();
        let pidx = |i: usize| part_of.get(i).map_or(0, |&p| p as usize);
        let limit = |i: usize, b: BufId| match b {
            BufId::Send => parts[pidx(i)].bufs.send_len,
            BufId::Recv => parts[pidx(i)].bufs.recv_len,
            BufId::Scratch => scratch_len,
        };
        let stage_len = w
            .machine
            .load(sched, rank, self.size, self.cfg.max_in_flight, limit)
            .map_err(|e| Error::internal(format!("rank {rank}: {what}: {e}")))?;
        let queues = w.machine.queues();
        w.need_send.clear();
        w.need_send.extend(
            queues
                .iter()
                .filter(|q| q.sends())
                .map(|q| (q.peer(), q.channel())),
        );
        w.need_recv.clear();
        w.need_recv.extend(
            queues
                .iter()
                .filter(|q| !q.sends())
                .map(|q| (q.peer(), q.channel())),
        );
        // Our own connections first (peers' listeners exist since init); theirs are accepted
        // while the schedule runs, so a rank whose peer called something else still sends,
        // and the peer reports the mismatch instead of both waiting for connections.
        self.connect_all(&w.need_send, &w.need_recv, &what)?;
        Ok(stage_len)
    }

    /// [`Engine::run_inner`] with its working memory: loads the call, registers its
    /// buffers and drives it to its end.
    unsafe fn run_steps(
        &mut self,
        w: &mut Work<T::Request>,
        parts: &[Part<'_>],
        sched: &Schedule,
        part_of: &[u32],
        regions: &mut Vec<T::MemRegion>,
    ) -> Result<()> {
        self.check_open()?;
        let (rank, size) = (self.rank, self.size);
        let what = Described(parts);
        let stage_len = self.load(w, parts, sched, part_of)?;
        w.tags.clear();
        w.tags.extend(parts.iter().map(|p| p.desc.tag()));
        let scratch_reg = register_buffers(
            &mut self.transport,
            parts,
            &self.scratch,
            regions,
            &mut w.part_regs,
        )
        .map_err(|e| e.context(format!("rank {rank}: {what}: registering buffers")))?;
        let call = Call {
            parts,
            sched,
            part_of,
            rank,
            size,
            scratch: self.scratch.as_mut_ptr(),
            part_regs: &w.part_regs,
            scratch_reg,
            tags: &w.tags,
        };
        let Engine {
            transport,
            conns,
            staging,
            cfg,
            abort,
            listener,
            greeter,
            news,
            ..
        } = self;
        staging.retain(|b| b.len() >= stage_len);
        w.stage_free.clear();
        w.stage_free.extend(0..staging.len());
        w.stage_reg.clear();
        w.stage_reg.resize(staging.len(), None);
        let mut driver = Driver {
            link: Link {
                transport,
                conns,
                listener,
                greeter,
                rank,
                size,
            },
            news,
            abort,
            cfg,
            m: &mut w.machine,
            stage: Staging {
                pool: staging,
                free: &mut w.stage_free,
                len: stage_len,
                reg: &mut w.stage_reg,
            },
            regions,
            need_send: &w.need_send,
            need_recv: &w.need_recv,
            pace: Pace::default(),
        };
        driver.run(&call)
    }
}
