//! Running one schedule: post what is ready, test what is in flight, reduce what arrived.
//!
//! Per connection (peer, channel, direction) steps are posted strictly in schedule order,
//! which is what makes the k-th send meet the k-th receive. Sends and plain receives wait for
//! their dependencies before they are posted; a receive-reduce is posted at once into a
//! staging buffer and applied when both the data and its dependencies are there. Only the
//! oldest request of each connection is tested: transports complete a connection's requests
//! in order.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::connect::{ranks, Link};
use super::tag::CallDesc;
use super::Engine;
use crate::algo::{Action, BufId, Schedule, Span};
use crate::error::{Error, Result};
use crate::reduce::{finalize_avg, reduce_into, reduce_to};
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
struct Described<'a, 'b>(&'a [Part<'b>]);

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

/// How long a call makes no progress before this rank says what it is stalled in (see
/// [`News`](super::News)). Ranks stalled in different calls then find out within a few
/// store round trips, so every rank ends a mismatch no message reveals in about 0.45 s;
/// a legitimately long wait costs one store write.
const STALL_NOTICE: Duration = Duration::from_millis(400);

/// Shortest spin before an idle rank with a core of its own sleeps (see `run_steps`).
/// Through torch on 2 ranks over shm, 8-byte allreduces took 80-200 us when the spin's
/// 2000 polls (about 60 us of shared-memory polls) ended before a peer a little late, and
/// each paid the sleep and the wake-up; 16 us with a longer spin.
const SPIN_MIN: Duration = Duration::from_micros(500);

/// Moves a step's scratch spans by `by` bytes.
fn shift_scratch(a: &mut Action, by: usize) {
    let f = |s: &mut Span| {
        if s.buf == BufId::Scratch {
            s.off += by;
        }
    };
    match a {
        Action::Send { src, .. } => f(src),
        Action::Recv { dst, .. } | Action::Finalize { span: dst } => f(dst),
        Action::RecvReduce { dst, local, .. } => {
            f(dst);
            f(local);
        }
        Action::Copy { src, dst } => {
            f(src);
            f(dst);
        }
    }
}

struct Queue<R> {
    peer: usize,
    ch: u16,
    send: bool,
    steps: Vec<u32>,
    next: usize,
    in_flight: InFlight<R>,
}

/// A queue's requests under way: (step, request, staging buffer of a receive-reduce).
type InFlight<R> = VecDeque<(u32, R, Option<usize>)>;

/// A run's working memory, kept by the engine between calls: a warm call of a shape it
/// ran before allocates nothing (each allocation and free cost a small call several
/// percent of its time). Every field is cleared by the run that uses it.
pub(crate) struct Work<R> {
    queues: Vec<Queue<R>>,
    /// The step lists and request queues of earlier runs' queues, for reuse.
    spare: Vec<(Vec<u32>, InFlight<R>)>,
    need_send: Vec<(usize, u16)>,
    need_recv: Vec<(usize, u16)>,
    left: Vec<u32>,
    first: Vec<u32>,
    fill: Vec<u32>,
    edges: Vec<u32>,
    arrived: Vec<Option<usize>>,
    ready: Vec<u32>,
    stage_free: Vec<usize>,
    stage_reg: Vec<Option<usize>>,
    part_regs: Vec<(Option<usize>, Option<usize>)>,
    tags: Vec<Tag>,
}

impl<R> Default for Work<R> {
    fn default() -> Self {
        Work {
            queues: Vec::new(),
            spare: Vec::new(),
            need_send: Vec::new(),
            need_recv: Vec::new(),
            left: Vec::new(),
            first: Vec::new(),
            fill: Vec::new(),
            edges: Vec::new(),
            arrived: Vec::new(),
            ready: Vec::new(),
            stage_free: Vec::new(),
            stage_reg: Vec::new(),
            part_regs: Vec::new(),
            tags: Vec::new(),
        }
    }
}

impl<R> Work<R> {
    /// Keeps the last run's queues' memory for the next run.
    fn recycle(&mut self) {
        for q in self.queues.drain(..) {
            self.spare.push((q.steps, q.in_flight));
        }
    }

    /// A queue with reused memory where there is some.
    fn queue(&mut self, peer: usize, ch: u16, send: bool) -> Queue<R> {
        let (mut steps, mut in_flight) = self.spare.pop().unwrap_or_default();
        steps.clear();
        in_flight.clear();
        Queue {
            peer,
            ch,
            send,
            steps,
            next: 0,
            in_flight,
        }
    }
}

/// Staging buffers for receive-reduce, reused across calls.
struct Staging<'a> {
    pool: &'a mut Vec<Vec<u8>>,
    free: &'a mut Vec<usize>,
    len: usize,
    /// Each pool buffer's registration for this call (an index into the call's regions).
    reg: &'a mut Vec<Option<usize>>,
}

impl Staging<'_> {
    fn take(&mut self) -> usize {
        match self.free.pop() {
            Some(i) => i,
            None => {
                self.pool.push(vec![0u8; self.len]);
                self.reg.push(None);
                self.pool.len() - 1
            }
        }
    }

    /// Buffer `si`'s registration, made on its first use in this call.
    fn region<T: Transport>(
        &mut self,
        si: usize,
        t: &mut T,
        regions: &mut Vec<T::MemRegion>,
    ) -> Result<usize> {
        if let Some(k) = self.reg[si] {
            return Ok(k);
        }
        let b = &self.pool[si];
        regions.push(t.register(b.as_ptr(), b.len())?);
        self.reg[si] = Some(regions.len() - 1);
        Ok(regions.len() - 1)
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
            let base = merged.steps.len() as u32;
            let sbase = merged.scratch_bytes.div_ceil(64) * 64;
            for st in &p.sched.steps {
                let mut st = st.clone();
                for d in &mut st.deps {
                    *d += base;
                }
                shift_scratch(&mut st.action, sbase);
                merged.steps.push(st);
                part_of.push(pi as u32);
            }
            merged.scratch_bytes = sbase + p.sched.scratch_bytes;
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
        work.recycle();
        self.work = work;
        r
    }

    /// [`Engine::run_inner`] with its working memory.
    unsafe fn run_steps(
        &mut self,
        w: &mut Work<T::Request>,
        parts: &[Part<'_>],
        sched: &Schedule,
        part_of: &[u32],
        regions: &mut Vec<T::MemRegion>,
    ) -> Result<()> {
        self.check_open()?;
        let what = Described(parts);
        let pidx = |i: usize| part_of.get(i).map_or(0, |&p| p as usize);
        let rank = self.rank;
        let n = sched.steps.len();
        if self.scratch.len() < sched.scratch_bytes {
            self.scratch.resize(sched.scratch_bytes, 0);
        }
        let scratch_len = self.scratch.len();
        let bound = |i: usize, s: &Span| match s.buf {
            BufId::Send => parts[pidx(i)].bufs.send_len,
            BufId::Recv => parts[pidx(i)].bufs.recv_len,
            BufId::Scratch => scratch_len,
        };
        // Queues per connection (`w.queues` is empty: `run_inner` recycles after each run),
        // and the connections they need.
        let mut stage_len = 0;
        for (i, st) in sched.steps.iter().enumerate() {
            let spans: &[Span] = match &st.action {
                Action::Send { src, .. } => std::slice::from_ref(src),
                Action::Recv { dst, .. } | Action::Finalize { span: dst } => {
                    std::slice::from_ref(dst)
                }
                Action::RecvReduce { dst, local, .. } => {
                    stage_len = stage_len.max(dst.len);
                    if local.len != dst.len {
                        return Err(Error::internal(format!(
                            "rank {rank}: {what}: step {i} reduces spans of different lengths"
                        )));
                    }
                    &[]
                }
                Action::Copy { src, dst } => {
                    if src.len != dst.len {
                        return Err(Error::internal(format!(
                            "rank {rank}: {what}: step {i} copies spans of different lengths"
                        )));
                    }
                    &[]
                }
            };
            let extra: &[Span] = match &st.action {
                Action::RecvReduce { dst, local, .. } | Action::Copy { src: local, dst } => {
                    &[*dst, *local]
                }
                _ => &[],
            };
            for s in spans.iter().chain(extra.iter()) {
                if s.end() > bound(i, s) {
                    return Err(Error::internal(format!(
                        "rank {rank}: {what}: step {i} touches {:?} bytes {}..{} beyond its {} bytes",
                        s.buf,
                        s.off,
                        s.end(),
                        bound(i, s)
                    )));
                }
            }
            if st.deps.iter().any(|&d| d as usize >= i) {
                return Err(Error::internal(format!(
                    "rank {rank}: {what}: step {i} depends on a later step"
                )));
            }
            if let Some(peer) = st.action.peer() {
                if peer >= self.size || peer == rank {
                    return Err(Error::internal(format!(
                        "rank {rank}: {what}: step {i} talks to rank {peer}"
                    )));
                }
                let send = matches!(st.action, Action::Send { .. });
                // Schedules talk to few connections: a linear search beats hashing.
                let found = w
                    .queues
                    .iter()
                    .position(|q| q.peer == peer && q.ch == st.channel && q.send == send);
                let qi = found.unwrap_or_else(|| {
                    let q = w.queue(peer, st.channel, send);
                    w.queues.push(q);
                    w.queues.len() - 1
                });
                w.queues[qi].steps.push(i as u32);
            }
        }
        let Work {
            queues,
            need_send,
            need_recv,
            left,
            first,
            fill,
            edges,
            arrived,
            ready,
            stage_free,
            stage_reg,
            part_regs,
            tags,
            ..
        } = w;
        need_send.clear();
        need_send.extend(queues.iter().filter(|q| q.send).map(|q| (q.peer, q.ch)));
        need_recv.clear();
        need_recv.extend(queues.iter().filter(|q| !q.send).map(|q| (q.peer, q.ch)));
        // Our own connections first (peers' listeners exist since init); theirs are accepted
        // while the schedule runs, so a rank whose peer called something else still sends,
        // and the peer reports the mismatch instead of both waiting for connections.
        self.connect_all(need_send, need_recv, &what)?;

        // Dependency counters and the reverse edges.
        left.clear();
        left.extend(sched.steps.iter().map(|s| s.deps.len() as u32));
        first.clear();
        first.resize(n + 1, 0);
        for s in &sched.steps {
            for &d in &s.deps {
                first[d as usize + 1] += 1;
            }
        }
        for i in 0..n {
            first[i + 1] += first[i];
        }
        fill.clear();
        fill.extend_from_slice(first);
        edges.clear();
        edges.resize(first[n] as usize, 0);
        for (i, s) in sched.steps.iter().enumerate() {
            for &d in &s.deps {
                edges[fill[d as usize] as usize] = i as u32;
                fill[d as usize] += 1;
            }
        }
        arrived.clear();
        arrived.resize(n, None);
        ready.clear();
        ready.extend(
            (0..n as u32).filter(|&i| {
                left[i as usize] == 0 && sched.steps[i as usize].action.peer().is_none()
            }),
        );

        let Engine {
            transport,
            conns,
            scratch,
            staging,
            cfg,
            abort,
            size,
            listener,
            greeter,
            news,
            ..
        } = self;
        // Collective calls say what they are stalled in, so that ranks stalled in different
        // calls at one sequence number find out (a mismatch that no message reveals).
        let stall_desc = parts
            .iter()
            .all(|p| {
                !matches!(
                    p.desc.kind,
                    crate::algo::Kind::Send | crate::algo::Kind::Recv
                )
            })
            .then_some(parts[0].desc.seq);
        let mut stalled = false;
        let size = *size;
        staging.retain(|b| b.len() >= stage_len);
        stage_free.clear();
        stage_free.extend(0..staging.len());
        stage_reg.clear();
        stage_reg.resize(staging.len(), None);
        let mut stage = Staging {
            pool: staging,
            free: stage_free,
            len: stage_len,
            reg: stage_reg,
        };
        // The call's buffers, registered whole (a transport registers lazily, if at all).
        let mut reg = |p: *const u8, len: usize| -> Result<Option<usize>> {
            if len == 0 || p.is_null() {
                return Ok(None);
            }
            regions.push(transport.register(p, len)?);
            Ok(Some(regions.len() - 1))
        };
        part_regs.clear();
        for p in parts {
            let s = reg(p.bufs.send, p.bufs.send_len)
                .map_err(|e| e.context(format!("rank {rank}: {what}: registering buffers")))?;
            let r = reg(p.bufs.recv, p.bufs.recv_len)
                .map_err(|e| e.context(format!("rank {rank}: {what}: registering buffers")))?;
            part_regs.push((s, r));
        }
        let scratch_reg = reg(scratch.as_ptr(), scratch.len())
            .map_err(|e| e.context(format!("rank {rank}: {what}: registering buffers")))?;
        let region_of = |i: usize, s: &Span| match s.buf {
            BufId::Send => part_regs[pidx(i)].0,
            BufId::Recv => part_regs[pidx(i)].1,
            BufId::Scratch => scratch_reg,
        };
        let scratch_ptr = scratch.as_mut_ptr();
        let ptr = |i: usize, s: &Span| -> *mut u8 {
            let bufs = &parts[pidx(i)].bufs;
            let base = match s.buf {
                BufId::Send => bufs.send as *mut u8,
                BufId::Recv => bufs.recv,
                BufId::Scratch => scratch_ptr,
            };
            if s.len == 0 || base.is_null() {
                return std::ptr::NonNull::<u8>::dangling().as_ptr();
            }
            // SAFETY: bounds checked above against the buffer lengths.
            unsafe { base.add(s.off) }
        };
        tags.clear();
        tags.extend(parts.iter().map(|p| p.desc.tag()));
        let part = |i: usize| &parts[pidx(i)];
        let max_in_flight = cfg.max_in_flight.max(1);
        let mut done = 0usize;
        let mut idle: u32 = 0;
        // When the current idle streak's count of polls ran out (the spin is also timed).
        let mut spin_from: Option<Instant> = None;
        // Since when nothing moved: taken when the idle path first needs it (reading the clock
        // on every round that moves cost small calls 6% of their time), so a wait is timed
        // from the end of the spin that precedes it.
        let mut last_progress: Option<Instant> = None;

        // Runs a local step or applies a staged reduce; the step is then complete.
        let apply =
            |i: usize, arrived: &mut Vec<Option<usize>>, stage: &mut Staging| -> Result<()> {
                match sched.steps[i].action {
                    Action::Copy { src, dst } => {
                        let (s, d) = (ptr(i, &src), ptr(i, &dst));
                        if s != d && src.len > 0 {
                            // SAFETY: both in bounds; `copy` allows overlap.
                            unsafe { std::ptr::copy(s, d, src.len) };
                        }
                    }
                    Action::Finalize { span } => {
                        // SAFETY: in bounds, and no other step touches it concurrently (the
                        // schedule orders writers of the same bytes).
                        let b = unsafe { std::slice::from_raw_parts_mut(ptr(i, &span), span.len) };
                        finalize_avg(part(i).desc.dtype, b, size);
                    }
                    Action::RecvReduce { dst, local, .. } => {
                        let si = arrived[i]
                            .take()
                            .ok_or_else(|| Error::internal("reduce without data"))?;
                        let inc = &stage.pool[si][..dst.len];
                        let (d, l) = (ptr(i, &dst), ptr(i, &local));
                        let (dtype, op) = (part(i).desc.dtype, part(i).desc.op);
                        if d == l {
                            // SAFETY: in bounds; the schedule gives this step sole use of `dst`.
                            let acc = unsafe { std::slice::from_raw_parts_mut(d, dst.len) };
                            reduce_into(dtype, op, acc, inc);
                        } else {
                            let (da, la) = (d as usize, l as usize);
                            if da < la + local.len && la < da + dst.len {
                                return Err(Error::internal("reduce operands overlap partially"));
                            }
                            // SAFETY: in bounds and disjoint (checked just above).
                            let (out, mine) = unsafe {
                                (
                                    std::slice::from_raw_parts_mut(d, dst.len),
                                    std::slice::from_raw_parts(l as *const u8, local.len),
                                )
                            };
                            reduce_to(dtype, op, out, mine, inc);
                        }
                        stage.free.push(si);
                    }
                    _ => return Err(Error::internal("not a local step")),
                }
                Ok(())
            };

        let connected = |c: &super::connect::Conns<T>| {
            need_recv.iter().all(|k| c.recv.contains_key(k))
                && need_send.iter().all(|k| c.send.contains_key(k))
        };
        let mut all_connected = connected(conns);
        // Only a transport with shared locks has its loop watched (`comm::wedge`).
        let watched = news.shared_locks().is_some();
        while done < n {
            if watched {
                news.beat();
            }
            let mut moved = false;
            if !all_connected {
                let mut link = Link {
                    transport: &mut *transport,
                    conns: &mut *conns,
                    listener: &mut *listener,
                    greeter: &mut *greeter,
                    rank,
                    size,
                };
                moved |= link.progress_pending(&what)?;
                all_connected = connected(conns);
            }
            // Local work first: it may unblock sends.
            while let Some(i) = ready.pop() {
                apply(i as usize, arrived, &mut stage)
                    .map_err(|e| e.context(format!("rank {rank}: {what}")))?;
                done += 1;
                moved = true;
                release(i as usize, first, edges, left, ready, arrived, sched);
            }
            let mut mismatch = None;
            for q in queues.iter_mut() {
                if mismatch.is_some() {
                    break;
                }
                let ctx = |e: Error| {
                    let dir = if q.send {
                        "sending to"
                    } else {
                        "receiving from"
                    };
                    e.context(format!(
                        "rank {rank}: {what}: {dir} rank {} (channel {})",
                        q.peer, q.ch
                    ))
                };
                // Completions, oldest first.
                while let Some((i, req, st)) = q.in_flight.front_mut() {
                    let Some(c) = transport.test(req).map_err(ctx)? else {
                        break;
                    };
                    let (i, st) = (*i as usize, *st);
                    q.in_flight.pop_front();
                    moved = true;
                    if !q.send {
                        let p = part(i);
                        let st = &sched.steps[i];
                        let expect = with_word(p.expect, st.word);
                        if let Err(e) = check_message(&p.desc, expect, c.tag, c.bytes, &st.action) {
                            mismatch = Some(ctx(e));
                            break;
                        }
                    }
                    match (st, sched.steps[i].action) {
                        (Some(si), Action::RecvReduce { .. }) => {
                            arrived[i] = Some(si);
                            if left[i] == 0 {
                                ready.push(i as u32);
                            }
                        }
                        _ => {
                            done += 1;
                            release(i, first, edges, left, ready, arrived, sched);
                        }
                    }
                }
                if mismatch.is_some() {
                    break;
                }
                // Posts, in order.
                while q.next < q.steps.len() && q.in_flight.len() < max_in_flight {
                    let i = q.steps[q.next] as usize;
                    let key = (q.peer, q.ch);
                    let posted = match sched.steps[i].action {
                        Action::Send { src, .. } => {
                            if left[i] > 0 {
                                break;
                            }
                            let Some(conn) = conns.send.get_mut(&key) else {
                                break;
                            };
                            // SAFETY: the span is in bounds and, by the schedule's dependencies,
                            // nobody writes it before this send completes.
                            unsafe {
                                transport.isend(
                                    conn,
                                    ptr(i, &src),
                                    src.len,
                                    with_word(tags[pidx(i)], sched.steps[i].word),
                                    region_of(i, &src).map(|k| &regions[k]),
                                )
                            }
                            .map_err(ctx)?
                            .map(|r| (r, None))
                        }
                        Action::Recv { dst, .. } => {
                            if left[i] > 0 {
                                break;
                            }
                            let Some(conn) = conns.recv.get_mut(&key) else {
                                break;
                            };
                            let r = region_of(i, &dst).map(|k| &regions[k]);
                            // SAFETY: in bounds, and only this receive writes it until done.
                            unsafe { transport.irecv(conn, ptr(i, &dst), dst.len, r) }
                                .map_err(ctx)?
                                .map(|r| (r, None))
                        }
                        Action::RecvReduce { dst, .. } => {
                            let Some(conn) = conns.recv.get_mut(&key) else {
                                break;
                            };
                            let si = stage.take();
                            let k = stage.region(si, &mut *transport, regions).map_err(ctx)?;
                            let buf = stage.pool[si].as_mut_ptr();
                            // SAFETY: the staging buffer is ours until the reduce releases it.
                            match unsafe { transport.irecv(conn, buf, dst.len, Some(&regions[k])) }
                                .map_err(ctx)?
                            {
                                Some(r) => Some((r, Some(si))),
                                None => {
                                    stage.free.push(si);
                                    None
                                }
                            }
                        }
                        _ => {
                            return Err(Error::internal(format!(
                                "rank {rank}: {what}: local step {i} queued"
                            )))
                        }
                    };
                    match posted {
                        Some((r, st)) => {
                            q.in_flight.push_back((i as u32, r, st));
                            q.next += 1;
                            moved = true;
                        }
                        None => break,
                    }
                }
            }
            if let Some(e) = mismatch {
                // Let the sends already under way reach the peer, so that it sees the
                // disagreement too instead of only this rank's departure.
                drain_sends(transport, queues, Duration::from_millis(200));
                return Err(e);
            }
            if moved {
                idle = 0;
                spin_from = None;
                last_progress = None;
                if stalled {
                    news.set_stalled(None);
                    stalled = false;
                }
                // A failure posted for the job (a rank's mismatch, a call from a second
                // thread) ends a call that still moves too: it may be paired wrongly.
                if news.any() {
                    if let Some(e) = news.posted(rank, &what) {
                        return Err(e);
                    }
                }
                continue;
            }
            if abort.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(Error::invalid_usage(format!(
                    "rank {rank}: {what}: the communicator was aborted"
                )));
            }
            idle = idle.saturating_add(1);
            // A rank with a core of its own spins SPIN_MIN more before it sleeps: polls
            // of shared memory take tens of nanoseconds, so the count alone would put it to
            // sleep (and a peer a little late would pay a wake-up) far sooner than over a
            // socket. Ranks that yield, or told not to spin, sleep when the count says.
            if idle > cfg.spin
                && (cfg.spin == 0
                    || cfg.yield_when_idle
                    || spin_from.get_or_insert_with(Instant::now).elapsed() >= SPIN_MIN)
            {
                // A peer that left (its own error, a mismatch, an abort) shows as a closed
                // connection: find out now rather than at the timeout. Only peers this rank
                // still owes or expects data count: one whose part of the call is done may
                // already have finished and exited, which is no failure.
                let busy = |p: usize| {
                    queues
                        .iter()
                        .any(|q| q.peer == p && (q.next < q.steps.len() || !q.in_flight.is_empty()))
                };
                for q in queues.iter().filter(|q| q.send && busy(q.peer)) {
                    if let Some(c) = conns.send.get_mut(&(q.peer, q.ch)) {
                        transport.check_send(c).map_err(|e| {
                            e.context(format!(
                                "rank {rank}: {what}: rank {} (channel {})",
                                q.peer, q.ch
                            ))
                        })?;
                    }
                }
                let waited = last_progress.get_or_insert_with(Instant::now).elapsed();
                if news.any() {
                    if let Some(e) = news.failure(rank, &what.to_string(), busy) {
                        return Err(e);
                    }
                    // A rank that never connected and whose process (the store's) ended.
                    if let Some(h) = news.host_gone().filter(|&h| h != rank) {
                        let unconnected = need_recv
                            .iter()
                            .any(|k| k.0 == h && !conns.recv.contains_key(k))
                            || need_send
                                .iter()
                                .any(|k| k.0 == h && !conns.send.contains_key(k));
                        if unconnected {
                            return Err(Error::remote(format!(
                                "rank {rank}: {what}: rank {h} left the job: its process, which \
                                 served the job's store, ended before it connected here"
                            )));
                        }
                    }
                }
                if waited >= STALL_NOTICE && !stalled {
                    // Described only now: formatting it for every call costs small ones.
                    news.set_stalled(stall_desc.map(|seq| (seq, what.to_string())));
                    stalled = true;
                }
                if waited >= cfg.timeout {
                    if let Some((f, _)) = news.silent().into_iter().find(|&(f, _)| f != rank) {
                        return Err(Error::timeout(format!(
                            "rank {f} made no progress for {:.1}s: its process answers \
                             nothing, not even the job's store (stopped or frozen); rank \
                             {rank} waited for it in {what}",
                            waited.as_secs_f64()
                        )));
                    }
                    return Err(Error::timeout(format!(
                        "rank {rank}: {what}: no progress for {:.1}s; {}",
                        waited.as_secs_f64(),
                        waiting_for(
                            queues,
                            left,
                            need_recv,
                            |k| { conns.recv.contains_key(k) },
                            need_send,
                            |k| conns.send.contains_key(k)
                        )
                    )));
                }
                if all_connected {
                    // A stranger waiting on the listener (a scanner, an idle connection)
                    // would wake the wait below at once, every time: accept it, so that it
                    // is read, timed out and dropped.
                    Link {
                        transport: &mut *transport,
                        conns: &mut *conns,
                        listener: &mut *listener,
                        greeter: &mut *greeter,
                        rank,
                        size,
                    }
                    .progress_pending(&what)?;
                }
                transport
                    .wait_activity(Duration::from_millis(1).min(cfg.timeout - waited))
                    .map_err(|e| e.context(format!("rank {rank}: {what}")))?;
            } else if cfg.yield_when_idle {
                std::thread::yield_now();
            } else if idle % 64 == 0 {
                std::hint::spin_loop();
            }
        }
        Ok(())
    }
}

/// Marks step `i` done: its dependents lose one dependency, and local ones that became
/// runnable (or receive-reduces whose data already came) join `ready`.
fn release(
    i: usize,
    first: &[u32],
    edges: &[u32],
    left: &mut [u32],
    ready: &mut Vec<u32>,
    arrived: &[Option<usize>],
    sched: &Schedule,
) {
    for &d in &edges[first[i] as usize..first[i + 1] as usize] {
        let d = d as usize;
        left[d] -= 1;
        if left[d] == 0 {
            match sched.steps[d].action {
                Action::Copy { .. } | Action::Finalize { .. } => ready.push(d as u32),
                Action::RecvReduce { .. } if arrived[d].is_some() => ready.push(d as u32),
                _ => {}
            }
        }
    }
}

/// After a mismatch: completes the sends already posted, for at most `bound` (errors are
/// ignored, the call fails anyway). Nothing new is posted.
fn drain_sends<T: Transport>(transport: &mut T, queues: &mut [Queue<T::Request>], bound: Duration) {
    let end = Instant::now() + bound;
    loop {
        let mut pending = false;
        for q in queues.iter_mut().filter(|q| q.send) {
            while let Some((_, req, _)) = q.in_flight.front_mut() {
                match transport.test(req) {
                    Ok(Some(_)) | Err(_) => {
                        q.in_flight.pop_front();
                    }
                    Ok(None) => {
                        pending = true;
                        break;
                    }
                }
            }
        }
        let now = Instant::now();
        if !pending || now >= end {
            return;
        }
        let _ = transport.wait_activity((end - now).min(Duration::from_millis(1)));
    }
}

/// `tag` with its count word replaced by a step's own word, if it has one.
fn with_word(mut tag: Tag, word: Option<u64>) -> Tag {
    if let Some(w) = word {
        tag[2] = w;
    }
    tag
}

/// Checks that a received message belongs to the call this rank is in, and has the size
/// this rank expects.
fn check_message(
    desc: &CallDesc,
    expect: Tag,
    tag: Tag,
    bytes: usize,
    action: &Action,
) -> Result<()> {
    let want = match action {
        Action::Recv { dst, .. } | Action::RecvReduce { dst, .. } => dst.len,
        _ => bytes,
    };
    if tag != expect && tag[..2] == expect[..2] && desc.kind == crate::algo::Kind::AllToAllV {
        let half = |w: u64| (w & 0xffff_ffff, w >> 32);
        let ((they_send, they_expect), (we_expect, we_send)) = (half(tag[2]), half(expect[2]));
        return Err(Error::invalid_usage(format!(
            "mismatched counts in {}: the peer sends {they_send} elements to this rank and \
             expects {they_expect} from it, but this rank expects {we_expect} and sends \
             {we_send} (sendcounts and recvcounts must agree for every pair)",
            desc.describe()
        )));
    }
    if tag != expect {
        let theirs = match CallDesc::from_tag(tag) {
            Some(d) => d.describe(),
            None => format!("an unknown message (tag {tag:x?})"),
        };
        return Err(Error::invalid_usage(format!(
            "mismatched calls: this rank is in {} but the peer sent a message of {theirs}",
            desc.describe()
        )));
    }
    if bytes != want {
        return Err(Error::invalid_usage(format!(
            "message of {bytes} bytes where {want} were expected (ranks passed different counts?)"
        )));
    }
    Ok(())
}

/// What a stalled call is waiting for, for the timeout message.
fn waiting_for<R>(
    queues: &[Queue<R>],
    left: &[u32],
    need_recv: &[(usize, u16)],
    connected: impl Fn(&(usize, u16)) -> bool,
    need_send: &[(usize, u16)],
    connected_to: impl Fn(&(usize, u16)) -> bool,
) -> String {
    let mut absent: Vec<usize> = need_recv
        .iter()
        .filter(|k| !connected(k))
        .chain(need_send.iter().filter(|k| !connected_to(k)))
        .map(|k| k.0)
        .collect();
    absent.sort_unstable();
    absent.dedup();
    if !absent.is_empty() {
        return format!("waiting for {} to connect", ranks(&absent));
    }
    let mut recv_from = Vec::new();
    let mut send_to = Vec::new();
    for q in queues {
        let pending = !q.in_flight.is_empty() || q.next < q.steps.len();
        if !pending {
            continue;
        }
        let blocked_on_deps =
            q.in_flight.is_empty() && q.steps.get(q.next).is_some_and(|&i| left[i as usize] > 0);
        if blocked_on_deps {
            continue;
        }
        if q.send {
            send_to.push(q.peer);
        } else {
            recv_from.push(q.peer);
        }
    }
    recv_from.sort_unstable();
    recv_from.dedup();
    send_to.sort_unstable();
    send_to.dedup();
    match (recv_from.is_empty(), send_to.is_empty()) {
        (false, _) => format!("waiting for data from {}", ranks(&recv_from)),
        (true, false) => format!("waiting to send to {}", ranks(&send_to)),
        (true, true) => "waiting on local work".to_string(),
    }
}
