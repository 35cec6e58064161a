//! oxccl-perf: the nccl-tests of oxccl. Runs collectives over a size range and prints
//! nccl-tests' table (or, with --csv, the peer comparison suite's CSV lines).

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
mod bench;
mod data;
mod grouped;

use std::process::ExitCode;
use std::sync::Arc;

use args::Args;
use oxccl::{Communicator, UniqueId};

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let a = match args::parse(&argv) {
        Ok(a) => a,
        Err(e) if e.is_empty() => {
            println!("{}", args::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("oxccl-perf: {e}\n\n{}", args::USAGE);
            return ExitCode::from(2);
        }
    };
    match run(a) {
        Ok(0) => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        Err(e) => {
            eprintln!("oxccl-perf: {e}");
            ExitCode::from(2)
        }
    }
}

/// Runs every rank; returns the number of wrong results.
fn run(mut a: Args) -> oxccl::Result<usize> {
    let n = match a.threads {
        Some(n) => n,
        None => {
            // One rank per process, started by a launcher (rankrun, torchrun, srun, mpirun).
            // Without a launcher's variables the hint says how else to run it.
            if let Err(e) = oxccl::LaunchEnv::from_env() {
                return Err(
                    e.context("without --threads, oxccl-perf runs as one rank of a launched job")
                );
            }
            let comm = Communicator::from_env()?;
            a.ranks_are = "processes";
            return bench::all_points(&comm, &a);
        }
    };
    let ip = std::net::IpAddr::from([127, 0, 0, 1]);
    let id = UniqueId::with_addr(ip)?;
    let a = Arc::new(a);
    let handles: Vec<_> = (0..n)
        .map(|r| {
            let (id, a) = (id.clone(), a.clone());
            std::thread::Builder::new()
                .name(format!("rank{r}"))
                .spawn(move || -> oxccl::Result<usize> {
                    let comm = Communicator::init(&id, r, n)?;
                    bench::all_points(&comm, &a)
                })
                .map_err(|e| oxccl::Error::io("starting a rank thread", e))
        })
        .collect::<Result<_, _>>()?;
    let mut wrong = 0;
    let mut first_err = None;
    for h in handles {
        match h.join() {
            Ok(Ok(w)) => wrong += w,
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(_) => {
                first_err.get_or_insert(oxccl::Error::internal("a rank thread panicked"));
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(wrong),
    }
}
