//! Placement: which host each rank runs on, and its local rank and size there.

use crate::args::MapBy;

/// One host of `--hosts`, with its slot count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub name: String,
    pub slots: usize,
}

/// Where one rank runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spot {
    /// Index into the host list.
    pub host: usize,
    pub local_rank: usize,
    pub local_size: usize,
}

/// Parses `H1:SLOTS,H2,...` (slots default to 1; a host named twice adds its slots up, as
/// in Open MPI). IPv6 literals go in brackets: `[fd00::1]:2`.
pub fn parse_hosts(list: &str) -> Result<Vec<Host>, String> {
    let mut hosts: Vec<Host> = Vec::new();
    for item in list.split(',').map(str::trim) {
        if item.is_empty() {
            return Err(format!("--hosts '{list}': an empty host name"));
        }
        let (name, slots) = match item.rsplit_once(':') {
            Some((n, s)) if !n.ends_with(':') && (!n.contains(':') || n.ends_with(']')) => {
                let slots: usize = s
                    .parse()
                    .map_err(|_| format!("--hosts: '{item}': '{s}' is not a number of slots"))?;
                (n, slots)
            }
            _ => (item, 1),
        };
        let name = name
            .strip_prefix('[')
            .and_then(|n| n.strip_suffix(']'))
            .unwrap_or(name);
        if slots == 0 {
            return Err(format!("--hosts: '{item}' has no slots"));
        }
        if name.is_empty() {
            return Err(format!("--hosts '{list}': an empty host name"));
        }
        match hosts.iter_mut().find(|h| h.name == name) {
            Some(h) => h.slots += slots,
            None => hosts.push(Host {
                name: name.to_string(),
                slots,
            }),
        }
    }
    Ok(hosts)
}

/// Deals `n` ranks to `hosts`. More ranks than slots is an error.
pub fn place(n: usize, hosts: &[Host], map_by: MapBy) -> Result<Vec<Spot>, String> {
    let total: usize = hosts.iter().map(|h| h.slots).sum();
    if n > total {
        return Err(format!(
            "{n} ranks need {n} slots, but --hosts gives {total}: add slots (host:SLOTS) or \
             lower -n"
        ));
    }
    let mut host_of = Vec::with_capacity(n);
    match map_by {
        MapBy::Slot => {
            for (i, h) in hosts.iter().enumerate() {
                host_of.extend(std::iter::repeat(i).take(h.slots));
            }
            host_of.truncate(n);
        }
        MapBy::Node => {
            let mut used = vec![0usize; hosts.len()];
            while host_of.len() < n {
                for (i, h) in hosts.iter().enumerate() {
                    if used[i] < h.slots && host_of.len() < n {
                        used[i] += 1;
                        host_of.push(i);
                    }
                }
            }
        }
    }
    let mut count = vec![0usize; hosts.len()];
    for &h in &host_of {
        count[h] += 1;
    }
    let mut seen = vec![0usize; hosts.len()];
    Ok(host_of
        .into_iter()
        .map(|h| {
            seen[h] += 1;
            Spot {
                host: h,
                local_rank: seen[h] - 1,
                local_size: count[h],
            }
        })
        .collect())
}

/// Whether `name` is this machine, so that its ranks start without `--rsh`.
pub fn is_local(name: &str) -> bool {
    if matches!(name, "localhost" | "127.0.0.1" | "::1") {
        return true;
    }
    let me = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let me = me.trim();
    !me.is_empty() && (name == me || me.split('.').next() == Some(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(s: &str) -> Vec<Host> {
        parse_hosts(s).unwrap()
    }

    fn names(spots: &[Spot]) -> Vec<usize> {
        spots.iter().map(|s| s.host).collect()
    }

    #[test]
    fn host_lists() {
        assert_eq!(
            hosts("a:2, b ,[fd00::1]:3,a"),
            vec![
                Host {
                    name: "a".into(),
                    slots: 3
                },
                Host {
                    name: "b".into(),
                    slots: 1
                },
                Host {
                    name: "fd00::1".into(),
                    slots: 3
                },
            ]
        );
        assert_eq!(hosts("fd00::1")[0].name, "fd00::1");
        for bad in ["a:0", "a:x", "a,,b", ""] {
            assert!(parse_hosts(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn map_by_slot_and_node() {
        let h = hosts("a:2,b:2,c:1");
        let s = place(5, &h, MapBy::Slot).unwrap();
        assert_eq!(names(&s), [0, 0, 1, 1, 2]);
        assert_eq!(
            s[1],
            Spot {
                host: 0,
                local_rank: 1,
                local_size: 2
            }
        );
        assert_eq!(names(&place(5, &h, MapBy::Node).unwrap()), [0, 1, 2, 0, 1]);
        assert_eq!(names(&place(3, &h, MapBy::Slot).unwrap()), [0, 0, 1]);
        let s = place(3, &h, MapBy::Node).unwrap();
        assert_eq!(names(&s), [0, 1, 2]);
        assert!(s.iter().all(|x| x.local_size == 1 && x.local_rank == 0));
        let e = place(6, &h, MapBy::Slot).unwrap_err();
        assert!(
            e.contains("6 ranks need 6 slots") && e.contains("gives 5"),
            "{e}"
        );
    }

    #[test]
    fn localhost_is_local() {
        assert!(is_local("localhost"));
        assert!(!is_local("no-such-host.invalid"));
    }
}
