//! Faults the job-wide error channel must name: a rank frozen by SIGSTOP (every survivor
//! and rankrun name it at the timeout), a rank killed right after joining the store without
//! rankrun (every survivor fails within 2 s naming it), and a rank SIGKILLed mid-allreduce.
//! The counted trials are ignored by default (`OXCCL_TRIALS`, default 2); one of each runs.

use super::*;
use std::os::unix::process::ExitStatusExt;

fn trials() -> usize {
    std::env::var("OXCCL_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2)
}

/// A pseudo-random rank of `n` for trial `t` (no randomness crate needed for a spread).
fn pick_rank(t: usize, n: usize) -> usize {
    let x = (t as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ std::process::id() as u64;
    (x >> 33) as usize % n
}

/// The survivors' own error lines (`[r] collectives_check: ...`) and rankrun's verdict.
fn lines_of(err: &str, r: usize) -> Option<&str> {
    err.lines()
        .find(|l| l.starts_with(&format!("[{r}] collectives_check:")))
}

/// Waits until the 4 ranks of a `--loop` job loop (`rx`: rankrun's tagged output lines),
/// and returns the pid of rank `victim`.
fn looping_pid(rx: &mpsc::Receiver<String>, victim: usize) -> Result<u32, String> {
    let looping = lines_until(rx, 4, Duration::from_secs(30), |l| l.contains("looping"));
    looping
        .iter()
        .find(|l| l.starts_with(&format!("[{victim}] rank {victim} pid ")))
        .and_then(|l| l.split_whitespace().nth(4))
        .and_then(|p| p.parse().ok())
        .ok_or(format!("no pid for rank {victim} in {looping:?}"))
}

/// Whether `msg` names `rank r` (not `rank r0`...).
fn names(msg: &str, r: usize) -> bool {
    let k = format!("rank {r}");
    msg.match_indices(&k).any(|(i, _)| {
        !msg[i + k.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit())
    })
}

/// SIGSTOPs rank `victim` of 4 looping ranks (OXCCL_TIMEOUT=5); returns how long rankrun
/// took after the signal, or what was wrong.
fn sigstop_trial(victim: usize) -> Result<Duration, String> {
    let mut cmd = rankrun(&[
        "-n",
        "4",
        "--tag-output",
        "--grace",
        "1",
        example(),
        "--loop",
        "120",
        "--count",
        "1000",
    ]);
    cmd.env("OXCCL_TIMEOUT", "5");
    let (child, rx) = start_streaming(&mut cmd);
    let pid = looping_pid(&rx, victim)?;
    let t = Instant::now();
    signal(pid, libc::SIGSTOP);
    let o = wait_output(child, Duration::from_secs(60));
    let took = t.elapsed();
    let err = text(&o.stderr);
    let named = format!("rank {victim} made no progress");
    for r in (0..4).filter(|&r| r != victim) {
        let own = lines_of(&err, r).ok_or(format!("no error from rank {r}:\n{err}"))?;
        if !own.contains(&named) {
            return Err(format!(
                "rank {r} does not name frozen rank {victim}: {own}"
            ));
        }
    }
    let verdict = err
        .lines()
        .find(|l| l.starts_with("rankrun: job failed:"))
        .ok_or(format!("no verdict:\n{err}"))?;
    if !verdict.contains(&named) {
        return Err(format!(
            "rankrun's verdict does not name rank {victim}: {verdict}"
        ));
    }
    if !err.contains(&format!(
        "rank {victim} (pid {pid} on localhost) is stopped"
    )) {
        return Err(format!(
            "rankrun did not say rank {victim} is stopped:\n{err}"
        ));
    }
    Ok(took)
}

/// The environment of rank `r` of `n` under torchrun's contract (rank 0 serves the store).
fn torchrun_env(r: usize, n: usize, port: u16, timeout_s: u32) -> Vec<(String, String)> {
    kv(&[
        ("RANK", r.to_string()),
        ("WORLD_SIZE", n.to_string()),
        ("LOCAL_RANK", r.to_string()),
        ("LOCAL_WORLD_SIZE", n.to_string()),
        ("MASTER_ADDR", "127.0.0.1".into()),
        ("MASTER_PORT", port.to_string()),
        ("OXCCL_TIMEOUT", timeout_s.to_string()),
    ])
}

/// SIGSTOPs rank 0 of 4 looping ranks under torchrun's contract, so that the job's store
/// (served by rank 0's process) freezes too (OXCCL_TIMEOUT=5): every survivor must name
/// rank 0 as stopped or frozen. Returns the slowest survivor's time after the signal.
fn frozen_store_host_trial() -> Result<Duration, String> {
    let port = free_port() - 1;
    let mut children: Vec<Child> = (0..4)
        .map(|r| {
            let mut c = Command::new(example());
            clean(&mut c)
                .args(["--loop", "120"])
                .envs(torchrun_env(r, 4, port, 5))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn rank")
        })
        .collect();
    let out0 = children[0].stdout.take().expect("stdout");
    let mut first = String::new();
    BufReader::new(out0)
        .read_line(&mut first)
        .map_err(|e| e.to_string())?;
    if !first.contains("looping") {
        return Err(format!("rank 0 said '{first}'"));
    }
    std::thread::sleep(Duration::from_millis(300));
    let host = children.remove(0);
    let t = Instant::now();
    signal(host.id(), libc::SIGSTOP);
    let waiters: Vec<_> = children
        .into_iter()
        .map(|c| std::thread::spawn(move || (wait_output(c, Duration::from_secs(60)), t.elapsed())))
        .collect();
    let outs: Vec<(Output, Duration)> = waiters
        .into_iter()
        .map(|w| w.join().expect("waiter"))
        .collect();
    signal(host.id(), libc::SIGKILL);
    let _ = wait_output(host, Duration::from_secs(10));
    let mut slowest = Duration::ZERO;
    for (i, (o, at)) in outs.iter().enumerate() {
        let err = text(&o.stderr);
        if !(names(&err, 0) && err.contains("stopped or frozen")) {
            return Err(format!("rank {} does not name frozen rank 0: {err}", i + 1));
        }
        slowest = slowest.max(*at);
    }
    Ok(slowest)
}

/// Kills rank `victim` of 4 right after it joined (torchrun's contract, rank 0 serving the
/// store, no rankrun); returns the slowest survivor's time after the victim died.
fn kill_after_join_trial(victim: usize) -> Result<Duration, String> {
    let port = free_port() - 1;
    let n = 4;
    let t = Instant::now();
    let children: Vec<Child> = (0..n)
        .map(|r| {
            let mut c = Command::new(example());
            clean(&mut c)
                .args(["--kill-after-init", &victim.to_string()])
                .envs(torchrun_env(r, n, port, 60))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn rank")
        })
        .collect();
    // Each rank's end, timed as it happens.
    let waiters: Vec<_> = children
        .into_iter()
        .map(|c| {
            std::thread::spawn(move || {
                let o = wait_output(c, Duration::from_secs(90));
                (o, t.elapsed())
            })
        })
        .collect();
    let outs: Vec<(Output, Duration)> = waiters
        .into_iter()
        .map(|w| w.join().expect("waiter"))
        .collect();
    let died = outs[victim].1;
    if outs[victim].0.status.signal() != Some(libc::SIGKILL) {
        return Err(format!(
            "rank {victim} was not killed: {:?}",
            outs[victim].0.status
        ));
    }
    let mut slowest = Duration::ZERO;
    for (r, (o, at)) in outs.iter().enumerate().filter(|(r, _)| *r != victim) {
        let err = text(&o.stderr);
        if o.status.success() {
            return Err(format!("rank {r} did not fail"));
        }
        if !names(&err, victim) {
            return Err(format!("rank {r} does not name rank {victim}: {err}"));
        }
        slowest = slowest.max(at.saturating_sub(died));
    }
    Ok(slowest)
}

/// SIGKILLs rank `victim` of 4 looping ranks; returns how long rankrun took after it.
fn sigkill_trial(victim: usize) -> Result<Duration, String> {
    let (child, rx) = start_streaming(&mut rankrun(&[
        "-n",
        "4",
        "--tag-output",
        example(),
        "--loop",
        "120",
        "--count",
        "100000",
    ]));
    let pid = looping_pid(&rx, victim)?;
    let t = Instant::now();
    signal(pid, libc::SIGKILL);
    let o = wait_output(child, Duration::from_secs(30));
    let took = t.elapsed();
    let err = text(&o.stderr);
    if o.status.code() != Some(128 + 9) {
        return Err(format!("rankrun's status {:?}:\n{err}", o.status));
    }
    let verdict = format!(
        "rankrun: job failed: rank {victim} (pid {pid} on localhost) was killed by signal 9 \
         (SIGKILL)"
    );
    if !err.contains(&verdict) {
        return Err(format!("no '{verdict}':\n{err}"));
    }
    // Every survivor that reports an error names the rank that died.
    for r in (0..4).filter(|&r| r != victim) {
        if let Some(own) = lines_of(&err, r) {
            if !names(own, victim) {
                return Err(format!("rank {r} does not name rank {victim}: {own}"));
            }
        }
    }
    Ok(took)
}

#[test]
fn sigkill_mid_allreduce_ends_the_job_promptly() {
    let victim = pick_rank(0, 4);
    let took = sigkill_trial(victim).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("SIGKILL of rank {victim}: rankrun ended {took:?} after it");
    assert!(took < Duration::from_secs(2), "rankrun took {took:?}");
}

#[test]
fn a_frozen_rank_is_named_by_every_survivor_and_by_rankrun() {
    let victim = pick_rank(0, 4);
    let took = sigstop_trial(victim).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("SIGSTOP of rank {victim}: rankrun ended {took:?} after it");
}

#[test]
fn a_rank_killed_after_joining_is_named_within_two_seconds() {
    let victim = 1 + pick_rank(0, 3);
    let took = kill_after_join_trial(victim).unwrap_or_else(|e| panic!("{e}"));
    assert!(took < Duration::from_secs(2), "slowest survivor {took:?}");
}

/// `OXCCL_TRIALS` of each fault, counted.
#[test]
#[ignore]
fn fault_trials() {
    let n = trials();
    let (mut stop_ok, mut stop_worst) = (0, Duration::ZERO);
    let (mut kill_ok, mut kill_worst) = (0, Duration::ZERO);
    let (mut sigkill_ok, mut sigkill_worst) = (0, Duration::ZERO);
    let (mut host_ok, mut host_worst) = (0, Duration::ZERO);
    let mut failures = Vec::new();
    for t in 0..n {
        let victim = pick_rank(t, 4);
        match sigstop_trial(victim) {
            Ok(d) => {
                stop_ok += 1;
                stop_worst = stop_worst.max(d);
            }
            Err(e) => failures.push(format!("SIGSTOP #{t}: {e}")),
        }
        // Rank 0 serves the store in this contract: the victim is one of the others.
        let victim = 1 + pick_rank(t, 3);
        match kill_after_join_trial(victim) {
            Ok(d) if d < Duration::from_secs(2) => {
                kill_ok += 1;
                kill_worst = kill_worst.max(d);
            }
            Ok(d) => failures.push(format!("kill after join #{t}: took {d:?}")),
            Err(e) => failures.push(format!("kill after join #{t}: {e}")),
        }
        let victim = pick_rank(t + 1000, 4);
        match sigkill_trial(victim) {
            Ok(d) if d < Duration::from_secs(1) => {
                sigkill_ok += 1;
                sigkill_worst = sigkill_worst.max(d);
            }
            Ok(d) => failures.push(format!("SIGKILL #{t}: took {d:?}")),
            Err(e) => failures.push(format!("SIGKILL #{t}: {e}")),
        }
    }
    for t in 0..n {
        match frozen_store_host_trial() {
            Ok(d) => {
                host_ok += 1;
                host_worst = host_worst.max(d);
            }
            Err(e) => failures.push(format!("frozen store host #{t}: {e}")),
        }
    }
    eprintln!("SIGSTOP of rank 0 serving the store (torchrun contract): {host_ok}/{n} (slowest survivor {host_worst:?} after)");
    eprintln!("SIGKILL mid-allreduce of a random rank of 4: {sigkill_ok}/{n} (rankrun ended at most {sigkill_worst:?} after)");
    eprintln!(
        "SIGSTOP of a random rank of 4: {stop_ok}/{n} (rankrun ended at most {stop_worst:?} after)"
    );
    eprintln!(
        "kill right after joining: {kill_ok}/{n} (slowest survivor {kill_worst:?} after the death)"
    );
    assert!(failures.is_empty(), "{failures:#?}");
}
