//! The C types: result codes, data types and reduction ops numbered as NCCL numbers them,
//! the 128-byte unique id, the opaque handles and the version constants.
//!
//! Enums are declared here for the header, but entry points receive them as plain `int`
//! (the `*Arg` aliases, which cbindgen prints under the enum's name): a C caller can pass any
//! integer in an enum-typed argument, and an out-of-range value in a Rust enum would be
//! undefined behaviour. Each value is checked and turned into oxccl's own type.

use std::os::raw::{c_char, c_int};

use oxccl_core::{DataType, ErrorKind, ReduceOp};

/// Status of every call, numbered as NCCL's `ncclResult_t` (1, NCCL's CUDA error, is unused).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum oxcclResult_t {
    /// The call succeeded.
    oxcclSuccess = 0,
    /// The operating system or network failed (a socket call, an unreachable address).
    oxcclSystemError = 2,
    /// A bug in oxccl (including a caught panic).
    oxcclInternalError = 3,
    /// An argument is wrong: NULL pointer, unknown enum value, rank out of range, overflow.
    oxcclInvalidArgument = 4,
    /// The library was used wrongly: a destroyed handle, an aborted or failed communicator.
    oxcclInvalidUsage = 5,
    /// A peer failed, closed its connections or aborted.
    oxcclRemoteError = 6,
    /// Reserved (NCCL's non-blocking state); oxccl calls do not return it.
    oxcclInProgress = 7,
    /// A wait ran past `OXCCL_TIMEOUT` seconds without progress.
    oxcclTimeout = 8,
}

/// Element types, numbered as NCCL's `ncclDataType_t`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum oxcclDataType_t {
    /// `int8_t` (NCCL's `ncclChar` is the same value: `oxcclChar`).
    oxcclInt8 = 0,
    /// `uint8_t`.
    oxcclUint8 = 1,
    /// `int32_t` (`oxcclInt`).
    oxcclInt32 = 2,
    /// `uint32_t`.
    oxcclUint32 = 3,
    /// `int64_t`.
    oxcclInt64 = 4,
    /// `uint64_t`.
    oxcclUint64 = 5,
    /// IEEE 754 half precision, as `uint16_t` bits (`oxcclHalf`).
    oxcclFloat16 = 6,
    /// `float` (`oxcclFloat`).
    oxcclFloat32 = 7,
    /// `double` (`oxcclDouble`).
    oxcclFloat64 = 8,
    /// bfloat16 (the upper half of a `float`), as `uint16_t` bits.
    oxcclBfloat16 = 9,
    /// OCP FP8 E4M3 (bias 7, no infinities, largest value 448), as `uint8_t` bits; NCCL's
    /// `ncclFloat8e4m3` (CUDA's `__nv_fp8_e4m3`).
    oxcclFloat8e4m3 = 10,
    /// OCP FP8 E5M2 (bias 15, with infinities, largest value 57344), as `uint8_t` bits; NCCL's
    /// `ncclFloat8e5m2` (CUDA's `__nv_fp8_e5m2`).
    oxcclFloat8e5m2 = 11,
}

/// Reduction operations, numbered as NCCL's `ncclRedOp_t` (0 to 4); the bitwise operations
/// (5 to 7) are oxccl's own and accept integer types only.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum oxcclRedOp_t {
    /// Sum (integers wrap around).
    oxcclSum = 0,
    /// Product (integers wrap around).
    oxcclProd = 1,
    /// Maximum.
    oxcclMax = 2,
    /// Minimum.
    oxcclMin = 3,
    /// Sum divided by the number of ranks (integers truncate).
    oxcclAvg = 4,
    /// Bitwise and (integer types only).
    oxcclBand = 5,
    /// Bitwise or (integer types only).
    oxcclBor = 6,
    /// Bitwise exclusive or (integer types only).
    oxcclBxor = 7,
}

/// `oxcclResult_t` as an argument (any `int` a caller passes is checked).
pub type ResultArg = c_int;
/// `oxcclDataType_t` as an argument.
pub type DataTypeArg = c_int;
/// `oxcclRedOp_t` as an argument.
pub type RedOpArg = c_int;

/// NCCL's alias of `oxcclInt8`.
pub const oxcclChar: c_int = 0;
/// NCCL's alias of `oxcclInt32`.
pub const oxcclInt: c_int = 2;
/// NCCL's alias of `oxcclFloat16`.
pub const oxcclHalf: c_int = 6;
/// NCCL's alias of `oxcclFloat32`.
pub const oxcclFloat: c_int = 7;
/// NCCL's alias of `oxcclFloat64`.
pub const oxcclDouble: c_int = 8;
/// Number of data types.
pub const oxcclNumTypes: c_int = 12;
/// Number of reduction operations.
pub const oxcclNumOps: c_int = 8;
/// Number of result codes (one past the largest).
pub const oxcclNumResults: c_int = 9;

/// Size of an `oxcclUniqueId`.
pub const OXCCL_UNIQUE_ID_BYTES: usize = 128;

/// The `color` of `oxcclCommSplit` for a rank that joins no new communicator (the header
/// spells it `(-1)`).
pub const OXCCL_SPLIT_NOCOLOR: c_int = -1;

/// Major version (of the `oxccl-ffi` crate, checked against Cargo.toml when it compiles).
pub const OXCCL_MAJOR: c_int = 0;
/// Minor version.
pub const OXCCL_MINOR: c_int = 1;
/// Patch version.
pub const OXCCL_PATCH: c_int = 0;
/// `OXCCL_VERSION(OXCCL_MAJOR, OXCCL_MINOR, OXCCL_PATCH)`, what `oxcclGetVersion` returns.
pub const OXCCL_VERSION_CODE: c_int = 100;

/// Parses a decimal version component at compile time.
const fn parse_component(s: &str) -> c_int {
    let b = s.as_bytes();
    let mut i = 0;
    let mut v: c_int = 0;
    while i < b.len() {
        assert!(b[i].is_ascii_digit(), "version component is not a number");
        v = v * 10 + (b[i] - b'0') as c_int;
        i += 1;
    }
    v
}

// The header carries the literals above (cbindgen reads literals, not expressions); these
// make the build fail when Cargo.toml's version moves without them.
const _: () = assert!(OXCCL_MAJOR == parse_component(env!("CARGO_PKG_VERSION_MAJOR")));
const _: () = assert!(OXCCL_MINOR == parse_component(env!("CARGO_PKG_VERSION_MINOR")));
const _: () = assert!(OXCCL_PATCH == parse_component(env!("CARGO_PKG_VERSION_PATCH")));
const _: () = assert!(OXCCL_VERSION_CODE == OXCCL_MAJOR * 10000 + OXCCL_MINOR * 100 + OXCCL_PATCH);

/// Names a job: made by `oxcclGetUniqueId` on one rank and shipped to the others.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct oxcclUniqueId {
    /// Opaque bytes (root address and job secret).
    pub internal: [c_char; OXCCL_UNIQUE_ID_BYTES],
}

/// A communicator. Never dereferenced: the handle value is a key into a registry of live
/// communicators, never reused, so that a destroyed handle is recognised.
pub struct oxcclComm {
    _private: [u8; 0],
}

/// Opaque communicator handle (NCCL's `ncclComm_t`).
pub type oxcclComm_t = *mut oxcclComm;

/// A non-blocking call in flight, keyed like `oxcclComm`.
pub struct oxcclRequest {
    _private: [u8; 0],
}

/// Opaque request handle, released by the `oxcclWait` or `oxcclTest` that sees it finish.
pub type oxcclRequest_t = *mut oxcclRequest;

/// The code of an oxccl error kind.
pub(crate) fn code_of(kind: ErrorKind) -> oxcclResult_t {
    match kind {
        ErrorKind::System => oxcclResult_t::oxcclSystemError,
        ErrorKind::Internal => oxcclResult_t::oxcclInternalError,
        ErrorKind::InvalidArgument => oxcclResult_t::oxcclInvalidArgument,
        ErrorKind::InvalidUsage => oxcclResult_t::oxcclInvalidUsage,
        ErrorKind::Remote => oxcclResult_t::oxcclRemoteError,
        ErrorKind::Timeout => oxcclResult_t::oxcclTimeout,
    }
}

/// The data type numbered `raw`, or an InvalidArgument error naming the valid range.
pub(crate) fn data_type(raw: DataTypeArg) -> oxccl_core::Result<DataType> {
    DataType::from_raw(i64::from(raw)).map_err(|_| {
        oxccl_core::Error::invalid_argument(format!(
            "datatype {raw} is not an oxcclDataType_t (valid: 0..=11, oxcclInt8..oxcclFloat8e5m2)"
        ))
    })
}

/// The reduction numbered `raw`, or an InvalidArgument error naming the valid range.
pub(crate) fn red_op(raw: RedOpArg) -> oxccl_core::Result<ReduceOp> {
    ReduceOp::from_raw(i64::from(raw)).map_err(|_| {
        oxccl_core::Error::invalid_argument(format!(
            "op {raw} is not an oxcclRedOp_t (valid: 0..=7, oxcclSum..oxcclBxor)"
        ))
    })
}

/// The static description of a result code (`oxcclGetErrorString`).
pub(crate) fn describe(raw: ResultArg) -> &'static std::ffi::CStr {
    match raw {
        0 => c"no error",
        2 => c"system error (the operating system or network failed; see oxcclGetLastError)",
        3 => c"internal error (a bug in oxccl; see oxcclGetLastError)",
        4 => c"invalid argument (see oxcclGetLastError)",
        5 => c"invalid usage (see oxcclGetLastError)",
        6 => c"remote error (a peer failed or closed its connection; see oxcclGetLastError)",
        7 => c"operation in progress",
        8 => c"timeout (no progress within OXCCL_TIMEOUT seconds; see oxcclGetLastError)",
        _ => c"unknown result code",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbering_matches_nccl_and_oxccl() {
        assert_eq!(oxcclResult_t::oxcclInvalidArgument as i32, 4);
        assert_eq!(oxcclResult_t::oxcclTimeout as i32, 8);
        for d in DataType::ALL {
            assert_eq!(data_type(d as c_int).unwrap(), d);
        }
        for o in ReduceOp::ALL {
            assert_eq!(red_op(o as c_int).unwrap(), o);
        }
        assert_eq!(
            oxcclDataType_t::oxcclBfloat16 as c_int,
            DataType::Bf16 as c_int
        );
        assert_eq!(
            oxcclDataType_t::oxcclFloat8e4m3 as c_int,
            DataType::F8E4M3 as c_int
        );
        assert_eq!(
            oxcclDataType_t::oxcclFloat8e5m2 as c_int,
            DataType::F8E5M2 as c_int
        );
        assert_eq!(oxcclNumTypes as usize, DataType::ALL.len());
        assert_eq!(oxcclRedOp_t::oxcclAvg as c_int, ReduceOp::Avg as c_int);
        assert_eq!(oxcclRedOp_t::oxcclBand as c_int, ReduceOp::BAnd as c_int);
        assert_eq!(oxcclRedOp_t::oxcclBor as c_int, ReduceOp::BOr as c_int);
        assert_eq!(oxcclRedOp_t::oxcclBxor as c_int, ReduceOp::BXor as c_int);
        assert_eq!(oxcclNumOps as usize, ReduceOp::ALL.len());
        for bad in [-1, 12, 99, c_int::MAX, c_int::MIN] {
            assert!(data_type(bad).is_err());
        }
        for bad in [-1, 8, 99, c_int::MAX] {
            assert!(red_op(bad).is_err());
        }
        assert_eq!(parse_component("17"), 17);
    }

    #[test]
    fn every_kind_has_a_code_and_a_description() {
        for k in [
            ErrorKind::System,
            ErrorKind::Internal,
            ErrorKind::InvalidArgument,
            ErrorKind::InvalidUsage,
            ErrorKind::Remote,
            ErrorKind::Timeout,
        ] {
            let c = code_of(k) as c_int;
            assert_ne!(describe(c), c"unknown result code");
        }
        assert_eq!(describe(1), c"unknown result code");
        assert_eq!(describe(-3), c"unknown result code");
    }
}
