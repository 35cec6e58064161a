//! The printed plan, rendered into a string.

use std::fmt::Write as _;

use oxccl::algo::Algo;
use oxccl::topo::cost::{hier_traffic, ring_traffic, Traffic, ALLREDUCE_ALGOS};
use oxccl::topo::{CostModel, Mapping, Shape, Topology};

use crate::args::Args;

/// `writeln!` into a `String`, which cannot fail.
macro_rules! out {
    ($o:expr) => {
        $o.push('\n')
    };
    ($o:expr, $($t:tt)*) => {{
        let _ = writeln!($o, $($t)*);
    }};
}

/// `1.5 MiB`-style sizes.
pub fn human(b: f64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut x = b;
    let mut u = 0;
    while x >= 1024.0 && u + 1 < units.len() {
        x /= 1024.0;
        u += 1;
    }
    if x.fract() == 0.0 {
        format!("{x} {}", units[u])
    } else {
        format!("{x:.1} {}", units[u])
    }
}

/// Four significant digits at most.
fn round(x: f64) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let p = 10f64.powi(3 - x.abs().log10().floor() as i32);
    (x * p).round() / p
}

fn list(v: &[usize], show: usize) -> String {
    let mut s: Vec<String> = v.iter().take(show).map(|x| x.to_string()).collect();
    if v.len() > show {
        s.push(format!("... ({} more)", v.len() - show));
    }
    s.join(" ")
}

/// The ring with `|` where it crosses to another host.
fn ring_line(t: &Topology, ring: &[usize], show: usize) -> String {
    let mut out = String::new();
    for (i, &r) in ring.iter().take(show).enumerate() {
        if i > 0 {
            let prev = ring[i - 1];
            out += if t.ranks[prev].host != t.ranks[r].host {
                " | "
            } else {
                " "
            };
        }
        out += &r.to_string();
    }
    if ring.len() > show {
        out += &format!(" ... ({} more)", ring.len() - show);
    }
    out
}

fn times(model: &CostModel, bytes: f64) -> Vec<f64> {
    ALLREDUCE_ALGOS
        .iter()
        .map(|&a| model.allreduce(a, bytes))
        .collect()
}

fn us(t: f64) -> String {
    if t >= 1e5 * 1e-6 {
        format!("{:.0}", t * 1e6)
    } else {
        format!("{:.1}", t * 1e6)
    }
}

pub fn render(t: &Topology, m: &Mapping, model: &CostModel, plain: &CostModel, a: &Args) -> String {
    let mut o = String::new();
    let o = &mut o;
    let by_host = t.ranks_by_host();
    let (lo, hi) = by_host.iter().fold((usize::MAX, 0), |(lo, hi), h| {
        (lo.min(h.len()), hi.max(h.len()))
    });
    let rails = t.hosts.iter().map(|h| h.nics.len()).max().unwrap_or(0);
    let rdma: usize = t.hosts.iter().map(|h| h.rdma.len()).sum();
    let l = &t.links;
    out!(
        o,
        "# oxccl-topo: {} ranks on {} hosts ({}{} ranks per host), {} NICs per host, {} RDMA ports",
        t.size(),
        t.hosts.len(),
        if lo == hi {
            String::new()
        } else {
            format!("{lo}..")
        },
        hi,
        rails,
        rdma
    );
    out!(
        o,
        "# links: inside a host {} Gb/s, {} us; between hosts {} Gb/s per rail, {} us; chunk {}",
        round(l.intra_gbps),
        round(l.intra_latency_us),
        round(l.inter_gbps),
        round(l.inter_latency_us),
        human(model.chunk_bytes as f64)
    );
    out!(
        o,
        "# mapping: {}",
        if m.aware {
            "on (topology-aware)"
        } else {
            "off (rank order)"
        }
    );
    out!(o);

    let s = m.ring_stats(t);
    let p = plain_stats(t);
    out!(o, "== ring");
    out!(o,
        "network crossings {} (minimum {}; rank order: {}), busiest host egress {} ring message(s) \
         (rank order: {}), rail changes at crossings {}, NUMA changes inside hosts {}",
        s.crossings, s.min_crossings, p.crossings, s.max_egress, p.max_egress, s.rail_changes, s.numa_changes
    );
    out!(o, "ring: {}", ring_line(t, &m.ring, a.show));
    out!(o);

    out!(o, "== hierarchical allreduce");
    let k = m.nleaders();
    out!(
        o,
        "{} host groups; {} leader group(s) (local rank k of every host{}), {} ranks each",
        m.hosts.len(),
        k,
        if model.shape.rails > 1 {
            ", one per rail"
        } else {
            ""
        },
        m.hosts.len()
    );
    for (h, g) in m.hosts.iter().enumerate().take(a.show.min(4)) {
        out!(o, "host group {h}: {}", list(g, a.show));
    }
    for j in 0..k.min(2) {
        out!(o, "leader group {j}: {}", list(&m.leaders(j), a.show));
    }
    let [t0, t1] = &m.trees;
    let both = (0..t0.len())
        .filter(|&i| !t0.children[i].is_empty() && !t1.children[i].is_empty())
        .count();
    out!(o,
        "double binary trees over {} hosts: roots {} and {}, depths {} and {}, hosts inner in both: {}",
        t0.len(),
        t0.root,
        t1.root,
        t0.depth(),
        t1.depth(),
        both
    );
    if t0.len() <= a.show {
        let fmt = |tr: &oxccl::topo::tree::BinTree| {
            tr.parent
                .iter()
                .map(|p| p.map_or("-".into(), |x| x.to_string()))
                .collect::<Vec<_>>()
                .join(" ")
        };
        out!(o, "tree 0 parents: {}", fmt(t0));
        out!(o, "tree 1 parents: {}", fmt(t1));
    }
    out!(o);

    traffic_table(o, &model.shape, &plain.shape);
    prediction_table(o, model, plain, a);
    std::mem::take(o)
}

fn plain_stats(t: &Topology) -> oxccl::topo::ring::RingStats {
    let r: Vec<usize> = (0..t.size()).collect();
    oxccl::topo::ring::stats(t, &r)
}

fn traffic_table(o: &mut String, sh: &Shape, plain: &Shape) {
    let n = sh.n as f64;
    out!(o, "== traffic per collective of S bytes, in units of S");
    out!(
        o,
        "{:<28} {:>14} {:>14} {:>15}",
        "collective / algorithm",
        "busiest intra",
        "busiest NIC",
        "network total"
    );
    let mut row = |name: &str, tr: Traffic| {
        out!(
            o,
            "{:<28} {:>14.3} {:>14.3} {:>15.1}",
            name,
            tr.intra_link,
            tr.nic_egress,
            tr.network
        );
    };
    let ar = 2.0 * (n - 1.0) / n.max(1.0);
    let ag = (n - 1.0) / n.max(1.0);
    row("allreduce ring", ring_traffic(sh, 1.0, ar));
    row("allreduce ring, rank order", ring_traffic(plain, 1.0, ar));
    if sh.grouped {
        row("allreduce hier / hier-tree", hier_traffic(sh, 1.0));
    }
    row("allgather ring (S gathered)", ring_traffic(sh, 1.0, ag));
    row("reduce-scatter ring (S in)", ring_traffic(sh, 1.0, ag));
    row("broadcast chain", ring_traffic(sh, 1.0, 1.0));
    out!(o);
}

fn prediction_table(o: &mut String, model: &CostModel, plain: &CostModel, a: &Args) {
    out!(o, "== predicted allreduce time (us)");
    let mut head = format!("{:>10}", "size");
    for alg in ALLREDUCE_ALGOS {
        head += &format!(" {:>11}", alg.name());
    }
    head += &format!(" {:>11} {:>10}", "ring/plain", "best");
    out!(o, "{head}");
    let mut bytes = a.min_bytes as f64;
    let mut changes: Vec<(f64, Algo)> = Vec::new();
    let mut last = bytes;
    while bytes <= a.max_bytes as f64 {
        last = bytes;
        let ts = times(model, bytes);
        let (best, _) = model.best(&ALLREDUCE_ALGOS, bytes);
        if changes.last().map_or(true, |c| c.1 != best) {
            changes.push((bytes, best));
        }
        let mut line = format!("{:>10}", human(bytes));
        for t in ts {
            line += &format!(" {:>11}", us(t));
        }
        line += &format!(
            " {:>11} {:>10}",
            us(plain.allreduce(Algo::Ring, bytes)),
            best.name()
        );
        out!(o, "{line}");
        bytes *= a.factor as f64;
    }
    out!(o);
    let max = a.max_bytes as f64;
    for (a1, b1) in [
        (Algo::Tree, Algo::Ring),
        (Algo::HierTree, Algo::Hier),
        (Algo::HierTree, Algo::Ring),
    ] {
        let bands = model.faster_bands(a1, b1, max);
        let text = if bands.is_empty() {
            "never".to_string()
        } else {
            bands
                .iter()
                .map(|(lo, hi)| format!("{} to {}", human(*lo), human(*hi)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        out!(o, "{} faster than {}: {text}", b1.name(), a1.name());
    }
    let bands: Vec<String> = changes
        .iter()
        .map(|(b, alg)| format!("{} from {}", alg.name(), human(*b)))
        .collect();
    out!(o, "best by size: {}", bands.join(", "));
    let big = last;
    if model.shape.grouped {
        let on = model.allreduce(Algo::Ring, big);
        let off = plain.allreduce(Algo::Ring, big);
        let best_off = plain.best(&ALLREDUCE_ALGOS, big);
        out!(
            o,
            "mapping: at {} the topology-aware ring is predicted {:.2}x faster than rank \
             order's, the best algorithm {:.2}x faster than rank order's best ({})",
            human(big),
            off / on,
            best_off.1 / model.best(&ALLREDUCE_ALGOS, big).1,
            best_off.0.name()
        );
    }
}
