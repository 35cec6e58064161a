//! Every `OXCCL_*` variable, declared once with what it accepts, its default and what it
//! does (NCCL's `NCCL_PARAM`): the readers below validate against these declarations, so
//! a malformed or out-of-range value is an `InvalidArgument` naming the variable, its
//! value and what is accepted, never ignored. `docs/environment.md` is checked against
//! this list by a test.

use crate::error::{Error, Result};

/// What a variable accepts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Accepts {
    /// One of these words (case-insensitive).
    Choice(&'static [&'static str]),
    /// Seconds, fractions allowed, above 0 and at most this many.
    Seconds(f64),
    /// A whole number in this range (inclusive).
    Int(u64, u64),
    /// A byte count with an optional K, M or G suffix, at least this many.
    Bytes(usize),
    /// `0` or `1`.
    Flag,
    /// Text its reader checks (a list, a path, an address, a name).
    Text,
}

/// One `OXCCL_*` variable.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Var {
    /// Its name.
    pub name: &'static str,
    /// What it accepts.
    pub accepts: Accepts,
    /// Its default, in words.
    pub default: &'static str,
    /// Who reads it.
    pub reader: &'static str,
}

const fn v(
    name: &'static str,
    accepts: Accepts,
    default: &'static str,
    reader: &'static str,
) -> Var {
    Var {
        name,
        accepts,
        default,
        reader,
    }
}

/// The longest `OXCCL_TIMEOUT`: about 115 days (beyond, deadlines would overflow clocks).
pub const MAX_TIMEOUT_S: f64 = 1e7;

/// Every variable oxccl reads.
pub const VARS: &[Var] = &[
    v(
        "OXCCL_TRANSPORT",
        Accepts::Choice(&["tcp", "shm", "fabric", "verbs", "mem"]),
        "tcp",
        "Config",
    ),
    v(
        "OXCCL_FABRIC_PROVIDER",
        Accepts::Text,
        "uet, then hardware providers, then tcp",
        "fabric",
    ),
    v(
        "OXCCL_TIMEOUT",
        Accepts::Seconds(MAX_TIMEOUT_S),
        "300",
        "Config",
    ),
    v(
        "OXCCL_ALGO",
        Accepts::Text,
        "the cost model's choice",
        "Config",
    ),
    v(
        "OXCCL_NCHANNELS",
        Accepts::Int(1, 64),
        "2; 1 over tcp on one host",
        "Config",
    ),
    v(
        "OXCCL_CHANNEL_THRESHOLD",
        Accepts::Bytes(0),
        "256K",
        "Config",
    ),
    v("OXCCL_CHUNK_SIZE", Accepts::Bytes(64), "128K", "Config"),
    v("OXCCL_SOCKET_BUFSIZE", Accepts::Bytes(0), "1M", "Config"),
    v("OXCCL_TCP_DUPLEX", Accepts::Flag, "1", "tcp"),
    v(
        "OXCCL_TCP_CONGESTION",
        Accepts::Text,
        "reno within a host, the system's between hosts",
        "tcp",
    ),
    v("OXCCL_SHM", Accepts::Flag, "1", "Config"),
    v("OXCCL_SHM_CMA", Accepts::Flag, "0", "Config"),
    v(
        "OXCCL_SPIN",
        Accepts::Int(0, u32::MAX as u64),
        "2000; 100 when oversubscribed",
        "Config",
    ),
    v(
        "OXCCL_YIELD_WHEN_IDLE",
        Accepts::Flag,
        "1 when oversubscribed, else 0",
        "Config",
    ),
    v("OXCCL_ROOT_ADDR", Accepts::Text, "unset", "UniqueId::new"),
    v(
        "OXCCL_SOCKET_IFNAME",
        Accepts::Text,
        "first up non-loopback IPv4",
        "UniqueId::new, launch",
    ),
    v("OXCCL_MEM_SEED", Accepts::Int(0, u64::MAX), "0", "mem"),
    v("OXCCL_IB_HCA", Accepts::Text, "all", "verbs"),
    v(
        "OXCCL_IB_GID_INDEX",
        Accepts::Int(0, 255),
        "automatic",
        "verbs",
    ),
    v("OXCCL_IB_TC", Accepts::Int(0, 255), "0", "verbs"),
    v("OXCCL_IB_SL", Accepts::Int(0, 15), "0", "verbs"),
    v(
        "OXCCL_IB_QPS_PER_CONNECTION",
        Accepts::Int(1, 16),
        "1",
        "verbs",
    ),
    v("OXCCL_IB_TIMEOUT", Accepts::Int(1, 31), "18", "verbs"),
    v("OXCCL_IB_RETRY_CNT", Accepts::Int(0, 7), "6", "verbs"),
    v("OXCCL_TOPO_FILE", Accepts::Text, "unset", "Config"),
    v("OXCCL_TOPO_DUMP_FILE", Accepts::Text, "unset", "Config"),
    v("OXCCL_TOPO_AWARE", Accepts::Flag, "1", "Config"),
    v(
        "OXCCL_DEBUG",
        Accepts::Choice(&["WARN", "INFO", "TRACE", "VERSION"]),
        "unset",
        "debug",
    ),
    v("OXCCL_DEBUG_SUBSYS", Accepts::Text, "ALL", "debug"),
    v("OXCCL_DEBUG_FILE", Accepts::Text, "stderr", "debug"),
    v("OXCCL_COMM_NAME", Accepts::Text, "unset", "Config"),
    v(
        "OXCCL_RANK",
        Accepts::Int(0, u32::MAX as u64),
        "unset",
        "launch",
    ),
    v(
        "OXCCL_WORLD_SIZE",
        Accepts::Int(1, u32::MAX as u64),
        "unset",
        "launch",
    ),
    v(
        "OXCCL_LOCAL_RANK",
        Accepts::Int(0, u32::MAX as u64),
        "unset",
        "launch",
    ),
    v(
        "OXCCL_LOCAL_SIZE",
        Accepts::Int(1, u32::MAX as u64),
        "unset",
        "launch",
    ),
    v("OXCCL_ROOT", Accepts::Text, "unset", "launch"),
    v(
        "OXCCL_JOB_SECRET",
        Accepts::Text,
        "derived from the job's identity",
        "launch",
    ),
    v(
        "OXCCL_LIBRARY",
        Accepts::Text,
        "the bundled library",
        "Python",
    ),
];

/// The declaration of `name`; an `Internal` error for a name never declared (a reader
/// that skipped the registry).
pub fn var(name: &str) -> Result<&'static Var> {
    VARS.iter()
        .find(|v| v.name == name)
        .ok_or_else(|| Error::internal(format!("{name} is not a declared variable")))
}

/// What `v` accepts, in words, for messages.
pub fn accepted(v: &Var) -> String {
    match v.accepts {
        Accepts::Choice(words) => format!("one of {}", words.join(", ")),
        Accepts::Seconds(max) => format!("a number of seconds above 0 and at most {max}"),
        Accepts::Int(lo, hi) => format!("a whole number from {lo} to {hi}"),
        Accepts::Bytes(0) => "a byte count such as 4096, 64K, 1M or 2G".into(),
        Accepts::Bytes(min) => format!("a byte count such as 64K, 1M or 2G, at least {min}"),
        Accepts::Flag => "0 or 1".into(),
        Accepts::Text => "text".into(),
    }
}

fn bad(v: &Var, value: &str) -> Error {
    Error::invalid_argument(format!(
        "{}='{value}' is not valid: expected {}",
        v.name,
        accepted(v)
    ))
}

/// A typed value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A choice, as declared (its declared spelling).
    Word(&'static str),
    /// Seconds.
    Seconds(f64),
    /// A whole number.
    Int(u64),
    /// Bytes.
    Bytes(usize),
    /// A flag.
    Flag(bool),
    /// Text, trimmed.
    Text(String),
}

/// `value` checked against `v`.
pub fn parse(v: &Var, value: &str) -> Result<Value> {
    let t = value.trim();
    match v.accepts {
        Accepts::Choice(words) => words
            .iter()
            .find(|w| w.eq_ignore_ascii_case(t))
            .map(|w| Value::Word(w))
            .ok_or_else(|| bad(v, value)),
        Accepts::Seconds(max) => t
            .parse::<f64>()
            .ok()
            .filter(|s| *s > 0.0 && *s <= max)
            .map(Value::Seconds)
            .ok_or_else(|| bad(v, value)),
        Accepts::Int(lo, hi) => t
            .parse::<u64>()
            .ok()
            .filter(|n| (lo..=hi).contains(n))
            .map(Value::Int)
            .ok_or_else(|| bad(v, value)),
        Accepts::Bytes(min) => super::parse_bytes(v.name, t)
            .ok()
            .filter(|n| *n >= min)
            .map(Value::Bytes)
            .ok_or_else(|| bad(v, value)),
        Accepts::Flag => super::parse_flag(v.name, t)
            .map(Value::Flag)
            .map_err(|_| bad(v, value)),
        Accepts::Text => Ok(Value::Text(t.to_string())),
    }
}

/// The value of variable `name` in the environment, checked; `None` when unset or blank.
pub fn get(name: &str) -> Result<Option<Value>> {
    let v = var(name)?;
    match std::env::var(name) {
        Ok(s) if !s.trim().is_empty() => parse(v, &s).map(Some),
        Ok(_) | Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(Error::invalid_argument(format!(
            "{name} is not valid UTF-8: expected {}",
            accepted(v)
        ))),
    }
}

/// Variable `name` as `T`, through `pick` (which selects the declared kind's value).
fn typed<T>(name: &str, pick: impl FnOnce(Value) -> Option<T>) -> Result<Option<T>> {
    Ok(get(name)?.and_then(pick))
}

/// A whole-number variable.
pub fn int(name: &str) -> Result<Option<u64>> {
    typed(name, |v| if let Value::Int(n) = v { Some(n) } else { None })
}

/// A flag variable.
pub fn flag(name: &str) -> Result<Option<bool>> {
    typed(name, |v| {
        if let Value::Flag(b) = v {
            Some(b)
        } else {
            None
        }
    })
}

/// A byte-count variable.
pub fn byte_count(name: &str) -> Result<Option<usize>> {
    typed(name, |v| {
        if let Value::Bytes(n) = v {
            Some(n)
        } else {
            None
        }
    })
}

/// A seconds variable.
pub fn seconds(name: &str) -> Result<Option<f64>> {
    typed(name, |v| {
        if let Value::Seconds(s) = v {
            Some(s)
        } else {
            None
        }
    })
}

/// A text or choice variable (a choice in its declared spelling).
pub fn text(name: &str) -> Result<Option<String>> {
    typed(name, |v| match v {
        Value::Text(s) => Some(s),
        Value::Word(w) => Some(w.to_string()),
        _ => None,
    })
}

/// `OXCCL_*` variables set in the environment that oxccl does not know (a typo, or a
/// setting of another version), for a warning.
pub fn unknown_in_env() -> Vec<String> {
    std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .filter(|k| k.starts_with("OXCCL_") && var(k).is_err())
        .collect()
}
