//! The greeting that proves a data connection belongs to this communicator: the first
//! message on every connection, checked before anything else is read from it.
//!
//! Connections run one way (a sending end and a receiving end), so the receiver cannot
//! answer a challenge on them. Its challenge is given ahead instead: each rank publishes a
//! fresh nonce with its connect handle (through the authenticated store), and the sender
//! proves, under the data key derived from the job secret, the pair (receiver's nonce,
//! its own fresh nonce) together with the communicator, both ranks and the channel. A
//! recorded greeting is then worthless: on the same listener its (rank, channel) is taken
//! and its nonce spent, and any other listener has another nonce.

use std::collections::HashSet;

use crate::auth::{self, Key, Nonce, NONCE_BYTES, PROOF_BYTES};

/// Bytes of a greeting: magic, from, to, channel, padding, the sender's nonce, its proof.
pub(super) const HELLO: usize = 8 + 16 + NONCE_BYTES + PROOF_BYTES;
const MAGIC: [u8; 8] = *b"oxcclhi2";

/// What the greetings of one communicator's rank prove and check.
pub struct Greeter {
    key: Key,
    comm: Vec<u8>,
    rank: usize,
    /// This rank's listener nonce.
    own: Nonce,
    /// Every rank's listener nonce, in rank order.
    peers: Vec<Nonce>,
    /// Sender nonces already accepted: a replay is refused even after its connection ends.
    spent: HashSet<Nonce>,
}

impl std::fmt::Debug for Greeter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Greeter").field("rank", &self.rank).finish()
    }
}

impl Greeter {
    /// The greeter of `rank`, for the communicator named by `comm` (bytes every rank
    /// agrees on, such as the store's address) with job secret `secret`; `own` is the
    /// nonce this rank published and `peers` every rank's, in rank order.
    pub fn new(
        secret: &[u8; 32],
        comm: &[u8],
        rank: usize,
        own: [u8; 32],
        peers: Vec<[u8; 32]>,
    ) -> Greeter {
        Greeter {
            key: Key::derive(secret, auth::DATA),
            comm: comm.to_vec(),
            rank,
            own,
            peers,
            spent: HashSet::new(),
        }
    }

    /// A fresh listener nonce to publish.
    pub fn listener_nonce() -> crate::Result<[u8; 32]> {
        auth::nonce()
    }

    /// The greeting this rank sends on a new connection to `peer`, channel `ch`.
    pub(super) fn hello(&self, peer: usize, ch: u16) -> crate::Result<Box<[u8; HELLO]>> {
        self.hello_with(peer, ch, auth::nonce()?)
    }

    /// [`hello`](Self::hello) with the sender nonce given.
    fn hello_with(
        &self,
        peer: usize,
        ch: u16,
        sender: [u8; NONCE_BYTES],
    ) -> crate::Result<Box<[u8; HELLO]>> {
        let listener = self
            .peers
            .get(peer)
            .ok_or_else(|| crate::Error::internal(format!("no listener nonce for rank {peer}")))?;
        let (from, to, ch) = (self.rank as u32, peer as u32, u32::from(ch));
        let mut h = Box::new([0u8; HELLO]);
        h[..8].copy_from_slice(&MAGIC);
        h[8..12].copy_from_slice(&from.to_le_bytes());
        h[12..16].copy_from_slice(&to.to_le_bytes());
        h[16..20].copy_from_slice(&ch.to_le_bytes());
        h[24..24 + NONCE_BYTES].copy_from_slice(&sender);
        let proof = self
            .key
            .prove(&parts(&self.comm, listener, &sender, &h[8..24]));
        h[24 + NONCE_BYTES..].copy_from_slice(&proof);
        Ok(h)
    }

    /// The (peer, channel) a received greeting proves, or why it is refused. `taken` says
    /// whether a connection from (peer, channel) is already up.
    pub(super) fn check(
        &mut self,
        hello: &[u8],
        size: usize,
        taken: impl Fn(usize, u16) -> bool,
    ) -> Result<(usize, u16), &'static str> {
        if hello.len() != HELLO || hello[..8] != MAGIC {
            return Err("not an oxccl greeting of this version");
        }
        let word =
            |i: usize| u32::from_le_bytes([hello[i], hello[i + 1], hello[i + 2], hello[i + 3]]);
        let (from, to, ch) = (word(8) as usize, word(12) as usize, word(16));
        let mut sender = [0u8; NONCE_BYTES];
        sender.copy_from_slice(&hello[24..24 + NONCE_BYTES]);
        let proof = &hello[24 + NONCE_BYTES..];
        if !self
            .key
            .verify(&parts(&self.comm, &self.own, &sender, &hello[8..24]), proof)
        {
            return Err("its proof is wrong (another job or communicator, or a replay)");
        }
        let ch = u16::try_from(ch).map_err(|_| "its channel is out of range")?;
        if to != self.rank || from >= size {
            return Err("it names other ranks than this connection's");
        }
        if taken(from, ch) || !self.spent.insert(sender) {
            return Err("it repeats a greeting already accepted (a replay)");
        }
        Ok((from, ch))
    }
}

/// The proof's input: label, communicator, receiver's listener nonce, sender's nonce, and
/// (from, to, channel, padding) as sent.
fn parts<'a>(
    comm: &'a [u8],
    listener: &'a Nonce,
    sender: &'a Nonce,
    ids: &'a [u8],
) -> [&'a [u8]; 5] {
    [b"greeting", comm, listener, sender, ids]
}

/// The two ranks of the fuzzed greeting: rank 0 greets rank 1 on channel 2.
#[cfg(any(test, feature = "fuzzing"))]
fn fuzz_pair() -> (Greeter, Greeter) {
    let (n0, n1) = ([1u8; 32], [2u8; 32]);
    let s = [9u8; 32];
    (
        Greeter::new(&s, b"comm", 0, n0, vec![n0, n1]),
        Greeter::new(&s, b"comm", 1, n1, vec![n0, n1]),
    )
}

/// A valid greeting for [`fuzz_greeting`] (rank 0 to rank 1, channel 2, a fixed sender
/// nonce).
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn fuzz_greeting_seed() -> Vec<u8> {
    fuzz_pair()
        .0
        .hello_with(1, 2, [4; NONCE_BYTES])
        .map(|h| h.to_vec())
        .unwrap_or_default()
}

/// Fuzz target (see `crate::fuzz`): rank 1 accepts only rank 0's real greeting.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn fuzz_greeting(b: &[u8]) {
    let (_, mut receiver) = fuzz_pair();
    if receiver.check(b, 2, |_, _| false).is_ok() {
        assert!(b == fuzz_greeting_seed(), "a changed greeting was accepted");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Greeter, Greeter) {
        let (n0, n1) = ([1u8; 32], [2u8; 32]);
        let s = [9u8; 32];
        (
            Greeter::new(&s, b"comm", 0, n0, vec![n0, n1]),
            Greeter::new(&s, b"comm", 1, n1, vec![n0, n1]),
        )
    }

    #[test]
    fn a_greeting_is_accepted_once_and_only_by_its_receiver() {
        let (a, mut b) = pair();
        let h = a.hello(1, 3).unwrap();
        assert_eq!(b.check(&h[..], 2, |_, _| false), Ok((0, 3)));
        // Replayed on the same listener: refused even once the first connection is gone.
        assert!(b.check(&h[..], 2, |_, _| false).is_err());
        // Replayed to another rank (or another job: another listener nonce).
        let mut a2 = Greeter::new(&[9; 32], b"comm", 0, [1; 32], vec![[1; 32], [2; 32]]);
        assert!(a2.check(&h[..], 2, |_, _| false).is_err());
        let mut other = Greeter::new(&[9; 32], b"comm", 1, [7; 32], vec![[1; 32], [7; 32]]);
        assert!(other.check(&h[..], 2, |_, _| false).is_err());
    }

    #[test]
    fn fuzz_greetings_are_refused_unless_sent_by_the_peer() {
        let real = fuzz_greeting_seed();
        assert_eq!(real.len(), HELLO);
        for g in crate::fuzz::inputs(std::slice::from_ref(&real), 20_000, 41) {
            fuzz_greeting(&g);
        }
    }

    #[test]
    fn any_changed_byte_or_secret_is_refused() {
        let (a, _) = pair();
        let h = a.hello(1, 0).unwrap();
        for i in 0..HELLO {
            let (_, mut b) = pair();
            let mut bad = *h;
            bad[i] ^= 0x10;
            assert!(b.check(&bad, 2, |_, _| false).is_err(), "byte {i}");
        }
        let mut stranger = Greeter::new(&[8; 32], b"comm", 1, [2; 32], vec![[1; 32], [2; 32]]);
        assert!(stranger.check(&h[..], 2, |_, _| false).is_err());
        let (_, mut b) = pair();
        assert!(b.check(&h[..50], 2, |_, _| false).is_err());
        assert!(b.check(&h[..], 2, |p, c| (p, c) == (0, 0)).is_err());
    }
}
