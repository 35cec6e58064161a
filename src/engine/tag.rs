//! The call description every message carries, so that ranks that called different
//! collectives (or the same one with different arguments) find out from the first message
//! instead of hanging or reducing garbage.

use crate::algo::Kind;
use crate::reduce::{DataType, ReduceOp};
use crate::transport::Tag;

/// What a rank is doing: sequence number, collective, type, count, op and root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallDesc {
    /// Collective calls are numbered from 1 per communicator; point-to-point per peer pair.
    pub seq: u64,
    /// The collective.
    pub kind: Kind,
    /// Element type.
    pub dtype: DataType,
    /// Reduction (ignored where none applies).
    pub op: ReduceOp,
    /// Root (broadcast, reduce) or peer (send, recv); 0 otherwise.
    pub root: u32,
    /// Element count as the caller gave it.
    pub count: u64,
}

const KINDS: [Kind; 14] = [
    Kind::AllReduce,
    Kind::AllGather,
    Kind::ReduceScatter,
    Kind::Broadcast,
    Kind::Reduce,
    Kind::Send,
    Kind::Recv,
    Kind::Barrier,
    Kind::AllToAll,
    Kind::AllToAllV,
    Kind::Gather,
    Kind::Scatter,
    Kind::AllGatherV,
    Kind::ReduceScatterV,
];

/// The tag of connection greetings (not a call).
pub const HELLO_TAG: Tag = [0x6f78_6363_6c68_656c, 0xff, 0];

impl CallDesc {
    /// The wire form. A send is tagged as the matching receive expects it (`Recv` with the
    /// sender as root is what the receiver wrote, so the sender encodes the pair).
    pub fn tag(&self) -> Tag {
        let kind = KINDS.iter().position(|k| *k == self.kind).unwrap_or(0) as u64;
        [
            self.seq,
            kind | (self.dtype as u64) << 8 | (self.op as u64) << 16 | (self.root as u64) << 32,
            self.count,
        ]
    }

    /// Decodes a tag written by [`CallDesc::tag`]; `None` when it is not one.
    pub fn from_tag(t: Tag) -> Option<CallDesc> {
        let kind = *KINDS.get((t[1] & 0xff) as usize)?;
        Some(CallDesc {
            seq: t[0],
            kind,
            dtype: DataType::from_raw(((t[1] >> 8) & 0xff) as i64).ok()?,
            op: ReduceOp::from_raw(((t[1] >> 16) & 0xff) as i64).ok()?,
            root: (t[1] >> 32) as u32,
            count: t[2],
        })
    }

    /// "allreduce #7 (count 1024, float, sum)", as used in messages.
    pub fn describe(&self) -> String {
        let name = kind_name(self.kind);
        let extra = match self.kind {
            Kind::AllReduce | Kind::ReduceScatter | Kind::ReduceScatterV => {
                format!(", {}", self.op.name())
            }
            Kind::Gather | Kind::Scatter => format!(", root {}", self.root),
            Kind::Reduce => format!(", {}, root {}", self.op.name(), self.root),
            Kind::Broadcast => format!(", root {}", self.root),
            Kind::Send => format!(", to rank {}", self.root),
            Kind::Recv => format!(", from rank {}", self.root),
            Kind::AllGather | Kind::AllGatherV | Kind::AllToAll | Kind::Barrier => String::new(),
            Kind::AllToAllV => String::new(),
        };
        if self.kind == Kind::Barrier {
            return format!("{name} #{}", self.seq);
        }
        if self.kind == Kind::AllToAllV {
            return format!("{name} #{} ({})", self.seq, self.dtype.name());
        }
        format!(
            "{name} #{} (count {}, {}{extra})",
            self.seq,
            self.count,
            self.dtype.name()
        )
    }
}

/// The collective's name as users write it.
pub fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::AllReduce => "allreduce",
        Kind::AllGather => "allgather",
        Kind::ReduceScatter => "reduce_scatter",
        Kind::Broadcast => "broadcast",
        Kind::Reduce => "reduce",
        Kind::Send => "send",
        Kind::Recv => "recv",
        Kind::Barrier => "barrier",
        Kind::AllToAll => "alltoall",
        Kind::AllToAllV => "alltoallv",
        Kind::Gather => "gather",
        Kind::Scatter => "scatter",
        Kind::AllGatherV => "allgatherv",
        Kind::ReduceScatterV => "reduce_scatterv",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip() {
        for kind in KINDS {
            for (dtype, op) in DataType::ALL
                .into_iter()
                .flat_map(|d| ReduceOp::ALL.map(|o| (d, o)))
            {
                let d = CallDesc {
                    seq: 77,
                    kind,
                    dtype,
                    op,
                    root: 12345,
                    count: u64::MAX - 3,
                };
                assert_eq!(CallDesc::from_tag(d.tag()), Some(d));
            }
        }
        assert_eq!(CallDesc::from_tag(HELLO_TAG), None);
    }
}
