//! Command-line options.

use oxccl::config::parse_bytes;
use oxccl::topo::MapBy;

#[derive(Debug, Clone)]
pub struct Args {
    pub hosts: usize,
    pub per_host: usize,
    pub sizes: Option<Vec<usize>>,
    pub rails: usize,
    pub numa: usize,
    pub map_by: MapBy,
    pub file: Option<String>,
    pub intra_gbps: Option<f64>,
    pub intra_latency_us: Option<f64>,
    pub inter_gbps: Option<f64>,
    pub inter_latency_us: Option<f64>,
    pub calibrate_inter: Option<String>,
    pub calibrate_intra: Option<String>,
    pub calibrate_ranks: Option<usize>,
    pub chunk: usize,
    pub min_bytes: usize,
    pub max_bytes: usize,
    pub factor: usize,
    pub aware: bool,
    pub dump: Option<String>,
    pub show: usize,
}

pub const USAGE: &str = "\
oxccl-topo: the rings, trees and hierarchical allreduce oxccl builds for a cluster, the
traffic they put on links and their predicted times (alpha-beta model)

usage: oxccl-topo [options]
 cluster (or --file):
  --hosts H              hosts                                                  [2]
  --ranks-per-host L     ranks on each host                                     [8]
  --sizes L1,L2,...      uneven hosts: ranks on each host (replaces the two above)
  --rails R              NICs per host; local rank i uses rail i mod R          [1]
  --numa M               NUMA nodes per host                                    [1]
  --map-by slot|node     rank numbering: fill hosts in turn, or round-robin     [slot]
  --file PATH            a topology file (OXCCL_TOPO_FILE format, or a dump of
                         OXCCL_TOPO_DUMP_FILE)
 links (default: the file's, else oxccl's TCP defaults; see docs/topology.md):
  --intra-gbps X         bandwidth between two ranks of a host, Gb/s
  --intra-latency-us X   latency of a message inside a host, us
  --inter-gbps X         bandwidth of one NIC (rail) between hosts, Gb/s, each way
  --latency-us X         latency of a message between hosts, us
  --calibrate-inter F    oxccl-perf output of OXCCL_ALGO=ring allreduce over two or more
                         hosts (mapping on): fits the network's latency and bandwidth
  --calibrate-intra F    the same on one host: fits the intra-host figures
  --calibrate-ranks N    ranks of the calibration runs [read from oxccl-perf's header]
 output:
  --chunk BYTES          pipelining chunk (OXCCL_CHUNK_SIZE)                    [128K]
  -b BYTES, -e BYTES     smallest and largest size of the prediction table     [8, 1G]
  -f FACTOR              size step                                              [4]
  --mapping on|off       topology-aware mapping (OXCCL_TOPO_AWARE)              [on]
  --dump PATH            write the topology and mapping as JSON (as OXCCL_TOPO_DUMP_FILE)
  --show N               ranks of the ring and groups to print                  [32]
Exit status: 0, or 2 on a usage or input error.";

fn value<'a>(it: &mut impl Iterator<Item = &'a String>, flag: &str) -> Result<&'a String, String> {
    it.next().ok_or_else(|| format!("{flag} needs a value"))
}

fn count(flag: &str, v: &str) -> Result<usize, String> {
    match v.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{flag}: '{v}' is not a positive whole number")),
    }
}

fn real(flag: &str, v: &str) -> Result<f64, String> {
    match v.parse::<f64>() {
        Ok(x) if x > 0.0 && x.is_finite() => Ok(x),
        _ => Err(format!("{flag}: '{v}' is not a positive number")),
    }
}

pub fn parse(argv: &[String]) -> Result<Args, String> {
    let mut a = Args {
        hosts: 2,
        per_host: 8,
        sizes: None,
        rails: 1,
        numa: 1,
        map_by: MapBy::Slot,
        file: None,
        intra_gbps: None,
        intra_latency_us: None,
        inter_gbps: None,
        inter_latency_us: None,
        calibrate_inter: None,
        calibrate_intra: None,
        calibrate_ranks: None,
        chunk: 128 << 10,
        min_bytes: 8,
        max_bytes: 1 << 30,
        factor: 4,
        aware: true,
        dump: None,
        show: 32,
    };
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        let f = flag.as_str();
        let bytes = |v: &str| parse_bytes(f, v).map_err(|e| e.to_string());
        match f {
            "-h" | "--help" => return Err(String::new()),
            "--hosts" => a.hosts = count(f, value(&mut it, f)?)?,
            "--ranks-per-host" => a.per_host = count(f, value(&mut it, f)?)?,
            "--sizes" => {
                let v = value(&mut it, f)?;
                a.sizes = Some(
                    v.split(',')
                        .map(|x| count(f, x.trim()))
                        .collect::<Result<_, _>>()?,
                );
            }
            "--rails" => a.rails = count(f, value(&mut it, f)?)?,
            "--numa" => a.numa = count(f, value(&mut it, f)?)?,
            "--map-by" => {
                a.map_by = match value(&mut it, f)?.as_str() {
                    "slot" => MapBy::Slot,
                    "node" => MapBy::Node,
                    o => return Err(format!("--map-by: '{o}' is not slot or node")),
                }
            }
            "--file" => a.file = Some(value(&mut it, f)?.clone()),
            "--intra-gbps" => a.intra_gbps = Some(real(f, value(&mut it, f)?)?),
            "--intra-latency-us" => a.intra_latency_us = Some(real(f, value(&mut it, f)?)?),
            "--inter-gbps" => a.inter_gbps = Some(real(f, value(&mut it, f)?)?),
            "--latency-us" | "--inter-latency-us" => {
                a.inter_latency_us = Some(real(f, value(&mut it, f)?)?)
            }
            "--calibrate-inter" => a.calibrate_inter = Some(value(&mut it, f)?.clone()),
            "--calibrate-intra" => a.calibrate_intra = Some(value(&mut it, f)?.clone()),
            "--calibrate-ranks" => a.calibrate_ranks = Some(count(f, value(&mut it, f)?)?),
            "--chunk" => a.chunk = bytes(value(&mut it, f)?)?.max(64),
            "-b" => a.min_bytes = bytes(value(&mut it, f)?)?.max(1),
            "-e" => a.max_bytes = bytes(value(&mut it, f)?)?,
            "-f" => a.factor = count(f, value(&mut it, f)?)?,
            "--mapping" => {
                a.aware = match value(&mut it, f)?.as_str() {
                    "on" | "1" => true,
                    "off" | "0" => false,
                    o => return Err(format!("--mapping: '{o}' is not on or off")),
                }
            }
            "--dump" => a.dump = Some(value(&mut it, f)?.clone()),
            "--show" => {
                a.show = value(&mut it, f)?
                    .parse()
                    .map_err(|_| "--show: not a number")?
            }
            _ => return Err(format!("unknown option '{f}'")),
        }
    }
    if a.factor < 2 {
        return Err("-f must be at least 2".into());
    }
    if a.min_bytes > a.max_bytes {
        return Err("-b is larger than -e".into());
    }
    let total = a
        .sizes
        .as_ref()
        .map_or(a.hosts.saturating_mul(a.per_host), |s| s.iter().sum());
    if a.file.is_none() && total > 100_000_000 {
        return Err(format!("{total} ranks: at most 100,000,000 are planned"));
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Args, String> {
        parse(&s.split_whitespace().map(String::from).collect::<Vec<_>>())
    }

    #[test]
    fn options() {
        let a = p("--hosts 128 --ranks-per-host 8 --rails 8 --inter-gbps 400 --latency-us 3 --map-by node")
            .unwrap();
        assert_eq!((a.hosts, a.per_host, a.rails), (128, 8, 8));
        assert_eq!((a.inter_gbps, a.inter_latency_us), (Some(400.0), Some(3.0)));
        assert_eq!(a.map_by, MapBy::Node);
        assert_eq!(p("--sizes 3,1,2").unwrap().sizes, Some(vec![3, 1, 2]));
        assert_eq!(p("-e 16M --chunk 64K").unwrap().max_bytes, 16 << 20);
        for (bad, want) in [
            ("--hosts 0", "positive whole"),
            ("--inter-gbps -1", "positive number"),
            ("--map-by rack", "slot or node"),
            ("--mapping maybe", "on or off"),
            ("-b 2M -e 1M", "larger"),
            ("--frob", "unknown option"),
            ("--hosts", "needs a value"),
            ("--hosts 1000000 --ranks-per-host 1000", "at most"),
        ] {
            let e = p(bad).unwrap_err();
            assert!(e.contains(want), "{bad}: {e}");
        }
        assert_eq!(p("--help").unwrap_err(), "");
    }
}
