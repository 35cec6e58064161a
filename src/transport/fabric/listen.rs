//! Listen, connect and accept over a connectionless endpoint, and the connect handle.
//!
//! Owns the handle format — `b'F' | version | provider name length | provider name |
//! address length | endpoint address` (at most 128 bytes: a tcp address is 16 or 28 bytes,
//! shm's a short string) — and the two-message handshake: the connecting side inserts the
//! peer's address into its address vector, creates its sending end and sends `Connect`
//! (its own id and address); the listening side inserts the sender's address, creates the
//! receiving end (which `accept` then returns) and answers `Accept` with that end's id. The
//! engine's greeting is the first data message after that.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use super::bindings as fi;
use super::conn::{Header, Id, Kind, RecvConn, SendConn};
use super::{FabricConnecting, FabricListen, FabricRecvConn, FabricSendConn, FabricTransport};
use super::{Peer, MAX_ADDR};
use crate::error::{Error, Result};
use crate::transport::{ConnectHandle, MAX_HANDLE_BYTES};

const HANDLE_MAGIC: u8 = b'F';
const HANDLE_VERSION: u8 = 1;

/// The handle for an endpoint of `provider` at `addr`.
pub(super) fn encode_handle(provider: &str, addr: &[u8]) -> Result<ConnectHandle> {
    let p = provider.as_bytes();
    let need = 4 + p.len() + addr.len();
    if p.len() > 255 || addr.len() > 255 || need > MAX_HANDLE_BYTES {
        return Err(Error::system(format!(
            "fabric({provider}): the endpoint address ({} bytes) and provider name do not fit \
             a {MAX_HANDLE_BYTES}-byte connect handle",
            addr.len()
        )));
    }
    let mut b = Vec::with_capacity(need);
    b.extend_from_slice(&[HANDLE_MAGIC, HANDLE_VERSION, p.len() as u8]);
    b.extend_from_slice(p);
    b.push(addr.len() as u8);
    b.extend_from_slice(addr);
    ConnectHandle::new(&b)
}

/// (provider, address) of a handle.
pub(super) fn decode_handle(h: &ConnectHandle) -> Result<(String, Vec<u8>)> {
    let b = h.as_bytes();
    let bad = || {
        Error::invalid_argument(format!(
            "fabric: malformed connect handle ({} bytes); does every rank use \
             OXCCL_TRANSPORT=fabric?",
            b.len()
        ))
    };
    if b.len() < 4 || b[0] != HANDLE_MAGIC || b[1] != HANDLE_VERSION {
        return Err(bad());
    }
    let pl = usize::from(b[2]);
    let prov = b.get(3..3 + pl).ok_or_else(bad)?;
    let al = usize::from(*b.get(3 + pl).ok_or_else(bad)?);
    let addr = b.get(4 + pl..4 + pl + al).ok_or_else(bad)?;
    Ok((String::from_utf8_lossy(prov).into_owned(), addr.to_vec()))
}

/// A peer address for messages: `ip:port` for socket addresses, the string for string
/// addresses (shm), hex otherwise.
pub(super) fn describe(format: u32, a: &[u8]) -> String {
    let u16_be = |i: usize| u16::from_be_bytes([a[i], a[i + 1]]);
    match format {
        fi::FI_SOCKADDR_IN if a.len() >= 8 => {
            let ip = Ipv4Addr::new(a[4], a[5], a[6], a[7]);
            SocketAddr::from((ip, u16_be(2))).to_string()
        }
        fi::FI_SOCKADDR_IN6 if a.len() >= 24 => {
            let mut o = [0u8; 16];
            o.copy_from_slice(&a[8..24]);
            SocketAddr::from((Ipv6Addr::from(o), u16_be(2))).to_string()
        }
        fi::FI_ADDR_STR => {
            let end = a.iter().position(|&c| c == 0).unwrap_or(a.len());
            String::from_utf8_lossy(&a[..end]).into_owned()
        }
        _ => a
            .iter()
            .take(32)
            .map(|b| format!("{b:02x}"))
            .collect::<String>(),
    }
}

/// The process id in a shm address (`fi_shm://PID...`), to tell when a peer process died.
fn shm_pid(provider: &str, name: &str) -> Option<i32> {
    if provider != "shm" {
        return None;
    }
    let rest = name.rsplit("://").next()?;
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok().filter(|&p| p > 0)
}

impl FabricTransport {
    /// The peer with endpoint address `addr`, inserted into the address vector on first use.
    pub(super) fn peer_of(&mut self, addr: &[u8]) -> Result<u32> {
        if let Some(&p) = self.peer_by_name.get(addr) {
            return Ok(p);
        }
        if addr.is_empty() || addr.len() > MAX_ADDR {
            return Err(Error::remote(format!(
                "fabric({}): a peer sent an address of {} bytes",
                self.ep.chosen.provider,
                addr.len()
            )));
        }
        let fi_addr = self.ep.insert(addr)?;
        let name = describe(self.addr_format, addr);
        let p = self.peers.len() as u32;
        self.peers.push(Peer {
            addr: fi_addr,
            pid: shm_pid(&self.ep.chosen.provider, &name),
            name,
            failed: None,
            gone: None,
            last_probe: None,
            probe_out: None,
        });
        self.peer_by_name.insert(addr.to_vec(), p);
        Ok(p)
    }

    pub(super) fn do_listen(&mut self) -> Result<(ConnectHandle, FabricListen)> {
        self.listeners = self.listeners.wrapping_add(1);
        self.listening = Some(self.listeners);
        Ok((self.handle.clone(), FabricListen(self.listeners)))
    }

    pub(super) fn do_connect(&mut self, handle: &ConnectHandle) -> Result<FabricConnecting> {
        let (prov, addr) = decode_handle(handle)?;
        if prov != self.ep.chosen.provider {
            return Err(Error::invalid_argument(format!(
                "fabric: the peer uses provider '{prov}' and this rank '{}'; set \
                 OXCCL_FABRIC_PROVIDER to the same value on every rank",
                self.ep.chosen.provider
            )));
        }
        let peer = self.peer_of(&addr)?;
        let id = self
            .sends
            .try_insert(SendConn::new(peer))
            .ok_or_else(|| Error::system("fabric: more than 65536 connections"))?;
        let mut h = Header::new(Kind::Connect, 0);
        h.src = id.pack();
        h.len = self.ep.name.len() as u64;
        h.w = whoami();
        let name = self.ep.name.clone();
        self.queue(peer, &h, &name)?;
        Ok(FabricConnecting(id))
    }

    pub(super) fn do_poll_connect(
        &mut self,
        pending: &FabricConnecting,
    ) -> Result<Option<FabricSendConn>> {
        self.progress()?;
        let c = self
            .sends
            .get(pending.0)
            .ok_or_else(|| stale("connection attempt"))?;
        if let Some(e) = self.send_failure(pending.0) {
            self.sends.remove(pending.0);
            return Err(e);
        }
        Ok(c.remote.map(|_| FabricSendConn(pending.0)))
    }

    pub(super) fn do_accept(&mut self, l: &FabricListen) -> Result<Option<FabricRecvConn>> {
        if self.listening != Some(l.0) {
            return Err(stale("listener"));
        }
        if self.accepted.is_empty() {
            self.progress()?;
        }
        Ok(self.accepted.pop_front().map(FabricRecvConn))
    }

    pub(super) fn do_close_listen(&mut self, l: FabricListen) -> Result<()> {
        if self.listening != Some(l.0) {
            return Err(stale("listener"));
        }
        self.listening = None;
        // Connections that arrived but were never accepted are refused.
        for id in std::mem::take(&mut self.accepted) {
            if let Some(c) = self.recvs.remove(id) {
                let h = Header::new(Kind::CloseToSend, c.remote);
                let _ = self.queue(c.peer, &h, &[]);
            }
        }
        Ok(())
    }

    /// A `Connect` came: create the receiving end and answer (or refuse when not listening).
    pub(super) fn on_connect(&mut self, h: &Header, payload: &[u8]) -> Result<()> {
        let Some(addr) = payload.get(..h.len as usize) else {
            return Ok(());
        };
        let peer = match self.peer_of(addr) {
            Ok(p) => p,
            // An address our AV cannot take: nothing to answer to.
            Err(_) => return Ok(()),
        };
        if self.listening.is_none() {
            return self.queue(peer, &Header::new(Kind::CloseToSend, h.src), &[]);
        }
        let Some(id) = self.recvs.try_insert(RecvConn::new(peer, h.src)) else {
            return self.queue(peer, &Header::new(Kind::CloseToSend, h.src), &[]);
        };
        self.accepted.push_back(id);
        self.learn_pid(peer, h.w);
        let mut a = Header::new(Kind::Accept, h.src);
        a.src = id.pack();
        a.w = whoami();
        self.queue(peer, &a, &[])
    }

    /// An `Accept` came: the sending end is established.
    pub(super) fn on_accept(&mut self, h: &Header) {
        if let Some(c) = self.sends.get_mut(Id::unpack(h.dst)) {
            c.remote.get_or_insert(h.src);
            let peer = c.peer;
            self.learn_pid(peer, h.w);
        }
    }

    /// Remembers the process id a peer on this host sent (`[pid, host id, 0]`), so that its
    /// death is seen at once (`kill(pid, 0)`) whatever the provider reports.
    fn learn_pid(&mut self, peer: u32, w: [u64; 3]) {
        let (pid, host) = (w[0], w[1]);
        if host != crate::sys::host::host_id() {
            return;
        }
        if let (Some(p), Ok(pid)) = (self.peers.get_mut(peer as usize), i32::try_from(pid)) {
            if pid > 0 {
                p.pid.get_or_insert(pid);
            }
        }
    }
}

/// What `Connect` and `Accept` say of their sender: process id and host.
fn whoami() -> [u64; 3] {
    [
        u64::from(std::process::id()),
        crate::sys::host::host_id(),
        0,
    ]
}

pub(super) fn stale(what: &str) -> Error {
    Error::invalid_usage(format!("fabric: {what} used after it was closed"))
}
