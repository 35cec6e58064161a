//! The verbs backend: RDMA over InfiniBand and RoCE (v2) through libibverbs, which is
//! opened at run time, so a build needs no RDMA packages and a machine without RDMA gets
//! a clear error instead of a missing shared library.
//!
//! Owns [`VerbsTransport`] and its `impl Transport`: the tables of listeners, set-ups and
//! connections, the registration cache, and `wait_activity` (a short spin in the engine,
//! then sleeping on the completion channel, so many ranks on few cores do not starve each
//! other).
//!
//! * `sys.rs`: the loaded library; `bindings.rs`: types generated from rdma-core 44's
//!   headers (`ci/gen-verbs-bindings.sh`);
//! * `device.rs`: device, port and GID choice, properties;
//! * `listen.rs`: the connect handle and the side-channel set-up of RC queue pairs;
//! * `conn.rs`: one connection's requests and completions; `post.rs`: its writes;
//!   `ctrl.rs`: its queue pairs and control block; `wire.rs`: the protocol;
//! * `qp.rs`: verbs objects as owned handles; `mr.rs`: memory registration.
//!
//! Connections are duplex: one set of RC queue pairs carries both directions of a peer
//! pair, and the engine's sending and receiving ends are two views of it.
//! `docs/roce.md` tells how to run it on real RoCE and how CI tests it on SoftRoCE.

// Generated code: C naming, every item of the header whether used or not.
#[allow(
    missing_docs,
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    dead_code,
    unsafe_op_in_unsafe_fn,
    clippy::all,
    clippy::undocumented_unsafe_blocks
)]
mod bindings;
mod conn;
mod ctrl;
mod device;
mod listen;
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) use listen::{fuzz_setup, fuzz_setup_seeds};
mod mr;
mod post;
mod qp;
mod sys;
#[cfg(test)]
mod tests;
mod wire;

use std::net::IpAddr;
use std::time::Duration;

pub use mr::VerbsRegion;

use self::conn::{Conn, Mem};
use self::device::Device;
use self::listen::{Connecting, HandleInfo, Listener, SetupEnv};
use self::mr::MrCache;
use self::sys::Lib;
use crate::error::{Error, Result};
use crate::sys::poll;
use crate::transport::slab::{Id, Slab};
use crate::transport::{Completion, ConnectHandle, DeviceProps, Tag, Transport};

/// Settings of a [`VerbsTransport`]; [`VerbsConfig::from_env`] reads the `OXCCL_IB_*`
/// variables (see `docs/environment.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerbsConfig {
    /// The rank's address: the side channel listens on it, and the GID carrying it (or
    /// one on its interface) is preferred.
    pub bind_ip: IpAddr,
    /// The rank, to spread ranks over devices when none carries `bind_ip`.
    pub rank: usize,
    /// Devices and ports to use (`OXCCL_IB_HCA`, NCCL's syntax); `None`: all.
    pub hca: Option<String>,
    /// GID index to use (`OXCCL_IB_GID_INDEX`); `None`: chosen automatically.
    pub gid_index: Option<u32>,
    /// IP traffic class / DSCP << 2 of RoCE packets (`OXCCL_IB_TC`).
    pub traffic_class: u8,
    /// InfiniBand service level, the VL/priority class (`OXCCL_IB_SL`).
    pub service_level: u8,
    /// Queue pairs per connection that large messages are split over
    /// (`OXCCL_IB_QPS_PER_CONNECTION`, 1..=16).
    pub qps_per_connection: usize,
    /// Local ACK timeout exponent: 4.096 us * 2^timeout per try (`OXCCL_IB_TIMEOUT`).
    pub timeout: u8,
    /// Retransmissions before a dead peer is reported (`OXCCL_IB_RETRY_CNT`, 0..=7; 6 by
    /// default, since SoftRoCE takes 7 to mean "for ever").
    pub retry_cnt: u8,
}

impl VerbsConfig {
    /// Defaults for a rank at `bind_ip`.
    pub fn new(bind_ip: IpAddr, rank: usize) -> VerbsConfig {
        VerbsConfig {
            bind_ip,
            rank,
            hca: None,
            gid_index: None,
            traffic_class: 0,
            service_level: 0,
            qps_per_connection: 1,
            timeout: 18,
            retry_cnt: 6,
        }
    }

    /// Defaults overridden by the `OXCCL_IB_*` variables that are set; a malformed value is
    /// an `InvalidArgument` error naming the variable.
    pub fn from_env(bind_ip: IpAddr, rank: usize) -> Result<VerbsConfig> {
        let mut c = VerbsConfig::new(bind_ip, rank);
        use crate::config::vars;
        // Ranges are declared in the registry; narrowing cannot fail within them.
        let int = |n: &str| -> Result<Option<u64>> { vars::int(n) };
        if let Some(v) = vars::text("OXCCL_IB_HCA")? {
            device::HcaSpec::parse(&v)?;
            c.hca = Some(v);
        }
        if let Some(n) = int("OXCCL_IB_GID_INDEX")? {
            c.gid_index = Some(n as u32);
        }
        if let Some(n) = int("OXCCL_IB_TC")? {
            c.traffic_class = n as u8;
        }
        if let Some(n) = int("OXCCL_IB_SL")? {
            c.service_level = n as u8;
        }
        if let Some(n) = int("OXCCL_IB_QPS_PER_CONNECTION")? {
            c.qps_per_connection = (n as usize).min(listen::MAX_QPS);
        }
        if let Some(n) = int("OXCCL_IB_TIMEOUT")? {
            c.timeout = n as u8;
        }
        if let Some(n) = int("OXCCL_IB_RETRY_CNT")? {
            c.retry_cnt = n as u8;
        }
        Ok(c)
    }
}

/// The verbs backend. One instance per rank, driven from one thread at a time; it uses
/// one device port. Dropping it destroys every queue pair and registration it made.
pub struct VerbsTransport {
    cfg: VerbsConfig,
    // Drop order: everything made on the device goes before the device.
    listeners: Slab<Listener>,
    connecting: Slab<Connecting>,
    conns: Slab<Conn>,
    mrs: MrCache,
    pollfds: Vec<libc::pollfd>,
    dev: Device,
    lib: &'static Lib,
}

/// A listener of a [`VerbsTransport`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerbsListen(Id);

/// A connection attempt of a [`VerbsTransport`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerbsConnecting(Id);

/// The sending end of a connection of a [`VerbsTransport`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerbsSendConn(Id);

/// The receiving end of a connection of a [`VerbsTransport`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerbsRecvConn(Id);

/// A posted send or receive: its connection, direction and sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerbsRequest {
    conn: Id,
    send: bool,
    seq: u64,
}

const SEND_END: u8 = 1;
const RECV_END: u8 = 2;

impl VerbsTransport {
    /// Opens the device this rank uses (see `device.rs` for the choice). Fails with a
    /// `System` error naming what is missing: the library, kernel support, a device.
    pub fn new(cfg: VerbsConfig) -> Result<VerbsTransport> {
        if cfg.bind_ip.is_unspecified() {
            return Err(Error::invalid_argument(format!(
                "verbs: address {} is unspecified; give an address of this host that peers \
                 can reach",
                cfg.bind_ip
            )));
        }
        let lib = sys::lib()?;
        let dev = device::open(lib, &cfg)?;
        Ok(VerbsTransport {
            cfg,
            listeners: Slab::new(),
            connecting: Slab::new(),
            conns: Slab::new(),
            mrs: MrCache::default(),
            pollfds: Vec::new(),
            dev,
            lib,
        })
    }

    /// The device in use.
    pub fn device(&self) -> &DeviceProps {
        &self.dev.props
    }

    fn check_dev(&self, dev: usize) -> Result<()> {
        if dev == 0 {
            return Ok(());
        }
        Err(Error::invalid_argument(format!(
            "verbs: device {dev} does not exist (this transport uses one, {} port {})",
            self.dev.name, self.dev.port
        )))
    }

    fn env(&self) -> SetupEnv<'_> {
        SetupEnv {
            lib: self.lib,
            dev: &self.dev,
            cfg: &self.cfg,
        }
    }

    fn conn(&mut self, id: Id, end: u8) -> Result<(&mut Conn, Mem<'_>)> {
        let what = if end == SEND_END { "send" } else { "receive" };
        let c = self
            .conns
            .get_mut(id)
            .filter(|c| c.ends & end != 0)
            .ok_or_else(|| stale(&format!("{what} connection")))?;
        let mem = Mem {
            lib: self.lib,
            pd: &self.dev.pd,
            cache: &mut self.mrs,
        };
        Ok((c, mem))
    }

    fn close_end(&mut self, id: Id, end: u8, what: &str) -> Result<()> {
        let c = self
            .conns
            .get_mut(id)
            .filter(|c| c.ends & end != 0)
            .ok_or_else(|| stale(what))?;
        c.ends &= !end;
        if c.ends == 0 {
            self.conns.remove(id);
        }
        Ok(())
    }

    /// Reads and acknowledges every pending completion event (the channel is
    /// non-blocking); the CQs themselves are polled by the connections.
    fn drain_events(&mut self) -> Result<()> {
        loop {
            let mut cq: *mut sys::ibv_cq = std::ptr::null_mut();
            let mut ctx: *mut libc::c_void = std::ptr::null_mut();
            // SAFETY: live channel; valid out-pointers.
            let rc = unsafe { (self.lib.get_cq_event)(self.dev.channel.ptr(), &mut cq, &mut ctx) };
            if rc != 0 {
                let e = sys::errno();
                return match e.raw_os_error() {
                    Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(()),
                    _ => Err(Error::system(format!(
                        "verbs: reading a completion event failed: {e}"
                    ))),
                };
            }
            // SAFETY: `cq` is the live CQ the event is for (events of a destroyed CQ are
            // discarded by the kernel); acknowledged at once so destroying it never waits.
            unsafe { (self.lib.ack_cq_events)(cq, 1) };
        }
    }
}

impl Transport for VerbsTransport {
    type Listener = VerbsListen;
    type Connecting = VerbsConnecting;
    type SendConn = VerbsSendConn;
    type RecvConn = VerbsRecvConn;
    type MemRegion = VerbsRegion;
    type Request = VerbsRequest;

    fn name(&self) -> &'static str {
        "verbs"
    }

    fn devices(&self) -> Result<Vec<DeviceProps>> {
        Ok(vec![self.dev.props.clone()])
    }

    fn listen(&mut self, dev: usize) -> Result<(ConnectHandle, VerbsListen)> {
        self.check_dev(dev)?;
        let l = Listener::bind(self.cfg.bind_ip)?;
        let handle = listen::encode_handle(&HandleInfo {
            addr: l.addr()?,
            gid: self.dev.gid,
            lid: self.dev.lid,
            mtu: self.dev.mtu as u8,
            roce: self.dev.roce,
        })?;
        Ok((handle, VerbsListen(self.listeners.insert(l))))
    }

    fn connect(&mut self, dev: usize, handle: &ConnectHandle) -> Result<VerbsConnecting> {
        self.check_dev(dev)?;
        let h = listen::decode_handle(handle)?;
        let c = Connecting::start(&self.env(), &h, self.cfg.qps_per_connection)?;
        Ok(VerbsConnecting(self.connecting.insert(c)))
    }

    fn poll_connect(&mut self, pending: &mut VerbsConnecting) -> Result<Option<VerbsSendConn>> {
        let env = SetupEnv {
            lib: self.lib,
            dev: &self.dev,
            cfg: &self.cfg,
        };
        let c = self
            .connecting
            .get_mut(pending.0)
            .ok_or_else(|| stale("connection attempt (already established or failed)"))?;
        match c.poll(&env) {
            Ok(None) => Ok(None),
            Ok(Some(mut conn)) => {
                self.connecting.remove(pending.0);
                conn.ends = SEND_END;
                Ok(Some(VerbsSendConn(self.conns.insert(conn))))
            }
            Err(e) => {
                self.connecting.remove(pending.0);
                Err(e)
            }
        }
    }

    fn accept(&mut self, listener: &mut VerbsListen) -> Result<Option<VerbsRecvConn>> {
        let env = SetupEnv {
            lib: self.lib,
            dev: &self.dev,
            cfg: &self.cfg,
        };
        let l = self
            .listeners
            .get_mut(listener.0)
            .ok_or_else(|| stale("listener"))?;
        Ok(l.accept(&env)?.map(|mut conn| {
            conn.ends = RECV_END;
            VerbsRecvConn(self.conns.insert(conn))
        }))
    }

    /// Declares memory the following calls use; it is registered with the device only if
    /// a message needs it (see `mr.rs`), and released by `deregister`.
    fn register(&mut self, ptr: *const u8, len: usize) -> Result<VerbsRegion> {
        self.mrs.declare(ptr, len)
    }

    fn deregister(&mut self, region: VerbsRegion) -> Result<()> {
        self.mrs.undeclare(region)
    }

    unsafe fn isend(
        &mut self,
        conn: &mut VerbsSendConn,
        data: *const u8,
        len: usize,
        tag: Tag,
        region: Option<&VerbsRegion>,
    ) -> Result<Option<VerbsRequest>> {
        crate::transport::check_buffer("verbs", true, data.is_null(), len)?;
        let id = conn.0;
        let (c, mut mem) = self.conn(id, SEND_END)?;
        Ok(c.post_send(&mut mem, data, len, tag, region)?
            .map(|seq| VerbsRequest {
                conn: id,
                send: true,
                seq,
            }))
    }

    unsafe fn irecv(
        &mut self,
        conn: &mut VerbsRecvConn,
        data: *mut u8,
        len: usize,
        region: Option<&VerbsRegion>,
    ) -> Result<Option<VerbsRequest>> {
        crate::transport::check_buffer("verbs", false, data.is_null(), len)?;
        let id = conn.0;
        let (c, mut mem) = self.conn(id, RECV_END)?;
        Ok(c.post_recv(&mut mem, data, len, region)?
            .map(|seq| VerbsRequest {
                conn: id,
                send: false,
                seq,
            }))
    }

    fn test(&mut self, request: &mut VerbsRequest) -> Result<Option<Completion>> {
        let c = self
            .conns
            .get_mut(request.conn)
            .ok_or_else(|| stale("connection"))?;
        if request.send {
            c.test_send(request.seq)
        } else {
            c.test_recv(request.seq)
        }
    }

    /// Arms the completion queue of every busy connection, polls them once more (a
    /// completion may have come before arming), then sleeps in `ppoll` on the completion
    /// channel, the side-channel sockets of busy connections (a peer's end shows there at
    /// once), the listeners and the set-ups, until one is ready or `timeout` passes.
    fn wait_activity(&mut self, timeout: Duration) -> Result<()> {
        let mut ready = false;
        for c in self.conns.iter_mut() {
            if !c.busy() || c.done_waiting() {
                continue;
            }
            c.cq().arm()?;
            // An error here is the connection's, reported by the request's next test.
            ready |= c.progress().unwrap_or(true);
        }
        if ready {
            return Ok(());
        }
        let fds = &mut self.pollfds;
        fds.clear();
        let mut push = |fd, events| {
            fds.push(libc::pollfd {
                fd,
                events,
                revents: 0,
            })
        };
        push(self.dev.channel.fd(), libc::POLLIN);
        for c in self.conns.iter() {
            if c.busy() && !c.done_waiting() {
                push(c.sock_fd(), libc::POLLIN | libc::POLLRDHUP);
            }
        }
        for l in self.listeners.iter() {
            for fd in l.fds() {
                push(fd, libc::POLLIN);
            }
        }
        for c in self.connecting.iter() {
            push(c.fd(), libc::POLLIN | libc::POLLOUT);
        }
        if poll::wait(fds, timeout, "verbs: waiting for activity (ppoll)")? == 0 {
            // Timed out or interrupted (EINTR): nothing to drain.
            return Ok(());
        }
        let events = fds[0].revents != 0;
        let sockets = fds[1..].iter().any(|p| p.revents != 0);
        if events {
            self.drain_events()?;
        }
        if sockets {
            for c in self.conns.iter_mut() {
                if c.busy() && !c.done_waiting() {
                    // Notes a peer that is gone; the next test of a request that needs it
                    // fails, once the completions it caused are polled.
                    let _ = c.check_peer();
                }
            }
        }
        Ok(())
    }

    fn duplex(&self) -> bool {
        true
    }

    fn reverse_recv(&mut self, conn: &VerbsSendConn) -> Result<VerbsRecvConn> {
        let c = self
            .conns
            .get_mut(conn.0)
            .filter(|c| c.ends & SEND_END != 0)
            .ok_or_else(|| stale("send connection"))?;
        c.ends |= RECV_END;
        Ok(VerbsRecvConn(conn.0))
    }

    fn reverse_send(&mut self, conn: &VerbsRecvConn) -> Result<VerbsSendConn> {
        let c = self
            .conns
            .get_mut(conn.0)
            .filter(|c| c.ends & RECV_END != 0)
            .ok_or_else(|| stale("receive connection"))?;
        c.ends |= SEND_END;
        Ok(VerbsSendConn(conn.0))
    }

    /// A peer that left fails only connections with requests still waiting for it: one
    /// that finished its part of the call may exit before this rank does.
    fn check_send(&mut self, conn: &mut VerbsSendConn) -> Result<()> {
        let (c, _) = self.conn(conn.0, SEND_END)?;
        c.check_peer()?;
        c.progress().map(drop)
    }

    fn close_send(&mut self, conn: VerbsSendConn) -> Result<()> {
        self.close_end(conn.0, SEND_END, "send connection")
    }

    fn close_recv(&mut self, conn: VerbsRecvConn) -> Result<()> {
        self.close_end(conn.0, RECV_END, "receive connection")
    }

    fn close_listen(&mut self, listener: VerbsListen) -> Result<()> {
        self.listeners
            .remove(listener.0)
            .map(drop)
            .ok_or_else(|| stale("listener"))
    }
}

fn stale(what: &str) -> Error {
    Error::invalid_usage(format!("verbs: {what} used after it was closed"))
}
