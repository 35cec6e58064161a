//! Starting ranks: locally as children, remotely through the `--rsh` template and
//! rankrun's agent. Owns each rank's environment and the remote command line.

use std::ffi::OsString;
use std::io::{self, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::thread::JoinHandle;
use std::time::Duration;

use oxccl::launch::vars;

use crate::output;
use crate::payload::{self, Payload};
use crate::place::Spot;

/// What every rank of the job shares.
pub struct Job {
    pub program: Vec<String>,
    /// Variables every rank gets (world size, root, secret, torchrun's names, `-x`).
    pub common: Vec<(String, String)>,
    /// Extra variables remote ranks get: rankrun's own `OXCCL_*` settings.
    pub remote_extra: Vec<(String, String)>,
    pub rsh: Vec<String>,
    pub agent: String,
    pub cwd: OsString,
    pub grace: Duration,
    pub tag_output: bool,
}

/// A started rank.
pub struct Started {
    pub child: Child,
    /// Remote ranks: the agent's stdin; closing it stops the rank.
    pub lifeline: Option<ChildStdin>,
    pub copiers: Vec<JoinHandle<()>>,
}

/// The variables that differ per rank.
pub fn rank_vars(rank: usize, spot: &Spot) -> Vec<(String, String)> {
    let (lr, ls) = (spot.local_rank.to_string(), spot.local_size.to_string());
    vec![
        (vars::RANK.into(), rank.to_string()),
        (vars::LOCAL_RANK.into(), lr.clone()),
        (vars::LOCAL_SIZE.into(), ls.clone()),
        ("RANK".into(), rank.to_string()),
        ("LOCAL_RANK".into(), lr),
        ("LOCAL_WORLD_SIZE".into(), ls),
    ]
}

/// Splits a template into words as a shell would for simple cases: blanks separate words,
/// single quotes keep everything, double quotes keep blanks, a backslash escapes one
/// character outside single quotes.
pub fn split_words(s: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(x) => cur.push(x),
                        None => return Err(format!("unclosed ' in '{s}'")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => {
                            cur.push(chars.next().ok_or(format!("trailing \\ in '{s}'"))?)
                        }
                        Some(x) => cur.push(x),
                        None => return Err(format!("unclosed \" in '{s}'")),
                    }
                }
            }
            '\\' => {
                in_word = true;
                cur.push(chars.next().ok_or(format!("trailing \\ in '{s}'"))?);
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

/// The command that starts the agent on `host`: the template's words with `{host}`
/// replaced (or the host appended when no word has it), then `AGENT --agent`.
pub fn remote_argv(rsh: &[String], host: &str, agent: &str) -> Vec<String> {
    let mut argv: Vec<String> = rsh.iter().map(|w| w.replace("{host}", host)).collect();
    if !rsh.iter().any(|w| w.contains("{host}")) {
        argv.push(host.to_string());
    }
    argv.push(agent.to_string());
    argv.push("--agent".into());
    argv
}

/// Whether `s` means the same as one word to every shell (ssh hands its command to one).
pub fn shell_safe(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+,:=@%".contains(&b))
}

/// Makes the child its own process group leader, killed when rankrun dies.
fn detach_and_tie(cmd: &mut Command) {
    cmd.process_group(0);
    // SAFETY: getpid is async-signal-safe and runs before the fork.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the closure makes only async-signal-safe syscalls (prctl, getppid).
    unsafe {
        cmd.pre_exec(move || {
            // If rankrun dies (even by SIGKILL), its ranks must not run on unsupervised.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

fn pipes(cmd: &mut Command, tag: bool) {
    let out = || {
        if tag {
            Stdio::piped()
        } else {
            Stdio::inherit()
        }
    };
    cmd.stdout(out()).stderr(out());
}

fn copy_output(rank: usize, child: &mut Child) -> io::Result<Vec<JoinHandle<()>>> {
    let mut v = Vec::new();
    if let Some(o) = child.stdout.take() {
        v.push(output::tag(rank, o, false)?);
    }
    if let Some(e) = child.stderr.take() {
        v.push(output::tag(rank, e, true)?);
    }
    Ok(v)
}

/// Starts rank `rank` on this host.
pub fn local(job: &Job, rank: usize, spot: &Spot) -> io::Result<Started> {
    let mut cmd = Command::new(&job.program[0]);
    cmd.args(&job.program[1..])
        .envs(job.common.iter().cloned())
        .envs(rank_vars(rank, spot))
        .stdin(Stdio::null());
    pipes(&mut cmd, job.tag_output);
    detach_and_tie(&mut cmd);
    let mut child = cmd.spawn()?;
    let copiers = copy_output(rank, &mut child)?;
    Ok(Started {
        child,
        lifeline: None,
        copiers,
    })
}

/// Starts rank `rank` on `host` through the agent; its environment travels on the
/// agent's stdin.
pub fn remote(job: &Job, rank: usize, spot: &Spot, host: &str) -> io::Result<Started> {
    let argv = remote_argv(&job.rsh, host, &job.agent);
    let env: Vec<(OsString, OsString)> = job
        .remote_extra
        .iter()
        .chain(&job.common)
        .cloned()
        .chain(rank_vars(rank, spot))
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
    let text = Payload {
        grace: job.grace,
        cwd: job.cwd.clone(),
        env,
        argv: job.program.iter().map(OsString::from).collect(),
    }
    .encode();
    if text.len() > payload::MAX_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "the environment and arguments to send ({} bytes) exceed {} bytes",
                text.len(),
                payload::MAX_BYTES
            ),
        ));
    }
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]).stdin(Stdio::piped());
    pipes(&mut cmd, job.tag_output);
    detach_and_tie(&mut cmd);
    let mut child = cmd.spawn()?;
    let copiers = copy_output(rank, &mut child)?;
    let mut lifeline = child.stdin.take();
    if let Some(stdin) = lifeline.as_mut() {
        // The payload fits the pipe's buffer, so this does not block. A launcher that has
        // already died (EPIPE) is reported when it is reaped.
        let _ = stdin.write_all(text.as_bytes());
    }
    Ok(Started {
        child,
        lifeline,
        copiers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_words() {
        let w = |s: &str| split_words(s).unwrap();
        assert_eq!(w("ssh {host}"), ["ssh", "{host}"]);
        assert_eq!(
            w("  ip netns exec {host} "),
            ["ip", "netns", "exec", "{host}"]
        );
        assert_eq!(
            w(r#"ssh -o 'A B' "x\"y" a\ b ''"#),
            ["ssh", "-o", "A B", "x\"y", "a b", ""]
        );
        assert!(split_words("ssh 'x").is_err());
        assert_eq!(
            remote_argv(&w("ip netns exec {host}"), "ns1", "/bin/rr"),
            ["ip", "netns", "exec", "ns1", "/bin/rr", "--agent"]
        );
        assert_eq!(
            remote_argv(&w("rsh"), "h", "rr"),
            ["rsh", "h", "rr", "--agent"]
        );
    }

    #[test]
    fn safe_words() {
        assert!(shell_safe("/work/target/release/rankrun"));
        assert!(!shell_safe("/my dir/rankrun"));
        assert!(!shell_safe("a;b"));
        assert!(!shell_safe(""));
    }
}
