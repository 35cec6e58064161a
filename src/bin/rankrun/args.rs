//! Command-line options, spelt as Open MPI's mpirun spells them where they overlap.

use std::time::Duration;

/// How ranks are dealt to hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapBy {
    /// Fill each host's slots before the next host (Open MPI's default).
    Slot,
    /// One rank per host in turn, skipping full hosts.
    Node,
}

#[derive(Debug, Clone)]
pub struct Args {
    pub np: Option<usize>,
    pub hosts: Option<String>,
    pub map_by: MapBy,
    pub rsh: String,
    pub tag_output: bool,
    pub timeout: Option<Duration>,
    pub grace: Duration,
    pub linger: Duration,
    /// `-x VAR` (forward the current value) or `-x VAR=VALUE`.
    pub exports: Vec<(String, Option<String>)>,
    pub root: Option<String>,
    pub launch_agent: Option<String>,
    pub program: Vec<String>,
}

pub const USAGE: &str = "\
rankrun: start the ranks of an oxccl job

usage: rankrun -n N [options] [--] PROGRAM [ARGS...]
  -n, -np N              number of ranks (default with --hosts: every slot)
  -H, --hosts LIST       H1:SLOTS,H2:SLOTS,...: place ranks on these hosts (SLOTS defaults to 1);
                         localhost and this host's name run locally, others through --rsh
  --map-by slot|node     slot: fill each host's slots in turn; node: round-robin over hosts [slot]
  --rsh TEMPLATE         how to start a process on a remote host, {host} standing for the host
                         ['ssh -o BatchMode=yes {host}']; 'ip netns exec {host}' runs ranks in
                         network namespaces. The rank's environment goes on the remote
                         rankrun's stdin, never on a command line.
  --tag-output           prefix every output line with [rank]
  --timeout SECS         stop the job when it runs longer than this (exit status 124)
  --grace SECS           after SIGTERM, how long ranks have before SIGKILL                 [3]
  --linger SECS          after a rank fails, how long the others may take to end on their
                         own (usually with an error naming the failed peer) before SIGTERM  [1]
  -x VAR[=VALUE]         set VAR for every rank (without a value: rankrun's own value)
  --root IP[:PORT]       where rankrun serves the job's store (default: 127.0.0.1 when every
                         rank is local, else the interface OXCCL_SOCKET_IFNAME picks)
  --launch-agent PATH    rankrun's path on remote hosts [this rankrun's own path]
Every rank gets OXCCL_RANK, OXCCL_WORLD_SIZE, OXCCL_LOCAL_RANK, OXCCL_LOCAL_SIZE, OXCCL_ROOT,
OXCCL_JOB_SECRET and torchrun's RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR,
MASTER_PORT (a free port for the program's own use). Remote ranks also get every OXCCL_*
variable of rankrun's environment. Stdin is not forwarded; SIGINT and SIGTERM are.
Exit status: 0 when every rank exits 0; else the first failed rank's status (128+N for a
signal N), 124 after --timeout, 128+N when rankrun got signal N, 2 for usage errors.";

fn secs(flag: &str, v: &str) -> Result<Duration, String> {
    match v.parse::<f64>() {
        Ok(s) if s >= 0.0 && s.is_finite() && s < 1e9 => Ok(Duration::from_secs_f64(s)),
        _ => Err(format!("{flag}: '{v}' is not a number of seconds")),
    }
}

/// Parses `argv` (without the program name). `Err("")` asks for the usage text.
pub fn parse(argv: &[String]) -> Result<Args, String> {
    let mut a = Args {
        np: None,
        hosts: None,
        map_by: MapBy::Slot,
        rsh: "ssh -o BatchMode=yes {host}".into(),
        tag_output: false,
        timeout: None,
        grace: Duration::from_secs(3),
        linger: Duration::from_secs(1),
        exports: Vec::new(),
        root: None,
        launch_agent: None,
        program: Vec::new(),
    };
    let mut i = 0;
    while i < argv.len() {
        let arg = argv[i].as_str();
        i += 1;
        if arg == "--" {
            a.program = argv[i..].to_vec();
            break;
        }
        if !arg.starts_with('-') || arg == "-" {
            a.program = argv[i - 1..].to_vec();
            break;
        }
        // `--flag=value` and `--flag value` both work for options that take a value.
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (arg, None),
        };
        let mut value = || -> Result<String, String> {
            if let Some(v) = inline.clone() {
                return Ok(v);
            }
            let v = argv
                .get(i)
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value"))?;
            i += 1;
            Ok(v)
        };
        match flag {
            "-h" | "--help" => return Err(String::new()),
            "-n" | "-np" | "--np" => {
                let v = value()?;
                let n: usize = v
                    .parse()
                    .map_err(|_| format!("{flag}: '{v}' is not a number of ranks"))?;
                if n == 0 {
                    return Err(format!("{flag} must be at least 1"));
                }
                a.np = Some(n);
            }
            "-H" | "--hosts" | "--host" => a.hosts = Some(value()?),
            "--map-by" => {
                a.map_by = match value()?.as_str() {
                    "slot" => MapBy::Slot,
                    "node" => MapBy::Node,
                    v => return Err(format!("--map-by: '{v}' is not slot or node")),
                }
            }
            "--rsh" => a.rsh = value()?,
            "--tag-output" => a.tag_output = true,
            "--timeout" => {
                let t = secs(flag, &value()?)?;
                if t.is_zero() {
                    return Err("--timeout must be positive".into());
                }
                a.timeout = Some(t);
            }
            "--grace" => a.grace = secs(flag, &value()?)?,
            "--linger" => a.linger = secs(flag, &value()?)?,
            "-x" => {
                let v = value()?;
                let (name, val) = match v.split_once('=') {
                    Some((n, val)) => (n.to_string(), Some(val.to_string())),
                    None => (v.clone(), None),
                };
                let ok = !name.is_empty()
                    && !name.starts_with(|c: char| c.is_ascii_digit())
                    && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                if !ok {
                    return Err(format!("-x: '{name}' is not a variable name"));
                }
                a.exports.push((name, val));
            }
            "--root" => a.root = Some(value()?),
            "--launch-agent" => a.launch_agent = Some(value()?),
            _ => return Err(format!("unknown option '{arg}'")),
        }
    }
    if a.program.is_empty() {
        return Err("no program to run".into());
    }
    if a.np.is_none() && a.hosts.is_none() {
        return Err("give -n N (or --hosts, whose slots then set the number of ranks)".into());
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Args, String> {
        let v: Vec<String> = s.split_whitespace().map(String::from).collect();
        parse(&v)
    }

    #[test]
    fn options_and_program() {
        let a = p("-n 4 --tag-output -x A -x B=1 --timeout=2.5 prog --flag x").unwrap();
        assert_eq!(a.np, Some(4));
        assert!(a.tag_output);
        assert_eq!(
            a.exports,
            vec![("A".into(), None), ("B".into(), Some("1".into()))]
        );
        assert_eq!(a.timeout, Some(Duration::from_millis(2500)));
        assert_eq!(a.program, ["prog", "--flag", "x"]);
        let a = p("--hosts a:2,b --map-by node -- -weird").unwrap();
        assert_eq!(a.np, None);
        assert_eq!(a.map_by, MapBy::Node);
        assert_eq!(a.program, ["-weird"]);
    }

    #[test]
    fn mistakes_are_named() {
        for (argv, want) in [
            ("prog", "give -n"),
            ("-n 2", "no program"),
            ("-n x prog", "'x' is not a number"),
            ("-n 0 prog", "at least 1"),
            ("-n 2 --map-by core prog", "--map-by"),
            ("-n 2 --timeout -1 prog", "--timeout"),
            ("-n 2 --timeout 0 prog", "--timeout"),
            ("-n 2 -x 1A prog", "-x"),
            ("-n 2 --bogus prog", "unknown option '--bogus'"),
            ("-n", "-n needs a value"),
        ] {
            let e = p(argv).unwrap_err();
            assert!(e.contains(want), "{argv}: {e}");
        }
        assert_eq!(p("--help").unwrap_err(), "");
    }
}
