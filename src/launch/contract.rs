//! The four environment contracts a rank may be started under, read in order: rankrun's
//! `OXCCL_*` variables, torchrun's, Slurm's (srun) and Open MPI's (mpirun).
//!
//! Owns: which variables each launcher sets, what they mean, and the checks that make a
//! partial or inconsistent set an error naming the variables. Knows nothing of sockets:
//! the root stays a host name and a port here.

use super::hostlist::{expand_hostlist, expand_tasks_per_node};
use super::secret::{derive_secret, secret_from_hex, JOB_SECRET_VAR};
use super::vars;
use super::{LaunchEnv, Launcher};
use crate::error::{Error, Result};

/// Ports derived from Slurm job and step ids lie in `SLURM_PORT_BASE ..
/// SLURM_PORT_BASE + SLURM_PORT_SPAN`, below Linux's ephemeral range (32768-60999).
pub const SLURM_PORT_BASE: u16 = 12000;
/// See [`SLURM_PORT_BASE`].
pub const SLURM_PORT_SPAN: u16 = 16000;

/// What the error for "no launcher found" lists, one launcher a line.
const LOOKED_FOR: &str = concat!(
    "  rankrun:  OXCCL_RANK, OXCCL_WORLD_SIZE, OXCCL_LOCAL_RANK, OXCCL_LOCAL_SIZE, OXCCL_ROOT, ",
    "OXCCL_JOB_SECRET\n",
    "  torchrun: RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT\n",
    "  srun:     SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, SLURM_NODEID, SLURM_STEP_NODELIST, ",
    "SLURM_STEP_TASKS_PER_NODE, SLURM_JOB_ID, SLURM_STEP_ID\n",
    "  mpirun:   OMPI_COMM_WORLD_RANK, OMPI_COMM_WORLD_SIZE, OMPI_COMM_WORLD_LOCAL_RANK, ",
    "OMPI_COMM_WORLD_LOCAL_SIZE, with OXCCL_ROOT=host:port (mpirun -x OXCCL_ROOT=...)"
);

/// Reads variables through a lookup and turns absences into errors that name the launcher.
struct Vars<'a> {
    get: &'a dyn Fn(&str) -> Option<String>,
    launcher: Launcher,
}

impl Vars<'_> {
    fn opt(&self, name: &str) -> Option<String> {
        (self.get)(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    fn first(&self, names: &[&str]) -> Option<String> {
        names.iter().find_map(|n| self.opt(n))
    }

    fn req(&self, names: &[&str]) -> Result<String> {
        self.first(names)
            .ok_or_else(|| self.incomplete(&format!("{} is not set", names.join(" or "))))
    }

    fn num(&self, names: &[&str]) -> Result<usize> {
        let v = self.req(names)?;
        v.parse().map_err(|_| {
            self.incomplete(&format!("{}='{v}' is not a non-negative integer", names[0]))
        })
    }

    fn incomplete(&self, why: &str) -> Error {
        Error::invalid_argument(format!(
            "the {} environment is incomplete or inconsistent: {why}; {} sets {}",
            self.launcher.name(),
            self.launcher.name(),
            self.launcher.variables()
        ))
    }
}

impl Launcher {
    /// The variables this launcher's contract reads, for error messages.
    fn variables(self) -> &'static str {
        match self {
            Launcher::Rankrun => {
                "OXCCL_RANK, OXCCL_WORLD_SIZE, OXCCL_LOCAL_RANK, OXCCL_LOCAL_SIZE, OXCCL_ROOT \
                 and OXCCL_JOB_SECRET"
            }
            Launcher::Torchrun => {
                "RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT \
                 (oxccl's store: OXCCL_ROOT, else MASTER_ADDR at MASTER_PORT+1)"
            }
            Launcher::Slurm => {
                "SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, SLURM_NODEID, SLURM_STEP_NODELIST, \
                 SLURM_STEP_TASKS_PER_NODE, SLURM_JOB_ID and SLURM_STEP_ID (oxccl's store: \
                 OXCCL_ROOT, else the first node of the step at a port derived from the ids)"
            }
            Launcher::OpenMpi => {
                "OMPI_COMM_WORLD_RANK, OMPI_COMM_WORLD_SIZE, OMPI_COMM_WORLD_LOCAL_RANK and \
                 OMPI_COMM_WORLD_LOCAL_SIZE; oxccl's store address must come from \
                 OXCCL_ROOT=host:port (mpirun -x OXCCL_ROOT=...)"
            }
        }
    }
}

/// Reads the first contract present in `get`'s variables.
pub(super) fn read(get: &dyn Fn(&str) -> Option<String>) -> Result<LaunchEnv> {
    let has = |n: &str| get(n).is_some_and(|v| !v.trim().is_empty());
    let launcher = if has(vars::RANK) || has(vars::WORLD_SIZE) {
        Launcher::Rankrun
    } else if has("RANK") || has("WORLD_SIZE") {
        Launcher::Torchrun
    } else if has("SLURM_PROCID") {
        Launcher::Slurm
    } else if has("OMPI_COMM_WORLD_RANK") {
        Launcher::OpenMpi
    } else {
        return Err(Error::invalid_argument(format!(
            "no launcher environment found: start the ranks with rankrun, torchrun, srun or \
             mpirun. Looked for:\n{LOOKED_FOR}"
        )));
    };
    let v = Vars { get, launcher };
    let env = match launcher {
        Launcher::Rankrun => rankrun(&v)?,
        Launcher::Torchrun => torchrun(&v)?,
        Launcher::Slurm => slurm(&v)?,
        Launcher::OpenMpi => open_mpi(&v)?,
    };
    check(&v, &env)?;
    Ok(env)
}

fn rankrun(v: &Vars<'_>) -> Result<LaunchEnv> {
    let (root_host, root_port) = parse_root(v, vars::ROOT, &v.req(&[vars::ROOT])?)?;
    let secret = secret_from_hex(&v.req(&[JOB_SECRET_VAR])?)?;
    Ok(LaunchEnv {
        launcher: v.launcher,
        rank: v.num(&[vars::RANK])?,
        size: v.num(&[vars::WORLD_SIZE])?,
        local_rank: v.num(&[vars::LOCAL_RANK])?,
        local_size: v.num(&[vars::LOCAL_SIZE])?,
        root_host,
        root_port,
        root_origin: vars::ROOT.into(),
        serves_root: false,
        secret,
        secret_origin: JOB_SECRET_VAR.into(),
    })
}

fn torchrun(v: &Vars<'_>) -> Result<LaunchEnv> {
    let (root_host, root_port, root_origin) = match v.opt(vars::ROOT) {
        Some(r) => {
            let (h, p) = parse_root(v, vars::ROOT, &r)?;
            (h, p, vars::ROOT.to_string())
        }
        None => {
            let host = v.req(&["MASTER_ADDR"])?;
            let port = v.req(&["MASTER_PORT"])?;
            // torchrun's agent serves its own store on MASTER_PORT: take the next one.
            let port = port
                .parse::<u16>()
                .ok()
                .and_then(|p| p.checked_add(1))
                .filter(|&p| p > 1)
                .ok_or_else(|| {
                    v.incomplete(&format!("MASTER_PORT='{port}' is not a port below 65535"))
                })?;
            (host, port, "MASTER_ADDR at MASTER_PORT+1".to_string())
        }
    };
    let size = v.num(&["WORLD_SIZE"])?;
    let (secret, secret_origin) = secret_or(v, || {
        let run = v.opt("TORCHELASTIC_RUN_ID").unwrap_or_default();
        let id = format!("torchrun/{run}/{root_host}:{root_port}/{size}");
        (id, "TORCHELASTIC_RUN_ID, the root address and WORLD_SIZE")
    })?;
    Ok(LaunchEnv {
        launcher: v.launcher,
        rank: v.num(&["RANK"])?,
        size,
        local_rank: v.num(&["LOCAL_RANK"])?,
        local_size: v.num(&["LOCAL_WORLD_SIZE"])?,
        root_host,
        root_port,
        root_origin,
        serves_root: true,
        secret,
        secret_origin,
    })
}

fn slurm(v: &Vars<'_>) -> Result<LaunchEnv> {
    let job: u64 = v.num(&["SLURM_JOB_ID", "SLURM_JOBID"])? as u64;
    let step: u64 = v.num(&["SLURM_STEP_ID", "SLURM_STEPID"]).map_err(|e| {
        Error::invalid_argument(format!(
            "{} (inside an sbatch script, start the ranks with srun)",
            e.message()
        ))
    })? as u64;
    let size = v.num(&["SLURM_NTASKS", "SLURM_NPROCS"])?;
    let node = v.num(&["SLURM_NODEID"])?;
    let per_node_var = ["SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE"];
    let per_node = expand_tasks_per_node(per_node_var[0], &v.req(&per_node_var)?)?;
    let local_size = *per_node.get(node).ok_or_else(|| {
        v.incomplete(&format!(
            "SLURM_NODEID={node} but SLURM_STEP_TASKS_PER_NODE lists {} nodes",
            per_node.len()
        ))
    })?;
    let (root_host, root_port, root_origin) = match v.opt(vars::ROOT) {
        Some(r) => {
            let (h, p) = parse_root(v, vars::ROOT, &r)?;
            (h, p, vars::ROOT.to_string())
        }
        None => {
            let list_var = ["SLURM_STEP_NODELIST", "SLURM_NODELIST"];
            let hosts = expand_hostlist(list_var[0], &v.req(&list_var)?)?;
            let host = hosts.into_iter().next().unwrap_or_default();
            (
                host,
                slurm_port(job, step),
                "the first node of SLURM_STEP_NODELIST, port from SLURM_JOB_ID and SLURM_STEP_ID"
                    .to_string(),
            )
        }
    };
    let (secret, secret_origin) = secret_or(v, || {
        let cluster = v.opt("SLURM_CLUSTER_NAME").unwrap_or_default();
        let id = format!("slurm/{cluster}/{job}/{step}/{size}");
        (
            id,
            "SLURM_CLUSTER_NAME, SLURM_JOB_ID, SLURM_STEP_ID and SLURM_NTASKS",
        )
    })?;
    Ok(LaunchEnv {
        launcher: v.launcher,
        rank: v.num(&["SLURM_PROCID"])?,
        size,
        local_rank: v.num(&["SLURM_LOCALID"])?,
        local_size,
        root_host,
        root_port,
        root_origin,
        serves_root: true,
        secret,
        secret_origin,
    })
}

/// The store port of a Slurm step: `SLURM_PORT_BASE + (job * 16 + step) mod SLURM_PORT_SPAN`,
/// so consecutive steps and jobs get different ports.
pub fn slurm_port(job: u64, step: u64) -> u16 {
    let off = job.wrapping_mul(16).wrapping_add(step) % u64::from(SLURM_PORT_SPAN);
    SLURM_PORT_BASE + off as u16
}

fn open_mpi(v: &Vars<'_>) -> Result<LaunchEnv> {
    let root = v.opt(vars::ROOT).ok_or_else(|| {
        v.incomplete(
            "OXCCL_ROOT is not set: Open MPI has no address for oxccl's store; pass one \
             of rank 0's host, e.g. mpirun -x OXCCL_ROOT=node1:29400",
        )
    })?;
    let (root_host, root_port) = parse_root(v, vars::ROOT, &root)?;
    let size = v.num(&["OMPI_COMM_WORLD_SIZE"])?;
    let (secret, secret_origin) = secret_or(v, || {
        let job = v
            .first(&["OMPI_MCA_ess_base_jobid", "PMIX_NAMESPACE"])
            .unwrap_or_default();
        let id = format!("openmpi/{job}/{root_host}:{root_port}/{size}");
        (id, "Open MPI's job id, OXCCL_ROOT and OMPI_COMM_WORLD_SIZE")
    })?;
    Ok(LaunchEnv {
        launcher: v.launcher,
        rank: v.num(&["OMPI_COMM_WORLD_RANK"])?,
        size,
        local_rank: v.num(&["OMPI_COMM_WORLD_LOCAL_RANK"])?,
        local_size: v.num(&["OMPI_COMM_WORLD_LOCAL_SIZE"])?,
        root_host,
        root_port,
        root_origin: vars::ROOT.into(),
        serves_root: true,
        secret,
        secret_origin,
    })
}

/// `OXCCL_JOB_SECRET` when set, else the secret derived from `identity()`'s job identity.
fn secret_or(
    v: &Vars<'_>,
    identity: impl FnOnce() -> (String, &'static str),
) -> Result<([u8; 32], String)> {
    match v.opt(JOB_SECRET_VAR) {
        Some(hex) => Ok((secret_from_hex(&hex)?, JOB_SECRET_VAR.into())),
        None => {
            let (id, from) = identity();
            Ok((derive_secret(&id), format!("derived from {from}")))
        }
    }
}

/// `host:port`, `ip:port` or `[ipv6]:port`, with a port of 1..65535.
fn parse_root(v: &Vars<'_>, var: &str, s: &str) -> Result<(String, u16)> {
    let bad = || {
        v.incomplete(&format!(
            "{var}='{s}' is not host:port (e.g. node1:29400, 10.0.0.1:29400, [fd00::1]:29400)"
        ))
    };
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let host = match host.strip_prefix('[') {
        Some(h) => h.strip_suffix(']').ok_or_else(bad)?,
        None if host.contains(':') => return Err(bad()),
        None => host,
    };
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host.is_empty() || port == 0 {
        return Err(bad());
    }
    Ok((host.to_string(), port))
}

/// Rank and size agree with each other and with the local numbers.
fn check(v: &Vars<'_>, e: &LaunchEnv) -> Result<()> {
    let (rank, size, lr, ls) = (e.rank, e.size, e.local_rank, e.local_size);
    if size == 0 {
        return Err(v.incomplete("the world size is 0"));
    }
    if rank >= size {
        return Err(v.incomplete(&format!("rank {rank} is not below the world size {size}")));
    }
    if ls == 0 || ls > size {
        return Err(v.incomplete(&format!(
            "the local size {ls} is not in 1..={size} (the world size)"
        )));
    }
    if lr >= ls {
        return Err(v.incomplete(&format!("local rank {lr} is not below the local size {ls}")));
    }
    Ok(())
}
