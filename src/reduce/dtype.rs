//! Data types and reduction operations, numbered as NCCL numbers them.

use crate::error::{Error, Result};
use crate::reduce::{Bf16, F16};

/// An element type oxccl can move and reduce. Numbers match `ncclDataType_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DataType {
    /// `int8_t`
    I8 = 0,
    /// `uint8_t`
    U8 = 1,
    /// `int32_t`
    I32 = 2,
    /// `uint32_t`
    U32 = 3,
    /// `int64_t`
    I64 = 4,
    /// `uint64_t`
    U64 = 5,
    /// IEEE 754 half precision
    F16 = 6,
    /// `float`
    F32 = 7,
    /// `double`
    F64 = 8,
    /// bfloat16 (the upper half of an f32)
    Bf16 = 9,
}

impl DataType {
    /// Every data type, in NCCL's order.
    pub const ALL: [DataType; 10] = [
        DataType::I8,
        DataType::U8,
        DataType::I32,
        DataType::U32,
        DataType::I64,
        DataType::U64,
        DataType::F16,
        DataType::F32,
        DataType::F64,
        DataType::Bf16,
    ];

    /// Size of one element in bytes.
    pub const fn size(self) -> usize {
        match self {
            DataType::I8 | DataType::U8 => 1,
            DataType::F16 | DataType::Bf16 => 2,
            DataType::I32 | DataType::U32 | DataType::F32 => 4,
            DataType::I64 | DataType::U64 | DataType::F64 => 8,
        }
    }

    /// The name used in tables and messages (`float`, `half`, `bfloat16`, `int32`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            DataType::I8 => "int8",
            DataType::U8 => "uint8",
            DataType::I32 => "int32",
            DataType::U32 => "uint32",
            DataType::I64 => "int64",
            DataType::U64 => "uint64",
            DataType::F16 => "half",
            DataType::F32 => "float",
            DataType::F64 => "double",
            DataType::Bf16 => "bfloat16",
        }
    }

    /// Whether this is a floating-point type.
    pub const fn is_float(self) -> bool {
        matches!(
            self,
            DataType::F16 | DataType::F32 | DataType::F64 | DataType::Bf16
        )
    }

    /// The type with NCCL's number `raw`.
    pub fn from_raw(raw: i64) -> Result<DataType> {
        DataType::ALL
            .iter()
            .copied()
            .find(|d| *d as i64 == raw)
            .ok_or_else(|| {
                Error::invalid_argument(format!("unknown data type {raw} (valid: 0..=9)"))
            })
    }

    /// Parses a name as printed by [`DataType::name`] or a common alias (`f32`, `fp16`, `bf16`).
    pub fn parse(s: &str) -> Result<DataType> {
        let t = match s.to_ascii_lowercase().as_str() {
            "int8" | "i8" | "char" => DataType::I8,
            "uint8" | "u8" => DataType::U8,
            "int32" | "i32" | "int" => DataType::I32,
            "uint32" | "u32" => DataType::U32,
            "int64" | "i64" => DataType::I64,
            "uint64" | "u64" => DataType::U64,
            "half" | "f16" | "fp16" | "float16" => DataType::F16,
            "float" | "f32" | "fp32" | "float32" => DataType::F32,
            "double" | "f64" | "fp64" | "float64" => DataType::F64,
            "bfloat16" | "bf16" => DataType::Bf16,
            _ => {
                return Err(Error::invalid_argument(format!(
                    "unknown data type '{s}' (int8 uint8 int32 uint32 int64 uint64 half float double bfloat16)"
                )))
            }
        };
        Ok(t)
    }
}

/// A reduction operation. Numbers match `ncclRedOp_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ReduceOp {
    /// Sum (integers wrap around).
    Sum = 0,
    /// Product (integers wrap around).
    Prod = 1,
    /// Maximum.
    Max = 2,
    /// Minimum.
    Min = 3,
    /// Average: the sum divided by the rank count once at the end (integers truncate).
    Avg = 4,
}

impl ReduceOp {
    /// Every operation, in NCCL's order.
    pub const ALL: [ReduceOp; 5] = [
        ReduceOp::Sum,
        ReduceOp::Prod,
        ReduceOp::Max,
        ReduceOp::Min,
        ReduceOp::Avg,
    ];

    /// The name used in tables and messages.
    pub const fn name(self) -> &'static str {
        match self {
            ReduceOp::Sum => "sum",
            ReduceOp::Prod => "prod",
            ReduceOp::Max => "max",
            ReduceOp::Min => "min",
            ReduceOp::Avg => "avg",
        }
    }

    /// The operation with NCCL's number `raw`.
    pub fn from_raw(raw: i64) -> Result<ReduceOp> {
        ReduceOp::ALL
            .iter()
            .copied()
            .find(|o| *o as i64 == raw)
            .ok_or_else(|| {
                Error::invalid_argument(format!("unknown reduction op {raw} (valid: 0..=4)"))
            })
    }

    /// Parses a name as printed by [`ReduceOp::name`].
    pub fn parse(s: &str) -> Result<ReduceOp> {
        ReduceOp::ALL
            .iter()
            .copied()
            .find(|o| o.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                Error::invalid_argument(format!(
                    "unknown reduction op '{s}' (sum prod max min avg)"
                ))
            })
    }

    /// The operation applied step by step; `Avg` reduces as `Sum` and divides at the end.
    pub const fn step_op(self) -> ReduceOp {
        match self {
            ReduceOp::Avg => ReduceOp::Sum,
            op => op,
        }
    }
}

/// A Rust type that maps to one [`DataType`]; collectives on `&[T]` use it.
pub trait Element: bytemuck::Pod + Send + Sync {
    /// The matching data type.
    const DTYPE: DataType;
}

macro_rules! element {
    ($($t:ty => $d:ident),* $(,)?) => { $(impl Element for $t { const DTYPE: DataType = DataType::$d; })* };
}
element!(i8 => I8, u8 => U8, i32 => I32, u32 => U32, i64 => I64, u64 => U64,
         f32 => F32, f64 => F64, F16 => F16, Bf16 => Bf16);
