//! The shm backend: ranks of one host through shared memory, without the kernel on the data
//! path. `OXCCL_TRANSPORT=shm` chooses it for jobs whose ranks all run on one host.
//!
//! Owns [`ShmTransport`] and its `impl Transport`: the tables of listeners, connects and
//! connections, and `wait_activity`. As in the tcp backend, what the engine holds are small
//! `Copy` ids into those tables.
//!
//! * `device.rs`: the one device and its properties;
//! * `listen.rs`: abstract Unix listeners, handles, handing a connection's region over;
//! * `region.rs`: the shared region (a sealed memfd) and its byte ring;
//! * `conn.rs`: one connection's request queue and the copies in and out of the ring;
//! * `attach.rs`: large messages copied straight out of the sender's process.
//!
//! A connection is one-way and has its own region, so each byte of the ring has one writer
//! and one reader, and nothing is locked: a peer killed at any moment leaves no lock held.
//! The memfd has no name, so nothing outlives the processes; a peer's departure shows on
//! the connection's Unix socket and fails what still needed it with Remote.

mod attach;
mod conn;
mod device;
mod listen;
mod region;
#[cfg(test)]
mod tests;

use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use self::conn::{Link, RecvConn, SendConn};
use crate::error::{Error, Result};
use crate::sys::poll;
use crate::transport::slab::{Id, Slab};
use crate::transport::{Completion, ConnectHandle, DeviceProps, Tag, Transport};

/// The shm backend. One instance per rank, driven from one thread at a time.
pub struct ShmTransport {
    device: DeviceProps,
    listeners: Slab<ListenState>,
    connecting: Slab<listen::Connecting>,
    sends: Slab<SendConn>,
    recvs: Slab<RecvConn>,
    /// Reused by `wait_activity`, so that waiting allocates nothing once warm.
    pollfds: Vec<libc::pollfd>,
    /// Whether receivers copy large messages out of the senders' processes.
    attach: bool,
}

/// A listener of a [`ShmTransport`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShmListen(Id);

/// A connection attempt of a [`ShmTransport`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShmConnecting(Id);

/// The sending end of a connection of a [`ShmTransport`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShmSendConn(Id);

/// The receiving end of a connection of a [`ShmTransport`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShmRecvConn(Id);

/// A posted send or receive: its connection and its sequence number there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShmRequest {
    send: bool,
    conn: Id,
    seq: u64,
}

struct ListenState {
    fd: OwnedFd,
    /// Accepted sockets whose hello has not come yet.
    waiting: Vec<listen::Accepted>,
}

/// This machine's boot id (zeros where unreadable): the key of "one host".
pub(crate) fn boot_id() -> [u8; 16] {
    listen::boot_id()
}

fn stale(what: &str) -> Error {
    Error::invalid_usage(format!(
        "shm: {what} is not open (closed already, or from another transport)"
    ))
}

impl ShmTransport {
    /// A transport for this host's ranks.
    pub fn new() -> Result<ShmTransport> {
        Ok(ShmTransport {
            device: device::device(),
            listeners: Slab::new(),
            connecting: Slab::new(),
            sends: Slab::new(),
            recvs: Slab::new(),
            pollfds: Vec::new(),
            attach: false,
        })
    }

    /// Whether this transport's receiving ends copy messages from 64 KiB up straight out of
    /// the sender's process where the kernel allows it (cross-memory attach, `attach.rs`;
    /// `OXCCL_SHM_CMA`), instead of through the ring. Off unless asked for.
    pub fn with_attach(mut self, on: bool) -> ShmTransport {
        self.attach = on;
        self
    }

    /// Whether anything waits on this transport: requests posted, connects or accepts
    /// under way.
    pub(crate) fn busy(&self) -> bool {
        self.connecting.iter().next().is_some()
            || self.listeners.iter().any(|l| !l.waiting.is_empty())
            || self.sends.iter().any(|c| c.busy())
            || self.recvs.iter().any(|c| c.busy())
    }

    /// Sleeps until a peer rings, a listener or a socket turns readable, or `timeout`
    /// passes; not at all when a waiting connection can already move.
    fn sleep(&mut self, timeout: Duration) -> Result<()> {
        let fds = &mut self.pollfds;
        fds.clear();
        let watch = |fds: &mut Vec<libc::pollfd>, fd| {
            fds.push(libc::pollfd {
                fd,
                events: libc::POLLIN | libc::POLLRDHUP,
                revents: 0,
            })
        };
        for l in self.listeners.iter() {
            watch(fds, l.fd.as_raw_fd());
            for a in &l.waiting {
                watch(fds, a.sock.as_raw_fd());
            }
        }
        let links = fds.len();
        let mut ready = false;
        for c in self.recvs.iter_mut().filter(|c| c.busy()) {
            ready |= c.sleep_begin();
            watch(fds, c.link().fd());
        }
        for c in self.sends.iter_mut().filter(|c| c.busy()) {
            ready |= c.sleep_begin();
            watch(fds, c.link().fd());
        }
        if !ready {
            // A failed wait is a short sleep: what the sockets say is looked at anyway.
            let _ = poll::wait(fds, timeout, "shm: waiting for activity (ppoll)");
        }
        let mut rang = fds[links..].iter().map(|p| p.revents & libc::POLLIN != 0);
        for c in self.recvs.iter_mut().filter(|c| c.busy()) {
            c.sleep_end(rang.next().unwrap_or(false));
        }
        for c in self.sends.iter_mut().filter(|c| c.busy()) {
            c.sleep_end(rang.next().unwrap_or(false));
        }
        Ok(())
    }

    fn check_dev(&self, dev: usize) -> Result<()> {
        if dev == 0 {
            Ok(())
        } else {
            Err(Error::invalid_argument(format!(
                "shm: device {dev} does not exist (the shm backend has one device)"
            )))
        }
    }
}

impl Transport for ShmTransport {
    type Listener = ShmListen;
    type Connecting = ShmConnecting;
    type SendConn = ShmSendConn;
    type RecvConn = ShmRecvConn;
    type MemRegion = ();
    type Request = ShmRequest;

    fn name(&self) -> &'static str {
        "shm"
    }

    fn devices(&self) -> Result<Vec<DeviceProps>> {
        Ok(vec![self.device.clone()])
    }

    fn listen(&mut self, dev: usize) -> Result<(ConnectHandle, ShmListen)> {
        self.check_dev(dev)?;
        let (fd, handle) = listen::listen()?;
        let id = self.listeners.insert(ListenState {
            fd,
            waiting: Vec::new(),
        });
        Ok((handle, ShmListen(id)))
    }

    fn connect(&mut self, dev: usize, handle: &ConnectHandle) -> Result<ShmConnecting> {
        self.check_dev(dev)?;
        let (name, pid) = listen::decode_handle(handle)?;
        let c = listen::start_connect(name, pid)?;
        Ok(ShmConnecting(self.connecting.insert(c)))
    }

    fn poll_connect(&mut self, pending: &mut ShmConnecting) -> Result<Option<ShmSendConn>> {
        let c = self
            .connecting
            .get_mut(pending.0)
            .ok_or_else(|| stale("connection attempt"))?;
        match listen::poll_connect(c) {
            Ok(None) => Ok(None),
            Ok(Some((regions, peer))) => {
                let c = self
                    .connecting
                    .remove(pending.0)
                    .ok_or_else(|| stale("connection attempt"))?;
                let link = Link::new(c.sock, regions.forward, peer);
                let conn = SendConn::new(link, Some(regions.reverse));
                Ok(Some(ShmSendConn(self.sends.insert(conn))))
            }
            Err(e) => {
                self.connecting.remove(pending.0);
                Err(e)
            }
        }
    }

    fn accept(&mut self, listener: &mut ShmListen) -> Result<Option<ShmRecvConn>> {
        let l = self
            .listeners
            .get_mut(listener.0)
            .ok_or_else(|| stale("listener"))?;
        while let Some(a) = listen::accept_one(&l.fd)? {
            l.waiting.push(a);
        }
        let mut i = 0;
        while i < l.waiting.len() {
            match listen::read_hello(&l.waiting[i]) {
                Ok(None) => i += 1,
                Ok(Some((regions, peer))) => {
                    let a = l.waiting.swap_remove(i);
                    let link = Link::new(a.sock, regions.forward, peer);
                    let conn = RecvConn::new(link, Some(regions.reverse), self.attach);
                    return Ok(Some(ShmRecvConn(self.recvs.insert(conn))));
                }
                Err(e) => {
                    // A stranger's socket, or a peer that died connecting: drop it; the
                    // others still come.
                    l.waiting.swap_remove(i);
                    tracing::warn!(target: "oxccl::NET", "shm: refused a connection: {e}");
                }
            }
        }
        Ok(None)
    }

    fn register(&mut self, _ptr: *const u8, _len: usize) -> Result<()> {
        Ok(())
    }

    fn deregister(&mut self, _region: ()) -> Result<()> {
        Ok(())
    }

    unsafe fn isend(
        &mut self,
        conn: &mut ShmSendConn,
        data: *const u8,
        len: usize,
        tag: Tag,
        _region: Option<&()>,
    ) -> Result<Option<ShmRequest>> {
        crate::transport::check_buffer("shm", true, data.is_null(), len)?;
        let c = self
            .sends
            .get_mut(conn.0)
            .ok_or_else(|| stale("send connection"))?;
        Ok(c.post(data, len, tag)?.map(|seq| ShmRequest {
            send: true,
            conn: conn.0,
            seq,
        }))
    }

    unsafe fn irecv(
        &mut self,
        conn: &mut ShmRecvConn,
        data: *mut u8,
        len: usize,
        _region: Option<&()>,
    ) -> Result<Option<ShmRequest>> {
        crate::transport::check_buffer("shm", false, data.is_null(), len)?;
        let c = self
            .recvs
            .get_mut(conn.0)
            .ok_or_else(|| stale("receive connection"))?;
        Ok(c.post(data, len)?.map(|seq| ShmRequest {
            send: false,
            conn: conn.0,
            seq,
        }))
    }

    fn test(&mut self, request: &mut ShmRequest) -> Result<Option<Completion>> {
        let done = if request.send {
            self.sends
                .get_mut(request.conn)
                .ok_or_else(|| stale("send connection"))?
                .test(request.seq)
        } else {
            self.recvs
                .get_mut(request.conn)
                .ok_or_else(|| stale("receive connection"))?
                .test(request.seq)
        }?;
        Ok(done)
    }

    /// Sleeps in `poll` on the sockets of the connections that wait (their peers ring
    /// when they publish data or room, and a peer's departure shows there too) and on the
    /// listeners. The engine spins before it calls this, as `OXCCL_SPIN` says.
    fn wait_activity(&mut self, timeout: Duration) -> Result<()> {
        self.sleep(timeout)
    }

    fn duplex(&self) -> bool {
        true
    }

    fn reverse_recv(&mut self, conn: &ShmSendConn) -> Result<ShmRecvConn> {
        let c = self
            .sends
            .get_mut(conn.0)
            .ok_or_else(|| stale("send connection"))?;
        // The reverse region has no further reverse: its own was handed out here.
        let link = c.reverse()?;
        Ok(ShmRecvConn(self.recvs.insert(RecvConn::new(
            link,
            None,
            self.attach,
        ))))
    }

    fn reverse_send(&mut self, conn: &ShmRecvConn) -> Result<ShmSendConn> {
        let c = self
            .recvs
            .get_mut(conn.0)
            .ok_or_else(|| stale("receive connection"))?;
        let link = c.reverse()?;
        Ok(ShmSendConn(self.sends.insert(SendConn::new(link, None))))
    }

    fn recv_peer(&self, conn: &ShmRecvConn) -> String {
        self.recvs.get(conn.0).map_or_else(
            || "an unknown peer".to_string(),
            |_| "a process of this host".to_string(),
        )
    }

    fn check_send(&mut self, conn: &mut ShmSendConn) -> Result<()> {
        let c = self
            .sends
            .get_mut(conn.0)
            .ok_or_else(|| stale("send connection"))?;
        c.check()
    }

    fn confirm_send(&mut self, conn: &mut ShmSendConn) -> Result<()> {
        let c = self
            .sends
            .get_mut(conn.0)
            .ok_or_else(|| stale("send connection"))?;
        c.link().confirm()
    }

    fn confirm_recv(&mut self, conn: &mut ShmRecvConn) -> Result<()> {
        let c = self
            .recvs
            .get_mut(conn.0)
            .ok_or_else(|| stale("receive connection"))?;
        c.link().confirm()
    }

    fn close_send(&mut self, conn: ShmSendConn) -> Result<()> {
        self.sends
            .remove(conn.0)
            .map(drop)
            .ok_or_else(|| stale("send connection"))
    }

    fn close_recv(&mut self, conn: ShmRecvConn) -> Result<()> {
        self.recvs
            .remove(conn.0)
            .map(drop)
            .ok_or_else(|| stale("receive connection"))
    }

    fn close_listen(&mut self, listener: ShmListen) -> Result<()> {
        self.listeners
            .remove(listener.0)
            .map(drop)
            .ok_or_else(|| stale("listener"))
    }
}
