//! rankrun: starts the ranks of an oxccl job, on this host or on others through a remote
//! shell (or network namespaces), MPI-style.
//!
//! rankrun serves the job's bootstrap store itself and hands every rank its place and the
//! store's address and secret in the environment (`oxccl::launch::vars`, plus torchrun's
//! names), which `Communicator::from_env` reads. Then it supervises: output tagging,
//! signal forwarding, failure reports by rank and cause, stopping the job on a failure or
//! a timeout. `rankrun --agent` is the remote side, started by rankrun through `--rsh`.

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
mod agent;
mod args;
mod monitor;
mod output;
mod payload;
mod place;
mod signals;
mod spawn;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use oxccl::bootstrap::{pick_interface, random_secret, StoreServer};
use oxccl::launch::{secret_to_hex, vars};

use args::Args;
use monitor::{Limits, Rank};
use place::Host;
use spawn::Job;

/// How long rankrun's store waits with no rank connected before it ends. Ranks may spend
/// a long time before they join (imports, data loading); the store ends with rankrun anyway.
const STORE_IDLE: Duration = Duration::from_secs(7 * 24 * 3600);
/// After the ranks have ended, how long their last output may take to arrive.
const OUTPUT_DRAIN: Duration = Duration::from_secs(2);

/// The variables rankrun sets itself, which `-x` may not override.
const RESERVED: [&str; 12] = [
    vars::RANK,
    vars::WORLD_SIZE,
    vars::LOCAL_RANK,
    vars::LOCAL_SIZE,
    vars::ROOT,
    vars::JOB_SECRET,
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
];

fn main() -> ExitCode {
    // The store rankrun serves logs (rejected connections) under OXCCL_DEBUG too.
    oxccl::debug::init_from_env();
    let mut argv = Vec::new();
    for (i, a) in std::env::args_os().skip(1).enumerate() {
        match a.into_string() {
            Ok(s) => argv.push(s),
            Err(a) => {
                eprintln!("rankrun: argument {} ({a:?}) is not valid UTF-8", i + 1);
                return ExitCode::from(2);
            }
        }
    }
    if argv.len() == 1 && argv[0] == "--agent" {
        agent::run();
    }
    let a = match args::parse(&argv) {
        Ok(a) => a,
        Err(e) if e.is_empty() => {
            println!("{}", args::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("rankrun: {e}\n\n{}", args::USAGE);
            return ExitCode::from(2);
        }
    };
    match launch(a) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("rankrun: {e}");
            ExitCode::from(2)
        }
    }
}

/// Where the store listens: `--root`, else loopback for an all-local job, else the
/// interface `OXCCL_SOCKET_IFNAME` picks (the default rule skips loopback).
fn root_addr(opt: Option<&str>, all_local: bool) -> Result<SocketAddr, String> {
    let addr = match opt {
        Some(r) => {
            let r = r.trim();
            r.parse::<SocketAddr>()
                .or_else(|_| r.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 0)))
                .or_else(|_| {
                    r.strip_prefix('[')
                        .and_then(|s| s.strip_suffix(']'))
                        .and_then(|s| s.parse::<IpAddr>().ok())
                        .map(|ip| SocketAddr::new(ip, 0))
                        .ok_or(())
                })
                .map_err(|_| format!("--root '{r}' is not IP or IP:PORT"))?
        }
        None if all_local => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 0),
        None => {
            let spec = std::env::var(vars::SOCKET_IFNAME).ok();
            let (name, ip) = pick_interface(spec.as_deref()).map_err(|e| e.to_string())?;
            if ip.is_loopback() {
                return Err(format!(
                    "ranks on other hosts cannot reach a store on {name} ({ip}): pass --root IP \
                     or set OXCCL_SOCKET_IFNAME to an interface they reach"
                ));
            }
            SocketAddr::new(ip, 0)
        }
    };
    if addr.ip().is_unspecified() {
        return Err(format!(
            "--root {addr}: ranks cannot connect to an unspecified address; name one of this \
             host's addresses"
        ));
    }
    Ok(addr)
}

/// A port that was free a moment ago, for MASTER_PORT (the program's own use, e.g.
/// torch.distributed's env:// store). Taken below the kernel's ephemeral range where it
/// can: a port from that range can be given to some process's outgoing connection before
/// the program binds it (EADDRINUSE, seen once in three runs of the torch tests).
fn free_port(ip: IpAddr) -> Result<u16, String> {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    // Start somewhere that depends on this process, so concurrent launches differ.
    let span = low.saturating_sub(20000).min(10000);
    if span > 0 {
        let start = std::process::id() % span;
        for k in 0..span.min(200) {
            let port = 20000 + (start + k * 37) % span;
            if let Ok(l) = TcpListener::bind(SocketAddr::new(ip, port as u16)) {
                drop(l);
                return Ok(port as u16);
            }
        }
    }
    TcpListener::bind(SocketAddr::new(ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("finding a free port for MASTER_PORT on {ip}: {e}"))
}

fn launch(a: Args) -> Result<u8, String> {
    let hosts = match &a.hosts {
        Some(h) => place::parse_hosts(h)?,
        None => vec![Host {
            name: "localhost".into(),
            slots: a.np.unwrap_or(1),
        }],
    };
    let n = a.np.unwrap_or_else(|| hosts.iter().map(|h| h.slots).sum());
    let spots = place::place(n, &hosts, a.map_by)?;
    let local: Vec<bool> = hosts.iter().map(|h| place::is_local(&h.name)).collect();
    let all_local = spots.iter().all(|s| local[s.host]);

    let root = root_addr(a.root.as_deref(), all_local)?;
    let secret = random_secret().map_err(|e| e.to_string())?;
    let store = StoreServer::spawn(root, secret, a.timeout.unwrap_or(STORE_IDLE))
        .map_err(|e| format!("serving the job's store: {e}"))?;
    let root = store.local_addr();
    let master_port = free_port(root.ip())?;

    let mut common = vec![
        (vars::WORLD_SIZE.to_string(), n.to_string()),
        (vars::ROOT.to_string(), root.to_string()),
        (vars::JOB_SECRET.to_string(), secret_to_hex(&secret)),
        ("WORLD_SIZE".to_string(), n.to_string()),
        ("MASTER_ADDR".to_string(), root.ip().to_string()),
        ("MASTER_PORT".to_string(), master_port.to_string()),
    ];
    for (name, value) in &a.exports {
        if RESERVED.contains(&name.as_str()) {
            return Err(format!("-x {name}: rankrun sets {name} itself"));
        }
        let value = match value {
            Some(v) => v.clone(),
            None => std::env::var(name)
                .map_err(|_| format!("-x {name}: {name} is not set in rankrun's environment"))?,
        };
        common.push((name.clone(), value));
    }
    // Remote ranks do not inherit rankrun's environment: pass its oxccl settings along.
    let remote_extra: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k.starts_with("OXCCL_") && !RESERVED.contains(&k.as_str()))
        .collect();

    let rsh = spawn::split_words(&a.rsh).map_err(|e| format!("--rsh: {e}"))?;
    let agent = match &a.launch_agent {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .map_err(|e| format!("finding rankrun's own path for remote hosts: {e}"))?
            .to_string_lossy()
            .into_owned(),
    };
    if !all_local {
        if rsh.is_empty() {
            return Err("--rsh is empty, but some hosts are remote".into());
        }
        if !spawn::shell_safe(&agent) {
            return Err(format!(
                "rankrun's path '{agent}' has characters a remote shell would split: pass \
                 --launch-agent PATH"
            ));
        }
    }
    let job = Job {
        program: a.program.clone(),
        common,
        remote_extra,
        rsh,
        agent,
        cwd: std::env::current_dir()
            .map(|d| d.into_os_string())
            .unwrap_or_default(),
        grace: a.grace,
        tag_output: a.tag_output,
    };

    // Handlers first: a SIGINT during the start must reach the ranks started so far.
    let wake = signals::install(&[libc::SIGINT, libc::SIGTERM, libc::SIGCHLD])
        .map_err(|e| format!("installing signal handlers: {e}"))?;
    let start = Instant::now();
    let mut ranks = Vec::with_capacity(n);
    let mut copiers = Vec::new();
    let mut cause = None;
    for (rank, spot) in spots.iter().enumerate() {
        let host = &hosts[spot.host].name;
        let started = if local[spot.host] {
            spawn::local(&job, rank, spot)
        } else {
            spawn::remote(&job, rank, spot, host)
        };
        match started {
            Ok(s) => {
                copiers.extend(s.copiers);
                ranks.push(Rank {
                    rank,
                    host: host.clone(),
                    child: s.child,
                    lifeline: s.lifeline,
                    status: None,
                    signalled: false,
                });
            }
            Err(e) => {
                let what = if local[spot.host] {
                    format!("cannot start '{}': {e}", job.program[0])
                } else {
                    format!("cannot start '{}' on {host}: {e}", job.rsh[0])
                };
                let line = format!("rank {rank} {what}");
                eprintln!("rankrun: {line}");
                cause = Some((127, line));
                break;
            }
        }
    }
    let lim = Limits {
        timeout: a.timeout,
        grace: a.grace,
        linger: a.linger,
    };
    let code = monitor::supervise(&mut ranks, &wake, &lim, start, cause, &|| store.news());
    output::join(copiers, Instant::now() + OUTPUT_DRAIN);
    // The store thread ends with the process; waiting for it would only add latency.
    store.detach();
    Ok(code)
}
