//! One rank of a multi-process allreduce benchmark that compares topology-aware mapping with
//! plain rank order in one run: it joins two communicators, one with `OXCCL_TOPO_AWARE` on
//! and one with it off, and times the same allreduce on each with the algorithms asked for.
//!
//! Ranks are started by a launcher (rankrun, torchrun, srun, mpirun: `Communicator::from_env`);
//! each (mapping, algorithm) pair gets its own communicator, whose unique id rank 0 makes
//! (`UniqueId::new`: `OXCCL_SOCKET_IFNAME` or the first non-loopback interface) and
//! broadcasts over the launcher's communicator. Used by `ci/netns-topo.sh`.
//!
//! ```text
//! mapping_bench [-s 16M[,1K,...]] [-w 2] [-n 5] [-r 1] [--algos auto,ring]
//!               [--dump PREFIX] [--tables DIR]
//! ```
//! Rank 0 prints one line per (mapping, algorithm, size) with time and bus bandwidth, then
//! the ratios on/off at the largest size; `--dump PREFIX` writes PREFIX-on.json and
//! PREFIX-off.json, `--tables DIR` the points as oxccl-perf tables (DIR/on-ring.txt, ...),
//! which `oxccl-topo --calibrate-inter` reads.

use std::time::Instant;

use oxccl::{Communicator, Config, Error, ReduceOp, Result, UniqueId};

struct Opts {
    sizes: Vec<usize>,
    warmup: usize,
    iters: usize,
    rounds: usize,
    algos: Vec<String>,
    dump: Option<String>,
    tables: Option<String>,
}

fn number(name: &str, v: &str) -> Result<usize> {
    v.trim()
        .parse()
        .map_err(|_| Error::invalid_argument(format!("{name}='{v}' is not a number")))
}

fn opts() -> Result<Opts> {
    let mut o = Opts {
        sizes: vec![16 << 20],
        warmup: 2,
        iters: 5,
        rounds: 1,
        algos: vec!["auto".into(), "ring".into()],
        dump: None,
        tables: None,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut it = argv.iter();
    while let Some(f) = it.next() {
        let mut val = || {
            it.next()
                .cloned()
                .ok_or_else(|| Error::invalid_argument(format!("{f} needs a value")))
        };
        match f.as_str() {
            "-s" => {
                o.sizes = val()?
                    .split(',')
                    .map(|x| oxccl::config::parse_bytes("-s", x))
                    .collect::<Result<_>>()?
            }
            "-w" => o.warmup = number("-w", &val()?)?,
            "-n" => o.iters = number("-n", &val()?)?.max(1),
            "-r" => o.rounds = number("-r", &val()?)?.max(1),
            "--algos" => o.algos = val()?.split(',').map(String::from).collect(),
            "--dump" => o.dump = Some(val()?),
            "--tables" => o.tables = Some(val()?),
            other => return Err(Error::invalid_argument(format!("unknown option '{other}'"))),
        }
    }
    Ok(o)
}

/// Seconds per allreduce of `bytes`: the slowest rank's mean over a round of calls, the best
/// of `-r` rounds (a round slowed by other work on the machine does not count), after a
/// check of the result. Small sizes repeat more (up to 50 times `-n`), so that each point
/// takes similar time.
fn measure(c: &Communicator, o: &Opts, bytes: usize) -> Result<f64> {
    let n = (bytes / 4).max(1);
    let iters = o.iters * ((1usize << 20) / bytes.max(1)).clamp(1, 50);
    let send: Vec<f32> = (0..n).map(|i| ((i + c.rank()) % 7) as f32).collect();
    let mut recv = vec![0.0f32; n];
    for _ in 0..o.warmup {
        c.all_reduce(&send, &mut recv, ReduceOp::Sum)?;
    }
    let size = c.size();
    for (i, &x) in recv.iter().enumerate().step_by(997) {
        let want: usize = (0..size).map(|r| (i + r) % 7).sum();
        if x != want as f32 {
            return Err(Error::internal(format!(
                "rank {}: element {i} is {x}, want {want}",
                c.rank()
            )));
        }
    }
    let mut best = f64::INFINITY;
    for _ in 0..o.rounds {
        c.barrier()?;
        let t0 = Instant::now();
        for _ in 0..iters {
            c.all_reduce(&send, &mut recv, ReduceOp::Sum)?;
        }
        let mine = [t0.elapsed().as_secs_f64() / iters as f64];
        let mut worst = [0.0f64];
        c.all_reduce(&mine, &mut worst, ReduceOp::Max)?;
        best = best.min(worst[0]);
    }
    Ok(best)
}

fn main() {
    if let Err(e) = run() {
        eprintln!("mapping_bench: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let o = opts()?;
    // The launcher's communicator carries the ids of the ones measured.
    let world = Communicator::from_env()?;
    let (rank, size) = (world.rank(), world.size());
    let base = Config::from_env()?;
    let runs: Vec<(bool, &String)> = [true, false]
        .into_iter()
        .flat_map(|aware| o.algos.iter().map(move |a| (aware, a)))
        .collect();
    let mut results = Vec::new();
    for (k, &(aware, algo)) in runs.iter().enumerate() {
        // Rank 0 serves a store for each communicator (on the interface UniqueId::new picks).
        let mut id = [0u8; oxccl::bootstrap::UNIQUE_ID_BYTES];
        if rank == 0 {
            id.copy_from_slice(UniqueId::new()?.as_bytes());
        }
        world.broadcast(&mut id, 0)?;
        let id = UniqueId::from_bytes(&id)?;
        let first = k % o.algos.len() == 0;
        let cfg = Config {
            topo_aware: aware,
            algo: (algo != "auto").then(|| algo.clone()),
            topo_dump_file: match (&o.dump, first) {
                (Some(p), true) => {
                    Some(format!("{p}-{}.json", if aware { "on" } else { "off" }).into())
                }
                _ => None,
            },
            ..base.clone()
        };
        let comm = Communicator::init_with_config(&id, rank, size, cfg)?;
        for &bytes in &o.sizes {
            results.push((aware, algo.clone(), bytes, measure(&comm, &o, bytes)?));
        }
    }
    if rank == 0 {
        report(&o, size, &results)?;
    }
    Ok(())
}

/// (mapping on, algorithm, bytes, seconds) of every point.
type Points = [(bool, String, usize, f64)];

fn report(o: &Opts, size: usize, results: &Points) -> Result<()> {
    let busf = 2.0 * (size as f64 - 1.0) / size as f64;
    println!(
        "# mapping_bench: {size} ranks, float sum allreduce, {} warm-up, best of {} rounds of {}+",
        o.warmup, o.rounds, o.iters
    );
    println!(
        "{:>8} {:>10} {:>10} {:>12} {:>12}",
        "mapping", "algorithm", "size(B)", "time(us)", "busbw(GB/s)"
    );
    for (aware, algo, bytes, t) in results {
        let bus = *bytes as f64 / t / 1e9 * busf;
        let m = if *aware { "on" } else { "off" };
        println!(
            "{m:>8} {algo:>10} {bytes:>10} {:>12.1} {bus:>12.4}",
            t * 1e6
        );
    }
    let largest = o.sizes.iter().copied().max().unwrap_or(0);
    for algo in &o.algos {
        let get = |a: bool| {
            results
                .iter()
                .find(|r| r.0 == a && &r.1 == algo && r.2 == largest)
                .map_or(f64::NAN, |r| r.3)
        };
        println!(
            "busbw ratio mapping on/off at {largest} B, {algo}: {:.2}x",
            get(false) / get(true)
        );
    }
    // The same points as oxccl-perf tables, one file per (mapping, algorithm), for
    // `oxccl-topo --calibrate-inter`.
    if let Some(dir) = &o.tables {
        for (aware, algo) in [true, false]
            .into_iter()
            .flat_map(|a| o.algos.iter().map(move |x| (a, x)))
        {
            let m = if aware { "on" } else { "off" };
            let mut text = format!(
                "# oxccl-perf: {size} ranks as processes, transport tcp, float sum (mapping {m}, algorithm {algo})\n"
            );
            for (_, _, bytes, t) in results.iter().filter(|r| r.0 == aware && &r.1 == algo) {
                let algbw = *bytes as f64 / t / 1e9;
                text += &format!(
                    "{bytes:>12} {:>12} {:>9} {:>6} {:>6} {:>9.2} {:>7.3} {:>7.3} {:>6} {:>9.2} {:>7.3} {:>7.3} {:>6}  allreduce\n",
                    bytes / 4,
                    "float",
                    "sum",
                    -1,
                    t * 1e6,
                    algbw,
                    algbw * busf,
                    0,
                    t * 1e6,
                    algbw,
                    algbw * busf,
                    0
                );
            }
            let path = format!("{dir}/{m}-{algo}.txt");
            std::fs::write(&path, text).map_err(|e| Error::io(format!("writing {path}"), e))?;
        }
    }
    Ok(())
}
