//! What a rank publishes at init besides its connect handle: where it sits. Every rank reads
//! everyone's record and builds the same topology, mapping and cost model from them.
//!
//! Owns: the format of the published value (handle length, handle, the topology record of
//! `topo::file`), the dump of `OXCCL_TOPO_DUMP_FILE` (rank 0), and turning the topology
//! into what a communicator keeps: ring order, host groups, the cost model and the default
//! channel count.

use std::net::IpAddr;

use crate::bootstrap::StoreClient;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::topo::{self, file, CostModel, Mapping, RankInfo, Shape, Topology};
use crate::transport::{Capabilities, ConnectHandle};

fn host_key(host: &str) -> String {
    format!("oxccl/host/{host}")
}

/// First byte of a published value that reports a failure instead of a handle (handles are
/// at most 128 bytes).
const FAILED: u8 = 0xff;

/// What init learns from the exchange.
pub(super) struct Placement {
    /// Every rank's connect handle.
    pub handles: Vec<ConnectHandle>,
    /// Every rank's listener nonce (the challenge its greetings must answer).
    pub nonces: Vec<[u8; 32]>,
    /// This rank's published record (a communicator made by `split` publishes it again).
    pub info: RankInfo,
    /// Ring order.
    pub ring: Vec<usize>,
    /// Hosts in ring order, each in intra-host order.
    pub hosts: Vec<Vec<usize>>,
    /// The cost model over the topology.
    pub model: CostModel,
    /// Ranks per CPU on the most crowded host (at least 1), from every rank's published CPU
    /// count: the same on every rank, so that algorithm choices that weigh it agree.
    pub ranks_per_cpu: f64,
}

/// Publishes this rank's handle and record (`place`, or what detection and the topology file
/// give), reads everyone's, and builds the mapping; rank 0 writes the dump if asked to.
pub(super) fn exchange(
    store: &mut StoreClient,
    cfg: &Config,
    (rank, size): (usize, usize),
    bind_ip: IpAddr,
    (handle, nonce): (&ConnectHandle, &[u8; 32]),
    place: Option<RankInfo>,
) -> Result<Placement> {
    let info = match place {
        Some(i) => i,
        None => match topo::local_info(bind_ip, cfg.topo_file.as_deref(), rank, size) {
            Ok(i) => i,
            Err(e) => {
                // Tell the others, so that they fail now instead of at their timeout.
                let mut v = vec![FAILED];
                v.extend_from_slice(e.message().as_bytes());
                let _ = store.set(&format!("oxccl/handle/{rank}"), &v);
                return Err(e);
            }
        },
    };
    // The host's interfaces and RDMA ports go once per host (every rank of the host writes
    // the same value), for rank 0's dump; the all-gather carries only what every rank needs.
    store.set(&host_key(&info.host), &file::host_details_bytes(&info))?;
    let h = handle.as_bytes();
    let mut mine = Vec::with_capacity(1 + h.len() + 256);
    mine.push(h.len() as u8); // at most MAX_HANDLE_BYTES (128)
    mine.extend_from_slice(h);
    mine.extend_from_slice(nonce);
    mine.extend_from_slice(&crate::config::usable_cpus().to_le_bytes());
    mine.extend_from_slice(&file::rank_info_bytes(&info));
    let all = store.all_gather("oxccl/handle", &mine, cfg.timeout)?;
    let mut handles = Vec::with_capacity(size);
    let mut nonces = Vec::with_capacity(size);
    let mut infos = Vec::with_capacity(size);
    let mut cpus = Vec::with_capacity(size);
    for (r, b) in all.iter().enumerate() {
        let bad =
            |why: String| Error::remote(format!("rank {r} published a malformed record: {why}"));
        let first = *b.first().ok_or_else(|| bad("empty".into()))?;
        if first == FAILED {
            return Err(Error::remote(format!(
                "rank {r} failed at init: {}",
                String::from_utf8_lossy(&b[1..])
            )));
        }
        let len = usize::from(first);
        let hb = b
            .get(1..1 + len)
            .ok_or_else(|| bad(format!("{} bytes, handle of {len}", b.len())))?;
        handles.push(ConnectHandle::new(hb)?);
        let nb = b
            .get(1 + len..1 + len + 32)
            .ok_or_else(|| bad(format!("{} bytes, no listener nonce", b.len())))?;
        nonces.push(nb.try_into().map_err(|_| bad("short nonce".into()))?);
        let at = 1 + len + 32;
        let cb = b
            .get(at..at + 4)
            .ok_or_else(|| bad(format!("{} bytes, no CPU count", b.len())))?;
        cpus.push(u32::from_le_bytes(
            cb.try_into().map_err(|_| bad("short CPU count".into()))?,
        ));
        infos.push(file::rank_info_from_bytes(&b[at + 4..]).map_err(bad)?);
    }
    let mut t = Topology::from_infos(&infos);
    let m = Mapping::new(&t, cfg.topo_aware);
    if rank == 0 {
        if let Some(path) = &cfg.topo_dump_file {
            // Every rank wrote its host's details before publishing its handle.
            for host in &mut t.hosts {
                let b = store.get(&host_key(&host.name), cfg.timeout)?;
                file::host_details_from_bytes(&b, host).map_err(|e| {
                    Error::remote(format!("malformed details of host {}: {e}", host.name))
                })?;
            }
            topo::dump(path, &t, &m)?;
        }
    }
    let model = CostModel {
        links: t.links,
        shape: Shape::of(&t, &m),
        chunk_bytes: cfg.chunk_bytes,
    };
    let ranks_per_cpu = crowding(&m.hosts, &cpus);
    Ok(Placement {
        handles,
        nonces,
        info,
        ring: m.ring,
        hosts: m.hosts,
        model,
        ranks_per_cpu,
    })
}

/// Ranks per CPU on the most crowded host: each host's rank count over the fewest CPUs any
/// of its ranks may use (`cpus[rank]`), the largest over the hosts, at least 1.
pub(super) fn crowding(hosts: &[Vec<usize>], cpus: &[u32]) -> f64 {
    hosts
        .iter()
        .map(|h| {
            let fewest = h.iter().filter_map(|&r| cpus.get(r)).min().copied();
            h.len() as f64 / f64::from(fewest.unwrap_or(1).max(1))
        })
        .fold(1.0, f64::max)
}

/// Channels when `OXCCL_NCHANNELS` is unset: two, or what the backend prefers
/// ([`Capabilities::host_channels`]) when every rank is on one host.
pub(super) fn default_channels(caps: &Capabilities, hosts: usize) -> usize {
    const DEFAULT: usize = 2;
    if hosts <= 1 && caps.host_channels > 0 {
        caps.host_channels
    } else {
        DEFAULT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_host_takes_the_backends_channels_and_several_hosts_two() {
        let caps = |host_channels| Capabilities {
            host_channels,
            ..Capabilities::default()
        };
        assert_eq!(default_channels(&caps(1), 1), 1, "tcp, one host");
        assert_eq!(default_channels(&caps(1), 3), 2, "tcp, three hosts");
        assert_eq!(default_channels(&caps(0), 1), 2, "no preference");
        assert_eq!(default_channels(&caps(0), 2), 2);
    }

    #[test]
    fn crowding_is_the_most_crowded_hosts_ranks_per_cpu() {
        // 7 ranks on 2 hosts of 2 CPUs: 4 and 3 ranks; every rank computes the same 2.0.
        let hosts = vec![vec![0, 2, 4, 6], vec![1, 3, 5]];
        assert_eq!(crowding(&hosts, &[2; 7]), 2.0);
        // The host's fewest CPUs count (one rank bound to a single CPU).
        assert_eq!(crowding(&hosts, &[2, 1, 2, 2, 2, 2, 2]), 3.0);
        // Fewer ranks than CPUs: 1; a CPU count of 0 or missing counts as 1.
        assert_eq!(crowding(&[vec![0, 1]], &[8, 8]), 1.0);
        assert_eq!(crowding(&[vec![0, 1]], &[0]), 2.0);
    }
}
