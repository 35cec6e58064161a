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
}

impl Op {
    pub const ALL: [Op; 5] = [
        Op::AllReduce,
        Op::AllGather,
        Op::Broadcast,
        Op::ReduceScatter,
        Op::Reduce,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Op::AllReduce => "allreduce",
            Op::AllGather => "allgather",
            Op::Broadcast => "broadcast",
            Op::ReduceScatter => "reduce_scatter",
            Op::Reduce => "reduce",
        }
    }

    /// nccl-tests' bus bandwidth factor.
    pub fn bus_factor(self, n: usize) -> f64 {
        let n = n as f64;
        match self {
            Op::AllReduce => 2.0 * (n - 1.0) / n,
            Op::AllGather | Op::ReduceScatter => (n - 1.0) / n,
            Op::Broadcast | Op::Reduce => 1.0,
        }
    }

    pub fn reduces(self) -> bool {
        matches!(self, Op::AllReduce | Op::ReduceScatter | Op::Reduce)
    }

    pub fn rooted(self) -> bool {
        matches!(self, Op::Broadcast | Op::Reduce)
    }
}

#[derive(Debug, Clone)]
pub struct Args {
    pub ops: Vec<Op>,
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
}

pub const USAGE: &str = "\
oxccl-perf: collective benchmarks in nccl-tests' format

usage: oxccl-perf [options]
  --op NAME        allreduce | allgather | broadcast | reduce_scatter | reduce | all  [allreduce]
  -b BYTES         smallest size (K, M, G suffixes)                                    [8]
  -e BYTES         largest size                                                        [64M]
  -f FACTOR        multiply the size by FACTOR each step                               [2]
  -d TYPE          int8 uint8 int32 uint32 int64 uint64 half float double bfloat16     [float]
                   float8_e4m3 float8_e5m2
  -o OP            sum prod max min avg band bor bxor (the last three: integers only)  [sum]
  -r ROOT          root of broadcast and reduce                                        [0]
  -c 0|1           check every result                                                  [1]
  -w N             warm-up iterations                                                  [5]
  -n N             timed iterations                                                    [20]
  --threads N      run N ranks as threads of this process (the transport is real: tcp uses sockets);
                   without it, run as one rank of a job started by rankrun, torchrun, srun or mpirun
  --csv            one CSV line per (op, size) for the peer comparison suite instead of the table
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
    };
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        let f = flag.as_str();
        match f {
            "-h" | "--help" => return Err(String::new()),
            "--op" => {
                let v = value(&mut it, f)?;
                a.ops = if v == "all" {
                    Op::ALL.to_vec()
                } else {
                    let op = Op::ALL
                        .into_iter()
                        .find(|o| o.name() == v || (v == "bcast" && *o == Op::Broadcast))
                        .ok_or_else(|| format!("--op: unknown collective '{v}'"))?;
                    vec![op]
                };
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
