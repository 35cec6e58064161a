//! Sans-IO collective schedules.
//!
//! Owns: turning (collective, rank, size, count, chunking) into the list of [`Step`]s one rank
//! performs. A schedule is a pure function of its [`Plan`]; it names peers by rank and buffers
//! by role, never a transport, a socket or a clock, so every algorithm is tested by running
//! all ranks' schedules against each other in memory (`sim`).
//!
//! Matching rule, the contract with the engine: on each (sender, receiver, channel) the k-th
//! [`Action::Send`] of the sender meets the k-th receive ([`Action::Recv`] or
//! [`Action::RecvReduce`]) of the receiver, in the order the steps appear in the schedule.
//! A step runs once all steps in its `deps` are done; the builders add the dependencies that
//! keep data correct (read after write, and write after read of the same bytes).

mod allgather;
mod alltoall;
mod bcast;
mod builder;
mod chunks;
mod gather;
mod hier;
pub mod machine;
mod merge;
mod reduce;
mod ring;
pub mod sim;
mod small;
pub mod tree;
mod uneven;

pub use builder::ScheduleBuilder;

/// Which of the caller's buffers a span points into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BufId {
    /// The send (input) buffer.
    Send,
    /// The receive (output) buffer.
    Recv,
    /// Engine-owned scratch space of [`Schedule::scratch_bytes`].
    Scratch,
}

/// A byte range of one buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Span {
    /// Which buffer.
    pub buf: BufId,
    /// Offset in bytes.
    pub off: usize,
    /// Length in bytes.
    pub len: usize,
}

impl Span {
    /// A span of `len` bytes at `off` in `buf`.
    pub const fn new(buf: BufId, off: usize, len: usize) -> Span {
        Span { buf, off, len }
    }

    /// One past the last byte.
    pub const fn end(&self) -> usize {
        self.off + self.len
    }
}

/// What one step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send `src` to `peer`.
    Send {
        /// Destination rank.
        peer: usize,
        /// Bytes to send.
        src: Span,
    },
    /// Receive from `peer` into `dst`.
    Recv {
        /// Source rank.
        peer: usize,
        /// Where the bytes land.
        dst: Span,
    },
    /// Receive from `peer` and store `op(local, incoming)` into `dst`.
    RecvReduce {
        /// Source rank.
        peer: usize,
        /// Where the result lands (may be the same bytes as `local`).
        dst: Span,
        /// This rank's operand.
        local: Span,
    },
    /// Copy `src` to `dst` locally (no-op when they are the same bytes).
    Copy {
        /// From.
        src: Span,
        /// To.
        dst: Span,
    },
    /// Divide `span` by the rank count (the last step of an average).
    Finalize {
        /// The bytes to divide.
        span: Span,
    },
}

impl Action {
    /// The peer this step talks to, if any.
    pub fn peer(&self) -> Option<usize> {
        match *self {
            Action::Send { peer, .. }
            | Action::Recv { peer, .. }
            | Action::RecvReduce { peer, .. } => Some(peer),
            Action::Copy { .. } | Action::Finalize { .. } => None,
        }
    }
}

/// One step of a schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// What to do.
    pub action: Action,
    /// The connection (channel) the step uses, for steps that talk to a peer.
    pub channel: u16,
    /// Indices of the steps that must be done first (all smaller than this step's index).
    pub deps: Vec<u32>,
    /// For a send, the count word its message carries instead of the call's count; for a
    /// receive, the word the message must carry. Alltoallv uses it so that both ends of a
    /// pair check each other's counts (see [`pair_word`]).
    pub word: Option<u64>,
}

/// The count word of an alltoallv message: `flowing` elements in the message's direction,
/// `other` in the opposite one (each truncated to 32 bits). The sender writes
/// (its send count, its receive count) for the pair and the receiver expects (its receive
/// count, its send count), so a disagreement in either direction is seen at both ends.
pub const fn pair_word(flowing: usize, other: usize) -> u64 {
    (flowing as u64 & 0xffff_ffff) | ((other as u64 & 0xffff_ffff) << 32)
}

/// Where one rank's block lies in a buffer, in elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Block {
    /// Offset from the buffer's start.
    pub off: usize,
    /// Number of elements.
    pub len: usize,
}

impl Block {
    /// One past the last element.
    pub const fn end(&self) -> usize {
        self.off + self.len
    }
}

/// The per-rank blocks of the uneven-count collectives, indexed by rank.
///
/// | kind | send | recv |
/// | --- | --- | --- |
/// | AllToAllV | block sent to each rank | block received from each rank |
/// | AllGatherV | (empty) | each rank's block of the result |
/// | ReduceScatterV | each rank's block of the input (in rank order) | (empty) |
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Blocks {
    /// Blocks of the send buffer.
    pub send: Vec<Block>,
    /// Blocks of the receive buffer.
    pub recv: Vec<Block>,
}

/// Everything one rank does for one collective call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Schedule {
    /// The steps, in posting order per connection.
    pub steps: Vec<Step>,
    /// Scratch bytes the engine must provide.
    pub scratch_bytes: usize,
}

/// The collective a [`Plan`] describes. Buffer sizes per kind, in elements:
///
/// | kind | send | recv |
/// | --- | --- | --- |
/// | AllReduce | count | count |
/// | AllGather | count | count x size |
/// | ReduceScatter | count x size | count |
/// | Broadcast | count (root) | count |
/// | Reduce | count | count (root) |
/// | Send / Recv | count | count |
/// | Barrier | 0 | 0 |
/// | AllToAll | count x size | count x size |
/// | Gather | count | count x size (root) |
/// | Scatter | count x size (root) | count |
/// | AllToAllV, AllGatherV, ReduceScatterV | [`Blocks`] | [`Blocks`] |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Every rank gets the reduction of all inputs.
    AllReduce,
    /// Every rank gets every rank's input, in rank order.
    AllGather,
    /// Rank r gets block r of the reduction.
    ReduceScatter,
    /// Every rank gets the root's input.
    Broadcast,
    /// The root gets the reduction.
    Reduce,
    /// Point-to-point send to `root` (the peer).
    Send,
    /// Point-to-point receive from `root` (the peer).
    Recv,
    /// Synchronisation only.
    Barrier,
    /// Block j of rank i's input goes to block i of rank j's output.
    AllToAll,
    /// As AllToAll with per-pair counts and displacements ([`Plan::blocks`]).
    AllToAllV,
    /// The root gets every rank's input, in rank order.
    Gather,
    /// Rank r gets block r of the root's input.
    Scatter,
    /// Every rank gets every rank's input, blocks of different sizes at given places.
    AllGatherV,
    /// Rank r gets block r of the reduction; blocks of different sizes, in rank order.
    ReduceScatterV,
}

impl Kind {
    /// Whether the call's blocks come from [`Plan::blocks`] rather than its count.
    pub const fn uneven(self) -> bool {
        matches!(
            self,
            Kind::AllToAllV | Kind::AllGatherV | Kind::ReduceScatterV
        )
    }

    /// Whether the call reduces.
    pub const fn reduces(self) -> bool {
        matches!(
            self,
            Kind::AllReduce | Kind::Reduce | Kind::ReduceScatter | Kind::ReduceScatterV
        )
    }

    /// Whether the call has a root.
    pub const fn rooted(self) -> bool {
        matches!(
            self,
            Kind::Broadcast | Kind::Reduce | Kind::Gather | Kind::Scatter
        )
    }
}

/// The algorithm a schedule uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algo {
    /// Ring (bandwidth-optimal; allreduce = reduce-scatter + allgather).
    Ring,
    /// Binomial trees (reduce up, broadcast down), pipelined in chunks.
    Tree,
    /// Recursive doubling / Bruck / dissemination / recursive halving (reduce-scatter, on a
    /// power-of-two rank count; the direct exchange otherwise): log2(size) rounds, for small
    /// messages.
    RecursiveDoubling,
    /// Pipelined chain (broadcast and reduce along the ring order).
    Chain,
    /// A direct exchange with the peer (send/recv).
    Direct,
    /// Hierarchical allreduce: reduce-scatter inside each host, a ring allreduce among
    /// one leader per host and rail, allgather inside each host ([`Plan::hosts`]).
    Hier,
    /// As [`Algo::Hier`] with double binary trees among the leaders instead of rings: log2
    /// of the host count network steps instead of twice the host count.
    HierTree,
    /// Pairwise exchange: alltoall in size-1 rounds (round k: send to rank+k, receive from
    /// rank-k, or partners rank XOR k on powers of two), and the linear gather, scatter and
    /// broadcast (the root exchanges with every rank directly).
    Pairwise,
}

impl Algo {
    /// Every algorithm.
    pub const ALL: [Algo; 8] = [
        Algo::Ring,
        Algo::Tree,
        Algo::RecursiveDoubling,
        Algo::Chain,
        Algo::Direct,
        Algo::Hier,
        Algo::HierTree,
        Algo::Pairwise,
    ];

    /// The name `OXCCL_ALGO` uses.
    pub const fn name(self) -> &'static str {
        match self {
            Algo::Ring => "ring",
            Algo::Tree => "tree",
            Algo::RecursiveDoubling => "rd",
            Algo::Chain => "chain",
            Algo::Direct => "direct",
            Algo::Hier => "hier",
            Algo::HierTree => "hier-tree",
            Algo::Pairwise => "pairwise",
        }
    }

    /// Whether this algorithm implements `kind`.
    pub fn supports(self, kind: Kind) -> bool {
        use Kind::*;
        match self {
            Algo::Ring => matches!(
                kind,
                AllReduce | AllGather | ReduceScatter | AllGatherV | ReduceScatterV
            ),
            Algo::Tree => matches!(kind, AllReduce | Broadcast | Reduce | Gather | Scatter),
            Algo::RecursiveDoubling => {
                matches!(
                    kind,
                    AllReduce | AllGather | ReduceScatter | Barrier | AllToAll
                )
            }
            Algo::Pairwise => matches!(
                kind,
                AllToAll
                    | AllToAllV
                    | Gather
                    | Scatter
                    | Broadcast
                    | ReduceScatter
                    | ReduceScatterV
            ),
            Algo::Chain => matches!(kind, Broadcast | Reduce),
            Algo::Direct => matches!(kind, Send | Recv),
            Algo::Hier | Algo::HierTree => matches!(kind, AllReduce),
        }
    }
}

/// The inputs of a schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The collective.
    pub kind: Kind,
    /// The algorithm.
    pub algo: Algo,
    /// This rank.
    pub rank: usize,
    /// Number of ranks.
    pub size: usize,
    /// Element count (see [`Kind`] for what it counts).
    pub count: usize,
    /// Bytes per element.
    pub elem: usize,
    /// Root rank (broadcast, reduce) or peer (send, recv).
    pub root: usize,
    /// Whether the op is an average (adds [`Action::Finalize`] steps).
    pub avg: bool,
    /// Largest message in bytes (rounded down to whole elements, at least one element).
    pub chunk_bytes: usize,
    /// Channels (parallel connections) to spread chunks over.
    pub nchannels: usize,
    /// Ring order: `ring[i]` is the rank at position `i` (a permutation of 0..size).
    /// Trees and recursive doubling also number ranks by ring position, so their first
    /// levels stay inside a host.
    pub ring: Vec<usize>,
    /// The hosts, for the hierarchical algorithms: each host's ranks in intra-host order,
    /// hosts in ring order (a partition of 0..size). Empty, or anything that is not a
    /// partition, counts as one host holding the ring.
    pub hosts: Vec<Vec<usize>>,
    /// The per-rank blocks of the uneven-count collectives; empty for the others.
    pub blocks: Blocks,
}

impl Plan {
    /// Position of `rank` in the ring (the rank itself if the ring does not hold it).
    pub fn pos(&self, rank: usize) -> usize {
        self.ring.iter().position(|&r| r == rank).unwrap_or(rank)
    }

    /// The rank at ring position `pos` (position as rank if the ring is short).
    pub fn at(&self, pos: usize) -> usize {
        self.ring.get(pos).copied().unwrap_or(pos)
    }

    /// Chunk size in whole elements (at least 1).
    pub fn chunk_elems(&self) -> usize {
        (self.chunk_bytes / self.elem.max(1)).max(1)
    }

    /// Builds this rank's schedule.
    pub fn build(&self) -> Schedule {
        let mut b = ScheduleBuilder::new(self.nchannels);
        match (self.kind, self.algo) {
            (k, _) if k.uneven() => uneven::build(self, &mut b),
            (_, _) if self.size == 1 || (self.count == 0 && self.kind != Kind::Barrier) => {
                small::local_only(self, &mut b)
            }
            (Kind::AllToAll, Algo::RecursiveDoubling) => alltoall::bruck(self, &mut b),
            (Kind::AllToAll, _) => alltoall::pairwise(self, &mut b),
            (Kind::Gather, Algo::Tree) => gather::gather_binomial(self, &mut b),
            (Kind::Gather, _) => gather::gather_linear(self, &mut b),
            (Kind::Scatter, Algo::Tree) => gather::scatter_binomial(self, &mut b),
            (Kind::Scatter, _) => gather::scatter_linear(self, &mut b),
            (Kind::AllReduce, Algo::Ring) => ring::allreduce(self, &mut b),
            (Kind::ReduceScatter, Algo::Pairwise) => alltoall::reduce_scatter_direct(self, &mut b),
            (Kind::ReduceScatter, Algo::RecursiveDoubling) if self.size.is_power_of_two() => {
                small::reduce_scatter_halving(self, &mut b)
            }
            (Kind::ReduceScatter, Algo::RecursiveDoubling) => {
                alltoall::reduce_scatter_direct(self, &mut b)
            }
            (Kind::ReduceScatter, _) => ring::reduce_scatter(self, &mut b),
            (Kind::AllGather, Algo::RecursiveDoubling) => allgather::bruck(self, &mut b),
            (Kind::AllGather, _) => allgather::ring(self, &mut b),
            (Kind::AllReduce, Algo::RecursiveDoubling) => small::allreduce_rd(self, &mut b),
            (Kind::AllReduce, Algo::Hier) => hier::allreduce(self, &mut b, false),
            (Kind::AllReduce, Algo::HierTree) => hier::allreduce(self, &mut b, true),
            (Kind::AllReduce, _) => reduce::allreduce_tree(self, &mut b),
            (Kind::Broadcast, Algo::Chain) => bcast::chain(self, &mut b),
            (Kind::Broadcast, Algo::Pairwise) => bcast::linear(self, &mut b),
            (Kind::Broadcast, _) => bcast::binomial(self, &mut b),
            (Kind::Reduce, Algo::Chain) => reduce::chain(self, &mut b),
            (Kind::Reduce, _) => reduce::binomial(self, &mut b),
            (Kind::Send, _) | (Kind::Recv, _) => small::p2p(self, &mut b),
            (Kind::Barrier, _) => small::barrier(self, &mut b),
            (Kind::AllToAllV | Kind::AllGatherV | Kind::ReduceScatterV, _) => {}
        }
        b.finish()
    }
}

#[cfg(test)]
mod exchange_tests;
#[cfg(test)]
mod tests;
