//! The topology description: hosts with their network interfaces and RDMA devices, where
//! each rank sits (host, NUMA node, rail), and the link parameters of the cost model.
//!
//! Owns: the types, building a [`Topology`] from what every rank published ([`RankInfo`]),
//! and generating uniform clusters (`H` hosts x `L` ranks, `R` rails, placed by slot or by
//! node) for tests and for `oxccl-topo`. Reading and writing them as JSON is `file.rs`.

use std::collections::HashMap;

/// A network interface of a host.
#[derive(Debug, Clone, PartialEq)]
pub struct Nic {
    /// Interface name (`eth0`, `ib0`, `veth1`).
    pub name: String,
    /// Link speed in Gb/s; 0 when the interface does not report one.
    pub gbps: f64,
    /// NUMA node of the interface's device, where known.
    pub numa: Option<u32>,
}

/// An RDMA device (`/sys/class/infiniband`), one entry per port.
#[derive(Debug, Clone, PartialEq)]
pub struct RdmaDev {
    /// Device name (`mlx5_0`, `rxe0`).
    pub name: String,
    /// Port number.
    pub port: u32,
    /// Port rate in Gb/s (0 when unknown).
    pub gbps: f64,
    /// Whether the port is ACTIVE.
    pub active: bool,
    /// The network interface of the port, where the device has one (RoCE, IPoIB).
    pub netdev: Option<String>,
    /// NUMA node of the device, where known.
    pub numa: Option<u32>,
}

/// One host: its name and what it has.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Host {
    /// The host's identity: ranks with the same name share memory and network interfaces.
    pub name: String,
    /// Network interfaces, by name; a rank's rail is an index into this list.
    pub nics: Vec<Nic>,
    /// RDMA device ports.
    pub rdma: Vec<RdmaDev>,
}

/// Where one rank sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RankPlace {
    /// Index into [`Topology::hosts`].
    pub host: usize,
    /// NUMA node of the rank's CPU (or of its interface), where known.
    pub numa: Option<u32>,
    /// The rail: which of the host's NICs the rank uses, where known.
    pub rail: Option<u32>,
}

/// Parameters of the alpha-beta cost model: time of a message of `b` bytes is
/// `latency + b / bandwidth`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Links {
    /// Bandwidth between two ranks of one host, Gb/s.
    pub intra_gbps: f64,
    /// Latency of a message between two ranks of one host (software included), us.
    pub intra_latency_us: f64,
    /// Bandwidth of one NIC (one rail) between hosts, each way, Gb/s.
    pub inter_gbps: f64,
    /// Latency of a message between hosts (software included), us.
    pub inter_latency_us: f64,
}

impl Links {
    /// What oxccl assumes over TCP on hosts that report nothing better: loopback TCP streams
    /// at 24 Gb/s (3 GB/s, one stream measured on the development machines) with 10 us per
    /// message, and a 10 Gb/s network at 12 us (10 us of kernel stacks and wire, 2 us of
    /// engine overhead). `oxccl-topo --calibrate` replaces them with measured figures.
    pub const DEFAULT: Links = Links {
        intra_gbps: 24.0,
        intra_latency_us: 10.0,
        inter_gbps: 10.0,
        inter_latency_us: 12.0,
    };

    /// Checks that every figure is positive and finite; `what` names the source in errors.
    pub fn validate(&self, what: &str) -> Result<(), String> {
        for (name, v) in [
            ("intra_gbps", self.intra_gbps),
            ("intra_latency_us", self.intra_latency_us),
            ("inter_gbps", self.inter_gbps),
            ("inter_latency_us", self.inter_latency_us),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(format!("{what}: {name} = {v} must be a positive number"));
            }
        }
        Ok(())
    }
}

impl Default for Links {
    fn default() -> Self {
        Links::DEFAULT
    }
}

/// What one rank publishes at init: its host and placement, the host's interfaces and RDMA
/// devices, and link parameters when a topology file gave them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RankInfo {
    /// The host's identity (see [`Host::name`]).
    pub host: String,
    /// NUMA node of the rank.
    pub numa: Option<u32>,
    /// NIC index the rank uses.
    pub rail: Option<u32>,
    /// The interface the rank's traffic leaves by.
    pub nic: Option<String>,
    /// The host's network interfaces.
    pub nics: Vec<Nic>,
    /// The host's RDMA ports.
    pub rdma: Vec<RdmaDev>,
    /// Link parameters from an injected topology.
    pub links: Option<Links>,
}

/// The whole job: hosts, where every rank sits, and the links between them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Topology {
    /// Hosts, in the order of their first rank.
    pub hosts: Vec<Host>,
    /// Per rank, in rank order.
    pub ranks: Vec<RankPlace>,
    /// Link parameters.
    pub links: Links,
}

/// How a uniform cluster numbers its ranks (Open MPI's `--map-by`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapBy {
    /// Fill a host before the next: ranks 0..L on host 0.
    Slot,
    /// Round-robin over hosts: rank r on host r mod H.
    Node,
}

impl Topology {
    /// Builds the topology from every rank's published facts, in rank order. Hosts are
    /// numbered by first appearance; a host's interfaces come from its first rank. Link
    /// parameters: rank 0's injected ones, else [`Links::DEFAULT`] with the network speed of
    /// the slowest interface the ranks use, where reported.
    pub fn from_infos(infos: &[RankInfo]) -> Topology {
        let mut index: HashMap<&str, usize> = HashMap::new();
        let mut hosts: Vec<Host> = Vec::new();
        let mut ranks = Vec::with_capacity(infos.len());
        for info in infos {
            let h = *index.entry(info.host.as_str()).or_insert_with(|| {
                hosts.push(Host {
                    name: info.host.clone(),
                    nics: info.nics.clone(),
                    rdma: info.rdma.clone(),
                });
                hosts.len() - 1
            });
            ranks.push(RankPlace {
                host: h,
                numa: info.numa,
                rail: info.rail,
            });
        }
        let links = match infos.first().and_then(|i| i.links) {
            Some(l) => l,
            None => {
                let used = infos.iter().filter_map(|i| {
                    let name = i.nic.as_deref()?;
                    let nic = i.nics.iter().find(|n| n.name == name)?;
                    (nic.gbps > 0.0).then_some(nic.gbps)
                });
                let slowest = used.fold(f64::INFINITY, f64::min);
                Links {
                    inter_gbps: if slowest.is_finite() {
                        slowest
                    } else {
                        Links::DEFAULT.inter_gbps
                    },
                    ..Links::DEFAULT
                }
            }
        };
        Topology {
            hosts,
            ranks,
            links,
        }
    }

    /// `hosts` hosts of `per_host` ranks each, `rails` NICs per host (rank i of a host uses
    /// rail i mod rails) and `numa` NUMA nodes per host (consecutive local ranks share one),
    /// numbered as `map_by` says.
    pub fn uniform(
        hosts: usize,
        per_host: usize,
        rails: usize,
        numa: usize,
        map_by: MapBy,
        links: Links,
    ) -> Topology {
        let sizes = vec![per_host; hosts];
        Topology::with_sizes(&sizes, rails, numa, map_by, links)
    }

    /// As [`uniform`](Topology::uniform) with `sizes[h]` ranks on host h (uneven hosts).
    /// By node, ranks go round-robin over the hosts that still have room.
    pub fn with_sizes(
        sizes: &[usize],
        rails: usize,
        numa: usize,
        map_by: MapBy,
        links: Links,
    ) -> Topology {
        let (rails, numa) = (rails.max(1), numa.max(1));
        let width = sizes.len().max(1).to_string().len();
        let hosts: Vec<Host> = (0..sizes.len())
            .map(|h| Host {
                name: format!("host{h:0width$}"),
                nics: (0..rails)
                    .map(|r| Nic {
                        name: format!("nic{r}"),
                        gbps: links.inter_gbps,
                        numa: Some((r * numa / rails) as u32),
                    })
                    .collect(),
                rdma: Vec::new(),
            })
            .collect();
        let total: usize = sizes.iter().sum();
        let mut order: Vec<(usize, usize)> = Vec::with_capacity(total); // (host, local index)
        match map_by {
            MapBy::Slot => {
                for (h, &n) in sizes.iter().enumerate() {
                    order.extend((0..n).map(|i| (h, i)));
                }
            }
            MapBy::Node => {
                let most = sizes.iter().copied().max().unwrap_or(0);
                for i in 0..most {
                    for (h, &n) in sizes.iter().enumerate() {
                        if i < n {
                            order.push((h, i));
                        }
                    }
                }
            }
        }
        let ranks = order
            .into_iter()
            .map(|(h, i)| {
                let per = sizes[h].max(1);
                RankPlace {
                    host: h,
                    numa: Some((i * numa / per) as u32),
                    rail: Some((i % rails) as u32),
                }
            })
            .collect();
        Topology {
            hosts,
            ranks,
            links,
        }
    }

    /// Number of ranks.
    pub fn size(&self) -> usize {
        self.ranks.len()
    }

    /// The ranks of each host, in rank order.
    pub fn ranks_by_host(&self) -> Vec<Vec<usize>> {
        let mut by = vec![Vec::new(); self.hosts.len()];
        for (r, p) in self.ranks.iter().enumerate() {
            if let Some(v) = by.get_mut(p.host) {
                v.push(r);
            }
        }
        by
    }

    /// Checks internal consistency: every rank's host exists and every host has a rank.
    pub fn validate(&self) -> Result<(), String> {
        let mut used = vec![false; self.hosts.len()];
        for (r, p) in self.ranks.iter().enumerate() {
            match used.get_mut(p.host) {
                Some(u) => *u = true,
                None => {
                    return Err(format!(
                        "rank {r} is on host {} but only {} hosts are listed",
                        p.host,
                        self.hosts.len()
                    ))
                }
            }
        }
        if let Some(h) = used.iter().position(|u| !u) {
            return Err(format!("host {h} ('{}') has no rank", self.hosts[h].name));
        }
        self.links.validate("links")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(host: &str, rail: u32, nic_gbps: f64) -> RankInfo {
        RankInfo {
            host: host.into(),
            numa: Some(0),
            rail: Some(rail),
            nic: Some("eth0".into()),
            nics: vec![Nic {
                name: "eth0".into(),
                gbps: nic_gbps,
                numa: None,
            }],
            ..RankInfo::default()
        }
    }

    #[test]
    fn hosts_are_numbered_by_first_rank_and_links_take_the_slowest_nic() {
        let t =
            Topology::from_infos(&[info("b", 0, 100.0), info("a", 1, 25.0), info("b", 1, 100.0)]);
        assert_eq!(t.hosts.len(), 2);
        assert_eq!(t.hosts[0].name, "b");
        assert_eq!(
            t.ranks.iter().map(|p| p.host).collect::<Vec<_>>(),
            vec![0, 1, 0]
        );
        assert_eq!(t.links.inter_gbps, 25.0);
        assert_eq!(t.ranks_by_host(), vec![vec![0, 2], vec![1]]);
        t.validate().unwrap();
    }

    #[test]
    fn uniform_clusters_by_slot_and_by_node() {
        let s = Topology::uniform(2, 4, 2, 2, MapBy::Slot, Links::DEFAULT);
        assert_eq!(s.ranks_by_host(), vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7]]);
        assert_eq!(s.ranks[3].numa, Some(1));
        assert_eq!(s.ranks[3].rail, Some(1));
        let n = Topology::with_sizes(&[3, 1, 2], 1, 1, MapBy::Node, Links::DEFAULT);
        assert_eq!(n.ranks_by_host(), vec![vec![0, 3, 5], vec![1], vec![2, 4]]);
        n.validate().unwrap();
    }

    #[test]
    fn validation_names_the_problem() {
        let mut t = Topology::uniform(2, 1, 1, 1, MapBy::Slot, Links::DEFAULT);
        t.ranks[1].host = 5;
        assert!(t.validate().unwrap_err().contains("rank 1 is on host 5"));
        t.ranks[1].host = 0;
        assert!(t.validate().unwrap_err().contains("host 1"));
        t.ranks[1].host = 1;
        t.links.inter_gbps = 0.0;
        assert!(t.validate().unwrap_err().contains("inter_gbps"));
    }
}
