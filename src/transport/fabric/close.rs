//! Closing the fabric backend: `Close` messages for connection ends, `Bye` and a bounded
//! flush when the transport is dropped, the drain `verbs;ofi_rxm` needs before its endpoint
//! closes, and the quarantine of shm endpoints that have peers in the same process.

use super::*;

/// Longest wait for queued messages (`Close`) to leave when the transport is dropped.
const FLUSH_ON_DROP: Duration = Duration::from_millis(500);
/// On `verbs;ofi_rxm`, longest wait of a dropped transport for its peers' `Bye`s (see
/// [`FabricTransport::drain_before_close`]).
const RXM_BYE_WAIT: Duration = Duration::from_secs(2);
/// On `verbs;ofi_rxm`, how long the completion queue must stay empty before the endpoint
/// of a dropped transport is closed.
const RXM_QUIET: Duration = Duration::from_millis(50);

impl FabricTransport {
    /// Sends `Close` for a connection end to its peer (best effort).
    pub(super) fn say_close(&mut self, peer: u32, h: Header) {
        if self.peer_failed(peer).is_none() {
            let _ = self.queue(peer, &h, &[]);
        }
    }
}

impl Drop for FabricTransport {
    /// Lets queued messages (the `Close`s of an orderly shutdown) leave before the
    /// endpoint closes, for a bounded time.
    fn drop(&mut self) {
        let name = self.ep.name.clone();
        for p in 0..self.peers.len() as u32 {
            if self.peer_failed(p).is_none() {
                let mut h = Header::new(Kind::Bye, 0);
                h.len = name.len() as u64;
                let _ = self.queue(p, &h, &name);
            }
        }
        let t0 = Instant::now();
        while (!self.backlog.is_empty() || self.tx_free.len() < TX_SLOTS)
            && t0.elapsed() < FLUSH_ON_DROP
        {
            match self.progress() {
                Ok(true) => {}
                Ok(false) => std::thread::yield_now(),
                Err(_) => break,
            }
        }
        if rxm_over_verbs(&self.ep.chosen.provider) {
            self.drain_before_close();
        }
        let me = i32::try_from(std::process::id()).ok();
        if self.peers.iter().any(|p| p.pid.is_some() && p.pid == me) {
            quarantine(self);
        }
    }
}

impl FabricTransport {
    /// Reads the completion queue until every live peer has said `Bye` and nothing has
    /// arrived for [`RXM_QUIET`], for at most [`RXM_BYE_WAIT`].
    ///
    /// libfabric's rxm (1.17 up to 2.6 at least) closes each connection's verbs endpoint
    /// before it drains the shared completion queue of those endpoints (`rxm_close_conn`),
    /// and a receive completion still queued there reposts its buffer on the freed endpoint:
    /// the process crashes in `fi_close` of the RDM endpoint. Peers' `Bye`s and rxm's own
    /// credit messages arriving just before the close are what is queued; reading them
    /// first leaves the queue empty. (tcp's rxm uses a shared receive context, where the
    /// repost is safe.)
    fn drain_before_close(&mut self) {
        let t0 = Instant::now();
        let mut last = Instant::now();
        while t0.elapsed() < RXM_BYE_WAIT {
            match self.progress() {
                Ok(true) => last = Instant::now(),
                Ok(false) => {
                    let waiting =
                        (0..self.peers.len() as u32).any(|p| self.peer_failed(p).is_none());
                    if !waiting && last.elapsed() >= RXM_QUIET {
                        return;
                    }
                    std::thread::sleep(POLL_SLEEP);
                }
                Err(_) => return,
            }
        }
    }
}

/// Whether `provider` is rxm over verbs (`verbs;ofi_rxm`).
pub(super) fn rxm_over_verbs(provider: &str) -> bool {
    let parts: Vec<&str> = provider.split(';').collect();
    parts.contains(&"verbs") && parts.contains(&"ofi_rxm")
}

/// Endpoints of closed transports kept open for a while: libfabric 1.17's shm provider
/// hands an endpoint in the same process a pointer to its peer's region instead of a
/// mapping of its own, so a rank that sends to a closed in-process peer (its `Bye` not yet
/// read) would write to unmapped memory. Kept endpoints are never progressed; they are
/// closed once older than [`QUARANTINE`].
static KEPT: std::sync::Mutex<Vec<(Instant, Kept)>> = std::sync::Mutex::new(Vec::new());

/// How long a closed shm endpoint with in-process peers stays open.
const QUARANTINE: Duration = Duration::from_secs(10);

/// An endpoint and the buffers its posted operations point into.
struct Kept {
    _fids: endpoint::Detached,
    _bufs: (Vec<u8>, Vec<u8>),
}

fn quarantine(t: &mut FabricTransport) {
    let fids = t.ep.detach();
    let bufs = (std::mem::take(&mut t.tx_buf), std::mem::take(&mut t.rx_buf));
    let mut kept = KEPT.lock().unwrap_or_else(|p| p.into_inner());
    kept.retain(|(t0, _)| t0.elapsed() < QUARANTINE);
    kept.push((
        Instant::now(),
        Kept {
            _fids: fids,
            _bufs: bufs,
        },
    ));
}
