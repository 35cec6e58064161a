//! PLACEHOLDER
/// Which collective.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CollKind {
    /// allreduce
    AllReduce,
}
/// Which algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// ring
    Ring,
}
