//! The peers suite's results: `medians.csv` (one line per configuration, rank count, op and
//! size) and the physical references beside it (`memcpy.csv`, `iperf.csv`).

use std::collections::BTreeMap;
use std::path::Path;

/// One measured point: busbw in GB/s at a message size in bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Message size in bytes (as the suite counts it for the op).
    pub bytes: u64,
    /// Bus bandwidth, GB/s (1e9 B/s).
    pub busbw: f64,
}

/// (op, rank count) -> configuration -> points in size order.
pub type Series = BTreeMap<(String, u32), BTreeMap<String, Vec<Point>>>;

/// Horizontal reference lines, GB/s.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct References {
    /// One thread's memcpy of 64 MiB (median of the runs' means).
    pub memcpy: Option<f64>,
    /// One TCP stream over loopback (iperf3, median of the runs).
    pub loopback: Option<f64>,
}

/// Parses `medians.csv`: the header names the columns used (`config`, `np`, `op`,
/// `bytes`, `busbw_GBps_median`). Points with a busbw of 0 (too small to print) are left
/// out, as a log axis cannot show them.
pub fn parse_medians(text: &str) -> Result<Series, String> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines
        .next()
        .ok_or("medians.csv is empty")?
        .split(',')
        .collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h.trim() == name)
            .ok_or(format!("medians.csv has no column '{name}'"))
    };
    let (c_cfg, c_np, c_op, c_bytes, c_bw) = (
        col("config")?,
        col("np")?,
        col("op")?,
        col("bytes")?,
        col("busbw_GBps_median")?,
    );
    let mut out = Series::new();
    for (i, line) in lines.enumerate() {
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        let get = |c: usize| {
            f.get(c)
                .copied()
                .ok_or(format!("medians.csv line {}: too few fields", i + 2))
        };
        let num = |c: usize| -> Result<f64, String> {
            let v = get(c)?;
            v.parse()
                .map_err(|_| format!("medians.csv line {}: '{v}' is not a number", i + 2))
        };
        let np = num(c_np)? as u32;
        let bytes = num(c_bytes)? as u64;
        let busbw = num(c_bw)?;
        if busbw <= 0.0 || bytes == 0 {
            continue;
        }
        out.entry((get(c_op)?.to_string(), np))
            .or_default()
            .entry(get(c_cfg)?.to_string())
            .or_default()
            .push(Point { bytes, busbw });
    }
    for configs in out.values_mut() {
        for pts in configs.values_mut() {
            pts.sort_by_key(|p| p.bytes);
        }
    }
    if out.is_empty() {
        return Err("medians.csv has no points".into());
    }
    Ok(out)
}

/// The median of `v` (`None` when empty).
fn median(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// Parses the references: `memcpy.csv` lines `rep,memcpy,bytes,copies,mean_GBps,best_GBps`
/// and `iperf.csv` lines `rep,sender_Gbps,receiver_Gbps,retransmits`.
pub fn parse_references(memcpy: Option<&str>, iperf: Option<&str>) -> References {
    let column = |text: Option<&str>, c: usize| -> Vec<f64> {
        text.unwrap_or("")
            .lines()
            .filter_map(|l| l.split(',').nth(c)?.trim().parse().ok())
            .collect()
    };
    References {
        memcpy: median(column(memcpy, 4)),
        loopback: median(column(iperf, 2)).map(|gbit| gbit / 8.0),
    }
}

/// Reads a results folder (or a `medians.csv` path, whose folder holds the references).
pub fn load(path: &Path) -> Result<(Series, References), String> {
    let (dir, medians) = if path.is_dir() {
        (path.to_path_buf(), path.join("medians.csv"))
    } else {
        let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        (dir, path.to_path_buf())
    };
    let text = std::fs::read_to_string(&medians)
        .map_err(|e| format!("cannot read {}: {e}", medians.display()))?;
    let series = parse_medians(&text)?;
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
    let refs = parse_references(read("memcpy.csv").as_deref(), read("iperf.csv").as_deref());
    Ok((series, refs))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEDIANS: &str = "config,np,op,bytes,reps,lat_us_median,lat_us_min,lat_us_max,\
algbw_GBps_median,busbw_GBps_median,check,p50_us_median
ompi-tcp,2,alltoall,65536,5,15.8,14.9,18.2,4.1450,2.0725,ok,13.9
ompi-tcp,2,alltoall,8,5,9.8,9.0,11.2,0.0008,0.0004,ok,8.7
oxccl-tcp,2,alltoall,65536,5,10.8,10.1,12.0,6.0,3.016,ok,10.0
ompi-tcp,4,allreduce,1048576,3,500,480,520,2.0,3.0,ok,490
ompi-tcp,4,allreduce,64,3,9,9,9,0.0,0.0,ok,9
";

    #[test]
    fn medians_group_by_op_and_ranks_in_size_order() {
        let s = parse_medians(MEDIANS).unwrap();
        let a2a = &s[&("alltoall".to_string(), 2)];
        assert_eq!(
            a2a["ompi-tcp"],
            [
                Point {
                    bytes: 8,
                    busbw: 0.0004
                },
                Point {
                    bytes: 65536,
                    busbw: 2.0725
                }
            ]
        );
        assert_eq!(a2a["oxccl-tcp"].len(), 1);
        // A busbw of 0 cannot be drawn on a log axis.
        assert_eq!(s[&("allreduce".to_string(), 4)]["ompi-tcp"].len(), 1);
    }

    #[test]
    fn bad_medians_are_errors_naming_the_line() {
        assert!(parse_medians("").unwrap_err().contains("empty"));
        assert!(parse_medians("config,np\n")
            .unwrap_err()
            .contains("no column 'op'"));
        let e = parse_medians("config,np,op,bytes,busbw_GBps_median\na,x,b,8,1\n").unwrap_err();
        assert!(e.contains("line 2") && e.contains("'x'"), "{e}");
    }

    #[test]
    fn references_are_medians() {
        let r = parse_references(
            Some("1,memcpy,67108864,282,18.857,20.502\n2,memcpy,67108864,274,18.364,21.1\n3,memcpy,1,1,17.9,20\n"),
            Some("1,27.9,28.0,56\n2,26.8,26.8,58\n"),
        );
        assert_eq!(r.memcpy, Some(18.364));
        assert!((r.loopback.unwrap() - 27.4 / 8.0).abs() < 1e-9);
        assert_eq!(parse_references(None, None), References::default());
    }
}
