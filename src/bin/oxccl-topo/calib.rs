//! Calibration from oxccl-perf's output: the allreduce rows of its table give (bytes,
//! seconds) points, its header the rank count, and `topo::cost::fit_ring` turns them into
//! a latency and a bandwidth.

use oxccl::topo::cost::fit_ring;

/// (latency in us, bandwidth in Gb/s) fitted to a ring allreduce run, and the rank count.
pub fn from_perf(text: &str, ranks: Option<usize>) -> Result<(f64, f64, usize), String> {
    let header = text.lines().find_map(|l| {
        let rest = l.strip_prefix("# oxccl-perf:")?;
        rest.split_whitespace().next()?.parse::<usize>().ok()
    });
    let n = ranks
        .or(header)
        .ok_or("no rank count: give --calibrate-ranks N (the header line was not found)")?;
    let mut pts = Vec::new();
    for l in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
        let f: Vec<&str> = l.split_whitespace().collect();
        // size count type redop root time algbw busbw #wrong (in place: 4 more) name
        if f.len() < 10 || f.last() != Some(&"allreduce") {
            continue;
        }
        let (Ok(bytes), Ok(us)) = (f[0].parse::<f64>(), f[5].parse::<f64>()) else {
            continue;
        };
        if bytes > 0.0 && us > 0.0 {
            pts.push((bytes, us * 1e-6));
        }
    }
    if pts.len() < 2 {
        return Err(format!(
            "{} allreduce rows found; at least two sizes are needed",
            pts.len()
        ));
    }
    let (alpha, beta) = fit_ring(&pts, n)
        .ok_or("the times do not grow with the size: no latency and bandwidth fit them")?;
    Ok((alpha * 1e6, beta * 8.0 / 1e9, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_gives_latency_and_bandwidth() {
        // 4 ranks, 20 us per step, 1 Gb/s: t = 6 * 20us + 1.5 * S / 125 MB/s.
        let t = |s: f64| (120e-6 + 1.5 * s / 1.25e8) * 1e6;
        let mut text = String::from(
            "# oxccl-perf: 4 ranks as threads, transport tcp, float sum\n# size count ...\n",
        );
        for s in [1024.0, 1048576.0, 16777216.0] {
            text += &format!(
                "{s:>12} 1 float sum -1 {:>9.2} 0 0 0 {:>9.2} 0 0 0 allreduce\n",
                t(s),
                t(s)
            );
        }
        text += "# Avg bus bandwidth : 1\n";
        let (lat, gbps, n) = from_perf(&text, None).unwrap();
        assert_eq!(n, 4);
        assert!((lat - 20.0).abs() < 0.1, "{lat}");
        assert!((gbps - 1.0).abs() < 0.01, "{gbps}");
        assert!(from_perf("nothing", None)
            .unwrap_err()
            .contains("--calibrate-ranks"));
        assert!(from_perf("nothing", Some(2))
            .unwrap_err()
            .contains("0 allreduce rows"));
    }
}
