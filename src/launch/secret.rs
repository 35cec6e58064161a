//! The job secret of a launched job: given (`OXCCL_JOB_SECRET`, 64 hex digits) or derived
//! from the job's identity.
//!
//! Owns: the hex form of a secret and the derivation. A derived secret is only as secret as
//! the identity it comes from (a Slurm job id, torchrun's master address), which other users
//! of a cluster can usually see: it keeps the ranks of different jobs apart when a port is
//! reused, not an attacker out. `docs/launching.md` says so and how to set a real one.

use crate::error::{Error, Result};

/// The variable that carries a job secret, as 64 hex digits.
pub const JOB_SECRET_VAR: &str = "OXCCL_JOB_SECRET";

/// A secret as 64 lowercase hex digits, the form `OXCCL_JOB_SECRET` takes.
pub fn secret_to_hex(secret: &[u8; 32]) -> String {
    secret.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses `OXCCL_JOB_SECRET`'s 64 hex digits. The error never repeats the value: it may be
/// a real secret with one digit wrong.
pub fn secret_from_hex(v: &str) -> Result<[u8; 32]> {
    let v = v.trim();
    let bad = |why: &str| {
        Error::invalid_argument(format!(
            "{JOB_SECRET_VAR} is not valid: {why}; expected 64 hex digits \
             (e.g. from `od -An -tx1 -N32 /dev/urandom | tr -d ' \\n'`)"
        ))
    };
    if v.len() != 64 {
        return Err(bad(&format!("it has {} characters", v.len())));
    }
    let mut out = [0u8; 32];
    for (i, pair) in v.as_bytes().chunks(2).enumerate() {
        let digit = |c: u8| (c as char).to_digit(16);
        match (digit(pair[0]), digit(pair[1])) {
            (Some(h), Some(l)) => out[i] = (h * 16 + l) as u8,
            _ => return Err(bad("it has a character that is not a hex digit")),
        }
    }
    Ok(out)
}

/// A secret derived from `identity` (the launcher's job identity, e.g.
/// `slurm/<job id>/<step id>`): the same on every rank of the job, different between jobs.
///
/// Not a cryptographic derivation, and it need not be one: the identity is not secret.
pub fn derive_secret(identity: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, chunk) in out.chunks_mut(8).enumerate() {
        // FNV-1a over a domain tag, the lane number and the identity, then a splitmix64
        // finaliser so that lanes and nearby identities differ in every bit.
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        let lane = [i as u8];
        for b in b"oxccl-job-secret-v1\0"
            .iter()
            .chain(&lane)
            .chain(identity.as_bytes())
        {
            h = (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
        h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        h ^= h >> 31;
        chunk.copy_from_slice(&h.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let s: [u8; 32] = std::array::from_fn(|i| (i * 37 + 5) as u8);
        let h = secret_to_hex(&s);
        assert_eq!(h.len(), 64);
        assert_eq!(secret_from_hex(&h).unwrap(), s);
        assert_eq!(secret_from_hex(&h.to_uppercase()).unwrap(), s);
    }

    #[test]
    fn bad_hex_does_not_echo_the_value() {
        let mut h = "ab".repeat(32);
        h.replace_range(10..11, "g");
        for bad in [h.as_str(), "abc", ""] {
            let e = secret_from_hex(bad).unwrap_err();
            assert!(e.message().contains(JOB_SECRET_VAR), "{e}");
            assert!(bad.len() < 4 || !e.message().contains(bad), "{e}");
        }
    }

    #[test]
    fn derived_secrets_differ_by_identity() {
        let a = derive_secret("slurm/1/0");
        assert_eq!(a, derive_secret("slurm/1/0"));
        assert_ne!(a, derive_secret("slurm/1/1"));
        assert_ne!(a, derive_secret("slurm/2/0"));
        assert_ne!(a[..8], a[8..16]);
    }
}
