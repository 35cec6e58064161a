//! Drawing: one panel per (op, rank count), rows by op and columns by rank count; in each,
//! busbw against size on log-log axes, a line per configuration (the same colour in every
//! panel), and the physical references as horizontal lines.

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::data::{References, Series};

/// The order ops are drawn in (others follow, by name).
const OP_ORDER: &[&str] = &[
    "allreduce",
    "allgather",
    "broadcast",
    "reduce_scatter",
    "alltoall",
];

/// Pixels of one panel.
pub const PANEL: (u32, u32) = (520, 380);

/// The ops and rank counts present, in drawing order.
pub fn grid(series: &Series) -> (Vec<String>, Vec<u32>) {
    let mut ops: Vec<String> = series.keys().map(|(op, _)| op.clone()).collect();
    ops.sort_by_key(|o| {
        let rank = OP_ORDER
            .iter()
            .position(|x| x == o)
            .unwrap_or(OP_ORDER.len());
        (rank, o.clone())
    });
    ops.dedup();
    let mut nps: Vec<u32> = series.keys().map(|&(_, np)| np).collect();
    nps.sort_unstable();
    nps.dedup();
    (ops, nps)
}

/// "8 B", "64 KiB", "16 MiB".
fn human_bytes(b: f64) -> String {
    let units = ["B", "KiB", "MiB", "GiB"];
    let mut v = b;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{} {}", (v * 10.0).round() / 10.0, units[u])
}

/// A range around `lo..hi` (both positive) that a log axis can show with some room.
fn padded(lo: f64, hi: f64) -> std::ops::Range<f64> {
    (lo / 1.6)..(hi * 1.6)
}

fn err<E: std::fmt::Display>(e: E) -> String {
    format!("drawing: {e}")
}

/// Draws `series` (with `refs`) on `root`, titled `title`.
pub fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    series: &Series,
    refs: &References,
    title: &str,
) -> Result<(), String> {
    root.fill(&WHITE).map_err(err)?;
    let body = root.titled(title, ("sans-serif", 26)).map_err(err)?;
    let (ops, nps) = grid(series);
    let mut configs: Vec<&String> = series.values().flat_map(|c| c.keys()).collect();
    configs.sort();
    configs.dedup();
    let color = |cfg: &str| {
        let i = configs.iter().position(|c| *c == cfg).unwrap_or(0);
        Palette99::pick(i).to_rgba()
    };
    let lines: Vec<(String, f64, RGBAColor)> = [
        (refs.memcpy, "memcpy, 1 thread", RGBColor(120, 120, 120)),
        (
            refs.loopback,
            "one loopback TCP stream",
            RGBColor(190, 120, 40),
        ),
    ]
    .into_iter()
    .filter_map(|(v, name, c)| v.map(|v| (format!("{name}: {v:.2} GB/s"), v, c.to_rgba())))
    .collect();
    let areas = body.split_evenly((ops.len(), nps.len()));
    for (i, area) in areas.iter().enumerate() {
        let (op, np) = (&ops[i / nps.len()], nps[i % nps.len()]);
        let Some(panel) = series.get(&(op.clone(), np)) else {
            continue;
        };
        let pts = panel.values().flatten();
        // Ticks at the measured sizes (powers of two), not at powers of ten.
        let mut ticks: Vec<f64> = pts.clone().map(|p| p.bytes as f64).collect();
        ticks.sort_by(f64::total_cmp);
        ticks.dedup();
        let xs = pts.clone().map(|p| p.bytes as f64);
        let (x0, x1) = xs.fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(x), b.max(x)));
        let ys = pts.map(|p| p.busbw).chain(lines.iter().map(|l| l.1));
        let (y0, y1) = ys.fold((f64::MAX, f64::MIN), |(a, b), y| (a.min(y), b.max(y)));
        let mut chart = ChartBuilder::on(area)
            .caption(format!("{op}, {np} ranks"), ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(
                padded(x0, x1).log_scale().with_key_points(ticks),
                padded(y0, y1).log_scale(),
            )
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("message size")
            .y_desc("busbw (GB/s)")
            .x_label_formatter(&|x| human_bytes(*x))
            .y_label_formatter(&|y| format!("{y}"))
            .draw()
            .map_err(err)?;
        for (name, v, c) in &lines {
            let c = *c;
            chart
                .draw_series(DashedLineSeries::new(
                    [(x0 / 1.6, *v), (x1 * 1.6, *v)],
                    6,
                    4,
                    c.stroke_width(2),
                ))
                .map_err(err)?
                .label(name.as_str())
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], c.stroke_width(2)));
        }
        for (cfg, pts) in panel {
            let c = color(cfg);
            let xy: Vec<(f64, f64)> = pts.iter().map(|p| (p.bytes as f64, p.busbw)).collect();
            chart
                .draw_series(LineSeries::new(xy.iter().copied(), c.stroke_width(2)))
                .map_err(err)?
                .label(cfg.as_str())
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], c.stroke_width(3)));
            chart
                .draw_series(xy.iter().map(|&p| Circle::new(p, 3, c.filled())))
                .map_err(err)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 13))
            .draw()
            .map_err(err)?;
    }
    root.present().map_err(err)
}
