//! Topology: where each rank sits, and the ring order built from it.
//!
//! Owns: pure functions from per-rank placement facts to ring orders. It starts small:
//! ranks are grouped by host, so consecutive ring neighbours share a host where possible and
//! each host is entered and left once per ring.

/// An identifier of this host: a hash of its name (the same on every rank of the host).
pub fn host_id() -> u64 {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in name.trim().bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// The ring: ranks grouped by host (hosts in order of their first rank), rank order kept
/// inside a host. `hosts[r]` is rank r's host id.
pub fn ring_order(hosts: &[u64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..hosts.len()).collect();
    let first = |h: u64| hosts.iter().position(|&x| x == h).unwrap_or(0);
    order.sort_by_key(|&r| (first(hosts[r]), r));
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_are_grouped_by_host() {
        assert_eq!(ring_order(&[7, 9, 7, 9]), vec![0, 2, 1, 3]);
        assert_eq!(ring_order(&[1, 1, 1]), vec![0, 1, 2]);
        assert!(ring_order(&[]).is_empty());
    }
}
