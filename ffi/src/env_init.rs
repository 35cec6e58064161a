//! TEMPORARY stand-in for `oxccl::Communicator::from_env()`, which is being written beside
//! `rankrun`. When it lands, replace the call in `comm.rs` (`crate::env_init::from_env()`)
//! by `Communicator::from_env()` and delete this file.
//!
//! Reads rankrun's contract only: `OXCCL_RANK`, `OXCCL_WORLD_SIZE`, `OXCCL_ROOT`
//! (`host:port` of a store that someone else serves) and `OXCCL_JOB_SECRET` (64 hex digits).

use std::net::{SocketAddr, ToSocketAddrs};

use oxccl_core::{Communicator, Error, Result, UniqueId};

fn var(name: &str) -> Result<String> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => Ok(v.trim().to_string()),
        _ => Err(Error::invalid_argument(format!(
            "{name} is not set: oxcclCommInitFromEnv reads OXCCL_RANK, OXCCL_WORLD_SIZE, \
             OXCCL_ROOT (host:port) and OXCCL_JOB_SECRET (as set by rankrun)"
        ))),
    }
}

fn number(name: &str) -> Result<usize> {
    let v = var(name)?;
    v.parse()
        .map_err(|_| Error::invalid_argument(format!("{name}='{v}' is not a non-negative integer")))
}

fn secret(v: &str) -> Result<[u8; 32]> {
    let bad = || {
        Error::invalid_argument(
            "OXCCL_JOB_SECRET is not 64 hexadecimal digits (its value is not shown)",
        )
    };
    let b = v.as_bytes();
    if b.len() != 64 {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        let hex = std::str::from_utf8(&b[2 * i..2 * i + 2]).map_err(|_| bad())?;
        *o = u8::from_str_radix(hex, 16).map_err(|_| bad())?;
    }
    Ok(out)
}

fn root(v: &str) -> Result<SocketAddr> {
    v.to_socket_addrs()
        .map_err(|e| Error::invalid_argument(format!("OXCCL_ROOT='{v}' is not host:port: {e}")))?
        .next()
        .ok_or_else(|| Error::invalid_argument(format!("OXCCL_ROOT='{v}' resolves to no address")))
}

/// The communicator that the environment describes.
pub(crate) fn from_env() -> Result<Communicator> {
    let rank = number("OXCCL_RANK")?;
    let size = number("OXCCL_WORLD_SIZE")?;
    if size == 0 || rank >= size {
        return Err(Error::invalid_argument(format!(
            "OXCCL_RANK={rank} is out of range for OXCCL_WORLD_SIZE={size}"
        )));
    }
    let id = UniqueId::from_parts(
        root(&var("OXCCL_ROOT")?)?,
        secret(&var("OXCCL_JOB_SECRET")?)?,
    );
    Communicator::init(&id, rank, size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_and_root_syntax() {
        let s = "00ff".repeat(16);
        assert_eq!(secret(&s).unwrap()[..2], [0x00, 0xff]);
        assert!(secret("00").is_err());
        assert!(secret(&"zz".repeat(32)).is_err());
        assert_eq!(root("127.0.0.1:7").unwrap(), "127.0.0.1:7".parse().unwrap());
        assert!(root("127.0.0.1").is_err());
    }
}
