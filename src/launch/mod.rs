//! Launching: how a rank started by a launcher (rankrun, torchrun, srun, mpirun) learns its
//! rank, the job size and where the job's store is, without any hand-written id exchange.
//!
//! Owns: the environment contracts (`contract`), Slurm's list syntaxes (`hostlist`), the job
//! secret's forms (`secret`), resolving the root address, starting the store on rank 0 when
//! no launcher serves one, and [`Communicator::from_env`]. `rankrun` (src/bin/rankrun)
//! writes the variables named in [`vars`]; this module reads them.
//!
//! Who serves the store: rankrun runs it itself and passes its address and secret. Under
//! torchrun, srun and mpirun, rank 0 starts it on the root address (`OXCCL_ROOT`, else
//! what the launcher's variables imply) with `OXCCL_JOB_SECRET` or a secret derived from the
//! job's identity, and the other ranks connect to it, retrying until it is up.

mod contract;
mod hostlist;
mod secret;

#[cfg(test)]
mod tests;

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

pub use contract::{slurm_port, SLURM_PORT_BASE, SLURM_PORT_SPAN};
pub use hostlist::{expand_hostlist, expand_tasks_per_node};
pub use secret::{derive_secret, secret_from_hex, secret_to_hex};

use crate::bootstrap::{StoreServer, UniqueId};
use crate::comm::Communicator;
use crate::config::Config;
use crate::error::{Error, Result};

/// The variables of rankrun's contract (with [`vars::JOB_SECRET`]); a launcher that sets
/// them must serve the store at `OXCCL_ROOT` with that secret.
pub mod vars {
    /// This rank, `0..OXCCL_WORLD_SIZE`.
    pub const RANK: &str = "OXCCL_RANK";
    /// Number of ranks in the job.
    pub const WORLD_SIZE: &str = "OXCCL_WORLD_SIZE";
    /// This rank's number among the ranks of its host.
    pub const LOCAL_RANK: &str = "OXCCL_LOCAL_RANK";
    /// Number of ranks on this rank's host.
    pub const LOCAL_SIZE: &str = "OXCCL_LOCAL_SIZE";
    /// The store's address, `host:port`.
    pub const ROOT: &str = "OXCCL_ROOT";
    /// The job secret, 64 hex digits; passed in the environment only, never on a command line.
    pub const JOB_SECRET: &str = super::secret::JOB_SECRET_VAR;
    /// Chooses the interface a rank advertises (NCCL's `NCCL_SOCKET_IFNAME` syntax).
    pub const SOCKET_IFNAME: &str = "OXCCL_SOCKET_IFNAME";
}

/// The launcher whose variables described this rank.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launcher {
    /// oxccl's own `rankrun` (the `OXCCL_*` variables).
    Rankrun,
    /// PyTorch's `torchrun` (`RANK`, `WORLD_SIZE`, `MASTER_ADDR`, ...).
    Torchrun,
    /// Slurm's `srun` (`SLURM_PROCID`, `SLURM_NTASKS`, ...).
    Slurm,
    /// Open MPI's `mpirun` (`OMPI_COMM_WORLD_*`, with `OXCCL_ROOT`).
    OpenMpi,
}

impl Launcher {
    /// The launcher's command name.
    pub fn name(self) -> &'static str {
        match self {
            Launcher::Rankrun => "rankrun",
            Launcher::Torchrun => "torchrun",
            Launcher::Slurm => "srun",
            Launcher::OpenMpi => "mpirun",
        }
    }
}

/// What a launcher told this rank: its place in the job and where the job's store is.
#[derive(Clone, PartialEq, Eq)]
pub struct LaunchEnv {
    /// Who started this rank.
    pub launcher: Launcher,
    /// This rank, `0..size`.
    pub rank: usize,
    /// Number of ranks.
    pub size: usize,
    /// This rank among the ranks of its host.
    pub local_rank: usize,
    /// Number of ranks on this host.
    pub local_size: usize,
    /// The store's host (a name or an address), not yet resolved.
    pub root_host: String,
    /// The store's port.
    pub root_port: u16,
    /// Which variables the root came from, for messages.
    pub root_origin: String,
    /// Whether rank 0 must serve the store itself (no launcher serves one).
    pub serves_root: bool,
    /// Where the secret came from (`OXCCL_JOB_SECRET`, or what it was derived from).
    pub secret_origin: String,
    secret: [u8; 32],
}

impl std::fmt::Debug for LaunchEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret is left out on purpose.
        f.debug_struct("LaunchEnv")
            .field("launcher", &self.launcher)
            .field("rank", &self.rank)
            .field("size", &self.size)
            .field("local_rank", &self.local_rank)
            .field("local_size", &self.local_size)
            .field("root", &format!("{}:{}", self.root_host, self.root_port))
            .field("serves_root", &self.serves_root)
            .field("secret_origin", &self.secret_origin)
            .finish_non_exhaustive()
    }
}

impl LaunchEnv {
    /// Reads this process's environment: rankrun's variables, else torchrun's, else
    /// Slurm's, else Open MPI's. A missing or inconsistent set is an `InvalidArgument`
    /// error naming the variables it looked for.
    pub fn from_env() -> Result<LaunchEnv> {
        LaunchEnv::from_lookup(|name| {
            std::env::var_os(name).map(|v| v.to_string_lossy().into_owned())
        })
    }

    /// As [`from_env`](LaunchEnv::from_env), reading variables through `get`.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<LaunchEnv> {
        contract::read(&get)
    }

    /// The job secret (from `OXCCL_JOB_SECRET` or derived: see `secret_origin`).
    pub fn secret(&self) -> &[u8; 32] {
        &self.secret
    }

    /// Resolves the root to an address, IPv4 first. When rank 0 serves the store, a
    /// loopback root is refused if the job spans several hosts (local size below size), as
    /// the other hosts could not reach it.
    pub fn root_addr(&self) -> Result<SocketAddr> {
        let what = || {
            format!(
                "resolving oxccl's store address {}:{} (from {})",
                self.root_host, self.root_port, self.root_origin
            )
        };
        let addrs: Vec<SocketAddr> = (self.root_host.as_str(), self.root_port)
            .to_socket_addrs()
            .map_err(|e| Error::io(what(), e))?
            .collect();
        let addr = addrs
            .iter()
            .find(|a| a.is_ipv4())
            .or(addrs.first())
            .copied()
            .ok_or_else(|| Error::system(format!("{}: no address", what())))?;
        // Only a root guessed from host names is checked: a launcher that serves the store
        // (rankrun) chose its address on purpose.
        if self.serves_root && addr.ip().is_loopback() && self.local_size < self.size {
            return Err(Error::invalid_argument(format!(
                "{}: it is a loopback address ({}), but the job spans several hosts ({} of {} \
                 ranks on this one); set OXCCL_ROOT=host:port to an address of rank 0's host \
                 that the other hosts reach",
                what(),
                addr.ip(),
                self.local_size,
                self.size
            )));
        }
        Ok(addr)
    }

    /// The job's unique id. When rank 0 must serve the store ([`serves_root`]), rank 0
    /// starts it here, on the root address; it ends by itself once every rank has joined
    /// and left, or after `idle_timeout` with no rank connected.
    ///
    /// [`serves_root`]: LaunchEnv::serves_root
    pub fn unique_id(&self, idle_timeout: Duration) -> Result<UniqueId> {
        let addr = self.root_addr()?;
        if self.serves_root && self.rank == 0 {
            let server = StoreServer::spawn(addr, self.secret, idle_timeout).map_err(|e| {
                e.context(format!(
                    "rank 0 serves oxccl's store at {addr} (from {}); if that port is taken \
                     or the address is not this host's, set OXCCL_ROOT=host:port to a free \
                     port on rank 0's host",
                    self.root_origin
                ))
            })?;
            server.detach();
        }
        Ok(UniqueId::from_parts(addr, self.secret))
    }
}

impl Communicator {
    /// Joins the job this process was launched into, one rank per process: reads the
    /// launcher's environment ([`LaunchEnv::from_env`]) and the `OXCCL_*` settings
    /// ([`Config::from_env`]), starts the store on rank 0 when no launcher serves it, and
    /// initialises. Call it once per process; make further communicators with
    /// [`split`](Communicator::split).
    pub fn from_env() -> Result<Communicator> {
        let env = LaunchEnv::from_env()?;
        Communicator::from_launch(&env, Config::from_env()?)
    }

    /// As [`from_env`](Communicator::from_env) with a given launch description and settings.
    pub fn from_launch(env: &LaunchEnv, cfg: Config) -> Result<Communicator> {
        let id = env.unique_id(cfg.timeout).map_err(|e| {
            e.context(format!(
                "rank {} of {} (started by {})",
                env.rank,
                env.size,
                env.launcher.name()
            ))
        })?;
        let store_host = cfg.store_host.or((env.serves_root).then_some(0));
        Communicator::init_with_config(&id, env.rank, env.size, Config { store_host, ..cfg })
    }
}
