//! Reduction kernel throughput against `memcpy`.
//!
//! `cargo bench --bench reduce [-- SIZE]` (SIZE in bytes, with an optional K/M/G suffix for
//! KiB/MiB/GiB; default 64M). Each kernel runs once to warm up, then several times; the table
//! shows the median. "GB/s buf" is one input buffer's bytes over the time, "GB/s touched"
//! counts every byte read or written (3 buffers for a reduction, 2 for a copy), and the last
//! column compares that with `memcpy`'s. Two more rows copy 128 KiB to a destination 16 bytes
//! past the source modulo 4 KiB (where two `malloc` buffers often lie): with `memmove`, and
//! with `copy_bytes`, which the engine and the transports use.

use std::hint::black_box;
use std::time::{Duration, Instant};

use oxccl::reduce::{copy_bytes, reduce_into, reduce_to};
use oxccl::{Bf16, DataType, ReduceOp, F16};

const DEFAULT_SIZE: usize = 64 << 20;
const REPS: usize = 7;
/// Stop repeating a kernel after this long, so that slow kernels on big sizes still finish.
const TIME_PER_KERNEL: Duration = Duration::from_secs(2);
/// Shortest sample worth timing.
const MIN_SAMPLE: Duration = Duration::from_millis(2);

/// A size in bytes with an optional K/M/G suffix, as the `OXCCL_*` byte variables take.
fn parse_size(s: &str) -> Option<usize> {
    oxccl::config::parse_bytes("SIZE", s).ok()
}

/// Median time of one call of `f`, over up to [`REPS`] samples after a warm-up call. Small
/// sizes repeat `f` inside each sample so that one sample lasts about [`MIN_SAMPLE`].
fn median_time(mut f: impl FnMut()) -> Duration {
    let t = Instant::now();
    f();
    let once = t.elapsed().max(Duration::from_nanos(1));
    let inner = (MIN_SAMPLE.as_nanos() / once.as_nanos()).clamp(1, 1 << 20) as u32;
    let start = Instant::now();
    let mut times = Vec::with_capacity(REPS);
    while times.len() < REPS && (times.len() < 3 || start.elapsed() < TIME_PER_KERNEL) {
        let t = Instant::now();
        for _ in 0..inner {
            f();
        }
        times.push(t.elapsed() / inner);
    }
    times.sort();
    times[times.len() / 2]
}

/// `n` bytes of small finite values of `dtype`, in a buffer aligned for every element type.
fn filled(dtype: DataType, n: usize, seed: u32) -> Vec<u64> {
    let mut words = vec![0u64; n.div_ceil(8)];
    let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut words);
    let value = |i: usize| ((i as u32).wrapping_mul(2_654_435_761) ^ seed) % 1024;
    for (i, e) in bytes[..n].chunks_exact_mut(dtype.size()).enumerate() {
        let v = value(i);
        let f = v as f32 / 1024.0;
        match dtype {
            DataType::F32 => e.copy_from_slice(&f.to_ne_bytes()),
            DataType::F64 => e.copy_from_slice(&f64::from(f).to_ne_bytes()),
            DataType::F16 => e.copy_from_slice(&F16::from_f32(f).to_bits().to_ne_bytes()),
            DataType::Bf16 => e.copy_from_slice(&Bf16::from_f32(f).to_bits().to_ne_bytes()),
            DataType::I32 => e.copy_from_slice(&(v as i32 - 512).to_ne_bytes()),
            _ => e.fill(v as u8),
        }
    }
    words
}

/// The instruction sets the kernels pick from at run time.
fn cpu_features() -> String {
    #[cfg(target_arch = "x86_64")]
    return format!(
        "avx2={} f16c={}",
        is_x86_feature_detected!("avx2"),
        is_x86_feature_detected!("f16c")
    );
    #[cfg(not(target_arch = "x86_64"))]
    String::from("portable loops")
}

struct Row {
    name: String,
    secs: f64,
    buf_bytes: usize,
    touched_bytes: usize,
}

impl Row {
    fn gbps(&self) -> f64 {
        self.buf_bytes as f64 / self.secs / 1e9
    }
    fn touched_gbps(&self) -> f64 {
        self.touched_bytes as f64 / self.secs / 1e9
    }
}

/// Size of the aliased copies.
const ALIASED_BYTES: usize = 128 << 10;

/// `memmove` and `copy_bytes` of [`ALIASED_BYTES`] to a destination 16 bytes past the source
/// modulo 4 KiB.
fn aliased_copies() -> Vec<Row> {
    let n = ALIASED_BYTES;
    let mut buf = vec![1u8; 4 * n];
    let (from, to) = (64, 64 + 2 * n + 16);
    let mut row = |name: &str, copy: unsafe fn(*const u8, *mut u8, usize)| {
        let p = buf.as_mut_ptr();
        let secs = median_time(|| {
            // SAFETY: both ranges lie inside `buf` (`to + n < 4n`) and do not overlap.
            unsafe { copy(black_box(p.add(from)), black_box(p.add(to)), n) };
        })
        .as_secs_f64();
        Row {
            name: name.into(),
            secs,
            buf_bytes: n,
            touched_bytes: 2 * n,
        }
    };
    vec![
        row("memmove 128K +16 mod 4K", std::ptr::copy::<u8>),
        row("copy_bytes 128K +16", copy_bytes),
    ]
}

fn main() {
    let size = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .map(|a| {
            parse_size(&a).unwrap_or_else(|| {
                eprintln!("bad size '{a}' (examples: 65536, 16M, 1G)");
                std::process::exit(2)
            })
        })
        .unwrap_or(DEFAULT_SIZE);
    let size = size - size % 8;
    println!(
        "buffer size {size} bytes ({} KiB), median of up to {REPS} samples, {}",
        size >> 10,
        cpu_features()
    );

    let mut rows = Vec::new();
    let src = filled(DataType::U8, size, 1);
    let mut dst = filled(DataType::U8, size, 2);
    let secs = median_time(|| {
        let d: &mut [u8] = bytemuck::cast_slice_mut(&mut dst);
        d[..size].copy_from_slice(black_box(&bytemuck::cast_slice(&src)[..size]));
        black_box(&mut *d);
    })
    .as_secs_f64();
    rows.push(Row {
        name: "memcpy".into(),
        secs,
        buf_bytes: size,
        touched_bytes: 2 * size,
    });
    drop((src, dst));
    rows.extend(aliased_copies());

    let cases = [
        (DataType::F32, ReduceOp::Sum),
        (DataType::F32, ReduceOp::Max),
        (DataType::F64, ReduceOp::Sum),
        (DataType::I32, ReduceOp::Sum),
        (DataType::F16, ReduceOp::Sum),
        (DataType::Bf16, ReduceOp::Sum),
    ];
    for (dtype, op) in cases {
        let local = filled(dtype, size, 3);
        let incoming = filled(dtype, size, 4);
        let mut out = filled(dtype, size, 5);
        let (l, i): (&[u8], &[u8]) = (
            bytemuck::cast_slice(&local),
            bytemuck::cast_slice(&incoming),
        );
        let (l, i) = (&l[..size], &i[..size]);
        let secs = median_time(|| {
            let o: &mut [u8] = bytemuck::cast_slice_mut(&mut out);
            reduce_to(dtype, op, &mut o[..size], black_box(l), black_box(i));
            black_box(&mut *o);
        })
        .as_secs_f64();
        rows.push(Row {
            name: format!("{} {} reduce_to", dtype.name(), op.name()),
            secs,
            buf_bytes: size,
            touched_bytes: 3 * size,
        });
        let secs = median_time(|| {
            let o: &mut [u8] = bytemuck::cast_slice_mut(&mut out);
            reduce_into(dtype, op, &mut o[..size], black_box(i));
            black_box(&mut *o);
        })
        .as_secs_f64();
        rows.push(Row {
            name: format!("{} {} reduce_into", dtype.name(), op.name()),
            secs,
            buf_bytes: size,
            touched_bytes: 3 * size,
        });
    }

    let memcpy = rows[0].touched_gbps();
    println!(
        "{:<24} {:>9} {:>9} {:>13} {:>9}",
        "kernel", "us", "GB/s buf", "GB/s touched", "x memcpy"
    );
    for r in &rows {
        println!(
            "{:<24} {:>9.1} {:>9.2} {:>13.2} {:>9.2}",
            r.name,
            r.secs * 1e6,
            r.gbps(),
            r.touched_gbps(),
            r.touched_gbps() / memcpy
        );
    }
}
