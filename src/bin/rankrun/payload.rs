//! What rankrun sends a remote agent on its stdin: the rank's program, arguments, working
//! directory and environment (the job secret among them), so that none of it appears on a
//! command line that `ps` shows on either host.
//!
//! Text lines, every string hex-encoded so that any byte is safe:
//!
//! ```text
//! oxccl-rankrun-agent 1
//! grace <milliseconds>
//! cwd <hex>
//! env <hex name> <hex value>      (any number)
//! arg <hex>                       (the program, then its arguments)
//! end
//! ```
//!
//! After `end` rankrun keeps the pipe open: its closing tells the agent to stop the rank.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::time::Duration;

const HEADER: &str = "oxccl-rankrun-agent 1";
/// Most bytes a payload may have: it must fit a pipe's buffer so that writing it never
/// blocks rankrun.
pub const MAX_BYTES: usize = 60 << 10;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    pub grace: Duration,
    pub cwd: OsString,
    pub env: Vec<(OsString, OsString)>,
    pub argv: Vec<OsString>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

impl Payload {
    pub fn encode(&self) -> String {
        let mut s = format!("{HEADER}\ngrace {}\n", self.grace.as_millis());
        s += &format!("cwd {}\n", hex(self.cwd.as_bytes()));
        for (k, v) in &self.env {
            s += &format!("env {} {}\n", hex(k.as_bytes()), hex(v.as_bytes()));
        }
        for a in &self.argv {
            s += &format!("arg {}\n", hex(a.as_bytes()));
        }
        s + "end\n"
    }

    /// Parses the lines up to and including `end`.
    pub fn decode(text: &str) -> Result<Payload, String> {
        let mut lines = text.lines();
        if lines.next() != Some(HEADER) {
            return Err(format!(
                "expected '{HEADER}' first: is this agent's rankrun the same version as the \
                 launching one?"
            ));
        }
        let mut p = Payload {
            grace: Duration::from_secs(3),
            cwd: OsString::new(),
            env: Vec::new(),
            argv: Vec::new(),
        };
        let os = |h: &str| {
            unhex(h)
                .map(OsString::from_vec)
                .ok_or(format!("bad hex '{h}'"))
        };
        for line in lines {
            let mut w = line.split(' ');
            match (w.next(), w.next(), w.next()) {
                (Some("end"), None, None) => {
                    if p.argv.is_empty() {
                        return Err("no program".into());
                    }
                    return Ok(p);
                }
                (Some("grace"), Some(ms), None) => {
                    let ms: u64 = ms.parse().map_err(|_| format!("bad grace '{ms}'"))?;
                    // A deadline this far out would overflow the clock.
                    if ms > MAX_GRACE_MS {
                        return Err(format!("grace {ms} ms exceeds {MAX_GRACE_MS} ms"));
                    }
                    p.grace = Duration::from_millis(ms);
                }
                (Some("cwd"), Some(h), None) => p.cwd = os(h)?,
                (Some("env"), Some(k), Some(v)) => p.env.push((os(k)?, os(v)?)),
                (Some("arg"), Some(h), None) => p.argv.push(os(h)?),
                _ => return Err(format!("unexpected line '{line}'")),
            }
        }
        Err("the payload ended before 'end'".into())
    }
}

/// The longest grace period a payload may ask for (a day).
const MAX_GRACE_MS: u64 = 86_400_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fuzz_payloads_decode_or_refuse_and_round_trip() {
        let p = Payload {
            grace: Duration::from_millis(1500),
            cwd: "/tmp".into(),
            env: vec![("A".into(), "b c".into())],
            argv: vec!["prog".into(), "x".into()],
        };
        let valid = p.encode().into_bytes();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut rnd = |n: usize| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n.max(1) as u64) as usize
        };
        for _ in 0..20_000 {
            let mut b = valid.clone();
            for _ in 0..1 + rnd(3) {
                if b.is_empty() {
                    break;
                }
                let at = rnd(b.len());
                match rnd(3) {
                    0 => b[at] = [b'\n', b' ', b'9', 0xff, b'-'][rnd(5)],
                    1 => b.truncate(at),
                    _ => b
                        .splice(at..at, b"18446744073709551615".iter().copied())
                        .for_each(drop),
                }
            }
            if let Ok(d) = Payload::decode(&String::from_utf8_lossy(&b)) {
                assert!(d.grace <= Duration::from_millis(MAX_GRACE_MS));
                assert_eq!(Payload::decode(&d.encode()).unwrap(), d);
            }
        }
        let huge = valid_with_grace(u64::MAX);
        assert!(Payload::decode(&huge).unwrap_err().contains("exceeds"));
    }

    fn valid_with_grace(ms: u64) -> String {
        let p = Payload {
            grace: Duration::ZERO,
            cwd: "/".into(),
            env: vec![],
            argv: vec!["p".into()],
        };
        p.encode().replacen("grace 0", &format!("grace {ms}"), 1)
    }

    #[test]
    fn round_trip_any_bytes() {
        let p = Payload {
            grace: Duration::from_millis(1500),
            cwd: "/tmp/a b".into(),
            env: vec![
                ("OXCCL_JOB_SECRET".into(), "00ff".into()),
                ("X".into(), OsString::from_vec(vec![b'\n', 0xff, b' '])),
            ],
            argv: vec!["prog".into(), "".into(), "a\nb".into()],
        };
        let text = p.encode();
        assert!(!text.contains("OXCCL_JOB_SECRET"));
        assert_eq!(Payload::decode(&text).unwrap(), p);
    }

    #[test]
    fn bad_payloads() {
        assert!(Payload::decode("hello\n").unwrap_err().contains("version"));
        let ok = Payload {
            grace: Duration::ZERO,
            cwd: "/".into(),
            env: vec![],
            argv: vec!["p".into()],
        }
        .encode();
        assert!(Payload::decode(&ok.replace("end\n", "")).is_err());
        assert!(Payload::decode(&ok.replace("arg 70", "arg 7")).is_err());
        assert!(Payload::decode(&ok.replace("arg 70\n", "")).is_err());
    }
}
