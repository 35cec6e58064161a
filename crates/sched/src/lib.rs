//! oxccl's sans-IO core, a crate of its own so that the compiler keeps it free of IO:
//! collective schedules and the call state machine that runs them ([`algo`]), with the
//! simulator that checks both; the reduction kernels and data types ([`reduce`]); the one
//! error type every layer returns ([`error`]). It has no sockets, no libc and no clock of
//! its own; the `oxccl` crate re-exports all of it.

#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
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

pub mod algo;
pub mod error;
pub mod reduce;
