//! One call's state machine, without IO (quinn-proto's model): given a [`Schedule`], the
//! completions of what was posted and a clock, it says what to post, test and apply next.
//!
//! The engine (`crate::engine`) drives it over a real transport; the simulator
//! ([`super::sim`]) drives the very same code over simulated connections on a virtual
//! clock, with seeded reordering and injected failures. Neither re-implements the rules:
//!
//! * per connection (peer, channel, direction) steps are posted strictly in schedule order,
//!   which is what makes the k-th send meet the k-th receive;
//! * sends and plain receives are posted once their dependencies are done; a receive-reduce
//!   is posted at once (into a staging buffer the driver owns) and applied when both its
//!   data and its dependencies are there;
//! * only the oldest request of each connection is tested: transports complete a
//!   connection's requests in order;
//! * at most `max_in_flight` requests are under way per connection.
//!
//! The machine holds the driver's requests (`R`, opaque here) so that nothing else keeps a
//! second copy of what is in flight. Its memory is reused from call to call: a warm call of
//! a shape run before allocates nothing.

mod pace;
mod wait;

pub use pace::{Clock, Idle, Pace, PaceConfig, VirtualClock, WallClock, SPIN_MIN, STALL_NOTICE};
pub use wait::{ranks, waiting_for};

use std::collections::VecDeque;

use super::{Action, BufId, Schedule, Span};

/// A posted request and the step it belongs to.
#[derive(Debug)]
pub struct Posted<R> {
    /// The step.
    pub step: u32,
    /// The driver's request.
    pub request: R,
    /// The staging buffer a receive-reduce landed in (the driver's index).
    pub stage: Option<usize>,
}

/// One connection's steps, in schedule order.
#[derive(Debug)]
pub struct Queue<R> {
    peer: usize,
    channel: u16,
    send: bool,
    steps: Vec<u32>,
    next: usize,
    in_flight: VecDeque<Posted<R>>,
}

impl<R> Queue<R> {
    /// The rank at the other end.
    pub fn peer(&self) -> usize {
        self.peer
    }

    /// The channel.
    pub fn channel(&self) -> u16 {
        self.channel
    }

    /// Whether this rank sends on it (else it receives).
    pub fn sends(&self) -> bool {
        self.send
    }

    /// Whether anything is left to post or to complete.
    pub fn pending(&self) -> bool {
        self.next < self.steps.len() || !self.in_flight.is_empty()
    }

    /// The oldest request under way.
    pub fn oldest(&self) -> Option<&Posted<R>> {
        self.in_flight.front()
    }

    /// The requests under way, oldest first.
    pub fn in_flight_mut(&mut self) -> &mut VecDeque<Posted<R>> {
        &mut self.in_flight
    }

    /// Whether the next step to post waits for its dependencies (and nothing is under way).
    fn blocked_on_deps(&self, left: &[u32]) -> bool {
        self.in_flight.is_empty()
            && self
                .steps
                .get(self.next)
                .is_some_and(|&i| left[i as usize] > 0)
    }
}

/// A call's progress: queues per connection, dependency counters, runnable local steps.
#[derive(Debug)]
pub struct Machine<R> {
    queues: Vec<Queue<R>>,
    /// The step lists and request queues of earlier calls' queues, for reuse.
    spare: Vec<(Vec<u32>, VecDeque<Posted<R>>)>,
    /// Dependencies not yet done, per step.
    left: Vec<u32>,
    /// `edges[first[i]..first[i + 1]]` are the steps that depend on step `i`.
    first: Vec<u32>,
    edges: Vec<u32>,
    fill: Vec<u32>,
    /// The staging buffer of a receive-reduce whose data came.
    arrived: Vec<Option<usize>>,
    /// Local steps (copy, finalize, a receive-reduce with its data) ready to apply.
    ready: Vec<u32>,
    done: usize,
    steps: usize,
    max_in_flight: usize,
}

impl<R> Default for Machine<R> {
    fn default() -> Self {
        Machine {
            queues: Vec::new(),
            spare: Vec::new(),
            left: Vec::new(),
            first: Vec::new(),
            edges: Vec::new(),
            fill: Vec::new(),
            arrived: Vec::new(),
            ready: Vec::new(),
            done: 0,
            steps: 0,
            max_in_flight: 1,
        }
    }
}

/// The first thing wrong with a step, for [`Machine::load`]: its spans must lie within
/// `limit(step, buffer)` bytes, its dependencies come before it, and its peer be another
/// rank of `size`. Returns the length a receive-reduce needs staged (0 for other steps).
fn check_step(
    i: usize,
    st: &super::Step,
    me: usize,
    size: usize,
    limit: &impl Fn(usize, BufId) -> usize,
) -> Result<usize, String> {
    let (spans, stage): (&[Span], usize) = match &st.action {
        Action::Send { src, .. } => (std::slice::from_ref(src), 0),
        Action::Recv { dst, .. } | Action::Finalize { span: dst } => (std::slice::from_ref(dst), 0),
        Action::RecvReduce { dst, local, .. } => {
            if local.len != dst.len {
                return Err(format!("step {i} reduces spans of different lengths"));
            }
            (&[], dst.len)
        }
        Action::Copy { src, dst } => {
            if src.len != dst.len {
                return Err(format!("step {i} copies spans of different lengths"));
            }
            (&[], 0)
        }
    };
    let pair: [Span; 2];
    let extra: &[Span] = match &st.action {
        Action::RecvReduce { dst, local, .. } | Action::Copy { src: local, dst } => {
            pair = [*dst, *local];
            &pair
        }
        _ => &[],
    };
    for s in spans.iter().chain(extra) {
        let bound = limit(i, s.buf);
        if s.end() > bound {
            return Err(format!(
                "step {i} touches {:?} bytes {}..{} beyond its {bound} bytes",
                s.buf,
                s.off,
                s.end()
            ));
        }
    }
    if st.deps.iter().any(|&d| d as usize >= i) {
        return Err(format!("step {i} depends on a later step"));
    }
    match st.action.peer() {
        Some(peer) if peer >= size || peer == me => Err(format!("step {i} talks to rank {peer}")),
        _ => Ok(stage),
    }
}

impl<R> Machine<R> {
    /// Starts a call: checks `sched` (see [`check_step`]), builds its queues and dependency
    /// counters, dropping what is left of the previous call (a driver recycles after each
    /// call too, so that a failed call's requests do not wait for the next one). Returns
    /// the largest receive-reduce, the size a staging buffer needs.
    pub fn load(
        &mut self,
        sched: &Schedule,
        me: usize,
        size: usize,
        max_in_flight: usize,
        limit: impl Fn(usize, BufId) -> usize,
    ) -> Result<usize, String> {
        self.recycle();
        let mut stage_len = 0;
        for (i, st) in sched.steps.iter().enumerate() {
            stage_len = stage_len.max(check_step(i, st, me, size, &limit)?);
            if let Some(peer) = st.action.peer() {
                let send = matches!(st.action, Action::Send { .. });
                let q = self.queue_of(peer, st.channel, send);
                self.queues[q].steps.push(i as u32);
            }
        }
        self.link(sched);
        self.max_in_flight = max_in_flight.max(1);
        Ok(stage_len)
    }

    /// The queue of a connection, made (with reused memory) on first use. Schedules talk
    /// to few connections: a linear search beats hashing.
    fn queue_of(&mut self, peer: usize, channel: u16, send: bool) -> usize {
        let found = self
            .queues
            .iter()
            .position(|q| q.peer == peer && q.channel == channel && q.send == send);
        found.unwrap_or_else(|| {
            let (mut steps, mut in_flight) = self.spare.pop().unwrap_or_default();
            steps.clear();
            in_flight.clear();
            self.queues.push(Queue {
                peer,
                channel,
                send,
                steps,
                next: 0,
                in_flight,
            });
            self.queues.len() - 1
        })
    }

    /// Dependency counters, the reverse edges, and the local steps runnable at once.
    fn link(&mut self, sched: &Schedule) {
        let n = sched.steps.len();
        self.steps = n;
        self.done = 0;
        self.left.clear();
        self.left
            .extend(sched.steps.iter().map(|s| s.deps.len() as u32));
        self.first.clear();
        self.first.resize(n + 1, 0);
        for s in &sched.steps {
            for &d in &s.deps {
                self.first[d as usize + 1] += 1;
            }
        }
        for i in 0..n {
            self.first[i + 1] += self.first[i];
        }
        self.fill.clear();
        self.fill.extend_from_slice(&self.first);
        self.edges.clear();
        self.edges.resize(self.first[n] as usize, 0);
        for (i, s) in sched.steps.iter().enumerate() {
            for &d in &s.deps {
                self.edges[self.fill[d as usize] as usize] = i as u32;
                self.fill[d as usize] += 1;
            }
        }
        self.arrived.clear();
        self.arrived.resize(n, None);
        self.ready.clear();
        let left = &self.left;
        self.ready.extend(
            (0..n as u32).filter(|&i| {
                left[i as usize] == 0 && sched.steps[i as usize].action.peer().is_none()
            }),
        );
    }

    /// Keeps the call's queues' memory for the next call. Requests still held (a failed
    /// call's) are dropped.
    pub fn recycle(&mut self) {
        for q in self.queues.drain(..) {
            self.spare.push((q.steps, q.in_flight));
        }
    }

    /// Whether every step is done.
    pub fn finished(&self) -> bool {
        self.done >= self.steps
    }

    /// The connections this call uses.
    pub fn queues(&self) -> &[Queue<R>] {
        &self.queues
    }

    /// The connections this call uses, for the driver's tests and drains.
    pub fn queues_mut(&mut self) -> &mut [Queue<R>] {
        &mut self.queues
    }

    /// Whether this call still sends to or expects data from `peer`.
    pub fn busy(&self, peer: usize) -> bool {
        self.queues.iter().any(|q| q.peer == peer && q.pending())
    }

    /// A local step ready to apply: a copy, a finalize, or a receive-reduce whose data
    /// came (its staging buffer: [`Machine::take_arrived`]). Apply it, then
    /// [`Machine::complete_local`].
    pub fn pop_ready(&mut self) -> Option<u32> {
        self.ready.pop()
    }

    /// Whether a local step is ready.
    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// The staging buffer of receive-reduce `step`, once.
    pub fn take_arrived(&mut self, step: u32) -> Option<usize> {
        self.arrived[step as usize].take()
    }

    /// Marks local `step` done.
    pub fn complete_local(&mut self, step: u32, sched: &Schedule) {
        self.done += 1;
        self.release(step as usize, sched);
    }

    /// The oldest request of queue `q`, to test.
    pub fn oldest(&mut self, q: usize) -> Option<&mut Posted<R>> {
        self.queues[q].in_flight.front_mut()
    }

    /// The oldest request of queue `q` finished (and its message was checked): a send or
    /// plain receive is done; a receive-reduce waits to be applied. Returns its step.
    pub fn complete_oldest(&mut self, q: usize, sched: &Schedule) -> Option<u32> {
        let p = self.queues[q].in_flight.pop_front()?;
        let i = p.step as usize;
        match (p.stage, sched.steps[i].action) {
            (Some(si), Action::RecvReduce { .. }) => {
                self.arrived[i] = Some(si);
                if self.left[i] == 0 {
                    self.ready.push(p.step);
                }
            }
            _ => {
                self.done += 1;
                self.release(i, sched);
            }
        }
        Some(p.step)
    }

    /// The step queue `q` may post now: the next in order, if the queue has room and (for
    /// sends and plain receives) its dependencies are done.
    pub fn next_post(&self, q: usize, sched: &Schedule) -> Option<u32> {
        let queue = &self.queues[q];
        if queue.in_flight.len() >= self.max_in_flight {
            return None;
        }
        let &i = queue.steps.get(queue.next)?;
        let staged = matches!(sched.steps[i as usize].action, Action::RecvReduce { .. });
        (staged || self.left[i as usize] == 0).then_some(i)
    }

    /// The step [`Machine::next_post`] gave was posted as `request`.
    pub fn posted(&mut self, q: usize, request: R, stage: Option<usize>) {
        let queue = &mut self.queues[q];
        let step = queue.steps[queue.next];
        queue.next += 1;
        queue.in_flight.push_back(Posted {
            step,
            request,
            stage,
        });
    }

    /// Step `i` is done: its dependents lose one dependency, and local ones that became
    /// runnable (or receive-reduces whose data already came) become ready.
    fn release(&mut self, i: usize, sched: &Schedule) {
        let (a, b) = (self.first[i] as usize, self.first[i + 1] as usize);
        for &d in &self.edges[a..b] {
            let d = d as usize;
            self.left[d] -= 1;
            if self.left[d] == 0 {
                match sched.steps[d].action {
                    Action::Copy { .. } | Action::Finalize { .. } => self.ready.push(d as u32),
                    Action::RecvReduce { .. } if self.arrived[d].is_some() => {
                        self.ready.push(d as u32)
                    }
                    _ => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
