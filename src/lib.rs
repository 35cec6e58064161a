//! oxccl: collective communication (allreduce, allgather, broadcast, reduce-scatter, reduce,
//! send/recv, barrier) for CPU memory over TCP, RDMA and libfabric, in the shape NCCL users
//! know.
//!
//! ```no_run
//! use oxccl::{Communicator, ReduceOp, UniqueId};
//! # fn main() -> oxccl::Result<()> {
//! let id = UniqueId::new()?; // on one rank; ship id.as_bytes() to the others
//! let comm = Communicator::init(&id, 0, 1)?;
//! let send = vec![1.0f32; 1024];
//! let mut recv = vec![0.0f32; 1024];
//! comm.all_reduce(&send, &mut recv, ReduceOp::Sum)?;
//! # Ok(()) }
//! ```
//!
//! Layers, top to bottom: [`Communicator`] (`comm`), `coll` (argument checks, algorithm
//! choice), `engine` (runs calls over a transport, as the call state machine says),
//! [`transport`] (the trait and its backends), with `bootstrap` and `topo` beside; `sys`
//! (OS-call wrappers) is the leaf under `transport` and `bootstrap`. Below all of them, in
//! its own crate (`oxccl-sched`, re-exported here), the sans-IO core: `algo` (schedules,
//! the call state machine, the simulator), `reduce` (kernels) and the error type.

#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
// Outside tests nothing may panic on its own account, and every unsafe block says why it
// is sound.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::unreachable,
        clippy::todo,
        clippy::unimplemented,
        clippy::undocumented_unsafe_blocks
    )
)]

pub use oxccl_sched::algo;
mod auth;
pub mod bootstrap;
mod coll;
mod comm;
pub mod config;
pub mod debug;
pub mod engine;
use oxccl_sched::error;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzz;
pub mod launch;
#[cfg(test)]
mod layers;
pub use oxccl_sched::reduce;
mod sys;
pub mod topo;
pub mod transport;

pub use algo::{Block, Blocks};
pub use bootstrap::UniqueId;
pub use coll::{Algorithm, CollKind};
pub use comm::{AbortHandle, Communicator, Group, RawCall, Request, Scope};
pub use config::Config;
pub use error::{Error, ErrorKind, Result};
pub use launch::{LaunchEnv, Launcher};
pub use reduce::{Bf16, DataType, Element, ReduceOp, F16, F8E4M3, F8E5M2};
