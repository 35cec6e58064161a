//! Who this host is: a name that differs between hosts, boots and network namespaces.

use std::path::Path;

/// The trimmed text of file `rel` under `root`, if it can be read.
pub(crate) fn read(root: &Path, rel: &str) -> Option<String> {
    std::fs::read_to_string(root.join(rel))
        .ok()
        .map(|s| s.trim().to_string())
}

/// FNV-1a over `parts`, each followed by a separator byte.
fn fnv(parts: &[&str]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for p in parts {
        for b in p.bytes().chain([0xff]) {
            h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    h
}

/// This host's identity: `hostname:xxxxxxxx`, the suffix a hash of the boot id and the
/// network namespace, read under `root` (`/` but in tests): two network namespaces of one
/// machine are two hosts, as they are to the network.
pub(crate) fn host_name(root: &Path) -> String {
    let name = read(root, "proc/sys/kernel/hostname").unwrap_or_else(|| "localhost".into());
    let boot = read(root, "proc/sys/kernel/random/boot_id").unwrap_or_default();
    let netns = std::fs::read_link(root.join("proc/self/ns/net"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!("{name}:{:08x}", fnv(&[&boot, &netns]) as u32)
}

/// An identifier of this host: a hash of [`host_name`], the same on every rank of the host.
pub(crate) fn host_id() -> u64 {
    let name = host_name(Path::new("/"));
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}
