//! One running call's fixed facts (its parts, steps, buffers and their registrations), the
//! local steps applied to its memory, and the check of every message it receives.

use super::exec::{Described, Part};
use super::tag::CallDesc;
use crate::algo::{Action, BufId, Schedule, Span};
use crate::error::{Error, Result};
use crate::reduce::{finalize_avg, reduce_into, reduce_to};
use crate::transport::{Tag, Transport};

/// Staging buffers for receive-reduce, reused across calls.
pub(super) struct Staging<'a> {
    pub pool: &'a mut Vec<Vec<u8>>,
    pub free: &'a mut Vec<usize>,
    pub len: usize,
    /// Each pool buffer's registration for this call (an index into the call's regions).
    pub reg: &'a mut Vec<Option<usize>>,
}

impl Staging<'_> {
    /// A free buffer, made if none is.
    pub fn take(&mut self) -> usize {
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
    pub fn region<T: Transport>(
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

/// Registers the call's buffers whole (a transport registers lazily, if at all) into
/// `regions`: each part's (send, receive) registrations go to `part_regs`; returns
/// scratch's.
pub(super) fn register_buffers<T: Transport>(
    transport: &mut T,
    parts: &[Part<'_>],
    scratch: &[u8],
    regions: &mut Vec<T::MemRegion>,
    part_regs: &mut Vec<(Option<usize>, Option<usize>)>,
) -> Result<Option<usize>> {
    let mut reg = |p: *const u8, len: usize| -> Result<Option<usize>> {
        if len == 0 || p.is_null() {
            return Ok(None);
        }
        regions.push(transport.register(p, len)?);
        Ok(Some(regions.len() - 1))
    };
    part_regs.clear();
    for p in parts {
        let s = reg(p.bufs.send, p.bufs.send_len)?;
        let r = reg(p.bufs.recv, p.bufs.recv_len)?;
        part_regs.push((s, r));
    }
    reg(scratch.as_ptr(), scratch.len())
}

/// A running call. Its steps were checked against its buffers when the state machine
/// loaded them, so every span lies within its buffer.
pub(super) struct Call<'a, 'b> {
    pub parts: &'a [Part<'b>],
    pub sched: &'a Schedule,
    /// The part of each step; empty when there is one part.
    pub part_of: &'a [u32],
    pub rank: usize,
    pub size: usize,
    pub scratch: *mut u8,
    pub part_regs: &'a [(Option<usize>, Option<usize>)],
    pub scratch_reg: Option<usize>,
    /// Each part's message tag.
    pub tags: &'a [Tag],
}

impl<'b> Call<'_, 'b> {
    /// The calls, for messages.
    pub fn what(&self) -> Described<'_, 'b> {
        Described(self.parts)
    }

    fn index(&self, i: usize) -> usize {
        self.part_of.get(i).map_or(0, |&p| p as usize)
    }

    /// The part step `i` belongs to.
    pub fn part(&self, i: usize) -> &Part<'b> {
        &self.parts[self.index(i)]
    }

    /// The tag step `i`'s message carries.
    pub fn tag(&self, i: usize) -> Tag {
        with_word(self.tags[self.index(i)], self.sched.steps[i].word)
    }

    /// The registration (an index into the call's regions) of the buffer `s` lies in.
    pub fn region_of(&self, i: usize, s: &Span) -> Option<usize> {
        let (send, recv) = self.part_regs[self.index(i)];
        match s.buf {
            BufId::Send => send,
            BufId::Recv => recv,
            BufId::Scratch => self.scratch_reg,
        }
    }

    /// Where span `s` of step `i` starts (a dangling pointer for an empty span).
    pub fn ptr(&self, i: usize, s: &Span) -> *mut u8 {
        let bufs = &self.part(i).bufs;
        let base = match s.buf {
            BufId::Send => bufs.send as *mut u8,
            BufId::Recv => bufs.recv,
            BufId::Scratch => self.scratch,
        };
        if s.len == 0 || base.is_null() {
            return std::ptr::NonNull::<u8>::dangling().as_ptr();
        }
        // SAFETY: the state machine checked the span against its buffer's length.
        unsafe { base.add(s.off) }
    }

    /// Runs local step `i` (a copy, a finalize, or a receive-reduce of the data `incoming`).
    ///
    /// # Safety
    /// The call's buffers are valid (the engine's callers promise it), and by the
    /// schedule's dependencies no other step touches the bytes this one writes meanwhile.
    pub unsafe fn apply(&self, i: usize, incoming: Option<&[u8]>) -> Result<()> {
        match self.sched.steps[i].action {
            Action::Copy { src, dst } => {
                let (s, d) = (self.ptr(i, &src), self.ptr(i, &dst));
                if s != d && src.len > 0 {
                    // SAFETY: both in bounds; `copy_bytes` allows overlap.
                    unsafe { crate::reduce::copy_bytes(s, d, src.len) };
                }
            }
            Action::Finalize { span } => {
                // SAFETY: in bounds, and no other step touches it meanwhile.
                let b = unsafe { std::slice::from_raw_parts_mut(self.ptr(i, &span), span.len) };
                finalize_avg(self.part(i).desc.dtype, b, self.size);
            }
            Action::RecvReduce { dst, local, .. } => {
                let inc = incoming.ok_or_else(|| Error::internal("reduce without data"))?;
                // SAFETY: forwarded.
                unsafe { self.reduce(i, dst, local, &inc[..dst.len]) }?;
            }
            _ => return Err(Error::internal("not a local step")),
        }
        Ok(())
    }

    /// Stores `op(local, inc)` into `dst` for step `i`.
    ///
    /// # Safety
    /// As [`Call::apply`].
    unsafe fn reduce(&self, i: usize, dst: Span, local: Span, inc: &[u8]) -> Result<()> {
        let (d, l) = (self.ptr(i, &dst), self.ptr(i, &local));
        let (dtype, op) = (self.part(i).desc.dtype, self.part(i).desc.op);
        if d == l {
            // SAFETY: in bounds; the schedule gives this step sole use of `dst`.
            let acc = unsafe { std::slice::from_raw_parts_mut(d, dst.len) };
            reduce_into(dtype, op, acc, inc);
            return Ok(());
        }
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
        Ok(())
    }

    /// Checks a message received for step `i`: it belongs to the call this rank is in and
    /// has the size this rank expects.
    pub fn check_message(&self, i: usize, tag: Tag, bytes: usize) -> Result<()> {
        let p = self.part(i);
        let st = &self.sched.steps[i];
        check_message(
            &p.desc,
            with_word(p.expect, st.word),
            tag,
            bytes,
            &st.action,
        )
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
