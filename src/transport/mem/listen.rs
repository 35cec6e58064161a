//! Listening, connecting and accepting on the mem fabric, and the connect handle format.
//!
//! Owns: the listener registry (inside the fabric state) and the handle bytes. A handle
//! is `b"OXM1"`, the fabric nonce and the listener id (both little-endian `u64`), so a
//! handle from another fabric, or any other bytes, is rejected with `InvalidArgument`.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use super::conn::{Conn, Side};
use super::fabric::MemFabric;
use crate::error::{Error, Result};
use crate::transport::ConnectHandle;

const MAGIC: [u8; 4] = *b"OXM1";
const HANDLE_LEN: usize = 4 + 8 + 8;

/// An open listener: its owner and the connections waiting for `accept`.
struct ListenerSlot {
    owner: usize,
    queue: VecDeque<Arc<Conn>>,
}

/// The fabric's open listeners, by fabric-local id.
#[derive(Default)]
pub(super) struct ListenerRegistry {
    next_id: u64,
    slots: HashMap<u64, ListenerSlot>,
}

impl ListenerRegistry {
    /// Removes listener `id`; returns the connections it had not accepted.
    fn close(&mut self, id: u64) -> Vec<Arc<Conn>> {
        self.slots
            .remove(&id)
            .map(|slot| slot.queue.into_iter().collect())
            .unwrap_or_default()
    }

    /// Removes every listener of `owner`; returns the connections they had not accepted.
    pub(super) fn close_owned_by(&mut self, owner: usize) -> Vec<Arc<Conn>> {
        let ids: Vec<u64> = self
            .slots
            .iter()
            .filter(|(_, slot)| slot.owner == owner)
            .map(|(id, _)| *id)
            .collect();
        ids.into_iter().flat_map(|id| self.close(id)).collect()
    }
}

/// A listening mem endpoint. Dropping it closes it; connections it had not accepted are
/// refused (their senders see `Remote`).
pub struct MemListener {
    pub(super) id: u64,
    pub(super) owner: usize,
    pub(super) fabric: Arc<MemFabric>,
}

impl std::fmt::Debug for MemListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MemListener({} of endpoint {})", self.id, self.owner)
    }
}

impl Drop for MemListener {
    fn drop(&mut self) {
        let unaccepted = self.fabric.state().listeners.close(self.id);
        for conn in unaccepted {
            conn.close(Side::Recv);
        }
    }
}

/// A mem connection attempt, advanced by `poll_connect`.
#[derive(Debug)]
pub struct MemConnecting {
    pub(super) nonce: u64,
    pub(super) listener: u64,
    /// Injected "not yet" answers still to give.
    pub(super) polls_left: u32,
    pub(super) established: bool,
}

/// Opens a listener owned by `owner`; returns its handle.
pub(super) fn listen(
    fabric: &Arc<MemFabric>,
    owner: usize,
) -> Result<(ConnectHandle, MemListener)> {
    let id = {
        let mut st = fabric.state();
        let reg = &mut st.listeners;
        let id = reg.next_id;
        reg.next_id += 1;
        reg.slots.insert(
            id,
            ListenerSlot {
                owner,
                queue: VecDeque::new(),
            },
        );
        id
    };
    let listener = MemListener {
        id,
        owner,
        fabric: Arc::clone(fabric),
    };
    let mut bytes = [0u8; HANDLE_LEN];
    bytes[..4].copy_from_slice(&MAGIC);
    bytes[4..12].copy_from_slice(&fabric.nonce().to_le_bytes());
    bytes[12..].copy_from_slice(&id.to_le_bytes());
    // On error the listener is dropped, which closes it again.
    Ok((ConnectHandle::new(&bytes)?, listener))
}

/// The listener id in `handle`, which must come from the fabric with nonce `nonce`.
pub(super) fn decode_handle(nonce: u64, handle: &ConnectHandle) -> Result<u64> {
    let b = handle.as_bytes();
    if b.len() != HANDLE_LEN || b[..4] != MAGIC {
        return Err(Error::invalid_argument(format!(
            "not a mem connect handle ({} bytes)",
            b.len()
        )));
    }
    let word = |at: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[at..at + 8]);
        u64::from_le_bytes(w)
    };
    if word(4) != nonce {
        return Err(Error::invalid_argument(
            "connect handle belongs to another mem fabric",
        ));
    }
    Ok(word(12))
}

/// Creates the connection from `connector` to listener `listener` and queues its
/// receiving end for `accept`.
pub(super) fn establish(fabric: &MemFabric, connector: usize, listener: u64) -> Result<Arc<Conn>> {
    let conn = {
        let mut st = fabric.state();
        if st.is_dying(connector) {
            return Err(Error::remote(format!("endpoint {connector} was killed")));
        }
        let owner = match st.listeners.slots.get(&listener) {
            Some(slot) => slot.owner,
            None => {
                return Err(Error::remote(format!(
                    "connection refused: listener {listener} is closed"
                )))
            }
        };
        if st.is_dying(owner) {
            return Err(Error::remote(format!("peer endpoint {owner} was killed")));
        }
        let conn = Conn::new(connector, owner, Arc::clone(fabric.activity()));
        st.register_conn(&conn);
        if let Some(slot) = st.listeners.slots.get_mut(&listener) {
            slot.queue.push_back(Arc::clone(&conn));
        }
        conn
    };
    fabric.activity().notify();
    Ok(conn)
}

/// The next connection waiting on `listener`, if any.
pub(super) fn accept(fabric: &MemFabric, listener: &MemListener) -> Result<Option<Arc<Conn>>> {
    let mut st = fabric.state();
    match st.listeners.slots.get_mut(&listener.id) {
        Some(slot) => Ok(slot.queue.pop_front()),
        None => Err(Error::invalid_usage(format!(
            "accept on listener {} after its endpoint was closed",
            listener.id
        ))),
    }
}
