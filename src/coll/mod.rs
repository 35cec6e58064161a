//! The entry layer of each collective: argument checks and the choice of algorithm.
//!
//! Owns: turning a user call into a [`Plan`]: validating counts, roots and buffer sizes, and
//! picking the algorithm from a cost model fed by the device's latency and bandwidth (or
//! `OXCCL_ALGO`). Knows no transport beyond its [`DeviceProps`].

mod select;

pub use crate::algo::{Algo as Algorithm, Kind as CollKind};
pub(crate) use select::{choose, Tuning};
