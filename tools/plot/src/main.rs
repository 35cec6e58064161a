//! oxccl-plot: draws the peers suite's results (`../shared/peers/run-all.sh`) as busbw
//! against message size, log-log, one panel per op and rank count, one line per
//! configuration (oxccl and each peer), with the run's physical references (one thread's
//! memcpy, one loopback TCP stream) as horizontal lines.
//!
//!     oxccl-plot [RESULTS] -o FIGURE.png|FIGURE.svg [--ops a,b] [--nps 2,4] [--title T]
//!
//! RESULTS is a results folder of the suite (default /tmp/baselines/results/latest) or its
//! `medians.csv`. The output's extension picks PNG or SVG. Text needs a TrueType font:
//! `OXCCL_PLOT_FONT`, else DejaVu Sans where Debian's fonts-dejavu-core puts it.

mod data;
mod draw;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use plotters::prelude::*;

/// What to draw, from the command line.
#[derive(Debug, PartialEq)]
struct Args {
    results: PathBuf,
    out: PathBuf,
    ops: Option<Vec<String>>,
    nps: Option<Vec<u32>>,
    title: String,
}

const USAGE: &str = "usage: oxccl-plot [RESULTS] -o FIGURE.png|FIGURE.svg [--ops a,b] [--nps 2,4] \
                     [--title T]";

fn parse(argv: &[String]) -> Result<Args, String> {
    let mut results = None;
    let mut out = None;
    let mut ops = None;
    let mut nps = None;
    let mut title = "busbw against message size (GB/s, log-log)".to_string();
    let mut it = argv.iter();
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or(format!("{a} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "-o" | "--output" => out = Some(PathBuf::from(value()?)),
            "--ops" => ops = Some(value()?.split(',').map(str::to_string).collect()),
            "--nps" => {
                let v = value()?;
                let list: Result<Vec<u32>, _> = v.split(',').map(str::parse).collect();
                nps = Some(list.map_err(|_| format!("--nps: '{v}' is not a list of numbers"))?);
            }
            "--title" => title = value()?,
            "-h" | "--help" => return Err(USAGE.to_string()),
            s if s.starts_with('-') => return Err(format!("unknown option '{s}'\n{USAGE}")),
            s if results.is_none() => results = Some(PathBuf::from(s)),
            s => return Err(format!("unexpected argument '{s}'\n{USAGE}")),
        }
    }
    let out = out.ok_or(format!("no output file (-o)\n{USAGE}"))?;
    Ok(Args {
        results: results.unwrap_or_else(|| PathBuf::from("/tmp/baselines/results/latest")),
        out,
        ops,
        nps,
        title,
    })
}

/// Where a TrueType font is looked for, after `OXCCL_PLOT_FONT`.
const FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

/// Registers the font plotters measures and draws text with.
fn register_font() -> Result<(), String> {
    let from_env = std::env::var("OXCCL_PLOT_FONT").ok();
    let path = from_env
        .iter()
        .map(String::as_str)
        .chain(FONTS.iter().copied())
        .find(|p| Path::new(p).is_file())
        .ok_or("no TrueType font found: install fonts-dejavu-core or set OXCCL_PLOT_FONT")?;
    let bytes = std::fs::read(path).map_err(|e| format!("reading the font {path}: {e}"))?;
    // Plotters keeps registered fonts for the whole run.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| format!("{path} is not a font plotters can read"))
}

fn run(a: &Args) -> Result<String, String> {
    let (mut series, refs) = data::load(&a.results)?;
    series.retain(|(op, np), _| {
        a.ops.as_ref().map_or(true, |o| o.contains(op))
            && a.nps.as_ref().map_or(true, |n| n.contains(np))
    });
    if series.is_empty() {
        return Err("no points left after --ops/--nps".into());
    }
    register_font()?;
    let (ops, nps) = draw::grid(&series);
    let size = (
        draw::PANEL.0 * nps.len() as u32,
        draw::PANEL.1 * ops.len() as u32 + 40,
    );
    let ext = a.out.extension().and_then(|e| e.to_str()).unwrap_or("");
    match ext {
        "png" => {
            let root = BitMapBackend::new(&a.out, size).into_drawing_area();
            draw::draw(&root, &series, &refs, &a.title)?;
        }
        "svg" => {
            let root = SVGBackend::new(&a.out, size).into_drawing_area();
            draw::draw(&root, &series, &refs, &a.title)?;
        }
        _ => {
            return Err(format!(
                "{}: the output must end in .png or .svg",
                a.out.display()
            ))
        }
    }
    Ok(format!(
        "{}: {} panels ({} ops x {} rank counts), {}x{} px",
        a.out.display(),
        series.len(),
        ops.len(),
        nps.len(),
        size.0,
        size.1
    ))
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    match parse(&argv).and_then(|a| run(&a)) {
        Ok(said) => {
            println!("oxccl-plot: {said}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("oxccl-plot: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Result<Args, String> {
        parse(&s.iter().map(|x| x.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn arguments() {
        let a = args(&[
            "r",
            "-o",
            "f.svg",
            "--ops",
            "allreduce,alltoall",
            "--nps",
            "2,4",
        ])
        .unwrap();
        assert_eq!(a.results, PathBuf::from("r"));
        assert_eq!(a.ops.unwrap(), ["allreduce", "alltoall"]);
        assert_eq!(a.nps.unwrap(), [2, 4]);
        assert!(args(&["r"]).unwrap_err().contains("no output file"));
        assert!(args(&["-o", "x.png", "--nps", "two"])
            .unwrap_err()
            .contains("'two'"));
        assert!(args(&["-o", "x.png", "--bogus"])
            .unwrap_err()
            .contains("'--bogus'"));
    }

    /// Draws a small results folder into PNG and SVG: real files of the right kind.
    #[test]
    fn draws_png_and_svg() {
        let dir = std::env::temp_dir().join(format!("oxccl-plot-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut csv = String::from(
            "config,np,op,bytes,reps,lat_us_median,lat_us_min,lat_us_max,algbw_GBps_median,\
             busbw_GBps_median,check,p50_us_median\n",
        );
        for (cfg, k) in [("ompi-tcp", 1.0), ("oxccl-tcp", 1.3)] {
            for np in [2, 4] {
                for op in ["allreduce", "alltoall"] {
                    for (i, b) in [8u64, 65536, 1 << 20, 1 << 26].iter().enumerate() {
                        let bw = k * 0.001 * 10f64.powi(i as i32);
                        csv += &format!("{cfg},{np},{op},{b},3,1,1,1,{bw},{bw},ok,1\n");
                    }
                }
            }
        }
        std::fs::write(dir.join("medians.csv"), csv).unwrap();
        std::fs::write(dir.join("memcpy.csv"), "1,memcpy,67108864,282,18.8,20.5\n").unwrap();
        std::fs::write(dir.join("iperf.csv"), "1,27.9,28.0,56\n").unwrap();
        if register_font().is_err() {
            assert!(std::env::var_os("CI").is_none(), "CI installs a font");
            eprintln!("skipping: no font");
            return;
        }
        for ext in ["png", "svg"] {
            let out = dir.join(format!("fig.{ext}"));
            let a = Args {
                results: dir.clone(),
                out: out.clone(),
                ops: None,
                nps: None,
                title: "test".into(),
            };
            let said = run(&a).unwrap();
            assert!(said.contains("4 panels (2 ops x 2 rank counts)"), "{said}");
            let bytes = std::fs::read(&out).unwrap();
            if ext == "png" {
                assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
                assert!(bytes.len() > 20_000, "{} bytes", bytes.len());
            } else {
                let text = String::from_utf8(bytes).unwrap();
                for needle in [
                    "oxccl-tcp",
                    "ompi-tcp",
                    "alltoall, 4 ranks",
                    "memcpy, 1 thread",
                ] {
                    assert!(text.contains(needle), "the SVG lacks '{needle}'");
                }
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
