//! Data types and reduction operations, numbered as NCCL numbers them.

use crate::error::{Error, Result};
use crate::reduce::{Bf16, F16, F8E4M3, F8E5M2};

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
    /// OCP FP8 E4M3 (bias 7, no infinities, largest value 448), NCCL's `ncclFloat8e4m3`
    F8E4M3 = 10,
    /// OCP FP8 E5M2 (bias 15, with infinities, largest value 57344), NCCL's `ncclFloat8e5m2`
    F8E5M2 = 11,
}

impl DataType {
    /// Every data type, in NCCL's order.
    pub const ALL: [DataType; 12] = [
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
        DataType::F8E4M3,
        DataType::F8E5M2,
    ];

    /// Size of one element in bytes.
    pub const fn size(self) -> usize {
        match self {
            DataType::I8 | DataType::U8 | DataType::F8E4M3 | DataType::F8E5M2 => 1,
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
            DataType::F8E4M3 => "float8_e4m3",
            DataType::F8E5M2 => "float8_e5m2",
        }
    }

    /// Whether this is a floating-point type.
    pub const fn is_float(self) -> bool {
        matches!(
            self,
            DataType::F16
                | DataType::F32
                | DataType::F64
                | DataType::Bf16
                | DataType::F8E4M3
                | DataType::F8E5M2
        )
    }

    /// The type with NCCL's number `raw`.
    pub fn from_raw(raw: i64) -> Result<DataType> {
        DataType::ALL
            .iter()
            .copied()
            .find(|d| *d as i64 == raw)
            .ok_or_else(|| {
                Error::invalid_argument(format!("unknown data type {raw} (valid: 0..=11)"))
            })
    }

    /// Parses a name as printed by [`DataType::name`] or a common alias (`f32`, `fp16`, `bf16`,
    /// `e4m3`, `fp8_e5m2`).
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
            "float8_e4m3" | "f8e4m3" | "fp8_e4m3" | "e4m3" => DataType::F8E4M3,
            "float8_e5m2" | "f8e5m2" | "fp8_e5m2" | "e5m2" => DataType::F8E5M2,
            _ => {
                let names = DataType::ALL.map(DataType::name).join(" ");
                return Err(Error::invalid_argument(format!(
                    "unknown data type '{s}' ({names})"
                )));
            }
        };
        Ok(t)
    }
}

/// A reduction operation. Numbers 0 to 4 match `ncclRedOp_t`; the bitwise operations (5 to 7,
/// integer types only) are oxccl's own.
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
    /// Bitwise and (integer types only).
    BAnd = 5,
    /// Bitwise or (integer types only).
    BOr = 6,
    /// Bitwise exclusive or (integer types only).
    BXor = 7,
}

impl ReduceOp {
    /// The arithmetic operations, NCCL's set, in NCCL's order: defined for every data type.
    pub const ARITH: [ReduceOp; 5] = [
        ReduceOp::Sum,
        ReduceOp::Prod,
        ReduceOp::Max,
        ReduceOp::Min,
        ReduceOp::Avg,
    ];

    /// Every operation, in numbering order: [`ReduceOp::ARITH`] then the bitwise ones, which
    /// only integer types accept (see [`ReduceOp::check`]).
    pub const ALL: [ReduceOp; 8] = [
        ReduceOp::Sum,
        ReduceOp::Prod,
        ReduceOp::Max,
        ReduceOp::Min,
        ReduceOp::Avg,
        ReduceOp::BAnd,
        ReduceOp::BOr,
        ReduceOp::BXor,
    ];

    /// The name used in tables and messages.
    pub const fn name(self) -> &'static str {
        match self {
            ReduceOp::Sum => "sum",
            ReduceOp::Prod => "prod",
            ReduceOp::Max => "max",
            ReduceOp::Min => "min",
            ReduceOp::Avg => "avg",
            ReduceOp::BAnd => "band",
            ReduceOp::BOr => "bor",
            ReduceOp::BXor => "bxor",
        }
    }

    /// Whether this is a bitwise operation (`band`, `bor`, `bxor`).
    pub const fn is_bitwise(self) -> bool {
        matches!(self, ReduceOp::BAnd | ReduceOp::BOr | ReduceOp::BXor)
    }

    /// Whether this operation is defined for `dtype`: the bitwise operations are defined for
    /// integer types only. Returns an InvalidArgument error naming both otherwise.
    pub fn check(self, dtype: DataType) -> Result<()> {
        if self.is_bitwise() && dtype.is_float() {
            return Err(Error::invalid_argument(format!(
                "reduction op {} is defined for integer types only, not {}",
                self.name(),
                dtype.name()
            )));
        }
        Ok(())
    }

    /// The operation with NCCL's number `raw`.
    pub fn from_raw(raw: i64) -> Result<ReduceOp> {
        ReduceOp::ALL
            .iter()
            .copied()
            .find(|o| *o as i64 == raw)
            .ok_or_else(|| {
                Error::invalid_argument(format!("unknown reduction op {raw} (valid: 0..=7)"))
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
                    "unknown reduction op '{s}' (sum prod max min avg band bor bxor)"
                ))
            })
    }

    /// The operation applied step by step; `Avg` reduces as `Sum` and divides at the end.
    /// Every other operation (the bitwise ones included) is its own step.
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
         f32 => F32, f64 => F64, F16 => F16, Bf16 => Bf16, F8E4M3 => F8E4M3, F8E5M2 => F8E5M2);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn numbering_names_and_parsing_round_trip() {
        for (i, d) in DataType::ALL.into_iter().enumerate() {
            assert_eq!(d as usize, i);
            assert_eq!(DataType::from_raw(i as i64).ok(), Some(d));
            assert_eq!(DataType::parse(d.name()).ok(), Some(d));
        }
        for (i, o) in ReduceOp::ALL.into_iter().enumerate() {
            assert_eq!(o as usize, i);
            assert_eq!(ReduceOp::from_raw(i as i64).ok(), Some(o));
            assert_eq!(ReduceOp::parse(o.name()).ok(), Some(o));
            assert_eq!(ReduceOp::parse(&o.name().to_uppercase()).ok(), Some(o));
        }
        assert_eq!(ReduceOp::ARITH, ReduceOp::ALL[..5]);
        assert!(ReduceOp::ARITH.iter().all(|o| !o.is_bitwise()));
        assert!(ReduceOp::ALL[5..].iter().all(|o| o.is_bitwise()));

        for (name, d) in [
            ("float8_e4m3", DataType::F8E4M3),
            ("F8E4M3", DataType::F8E4M3),
            ("fp8_e4m3", DataType::F8E4M3),
            ("e4m3", DataType::F8E4M3),
            ("float8_e5m2", DataType::F8E5M2),
            ("f8e5m2", DataType::F8E5M2),
            ("FP8_E5M2", DataType::F8E5M2),
            ("e5m2", DataType::F8E5M2),
        ] {
            assert_eq!(DataType::parse(name).ok(), Some(d), "{name}");
        }
        assert_eq!(DataType::F8E4M3.size(), 1);
        assert_eq!(DataType::F8E5M2.size(), 1);
        assert!(DataType::F8E4M3.is_float() && DataType::F8E5M2.is_float());
        assert_eq!(<F8E4M3 as Element>::DTYPE, DataType::F8E4M3);
        assert_eq!(<F8E5M2 as Element>::DTYPE, DataType::F8E5M2);
        assert_eq!(std::mem::size_of::<F8E5M2>(), DataType::F8E5M2.size());

        for bad in [-1, 12, 255, i64::MAX, i64::MIN] {
            let e = DataType::from_raw(bad).err().map(|e| e.to_string());
            assert!(
                e.as_deref().is_some_and(|e| e.contains("0..=11")),
                "{bad}: {e:?}"
            );
        }
        for bad in [-1, 8, 99, i64::MIN] {
            let e = ReduceOp::from_raw(bad).err().map(|e| e.to_string());
            assert!(
                e.as_deref().is_some_and(|e| e.contains("0..=7")),
                "{bad}: {e:?}"
            );
        }
        let e = ReduceOp::parse("and").err().map(|e| e.to_string());
        assert!(
            e.as_deref().is_some_and(|e| e.contains("band bor bxor")),
            "{e:?}"
        );
        let e = DataType::parse("fp8").err().map(|e| e.to_string());
        assert!(
            e.as_deref().is_some_and(|e| e.contains("float8_e5m2")),
            "{e:?}"
        );
    }

    #[test]
    fn bitwise_ops_are_for_integers_only() {
        for d in DataType::ALL {
            for o in ReduceOp::ALL {
                let r = o.check(d);
                if o.is_bitwise() && d.is_float() {
                    let e = r.err();
                    assert_eq!(
                        e.as_ref().map(|e| e.kind()),
                        Some(ErrorKind::InvalidArgument)
                    );
                    let msg = e.map(|e| e.to_string()).unwrap_or_default();
                    assert!(
                        msg.contains(&format!(
                            "reduction op {} is defined for integer types only, not {}",
                            o.name(),
                            d.name()
                        )),
                        "{msg}"
                    );
                } else {
                    assert!(r.is_ok(), "{o:?} on {d:?}");
                }
            }
        }
        assert_eq!(ReduceOp::BXor.step_op(), ReduceOp::BXor);
        assert_eq!(ReduceOp::Avg.step_op(), ReduceOp::Sum);
    }
}
