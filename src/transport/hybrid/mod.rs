//! Two backends as one: the peers of this host through shared memory (`shm`), the others
//! through the network backend (tcp, verbs or fabric), chosen per connection, as NCCL puts
//! its SHM and P2P transports beside the network one. The engine drives it like any
//! backend, so every algorithm's intra-host steps run on shared memory, the hierarchical
//! ones included.
//!
//! A listener listens on both; its handle carries this host's key (the boot id), the
//! network handle and, where it fits in the 128 bytes, the shm handle. A connect to a
//! handle with this host's key goes through shm, and falls back to the network where the
//! peer's shm listener cannot be reached (another network namespace of this machine: its
//! abstract Unix sockets are not ours). `OXCCL_SHM=0` leaves shm out.

#[cfg(test)]
mod tests;

use std::time::Duration;

use super::shm::{ShmConnecting, ShmListen, ShmRecvConn, ShmRequest, ShmSendConn, ShmTransport};
use super::{Completion, ConnectHandle, DeviceProps, Tag, Transport, MAX_HANDLE_BYTES};
use crate::error::{Error, Result};

const MAGIC: &[u8; 4] = b"oxhy";
/// Longest sleep in shm while the network backend also waits.
const NAP: Duration = Duration::from_micros(50);

/// This host's key: its boot id. Ranks with equal keys are on one host.
pub type HostKey = [u8; 16];

/// The network backend `N` with shared memory beside it for the peers of this host.
pub struct Hybrid<N: Transport> {
    net: N,
    shm: Option<ShmTransport>,
    host: HostKey,
}

/// A listener of a [`Hybrid`]: the network backend's, and shm's where shm is on.
pub struct HybridListen<N: Transport> {
    net: N::Listener,
    shm: Option<ShmListen>,
}

/// A connection attempt of a [`Hybrid`].
pub enum HybridConnecting<N: Transport> {
    /// Through the network backend.
    Net(N::Connecting),
    /// Through shm; the network handle and device for a fallback.
    Shm(ShmConnecting, ConnectHandle, usize),
}

/// The sending end of a connection of a [`Hybrid`].
pub enum HybridSendConn<N: Transport> {
    /// Through the network backend.
    Net(N::SendConn),
    /// Through shm.
    Shm(ShmSendConn),
}

/// The receiving end of a connection of a [`Hybrid`].
pub enum HybridRecvConn<N: Transport> {
    /// Through the network backend.
    Net(N::RecvConn),
    /// Through shm.
    Shm(ShmRecvConn),
}

/// A posted transfer of a [`Hybrid`].
pub enum HybridRequest<N: Transport> {
    /// On a network connection.
    Net(N::Request),
    /// On a shm connection.
    Shm(ShmRequest),
}

/// This machine's boot id, the host key of [`Hybrid::new`].
pub fn this_host() -> HostKey {
    super::shm::boot_id()
}

impl<N: Transport> Hybrid<N> {
    /// `net` with shm beside it (`shm`: whether to use it) for the peers whose host key is
    /// `host` (normally [`this_host`]; tests give threads different keys to play hosts).
    pub fn new(net: N, shm: bool, host: HostKey) -> Result<Hybrid<N>> {
        let shm = if shm {
            Some(ShmTransport::new()?)
        } else {
            None
        };
        Ok(Hybrid { net, shm, host })
    }

    /// Whether shm copies large messages out of peers' processes (see
    /// [`ShmTransport::with_attach`]).
    pub fn with_attach(mut self, on: bool) -> Hybrid<N> {
        self.shm = self.shm.map(|s| s.with_attach(on));
        self
    }

    fn shm(&mut self) -> Result<&mut ShmTransport> {
        self.shm
            .as_mut()
            .ok_or_else(|| Error::internal("hybrid: a shm connection without shm"))
    }
}

/// The handle: magic, host key, the network handle's length and bytes, the shm handle.
fn encode(
    host: &HostKey,
    net: &ConnectHandle,
    shm: Option<&ConnectHandle>,
) -> Result<ConnectHandle> {
    let n = net.as_bytes();
    let mut b = Vec::with_capacity(MAX_HANDLE_BYTES);
    b.extend_from_slice(MAGIC);
    b.extend_from_slice(host);
    b.push(n.len() as u8);
    b.extend_from_slice(n);
    if let Some(s) = shm {
        if b.len() + s.as_bytes().len() <= MAX_HANDLE_BYTES {
            b.extend_from_slice(s.as_bytes());
        }
    }
    ConnectHandle::new(&b)
}

/// The host key, the network handle and the shm handle (if any) of a handle.
fn decode(h: &ConnectHandle) -> Result<(HostKey, ConnectHandle, Option<ConnectHandle>)> {
    let b = h.as_bytes();
    let bad = || {
        Error::invalid_argument(
            "hybrid: not a connect handle of this transport (do all ranks set OXCCL_SHM \
             alike?)",
        )
    };
    if b.len() < 21 || &b[..4] != MAGIC {
        return Err(bad());
    }
    let mut host = [0u8; 16];
    host.copy_from_slice(&b[4..20]);
    let n = b[20] as usize;
    let net = b.get(21..21 + n).ok_or_else(bad)?;
    let rest = &b[21 + n..];
    let shm = if rest.is_empty() {
        None
    } else {
        Some(ConnectHandle::new(rest)?)
    };
    Ok((host, ConnectHandle::new(net)?, shm))
}

impl<N: Transport> Transport for Hybrid<N> {
    type Listener = HybridListen<N>;
    type Connecting = HybridConnecting<N>;
    type SendConn = HybridSendConn<N>;
    type RecvConn = HybridRecvConn<N>;
    type MemRegion = N::MemRegion;
    type Request = HybridRequest<N>;

    fn name(&self) -> &'static str {
        self.net.name()
    }

    /// The network backend's devices: what the cost model plans with is the slower link.
    fn devices(&self) -> Result<Vec<DeviceProps>> {
        let mut devs = self.net.devices()?;
        if self.shm.is_some() {
            // The engine keeps one depth for every connection; shared memory's rings run
            // slower with the network's (16 MiB allreduce over shm, 2 ranks: 2.4-3.0 ms at
            // eight chunks in flight, 2.8-3.3 at sixteen), so it keeps the default.
            // Ranks of one host talk through shm, whose broadcast gains from two channels.
            for d in &mut devs {
                d.caps.buffered_bytes = 0;
                d.caps.host_channels = 0;
            }
        }
        Ok(devs)
    }

    fn listen(&mut self, dev: usize) -> Result<(ConnectHandle, HybridListen<N>)> {
        let (nh, net) = self.net.listen(dev)?;
        let (sh, shm) = match self.shm.as_mut() {
            Some(s) => {
                let (h, l) = s.listen(0)?;
                (Some(h), Some(l))
            }
            None => (None, None),
        };
        let h = encode(&self.host, &nh, sh.as_ref())?;
        Ok((h, HybridListen { net, shm }))
    }

    fn connect(&mut self, dev: usize, handle: &ConnectHandle) -> Result<HybridConnecting<N>> {
        let (host, net, shm) = decode(handle)?;
        match (shm, self.shm.as_mut()) {
            (Some(sh), Some(s)) if host == self.host => {
                Ok(HybridConnecting::Shm(s.connect(0, &sh)?, net, dev))
            }
            _ => Ok(HybridConnecting::Net(self.net.connect(dev, &net)?)),
        }
    }

    fn poll_connect(
        &mut self,
        pending: &mut HybridConnecting<N>,
    ) -> Result<Option<HybridSendConn<N>>> {
        match pending {
            HybridConnecting::Net(c) => Ok(self.net.poll_connect(c)?.map(HybridSendConn::Net)),
            HybridConnecting::Shm(c, net, dev) => match self.shm()?.poll_connect(c) {
                Ok(s) => Ok(s.map(HybridSendConn::Shm)),
                Err(e) => {
                    tracing::info!(
                        target: "oxccl::NET",
                        "shared memory to a peer of this host failed ({e}); using {} instead",
                        self.net.name()
                    );
                    let (net, dev) = (net.clone(), *dev);
                    *pending = HybridConnecting::Net(self.net.connect(dev, &net)?);
                    Ok(None)
                }
            },
        }
    }

    fn accept(&mut self, listener: &mut HybridListen<N>) -> Result<Option<HybridRecvConn<N>>> {
        if let (Some(l), Some(s)) = (listener.shm.as_mut(), self.shm.as_mut()) {
            if let Some(r) = s.accept(l)? {
                return Ok(Some(HybridRecvConn::Shm(r)));
            }
        }
        Ok(self.net.accept(&mut listener.net)?.map(HybridRecvConn::Net))
    }

    fn register(&mut self, ptr: *const u8, len: usize) -> Result<N::MemRegion> {
        self.net.register(ptr, len)
    }

    fn deregister(&mut self, region: N::MemRegion) -> Result<()> {
        self.net.deregister(region)
    }

    unsafe fn isend(
        &mut self,
        conn: &mut HybridSendConn<N>,
        data: *const u8,
        len: usize,
        tag: Tag,
        region: Option<&N::MemRegion>,
    ) -> Result<Option<HybridRequest<N>>> {
        // SAFETY: forwarded from the caller.
        unsafe {
            match conn {
                HybridSendConn::Net(c) => Ok(self
                    .net
                    .isend(c, data, len, tag, region)?
                    .map(HybridRequest::Net)),
                HybridSendConn::Shm(c) => Ok(self
                    .shm()?
                    .isend(c, data, len, tag, None)?
                    .map(HybridRequest::Shm)),
            }
        }
    }

    unsafe fn irecv(
        &mut self,
        conn: &mut HybridRecvConn<N>,
        data: *mut u8,
        len: usize,
        region: Option<&N::MemRegion>,
    ) -> Result<Option<HybridRequest<N>>> {
        // SAFETY: forwarded from the caller.
        unsafe {
            match conn {
                HybridRecvConn::Net(c) => Ok(self
                    .net
                    .irecv(c, data, len, region)?
                    .map(HybridRequest::Net)),
                HybridRecvConn::Shm(c) => Ok(self
                    .shm()?
                    .irecv(c, data, len, None)?
                    .map(HybridRequest::Shm)),
            }
        }
    }

    unsafe fn write(
        &mut self,
        conn: &mut HybridSendConn<N>,
        data: *const u8,
        len: usize,
        remote_addr: u64,
        remote_key: u64,
        imm: u32,
    ) -> Result<Option<HybridRequest<N>>> {
        match conn {
            // SAFETY: forwarded from the caller.
            HybridSendConn::Net(c) => Ok(unsafe {
                self.net
                    .write(c, data, len, remote_addr, remote_key, imm)?
                    .map(HybridRequest::Net)
            }),
            HybridSendConn::Shm(_) => Err(Error::invalid_usage(
                "hybrid: one-sided write on a shared-memory connection",
            )),
        }
    }

    fn test(&mut self, request: &mut HybridRequest<N>) -> Result<Option<Completion>> {
        match request {
            HybridRequest::Net(q) => self.net.test(q),
            HybridRequest::Shm(q) => self.shm()?.test(q),
        }
    }

    /// Waits in shm's way (yield, then naps) while shm has work, after a look at the
    /// network backend; in the network backend's otherwise.
    /// Sleeps in the backend that waits; where both wait, in shm for at most [`NAP`]
    /// after a look at the network (shm's peers ring it awake, the network's cannot).
    fn wait_activity(&mut self, timeout: Duration) -> Result<()> {
        match self.shm.as_mut() {
            Some(s) if s.busy() => {
                if self.net.pending() {
                    self.net.wait_activity(Duration::ZERO)?;
                    s.wait_activity(timeout.min(NAP))
                } else {
                    s.wait_activity(timeout)
                }
            }
            _ => self.net.wait_activity(timeout),
        }
    }

    fn pending(&self) -> bool {
        self.net.pending() || self.shm.as_ref().is_some_and(|s| s.busy())
    }

    fn shared_locks(&self) -> Option<&'static str> {
        self.net.shared_locks()
    }

    fn duplex(&self) -> bool {
        self.net.duplex()
    }

    fn reverse_recv(&mut self, conn: &HybridSendConn<N>) -> Result<HybridRecvConn<N>> {
        match conn {
            HybridSendConn::Net(c) => Ok(HybridRecvConn::Net(self.net.reverse_recv(c)?)),
            HybridSendConn::Shm(c) => Ok(HybridRecvConn::Shm(self.shm()?.reverse_recv(c)?)),
        }
    }

    fn reverse_send(&mut self, conn: &HybridRecvConn<N>) -> Result<HybridSendConn<N>> {
        match conn {
            HybridRecvConn::Net(c) => Ok(HybridSendConn::Net(self.net.reverse_send(c)?)),
            HybridRecvConn::Shm(c) => Ok(HybridSendConn::Shm(self.shm()?.reverse_send(c)?)),
        }
    }

    fn recv_peer(&self, conn: &HybridRecvConn<N>) -> String {
        match (conn, self.shm.as_ref()) {
            (HybridRecvConn::Net(c), _) => self.net.recv_peer(c),
            (HybridRecvConn::Shm(c), Some(s)) => s.recv_peer(c),
            (HybridRecvConn::Shm(_), None) => "an unknown peer".to_string(),
        }
    }

    fn check_send(&mut self, conn: &mut HybridSendConn<N>) -> Result<()> {
        match conn {
            HybridSendConn::Net(c) => self.net.check_send(c),
            HybridSendConn::Shm(c) => self.shm()?.check_send(c),
        }
    }

    fn confirm_send(&mut self, conn: &mut HybridSendConn<N>) -> Result<()> {
        match conn {
            HybridSendConn::Net(c) => self.net.confirm_send(c),
            HybridSendConn::Shm(c) => self.shm()?.confirm_send(c),
        }
    }

    fn confirm_recv(&mut self, conn: &mut HybridRecvConn<N>) -> Result<()> {
        match conn {
            HybridRecvConn::Net(c) => self.net.confirm_recv(c),
            HybridRecvConn::Shm(c) => self.shm()?.confirm_recv(c),
        }
    }

    fn close_send(&mut self, conn: HybridSendConn<N>) -> Result<()> {
        match conn {
            HybridSendConn::Net(c) => self.net.close_send(c),
            HybridSendConn::Shm(c) => self.shm()?.close_send(c),
        }
    }

    fn close_recv(&mut self, conn: HybridRecvConn<N>) -> Result<()> {
        match conn {
            HybridRecvConn::Net(c) => self.net.close_recv(c),
            HybridRecvConn::Shm(c) => self.shm()?.close_recv(c),
        }
    }

    fn close_listen(&mut self, listener: HybridListen<N>) -> Result<()> {
        let r = match (listener.shm, self.shm.as_mut()) {
            (Some(l), Some(s)) => s.close_listen(l),
            _ => Ok(()),
        };
        self.net.close_listen(listener.net).and(r)
    }
}
