//! Launching real processes: rankrun with the collectives_check example on 1..8 ranks,
//! exit status and signal propagation, a rank SIGKILLed mid-allreduce, the remote path
//! (rankrun's agent behind an `--rsh` that stays on this host), and the torchrun, Slurm
//! and Open MPI environment contracts with rank 0 serving the store.
//!
//! Setups that need root or packages are in `launch/rooted.rs` (network namespaces, Open
//! MPI's mpirun; each says why it skips) and ci/slurm-tests.sh (a real Slurm).

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const RANKRUN: &str = env!("CARGO_BIN_EXE_rankrun");
const PERF: &str = env!("CARGO_BIN_EXE_oxccl-perf");

/// Every variable a launcher contract reads: tests start from none of them.
const CONTRACT: &[&str] = &[
    "OXCCL_RANK",
    "OXCCL_WORLD_SIZE",
    "OXCCL_LOCAL_RANK",
    "OXCCL_LOCAL_SIZE",
    "OXCCL_ROOT",
    "OXCCL_JOB_SECRET",
    "OXCCL_SOCKET_IFNAME",
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "SLURM_PROCID",
    "OMPI_COMM_WORLD_RANK",
];

/// The example's binary, (re)built once per test run: `cargo test --test launch` does not
/// build examples by itself.
fn example() -> &'static str {
    static PATH: OnceLock<String> = OnceLock::new();
    PATH.get_or_init(|| {
        let exe = std::env::current_exe().expect("test binary path");
        // target/<profile>/deps/launch-<hash> -> target/<profile>/examples/collectives_check
        let dir: PathBuf = exe
            .parent()
            .and_then(|d| d.parent())
            .expect("target dir")
            .into();
        let mut build = Command::new(env!("CARGO"));
        build.args(["build", "--quiet", "--example", "collectives_check"]);
        if dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let st = build
            .status()
            .expect("running cargo build --example collectives_check");
        assert!(st.success(), "building the example failed");
        dir.join("examples")
            .join("collectives_check")
            .to_string_lossy()
            .into_owned()
    })
}

fn clean(cmd: &mut Command) -> &mut Command {
    for v in CONTRACT {
        cmd.env_remove(v);
    }
    cmd.env("OXCCL_TIMEOUT", "30").stdin(Stdio::null())
}

fn rankrun(args: &[&str]) -> Command {
    let mut c = Command::new(RANKRUN);
    clean(&mut c).args(args);
    c
}

/// Runs to completion within `limit`, or fails the test (killing the process first).
fn run_within(mut cmd: Command, limit: Duration) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    wait_output(child, limit)
}

fn wait_output(mut child: Child, limit: Duration) -> Output {
    let (mut out, mut err) = (child.stdout.take(), child.stderr.take());
    let t_out = std::thread::spawn(move || {
        let mut s = Vec::new();
        if let Some(o) = out.as_mut() {
            let _ = o.read_to_end(&mut s);
        }
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = Vec::new();
        if let Some(e) = err.as_mut() {
            let _ = e.read_to_end(&mut s);
        }
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the command ran past {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: t_out.join().unwrap_or_default(),
        stderr: t_err.join().unwrap_or_default(),
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: signalling a process this test started (or one of its ranks, by pid).
    assert_eq!(unsafe { libc::kill(pid as i32, sig) }, 0, "kill {pid}");
}

#[test]
fn one_to_eight_ranks_check_their_collectives() {
    for n in 1..=8 {
        let ns = n.to_string();
        let o = run_within(
            rankrun(&["-n", &ns, "--tag-output", example(), "--count", "3000"]),
            Duration::from_secs(60),
        );
        let (out, err) = (text(&o.stdout), text(&o.stderr));
        assert!(o.status.success(), "-n {n}: {:?}\n{out}\n{err}", o.status);
        assert!(
            out.contains(&format!("[0] collectives_check: {n} ranks OK")),
            "-n {n}: {out}"
        );
        assert!(out.contains("started by rankrun"), "{out}");
    }
}

#[test]
fn a_rank_exit_status_is_passed_on_and_named() {
    let o = run_within(
        rankrun(&["-n", "3", example(), "--exit", "2:7"]),
        Duration::from_secs(30),
    );
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(7), "{err}");
    assert!(
        err.contains("rank 2 (pid") && err.contains("exited with status 7"),
        "{err}"
    );
}

#[test]
fn a_rank_death_by_signal_is_named_and_the_others_stopped() {
    let t = Instant::now();
    let o = run_within(
        rankrun(&[
            "-n",
            "3",
            "--linger",
            "0.2",
            "sh",
            "-c",
            r#"if [ "$OXCCL_RANK" = 1 ]; then kill -SEGV $$; fi; exec sleep 30"#,
        ]),
        Duration::from_secs(20),
    );
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(128 + 11), "{err}");
    assert!(
        err.contains("rank 1 (pid") && err.contains("signal 11 (SIGSEGV)"),
        "{err}"
    );
    assert!(err.contains("stopping the other 2 ranks"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
}

/// Starts rankrun with piped output and returns it with a channel of its stdout lines.
fn start_streaming(cmd: &mut Command) -> (Child, mpsc::Receiver<String>) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rankrun");
    let out = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// Collects lines until `pred` has held for `n` of them, within `limit`.
fn lines_until(
    rx: &mpsc::Receiver<String>,
    n: usize,
    limit: Duration,
    pred: impl Fn(&str) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + limit;
    let mut hits = Vec::new();
    while hits.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) if pred(&l) => hits.push(l),
            Ok(_) => {}
            Err(_) => panic!(
                "only {} of {n} expected lines within {limit:?}: {hits:?}",
                hits.len()
            ),
        }
    }
    hits
}

#[test]
fn sigterm_and_sigint_are_forwarded_to_every_rank() {
    for (sig, name) in [(libc::SIGTERM, "TERM"), (libc::SIGINT, "INT")] {
        let script = format!(
            r#"trap 'echo caught {name}; exit 0' {name}; echo ready; while :; do sleep 0.05; done"#
        );
        let (child, rx) = start_streaming(&mut rankrun(&[
            "-n",
            "3",
            "--tag-output",
            "sh",
            "-c",
            &script,
        ]));
        lines_until(&rx, 3, Duration::from_secs(20), |l| l.ends_with("ready"));
        signal(child.id(), sig);
        let o = wait_output(child, Duration::from_secs(20));
        let caught: Vec<String> = rx.try_iter().filter(|l| l.contains("caught")).collect();
        for r in 0..3 {
            assert!(
                caught.iter().any(|l| l == &format!("[{r}] caught {name}")),
                "rank {r} did not get SIG{name}: {caught:?}"
            );
        }
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(128 + sig), "{err}");
        assert!(
            err.contains(&format!("(SIG{name}): forwarding it to 3 ranks")),
            "{err}"
        );
    }
}

#[test]
fn timeout_ends_a_job_that_runs_too_long() {
    let t = Instant::now();
    let o = run_within(
        rankrun(&["-n", "2", "--timeout", "0.5", "sleep", "30"]),
        Duration::from_secs(20),
    );
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(124), "{err}");
    assert!(err.contains("ran past --timeout 500ms"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

#[test]
fn remote_ranks_through_the_agent() {
    // An --rsh that stays on this host: `env -i RSH_HOST=<host> PATH=... rankrun --agent`.
    // Everything else is the remote path: the agent starts with an empty environment, so
    // the rank's variables can only come on its stdin; statuses and signals pass through
    // it; the secret stays off command lines.
    let rsh = "env -i RSH_HOST={host} PATH=/usr/bin:/bin";
    let script = r#"echo "host=$RSH_HOST rank=$OXCCL_RANK local=$OXCCL_LOCAL_RANK/$OXCCL_LOCAL_SIZE fwd=$FWD knob=$OXCCL_SPIN"
        case "$(tr '\0' ' ' < /proc/$PPID/cmdline)" in *"$OXCCL_JOB_SECRET"*) echo SECRET-ON-CMDLINE;; esac"#;
    let mut cmd = rankrun(&[
        "--hosts",
        "fake-a:2,fake-b:1",
        "--map-by",
        "node",
        "--rsh",
        rsh,
        "--root",
        "127.0.0.1",
        "-x",
        "FWD=yes",
        "--tag-output",
        "sh",
        "-c",
        script,
    ]);
    cmd.env("OXCCL_SPIN", "77");
    let o = run_within(cmd, Duration::from_secs(30));
    let out = text(&o.stdout);
    assert!(o.status.success(), "{out}{}", text(&o.stderr));
    assert!(!out.contains("SECRET-ON-CMDLINE"), "{out}");
    for want in [
        "[0] host=fake-a rank=0 local=0/2 fwd=yes knob=77",
        "[1] host=fake-b rank=1 local=0/1 fwd=yes knob=77",
        "[2] host=fake-a rank=2 local=1/2 fwd=yes knob=77",
    ] {
        assert!(
            out.lines().any(|l| l == want),
            "missing '{want}' in:\n{out}"
        );
    }

    // The collectives, and a failing remote rank's status, through the agent.
    let o = run_within(
        rankrun(&[
            "--hosts",
            "fake-a:2,fake-b:2",
            "--rsh",
            rsh,
            "--root",
            "127.0.0.1",
            example(),
            "--exit",
            "3:9",
        ]),
        Duration::from_secs(30),
    );
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert!(out.contains("4 ranks OK"), "{out}{err}");
    assert_eq!(o.status.code(), Some(9), "{err}");
    assert!(
        err.contains("rank 3 (pid") && err.contains("on fake-b) exited with status 9"),
        "{err}"
    );

    // SIGTERM to rankrun reaches remote ranks through their agents.
    let (child, rx) = start_streaming(&mut rankrun(&[
        "--hosts",
        "fake-a:2",
        "--rsh",
        rsh,
        "--root",
        "127.0.0.1",
        "--tag-output",
        "sh",
        "-c",
        "trap 'echo caught TERM; exit 0' TERM; echo ready; while :; do sleep 0.05; done",
    ]));
    lines_until(&rx, 2, Duration::from_secs(20), |l| l.ends_with("ready"));
    signal(child.id(), libc::SIGTERM);
    let o = wait_output(child, Duration::from_secs(20));
    let caught = rx.try_iter().filter(|l| l.ends_with("caught TERM")).count();
    assert_eq!(caught, 2, "{}", text(&o.stderr));
    assert_eq!(o.status.code(), Some(128 + libc::SIGTERM));
}

#[test]
fn oxccl_perf_runs_one_rank_per_process_and_only_rank_0_prints() {
    let o = run_within(
        rankrun(&[
            "-n", "4", PERF, "-b", "8", "-e", "64K", "-f", "8", "-w", "1", "-n", "2",
        ]),
        Duration::from_secs(120),
    );
    let out = text(&o.stdout);
    assert!(o.status.success(), "{out}{}", text(&o.stderr));
    assert_eq!(
        out.matches("# oxccl-perf: 4 ranks as processes").count(),
        1,
        "{out}"
    );
    assert!(out.contains("# Out of bounds values : 0 OK"), "{out}");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Starts `n` example ranks directly, each with `vars(rank)`, and checks they all pass.
fn run_contract(n: usize, vars: impl Fn(usize) -> Vec<(String, String)>, launcher: &str) {
    let children: Vec<Child> = (0..n)
        .map(|r| {
            let mut c = Command::new(example());
            clean(&mut c)
                .envs(vars(r))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn rank")
        })
        .collect();
    for (r, c) in children.into_iter().enumerate() {
        let o = wait_output(c, Duration::from_secs(60));
        let (out, err) = (text(&o.stdout), text(&o.stderr));
        assert!(o.status.success(), "{launcher} rank {r}: {out}{err}");
        if r == 0 {
            assert!(out.contains(&format!("{n} ranks OK")), "{out}");
            assert!(out.contains(&format!("started by {launcher}")), "{out}");
        }
    }
}

fn kv(pairs: &[(&str, String)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

#[test]
fn torchrun_environment_rank0_serves_the_store() {
    // oxccl's store goes to MASTER_PORT + 1 (torchrun's agent holds MASTER_PORT).
    let port = free_port() - 1;
    run_contract(
        3,
        |r| {
            kv(&[
                ("RANK", r.to_string()),
                ("WORLD_SIZE", "3".into()),
                ("LOCAL_RANK", r.to_string()),
                ("LOCAL_WORLD_SIZE", "3".into()),
                ("MASTER_ADDR", "127.0.0.1".into()),
                ("MASTER_PORT", port.to_string()),
            ])
        },
        "torchrun",
    );
}

#[test]
fn slurm_environment_with_a_derived_port() {
    // A job id whose derived port is free now.
    let job = (1000..200_000u64)
        .step_by(997)
        .find(|&j| TcpListener::bind(("127.0.0.1", oxccl::launch::slurm_port(j, 0))).is_ok())
        .expect("a free derived port");
    run_contract(
        4,
        |r| {
            kv(&[
                ("SLURM_PROCID", r.to_string()),
                ("SLURM_NTASKS", "4".into()),
                ("SLURM_LOCALID", r.to_string()),
                ("SLURM_NODEID", "0".into()),
                ("SLURM_STEP_NODELIST", "localhost".into()),
                ("SLURM_STEP_TASKS_PER_NODE", "4".into()),
                ("SLURM_JOB_ID", job.to_string()),
                ("SLURM_STEP_ID", "0".into()),
            ])
        },
        "srun",
    );
}

#[test]
fn open_mpi_environment_with_oxccl_root() {
    let root = format!("127.0.0.1:{}", free_port());
    run_contract(
        2,
        |r| {
            kv(&[
                ("OMPI_COMM_WORLD_RANK", r.to_string()),
                ("OMPI_COMM_WORLD_SIZE", "2".into()),
                ("OMPI_COMM_WORLD_LOCAL_RANK", r.to_string()),
                ("OMPI_COMM_WORLD_LOCAL_SIZE", "2".into()),
                ("OXCCL_ROOT", root.clone()),
            ])
        },
        "mpirun",
    );
}

#[test]
fn missing_or_bad_environment_is_a_clear_error() {
    let mut c = Command::new(example());
    clean(&mut c);
    let o = run_within(c, Duration::from_secs(20));
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    for name in [
        "no launcher environment",
        "OXCCL_RANK",
        "MASTER_ADDR",
        "SLURM_PROCID",
        "OMPI_COMM_WORLD_RANK",
    ] {
        assert!(err.contains(name), "{name}: {err}");
    }
    let mut c = Command::new(example());
    clean(&mut c).envs([
        ("RANK", "0"),
        ("WORLD_SIZE", "2"),
        ("MASTER_ADDR", "127.0.0.1"),
    ]);
    let o = run_within(c, Duration::from_secs(20));
    let err = text(&o.stderr);
    assert!(
        err.contains("torchrun") && err.contains("MASTER_PORT is not set"),
        "{err}"
    );
}

#[test]
fn launch_mistakes_are_reported() {
    let o = run_within(rankrun(&["sleep", "1"]), Duration::from_secs(10));
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("give -n N"));
    let o = run_within(
        rankrun(&["-n", "2", "/nonexistent/program"]),
        Duration::from_secs(10),
    );
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(127), "{err}");
    assert!(
        err.contains("rank 0 cannot start '/nonexistent/program'"),
        "{err}"
    );
    let o = run_within(
        rankrun(&["-n", "3", "--hosts", "localhost:2", "true"]),
        Duration::from_secs(10),
    );
    assert!(
        text(&o.stderr).contains("3 ranks need 3 slots"),
        "{}",
        text(&o.stderr)
    );
    let o = run_within(
        rankrun(&["-n", "1", "-x", "OXCCL_ROOT=1.2.3.4:5", "true"]),
        Duration::from_secs(10),
    );
    assert!(text(&o.stderr).contains("rankrun sets OXCCL_ROOT itself"));
}

#[path = "launch/faults.rs"]
mod faults;
#[path = "launch/rooted.rs"]
mod rooted;
