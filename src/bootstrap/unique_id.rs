//! The 128-byte unique id that one rank creates and ships to the others.
//!
//! Owns: the id's byte layout, its validation, the job secret, and choosing where the root's
//! store listens (`OXCCL_ROOT_ADDR`, `OXCCL_SOCKET_IFNAME`).
//!
//! Layout (all reserved bytes zero):
//!
//! | bytes | field |
//! | --- | --- |
//! | 0..4 | magic `OXID` |
//! | 4 | layout version (1) |
//! | 5 | address family: 4 or 6 |
//! | 6..8 | root port, big-endian |
//! | 8..24 | root IP (IPv4 in 8..12, the rest zero) |
//! | 24..28 | IPv6 scope id, big-endian (zero for IPv4) |
//! | 28..32 | reserved |
//! | 32..64 | job secret |
//! | 64..128 | reserved |

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::time::Duration;

use super::ifaddr::pick_interface;
use super::server::StoreServer;
use crate::error::{Error, Result};

/// Size of a [`UniqueId`] in bytes (NCCL's `NCCL_UNIQUE_ID_BYTES`).
pub const UNIQUE_ID_BYTES: usize = 128;

const MAGIC: [u8; 4] = *b"OXID";
const LAYOUT_VERSION: u8 = 1;
const SECRET: std::ops::Range<usize> = 32..64;

/// Identifies one job: the root store's address and a random secret that every connection
/// to the store must prove. Created once ([`UniqueId::new`]), shipped as bytes
/// ([`as_bytes`](UniqueId::as_bytes) / [`from_bytes`](UniqueId::from_bytes)) to every rank.
///
/// `Debug` shows the address only: the secret is what keeps strangers out of the job.
#[derive(Clone, PartialEq, Eq)]
pub struct UniqueId {
    bytes: [u8; UNIQUE_ID_BYTES],
    root: SocketAddr,
    secret: [u8; 32],
}

impl UniqueId {
    /// Creates an id and starts its store server in a background thread, which ends by
    /// itself once every rank has said goodbye, or after `OXCCL_TIMEOUT` (default 300 s)
    /// with no client connected.
    ///
    /// Listens on `OXCCL_ROOT_ADDR` (`ip` or `ip:port`) when set, else on the address
    /// [`pick_interface`] chooses from `OXCCL_SOCKET_IFNAME`.
    pub fn new() -> Result<UniqueId> {
        let addr = match env("OXCCL_ROOT_ADDR") {
            Some(v) => parse_root_addr(&v)?,
            None => {
                let spec = env("OXCCL_SOCKET_IFNAME");
                SocketAddr::new(pick_interface(spec.as_deref())?.1, 0)
            }
        };
        let (id, server) = UniqueId::serve(addr, timeout_from_env()?)?;
        server.detach();
        Ok(id)
    }

    /// Like [`new`](UniqueId::new), listening on `ip` at a port the system picks.
    pub fn with_addr(ip: IpAddr) -> Result<UniqueId> {
        let (id, server) = UniqueId::serve(SocketAddr::new(ip, 0), timeout_from_env()?)?;
        server.detach();
        Ok(id)
    }

    /// Creates an id with a fresh secret and starts its store on `addr`, returning the
    /// server's handle to the caller (dropping it stops the server).
    pub fn serve(addr: SocketAddr, idle_timeout: Duration) -> Result<(UniqueId, StoreServer)> {
        if addr.ip().is_unspecified() {
            return Err(Error::invalid_argument(format!(
                "the root address {addr} cannot be reached by other ranks: name one of this \
                 host's addresses (OXCCL_ROOT_ADDR) or an interface (OXCCL_SOCKET_IFNAME)"
            )));
        }
        let secret = random_secret()?;
        let server = StoreServer::spawn(addr, secret, idle_timeout)?;
        Ok((UniqueId::from_parts(server.local_addr(), secret), server))
    }

    /// Parses bytes made by [`as_bytes`](UniqueId::as_bytes); anything else (wrong length,
    /// magic, version or family, or non-zero reserved bytes) is `InvalidArgument`.
    pub fn from_bytes(bytes: &[u8]) -> Result<UniqueId> {
        let bad = |why: &str| Error::invalid_argument(format!("not an oxccl unique id: {why}"));
        let b: [u8; UNIQUE_ID_BYTES] = bytes.try_into().map_err(|_| {
            bad(&format!(
                "{} bytes instead of {UNIQUE_ID_BYTES}",
                bytes.len()
            ))
        })?;
        if b[..4] != MAGIC {
            return Err(bad("wrong magic"));
        }
        if b[4] != LAYOUT_VERSION {
            return Err(bad(&format!(
                "layout version {} (this build reads {LAYOUT_VERSION})",
                b[4]
            )));
        }
        let port = u16::from_be_bytes([b[6], b[7]]);
        let root = match b[5] {
            4 => {
                if b[12..28].iter().any(|&x| x != 0) {
                    return Err(bad("non-zero padding after the IPv4 address"));
                }
                SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::new(b[8], b[9], b[10], b[11]),
                    port,
                ))
            }
            6 => {
                let mut ip = [0u8; 16];
                ip.copy_from_slice(&b[8..24]);
                let scope = u32::from_be_bytes([b[24], b[25], b[26], b[27]]);
                SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(ip), port, 0, scope))
            }
            f => return Err(bad(&format!("address family {f}"))),
        };
        if b[28..32].iter().chain(&b[64..]).any(|&x| x != 0) {
            return Err(bad("non-zero reserved bytes"));
        }
        let mut secret = [0u8; 32];
        secret.copy_from_slice(&b[SECRET]);
        Ok(UniqueId {
            bytes: b,
            root,
            secret,
        })
    }

    /// The 128 bytes to ship to the other ranks.
    pub fn as_bytes(&self) -> &[u8; UNIQUE_ID_BYTES] {
        &self.bytes
    }

    /// Where the job's store listens.
    pub fn root_addr(&self) -> SocketAddr {
        self.root
    }

    /// The job secret every store connection must prove.
    pub fn secret(&self) -> &[u8; 32] {
        &self.secret
    }

    /// An id for a store someone else runs (a launcher that started its own
    /// [`StoreServer`] with `secret`).
    pub fn from_parts(root: SocketAddr, secret: [u8; 32]) -> UniqueId {
        let mut b = [0u8; UNIQUE_ID_BYTES];
        b[..4].copy_from_slice(&MAGIC);
        b[4] = LAYOUT_VERSION;
        b[6..8].copy_from_slice(&root.port().to_be_bytes());
        match root {
            SocketAddr::V4(a) => {
                b[5] = 4;
                b[8..12].copy_from_slice(&a.ip().octets());
            }
            SocketAddr::V6(a) => {
                b[5] = 6;
                b[8..24].copy_from_slice(&a.ip().octets());
                b[24..28].copy_from_slice(&a.scope_id().to_be_bytes());
            }
        }
        b[SECRET].copy_from_slice(&secret);
        // Flow info is not carried, so keep the decoded form identical to what bytes give.
        let root = match root {
            SocketAddr::V6(a) => {
                SocketAddr::V6(SocketAddrV6::new(*a.ip(), a.port(), 0, a.scope_id()))
            }
            v4 => v4,
        };
        UniqueId {
            bytes: b,
            root,
            secret,
        }
    }
}

impl std::fmt::Debug for UniqueId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UniqueId")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

/// 32 random bytes from the system's generator (`/dev/urandom`), for a job secret.
pub fn random_secret() -> Result<[u8; 32]> {
    // The same 32 random bytes a handshake nonce is.
    crate::auth::nonce()
}

fn env(name: &str) -> Option<String> {
    crate::config::vars::text(name).ok().flatten()
}

/// `OXCCL_ROOT_ADDR`: `ip`, `ip:port` or `[ipv6]:port`; no port means any.
fn parse_root_addr(v: &str) -> Result<SocketAddr> {
    let v = v.trim();
    v.parse::<SocketAddr>()
        .or_else(|_| v.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 0)))
        .or_else(|_| {
            let ip = v.strip_prefix('[').and_then(|s| s.strip_suffix(']'));
            ip.ok_or(())
                .and_then(|s| s.parse::<IpAddr>().map_err(|_| ()))
                .map(|ip| SocketAddr::new(ip, 0))
        })
        .map_err(|_| {
            Error::invalid_argument(format!(
                "OXCCL_ROOT_ADDR='{v}' is not valid: expected an IP address, optionally with \
                 a port (10.0.0.1, 10.0.0.1:29500, [fd00::1]:29500)"
            ))
        })
}

/// The idle timeout of a store started by [`UniqueId::new`]: `OXCCL_TIMEOUT`, default 300 s.
pub(crate) fn timeout_from_env() -> Result<Duration> {
    // One parser for OXCCL_TIMEOUT: the registry's (the same bounds as `Config`'s).
    let s = crate::config::vars::seconds("OXCCL_TIMEOUT")?;
    Ok(s.map_or(Duration::from_secs(300), Duration::from_secs_f64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootstrap::StoreClient;
    use crate::ErrorKind;

    #[test]
    fn fuzz_unique_ids_decode_or_refuse_and_round_trip() {
        let corpus = crate::fuzz::targets::seeds("unique_id");
        for b in crate::fuzz::inputs(&corpus, 30_000, 51) {
            crate::fuzz::targets::unique_id(&b);
        }
    }

    #[test]
    fn bytes_round_trip_v4_and_v6() {
        let secret = [0xa5; 32];
        for root in [
            "127.0.0.1:29500".parse::<SocketAddr>().unwrap(),
            "10.1.2.3:1".parse().unwrap(),
            SocketAddr::V6(SocketAddrV6::new("fd00::1".parse().unwrap(), 4321, 0, 0)),
            SocketAddr::V6(SocketAddrV6::new("fe80::1".parse().unwrap(), 7, 0, 3)),
        ] {
            let id = UniqueId::from_parts(root, secret);
            assert_eq!(id.root_addr(), root);
            assert_eq!(id.secret(), &secret);
            let back = UniqueId::from_bytes(id.as_bytes()).unwrap();
            assert_eq!(back, id);
            assert_eq!(back.root_addr(), root);
            assert_eq!(back.as_bytes(), id.as_bytes());
        }
    }

    #[test]
    fn garbage_is_rejected() {
        let good = *UniqueId::from_parts("127.0.0.1:5000".parse().unwrap(), [1; 32]).as_bytes();
        let check = |b: &[u8], why: &str| {
            let e = UniqueId::from_bytes(b).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidArgument);
            assert!(e.message().contains(why), "{e}");
        };
        check(&good[..127], "127 bytes");
        check(&[good.as_slice(), &[0]].concat(), "129 bytes");
        check(&[0u8; 128], "magic");
        check(&[0xffu8; 128], "magic");
        let mut b = good;
        b[4] = 2;
        check(&b, "layout version 2");
        let mut b = good;
        b[5] = 5;
        check(&b, "family 5");
        let mut b = good;
        b[13] = 1;
        check(&b, "padding");
        let mut b = good;
        b[100] = 1;
        check(&b, "reserved");
        let mut b = good;
        b[30] = 1;
        check(&b, "reserved");
        // Every byte of the secret is free; changing one still parses, to a different id.
        let mut b = good;
        b[40] ^= 0xff;
        assert_ne!(
            UniqueId::from_bytes(&b).unwrap(),
            UniqueId::from_bytes(&good).unwrap()
        );
    }

    #[test]
    fn debug_hides_the_secret() {
        let id = UniqueId::from_parts("127.0.0.1:5000".parse().unwrap(), [0xab; 32]);
        let d = format!("{id:?}");
        assert!(d.contains("127.0.0.1:5000"), "{d}");
        assert!(
            !d.to_lowercase().contains("ab, ") && !d.contains("171"),
            "{d}"
        );
        assert!(!d.contains("secret") && !d.contains("bytes"), "{d}");
    }

    #[test]
    fn secrets_are_random() {
        let a = random_secret().unwrap();
        let b = random_secret().unwrap();
        assert_ne!(a, b);
        assert_ne!(a, [0; 32]);
    }

    #[test]
    fn root_addr_syntax() {
        let p = |s: &str| parse_root_addr(s).unwrap();
        assert_eq!(p("127.0.0.1"), "127.0.0.1:0".parse().unwrap());
        assert_eq!(p(" 127.0.0.1:29500 "), "127.0.0.1:29500".parse().unwrap());
        assert_eq!(p("::1"), "[::1]:0".parse().unwrap());
        assert_eq!(p("[::1]"), "[::1]:0".parse().unwrap());
        assert_eq!(p("[::1]:7"), "[::1]:7".parse().unwrap());
        for bad in ["host:1", "127.0.0.1:x", "1.2.3", "[::1", ""] {
            let e = parse_root_addr(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidArgument);
            assert!(e.message().contains("OXCCL_ROOT_ADDR"), "{e}");
        }
    }

    #[test]
    fn unspecified_root_is_refused() {
        let e = UniqueId::serve("0.0.0.0:0".parse().unwrap(), Duration::from_secs(1)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    }

    #[test]
    fn with_addr_serves_a_store_that_ends_after_goodbye() {
        let (id, server) =
            UniqueId::serve("127.0.0.1:0".parse().unwrap(), Duration::from_secs(5)).unwrap();
        let id2 = UniqueId::from_bytes(id.as_bytes()).unwrap();
        let t = Duration::from_secs(5);
        let mut c = StoreClient::connect(id2.root_addr(), id2.secret(), 0, 1, t).unwrap();
        assert_eq!(c.all_gather("x", b"hi", t).unwrap(), vec![b"hi".to_vec()]);
        c.goodbye().unwrap();
        assert!(server.wait_finished(Duration::from_secs(3)));

        // The detached form is reachable too.
        let id = UniqueId::with_addr(Ipv4Addr::LOCALHOST.into()).unwrap();
        assert_eq!(id.root_addr().ip(), IpAddr::from(Ipv4Addr::LOCALHOST));
        let mut c = StoreClient::connect(id.root_addr(), id.secret(), 0, 1, t).unwrap();
        c.set("k", b"v").unwrap();
        assert_eq!(c.get("k", t).unwrap(), b"v");
        c.goodbye().unwrap();
    }
}
