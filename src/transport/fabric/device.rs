//! Provider selection: which libfabric provider and domain a rank uses, and what it offers.
//!
//! Owns the `fi_getinfo` queries and the choice among their answers. oxccl asks for
//! `FI_EP_RDM` endpoints with RMA write and remote CQ data (at least 4 bytes, to carry the
//! request id of a write), plus untagged (`FI_MSG`) or, failing that, tagged (`FI_TAGGED`)
//! messages for the control path. It offers the provider `FI_CONTEXT`/`FI_CONTEXT2` and
//! the memory-registration modes it honours (`FI_MR_LOCAL`, `FI_MR_VIRT_ADDR`,
//! `FI_MR_ALLOCATED`, `FI_MR_PROV_KEY`, `FI_MR_ENDPOINT`).
//!
//! `OXCCL_FABRIC_PROVIDER` names the provider (`uet`, `verbs`, `tcp`, `shm`, ...). Without
//! it the order is: `uet`, then the hardware providers, then `tcp` (as `tcp;ofi_rxm`).
//! Single-host and legacy providers (`shm`, `sockets`, `udp`) are used only when named.

use std::ffi::{c_int, CString};
use std::net::IpAddr;

use super::bindings as fi;
use super::sys::{self, fi_info, Lib};
use crate::error::{Error, Result};
use crate::transport::{Capabilities, DeviceProps};

/// Hardware providers, preferred after `uet` and before `tcp`, best first.
const HARDWARE: [&str; 8] = ["cxi", "efa", "opx", "psm3", "psm2", "verbs", "usnic", "gni"];

/// Most requests in flight per connection (posted and not yet reported by `test`).
pub(super) const MAX_REQUESTS: usize = 16;

/// Memory-registration modes oxccl honours.
const MR_MODES: u32 = fi::FI_MR_LOCAL
    | fi::FI_MR_VIRT_ADDR
    | fi::FI_MR_ALLOCATED
    | fi::FI_MR_PROV_KEY
    | fi::FI_MR_ENDPOINT;

/// The chosen provider: an `fi_info` owned by this value, and the facts oxccl needs.
pub(super) struct Chosen {
    lib: &'static Lib,
    /// Owned copy of the chosen info (freed on drop).
    pub info: *mut fi_info,
    /// Provider name as libfabric spells it (`tcp;ofi_rxm`, `shm`, `uet`).
    pub provider: String,
    /// Domain (NIC, interface) name.
    pub domain: String,
    /// The provider has no untagged messages: the control path uses tagged ones.
    pub tagged_only: bool,
    /// `mr_mode` bits the provider asked for.
    pub mr_mode: u32,
    /// Largest message or write.
    pub max_msg_size: usize,
    /// Link speed in Mb/s, where the provider reports one.
    pub speed_mbps: Option<u64>,
}

// SAFETY: `info` is owned by this value and only read; libfabric infos are plain memory.
unsafe impl Send for Chosen {}

impl Drop for Chosen {
    fn drop(&mut self) {
        // SAFETY: `info` came from fi_dupinfo and is freed once.
        unsafe { self.lib.freeinfo(self.info) };
    }
}

impl Chosen {
    /// Whether `bit` is in the provider's mr_mode.
    pub fn mr(&self, bit: u32) -> bool {
        self.mr_mode & bit != 0
    }
}

/// Chooses the provider: `requested` (from `OXCCL_FABRIC_PROVIDER`) or the default order;
/// for address formats that carry an IP address, the endpoint is bound to `bind_ip`.
pub(super) fn choose(requested: Option<&str>, bind_ip: Option<IpAddr>) -> Result<Chosen> {
    let lib = sys::lib()?;
    let (list, tagged_only) = match query(lib, requested, None, false)? {
        Some(l) => (l, false),
        None => match query(lib, requested, None, true)? {
            Some(l) => (l, true),
            None => return Err(no_provider(lib, requested)),
        },
    };
    let Some(best) = pick(&list, requested) else {
        // SAFETY: `list` came from fi_getinfo.
        unsafe { lib.freeinfo(list.head) };
        return Err(no_provider(lib, requested));
    };
    // SAFETY: `best` is an entry of `list`, alive until the list is freed below.
    let (name, format) = unsafe { (prov_name(best), (*best).addr_format) };
    let ip_format = matches!(
        format,
        fi::FI_SOCKADDR | fi::FI_SOCKADDR_IN | fi::FI_SOCKADDR_IN6
    );
    // An address of the interface that reaches the root, so peers reach us the same way
    // (providers with other address formats, such as shm's strings, choose their own).
    let bound = match (ip_format, bind_ip) {
        (true, Some(ip)) => query(lib, Some(&name), Some(ip), tagged_only)?.and_then(|l| {
            let got = pick(&l, Some(&name)).and_then(|p| {
                // SAFETY: `p` is an entry of `l`.
                unsafe { lib.dupinfo(p) }.ok()
            });
            // SAFETY: `l` came from fi_getinfo.
            unsafe { lib.freeinfo(l.head) };
            got
        }),
        _ => None,
    };
    let info = match bound {
        Some(i) => i,
        // SAFETY: `best` is a valid entry of `list`.
        None => match unsafe { lib.dupinfo(best) } {
            Ok(i) => i,
            Err(e) => {
                // SAFETY: `list` came from fi_getinfo.
                unsafe { lib.freeinfo(list.head) };
                return Err(e);
            }
        },
    };
    // SAFETY: `list` came from fi_getinfo; nothing points into it any more.
    unsafe { lib.freeinfo(list.head) };
    // SAFETY: `info` is a complete info returned by the library.
    unsafe {
        let d = &*(*info).domain_attr;
        let ep = &*(*info).ep_attr;
        let speed_mbps = (*info)
            .nic
            .as_ref()
            .and_then(|n| n.link_attr.as_ref())
            .map(|l| l.speed as u64 / 1_000_000)
            .filter(|&s| s > 0);
        Ok(Chosen {
            lib,
            provider: prov_name(info),
            domain: sys::cstr(d.name),
            tagged_only,
            mr_mode: d.mr_mode as u32,
            max_msg_size: ep.max_msg_size,
            speed_mbps,
            info,
        })
    }
}

/// An `fi_getinfo` answer list.
struct List {
    head: *mut fi_info,
}

/// Runs `fi_getinfo` with oxccl's hints; `Ok(None)` when nothing matches.
fn query(
    lib: &'static Lib,
    provider: Option<&str>,
    node: Option<IpAddr>,
    tagged: bool,
) -> Result<Option<List>> {
    let hints = lib.alloc_info()?;
    let prov = provider.map(|p| CString::new(p).unwrap_or_default());
    let node = node.map(|ip| CString::new(ip.to_string()).unwrap_or_default());
    // SAFETY: `hints` and its attribute structs were allocated by the library; the provider
    // name is strdup'ed because fi_freeinfo frees it.
    let res = unsafe {
        let h = &mut *hints;
        let msg = if tagged { fi::FI_TAGGED } else { fi::FI_MSG } as u64;
        h.caps = msg | (fi::FI_RMA | fi::FI_WRITE | fi::FI_REMOTE_WRITE) as u64;
        h.mode = fi::FI_CONTEXT | fi::FI_CONTEXT2;
        (*h.ep_attr).type_ = fi::FI_EP_RDM;
        let d = &mut *h.domain_attr;
        d.mr_mode = MR_MODES as c_int;
        d.threading = fi::FI_THREAD_DOMAIN;
        if let Some(p) = &prov {
            (*h.fabric_attr).prov_name = libc::strdup(p.as_ptr());
        }
        let flags = if node.is_some() { fi::FI_SOURCE } else { 0 };
        let r = lib.getinfo(node.as_deref(), flags, hints);
        lib.freeinfo(hints);
        r
    };
    match res {
        Ok(Some(head)) => Ok(Some(List { head })),
        Ok(None) => Ok(None),
        // A provider named but not built in, or an address it cannot use.
        Err(rc) if rc == -(fi::FI_ENOSYS as c_int) || rc == -(fi::FI_EADDRNOTAVAIL as c_int) => {
            Ok(None)
        }
        Err(rc) => Err(Error::system(format!(
            "fabric: fi_getinfo({}{}) failed: {}",
            provider.unwrap_or("any provider"),
            node.map(|n| format!(", node {}", n.to_string_lossy()))
                .unwrap_or_default(),
            lib.strerror(rc.into())
        ))),
    }
}

/// The provider name of an info.
///
/// # Safety
/// `info` must be a valid info.
unsafe fn prov_name(info: *const fi_info) -> String {
    // SAFETY: forwarded; fabric_attr is always allocated in infos from the library.
    unsafe {
        let f = (*info).fabric_attr;
        if f.is_null() {
            String::new()
        } else {
            sys::cstr((*f).prov_name)
        }
    }
}

/// Rank of a provider in the default order (`None`: only when named).
fn rank_of(provider: &str) -> Option<usize> {
    let core = provider.split(';').next().unwrap_or(provider);
    if core == "uet" {
        Some(0)
    } else if let Some(i) = HARDWARE.iter().position(|&h| h == core) {
        Some(1 + i)
    } else if core == "tcp" {
        Some(1 + HARDWARE.len())
    } else {
        None
    }
}

/// The best usable entry of `list`.
fn pick(list: &List, requested: Option<&str>) -> Option<*mut fi_info> {
    let mut best: Option<(usize, *mut fi_info)> = None;
    let mut cur = list.head;
    while !cur.is_null() {
        // SAFETY: `cur` walks the list fi_getinfo returned.
        let (next, name, data, format) = unsafe {
            (
                (*cur).next,
                prov_name(cur),
                (*(*cur).domain_attr).cq_data_size,
                (*cur).addr_format,
            )
        };
        let rank = match requested {
            Some(_) => Some(0),
            None => rank_of(&name),
        };
        if let (Some(r), true) = (rank, data >= 4) {
            // IPv4 first: it is what the bootstrap and UET's provider use.
            let r = r * 2 + usize::from(format == fi::FI_SOCKADDR_IN6);
            if best.map_or(true, |(b, _)| r < b) {
                best = Some((r, cur));
            }
        }
        cur = next;
    }
    best.map(|(_, p)| p)
}

/// The error for "no provider fits", listing what libfabric has.
fn no_provider(lib: &'static Lib, requested: Option<&str>) -> Error {
    let have = available(lib).join(", ");
    let what = match requested {
        Some(p) => format!("OXCCL_FABRIC_PROVIDER='{p}': libfabric has no such provider"),
        None => "libfabric has no uet, hardware or tcp provider".to_string(),
    };
    Error::system(format!(
        "fabric: {what} with FI_EP_RDM endpoints, RMA write with remote CQ data and \
         messages (FI_MSG or FI_TAGGED); RDM providers present: [{have}]"
    ))
}

/// Names of every provider with RDM endpoints, for messages.
pub(super) fn available(lib: &'static Lib) -> Vec<String> {
    let mut names = Vec::new();
    let Ok(hints) = lib.alloc_info() else {
        return names;
    };
    // SAFETY: hints allocated by the library; the list is walked and freed once.
    unsafe {
        (*(*hints).ep_attr).type_ = fi::FI_EP_RDM;
        let r = lib.getinfo(None, 0, hints);
        lib.freeinfo(hints);
        if let Ok(Some(head)) = r {
            let mut cur = head;
            while !cur.is_null() {
                let n = prov_name(cur);
                if !names.contains(&n) {
                    names.push(n);
                }
                cur = (*cur).next;
            }
            lib.freeinfo(head);
        }
    }
    names
}

/// The device oxccl reports for the chosen provider.
pub(super) fn props(c: &Chosen) -> DeviceProps {
    let core = c.provider.split(';').next().unwrap_or("");
    // Typical one-way small-message latencies, used only to rank algorithms: shared memory
    // is a cache-line handoff, kernel TCP a few syscalls, an RDMA NIC a PCIe round trip.
    let latency_us = match core {
        "shm" => 1.0,
        "tcp" | "sockets" | "udp" | "net" => 10.0,
        _ => 3.0,
    };
    DeviceProps {
        name: format!("{}/{}", c.provider, c.domain),
        speed_mbps: c.speed_mbps.unwrap_or(10_000),
        latency_us,
        pci_path: None,
        numa_node: None,
        gid_index: None,
        port: None,
        caps: Capabilities::messages_only(MAX_REQUESTS),
    }
}
