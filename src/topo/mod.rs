//! Topology: where each rank sits, and the ring order built from it.
//!
//! Owns: pure functions from per-rank placement facts to ring orders. Starts small: ranks
//! are grouped by host so that consecutive ring neighbours share a host where possible.
