//! Peer liveness for the fabric backend: failing a peer, probing peers with outstanding
//! work, checking whether a same-host peer's process still exists, and the error a request
//! towards a failed or departed peer finishes with.

use super::*;
use crate::sys::process::process_gone;

/// A peer whose probe the provider has not sent for this long is unreachable.
const PROBE_DEADLINE: Duration = Duration::from_secs(3);
/// Least time between two liveness probes of one peer.
const PROBE_EVERY: Duration = Duration::from_millis(100);

impl FabricTransport {
    /// Marks `peer` failed: every connection with it fails with a Remote error.
    pub(super) fn fail_peer(&mut self, peer: u32, what: String) {
        let e = self.prov_err(ErrorKind::Remote, format!("peer {what}"));
        if let Some(p) = self.peers.get_mut(peer as usize) {
            p.failed.get_or_insert(e);
        }
    }

    /// Why requests with `peer` cannot finish: it failed or closed its endpoint.
    pub(super) fn peer_failed(&self, peer: u32) -> Option<Error> {
        let p = self.peers.get(peer as usize)?;
        p.failed.clone().or_else(|| p.gone.clone())
    }

    /// Sends probes to peers with outstanding work that were not probed lately, and checks
    /// whether shm peers' processes still exist.
    pub(super) fn probe_peers(&mut self) {
        let mut busy = vec![false; self.peers.len()];
        for c in self.sends.iter() {
            if c.ops.unreported() > 0 || c.remote.is_none() {
                busy[c.peer as usize] = true;
            }
        }
        for c in self.recvs.iter() {
            if c.ops.unreported() > 0 {
                busy[c.peer as usize] = true;
            }
        }
        for (p, b) in busy.into_iter().enumerate() {
            if b {
                self.probe(p as u32);
            }
        }
    }

    pub(super) fn probe(&mut self, peer: u32) {
        let Some(p) = self.peers.get_mut(peer as usize) else {
            return;
        };
        if p.failed.is_some()
            || p.gone.is_some()
            || p.last_probe.is_some_and(|t| t.elapsed() < PROBE_EVERY)
        {
            return;
        }
        if let Some(t0) = p.probe_out {
            // A probe the provider has not sent for this long: the peer is unreachable
            // (tcp;ofi_rxm retries a refused connection forever instead of failing sends).
            if t0.elapsed() > PROBE_DEADLINE {
                let what = format!(
                    "{}: unreachable (a probe message was not sent within {}s)",
                    p.name,
                    PROBE_DEADLINE.as_secs()
                );
                self.fail_peer(peer, what);
            }
            return;
        }
        p.last_probe = Some(Instant::now());
        if self.check_process(peer) {
            return;
        }
        let Some(p) = self.peers.get_mut(peer as usize) else {
            return;
        };
        p.probe_out = Some(Instant::now());
        let _ = self.queue(peer, &Header::new(Kind::Ping, 0), &[]);
    }

    /// Whether the process of `peer`, when it runs on this host, has exited; if so, fails
    /// the peer. Cheap (one system call), so it ignores the probe's rate limit.
    pub(super) fn check_process(&mut self, peer: u32) -> bool {
        let Some(p) = self.peers.get(peer as usize) else {
            return false;
        };
        let Some(pid) = p.pid else {
            return false;
        };
        if p.failed.is_some() || !process_gone(pid) {
            return false;
        }
        let what = format!("{}: process {pid} has exited", p.name);
        self.fail_peer(peer, what);
        true
    }

    /// The error a request fails with, if its connection or peer failed or closed.
    pub(super) fn send_failure(&self, id: Id) -> Option<Error> {
        let c = self.sends.get(id)?;
        c.failed
            .clone()
            .or_else(|| c.closed.clone())
            .or_else(|| self.peer_failed(c.peer))
    }
}
