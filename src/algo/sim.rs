//! An in-memory interpreter that runs every rank's schedule against the others in a seeded
//! random order, the way the engine would but with no transport: the proof that a schedule
//! is right before any socket is involved.
//!
//! It follows the engine's rules: per connection, sends are posted in schedule order once
//! their dependencies are done and deliver in that order; receives are posted in schedule
//! order (a plain receive also waits for its dependencies; a receive-reduce is staged early
//! and applied once its dependencies are done). A send's bytes are read when it is
//! delivered, not when it is posted, and writing to bytes of a send still in flight is
//! reported as a hazard, so a missing dependency shows up even when the data happens to be
//! right.

use std::collections::{BTreeMap, HashMap, VecDeque};

use super::{Action, BufId, Schedule, Span};
use crate::reduce::{finalize_avg, reduce_into, reduce_to, DataType, ReduceOp};

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

impl SimRank {
    fn addr(&self, s: Span) -> (usize, usize) {
        let base = match s.buf {
            BufId::Send => self.send_base,
            BufId::Recv => self.recv_base,
            BufId::Scratch => self.scratch_base,
        };
        (base + s.off, base + s.off + s.len)
    }
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

#[derive(Clone, Copy, PartialEq, Eq)]
enum Ev {
    Local(usize, usize),
    PostSend(usize, (usize, usize, u16)),
    Deliver((usize, usize, u16)),
    PostRecv(usize, (usize, usize, u16)),
    Apply(usize, usize),
}

/// Runs all ranks' schedules to completion in a random order drawn from `seed`.
/// Errors describe the first hazard, size mismatch or deadlock found.
pub fn run(ranks: &mut [SimRank], dtype: DataType, op: ReduceOp, seed: u64) -> Result<(), String> {
    let n = ranks.len();
    let mut rng = SplitMix(seed);
    let mut left: Vec<Vec<usize>> = ranks
        .iter()
        .map(|r| r.schedule.steps.iter().map(|s| s.deps.len()).collect())
        .collect();
    let mut dependents: Vec<Vec<Vec<usize>>> = ranks
        .iter()
        .map(|r| {
            let mut d = vec![Vec::new(); r.schedule.steps.len()];
            for (i, s) in r.schedule.steps.iter().enumerate() {
                for &x in &s.deps {
                    d[x as usize].push(i);
                }
            }
            d
        })
        .collect();
    let mut done: Vec<Vec<bool>> = ranks
        .iter()
        .map(|r| vec![false; r.schedule.steps.len()])
        .collect();
    // Per connection (src, dst, channel): the sender's and receiver's steps in order.
    let mut sends: BTreeMap<(usize, usize, u16), VecDeque<usize>> = BTreeMap::new();
    let mut recvs: BTreeMap<(usize, usize, u16), VecDeque<usize>> = BTreeMap::new();
    for (r, rk) in ranks.iter().enumerate() {
        for (i, s) in rk.schedule.steps.iter().enumerate() {
            match s.action {
                Action::Send { peer, .. } => {
                    sends.entry((r, peer, s.channel)).or_default().push_back(i)
                }
                Action::Recv { peer, .. } | Action::RecvReduce { peer, .. } => {
                    recvs.entry((peer, r, s.channel)).or_default().push_back(i)
                }
                _ => {}
            }
        }
    }
    for (&(a, b, ch), q) in &sends {
        let nr = recvs.get(&(a, b, ch)).map_or(0, |x| x.len());
        if nr != q.len() {
            return Err(format!(
                "rank {a} sends {} messages to rank {b} on channel {ch}, which receives {nr}",
                q.len()
            ));
        }
    }
    for (&(a, b, ch), q) in &recvs {
        if !sends.contains_key(&(a, b, ch)) {
            return Err(format!(
                "rank {b} receives {} messages from rank {a} on channel {ch}, which sends none",
                q.len()
            ));
        }
    }
    let mut in_flight: BTreeMap<(usize, usize, u16), VecDeque<usize>> = BTreeMap::new();
    let mut wire: BTreeMap<(usize, usize, u16), VecDeque<Vec<u8>>> = BTreeMap::new();
    let mut posted_recv: BTreeMap<(usize, usize, u16), VecDeque<usize>> = BTreeMap::new();
    let mut staged: Vec<HashMap<usize, Vec<u8>>> = vec![HashMap::new(); n];
    let mut locks: Vec<Vec<(usize, usize, usize)>> = vec![Vec::new(); n];
    // Local steps (copy, finalize) and staged reduces whose dependencies are done.
    let mut runnable: Vec<(usize, usize)> = Vec::new();
    for (r, rk) in ranks.iter().enumerate() {
        for (i, st) in rk.schedule.steps.iter().enumerate() {
            if st.deps.is_empty()
                && matches!(st.action, Action::Copy { .. } | Action::Finalize { .. })
            {
                runnable.push((r, i));
            }
        }
    }
    let total: usize = ranks.iter().map(|r| r.schedule.steps.len()).sum();
    let mut finished = 0;
    let mut guard = 0usize;
    while finished < total {
        guard += 1;
        if guard > 10 * total + 1000 {
            return Err("simulation did not converge".into());
        }
        let mut evs: Vec<Ev> = runnable
            .iter()
            .map(|&(r, i)| match ranks[r].schedule.steps[i].action {
                Action::RecvReduce { .. } => Ev::Apply(r, i),
                _ => Ev::Local(r, i),
            })
            .collect();
        for (&k, q) in &sends {
            if let Some(&i) = q.front() {
                if left[k.0][i] == 0 {
                    evs.push(Ev::PostSend(k.0, k));
                }
            }
        }
        for (&k, q) in &in_flight {
            if !q.is_empty() {
                evs.push(Ev::Deliver(k));
            }
        }
        for (&k, q) in &recvs {
            if let Some(&i) = q.front() {
                let plain = matches!(ranks[k.1].schedule.steps[i].action, Action::Recv { .. });
                if !plain || left[k.1][i] == 0 {
                    evs.push(Ev::PostRecv(k.1, k));
                }
            }
        }
        for (&k, q) in &posted_recv {
            if !q.is_empty() && wire.get(&k).is_some_and(|w| !w.is_empty()) {
                evs.push(Ev::PostRecv(usize::MAX, k));
            }
        }
        if evs.is_empty() {
            let stuck: Vec<String> = (0..n)
                .map(|r| {
                    let pending: Vec<usize> = (0..done[r].len())
                        .filter(|&i| !done[r][i])
                        .take(4)
                        .collect();
                    format!("rank {r} waits at steps {pending:?}")
                })
                .collect();
            return Err(format!("deadlock: {}", stuck.join("; ")));
        }
        let ev = evs[rng.below(evs.len())];
        if let Ev::Local(r, i) | Ev::Apply(r, i) = ev {
            runnable.retain(|&x| x != (r, i));
        }
        let mut complete: Vec<(usize, usize)> = Vec::new();
        match ev {
            Ev::Local(r, i) => {
                let rk = &mut ranks[r];
                match rk.schedule.steps[i].action {
                    Action::Copy { src, dst } => {
                        let (a, _) = rk.addr(src);
                        let (d, de) = rk.addr(dst);
                        // Copying bytes onto themselves (in-place calls) writes nothing.
                        if a != d {
                            check_lock(&locks[r], r, i, d, de)?;
                            rk.arena.copy_within(a..a + src.len, d);
                        }
                    }
                    Action::Finalize { span } => {
                        let (a, e) = rk.addr(span);
                        check_lock(&locks[r], r, i, a, e)?;
                        finalize_avg(dtype, &mut rk.arena[a..e], n);
                    }
                    _ => {}
                }
                complete.push((r, i));
            }
            Ev::PostSend(r, k) => {
                let i = sends
                    .get_mut(&k)
                    .and_then(|q| q.pop_front())
                    .ok_or("internal: empty send queue")?;
                if let Action::Send { src, .. } = ranks[r].schedule.steps[i].action {
                    let (a, e) = ranks[r].addr(src);
                    locks[r].push((a, e, i));
                }
                in_flight.entry(k).or_default().push_back(i);
            }
            Ev::Deliver(k) => {
                let r = k.0;
                let i = in_flight
                    .get_mut(&k)
                    .and_then(|q| q.pop_front())
                    .ok_or("internal: empty flight")?;
                if let Action::Send { src, .. } = ranks[r].schedule.steps[i].action {
                    let (a, e) = ranks[r].addr(src);
                    wire.entry(k)
                        .or_default()
                        .push_back(ranks[r].arena[a..e].to_vec());
                    locks[r].retain(|l| l.2 != i);
                }
                complete.push((r, i));
            }
            Ev::PostRecv(usize::MAX, k) => {
                let r = k.1;
                let i = posted_recv
                    .get_mut(&k)
                    .and_then(|q| q.pop_front())
                    .ok_or("internal: no recv")?;
                let msg = wire
                    .get_mut(&k)
                    .and_then(|q| q.pop_front())
                    .ok_or("internal: no msg")?;
                let rk = &mut ranks[r];
                match rk.schedule.steps[i].action {
                    Action::Recv { dst, .. } => {
                        if msg.len() != dst.len {
                            return Err(size_err(k, i, msg.len(), dst.len));
                        }
                        let (d, e) = rk.addr(dst);
                        check_lock(&locks[r], r, i, d, e)?;
                        rk.arena[d..e].copy_from_slice(&msg);
                        complete.push((r, i));
                    }
                    Action::RecvReduce { dst, .. } => {
                        if msg.len() != dst.len {
                            return Err(size_err(k, i, msg.len(), dst.len));
                        }
                        staged[r].insert(i, msg);
                        if left[r][i] == 0 {
                            runnable.push((r, i));
                        }
                    }
                    _ => return Err("internal: not a receive".into()),
                }
            }
            Ev::PostRecv(_, k) => {
                let i = recvs
                    .get_mut(&k)
                    .and_then(|q| q.pop_front())
                    .ok_or("internal: no recv step")?;
                posted_recv.entry(k).or_default().push_back(i);
            }
            Ev::Apply(r, i) => {
                let msg = staged[r].remove(&i).ok_or("internal: nothing staged")?;
                let rk = &mut ranks[r];
                if let Action::RecvReduce { dst, local, .. } = rk.schedule.steps[i].action {
                    let (d, de) = rk.addr(dst);
                    let (l, le) = rk.addr(local);
                    check_lock(&locks[r], r, i, d, de)?;
                    if d == l {
                        reduce_into(dtype, op, &mut rk.arena[d..de], &msg);
                    } else {
                        let lv = rk.arena[l..le].to_vec();
                        reduce_to(dtype, op, &mut rk.arena[d..de], &lv, &msg);
                    }
                }
                complete.push((r, i));
            }
        }
        for (r, i) in complete {
            done[r][i] = true;
            finished += 1;
            for &x in &std::mem::take(&mut dependents[r][i]) {
                left[r][x] -= 1;
                if left[r][x] == 0 {
                    match ranks[r].schedule.steps[x].action {
                        Action::Copy { .. } | Action::Finalize { .. } => runnable.push((r, x)),
                        Action::RecvReduce { .. } if staged[r].contains_key(&x) => {
                            runnable.push((r, x))
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    Ok(())
}

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

fn size_err(k: (usize, usize, u16), i: usize, got: usize, want: usize) -> String {
    format!(
        "rank {} step {i} expects {want} bytes from rank {} (channel {}) but {got} came",
        k.1, k.0, k.2
    )
}
