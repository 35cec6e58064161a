//! Logs in the shape NCCL users know (`NCCL_DEBUG`, `NCCL_DEBUG_SUBSYS`, `NCCL_DEBUG_FILE`),
//! through `tracing`:
//!
//! * `OXCCL_DEBUG=WARN|INFO|TRACE` (also `VERSION`, which prints the version line only):
//!   unset, nothing is installed and every log statement costs one relaxed load;
//! * `OXCCL_DEBUG_SUBSYS=INIT,BOOTSTRAP,NET,COLL,TOPO,...` (default `ALL`; a leading `^`
//!   excludes the listed subsystems, as NCCL's does);
//! * `OXCCL_DEBUG_FILE=path` with `%h` (host name) and `%p` (pid) expanded; standard error
//!   otherwise.
//!
//! Events carry the target `oxccl::<SUBSYS>`. A program that installed its own `tracing`
//! subscriber gets them there, filtered by its own rules, and oxccl installs nothing.

use std::fmt;
use std::fs::File;
use std::io::{self, Write};
use std::sync::{Mutex, OnceLock};

use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::layer::{Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

#[cfg(test)]
mod tests;

/// The subsystems `OXCCL_DEBUG_SUBSYS` names (targets `oxccl::<name>`).
pub const SUBSYSTEMS: [&str; 6] = ["INIT", "BOOTSTRAP", "NET", "COLL", "TOPO", "ENV"];

/// What `OXCCL_DEBUG` and `OXCCL_DEBUG_SUBSYS` ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Most verbose level logged.
    pub level: Level,
    /// Subsystems logged (upper case).
    pub subsystems: Vec<String>,
    /// Where to write; `None`: standard error.
    pub file: Option<String>,
}

impl Settings {
    /// The settings the variables ask for, `Ok(None)` when `OXCCL_DEBUG` is unset, or an
    /// error naming the variable and the values it takes.
    pub fn parse(
        debug: Option<&str>,
        subsys: Option<&str>,
        file: Option<&str>,
    ) -> Result<Option<Settings>, String> {
        let Some(d) = debug.map(str::trim).filter(|d| !d.is_empty()) else {
            return Ok(None);
        };
        let level = match d.to_ascii_uppercase().as_str() {
            "VERSION" | "WARN" => Level::WARN,
            "INFO" => Level::INFO,
            "TRACE" => Level::TRACE,
            _ => {
                return Err(format!(
                    "OXCCL_DEBUG='{d}' is not a level (WARN, INFO, TRACE or VERSION)"
                ))
            }
        };
        let subsystems = parse_subsys(subsys.unwrap_or("ALL"))?;
        let file = file
            .map(str::trim)
            .filter(|f| !f.is_empty())
            .map(|f| expand(f, &host_name(), std::process::id()));
        Ok(Some(Settings {
            level,
            subsystems,
            file,
        }))
    }

    /// Whether an event at `level` with `target` is logged.
    pub fn wants(&self, level: &Level, target: &str) -> bool {
        if *level > self.level {
            return false;
        }
        match target.strip_prefix("oxccl::") {
            Some(sub) => self.subsystems.iter().any(|s| s == sub),
            None => target.starts_with("oxccl"),
        }
    }
}

fn parse_subsys(v: &str) -> Result<Vec<String>, String> {
    let v = v.trim();
    let (exclude, list) = match v.strip_prefix('^') {
        Some(rest) => (true, rest),
        None => (false, v),
    };
    let mut named = Vec::new();
    for s in list.split(',').map(|s| s.trim().to_ascii_uppercase()) {
        if s.is_empty() {
            continue;
        }
        if s == "ALL" {
            named.extend(SUBSYSTEMS.iter().map(|s| s.to_string()));
        } else if SUBSYSTEMS.contains(&s.as_str()) {
            named.push(s);
        } else {
            return Err(format!(
                "OXCCL_DEBUG_SUBSYS names '{s}', which is not a subsystem ({}, ALL; ^ excludes)",
                SUBSYSTEMS.join(", ")
            ));
        }
    }
    Ok(if exclude {
        SUBSYSTEMS
            .iter()
            .filter(|s| !named.iter().any(|n| n == *s))
            .map(|s| s.to_string())
            .collect()
    } else {
        named
    })
}

/// `path` with `%h` replaced by `host` and `%p` by `pid` (`%%` is a `%`).
pub fn expand(path: &str, host: &str, pid: u32) -> String {
    let mut out = String::with_capacity(path.len());
    let mut it = path.chars();
    while let Some(c) = it.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('h') => out.push_str(host),
            Some('p') => out.push_str(&pid.to_string()),
            Some('%') => out.push('%'),
            Some(o) => {
                out.push('%');
                out.push(o);
            }
            None => out.push('%'),
        }
    }
    out
}

/// This machine's host name ("localhost" if it cannot be read).
pub fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is writable for its length; gethostname NUL-terminates within it or
    // fails.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    if rc != 0 || end == 0 {
        return "localhost".into();
    }
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Installs the logger `OXCCL_DEBUG` asks for, once per process (later calls do nothing).
/// A bad value is reported on standard error once and logging stays off: a debugging aid
/// must not stop a job. Returns whether oxccl's logger is installed.
pub fn init_from_env() -> bool {
    static DONE: OnceLock<bool> = OnceLock::new();
    *DONE.get_or_init(|| {
        let var = |n: &str| std::env::var(n).ok();
        let s = match Settings::parse(
            var("OXCCL_DEBUG").as_deref(),
            var("OXCCL_DEBUG_SUBSYS").as_deref(),
            var("OXCCL_DEBUG_FILE").as_deref(),
        ) {
            Ok(Some(s)) => s,
            Ok(None) => return false,
            Err(e) => {
                eprintln!("oxccl: {e}; logging stays off");
                return false;
            }
        };
        install(s)
    })
}

fn install(s: Settings) -> bool {
    let out: Box<dyn Write + Send> = match &s.file {
        None => Box::new(io::stderr()),
        Some(path) => match File::create(path) {
            Ok(f) => Box::new(f),
            Err(e) => {
                eprintln!(
                    "oxccl: OXCCL_DEBUG_FILE: cannot create '{path}': {e}; logging to stderr"
                );
                Box::new(io::stderr())
            }
        },
    };
    let level = s.level;
    let layer = tracing_subscriber::fmt::layer()
        .event_format(Line { host: host_name() })
        .with_writer(Sink(std::sync::Arc::new(Mutex::new(out))))
        .with_filter(
            filter_fn(move |m: &Metadata<'_>| s.wants(m.level(), m.target()))
                .with_max_level_hint(level),
        );
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer)).is_ok()
}

/// One line per event: `host:pid:tid oxccl LEVEL SUBSYS message`, as NCCL's
/// `host:pid:tid NCCL INFO ...`.
struct Line {
    host: String,
}

impl<S, N> FormatEvent<S, N> for Line
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let m = event.metadata();
        let sub = m.target().strip_prefix("oxccl::").unwrap_or(m.target());
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::syscall(libc::SYS_gettid) };
        write!(
            w,
            "{}:{}:{} oxccl {} {} ",
            self.host,
            std::process::id(),
            tid,
            m.level(),
            sub
        )?;
        ctx.field_format().format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

/// The shared output, one whole line per write.
#[derive(Clone)]
struct Sink(std::sync::Arc<Mutex<Box<dyn Write + Send>>>);

impl Write for Sink {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let mut w = self.0.lock().unwrap_or_else(|p| p.into_inner());
        w.write_all(b)?;
        w.flush()?;
        Ok(b.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Sink {
    type Writer = Sink;
    fn make_writer(&'a self) -> Sink {
        self.clone()
    }
}
