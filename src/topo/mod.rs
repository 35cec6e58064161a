//! Topology: where each rank sits, and the rings and trees built from it.
//!
//! Owns: discovery per rank (`detect`: host identity, NUMA node, network interfaces and RDMA
//! ports with their speeds, rail), the description of a whole job (`model`: [`Topology`]),
//! its JSON form (`file`, `json`: `OXCCL_TOPO_FILE`, `OXCCL_TOPO_DUMP_FILE`), the mapping
//! (`ring`, `tree`, `mapping`: a ring that enters and leaves each host once, grouped by
//! NUMA node inside a host, double binary trees over hosts, the host groups of the
//! hierarchical allreduce) and the alpha-beta cost model over it (`cost`). Everything but
//! `detect` is a pure function of its inputs; nothing here does I/O on the data path.
//!
//! At init every rank publishes its [`RankInfo`] through the bootstrap store, every rank
//! builds the same [`Topology`] from all of them, and the same [`Mapping`].

pub mod cost;
pub mod detect;
pub mod file;
pub mod json;
pub mod mapping;
pub mod model;
pub mod ring;
pub use crate::algo::tree;

use std::path::Path;

pub use cost::{CostModel, Shape};
pub use mapping::Mapping;
pub use model::{Host, Links, MapBy, Nic, RankInfo, RankPlace, RdmaDev, Topology};

use crate::error::{Error, Result};

/// An identifier of this host: a hash of its identity (host name, boot id, network
/// namespace), the same on every rank of the host.
pub fn host_id() -> u64 {
    crate::sys::host::host_id()
}

/// This rank's record for init: what `detect` finds for a rank using address `ip`, with the
/// host, NUMA node and rail of entry `rank` of the topology file `file` put in their place
/// (an injected topology must describe exactly `size` ranks).
pub fn local_info(
    ip: std::net::IpAddr,
    file: Option<&Path>,
    rank: usize,
    size: usize,
) -> Result<RankInfo> {
    let mut info = detect::detect(ip);
    if let Some(path) = file {
        let t = file::load(path)
            .map_err(|e| Error::invalid_argument(format!("OXCCL_TOPO_FILE {e}")))?;
        inject(&mut info, &t, rank, size).map_err(|e| {
            Error::invalid_argument(format!("OXCCL_TOPO_FILE '{}': {e}", path.display()))
        })?;
    }
    Ok(info)
}

/// Puts rank `rank`'s place in `t` into `info`: the host (with its interfaces and RDMA
/// ports, where `t` lists any), the NUMA node and rail where `t` gives them, and `t`'s links.
pub fn inject(
    info: &mut RankInfo,
    t: &Topology,
    rank: usize,
    size: usize,
) -> std::result::Result<(), String> {
    if t.size() != size {
        return Err(format!(
            "it describes {} ranks but the communicator has {size}",
            t.size()
        ));
    }
    let place = t.ranks[rank];
    let host = &t.hosts[place.host];
    info.host = host.name.clone();
    if !host.nics.is_empty() {
        info.nics = host.nics.clone();
        info.nic = place
            .rail
            .and_then(|r| host.nics.get(r as usize))
            .map(|n| n.name.clone());
    }
    if !host.rdma.is_empty() {
        info.rdma = host.rdma.clone();
    }
    info.numa = place.numa.or(info.numa);
    info.rail = place.rail.or(info.rail);
    info.links = Some(t.links);
    Ok(())
}

/// Writes the dump of `OXCCL_TOPO_DUMP_FILE`: the topology and the chosen ring, host groups
/// and trees, as JSON.
pub fn dump(path: &Path, t: &Topology, m: &Mapping) -> Result<()> {
    std::fs::write(path, file::dump_json(t, m).to_text()).map_err(|e| {
        Error::invalid_argument(format!(
            "OXCCL_TOPO_DUMP_FILE: cannot write '{}': {e}",
            path.display()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn injection_replaces_the_host_and_checks_the_size() {
        let t = Topology::uniform(2, 2, 2, 1, MapBy::Node, Links::DEFAULT);
        let mut i = detect::detect([127, 0, 0, 1].into());
        inject(&mut i, &t, 3, 4).unwrap();
        assert_eq!(i.host, "host1");
        assert_eq!((i.rail, i.nic.as_deref()), (Some(1), Some("nic1")));
        assert_eq!(i.links, Some(Links::DEFAULT));
        let e = inject(&mut i, &t, 0, 5).unwrap_err();
        assert!(e.contains("4 ranks") && e.contains("has 5"), "{e}");
        assert_eq!(host_id(), host_id());
    }

    #[test]
    fn a_bad_file_or_dump_path_is_an_invalid_argument_naming_the_variable() {
        let e = local_info(
            [127, 0, 0, 1].into(),
            Some(Path::new("/nonexistent/t.json")),
            0,
            1,
        )
        .unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::InvalidArgument);
        assert!(e.to_string().contains("OXCCL_TOPO_FILE"), "{e}");
        let t = Topology::uniform(1, 1, 1, 1, MapBy::Slot, Links::DEFAULT);
        let m = Mapping::new(&t, true);
        let e = dump(Path::new("/nonexistent/dir/d.json"), &t, &m).unwrap_err();
        assert!(e.to_string().contains("OXCCL_TOPO_DUMP_FILE"), "{e}");
    }
}
