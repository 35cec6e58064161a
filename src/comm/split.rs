//! `split(color, key)`: new communicators from groups of an existing one, as
//! `ncclCommSplit` / `MPI_Comm_split`.

use super::Communicator;
use crate::bootstrap::UniqueId;
use crate::config::Config;
use crate::error::{Error, Result};

impl Communicator {
    /// Every rank calls it; ranks with the same `color` form a new communicator, ordered by
    /// `key` then by old rank. A negative color (NCCL's `NCCL_SPLIT_NOCOLOR`) joins none and
    /// gets `None`. The new communicator uses this one's settings.
    pub fn split(&self, color: i32, key: i32) -> Result<Option<Communicator>> {
        self.split_with_config(color, key, None)
    }

    /// As [`Communicator::split`], with the new communicator's settings given (`None`:
    /// this one's, as `ncclCommSplit` with a NULL config).
    pub fn split_with_config(
        &self,
        color: i32,
        key: i32,
        config: Option<Config>,
    ) -> Result<Option<Communicator>> {
        let n = self.size();
        let rank = self.rank();
        let mut all = vec![0i64; 2 * n];
        self.all_gather(&[i64::from(color), i64::from(key)], &mut all)?;
        let mut group: Vec<(i64, usize)> = (0..n)
            .filter(|&r| all[2 * r] == i64::from(color))
            .map(|r| (all[2 * r + 1], r))
            .collect();
        group.sort_unstable();
        let leader = group.first().map(|g| g.1);
        // Each group's leader creates the id of the new communicator; the others read it.
        let mine = if color >= 0 && leader == Some(rank) {
            UniqueId::with_addr(self.shared.bind_ip)
                .map_err(|e| {
                    e.context(format!(
                        "rank {rank}: split: creating the new communicator's id"
                    ))
                })?
                .as_bytes()
                .to_vec()
        } else {
            vec![0u8; crate::bootstrap::UNIQUE_ID_BYTES]
        };
        let mut ids = vec![0u8; crate::bootstrap::UNIQUE_ID_BYTES * n];
        self.all_gather(&mine, &mut ids)?;
        if color < 0 {
            return Ok(None);
        }
        let leader = leader.ok_or_else(|| Error::internal("split: empty group"))?;
        let b = crate::bootstrap::UNIQUE_ID_BYTES;
        let id = UniqueId::from_bytes(&ids[leader * b..(leader + 1) * b])?;
        let new_rank = group
            .iter()
            .position(|g| g.1 == rank)
            .ok_or_else(|| Error::internal("split: rank not in its own group"))?;
        // The new communicator keeps the places its ranks published here (an injected
        // topology describes this communicator's ranks, not the new one's) and leaves this
        // communicator's dump alone.
        // The leader's process serves the new store, and the leader is the new rank 0.
        let cfg = Config {
            topo_file: None,
            topo_dump_file: None,
            store_host: Some(0),
            ..config.unwrap_or_else(|| self.shared.cfg.clone())
        };
        let place = Some(self.shared.info.clone());
        Communicator::init_placed(&id, new_rank, group.len(), cfg, place).map(Some)
    }
}
