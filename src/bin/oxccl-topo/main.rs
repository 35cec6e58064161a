//! oxccl-topo: prints the plan oxccl makes for a cluster (rings, host groups, double binary
//! trees), the traffic each collective puts on links, and the predicted allreduce time of
//! each algorithm by size from the alpha-beta model that also chooses algorithms at run
//! time. The cluster comes from options (hosts x ranks, rails, NUMA nodes, numbering) or a
//! topology file; link figures from options, the file, or oxccl-perf measurements.

// Outside tests nothing may panic on its own account, and every unsafe block says why it
// is sound.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::unreachable,
        clippy::todo,
        clippy::unimplemented,
        clippy::undocumented_unsafe_blocks
    )
)]
mod args;
mod calib;
mod report;

use std::process::ExitCode;
use std::time::Instant;

use oxccl::topo::{file, CostModel, Links, Mapping, Shape, Topology};

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let a = match args::parse(&argv) {
        Ok(a) => a,
        Err(e) if e.is_empty() => {
            println!("{}", args::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("oxccl-topo: {e}\n\n{}", args::USAGE);
            return ExitCode::from(2);
        }
    };
    match run(&a) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("oxccl-topo: {e}");
            ExitCode::from(2)
        }
    }
}

fn read(path: &str) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read '{path}': {e}"))
}

/// Link figures: the file's or the defaults, then calibrations, then explicit options.
fn links(a: &Args, base: Links) -> Result<Links, String> {
    let mut l = base;
    if let Some(p) = &a.calibrate_inter {
        let (lat, gbps, n) = calib::from_perf(&read(p)?, a.calibrate_ranks)
            .map_err(|e| format!("--calibrate-inter '{p}': {e}"))?;
        eprintln!("# calibrated from {p} ({n} ranks): between hosts {gbps:.3} Gb/s, {lat:.1} us");
        l.inter_gbps = gbps;
        l.inter_latency_us = lat;
    }
    if let Some(p) = &a.calibrate_intra {
        let (lat, gbps, n) = calib::from_perf(&read(p)?, a.calibrate_ranks)
            .map_err(|e| format!("--calibrate-intra '{p}': {e}"))?;
        eprintln!("# calibrated from {p} ({n} ranks): inside a host {gbps:.3} Gb/s, {lat:.1} us");
        l.intra_gbps = gbps;
        l.intra_latency_us = lat;
    }
    l.intra_gbps = a.intra_gbps.unwrap_or(l.intra_gbps);
    l.intra_latency_us = a.intra_latency_us.unwrap_or(l.intra_latency_us);
    l.inter_gbps = a.inter_gbps.unwrap_or(l.inter_gbps);
    l.inter_latency_us = a.inter_latency_us.unwrap_or(l.inter_latency_us);
    l.validate("links")?;
    Ok(l)
}

use args::Args;

/// The plan as text.
fn run(a: &Args) -> Result<String, String> {
    let t0 = Instant::now();
    let mut t = match &a.file {
        Some(p) => file::load(std::path::Path::new(p))?,
        None => {
            let sizes = a.sizes.clone().unwrap_or_else(|| vec![a.per_host; a.hosts]);
            Topology::with_sizes(&sizes, a.rails, a.numa, a.map_by, Links::DEFAULT)
        }
    };
    t.links = links(a, t.links)?;
    if t.size() == 0 {
        return Err("the topology has no rank".into());
    }
    let m = Mapping::new(&t, a.aware);
    let model = CostModel {
        links: t.links,
        shape: Shape::of(&t, &m),
        chunk_bytes: a.chunk,
    };
    let plain_map = Mapping::new(&t, false);
    let plain = CostModel {
        shape: Shape::of(&t, &plain_map),
        ..model
    };
    let planned = t0.elapsed();
    let mut text = report::render(&t, &m, &model, &plain, a);
    if let Some(p) = &a.dump {
        std::fs::write(p, file::dump_json(&t, &m).to_text())
            .map_err(|e| format!("--dump: cannot write '{p}': {e}"))?;
        text += &format!("# wrote {p}\n");
    }
    text += &format!(
        "# planned in {:.1} ms, total {:.1} ms\n",
        planned.as_secs_f64() * 1e3,
        t0.elapsed().as_secs_f64() * 1e3
    );
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Args {
        args::parse(&s.split_whitespace().map(String::from).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn a_128_by_8_cluster_with_rails() {
        let text = run(&args(
            "--hosts 128 --ranks-per-host 8 --rails 8 --numa 2 --map-by node",
        ))
        .unwrap();
        assert!(
            text.contains("network crossings 128 (minimum 128; rank order: 1024)"),
            "{text}"
        );
        assert!(text.contains("rail changes at crossings 0"), "{text}");
        assert!(text.contains("8 leader group(s)"), "{text}");
        assert!(text.contains("hosts inner in both: 0"), "{text}");
        assert!(text.contains("ring faster than tree"), "{text}");
    }

    #[test]
    fn a_hundred_thousand_ranks_in_seconds_with_a_dump() {
        let dump =
            std::env::temp_dir().join(format!("oxccl-topo-100k-{}.json", std::process::id()));
        let t0 = Instant::now();
        let text = run(&args(&format!(
            "--hosts 12500 --ranks-per-host 8 --rails 8 --numa 2 --map-by node --dump {}",
            dump.display()
        )))
        .unwrap();
        let took = t0.elapsed();
        let back = file::load(&dump);
        let _ = std::fs::remove_file(&dump);
        assert!(took < std::time::Duration::from_secs(10), "took {took:?}");
        assert!(
            text.contains("network crossings 12500 (minimum 12500"),
            "{text}"
        );
        assert_eq!(back.unwrap().size(), 100_000, "the dump reads back");
    }

    #[test]
    fn input_errors_are_reported() {
        assert!(run(&args("--file /nonexistent.json"))
            .unwrap_err()
            .contains("/nonexistent.json"));
        let e = run(&args("--calibrate-inter /nonexistent.txt")).unwrap_err();
        assert!(e.contains("cannot read"), "{e}");
    }
}
