//! The C ABI of oxccl, shaped like NCCL's so that a framework's NCCL glue ports by renaming
//! `nccl` to `oxccl`: the same names, argument order and enum numbering, minus CUDA streams,
//! plus `...Async` variants that return a request (`oxcclWait`, `oxcclTest`).
//!
//! Built as `liboxccl.so` and `liboxccl.a`; `include/oxccl.h` is generated from this crate by
//! cbindgen (`ci/ffi-header.sh`). Conventions (docs/c-api.md), after rustls-ffi's:
//! every entry point is a panic boundary; every pointer is checked; out-parameters are
//! written only on success; enum values outside their list are `oxcclInvalidArgument`;
//! handles are registry keys, so use after destroy is `oxcclInvalidUsage`, never a crash;
//! every failure leaves a message for `oxcclGetLastError`.
//!
//! Owns: the mapping between C and the Rust API. Collectives, checks of buffer sizes and
//! everything below belong to the `oxccl` crate.

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
// C names: NCCL's spelling is the point of this crate.
#![allow(non_camel_case_types, non_snake_case, non_upper_case_globals)]
// Entry points are called from C, where every function is "unsafe": the contract on the
// pointers a caller passes (NULL is checked, validity cannot be) is docs/c-api.md's.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

mod boundary;
mod coll;
mod comm;
mod config;
mod exchange;
mod group;
mod handles;
mod premul;
mod request;
mod types;

pub use coll::*;
pub use comm::*;
pub use config::*;
pub use exchange::*;
pub use group::*;
pub use premul::*;
pub use request::*;
pub use types::*;
