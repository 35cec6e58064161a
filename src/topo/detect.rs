//! Discovery: what this rank sits on, read from procfs and sysfs.
//!
//! Owns: the host identity (host name, boot id and network namespace, so that two network
//! namespaces of one machine count as two hosts, as the network sees them), the NUMA node of
//! the CPU the rank runs on, the host's network interfaces with their speeds and NUMA nodes,
//! its RDMA ports (`/sys/class/infiniband`, where present) and the rail: the index of the
//! interface the rank's traffic uses. Every reader takes the file-system root so that tests
//! run on a fabricated sysfs tree.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::model::{Nic, RankInfo, RdmaDev};
use crate::sys::host::read;

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn numa_of(root: &Path, rel: &str) -> Option<u32> {
    read(root, rel)?
        .parse::<i64>()
        .ok()
        .and_then(|n| u32::try_from(n).ok())
}

/// This host's identity: `hostname:xxxxxxxx`, the suffix a hash of the boot id and the
/// network namespace. Ranks that share both share memory and network interfaces.
pub fn host_name(root: &Path) -> String {
    crate::sys::host::host_name(root)
}

/// Whether `cpu` is in a sysfs CPU list such as `0-3,8,10-11`.
pub fn cpulist_contains(list: &str, cpu: u32) -> bool {
    list.split(',').any(|part| {
        let mut ends = part.trim().splitn(2, '-');
        let lo = ends.next().and_then(|s| s.trim().parse::<u32>().ok());
        let hi = ends.next().map(|s| s.trim().parse::<u32>().ok());
        match (lo, hi) {
            (Some(lo), None) => cpu == lo,
            (Some(lo), Some(Some(hi))) => (lo..=hi).contains(&cpu),
            _ => false,
        }
    })
}

/// The NUMA node holding `cpu`, from `sys/devices/system/node/node*/cpulist`.
pub fn numa_of_cpu(root: &Path, cpu: u32) -> Option<u32> {
    let dir = root.join("sys/devices/system/node");
    entries(&dir).into_iter().find_map(|e| {
        let n: u32 = e.strip_prefix("node")?.parse().ok()?;
        let list = read(&dir, &format!("{e}/cpulist"))?;
        cpulist_contains(&list, cpu).then_some(n)
    })
}

fn current_cpu() -> Option<u32> {
    // SAFETY: sched_getcpu takes no arguments and only returns a number.
    let c = unsafe { libc::sched_getcpu() };
    u32::try_from(c).ok()
}

/// The host's network interfaces except loopback, by name, with speed (`speed`, Mb/s; -1
/// and unreadable mean unknown) and NUMA node (`device/numa_node`).
pub fn nics(root: &Path) -> Vec<Nic> {
    let dir = root.join("sys/class/net");
    entries(&dir)
        .into_iter()
        .filter(|n| n != "lo")
        .map(|name| {
            let gbps = read(&dir, &format!("{name}/speed"))
                .and_then(|s| s.parse::<i64>().ok())
                .filter(|&v| v > 0)
                .map_or(0.0, |v| v as f64 / 1000.0);
            let numa = numa_of(&dir, &format!("{name}/device/numa_node"));
            Nic { name, gbps, numa }
        })
        .collect()
}

/// Leading number of a port rate such as `100 Gb/sec (4X EDR)`.
fn rate_gbps(s: &str) -> f64 {
    s.split_whitespace()
        .next()
        .and_then(|x| x.parse::<f64>().ok())
        .unwrap_or(0.0)
}

/// RDMA ports under `sys/class/infiniband`: rate, state, NUMA node and network interface.
pub fn rdma(root: &Path) -> Vec<RdmaDev> {
    let dir = root.join("sys/class/infiniband");
    let mut out = Vec::new();
    for dev in entries(&dir) {
        let numa = numa_of(&dir, &format!("{dev}/device/numa_node"));
        let nets = entries(&dir.join(&dev).join("device/net"));
        for port in entries(&dir.join(&dev).join("ports")) {
            let Ok(p) = port.parse::<u32>() else { continue };
            let base = format!("{dev}/ports/{port}");
            let state = read(&dir, &format!("{base}/state")).unwrap_or_default();
            out.push(RdmaDev {
                name: dev.clone(),
                port: p,
                gbps: read(&dir, &format!("{base}/rate")).map_or(0.0, |r| rate_gbps(&r)),
                active: state.contains("ACTIVE"),
                netdev: nets.first().cloned(),
                numa,
            });
        }
    }
    out
}

/// Everything this rank publishes, read under `root` ("/" for the real system); `nic` is the
/// interface that owns the rank's address (none for loopback).
pub fn detect_at(root: &Path, nic: Option<String>, cpu: Option<u32>) -> RankInfo {
    let nics = nics(root);
    let rail = nic
        .as_ref()
        .and_then(|n| nics.iter().position(|x| &x.name == n))
        .map(|i| i as u32);
    let nic_numa = nic
        .as_ref()
        .and_then(|n| nics.iter().find(|x| &x.name == n))
        .and_then(|x| x.numa);
    RankInfo {
        host: host_name(root),
        numa: cpu.and_then(|c| numa_of_cpu(root, c)).or(nic_numa),
        rail,
        nic,
        nics,
        rdma: rdma(root),
        links: None,
    }
}

/// What this rank sits on, for a rank whose traffic uses address `ip`.
pub fn detect(ip: IpAddr) -> RankInfo {
    let nic = if ip.is_loopback() {
        None
    } else {
        crate::sys::ifaddr::list_interfaces()
            .ok()
            .and_then(|l| l.into_iter().find(|(_, a)| *a == ip).map(|(n, _)| n))
    };
    detect_at(&PathBuf::from("/"), nic, current_cpu())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Tree(PathBuf);
    impl Tree {
        fn new(tag: &str) -> Tree {
            let p = std::env::temp_dir().join(format!("oxccl-sysfs-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            Tree(p)
        }
        fn put(&self, rel: &str, text: &str) {
            let f = self.0.join(rel);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, text).unwrap();
        }
    }
    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn cpu_lists() {
        assert!(cpulist_contains("0-3,8,10-11", 2));
        assert!(cpulist_contains("0-3,8,10-11", 8));
        assert!(cpulist_contains("0-3,8,10-11", 11));
        assert!(!cpulist_contains("0-3,8,10-11", 9));
        assert!(!cpulist_contains("", 0));
        assert!(!cpulist_contains("x-1", 0));
    }

    #[test]
    fn a_fabricated_two_socket_host_with_two_rails() {
        let t = Tree::new("two-socket");
        t.put("proc/sys/kernel/hostname", "node7\n");
        t.put("proc/sys/kernel/random/boot_id", "abc\n");
        t.put("sys/devices/system/node/node0/cpulist", "0-15\n");
        t.put("sys/devices/system/node/node1/cpulist", "16-31\n");
        t.put("sys/class/net/lo/speed", "-1");
        t.put("sys/class/net/eth0/speed", "100000\n");
        t.put("sys/class/net/eth0/device/numa_node", "0\n");
        t.put("sys/class/net/eth1/speed", "100000\n");
        t.put("sys/class/net/eth1/device/numa_node", "1\n");
        t.put("sys/class/net/veth9/speed", "-1\n");
        t.put(
            "sys/class/infiniband/mlx5_1/ports/1/rate",
            "200 Gb/sec (4X HDR)\n",
        );
        t.put("sys/class/infiniband/mlx5_1/ports/1/state", "4: ACTIVE\n");
        t.put("sys/class/infiniband/mlx5_1/device/numa_node", "1\n");
        t.put("sys/class/infiniband/mlx5_1/device/net/eth1/ifindex", "3\n");
        let i = detect_at(&t.0, Some("eth1".into()), Some(20));
        assert!(i.host.starts_with("node7:"), "{}", i.host);
        assert_eq!(i.numa, Some(1));
        assert_eq!(i.rail, Some(1));
        assert_eq!(
            i.nics.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(),
            ["eth0", "eth1", "veth9"]
        );
        assert_eq!(i.nics[1].gbps, 100.0);
        assert_eq!(i.nics[1].numa, Some(1));
        assert_eq!(i.nics[2].gbps, 0.0);
        assert_eq!(i.rdma.len(), 1);
        let d = &i.rdma[0];
        assert_eq!((d.gbps, d.active, d.numa), (200.0, true, Some(1)));
        assert_eq!(d.netdev.as_deref(), Some("eth1"));
        // Without a CPU, the interface's node stands in.
        let j = detect_at(&t.0, Some("eth0".into()), None);
        assert_eq!((j.numa, j.rail), (Some(0), Some(0)));
        assert_eq!(j.host, i.host);
    }

    #[test]
    fn an_empty_tree_still_gives_a_host() {
        let t = Tree::new("empty");
        let i = detect_at(&t.0, None, Some(0));
        assert!(i.host.starts_with("localhost:"));
        assert!(i.nics.is_empty() && i.rdma.is_empty());
        assert_eq!((i.numa, i.rail), (None, None));
    }

    #[test]
    fn the_real_host_is_stable() {
        let a = detect(IpAddr::from([127, 0, 0, 1]));
        let b = detect(IpAddr::from([127, 0, 0, 1]));
        assert_eq!(a.host, b.host);
        assert!(a.rail.is_none());
    }
}
