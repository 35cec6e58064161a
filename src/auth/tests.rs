use super::*;

#[test]
fn proofs_depend_on_key_purpose_and_every_part() {
    let s = [7u8; 32];
    let k = Key::derive(&s, DATA);
    let p = k.prove(&[b"a", b"bc"]);
    assert!(k.verify(&[b"a", b"bc"], &p));
    // Moving a byte between parts changes the proof: parts are length-prefixed.
    assert!(!k.verify(&[b"ab", b"c"], &p));
    assert!(!k.verify(&[b"a", b"bd"], &p));
    assert!(!Key::derive(&s, STORE).verify(&[b"a", b"bc"], &p));
    assert!(!Key::derive(&[8u8; 32], DATA).verify(&[b"a", b"bc"], &p));
    assert!(!k.verify(&[b"a", b"bc"], &p[..31]));
    assert_ne!(Key::derive(&s, DATA), Key::derive(&s, STORE));
}

#[test]
fn known_answer_of_hmac_sha256() {
    // RFC 4231 test case 2 through the same HMAC the proofs use: key "Jefe".
    let m = <HmacSha256 as Mac>::new_from_slice(b"Jefe").unwrap();
    let got = m
        .chain_update(b"what do ya want for nothing?")
        .finalize()
        .into_bytes();
    let want = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
    let hex: String = got.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, want);
}

#[test]
fn nonces_differ_and_keys_do_not_print() {
    assert_ne!(nonce().unwrap(), nonce().unwrap());
    assert_eq!(format!("{:?}", Key::derive(&[1; 32], DATA)), "Key(..)");
}
