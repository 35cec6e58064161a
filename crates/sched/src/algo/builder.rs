//! Appends steps to a schedule and hands out scratch space.

use super::{Action, Schedule, Span, Step};

/// Builds a [`Schedule`] step by step. Dependencies are given as `Option<u32>` so that
/// builders can pass "the step before, if there was one" without branching.
#[derive(Debug)]
pub struct ScheduleBuilder {
    steps: Vec<Step>,
    scratch: usize,
    nchannels: usize,
}

impl ScheduleBuilder {
    /// An empty schedule over `nchannels` channels (at least one).
    pub fn new(nchannels: usize) -> Self {
        ScheduleBuilder {
            steps: Vec::new(),
            scratch: 0,
            nchannels: nchannels.max(1),
        }
    }

    /// The channel that chunk number `chunk` travels on.
    pub fn channel(&self, chunk: usize) -> u16 {
        (chunk % self.nchannels) as u16
    }

    fn push(&mut self, action: Action, channel: u16, deps: &[Option<u32>]) -> u32 {
        let id = self.steps.len() as u32;
        let mut d: Vec<u32> = deps.iter().flatten().copied().collect();
        d.sort_unstable();
        d.dedup();
        self.steps.push(Step {
            action,
            channel,
            deps: d,
            word: None,
        });
        id
    }

    /// Sets the count word step `id`'s message carries (send) or must carry (receive).
    pub fn set_word(&mut self, id: u32, word: u64) {
        if let Some(s) = self.steps.get_mut(id as usize) {
            s.word = Some(word);
        }
    }

    /// Sends `src` to `peer` on channel `ch`.
    pub fn send(&mut self, peer: usize, src: Span, ch: u16, deps: &[Option<u32>]) -> u32 {
        self.push(Action::Send { peer, src }, ch, deps)
    }

    /// Receives from `peer` into `dst` on channel `ch`.
    pub fn recv(&mut self, peer: usize, dst: Span, ch: u16, deps: &[Option<u32>]) -> u32 {
        self.push(Action::Recv { peer, dst }, ch, deps)
    }

    /// Receives from `peer` and stores `op(local, incoming)` in `dst`.
    pub fn recv_reduce(
        &mut self,
        peer: usize,
        dst: Span,
        local: Span,
        ch: u16,
        deps: &[Option<u32>],
    ) -> u32 {
        self.push(Action::RecvReduce { peer, dst, local }, ch, deps)
    }

    /// Copies `src` to `dst`.
    pub fn copy(&mut self, src: Span, dst: Span, deps: &[Option<u32>]) -> u32 {
        self.push(Action::Copy { src, dst }, 0, deps)
    }

    /// Copies `len` elements (`at` gives the source and destination spans of an element
    /// range) in `pieces` near-equal pieces, piece j once step `after[j]` is done (the last
    /// of `after` for pieces past its end; at once where `after` is empty). For a copy that
    /// must not hold up the sends listed: the engine runs ready local steps before it posts,
    /// so one large copy first would delay every send, while pieces behind the sends
    /// interleave with the traffic.
    pub fn copy_behind(
        &mut self,
        len: usize,
        pieces: usize,
        at: impl Fn((usize, usize)) -> (Span, Span),
        after: &[u32],
    ) {
        if len == 0 {
            return;
        }
        let pieces = pieces.clamp(1, len);
        for j in 0..pieces {
            let (src, dst) = at(super::chunks::part(len, pieces, j));
            let dep = after.get(j).or(after.last()).copied();
            self.copy(src, dst, &[dep]);
        }
    }

    /// Divides `span` by the rank count.
    pub fn finalize(&mut self, span: Span, deps: &[Option<u32>]) -> u32 {
        self.push(Action::Finalize { span }, 0, deps)
    }

    /// Reserves `len` bytes of scratch space, 64-byte aligned.
    pub fn scratch(&mut self, len: usize) -> Span {
        let off = self.scratch.div_ceil(64) * 64;
        self.scratch = off + len;
        Span::new(super::BufId::Scratch, off, len)
    }

    /// The finished schedule.
    pub fn finish(self) -> Schedule {
        Schedule {
            steps: self.steps,
            scratch_bytes: self.scratch,
        }
    }
}
