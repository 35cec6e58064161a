//! Command-line options, in nccl-tests' spelling.

use oxccl::{config::parse_bytes, DataType, ReduceOp};

/// The collectives the tool measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    AllReduce,
    AllGather,
    Broadcast,
    ReduceScatter,
    Reduce,
    AllToAll,
    Gather,
    Scatter,
}

impl Op {
    pub const ALL: [Op; 8] = [
        Op::AllReduce,
        Op::AllGather,
        Op::Broadcast,
        Op::ReduceScatter,
        Op::Reduce,
        Op::AllToAll,
        Op::Gather,
        Op::Scatter,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Op::AllReduce => "allreduce",
            Op::AllGather => "allgather",
            Op::Broadcast => "broadcast",
            Op::ReduceScatter => "reduce_scatter",
            Op::Reduce => "reduce",
            Op::AllToAll => "alltoall",
            Op::Gather => "gather",
            Op::Scatter => "scatter",
        }
    }

    /// nccl-tests' bus bandwidth factor.
    pub fn bus_factor(self, n: usize) -> f64 {
        let n = n as f64;
        match self {
            Op::AllReduce => 2.0 * (n - 1.0) / n,
            Op::AllGather | Op::ReduceScatter | Op::AllToAll | Op::Gather | Op::Scatter => {
                (n - 1.0) / n
            }
            Op::Broadcast | Op::Reduce => 1.0,
        }
    }

    pub fn reduces(self) -> bool {
        matches!(self, Op::AllReduce | Op::ReduceScatter | Op::Reduce)
    }

    pub fn rooted(self) -> bool {
        matches!(self, Op::Broadcast | Op::Reduce | Op::Gather | Op::Scatter)
    }

    /// Whether the op has an in-place form (alltoall has none: its send and receive
    /// buffers cannot be one slice).
    pub fn has_in_place(self) -> bool {
        self != Op::AllToAll
    }

    /// The op named `v` (nccl-tests' and the peer suite's names; `bcast` too).
    fn parse(v: &str) -> Option<Op> {
        Op::ALL
            .into_iter()
            .find(|o| o.name() == v || (v == "bcast" && *o == Op::Broadcast))
    }
}

#[derive(Debug, Clone)]
pub struct Args {
    pub ops: Vec<Op>,
    /// Whether --op was given (the CSV mode's default is the peer suite's default list).
    pub ops_given: bool,
    pub min_bytes: usize,
    pub max_bytes: usize,
    pub factor: usize,
    pub dtype: DataType,
    pub redop: ReduceOp,
    pub root: usize,
    pub check: bool,
    pub warmup: usize,
    pub iters: usize,
    pub threads: Option<usize>,
    pub csv: bool,
    pub label: String,
    pub target_secs: f64,
    /// How the ranks run, for the table's header: "threads" or "processes".
    pub ranks_are: &'static str,
    /// `--calls N`: N float allreduces per iteration, separate and grouped.
    pub calls: Option<usize>,
}

pub const USAGE: &str = "\
oxccl-perf: collective benchmarks in nccl-tests' format

usage: oxccl-perf [options]
  --op NAMES       comma-separated list of: allreduce allgather broadcast              [allreduce]
                   reduce_scatter reduce alltoall gather scatter, or all. Sizes as in
                   nccl-tests: the whole gathered / scattered buffer (allgather,
                   reduce_scatter, gather, scatter), each rank's send buffer (alltoall)
  -b BYTES         smallest size (K, M, G suffixes)                                    [8]
  -e BYTES         largest size                                                        [64M]
  -f FACTOR        multiply the size by FACTOR each step                               [2]
  -d TYPE          int8 uint8 int32 uint32 int64 uint64 half float double bfloat16     [float]
                   float8_e4m3 float8_e5m2
  -o OP            sum prod max min avg band bor bxor (the last three: integers only)  [sum]
  -r ROOT          root of broadcast, reduce, gather and scatter                       [0]
  -c 0|1           check every result                                                  [1]
  -w N             warm-up iterations                                                  [5]
  -n N             timed iterations                                                    [20]
  --threads N      run N ranks as threads of this process (the transport is real: tcp uses sockets);
                   without it, run as one rank of a job started by rankrun, torchrun, srun or mpirun
  --csv            one CSV line per (op, size) for the peer comparison suite instead of the table
                   (out of place, but broadcast in place: MPI_Bcast's one buffer), at the
                   suite's sizes 8, 1K, 64K, 1M, 16M, 64M that lie within -b and -e
  --calls N        N float sum allreduces of each size per iteration, timed as N separate
                   calls and as one group (Communicator::group), side by side
  --label L        label of the CSV lines                                              [oxccl]
  -t SECONDS       CSV mode: seconds of timed calls per point                          [0.2]
Environment: OXCCL_TRANSPORT, OXCCL_ALGO, OXCCL_TIMEOUT, ... (see docs/environment.md).
Exit status: 0 when every checked result is right, 1 when any is wrong, 2 on errors.";

fn value<'a>(it: &mut impl Iterator<Item = &'a String>, flag: &str) -> Result<&'a String, String> {
    it.next().ok_or_else(|| format!("{flag} needs a value"))
}

fn num(flag: &str, v: &str) -> Result<usize, String> {
    v.parse()
        .map_err(|_| format!("{flag}: '{v}' is not a number"))
}

pub fn parse(argv: &[String]) -> Result<Args, String> {
    let mut a = Args {
        ops: vec![Op::AllReduce],
        ops_given: false,
        min_bytes: 8,
        max_bytes: 64 << 20,
        factor: 2,
        dtype: DataType::F32,
        redop: ReduceOp::Sum,
        root: 0,
        check: true,
        warmup: 5,
        iters: 20,
        threads: None,
        csv: false,
        label: "oxccl".into(),
        target_secs: 0.2,
        ranks_are: "threads",
        calls: None,
    };
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        let f = flag.as_str();
        match f {
            "-h" | "--help" => return Err(String::new()),
            "--op" => {
                let v = value(&mut it, f)?;
                a.ops.clear();
                a.ops_given = true;
                for name in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    let ops = if name == "all" {
                        Op::ALL.to_vec()
                    } else {
                        vec![Op::parse(name)
                            .ok_or_else(|| format!("--op: unknown collective '{name}'"))?]
                    };
                    for op in ops {
                        if !a.ops.contains(&op) {
                            a.ops.push(op);
                        }
                    }
                }
                if a.ops.is_empty() {
                    return Err("--op: no collective named".into());
                }
            }
            "-b" => {
                a.min_bytes = parse_bytes("-b", value(&mut it, f)?).map_err(|e| e.to_string())?
            }
            "-e" => {
                a.max_bytes = parse_bytes("-e", value(&mut it, f)?).map_err(|e| e.to_string())?
            }
            "-f" => a.factor = num(f, value(&mut it, f)?)?,
            "-d" => a.dtype = DataType::parse(value(&mut it, f)?).map_err(|e| e.to_string())?,
            "-o" => a.redop = ReduceOp::parse(value(&mut it, f)?).map_err(|e| e.to_string())?,
            "-r" => a.root = num(f, value(&mut it, f)?)?,
            "-c" => a.check = num(f, value(&mut it, f)?)? != 0,
            "-w" => a.warmup = num(f, value(&mut it, f)?)?,
            "-n" => a.iters = num(f, value(&mut it, f)?)?.max(1),
            "--threads" => a.threads = Some(num(f, value(&mut it, f)?)?),
            "--csv" => a.csv = true,
            "--calls" => a.calls = Some(num(f, value(&mut it, f)?)?.max(1)),
            "--label" => a.label = value(&mut it, f)?.clone(),
            "-t" => {
                let v = value(&mut it, f)?;
                a.target_secs = v
                    .parse()
                    .map_err(|_| format!("-t: '{v}' is not a number of seconds"))?;
            }
            _ => return Err(format!("unknown option '{f}'")),
        }
    }
    if a.factor < 2 {
        return Err("-f must be at least 2".into());
    }
    if a.min_bytes > a.max_bytes {
        return Err("-b is larger than -e".into());
    }
    if a.threads == Some(0) {
        return Err("--threads must be at least 1".into());
    }
    a.redop
        .check(a.dtype)
        .map_err(|e| format!("-o: {}", e.message()))?;
    Ok(a)
}
