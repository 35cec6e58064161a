//! Several calls' schedules as one (a group call): steps appended, dependencies and scratch
//! offsets shifted per part.

use super::{Action, BufId, Schedule, Span};

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

impl Schedule {
    /// Appends `part`'s steps as part number `index`: its dependencies are renumbered, its
    /// scratch placed after this schedule's (64-byte aligned), and `part_of` records the
    /// part of every appended step. Steps of different parts do not depend on each other.
    pub fn append(&mut self, part: &Schedule, index: u32, part_of: &mut Vec<u32>) {
        let base = self.steps.len() as u32;
        let sbase = self.scratch_bytes.div_ceil(64) * 64;
        for st in &part.steps {
            let mut st = st.clone();
            for d in &mut st.deps {
                *d += base;
            }
            shift_scratch(&mut st.action, sbase);
            self.steps.push(st);
            part_of.push(index);
        }
        self.scratch_bytes = sbase + part.scratch_bytes;
    }
}
