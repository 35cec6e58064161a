//! Launcher tests that need root or a package: two "hosts" as network namespaces joined by
//! a veth pair (root and iproute2's `ip`), and Open MPI's `mpirun`. Each prints why it skips
//! where what it needs is missing; CI runs them as root with the packages installed
//! (ci/packages.sh). A real single-node Slurm, whose daemons need a configuration of their
//! own, stays in ci/slurm-tests.sh.

use std::process::Command;
use std::time::Duration;

use super::{clean, example, free_port, run_within, text, RANKRUN};

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Whether `program` is on the PATH.
fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program} >/dev/null")])
        .status()
        .is_ok_and(|s| s.success())
}

fn skip(test: &str, why: &str) {
    println!("{test}: skipped: {why}");
}

/// `ip` with `args`, which must succeed.
fn ip(args: &[&str]) -> Result<(), String> {
    let o = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if o.status.success() {
        return Ok(());
    }
    Err(format!("ip {}: {}", args.join(" "), text(&o.stderr)))
}

/// Two network namespaces joined by a veth pair, 10.213.N.1 and 10.213.N.2 (a subnet that
/// lives only inside them), removed when dropped.
struct TwoHosts {
    a: String,
    b: String,
}

impl TwoHosts {
    fn new(tag: &str, subnet: u8) -> Result<TwoHosts, String> {
        let id = std::process::id();
        let hosts = TwoHosts {
            a: format!("oxl{id}{tag}a"),
            b: format!("oxl{id}{tag}b"),
        };
        let (a, b) = (hosts.a.as_str(), hosts.b.as_str());
        let (va, vb) = (format!("{a}v"), format!("{b}v"));
        ip(&["netns", "add", a])?;
        ip(&["netns", "add", b])?;
        ip(&["link", "add", &va, "type", "veth", "peer", "name", &vb])?;
        ip(&["link", "set", &va, "netns", a])?;
        ip(&["link", "set", &vb, "netns", b])?;
        for (ns, v, host) in [(a, &va, 1), (b, &vb, 2)] {
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("10.213.{subnet}.{host}/24"),
                "dev",
                v,
            ])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&["-n", ns, "link", "set", v, "up"])?;
        }
        Ok(hosts)
    }

    /// Bytes host B has received over its end of the veth.
    fn rx_bytes_b(&self) -> u64 {
        let path = format!("/sys/class/net/{}v/statistics/rx_bytes", self.b);
        let o = Command::new("ip")
            .args(["netns", "exec", &self.b, "cat", &path])
            .output();
        o.ok()
            .and_then(|o| text(&o.stdout).trim().parse().ok())
            .unwrap_or(0)
    }

    /// rankrun started in host A with ranks 0, 1 in A and 2, 3 in B, through its agent.
    fn rankrun(&self, args: &[&str]) -> Command {
        let hosts = format!("{}:2,{}:2", self.a, self.b);
        let mut c = Command::new("ip");
        clean(&mut c).args(["netns", "exec", &self.a, RANKRUN, "--hosts", &hosts]);
        c.args(["--rsh", "ip netns exec {host}", "-n", "4"])
            .args(args);
        c
    }
}

impl Drop for TwoHosts {
    fn drop(&mut self) {
        // Deleting a namespace removes its end of the veth, and with it the pair.
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Two namespaces, or the reason this test cannot have them.
fn two_hosts(test: &str, tag: &str, subnet: u8) -> Option<TwoHosts> {
    if !is_root() || !have("ip") {
        skip(test, "needs root and iproute2's ip (network namespaces)");
        return None;
    }
    match TwoHosts::new(tag, subnet) {
        Ok(h) => Some(h),
        Err(e) => panic!("{test}: setting up the namespaces: {e}"),
    }
}

#[test]
fn rankrun_across_two_network_namespaces() {
    let Some(hosts) = two_hosts("rankrun_across_two_network_namespaces", "x", 77) else {
        return;
    };
    let count = 1_000_000;
    let before = hosts.rx_bytes_b();
    let mut cmd = hosts.rankrun(&["--tag-output", "--timeout", "100", example()]);
    cmd.args(["--count", &count.to_string(), "--iters", "2"]);
    let o = run_within(cmd, Duration::from_secs(120));
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert!(o.status.success(), "{out}{err}");
    assert!(out.contains("[0] collectives_check: 4 ranks OK"), "{out}");
    // Each iteration moves at least one 4 MB float vector into B for the allreduce alone.
    let moved = hosts.rx_bytes_b() - before;
    println!("bytes received over the veth by B: {moved}");
    assert!(moved > 4 * count, "only {moved} bytes crossed the veth");
}

#[test]
fn a_failing_rank_in_a_namespace_is_named_with_its_host() {
    let test = "a_failing_rank_in_a_namespace_is_named_with_its_host";
    let Some(hosts) = two_hosts(test, "y", 78) else {
        return;
    };
    let o = run_within(
        hosts.rankrun(&[example(), "--exit", "3:3"]),
        Duration::from_secs(60),
    );
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    let named = format!("on {}) exited with status 3", hosts.b);
    assert!(
        err.contains("rank 3 (pid ") && err.contains(&named),
        "{err}"
    );
}

#[test]
fn mpirun_starts_a_job_that_finds_its_ranks() {
    if !have("mpirun") {
        return skip(
            "mpirun_starts_a_job_that_finds_its_ranks",
            "needs Open MPI's mpirun",
        );
    }
    let mut cmd = Command::new("mpirun");
    clean(&mut cmd);
    if is_root() {
        cmd.arg("--allow-run-as-root");
    }
    let root = format!("OXCCL_ROOT=127.0.0.1:{}", free_port());
    cmd.args(["--oversubscribe", "-n", "4", "-x", &root, example()]);
    cmd.args(["--count", "100000"]);
    let o = run_within(cmd, Duration::from_secs(120));
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert!(o.status.success(), "{out}{err}");
    assert!(out.contains("collectives_check: 4 ranks OK"), "{out}");
    assert!(out.contains("started by mpirun, local size 4"), "{out}");
}
