//! Store server and client together, over loopback.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::proto::{self, Reply, Request};
use super::*;
use crate::auth::{self, Key};
use crate::ErrorKind;

const T: Duration = Duration::from_secs(5);

fn server_with_idle(idle: Duration) -> (StoreServer, [u8; 32]) {
    let secret = random_secret().unwrap();
    let s = StoreServer::spawn("127.0.0.1:0".parse().unwrap(), secret, idle).unwrap();
    (s, secret)
}

fn server() -> (StoreServer, [u8; 32]) {
    server_with_idle(Duration::from_secs(20))
}

fn client(s: &StoreServer, secret: &[u8; 32], rank: usize, size: usize) -> StoreClient {
    StoreClient::connect(s.local_addr(), secret, rank, size, T).unwrap()
}

/// A port nothing listens on (just released by the system).
fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn read_body(s: &mut TcpStream) -> Vec<u8> {
    let mut h = [0u8; 4];
    s.read_exact(&mut h).unwrap();
    let mut b = vec![0u8; u32::from_le_bytes(h) as usize];
    s.read_exact(&mut b).unwrap();
    b
}

/// The handshake by hand up to the verdict: (stream, client nonce, server nonce, verdict).
fn raw_handshake(
    addr: SocketAddr,
    secret: &[u8; 32],
    rank: u32,
    size: u32,
    replay: Option<&[u8; proto::ANSWER_BYTES]>,
) -> (TcpStream, [u8; proto::ANSWER_BYTES], u8) {
    let key = Key::derive(secret, auth::STORE);
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    let cn = auth::nonce().unwrap();
    s.write_all(&proto::preamble(&cn)).unwrap();
    let mut ch = [0u8; 1 + proto::CHALLENGE_BYTES];
    s.read_exact(&mut ch).unwrap();
    assert_eq!(ch[0], proto::ACK_OK);
    let mut sn = [0u8; 32];
    sn.copy_from_slice(&ch[1..33]);
    assert!(proto::check_server_proof(&key, &cn, &sn, &ch[33..]));
    let answer = proto::answer(&key, &cn, &sn, rank, size);
    s.write_all(replay.unwrap_or(&answer)).unwrap();
    let mut verdict = [0u8; 1];
    s.read_exact(&mut verdict).unwrap();
    (s, answer, verdict[0])
}

/// A registered connection made by hand, to misbehave with.
fn raw_hello(addr: SocketAddr, secret: &[u8; 32], rank: u32, size: u32) -> TcpStream {
    let (mut s, _, verdict) = raw_handshake(addr, secret, rank, size, None);
    assert_eq!(verdict, proto::ACK_OK);
    s.write_all(&Request::Hello { rank, size }.encode().unwrap())
        .unwrap();
    assert_eq!(Reply::decode(&read_body(&mut s)).unwrap(), Reply::Ok);
    s
}

#[test]
fn all_gather_one_rank() {
    let (s, secret) = server();
    let mut c = client(&s, &secret, 0, 1);
    assert_eq!(
        c.all_gather("addr", b"only", T).unwrap(),
        vec![b"only".to_vec()]
    );
    assert_eq!(
        c.all_gather("empty", b"", T).unwrap(),
        vec![Vec::<u8>::new()]
    );
    assert_eq!(
        c.local_ip(),
        "127.0.0.1".parse::<std::net::IpAddr>().unwrap()
    );
    c.goodbye().unwrap();
    assert!(s.wait_finished(T));
}

#[test]
fn all_gather_eight_ranks_in_rank_order() {
    let (s, secret) = server();
    let addr = s.local_addr();
    let n = 8;
    let value = |r: usize, round: usize| -> Vec<u8> {
        // Different lengths per rank (including empty) and bytes that are not text.
        (0..(r * 37 + round) % 50)
            .map(|i| (i * 7 + r + round) as u8)
            .collect()
    };
    let threads: Vec<_> = (0..n)
        .map(|r| {
            thread::spawn(move || {
                let mut c = StoreClient::connect(addr, &secret, r, n, T).unwrap();
                let mut seen = Vec::new();
                for round in 0..3 {
                    seen.push(
                        c.all_gather(&format!("round{round}"), &value(r, round), T)
                            .unwrap(),
                    );
                }
                c.goodbye().unwrap();
                seen
            })
        })
        .collect();
    for (r, t) in threads.into_iter().enumerate() {
        let seen = t.join().unwrap();
        for (round, all) in seen.iter().enumerate() {
            let want: Vec<Vec<u8>> = (0..n).map(|q| value(q, round)).collect();
            assert_eq!(all, &want, "rank {r} round {round}");
        }
    }
    assert!(
        s.wait_finished(T),
        "server still running after all goodbyes"
    );
}

#[test]
fn get_blocks_until_a_later_set_without_blocking_others() {
    let (s, secret) = server();
    let mut c0 = client(&s, &secret, 0, 2);
    let mut c1 = client(&s, &secret, 1, 2);
    let done = Arc::new(AtomicBool::new(false));
    let d = Arc::clone(&done);
    let getter = thread::spawn(move || {
        let start = Instant::now();
        let v = c1.get("late", T).unwrap();
        d.store(true, Ordering::SeqCst);
        (v, start.elapsed())
    });
    thread::sleep(Duration::from_millis(300));
    assert!(
        !done.load(Ordering::SeqCst),
        "get returned before the key was set"
    );
    // The blocked GET holds no lock other clients need.
    c0.set("other", b"x").unwrap();
    assert_eq!(c0.try_get("other").unwrap(), Some(b"x".to_vec()));
    assert_eq!(c0.try_get("late").unwrap(), None);
    c0.set("late", b"value").unwrap();
    let (v, waited) = getter.join().unwrap();
    assert_eq!(v, b"value");
    assert!(waited >= Duration::from_millis(250), "{waited:?}");
    // A get of an existing key answers at once; a missing one times out with its name.
    assert_eq!(c0.get("late", Duration::ZERO).unwrap(), b"value");
    let e = c0.get("never", Duration::from_millis(100)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout);
    assert!(
        e.message().contains("'never'") && e.message().contains("rank 0 of 2"),
        "{e}"
    );
}

#[test]
fn add_from_eight_threads_sums() {
    let (s, secret) = server();
    let addr = s.local_addr();
    let n = 8;
    let per = 50;
    // Rank 0 stays connected throughout, so the store outlives the adders' goodbyes.
    let mut c = client(&s, &secret, 0, n + 1);
    let threads: Vec<_> = (1..=n)
        .map(|r| {
            thread::spawn(move || {
                let mut c = StoreClient::connect(addr, &secret, r, n + 1, T).unwrap();
                (0..per)
                    .map(|_| c.add("ctr", r as i64).unwrap())
                    .collect::<Vec<i64>>()
            })
        })
        .collect();
    let mut returned = HashSet::new();
    for t in threads {
        for v in t.join().unwrap() {
            assert!(returned.insert(v), "two adds returned {v}: not atomic");
        }
    }
    let total = per as i64 * (1..=n as i64).sum::<i64>();
    assert_eq!(returned.len(), n * per);
    assert_eq!(returned.iter().max(), Some(&total));
    assert_eq!(c.get("ctr", T).unwrap(), total.to_string().into_bytes());
    assert_eq!(c.add("ctr", -total).unwrap(), 0);
    c.set("text", b"not a number").unwrap();
    let e = c.add("text", 1).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidUsage);
    assert!(e.message().contains("'text'"), "{e}");
    c.set("big", i64::MAX.to_string().as_bytes()).unwrap();
    assert_eq!(
        c.add("big", 1).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    // The connection survives server-side errors.
    assert_eq!(c.add("ctr", 5).unwrap(), 5);
}

#[test]
fn wrong_secret_is_rejected_and_the_server_keeps_serving() {
    let (s, secret) = server();
    let addr = s.local_addr();
    let mut wrong = secret;
    wrong[17] ^= 0x40;
    let e = StoreClient::connect(addr, &wrong, 0, 1, T).unwrap_err();
    assert!(
        matches!(e.kind(), ErrorKind::InvalidUsage | ErrorKind::Remote),
        "{e}"
    );
    let m = e.message();
    assert!(
        m.contains(&addr.to_string()) && m.contains("rank 0 of 1") && m.contains("secret"),
        "{m}"
    );

    // Junk instead of a preamble: one ack byte, then the server closes.
    let mut junk = TcpStream::connect(addr).unwrap();
    junk.set_read_timeout(Some(T)).unwrap();
    junk.write_all(&[b'G'; proto::PREAMBLE_BYTES]).unwrap();
    let mut back = Vec::new();
    junk.read_to_end(&mut back).unwrap();
    assert_eq!(back, vec![proto::ACK_BAD_MAGIC]);
    // A half-sent preamble, then a hang-up.
    let mut half = TcpStream::connect(addr).unwrap();
    half.write_all(&proto::preamble(&[0; 32])[..10]).unwrap();
    drop(half);

    let mut c = client(&s, &secret, 0, 1);
    assert_eq!(c.all_gather("a", b"ok", T).unwrap(), vec![b"ok".to_vec()]);
    c.goodbye().unwrap();
    assert!(s.wait_finished(T));
}

#[test]
fn a_recorded_handshake_cannot_be_replayed_and_the_secret_never_travels() {
    let (s, secret) = server();
    let addr = s.local_addr();
    let mut keep = client(&s, &secret, 0, 2);
    // A real rank's handshake, recorded, then replayed on a new connection: the server's
    // fresh nonce makes the recorded answer wrong.
    let (mut real, recorded, verdict) = raw_handshake(addr, &secret, 1, 2, None);
    assert_eq!(verdict, proto::ACK_OK);
    real.write_all(&Request::Hello { rank: 1, size: 2 }.encode().unwrap())
        .unwrap();
    assert_eq!(Reply::decode(&read_body(&mut real)).unwrap(), Reply::Ok);
    let (mut replayed, _, verdict) = raw_handshake(addr, &secret, 1, 2, Some(&recorded));
    assert_eq!(verdict, proto::ACK_BAD_SECRET);
    let mut rest = Vec::new();
    let _ = replayed.read_to_end(&mut rest);
    assert!(
        rest.is_empty(),
        "the server said more after rejecting: {rest:?}"
    );
    // Nothing a client sends contains the secret or the key.
    let (_, answer, _) = raw_handshake(addr, &secret, 1, 2, None);
    let key = Key::derive(&secret, auth::STORE);
    for needle in [&secret[..], &format!("{key:?}").into_bytes()[..]] {
        assert!(!answer.windows(needle.len()).any(|w| w == needle));
    }
    assert!(!proto::preamble(&[0; 32]).windows(32).any(|w| w == secret));
    // A HELLO for another rank than the one proven is refused.
    let (mut liar, _, verdict) = raw_handshake(addr, &secret, 1, 2, None);
    assert_eq!(verdict, proto::ACK_OK);
    liar.write_all(&Request::Hello { rank: 0, size: 2 }.encode().unwrap())
        .unwrap();
    assert!(matches!(
        Reply::decode(&read_body(&mut liar)).unwrap(),
        Reply::Error { .. }
    ));
    drop(real);
    keep.set("k", b"v").unwrap();
}

#[test]
fn all_gather_timeout_names_the_missing_ranks() {
    let (s, secret) = server();
    let mut c0 = client(&s, &secret, 0, 4);
    let mut c2 = client(&s, &secret, 2, 4);
    c2.set("addr/2", b"two").unwrap();
    let start = Instant::now();
    let e = c0
        .all_gather("addr", b"zero", Duration::from_millis(300))
        .unwrap_err();
    assert!(start.elapsed() >= Duration::from_millis(300));
    assert!(start.elapsed() < Duration::from_secs(3));
    assert_eq!(e.kind(), ErrorKind::Timeout);
    assert_eq!(
        e.message(),
        format!(
            "rank 0 of 4: waited 300ms at {} for ranks [1, 3] to publish 'addr'",
            s.local_addr()
        )
    );
    // Long lists are cut, with the count of the rest.
    let (s2, secret2) = server();
    let mut lone = client(&s2, &secret2, 0, 100);
    let e = lone
        .all_gather("k", b"", Duration::from_millis(50))
        .unwrap_err();
    assert!(e.message().contains("ranks [1, 2, 3,"), "{e}");
    assert!(e.message().contains(", 64] (and 35 more"), "{e}");
}

#[test]
fn wait_lists_missing_keys_and_returns_once_set() {
    let (s, secret) = server();
    let mut c = client(&s, &secret, 0, 1);
    c.set("a", b"1").unwrap();
    let e = c
        .wait(&["a", "b", "c"], Duration::from_millis(100))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout);
    assert!(e.message().contains("['b', 'c']"), "{e}");
    c.set("b", b"2").unwrap();
    c.set("c", b"3").unwrap();
    c.wait(&["a", "b", "c"], T).unwrap();
    c.wait(&[], Duration::ZERO).unwrap();
}

#[test]
fn size_mismatch_is_reported_to_the_later_rank() {
    let (s, secret) = server();
    let mut c0 = client(&s, &secret, 0, 4);
    let e = StoreClient::connect(s.local_addr(), &secret, 1, 3, T).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidUsage);
    assert!(
        e.message()
            .contains("rank 1 says the job has 3 ranks, but rank 0 said 4"),
        "{e}"
    );
    // Out-of-range ranks are caught before connecting; a duplicate rank by the server.
    let e = StoreClient::connect(s.local_addr(), &secret, 4, 4, T).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    let e = StoreClient::connect(s.local_addr(), &secret, 0, 4, T).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidUsage);
    assert!(e.message().contains("already connected"), "{e}");
    // The first rank is unaffected.
    c0.set("k", b"v").unwrap();
    assert_eq!(c0.get("k", T).unwrap(), b"v");
}

#[test]
fn server_ends_after_all_goodbyes_and_not_before() {
    let (s, secret) = server();
    let c: Vec<_> = (0..3).map(|r| client(&s, &secret, r, 3)).collect();
    let mut c = c.into_iter();
    c.next().unwrap().goodbye().unwrap();
    c.next().unwrap().goodbye().unwrap();
    thread::sleep(Duration::from_millis(300));
    assert!(!s.is_finished(), "ended while rank 2 was still connected");
    let mut last = c.next().unwrap();
    last.set("still", b"served").unwrap();
    drop(last); // Drop says goodbye too.
    assert!(
        s.wait_finished(T),
        "server still running after all goodbyes"
    );
    // Nobody listens any more: a late client gives up after its timeout.
    let e = StoreClient::connect(s.local_addr(), &secret, 0, 3, Duration::from_millis(200))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
}

#[test]
fn server_ends_when_ranks_vanish_without_goodbye() {
    let (s, secret) = server();
    let a = raw_hello(s.local_addr(), &secret, 0, 2);
    let b = raw_hello(s.local_addr(), &secret, 1, 2);
    drop(a);
    thread::sleep(Duration::from_millis(200));
    assert!(!s.is_finished());
    drop(b);
    assert!(s.wait_finished(T));
}

#[test]
fn server_ends_after_idle_timeout_but_not_while_a_client_is_connected() {
    let (idle, _) = server_with_idle(Duration::from_millis(200));
    assert!(idle.wait_finished(T), "idle server did not end");

    let (s, secret) = server_with_idle(Duration::from_millis(200));
    let mut c = client(&s, &secret, 0, 2);
    thread::sleep(Duration::from_millis(600));
    assert!(!s.is_finished(), "ended while a client was connected");
    c.set("k", b"v").unwrap();
    // Rank 1 never came, so the goodbye alone does not end it; the idle timeout does.
    c.goodbye().unwrap();
    assert!(s.wait_finished(T));
}

#[test]
fn shutdown_fails_a_blocked_get_promptly() {
    let (s, secret) = server();
    let mut c = client(&s, &secret, 0, 1);
    let getter = thread::spawn(move || {
        let start = Instant::now();
        (c.get("never", Duration::from_secs(30)), start.elapsed())
    });
    thread::sleep(Duration::from_millis(200));
    let start = Instant::now();
    s.shutdown();
    assert!(start.elapsed() < Duration::from_secs(4));
    let (r, waited) = getter.join().unwrap();
    let e = r.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Remote, "{e}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
}

#[test]
fn connect_retries_until_the_server_starts() {
    let addr = free_port();
    let secret = random_secret().unwrap();
    let t = thread::spawn(move || {
        let mut c = StoreClient::connect(addr, &secret, 0, 1, T)?;
        c.all_gather("x", b"late", T)
    });
    thread::sleep(Duration::from_millis(300));
    let s = StoreServer::spawn(addr, secret, T).unwrap();
    assert_eq!(t.join().unwrap().unwrap(), vec![b"late".to_vec()]);
    assert!(s.wait_finished(T));

    let e =
        StoreClient::connect(free_port(), &secret, 2, 3, Duration::from_millis(200)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout);
    assert!(
        e.message()
            .starts_with("rank 2 of 3: connecting to the store at 127.0.0.1:"),
        "{e}"
    );
}

#[test]
fn size_limits_are_enforced() {
    let (s, secret) = server();
    let mut c = client(&s, &secret, 0, 3);
    let e = c.set("big", &vec![0u8; MAX_VALUE_BYTES + 1]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(
        e.message().contains("16 MiB") && e.message().contains("'big'"),
        "{e}"
    );
    let long_key = "k".repeat(MAX_KEY_BYTES + 1);
    assert_eq!(
        c.set(&long_key, b"").unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    assert_eq!(
        c.get(&long_key, T).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    // The largest value goes through intact.
    let max: Vec<u8> = (0..MAX_VALUE_BYTES).map(|i| (i % 251) as u8).collect();
    c.set("max", &max).unwrap();
    assert!(c.get("max", T).unwrap() == max);

    // A frame over the limit from a client that skips the checks: an error reply, then close.
    let mut raw = raw_hello(s.local_addr(), &secret, 1, 3);
    raw.write_all(&((proto::MAX_FRAME_BYTES + 1) as u32).to_le_bytes())
        .unwrap();
    match Reply::decode(&read_body(&mut raw)).unwrap() {
        Reply::Error { kind, message } => {
            assert_eq!(kind, ErrorKind::InvalidArgument);
            assert!(message.contains("exceeds"), "{message}");
        }
        r => panic!("expected an error, got {r:?}"),
    }
    // A malformed request gets an error and the connection stays usable.
    let mut raw2 = raw_hello(s.local_addr(), &secret, 2, 3);
    raw2.write_all(&[1, 0, 0, 0, 0x7f]).unwrap();
    assert!(matches!(
        Reply::decode(&read_body(&mut raw2)).unwrap(),
        Reply::Error {
            kind: ErrorKind::InvalidArgument,
            ..
        }
    ));
    raw2.write_all(&Request::TryGet { key: "max".into() }.encode().unwrap())
        .unwrap();
    assert!(matches!(Reply::decode(&read_body(&mut raw2)).unwrap(), Reply::Value(v) if v == max));
}

#[test]
fn a_client_that_hangs_up_during_a_get_frees_the_server() {
    let (s, secret) = server();
    let mut raw = raw_hello(s.local_addr(), &secret, 0, 1);
    let get = Request::Get {
        keys: vec!["never".into()],
        timeout_ms: 60_000,
    };
    raw.write_all(&get.encode().unwrap()).unwrap();
    thread::sleep(Duration::from_millis(100));
    assert!(!s.is_finished());
    drop(raw);
    // The waiting connection thread notices within about HANGUP_CHECK, then the job is done.
    assert!(
        s.wait_finished(T),
        "server still waiting for a client that left"
    );
}

#[test]
fn socket_ifname_chooses_the_advertised_address_unless_the_root_is_loopback() {
    let remote: std::net::IpAddr = "10.9.8.7".parse().unwrap();
    let lo: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    assert_eq!(
        super::ifaddr::advertised_ip_for(remote, None).unwrap(),
        remote
    );
    assert_eq!(
        super::ifaddr::advertised_ip_for(remote, Some(" ")).unwrap(),
        remote
    );
    // `=lo` names the loopback interface exactly: its address is advertised.
    assert_eq!(
        super::ifaddr::advertised_ip_for(remote, Some("=lo")).unwrap(),
        lo
    );
    // Reached over loopback, every peer is local: the spec does not apply.
    assert_eq!(
        super::ifaddr::advertised_ip_for(lo, Some("=nosuchif0")).unwrap(),
        lo
    );
    let e = super::ifaddr::advertised_ip_for(remote, Some("=nosuchif0")).unwrap_err();
    assert!(e.message().contains("OXCCL_SOCKET_IFNAME"), "{e}");
}
