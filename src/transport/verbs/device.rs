//! Device discovery: which RDMA device and port a rank uses, which GID, and the device's
//! properties.
//!
//! Owns: the device list (and turning its failures into errors that say what is missing),
//! `OXCCL_IB_HCA` in NCCL's syntax, the choice of port and GID, and `/sys/class/infiniband`
//! for properties. The chosen device stays open (context, protection domain, completion
//! channel) in [`Device`]; every other one is closed again.
//!
//! Choices, in order:
//! * device and port: active ports of the devices `OXCCL_IB_HCA` selects (all when unset,
//!   in name order); the first whose GID table holds the rank's own address wins (on RoCE
//!   that is the NIC carrying the rank's traffic); otherwise ranks take them in turn
//!   (`rank % count`), which spreads the ranks of one host over its NICs;
//! * GID: `OXCCL_IB_GID_INDEX` if set; on InfiniBand the port GID (index 0); on RoCE the
//!   entry with the rank's address, else one on the interface carrying that address,
//!   preferring RoCE v2 over v1, routable over link-local and IPv4-mapped over IPv6 (what
//!   NCCL users otherwise set by hand; index 0 is the link-local RoCE v1/v2 GID on most
//!   NICs, which does not route).

use std::ffi::CStr;
use std::net::IpAddr;

use super::conn::MAX_REQUESTS;
use super::qp::{Channel, Context, Pd};
use super::sys::{self, Lib};
use super::VerbsConfig;
use crate::error::{Error, Result};
use crate::transport::{Capabilities, DeviceProps};

/// The device, port and GID a transport uses, kept open.
pub(super) struct Device {
    pub name: String,
    pub port: u8,
    pub gid_index: u8,
    pub gid: [u8; 16],
    pub lid: u16,
    /// Ethernet link layer (RoCE) rather than InfiniBand.
    pub roce: bool,
    /// Active MTU as an `ibv_mtu` value (1 = 256 ... 5 = 4096).
    pub mtu: u32,
    /// Largest message the port carries in one work request.
    pub max_msg: u64,
    pub props: DeviceProps,
    // Drop order: the channel and PD go before the context they belong to.
    pub channel: Channel,
    pub pd: Pd,
    pub ctx: Context,
}

/// One entry of a port's GID table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Gid {
    pub index: u32,
    pub gid: [u8; 16],
    /// `IBV_GID_TYPE_IB`, `_ROCE_V1` or `_ROCE_V2`.
    pub kind: u32,
    /// Interface index of the netdev the entry belongs to (0 on InfiniBand).
    pub ifindex: u32,
}

/// `OXCCL_IB_HCA`, NCCL's `NCCL_IB_HCA` syntax: comma-separated `name[:port]` items that
/// are name prefixes, or exact names after a leading `=`; a leading `^` excludes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct HcaSpec {
    exclude: bool,
    exact: bool,
    items: Vec<(String, Option<u8>)>,
}

impl HcaSpec {
    pub(super) fn parse(spec: &str) -> Result<HcaSpec> {
        let bad = |why: &str| {
            Error::invalid_argument(format!(
                "OXCCL_IB_HCA='{spec}' is not valid: {why} (NCCL syntax: mlx5_0:1,mlx5_1 ; \
                 ^mlx5_2 excludes ; =mlx5_0 matches exactly)"
            ))
        };
        let mut s = spec.trim();
        let exclude = s.starts_with('^');
        if exclude {
            s = &s[1..];
        }
        let exact = s.starts_with('=');
        if exact {
            s = &s[1..];
        }
        let mut items = Vec::new();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (name, port) = match item.split_once(':') {
                Some((n, p)) => {
                    let p: u8 = p
                        .trim()
                        .parse()
                        .ok()
                        .filter(|&p| p > 0)
                        .ok_or_else(|| bad("a port must be a number from 1"))?;
                    (n.trim(), Some(p))
                }
                None => (item, None),
            };
            if name.is_empty() {
                return Err(bad("an item has no device name"));
            }
            items.push((name.to_string(), port));
        }
        if items.is_empty() {
            return Err(bad("no device named"));
        }
        Ok(HcaSpec {
            exclude,
            exact,
            items,
        })
    }

    /// Whether port `port` of device `name` may be used.
    pub(super) fn allows(&self, name: &str, port: u8) -> bool {
        let hit = self.items.iter().any(|(n, p)| {
            let name_ok = if self.exact {
                name == n
            } else {
                name.starts_with(n.as_str())
            };
            name_ok && p.map_or(true, |p| p == port)
        });
        hit != self.exclude
    }
}

/// An IP address as the GID RoCE derives from it (IPv4-mapped for IPv4).
pub(super) fn ip_gid(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// The GID this rank uses on a RoCE port (see the module docs), or `None` if the table
/// holds no usable entry.
pub(super) fn pick_roce_gid(gids: &[Gid], ip: IpAddr, ifindex: Option<u32>) -> Option<Gid> {
    let mine = ip_gid(ip);
    gids.iter()
        .filter(|g| g.gid != [0; 16])
        .max_by_key(|g| {
            let link_local = g.gid[0] == 0xfe && g.gid[1] & 0xc0 == 0x80;
            let v4_mapped = g.gid[..12] == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];
            (
                g.gid == mine,
                ifindex.is_some_and(|i| i == g.ifindex),
                g.kind == sys::IBV_GID_TYPE_ROCE_V2,
                !link_local,
                v4_mapped,
                std::cmp::Reverse(g.index),
            )
        })
        .copied()
}

/// Link speed in Mb/s from the port's `active_speed` and `active_width` codes.
pub(super) fn speed_mbps(active_speed: u8, active_width: u8) -> u64 {
    let lane = match active_speed {
        1 => 2_500,
        2 => 5_000,
        4 | 8 => 10_000,
        16 => 14_000,
        32 => 25_000,
        64 => 50_000,
        128 => 100_000,
        _ => 10_000,
    };
    let lanes = match active_width {
        1 => 1,
        2 => 4,
        4 => 8,
        8 => 12,
        16 => 2,
        _ => 1,
    };
    lane * lanes
}

/// One-way latency of a small message, used only to rank algorithms: a hardware NIC's
/// typical figure, and a software device's (rxe, siw: the kernel's network stack).
fn latency_us(software: bool, roce: bool) -> f64 {
    match (software, roce) {
        (true, _) => 10.0,
        (false, true) => 2.0,
        (false, false) => 1.5,
    }
}

/// A port that is up.
struct PortInfo {
    num: u8,
    attr: sys::ibv_port_attr,
    gids: Vec<Gid>,
}

/// An open device with its usable ports.
struct Opened {
    name: String,
    ctx: Context,
    ports: Vec<PortInfo>,
}

/// Lists, filters and opens devices, then keeps the one this rank uses (module docs).
pub(super) fn open(lib: &'static Lib, cfg: &VerbsConfig) -> Result<Device> {
    let spec = cfg.hca.as_deref().map(HcaSpec::parse).transpose()?;
    let mut opened = list_and_open(lib)?;
    let names: Vec<String> = opened.iter().map(|o| o.name.clone()).collect();
    // (device, port) candidates, in name and port order.
    let mut cands: Vec<(usize, usize)> = Vec::new();
    for (d, o) in opened.iter().enumerate() {
        for (p, port) in o.ports.iter().enumerate() {
            if spec.as_ref().map_or(true, |s| s.allows(&o.name, port.num)) {
                cands.push((d, p));
            }
        }
    }
    if cands.is_empty() {
        let why = match &cfg.hca {
            Some(h) => format!("OXCCL_IB_HCA='{h}' selects no active port"),
            None => "no port is active (link down?)".into(),
        };
        return Err(Error::system(format!(
            "verbs: no usable RDMA port: {why}; devices: {}",
            names.join(", ")
        )));
    }
    let mine = ip_gid(cfg.bind_ip);
    let (d, p) = cands
        .iter()
        .copied()
        .find(|&(d, p)| opened[d].ports[p].gids.iter().any(|g| g.gid == mine))
        .unwrap_or(cands[cfg.rank % cands.len()]);
    let o = opened.swap_remove(d);
    drop(opened); // closes the devices this rank does not use
    let port = &o.ports[p];
    let roce = u32::from(port.attr.link_layer) == sys::IBV_LINK_LAYER_ETHERNET;
    let gid = choose_gid(cfg, &o.name, port, roce)?;
    let gid_index = u8::try_from(gid.index).map_err(|_| {
        Error::invalid_argument(format!(
            "verbs: GID index {} on {} is beyond 255",
            gid.index, o.name
        ))
    })?;
    let sysfs = format!("/sys/class/infiniband/{}/device", o.name);
    let software = std::fs::metadata(&sysfs).is_err();
    let props = DeviceProps {
        name: o.name.clone(),
        speed_mbps: speed_mbps(port.attr.active_speed, port.attr.active_width),
        latency_us: latency_us(software, roce),
        pci_path: std::fs::canonicalize(&sysfs)
            .ok()
            .map(|p| p.to_string_lossy().into_owned()),
        numa_node: std::fs::read_to_string(format!("{sysfs}/numa_node"))
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
            .filter(|&n| n >= 0),
        gid_index: Some(gid.index),
        port: Some(u32::from(port.num)),
        caps: Capabilities {
            rdma_write: false,
            write_with_imm: false,
            needs_registration: false,
            max_requests: MAX_REQUESTS,
            buffered_bytes: 0,
            host_channels: 0,
        },
    };
    let (num, lid, mtu, max_msg) = (
        port.num,
        port.attr.lid,
        port.attr.active_mtu,
        u64::from(port.attr.max_msg_sz),
    );
    // SAFETY: live context.
    let pd = unsafe { (lib.alloc_pd)(o.ctx.ptr()) };
    if pd.is_null() {
        return Err(Error::system(format!(
            "verbs: allocating a protection domain on {} failed: {}",
            o.name,
            sys::errno()
        )));
    }
    let pd = Pd::own(lib, pd);
    // SAFETY: live context.
    let ch = unsafe { (lib.create_comp_channel)(o.ctx.ptr()) };
    if ch.is_null() {
        return Err(Error::system(format!(
            "verbs: creating a completion channel on {} failed: {}",
            o.name,
            sys::errno()
        )));
    }
    let channel = Channel::own(lib, ch);
    set_nonblocking(channel.fd())?;
    tracing::info!(
        target: "oxccl::NET",
        "verbs: device {} port {num}, GID index {gid_index}, {}, active MTU {} bytes, LID {lid}",
        o.name,
        if roce { "RoCE" } else { "InfiniBand" },
        128u32 << mtu.min(5)
    );
    Ok(Device {
        name: o.name,
        port: num,
        gid_index,
        gid: gid.gid,
        lid,
        roce,
        mtu,
        max_msg: if max_msg == 0 { 1 << 30 } else { max_msg },
        props,
        channel,
        pd,
        ctx: o.ctx,
    })
}

fn choose_gid(cfg: &VerbsConfig, dev: &str, port: &PortInfo, roce: bool) -> Result<Gid> {
    let list = || {
        port.gids
            .iter()
            .map(|g| {
                format!(
                    "{}:{}{}",
                    g.index,
                    std::net::Ipv6Addr::from(g.gid),
                    match g.kind {
                        sys::IBV_GID_TYPE_ROCE_V1 => " (RoCE v1)",
                        sys::IBV_GID_TYPE_ROCE_V2 => " (RoCE v2)",
                        _ => "",
                    }
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(i) = cfg.gid_index {
        return port
            .gids
            .iter()
            .find(|g| g.index == i && g.gid != [0; 16])
            .copied()
            .ok_or_else(|| {
                Error::invalid_argument(format!(
                    "OXCCL_IB_GID_INDEX={i}: {dev} port {} has no such GID (table: {})",
                    port.num,
                    list()
                ))
            });
    }
    let found = if roce {
        let ifindex = interface_index(cfg.bind_ip);
        pick_roce_gid(&port.gids, cfg.bind_ip, ifindex)
    } else {
        port.gids.iter().find(|g| g.gid != [0; 16]).copied()
    };
    found.ok_or_else(|| {
        Error::system(format!(
            "verbs: {dev} port {} has no usable GID (table: [{}]); on RoCE the interface \
             needs an IP address",
            port.num,
            list()
        ))
    })
}

/// The index of the interface that has address `ip`, if any.
fn interface_index(ip: IpAddr) -> Option<u32> {
    let name = crate::sys::ifaddr::list_interfaces()
        .ok()?
        .into_iter()
        .find(|(_, a)| *a == ip)?
        .0;
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: a valid C string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

fn set_nonblocking(fd: libc::c_int) -> Result<()> {
    // SAFETY: plain fcntl calls on a descriptor the channel owns.
    let ok = unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        fl >= 0 && libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK) == 0
    };
    if ok {
        Ok(())
    } else {
        Err(Error::system(format!(
            "verbs: making the completion channel non-blocking failed: {}",
            sys::errno()
        )))
    }
}

/// The error for a failed `ibv_get_device_list`, naming what is missing.
fn list_error(err: std::io::Error) -> Error {
    if err.raw_os_error() == Some(libc::ENOSYS) {
        Error::system(
            "verbs: no RDMA device: the kernel has no RDMA support (ibv_get_device_list: \
             ENOSYS; CONFIG_INFINIBAND is off or the ib_uverbs module is not loaded)",
        )
    } else {
        Error::system(format!(
            "verbs: no RDMA device: listing RDMA devices (ibv_get_device_list) failed: {err}"
        ))
    }
}

/// Every device the library lists, opened, with its active ports and their GID tables.
fn list_and_open(lib: &'static Lib) -> Result<Vec<Opened>> {
    let mut n: libc::c_int = 0;
    // SAFETY: `n` is a valid out-pointer.
    let list = unsafe { (lib.get_device_list)(&mut n) };
    if list.is_null() {
        return Err(list_error(sys::errno()));
    }
    struct List(&'static Lib, *mut *mut sys::ibv_device);
    impl Drop for List {
        fn drop(&mut self) {
            // SAFETY: the list came from ibv_get_device_list and is freed once.
            unsafe { (self.0.free_device_list)(self.1) };
        }
    }
    let guard = List(lib, list);
    let count = usize::try_from(n).unwrap_or(0);
    if count == 0 {
        let sysfs = std::fs::read_dir("/sys/class/infiniband")
            .map(|d| d.count())
            .unwrap_or(0);
        let why = if sysfs > 0 {
            format!(
                "the kernel has {sysfs} (/sys/class/infiniband) but libibverbs has no driver \
                 for them: install ibverbs-providers"
            )
        } else {
            "the kernel has none (/sys/class/infiniband is empty); for SoftRoCE: \
             rdma link add rxe0 type rxe netdev eth0"
                .into()
        };
        return Err(Error::system(format!("verbs: no RDMA device: {why}")));
    }
    let mut out = Vec::new();
    for i in 0..count {
        // SAFETY: `list` holds `count` device pointers.
        let dev = unsafe { *guard.1.add(i) };
        // SAFETY: a live device from the list; the name is a NUL-terminated string in it.
        let name = unsafe { CStr::from_ptr((lib.get_device_name)(dev)) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: a live device from the list (contexts outlive the list).
        let ctx = unsafe { (lib.open_device)(dev) };
        if ctx.is_null() {
            // A device we may not open (permissions, a dead function) is skipped; if
            // none remains the caller reports "no usable port".
            continue;
        }
        let ctx = Context::own(lib, ctx);
        let ports = query_ports(lib, &ctx, &name)?;
        out.push(Opened { name, ctx, ports });
    }
    drop(guard);
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn query_ports(lib: &'static Lib, ctx: &Context, name: &str) -> Result<Vec<PortInfo>> {
    // SAFETY: all-zero is a valid out-buffer.
    let mut da: sys::ibv_device_attr = unsafe { std::mem::zeroed() };
    // SAFETY: live context, valid out-pointer.
    let rc = unsafe { (lib.query_device)(ctx.ptr(), &mut da) };
    if rc != 0 {
        return Err(Error::system(format!(
            "verbs: querying device {name} failed: {}",
            sys::rc_error(rc)
        )));
    }
    let mut ports = Vec::new();
    let mut total_gids = 0usize;
    for num in 1..=da.phys_port_cnt {
        // SAFETY: all-zero is a valid out-buffer; the compat query fills its prefix.
        let mut attr: sys::ibv_port_attr = unsafe { std::mem::zeroed() };
        // SAFETY: live context, valid out-pointer.
        let rc = unsafe { (lib.query_port)(ctx.ptr(), num, &mut attr) };
        if rc != 0 {
            return Err(Error::system(format!(
                "verbs: querying {name} port {num} failed: {}",
                sys::rc_error(rc)
            )));
        }
        total_gids += usize::try_from(attr.gid_tbl_len).unwrap_or(0);
        if attr.state == sys::IBV_PORT_ACTIVE {
            ports.push(PortInfo {
                num,
                attr,
                gids: Vec::new(),
            });
        }
    }
    if ports.is_empty() {
        return Ok(ports);
    }
    // SAFETY: all-zero is a valid ibv_gid_entry.
    let mut table = vec![unsafe { std::mem::zeroed::<sys::ibv_gid_entry>() }; total_gids.max(1)];
    // SAFETY: `table` has room for `len` entries of the given size.
    let got = unsafe {
        (lib.query_gid_table)(
            ctx.ptr(),
            table.as_mut_ptr(),
            table.len(),
            0,
            std::mem::size_of::<sys::ibv_gid_entry>(),
        )
    };
    let got = usize::try_from(got).map_err(|_| {
        Error::system(format!(
            "verbs: reading the GID table of {name} failed: {}",
            sys::rc_error(got as libc::c_int)
        ))
    })?;
    for e in &table[..got.min(table.len())] {
        if let Some(p) = ports.iter_mut().find(|p| u32::from(p.num) == e.port_num) {
            p.gids.push(Gid {
                index: e.gid_index,
                // SAFETY: every bit pattern is a valid byte array.
                gid: unsafe { e.gid.raw },
                kind: e.gid_type,
                ifindex: e.ndev_ifindex,
            });
        }
    }
    Ok(ports)
}
