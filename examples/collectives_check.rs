//! collectives_check: one rank of a launched job (rankrun, torchrun, srun, mpirun) that
//! checks allreduce, allgather and broadcast results and exits non-zero on any error.
//!
//!     rankrun -n 4 target/release/examples/collectives_check [--count N] [--iters K]
//!
//! Options for launcher tests: `--loop SECS` keeps allreducing for that long (printing
//! `rank R pid P looping` once), `--exit RANK:CODE` makes one rank exit with CODE after
//! its checks, `--kill-after-init RANK` makes one rank SIGKILL itself right after it joined
//! (before any peer has connected to it).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use oxccl::{Communicator, LaunchEnv, ReduceOp};

struct Opts {
    count: usize,
    iters: usize,
    loop_secs: Option<f64>,
    exit: Option<(usize, u8)>,
    kill_after_init: Option<usize>,
}

fn parse() -> Result<Opts, String> {
    let mut o = Opts {
        count: 1000,
        iters: 3,
        loop_secs: None,
        exit: None,
        kill_after_init: None,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut it = argv.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().cloned().ok_or(format!("{a} needs a value"));
        let num = |v: String| v.parse::<usize>().map_err(|_| format!("{a}: '{v}'"));
        match a.as_str() {
            "--count" => o.count = num(val()?)?,
            "--iters" => o.iters = num(val()?)?,
            "--loop" => {
                let v = val()?;
                o.loop_secs = Some(v.parse().map_err(|_| format!("--loop: '{v}'"))?);
            }
            "--exit" => {
                let v = val()?;
                let (r, c) = v
                    .split_once(':')
                    .ok_or(format!("--exit: '{v}' is not RANK:CODE"))?;
                let r = r.parse().map_err(|_| format!("--exit: '{v}'"))?;
                let c = c.parse().map_err(|_| format!("--exit: '{v}'"))?;
                o.exit = Some((r, c));
            }
            "--kill-after-init" => o.kill_after_init = Some(num(val()?)?),
            _ => return Err(format!("unknown option '{a}'")),
        }
    }
    Ok(o)
}

/// The first wrong element of `got`, as a message.
fn first_wrong<T: PartialEq + std::fmt::Debug>(
    what: &str,
    got: &[T],
    want: impl Fn(usize) -> T,
) -> Result<(), String> {
    match got.iter().enumerate().find(|(i, x)| **x != want(*i)) {
        None => Ok(()),
        Some((i, x)) => Err(format!(
            "{what}: element {i} is {x:?}, expected {:?}",
            want(i)
        )),
    }
}

fn check_once(comm: &Communicator, count: usize, iter: usize) -> Result<(), String> {
    let (r, n) = (comm.rank(), comm.size());
    let e = |what: &'static str| move |err: oxccl::Error| format!("{what}: {err}");

    // allreduce: rank r contributes (r + 1) * (i % 13 + 1); sums stay exact in f32.
    let send: Vec<f32> = (0..count)
        .map(|i| ((r + 1) * (i % 13 + 1)) as f32)
        .collect();
    let mut recv = vec![0f32; count];
    comm.all_reduce(&send, &mut recv, ReduceOp::Sum)
        .map_err(e("allreduce"))?;
    let tri = (n * (n + 1) / 2) as f32;
    first_wrong("allreduce", &recv, |i| tri * (i % 13 + 1) as f32)?;

    // allgather: rank r's block holds r * 1_000_003 + i.
    let mine: Vec<i64> = (0..count).map(|i| (r * 1_000_003 + i) as i64).collect();
    let mut all = vec![0i64; count * n];
    comm.all_gather(&mine, &mut all).map_err(e("allgather"))?;
    first_wrong("allgather", &all, |k| {
        ((k / count.max(1)) * 1_000_003 + k % count.max(1)) as i64
    })?;

    // broadcast from a root that moves every iteration.
    let root = iter % n;
    let mut buf: Vec<f64> = if r == root {
        (0..count).map(|i| (i * 3 + root) as f64).collect()
    } else {
        vec![-1.0; count]
    };
    comm.broadcast(&mut buf, root).map_err(e("broadcast"))?;
    first_wrong(&format!("broadcast from {root}"), &buf, |i| {
        (i * 3 + root) as f64
    })
}

/// Runs the checks; returns this rank's number.
fn run(o: &Opts) -> Result<usize, String> {
    let env = LaunchEnv::from_env().map_err(|e| e.to_string())?;
    let comm = Communicator::from_env().map_err(|e| e.to_string())?;
    let (r, n) = (comm.rank(), comm.size());
    if o.kill_after_init == Some(r) {
        // SAFETY: kill with this process's own id and a valid signal has no memory effects.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
    for iter in 0..o.iters {
        check_once(&comm, o.count, iter).map_err(|m| format!("rank {r} of {n}: {m}"))?;
    }
    if let Some(secs) = o.loop_secs {
        let end = Instant::now() + Duration::from_secs_f64(secs);
        let mut said = false;
        let send = vec![1.0f32; o.count];
        let mut recv = vec![0.0f32; o.count];
        while Instant::now() < end {
            comm.all_reduce(&send, &mut recv, ReduceOp::Sum)
                .map_err(|e| format!("rank {r} of {n}: allreduce loop: {e}"))?;
            if !said {
                println!("rank {r} pid {} looping", std::process::id());
                said = true;
            }
        }
    }
    if r == 0 {
        println!(
            "collectives_check: {n} ranks OK (allreduce, allgather, broadcast; {} elements, {} \
             iterations; started by {}, local size {})",
            o.count,
            o.iters,
            env.launcher.name(),
            env.local_size
        );
    }
    Ok(r)
}

fn main() -> ExitCode {
    let o = match parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("collectives_check: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&o) {
        Err(e) => {
            eprintln!("collectives_check: {e}");
            ExitCode::from(1)
        }
        Ok(me) => match o.exit {
            Some((rank, code)) if rank == me => ExitCode::from(code),
            _ => ExitCode::SUCCESS,
        },
    }
}
