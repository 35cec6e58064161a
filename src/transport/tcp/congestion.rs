//! Which TCP congestion control a data socket uses (`OXCCL_TCP_CONGESTION`).
//!
//! A connection between two ranks of one host never leaves the kernel: there is no network
//! to share and no loss to react to, yet the host's default algorithm still runs on it.
//! Where that default is BBR, each connection paces itself at the bandwidth it estimated
//! in its first round trips, an estimate that differs from connection to connection: on the
//! machine measured, one connection in two or three moved 512 KiB each way in 150-200 us
//! against 70-95 us for the others, for the connection's whole life (docs/performance.md).
//! Reno, always built in and allowed to every process, sends as fast as the window lets
//! it. So connections that stay on this host use reno unless told otherwise; connections to
//! other hosts keep the system's algorithm, which the host's administrator chose for its
//! network.

use std::net::IpAddr;
use std::os::fd::OwnedFd;
use std::path::Path;

use crate::error::{Error, Result};

/// What `OXCCL_TCP_CONGESTION` asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum TcpCongestion {
    /// Reno on connections that stay on this host, the system's algorithm on the others
    /// (unset, or `auto`).
    #[default]
    Auto,
    /// The system's algorithm (`net.ipv4.tcp_congestion_control`) on every connection.
    System,
    /// This algorithm on every connection (`cubic`, `bbr`, `dctcp`, ...): one the kernel
    /// has and lets this process use, else connecting fails with an error naming it.
    Named(String),
}

/// The algorithm `Auto` gives connections within a host.
const WITHIN_HOST: &str = "reno";
/// The kernel's limit on an algorithm's name (`TCP_CA_NAME_MAX` less the NUL).
const MAX_NAME: usize = 15;
const VAR: &str = "OXCCL_TCP_CONGESTION";

impl TcpCongestion {
    /// The setting of `OXCCL_TCP_CONGESTION`; a malformed name is an `InvalidArgument`.
    pub fn from_env() -> Result<TcpCongestion> {
        match crate::config::vars::text(VAR)? {
            None => Ok(TcpCongestion::Auto),
            Some(s) => TcpCongestion::parse(&s),
        }
    }

    /// `auto`, `system`, or an algorithm's name (letters, digits and `_`, at most 15).
    pub fn parse(s: &str) -> Result<TcpCongestion> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("auto") {
            return Ok(TcpCongestion::Auto);
        }
        if t.eq_ignore_ascii_case("system") {
            return Ok(TcpCongestion::System);
        }
        let ok = (1..=MAX_NAME).contains(&t.len())
            && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if ok {
            Ok(TcpCongestion::Named(t.to_string()))
        } else {
            Err(Error::invalid_argument(format!(
                "{VAR}='{s}' is not valid: expected auto, system, or the name of a TCP \
                 congestion control algorithm (letters, digits and _, at most {MAX_NAME}, \
                 e.g. cubic)"
            )))
        }
    }

    /// Sets the algorithm on `fd`, a socket of this host's `local` address to or from
    /// `peer`. `Auto`'s choice is a preference: a kernel that refuses it keeps its own.
    pub(super) fn apply(&self, fd: &OwnedFd, local: IpAddr, peer: IpAddr) -> Result<()> {
        let name = match self {
            TcpCongestion::System => return Ok(()),
            TcpCongestion::Auto if !within_host(local, peer) => return Ok(()),
            TcpCongestion::Auto => WITHIN_HOST,
            TcpCongestion::Named(n) => n.as_str(),
        };
        match set(fd, name) {
            Ok(()) => {
                tracing::debug!(target: "oxccl::NET", "tcp: congestion control {name} on the connection with {peer}");
                Ok(())
            }
            Err(e) if *self == TcpCongestion::Auto => {
                tracing::debug!(target: "oxccl::NET", "tcp: keeping the system's congestion control on the connection with {peer}: setting {name}: {e}");
                Ok(())
            }
            Err(e) => Err(Error::invalid_argument(format!(
                "tcp: {VAR}={name} on the connection with {peer}: the kernel refused it ({e}); {}",
                offered()
            ))),
        }
    }
}

/// Whether a connection between `local` and `peer` stays on this host: the peer is a
/// loopback address or this rank's own (ranks of a host advertise one address), also when
/// an IPv6 socket reports it IPv4-mapped.
pub(super) fn within_host(local: IpAddr, peer: IpAddr) -> bool {
    let peer = peer.to_canonical();
    peer.is_loopback() || peer == local.to_canonical()
}

/// The algorithm `fd` uses.
#[cfg(test)]
fn current(fd: std::os::fd::RawFd) -> std::io::Result<String> {
    let mut buf = [0u8; MAX_NAME + 1];
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: `buf`/`len` describe a writable buffer; the fd is owned.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_CONGESTION,
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let b = &buf[..(len as usize).min(buf.len())];
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    Ok(String::from_utf8_lossy(&b[..end]).into_owned())
}

fn set(fd: &OwnedFd, name: &str) -> std::io::Result<()> {
    crate::sys::socket::set_option(fd, libc::IPPROTO_TCP, libc::TCP_CONGESTION, name.as_bytes())
}

/// What the kernel offers, for the error: every process may use the allowed algorithms,
/// a process with CAP_NET_ADMIN any available one.
fn offered() -> String {
    let read = |what| {
        let rel = format!("proc/sys/net/ipv4/tcp_{what}_congestion_control");
        crate::sys::host::read(Path::new("/"), &rel).unwrap_or_else(|| "unknown".into())
    };
    format!(
        "allowed to every process: {}; available to privileged ones: {}",
        read("allowed"),
        read("available")
    )
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::super::{TcpConfig, TcpTransport};
    use super::*;
    use crate::error::ErrorKind;
    use crate::transport::testkit::connect_pair;
    use crate::transport::Transport;

    const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    fn transport(congestion: TcpCongestion) -> TcpTransport {
        TcpTransport::new(TcpConfig {
            bind_ip: LOCAL,
            socket_buf_bytes: 0,
            congestion,
        })
        .unwrap()
    }

    /// The algorithms of both ends of one connection, sender's first.
    fn connected(congestion: TcpCongestion) -> (String, String) {
        let mut a = transport(congestion.clone());
        let mut b = transport(congestion);
        let (s, r) = connect_pair(&mut a, &mut b);
        let fd_a = a.sends.get_mut(s.0).unwrap().fd();
        let fd_b = b.recvs.get_mut(r.0).unwrap().fd();
        (current(fd_a).unwrap(), current(fd_b).unwrap())
    }

    #[test]
    fn connections_within_the_host_use_reno_on_both_ends() {
        let (a, b) = connected(TcpCongestion::Auto);
        assert_eq!((a.as_str(), b.as_str()), (WITHIN_HOST, WITHIN_HOST));
    }

    #[test]
    fn system_keeps_the_kernels_default() {
        let Some(default) =
            crate::sys::host::read(Path::new("/"), "proc/sys/net/ipv4/tcp_congestion_control")
        else {
            return; // no procfs: nothing to compare with
        };
        let (a, b) = connected(TcpCongestion::System);
        assert_eq!((a, b), (default.clone(), default));
    }

    #[test]
    fn a_named_algorithm_is_set_on_both_ends() {
        let (a, b) = connected(TcpCongestion::Named("reno".into()));
        assert_eq!((a.as_str(), b.as_str()), ("reno", "reno"));
    }

    #[test]
    fn an_algorithm_the_kernel_lacks_fails_the_connect_naming_it() {
        let mut a = transport(TcpCongestion::Named("nosuchcc".into()));
        let mut b = transport(TcpCongestion::Auto);
        let (h, l) = b.listen(0).unwrap();
        let e = a.connect(0, &h).expect_err("connect must fail");
        b.close_listen(l).unwrap();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        let m = e.to_string();
        for part in [
            "OXCCL_TCP_CONGESTION=nosuchcc",
            "127.0.0.1",
            "allowed to every process",
        ] {
            assert!(m.contains(part), "{m}");
        }
    }

    #[test]
    fn the_setting_parses_auto_system_and_names() {
        let ok = [
            ("auto", TcpCongestion::Auto),
            (" AUTO ", TcpCongestion::Auto),
            ("System", TcpCongestion::System),
            ("cubic", TcpCongestion::Named("cubic".into())),
            ("dctcp_2", TcpCongestion::Named("dctcp_2".into())),
        ];
        for (s, want) in ok {
            assert_eq!(TcpCongestion::parse(s).unwrap(), want, "{s}");
        }
        for s in ["", "a b", "bbr;", "sixteen_letters_", "cu-bic"] {
            let e = TcpCongestion::parse(s).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{s:?}");
            assert!(e.to_string().contains("OXCCL_TCP_CONGESTION"), "{e}");
        }
    }

    #[test]
    fn within_host_means_loopback_or_the_same_address() {
        let own: IpAddr = "10.1.2.3".parse().unwrap();
        assert!(within_host(own, LOCAL));
        assert!(within_host(own, IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))));
        assert!(within_host(own, IpAddr::V6(Ipv6Addr::LOCALHOST)));
        assert!(within_host(own, own));
        assert!(within_host(own, "::ffff:10.1.2.3".parse().unwrap()));
        assert!(within_host(own, "::ffff:127.0.0.1".parse().unwrap()));
        assert!(!within_host(own, "10.1.2.4".parse().unwrap()));
    }
}
