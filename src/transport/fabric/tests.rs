//! Unit tests of the fabric backend over libfabric's `tcp` and `shm` providers: handshake,
//! eager and RMA messages in both orders of posting, back-pressure, closing, bad handles.
//! Where libfabric is not installed they print why and pass, except under CI (`CI` set),
//! whose script installs it.

use std::time::{Duration, Instant};

use super::*;
use crate::transport::Transport;

/// Two transports on `provider`, or `None` (skip) where libfabric is absent.
fn pair(provider: &str) -> Option<(FabricTransport, FabricTransport)> {
    if let Err(e) = sys::lib() {
        assert!(
            std::env::var_os("CI").is_none(),
            "libfabric must be installed under CI: {e}"
        );
        eprintln!("skipping: {e}");
        return None;
    }
    let cfg = FabricConfig {
        provider: Some(provider.into()),
        bind_ip: Some([127, 0, 0, 1].into()),
    };
    let a = FabricTransport::new(cfg.clone()).expect("transport a");
    let b = FabricTransport::new(cfg).expect("transport b");
    Some((a, b))
}

/// Polls `f` (alternating progress on both sides) until it yields, for at most 10 s.
fn until<T>(
    a: &mut FabricTransport,
    b: &mut FabricTransport,
    mut f: impl FnMut(&mut FabricTransport, &mut FabricTransport) -> Result<Option<T>>,
) -> T {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f(a, b).expect("operation") {
            return v;
        }
        a.progress().expect("progress a");
        b.progress().expect("progress b");
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "no progress in 10 s"
        );
    }
}

/// Connects a to b: (a's sending end, b's receiving end).
fn connect(a: &mut FabricTransport, b: &mut FabricTransport) -> (FabricSendConn, FabricRecvConn) {
    let (h, mut l) = b.listen(0).expect("listen");
    let mut c = a.connect(0, &h).expect("connect");
    let s = until(a, b, |a, _| a.poll_connect(&mut c));
    let r = until(a, b, |_, b| b.accept(&mut l));
    (s, r)
}

fn pattern(n: usize, salt: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31) ^ salt).collect()
}

/// Messages of every size class, receives posted before and after the sends.
fn exchange(provider: &str) {
    let Some((mut a, mut b)) = pair(provider) else {
        return;
    };
    assert!(a.provider().starts_with(provider), "{}", a.provider());
    let (mut s, mut r) = connect(&mut a, &mut b);
    let sizes = [
        0usize,
        1,
        24,
        EAGER_MAX,
        EAGER_MAX + 1,
        1 << 20,
        (3 << 20) + 5,
    ];
    for (k, &n) in sizes.iter().enumerate() {
        for recv_first in [false, true] {
            let src = pattern(n, k as u8);
            let mut dst = vec![0u8; n + 7];
            let tag = [k as u64, n as u64, 7];
            let (mut rs, mut rr) = if recv_first {
                let rr = unsafe { b.irecv(&mut r, dst.as_mut_ptr(), dst.len(), None) };
                let rs = unsafe { a.isend(&mut s, src.as_ptr(), n, tag, None) };
                (rs.unwrap().unwrap(), rr.unwrap().unwrap())
            } else {
                let rs = unsafe { a.isend(&mut s, src.as_ptr(), n, tag, None) };
                // Let the message arrive before the receive is posted.
                for _ in 0..50 {
                    a.progress().unwrap();
                    b.progress().unwrap();
                }
                let rr = unsafe { b.irecv(&mut r, dst.as_mut_ptr(), dst.len(), None) };
                (rs.unwrap().unwrap(), rr.unwrap().unwrap())
            };
            let cs = until(&mut a, &mut b, |a, _| a.test(&mut rs));
            let cr = until(&mut a, &mut b, |_, b| b.test(&mut rr));
            assert_eq!(cs.bytes, n);
            assert_eq!((cr.bytes, cr.tag), (n, tag), "size {n}");
            assert!(dst[..n] == src[..], "{provider}: data of size {n} differ");
        }
    }
    a.close_send(s).unwrap();
    b.close_recv(r).unwrap();
}

#[test]
fn tcp_messages_of_every_size_arrive_intact() {
    exchange("tcp");
}

#[test]
fn shm_messages_of_every_size_arrive_intact() {
    exchange("shm");
}

/// Both sides connecting to each other at once.
#[test]
fn shm_simultaneous_connects_both_complete() {
    let Some((mut a, mut b)) = pair("shm") else {
        return;
    };
    let (ha, mut la) = a.listen(0).unwrap();
    let (hb, mut lb) = b.listen(0).unwrap();
    let mut ca = a.connect(0, &hb).unwrap();
    let mut cb = b.connect(0, &ha).unwrap();
    let _sa = until(&mut a, &mut b, |a, _| a.poll_connect(&mut ca));
    let _sb = until(&mut a, &mut b, |_, b| b.poll_connect(&mut cb));
    let _ra = until(&mut a, &mut b, |a, _| a.accept(&mut la));
    let _rb = until(&mut a, &mut b, |_, b| b.accept(&mut lb));
}

/// Endpoints made and driven on two threads, connecting both ways while waiting.
#[test]
fn shm_connects_from_two_threads() {
    if pair("shm").is_none() {
        return;
    }
    let mk = || {
        std::thread::spawn(|| {
            let cfg = FabricConfig {
                provider: Some("shm".into()),
                bind_ip: None,
            };
            FabricTransport::new(cfg).unwrap()
        })
    };
    let (a, b) = (mk(), mk());
    let (a, b) = (a.join().unwrap(), b.join().unwrap());
    let (ha, hb) = (a.handle.clone(), b.handle.clone());
    let go = |mut t: FabricTransport, h: ConnectHandle| {
        std::thread::spawn(move || {
            let (_, mut l) = t.listen(0).unwrap();
            let mut c = t.connect(0, &h).unwrap();
            let t0 = Instant::now();
            let mut got = (false, false);
            while !(got.0 && got.1) {
                if !got.0 && t.poll_connect(&mut c).unwrap().is_some() {
                    got.0 = true;
                }
                if !got.1 && t.accept(&mut l).unwrap().is_some() {
                    got.1 = true;
                }
                assert!(
                    t0.elapsed() < Duration::from_secs(5),
                    "stuck {got:?} backlog {}",
                    t.backlog.len()
                );
                t.wait_activity(Duration::from_micros(200)).unwrap();
            }
            t
        })
    };
    let x = go(a, hb);
    let y = go(b, ha);
    // Both transports stay open until both threads are done: one dropped early says `Bye`,
    // and its peer, still waiting for the connection, would rightly fail.
    let tx = x.join().unwrap();
    let ty = y.join().unwrap();
    drop((tx, ty));
}

#[test]
fn a_handle_from_another_provider_or_backend_is_a_clear_error() {
    let Some((mut a, _b)) = pair("tcp") else {
        return;
    };
    let other = listen::encode_handle("shm", b"fi_shm://1:0:0").unwrap();
    let e = a.connect(0, &other).expect_err("provider mismatch");
    assert!(e.to_string().contains("OXCCL_FABRIC_PROVIDER"), "{e}");
    let junk = ConnectHandle::new(&[1, 2, 3, 4, 5]).unwrap();
    let e = a.connect(0, &junk).expect_err("not a fabric handle");
    assert!(e.to_string().contains("malformed"), "{e}");
    let e = FabricTransport::new(FabricConfig {
        provider: Some("no-such-provider".into()),
        bind_ip: None,
    })
    .err()
    .expect("unknown provider");
    assert!(
        e.to_string().contains("no-such-provider") && e.to_string().contains("tcp"),
        "{e}"
    );
}

/// A receiver that closes right after its last receive completed: the sender's write of
/// that message completes even if its own completion comes after the receiver's `Close`
/// (shm completes a write only once the receiver answers, so a rank that ends its job
/// first could fail the peer's last send), and a message the receiver never took fails.
fn closing_receiver_keeps_what_it_received(provider: &str) {
    let Some((mut a, mut b)) = pair(provider) else {
        return;
    };
    let (mut s, mut r) = connect(&mut a, &mut b);
    let big = pattern(1 << 20, 3);
    let mut dst = vec![0u8; big.len()];
    let mut rr = unsafe { b.irecv(&mut r, dst.as_mut_ptr(), dst.len(), None) }
        .unwrap()
        .unwrap();
    let mut first = unsafe { a.isend(&mut s, big.as_ptr(), big.len(), [1; 3], None) }
        .unwrap()
        .unwrap();
    let mut second = unsafe { a.isend(&mut s, big.as_ptr(), big.len(), [2; 3], None) }
        .unwrap()
        .unwrap();
    until(&mut a, &mut b, |_, b| b.test(&mut rr));
    assert!(dst == big);
    // The sender has not seen its write complete yet (as when the answer is still on its
    // way): the write's completion is taken back.
    if let Some(op) = a.sends.get_mut(s.0).and_then(|c| c.ops.get_mut(0)) {
        op.state = SendState::Writing;
    }
    b.close_recv(r).unwrap();
    let t0 = Instant::now();
    let (mut done, mut failed) = (None, None);
    while done.is_none() || failed.is_none() {
        b.progress().unwrap();
        if done.is_none() {
            done = a
                .test(&mut first)
                .expect("the received message's send")
                .map(|c| c.bytes);
        }
        if failed.is_none() {
            match a.test(&mut second) {
                Ok(None) => {}
                Ok(Some(_)) => panic!("{provider}: a send the receiver never took completed"),
                Err(e) => failed = Some(e),
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "{provider}: no outcome in 5 s"
        );
    }
    assert_eq!(done, Some(big.len()));
    let e = failed.unwrap();
    assert_eq!(e.kind(), ErrorKind::Remote, "{e}");
    assert!(e.to_string().contains("closed the connection"), "{e}");
}

#[test]
fn tcp_closing_receiver_keeps_what_it_received() {
    closing_receiver_keeps_what_it_received("tcp");
}

#[test]
fn shm_closing_receiver_keeps_what_it_received() {
    closing_receiver_keeps_what_it_received("shm");
}

#[test]
fn only_rxm_over_verbs_drains_before_close() {
    assert!(super::close::rxm_over_verbs("verbs;ofi_rxm"));
    for p in ["tcp;ofi_rxm", "shm", "verbs", "uet", ""] {
        assert!(!super::close::rxm_over_verbs(p), "{p}");
    }
}

#[test]
fn stale_shm_names_of_this_pid_are_removed_and_no_others() {
    let dir = std::env::temp_dir().join(format!("oxccl-shm-names-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let names = [
        "4242:0:0",
        "4242:0:17",
        "4242:x",
        "42420:0:0",
        "424:0:0",
        "4242:",
    ];
    for n in names {
        std::fs::write(dir.join(n), b"").unwrap();
    }
    super::endpoint::remove_names_of(&dir, 4242);
    let mut left: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(left, ["42420:0:0", "4242:", "4242:x", "424:0:0"]);
}

#[test]
fn fuzz_headers_decode_or_refuse_and_round_trip() {
    let valid = super::conn::fuzz_header_seed();
    for b in crate::fuzz::inputs(&[valid], 30_000, 31) {
        super::conn::fuzz_header(&b);
    }
}
