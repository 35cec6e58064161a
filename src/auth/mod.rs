//! Proving that a connection belongs to the job, without the job secret ever travelling:
//! keys derived from the secret, fresh random nonces, HMAC-SHA256 proofs over the nonces
//! and what the connection is for, compared in constant time.
//!
//! Owns no sockets: the store's handshake (`bootstrap`) and the data connections' greeting
//! (`engine`) call it with the bytes they exchanged. The threat model is in
//! docs/launching.md.

use std::fmt;
use std::fs::File;
use std::io::Read;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::{Error, Result};

#[cfg(test)]
mod tests;

/// Bytes of a nonce.
pub const NONCE_BYTES: usize = 32;
/// Bytes of a proof (an HMAC-SHA256 tag).
pub const PROOF_BYTES: usize = 32;

/// A nonce: fresh random bytes, never used twice.
pub type Nonce = [u8; NONCE_BYTES];
/// A proof: HMAC-SHA256 under a [`Key`] over labelled, length-prefixed parts.
pub type Proof = [u8; PROOF_BYTES];

type HmacSha256 = Hmac<Sha256>;

/// A key derived from the job secret for one purpose (the store, data connections), so
/// that a proof made for one purpose is worthless for another.
#[derive(Clone, PartialEq, Eq)]
pub struct Key([u8; 32]);

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(..)")
    }
}

/// Key of the store's handshake.
pub const STORE: &str = "oxccl store v2";
/// Key of the data connections' greeting.
pub const DATA: &str = "oxccl data v2";

impl Key {
    /// The key for `purpose` ([`STORE`], [`DATA`]): HMAC-SHA256(secret, purpose).
    pub fn derive(secret: &[u8; 32], purpose: &str) -> Key {
        Key(tag(secret, &[purpose.as_bytes()]))
    }

    /// The proof over `parts` (each prefixed with its length, so that no two lists of
    /// parts give the same input).
    pub fn prove(&self, parts: &[&[u8]]) -> Proof {
        tag(&self.0, parts)
    }

    /// Whether `proof` is the proof over `parts`, compared in constant time.
    pub fn verify(&self, parts: &[&[u8]], proof: &[u8]) -> bool {
        mac(&self.0, parts).is_some_and(|m| m.verify_slice(proof).is_ok())
    }
}

/// HMAC-SHA256 over `parts` under `key` (`None` only if HMAC refused the key, which it
/// never does: it takes keys of any length).
fn mac(key: &[u8], parts: &[&[u8]]) -> Option<HmacSha256> {
    let mut m = <HmacSha256 as Mac>::new_from_slice(key).ok()?;
    for p in parts {
        m.update(&(p.len() as u64).to_le_bytes());
        m.update(p);
    }
    Some(m)
}

fn tag(key: &[u8], parts: &[&[u8]]) -> Proof {
    // A refused key (impossible) would give a tag no `verify` accepts.
    mac(key, parts).map_or([0; PROOF_BYTES], |m| m.finalize().into_bytes().into())
}

/// A fresh nonce from the operating system's random source.
pub fn nonce() -> Result<Nonce> {
    let mut n = [0u8; NONCE_BYTES];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut n))
        .map_err(|e| Error::io("reading a nonce from /dev/urandom", e))?;
    Ok(n)
}
