//! The `Transport` trait, shaped like NCCL's network plugin API (`ncclNet_v8`), and its
//! backends.
//!
//! Owns: moving bytes between two endpoints. Knows nothing of ranks, collectives or
//! schedules; the engine (`crate::engine`) is the only caller.
//!
//! Semantics every backend keeps:
//! * connections are one-way: a `SendConn` on one side, a `RecvConn` on the other;
//! * the k-th `isend` on a connection matches the k-th `irecv` on its peer; the receive
//!   buffer may be larger than the message, and the completion says how many bytes came and
//!   with which [`Tag`];
//! * nothing blocks: "not yet" and "no room now" are values (`None`), the caller polls again;
//! * [`Transport::test`] is the call that makes progress; a request is finished once `test`
//!   returned `Some`, and must not be tested again;
//! * errors are returned, never panics, and a closed or failed peer is
//!   [`ErrorKind::Remote`](crate::ErrorKind::Remote).
//!
//! Backends repeat one file set: `mod.rs` (the trait impl), `device.rs` (discovery and
//! properties), `conn.rs` (one connection's state machine), `listen.rs` (listen, connect,
//! accept). What they share lives beside them: `requests.rs` (a connection's requests by
//! sequence number), `slab.rs` (ids of connections and listeners); the OS calls (sockets,
//! `poll`, `dlopen`) are in `crate::sys`.

pub mod fabric;
pub mod hybrid;
pub mod mem;
mod requests;
pub mod shm;
mod slab;
pub mod tcp;
#[cfg(test)]
mod testkit;
pub mod verbs;

use std::time::Duration;

use crate::error::{Error, Result};

/// Most bytes a connect handle may hold (NCCL's `NCCL_NET_HANDLE_MAXSIZE`).
pub const MAX_HANDLE_BYTES: usize = 128;

/// What travels with every message: the engine's description of the call it belongs to.
/// Backends carry it opaquely (in a header, or beside the data).
pub type Tag = [u64; 3];

/// An opaque connect handle of at most [`MAX_HANDLE_BYTES`] bytes, published through the
/// bootstrap store by the listening side.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectHandle {
    len: u8,
    bytes: [u8; MAX_HANDLE_BYTES],
}

impl ConnectHandle {
    /// A handle holding `bytes`; more than [`MAX_HANDLE_BYTES`] is an error.
    pub fn new(bytes: &[u8]) -> Result<Self> {
        if bytes.len() > MAX_HANDLE_BYTES {
            return Err(Error::internal(format!(
                "connect handle of {} bytes exceeds {MAX_HANDLE_BYTES}",
                bytes.len()
            )));
        }
        let mut h = ConnectHandle {
            len: bytes.len() as u8,
            bytes: [0; MAX_HANDLE_BYTES],
        };
        h.bytes[..bytes.len()].copy_from_slice(bytes);
        Ok(h)
    }

    /// The handle's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

impl std::fmt::Debug for ConnectHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ConnectHandle({} bytes)", self.len)
    }
}

/// What a backend can do beyond two-sided messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capabilities {
    /// One-sided RDMA write is available ([`Transport::write`]).
    pub rdma_write: bool,
    /// Writes can carry 32-bit immediate data that completes on the target.
    pub write_with_imm: bool,
    /// Buffers must be registered before data calls ([`Transport::register`]).
    pub needs_registration: bool,
    /// Most requests in flight per connection.
    pub max_requests: usize,
    /// Bytes each connection buffers of its own between the requests and the wire (a
    /// socket's send buffer), which the engine keeps filled; 0 when there is no such buffer.
    pub buffered_bytes: usize,
    /// Channels a communicator whose ranks all share one host opens when `OXCCL_NCHANNELS`
    /// is unset, where the backend's extra connections add nothing within a host; 0 keeps
    /// the communicator's default.
    pub host_channels: usize,
}

/// The error of a send (`send`) from, or a receive into, a null pointer with `len > 0`, for
/// backend `name`; `Ok` otherwise.
pub(crate) fn check_buffer(name: &str, send: bool, ptr_is_null: bool, len: usize) -> Result<()> {
    if !ptr_is_null || len == 0 {
        return Ok(());
    }
    Err(Error::invalid_argument(if send {
        format!("{name}: send of {len} bytes from a null pointer")
    } else {
        format!("{name}: receive of {len} bytes into a null pointer")
    }))
}

impl Capabilities {
    /// Two-sided messages only, without registration, with `max_requests` in flight per
    /// connection (tcp, shm, mem, fabric).
    pub fn messages_only(max_requests: usize) -> Capabilities {
        Capabilities {
            max_requests,
            ..Capabilities::default()
        }
    }
}

/// Properties of one device (a NIC, an interface, or the in-process fabric).
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceProps {
    /// Device name (`lo`, `eth0`, `mlx5_0`, `mem`).
    pub name: String,
    /// Link speed in Mb/s.
    pub speed_mbps: u64,
    /// One-way latency of a small message, in microseconds.
    pub latency_us: f64,
    /// PCI path, where the device has one.
    pub pci_path: Option<String>,
    /// NUMA node, where known.
    pub numa_node: Option<i32>,
    /// GID index in use (RDMA devices).
    pub gid_index: Option<u32>,
    /// Port number (RDMA devices).
    pub port: Option<u32>,
    /// What the backend can do on this device.
    pub caps: Capabilities,
}

/// A finished transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    /// Bytes transferred.
    pub bytes: usize,
    /// The tag the sender attached (receives); the tag sent (sends).
    pub tag: Tag,
}

/// A backend. One instance per rank; all calls come from the thread that drives the rank.
pub trait Transport: Send + 'static {
    /// A listening endpoint, from [`Transport::listen`].
    type Listener: Send;
    /// A connection being established by [`Transport::connect`].
    type Connecting: Send;
    /// The sending end of a connection.
    type SendConn: Send;
    /// The receiving end of a connection.
    type RecvConn: Send;
    /// A memory registration (`()`-like where registration is a no-op).
    type MemRegion: Send;
    /// A posted transfer.
    type Request: Send;

    /// The backend's name, as `OXCCL_TRANSPORT` spells it.
    fn name(&self) -> &'static str;

    /// The devices this backend can use, best first.
    fn devices(&self) -> Result<Vec<DeviceProps>>;

    /// Starts listening on device `dev`; the handle goes to peers through the bootstrap.
    fn listen(&mut self, dev: usize) -> Result<(ConnectHandle, Self::Listener)>;

    /// Starts connecting to the peer that published `handle`; never blocks.
    fn connect(&mut self, dev: usize, handle: &ConnectHandle) -> Result<Self::Connecting>;

    /// Advances a connection attempt: `Some` once it is established.
    fn poll_connect(&mut self, pending: &mut Self::Connecting) -> Result<Option<Self::SendConn>>;

    /// Accepts one incoming connection if one is ready; never blocks.
    fn accept(&mut self, listener: &mut Self::Listener) -> Result<Option<Self::RecvConn>>;

    /// Registers `len` bytes at `ptr` for data calls on this backend.
    fn register(&mut self, ptr: *const u8, len: usize) -> Result<Self::MemRegion>;

    /// Releases a registration; failures are returned, never panicked on.
    fn deregister(&mut self, region: Self::MemRegion) -> Result<()>;

    /// Posts a send of `len` bytes at `data`, carrying `tag`. `None`: no room now, retry.
    ///
    /// # Safety
    /// `data..data+len` must stay valid and unmodified until `test` reports completion (or
    /// the connection is closed).
    unsafe fn isend(
        &mut self,
        conn: &mut Self::SendConn,
        data: *const u8,
        len: usize,
        tag: Tag,
        region: Option<&Self::MemRegion>,
    ) -> Result<Option<Self::Request>>;

    /// Posts a receive of at most `len` bytes into `data`. `None`: no room now, retry.
    /// A longer message is a call mismatch: the tcp and mem backends complete the receive
    /// with the message's length and tag, writing nothing, so that the engine names both
    /// calls (and fail the connection after); the others fail it with InvalidUsage.
    ///
    /// # Safety
    /// `data..data+len` must stay valid, and be written by no one else, until `test`
    /// reports completion (or the connection is closed).
    unsafe fn irecv(
        &mut self,
        conn: &mut Self::RecvConn,
        data: *mut u8,
        len: usize,
        region: Option<&Self::MemRegion>,
    ) -> Result<Option<Self::Request>>;

    /// One-sided write with 32-bit immediate data, where [`Capabilities::rdma_write`] says so.
    ///
    /// # Safety
    /// As for [`Transport::isend`]; `remote_addr`/`remote_key` must describe a registered
    /// region of the peer that is at least `len` bytes long.
    unsafe fn write(
        &mut self,
        conn: &mut Self::SendConn,
        data: *const u8,
        len: usize,
        remote_addr: u64,
        remote_key: u64,
        imm: u32,
    ) -> Result<Option<Self::Request>> {
        let _ = (conn, data, len, remote_addr, remote_key, imm);
        Err(Error::invalid_usage(format!(
            "transport '{}' has no one-sided write (check Capabilities::rdma_write)",
            self.name()
        )))
    }

    /// Makes progress on `request`: `Some` once it has finished.
    fn test(&mut self, request: &mut Self::Request) -> Result<Option<Completion>>;

    /// Blocks for at most `timeout` or until some connection may be able to make progress.
    /// Called by the engine after a bounded spin found nothing to do.
    fn wait_activity(&mut self, timeout: Duration) -> Result<()> {
        let _ = timeout;
        std::thread::yield_now();
        Ok(())
    }

    /// Whether anything is posted or under way here (requests, connects, listeners): a
    /// transport driven beside this one (see `transport::hybrid`) sleeps only briefly
    /// while this one may have something to report. `true` where unknown.
    fn pending(&self) -> bool {
        true
    }

    /// What of this transport lives in memory shared with peers, guarded by locks that a
    /// peer killed while holding one never releases (`None`: nothing). A call stuck inside
    /// the transport after such a peer died cannot be freed by anything in this process;
    /// the communicator then reports it and ends the process (see `comm::wedge`).
    fn shared_locks(&self) -> Option<&'static str> {
        None
    }

    /// Whether one connection carries both directions: the side that connected can receive
    /// on it ([`Transport::reverse_recv`]) and the side that accepted can send on it
    /// ([`Transport::reverse_send`]). Then only one side of a pair connects, and replies ride
    /// with the other direction's data (on TCP, acknowledgements piggyback instead of
    /// costing packets of their own).
    fn duplex(&self) -> bool {
        false
    }

    /// The receiving end of the connection `conn` sends on, where [`Transport::duplex`].
    fn reverse_recv(&mut self, conn: &Self::SendConn) -> Result<Self::RecvConn> {
        let _ = conn;
        Err(Error::invalid_usage(format!(
            "transport '{}' has no duplex connections",
            self.name()
        )))
    }

    /// The sending end of the connection `conn` receives on, where [`Transport::duplex`].
    fn reverse_send(&mut self, conn: &Self::RecvConn) -> Result<Self::SendConn> {
        let _ = conn;
        Err(Error::invalid_usage(format!(
            "transport '{}' has no duplex connections",
            self.name()
        )))
    }

    /// Where an accepted connection comes from, for logs ("an unknown peer" where the
    /// backend cannot tell).
    fn recv_peer(&self, conn: &Self::RecvConn) -> String {
        let _ = conn;
        "an unknown peer".to_string()
    }

    /// Reports whether the peer of an idle sending connection has gone (`Remote`), so that a
    /// rank waiting on that peer for something else learns of it without a timeout. Called
    /// by the engine only while it is idle; backends that cannot tell return `Ok`.
    fn check_send(&mut self, conn: &mut Self::SendConn) -> Result<()> {
        let _ = conn;
        Ok(())
    }

    /// Like [`Transport::check_send`], but as thorough as the backend can be, ignoring any
    /// rate limit on its liveness checks. The engine calls it once, after a call failed with
    /// a `Remote` error, to name every rank that has gone rather than only the neighbour the
    /// failure was noticed on.
    fn confirm_send(&mut self, conn: &mut Self::SendConn) -> Result<()> {
        self.check_send(conn)
    }

    /// For a receiving connection, as [`Transport::confirm_send`]: whether its peer has
    /// failed (not merely closed in order), checked as thoroughly as the backend can.
    /// Backends whose connections are duplex answer through `confirm_send`.
    fn confirm_recv(&mut self, conn: &mut Self::RecvConn) -> Result<()> {
        let _ = conn;
        Ok(())
    }

    /// Closes a sending connection (pending requests are dropped).
    fn close_send(&mut self, conn: Self::SendConn) -> Result<()>;

    /// Closes a receiving connection (pending requests are dropped).
    fn close_recv(&mut self, conn: Self::RecvConn) -> Result<()>;

    /// Closes a listener.
    fn close_listen(&mut self, listener: Self::Listener) -> Result<()>;
}
