//! Tests of the mem backend: message semantics, faults, kill and close, handles, a
//! multi-threaded all-to-all, and seed determinism. Every test names its seed on failure.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::rng::Rng;
use super::*;
use crate::error::ErrorKind;

/// Bound on every polling loop of a single-threaded test.
const POLL_LIMIT: usize = 1_000_000;

/// Prints the seed of a failing test (a panic unwinds through it).
struct SeedGuard {
    test: &'static str,
    seed: u64,
}

impl Drop for SeedGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("mem test `{}` failed with seed {}", self.test, self.seed);
        }
    }
}

fn guard(test: &'static str, seed: u64) -> SeedGuard {
    SeedGuard { test, seed }
}

fn faulty(backpressure: f64, delay: f64, max_in_flight: usize) -> MemFaults {
    MemFaults {
        connect_delay_polls: 3,
        backpressure,
        max_in_flight,
        delay,
    }
}

/// A connection from `a` to `b`, polled to completion.
fn connect(a: &mut MemTransport, b: &mut MemTransport) -> (MemSendConn, MemRecvConn) {
    let (handle, mut listener) = b.listen(0).unwrap();
    let mut pending = a.connect(0, &handle).unwrap();
    let send = (0..POLL_LIMIT)
        .find_map(|_| a.poll_connect(&mut pending).unwrap())
        .expect("connect never finished");
    let recv = (0..POLL_LIMIT)
        .find_map(|_| b.accept(&mut listener).unwrap())
        .expect("accept never finished");
    b.close_listen(listener).unwrap();
    (send, recv)
}

/// Two endpoints of a fresh fabric and a connection from the first to the second.
fn pair(
    seed: u64,
    faults: MemFaults,
) -> (
    Arc<MemFabric>,
    MemTransport,
    MemTransport,
    MemSendConn,
    MemRecvConn,
) {
    let fabric = MemFabric::new(seed, faults);
    let mut a = fabric.endpoint();
    let mut b = fabric.endpoint();
    let (s, r) = connect(&mut a, &mut b);
    (fabric, a, b, s, r)
}

/// Posts a send of `buf`, retrying "no room now". The caller keeps `buf` alive and
/// unmodified until the request finishes.
fn send(t: &mut MemTransport, c: &mut MemSendConn, buf: &[u8], tag: Tag) -> MemRequest {
    (0..POLL_LIMIT)
        // SAFETY: the callers keep `buf` alive and unmodified while the request is pending.
        .find_map(|_| unsafe { t.isend(c, buf.as_ptr(), buf.len(), tag, None) }.unwrap())
        .expect("isend never had room")
}

/// Posts a receive into `buf`, retrying "no room now". The caller keeps `buf` alive and
/// untouched until the request finishes.
fn recv(t: &mut MemTransport, c: &mut MemRecvConn, buf: &mut [u8]) -> MemRequest {
    (0..POLL_LIMIT)
        // SAFETY: the callers keep `buf` alive and untouched while the request is pending.
        .find_map(|_| unsafe { t.irecv(c, buf.as_mut_ptr(), buf.len(), None) }.unwrap())
        .expect("irecv never had room")
}

/// Polls `req` until it finishes.
fn wait(t: &mut MemTransport, req: &mut MemRequest) -> Result<Completion> {
    for _ in 0..POLL_LIMIT {
        if let Some(done) = t.test(req)? {
            return Ok(done);
        }
    }
    panic!("request never finished");
}

fn pattern(seed: u64, msg: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|k| (seed as usize ^ (msg * 131 + k * 7 + k / 251)) as u8)
        .collect()
}

#[test]
fn messages_arrive_in_order_with_tags() {
    let _g = guard("messages_arrive_in_order_with_tags", 1);
    let (_f, mut a, mut b, mut s, mut r) = pair(1, MemFaults::default());
    let sizes = [0usize, 1, 1000, (1 << 20) + 3];
    let data: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| pattern(1, i, n))
        .collect();
    let mut bufs: Vec<Vec<u8>> = sizes.iter().map(|&n| vec![0xEE; n + 16]).collect();
    let mut sends: Vec<MemRequest> = data
        .iter()
        .enumerate()
        .map(|(i, d)| send(&mut a, &mut s, d, [i as u64, 100 + i as u64, 7]))
        .collect();
    // Nothing completes before the receives are posted.
    assert_eq!(a.test(&mut sends[0]).unwrap(), None);
    let mut recvs: Vec<MemRequest> = bufs
        .iter_mut()
        .map(|buf| recv(&mut b, &mut r, buf))
        .collect();
    for (i, req) in recvs.iter_mut().enumerate() {
        let done = wait(&mut b, req).unwrap();
        assert_eq!(done.bytes, sizes[i]);
        assert_eq!(done.tag, [i as u64, 100 + i as u64, 7]);
    }
    for (i, req) in sends.iter_mut().enumerate() {
        let done = wait(&mut a, req).unwrap();
        assert_eq!(done.bytes, sizes[i]);
        assert_eq!(done.tag, [i as u64, 100 + i as u64, 7]);
    }
    for (i, buf) in bufs.iter().enumerate() {
        assert!(buf[..sizes[i]] == data[i][..], "message {i} corrupted");
        assert!(
            buf[sizes[i]..].iter().all(|&x| x == 0xEE),
            "message {i} overran"
        );
    }
}

#[test]
fn data_is_copied_only_at_rendezvous() {
    let _g = guard("data_is_copied_only_at_rendezvous", 2);
    let (_f, mut a, mut b, mut s, mut r) = pair(2, MemFaults::default());
    let mut src = vec![1u8; 64];
    let p = src.as_mut_ptr();
    // SAFETY: `src` outlives the request; the one write below goes through the same raw
    // pointer while no receive is posted, to show that the copy waits for the rendezvous.
    let mut sq = unsafe { a.isend(&mut s, p, 64, [0; 3], None) }
        .unwrap()
        .unwrap();
    for _ in 0..10 {
        assert_eq!(
            a.test(&mut sq).unwrap(),
            None,
            "send finished without a receive"
        );
    }
    // SAFETY: `p` points at the 64 bytes of `src`.
    unsafe { p.write_bytes(9, 64) };
    let mut dst = vec![0u8; 64];
    let mut rq = recv(&mut b, &mut r, &mut dst);
    assert_eq!(wait(&mut a, &mut sq).unwrap().bytes, 64);
    assert_eq!(wait(&mut b, &mut rq).unwrap().bytes, 64);
    assert!(
        dst.iter().all(|&x| x == 9),
        "data copied before the receive was posted"
    );
    drop(src);
}

#[test]
fn many_in_flight_under_faults() {
    const N: usize = 300;
    const ROOM: usize = 5000;
    for seed in [1u64, 2, 3, 7, 42, 0xDEAD_BEEF] {
        let _g = guard("many_in_flight_under_faults", seed);
        let (_f, mut a, mut b, mut s, mut r) = pair(seed, faulty(0.3, 0.5, 8));
        let lens: Vec<usize> = (0..N).map(|i| (i * 977 + seed as usize) % ROOM).collect();
        let data: Vec<Vec<u8>> = (0..N).map(|i| pattern(seed, i, lens[i])).collect();
        let mut bufs: Vec<Vec<u8>> = (0..N).map(|_| vec![0u8; ROOM]).collect();
        let (mut sends, mut recvs) = (Vec::new(), Vec::new());
        let (mut next_s, mut next_r, mut done_s, mut done_r) = (0, 0, 0, 0);
        let (mut refused, mut hidden) = (0, 0);
        let mut steps = 0;
        while done_s < N || done_r < N {
            steps += 1;
            assert!(
                steps < 200_000,
                "no progress: {done_s} sends, {done_r} receives"
            );
            if next_s < N {
                let (ptr, len, tag) = (
                    data[next_s].as_ptr(),
                    lens[next_s],
                    [seed, next_s as u64, 1],
                );
                // SAFETY: `data` lives, unmodified, until the end of the test.
                match unsafe { a.isend(&mut s, ptr, len, tag, None) }.unwrap() {
                    Some(q) => {
                        sends.push((next_s, q));
                        next_s += 1;
                    }
                    None => refused += 1,
                }
            }
            if next_r < N {
                let ptr = bufs[next_r].as_mut_ptr();
                // SAFETY: each buffer of `bufs` is read only after all requests finished.
                match unsafe { b.irecv(&mut r, ptr, ROOM, None) }.unwrap() {
                    Some(q) => {
                        recvs.push((next_r, q));
                        next_r += 1;
                    }
                    None => refused += 1,
                }
            }
            assert!(
                sends.len() <= 8 && recvs.len() <= 8,
                "max_in_flight ignored"
            );
            sends.retain_mut(|(i, q)| match a.test(q).unwrap() {
                None => {
                    hidden += 1;
                    true
                }
                Some(c) => {
                    assert_eq!((c.bytes, c.tag), (lens[*i], [seed, *i as u64, 1]));
                    done_s += 1;
                    false
                }
            });
            recvs.retain_mut(|(i, q)| match b.test(q).unwrap() {
                None => true,
                Some(c) => {
                    assert_eq!((c.bytes, c.tag), (lens[*i], [seed, *i as u64, 1]));
                    done_r += 1;
                    false
                }
            });
        }
        assert!(refused > 0 && hidden > 0, "faults never fired");
        for i in 0..N {
            assert!(bufs[i][..lens[i]] == data[i][..], "message {i} corrupted");
        }
    }
}

#[test]
fn too_long_message_is_invalid_usage() {
    let _g = guard("too_long_message_is_invalid_usage", 3);
    let (_f, mut a, mut b, mut s, mut r) = pair(3, MemFaults::default());
    let big = vec![5u8; 100];
    let mut small = vec![0u8; 50];
    let mut sq = send(&mut a, &mut s, &big, [1, 2, 3]);
    let mut rq = recv(&mut b, &mut r, &mut small);
    // The receive reports the message's length and tag (the engine names the mismatch).
    let c = wait(&mut b, &mut rq).unwrap();
    assert_eq!((c.bytes, c.tag), (100, [1, 2, 3]));
    // The sender learns of the mismatch too (and so can tell every rank).
    let e = wait(&mut a, &mut sq).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidUsage, "{e}");
    assert!(
        small.iter().all(|&x| x == 0),
        "rejected message was written"
    );
    assert_eq!(a.test(&mut sq).unwrap_err().kind(), ErrorKind::InvalidUsage);
    // The next message pairs with the next receive.
    let next = vec![7u8; 10];
    let mut room = vec![0u8; 50];
    let mut sq = send(&mut a, &mut s, &next, [4, 5, 6]);
    let mut rq = recv(&mut b, &mut r, &mut room);
    assert_eq!(
        wait(&mut b, &mut rq).unwrap(),
        Completion {
            bytes: 10,
            tag: [4, 5, 6]
        }
    );
    assert_eq!(wait(&mut a, &mut sq).unwrap().bytes, 10);
    assert!(room[..10].iter().all(|&x| x == 7) && room[10..].iter().all(|&x| x == 0));
}

fn assert_remote(r: Result<impl std::fmt::Debug>, needle: &str) {
    let e = r.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Remote, "{e}");
    assert!(
        e.message().contains(needle),
        "`{e}` does not say `{needle}`"
    );
}

#[test]
fn kill_fails_both_sides() {
    let _g = guard("kill_fails_both_sides", 4);
    let fabric = MemFabric::new(4, MemFaults::default());
    let mut a = fabric.endpoint();
    let mut b = fabric.endpoint();
    let (mut ab_s, mut ab_r) = connect(&mut a, &mut b);
    let (mut ba_s, _ba_r) = connect(&mut b, &mut a);
    let (handle_a, _listener_a) = a.listen(0).unwrap();
    let out_a = vec![1u8; 32];
    let out_b = vec![2u8; 32];
    let mut a_send = send(&mut a, &mut ab_s, &out_a, [0; 3]);
    let mut b_send = send(&mut b, &mut ba_s, &out_b, [0; 3]);
    fabric.kill(a.id());
    assert_remote(a.test(&mut a_send), "endpoint 0 was killed");
    assert_remote(a.devices(), "endpoint 0 was killed");
    assert_remote(
        a.wait_activity(Duration::from_millis(1)),
        "endpoint 0 was killed",
    );
    assert_remote(b.test(&mut b_send), "peer endpoint 0 was killed");
    let mut inbox = vec![0u8; 32];
    // SAFETY: `inbox` outlives the call; it fails, so nothing is posted.
    let posted = unsafe { b.irecv(&mut ab_r, inbox.as_mut_ptr(), 32, None) };
    assert_remote(posted, "peer endpoint 0 was killed");
    assert!(inbox.iter().all(|&x| x == 0));
    let mut pending = b.connect(0, &handle_a).unwrap();
    assert_remote(b.poll_connect(&mut pending), "peer endpoint 0 was killed");
    assert!(b.devices().is_ok(), "the survivor must keep working");
}

#[test]
fn close_fails_the_peer() {
    let _g = guard("close_fails_the_peer", 5);
    // Closing the sending end fails pending and future receives.
    let (_f, mut a, mut b, s, mut r) = pair(5, MemFaults::default());
    let mut buf = vec![0u8; 8];
    let mut rq = recv(&mut b, &mut r, &mut buf);
    a.close_send(s).unwrap();
    assert_remote(wait(&mut b, &mut rq), "connection closed by peer");
    // SAFETY: `buf` outlives the call; it fails, so nothing is posted.
    let again = unsafe { b.irecv(&mut r, buf.as_mut_ptr(), 8, None) };
    assert_remote(again, "connection closed by peer");

    // Closing the receiving end fails pending and future sends.
    let (_f, mut a, mut b, mut s, r) = pair(5, MemFaults::default());
    let src = vec![3u8; 8];
    let mut sq = send(&mut a, &mut s, &src, [0; 3]);
    b.close_recv(r).unwrap();
    assert_remote(wait(&mut a, &mut sq), "connection closed by peer");
    // SAFETY: `src` outlives the call; it fails, so nothing is posted.
    let again = unsafe { a.isend(&mut s, src.as_ptr(), 8, [0; 3], None) };
    assert_remote(again, "connection closed by peer");

    // Dropping the transport closes its connections.
    let (_f, mut a, b, mut s, _r) = pair(5, MemFaults::default());
    let mut sq = send(&mut a, &mut s, &src, [0; 3]);
    drop(b);
    assert_remote(wait(&mut a, &mut sq), "connection closed by peer");

    // A transfer that completed before the close still completes.
    let (_f, mut a, mut b, mut s, mut r) = pair(5, MemFaults::default());
    let mut dst = vec![0u8; 8];
    let sq = send(&mut a, &mut s, &src, [9; 3]);
    let mut rq = recv(&mut b, &mut r, &mut dst);
    drop(sq);
    a.close_send(s).unwrap();
    assert_eq!(wait(&mut b, &mut rq).unwrap().tag, [9; 3]);
    assert_eq!(dst, src);
}

#[test]
fn connect_delay_is_honoured() {
    let faults = MemFaults {
        connect_delay_polls: 5,
        ..MemFaults::default()
    };
    let mut seen = std::collections::BTreeSet::new();
    for seed in 0..20u64 {
        let _g = guard("connect_delay_is_honoured", seed);
        let fabric = MemFabric::new(seed, faults.clone());
        let mut a = fabric.endpoint();
        let mut b = fabric.endpoint();
        let (h, mut l) = b.listen(0).unwrap();
        let mut p = a.connect(0, &h).unwrap();
        let mut nones = 0;
        let _s = loop {
            match a.poll_connect(&mut p).unwrap() {
                Some(c) => break c,
                None => {
                    nones += 1;
                    assert!(nones <= 5, "more than 5 delayed polls");
                    assert!(b.accept(&mut l).unwrap().is_none(), "accepted too early");
                }
            }
        };
        assert!(b.accept(&mut l).unwrap().is_some());
        assert_eq!(
            a.poll_connect(&mut p).unwrap_err().kind(),
            ErrorKind::InvalidUsage
        );
        seen.insert(nones);
    }
    assert!(seen.len() >= 3, "delays drawn: {seen:?}");
    // Without the fault the first poll connects.
    let fabric = MemFabric::new(0, MemFaults::default());
    let mut a = fabric.endpoint();
    let mut b = fabric.endpoint();
    let (h, _l) = b.listen(0).unwrap();
    let mut p = a.connect(0, &h).unwrap();
    assert!(a.poll_connect(&mut p).unwrap().is_some());
}

#[test]
fn foreign_and_bad_handles_are_rejected() {
    let _g = guard("foreign_and_bad_handles_are_rejected", 9);
    let f1 = MemFabric::new(9, MemFaults::default());
    let f2 = MemFabric::new(9, MemFaults::default());
    let mut a = f1.endpoint();
    let mut x = f2.endpoint();
    let (h, l) = a.listen(0).unwrap();
    assert!(h.as_bytes().len() <= crate::transport::MAX_HANDLE_BYTES);
    let kind = |r: Result<MemConnecting>| r.unwrap_err().kind();
    assert_eq!(kind(x.connect(0, &h)), ErrorKind::InvalidArgument);
    let junk = ConnectHandle::new(b"not a mem handle").unwrap();
    assert_eq!(kind(a.connect(0, &junk)), ErrorKind::InvalidArgument);
    assert_eq!(kind(a.connect(1, &h)), ErrorKind::InvalidArgument);
    assert_eq!(a.listen(1).unwrap_err().kind(), ErrorKind::InvalidArgument);
    // A closed listener refuses.
    let mut b = f1.endpoint();
    a.close_listen(l).unwrap();
    let mut p = b.connect(0, &h).unwrap();
    assert_remote(b.poll_connect(&mut p), "refused");
}

const RANKS: usize = 8;
const CHUNKS: usize = 4;
const CHUNK: usize = 16 << 10;

fn a2a_byte(seed: u64, src: usize, dst: usize, chunk: usize, k: usize) -> u8 {
    (seed as usize).wrapping_add(src * 41 + dst * 23 + chunk * 11 + k * 3 + k / 256) as u8
}

/// One rank of the all-to-all: connects to every peer, sends each a 64 KiB pattern in
/// `CHUNKS` messages, receives theirs, and checks them.
fn a2a_rank(
    seed: u64,
    mut t: MemTransport,
    mut listener: MemListener,
    handles: Arc<Vec<ConnectHandle>>,
) -> std::result::Result<(), String> {
    let me = t.id();
    let deadline = Instant::now() + Duration::from_secs(5);
    let fail = |what: &str, e: Error| format!("rank {me}: {what}: {e}");
    let mut pending = Vec::new();
    for peer in (0..RANKS).filter(|&p| p != me) {
        let c = t
            .connect(0, &handles[peer])
            .map_err(|e| fail("connect", e))?;
        pending.push((peer, c));
    }
    let mut out: Vec<Option<MemSendConn>> = (0..RANKS).map(|_| None).collect();
    let mut ins: Vec<MemRecvConn> = Vec::new();
    while !pending.is_empty() || ins.len() < RANKS - 1 {
        if Instant::now() > deadline {
            return Err(format!("rank {me}: connection setup timed out"));
        }
        let mut progressed = false;
        let mut i = 0;
        while i < pending.len() {
            match t.poll_connect(&mut pending[i].1) {
                Ok(Some(c)) => {
                    out[pending[i].0] = Some(c);
                    pending.swap_remove(i);
                    progressed = true;
                }
                Ok(None) => i += 1,
                Err(e) => return Err(fail("poll_connect", e)),
            }
        }
        if let Some(c) = t.accept(&mut listener).map_err(|e| fail("accept", e))? {
            ins.push(c);
            progressed = true;
        }
        if !progressed {
            t.wait_activity(Duration::from_millis(1))
                .map_err(|e| fail("wait", e))?;
        }
    }

    let data: Vec<Vec<u8>> = (0..RANKS)
        .map(|dst| {
            (0..CHUNKS * CHUNK)
                .map(|i| a2a_byte(seed, me, dst, i / CHUNK, i % CHUNK))
                .collect()
        })
        .collect();
    let mut inbox: Vec<Vec<u8>> = (0..ins.len()).map(|_| vec![0u8; CHUNKS * CHUNK]).collect();
    let mut tags = vec![[[u64::MAX; 3]; CHUNKS]; ins.len()];
    // Requests are declared after the buffers, so they are dropped first on every path.
    let mut next_send = [0usize; RANKS];
    let mut next_recv = vec![0usize; ins.len()];
    let mut sends: Vec<(usize, usize, MemRequest)> = Vec::new();
    let mut recvs: Vec<(usize, usize, MemRequest)> = Vec::new();
    let (mut sent, mut received) = (0, 0);
    let total = (RANKS - 1) * CHUNKS;
    while sent < total || received < total {
        if Instant::now() > deadline {
            return Err(format!(
                "rank {me}: sent {sent}, received {received}: timed out"
            ));
        }
        let mut progressed = false;
        for (dst, conn) in out.iter_mut().enumerate() {
            let Some(conn) = conn else { continue };
            let c = next_send[dst];
            if c < CHUNKS {
                let ptr = data[dst][c * CHUNK..].as_ptr();
                let tag = [me as u64, dst as u64, c as u64];
                // SAFETY: `data` outlives every request and is never modified.
                let q = unsafe { t.isend(conn, ptr, CHUNK, tag, None) };
                if let Some(q) = q.map_err(|e| fail("isend", e))? {
                    sends.push((dst, c, q));
                    next_send[dst] += 1;
                    progressed = true;
                }
            }
        }
        for (j, conn) in ins.iter_mut().enumerate() {
            let c = next_recv[j];
            if c < CHUNKS {
                let ptr = inbox[j][c * CHUNK..].as_mut_ptr();
                // SAFETY: `inbox` outlives every request and is read only at the end.
                let q = unsafe { t.irecv(conn, ptr, CHUNK, None) };
                if let Some(q) = q.map_err(|e| fail("irecv", e))? {
                    recvs.push((j, c, q));
                    next_recv[j] += 1;
                    progressed = true;
                }
            }
        }
        let mut i = 0;
        while i < sends.len() {
            let (dst, c, q) = &mut sends[i];
            match t.test(q).map_err(|e| fail("test send", e))? {
                None => i += 1,
                Some(done) => {
                    if done.bytes != CHUNK || done.tag != [me as u64, *dst as u64, *c as u64] {
                        return Err(format!("rank {me}: bad send completion {done:?}"));
                    }
                    sends.swap_remove(i);
                    sent += 1;
                    progressed = true;
                }
            }
        }
        let mut i = 0;
        while i < recvs.len() {
            let (j, c, q) = &mut recvs[i];
            match t.test(q).map_err(|e| fail("test recv", e))? {
                None => i += 1,
                Some(done) => {
                    if done.bytes != CHUNK {
                        return Err(format!("rank {me}: short receive {done:?}"));
                    }
                    tags[*j][*c] = done.tag;
                    recvs.swap_remove(i);
                    received += 1;
                    progressed = true;
                }
            }
        }
        if !progressed {
            t.wait_activity(Duration::from_millis(1))
                .map_err(|e| fail("wait", e))?;
        }
    }

    let mut sources = Vec::new();
    for (j, buf) in inbox.iter().enumerate() {
        let src = tags[j][0][0] as usize;
        for (c, tag) in tags[j].iter().enumerate() {
            if *tag != [src as u64, me as u64, c as u64] {
                return Err(format!(
                    "rank {me}: connection {j} chunk {c} has tag {tag:?}"
                ));
            }
            for k in 0..CHUNK {
                if buf[c * CHUNK + k] != a2a_byte(seed, src, me, c, k) {
                    return Err(format!(
                        "rank {me}: from {src} chunk {c} byte {k} corrupted"
                    ));
                }
            }
        }
        sources.push(src);
    }
    sources.sort_unstable();
    let expected: Vec<usize> = (0..RANKS).filter(|&p| p != me).collect();
    if sources != expected {
        return Err(format!("rank {me}: received from {sources:?}"));
    }
    Ok(())
}

#[test]
fn all_to_all_8_threads_under_faults() {
    for seed in [11u64, 12, 13, 14, 15] {
        let _g = guard("all_to_all_8_threads_under_faults", seed);
        let fabric = MemFabric::new(seed, faulty(0.2, 0.3, 2));
        let mut ranks = Vec::new();
        let mut handles = Vec::new();
        for _ in 0..RANKS {
            let mut t = fabric.endpoint();
            let (h, l) = t.listen(0).unwrap();
            handles.push(h);
            ranks.push((t, l));
        }
        let handles = Arc::new(handles);
        let threads: Vec<_> = ranks
            .into_iter()
            .map(|(t, l)| {
                let h = Arc::clone(&handles);
                std::thread::spawn(move || a2a_rank(seed, t, l, h))
            })
            .collect();
        let results: Vec<_> = threads
            .into_iter()
            .map(|th| th.join().expect("rank thread panicked"))
            .collect();
        for r in results {
            if let Err(e) = r {
                panic!("seed {seed}: {e}");
            }
        }
    }
}

/// Runs a fixed single-threaded script and records every fault decision it observed.
fn fault_trace(seed: u64) -> Vec<u32> {
    let faults = MemFaults {
        connect_delay_polls: 6,
        backpressure: 0.5,
        max_in_flight: 4,
        delay: 0.5,
    };
    let fabric = MemFabric::new(seed, faults);
    let mut a = fabric.endpoint();
    let mut b = fabric.endpoint();
    let mut trace = Vec::new();
    let (h, mut l) = b.listen(0).unwrap();
    let mut p = a.connect(0, &h).unwrap();
    let mut nones = 0;
    let mut s = loop {
        match a.poll_connect(&mut p).unwrap() {
            Some(c) => break c,
            None => nones += 1,
        }
        assert!(nones <= 6, "connect delayed past its limit");
    };
    trace.push(nones);
    let mut r = b.accept(&mut l).unwrap().unwrap();
    let src = [1u8; 64];
    let mut dst = vec![0u8; 64];
    for _ in 0..40 {
        let mut nones = 0;
        let mut sq = loop {
            // SAFETY: `src` outlives the request, unmodified.
            match unsafe { a.isend(&mut s, src.as_ptr(), 64, [0; 3], None) }.unwrap() {
                Some(q) => break q,
                None => nones += 1,
            }
            assert!(nones < 10_000, "never had room");
        };
        trace.push(nones);
        nones = 0;
        let mut rq = loop {
            // SAFETY: `dst` outlives the request and is not touched until it finished.
            match unsafe { b.irecv(&mut r, dst.as_mut_ptr(), 64, None) }.unwrap() {
                Some(q) => break q,
                None => nones += 1,
            }
            assert!(nones < 10_000, "never had room");
        };
        trace.push(nones);
        for (t, q) in [(&mut a, &mut sq), (&mut b, &mut rq)] {
            let mut nones = 0;
            while t.test(q).unwrap().is_none() {
                nones += 1;
                assert!(nones < 10_000, "request never finished");
            }
            trace.push(nones);
        }
    }
    trace
}

#[test]
fn same_seed_same_fault_decisions() {
    let _g = guard("same_seed_same_fault_decisions", 21);
    let first = fault_trace(21);
    assert_eq!(first, fault_trace(21));
    assert_ne!(first, fault_trace(22));
    assert!(first.iter().any(|&n| n > 0), "no fault fired: {first:?}");
}

#[test]
fn rng_streams_are_reproducible_and_distinct() {
    let _g = guard("rng_streams_are_reproducible_and_distinct", 5);
    let draw = |seed, id| {
        let mut g = Rng::for_endpoint(seed, id);
        (0..64).map(|_| g.next_u64()).collect::<Vec<_>>()
    };
    assert_eq!(draw(5, 0), draw(5, 0));
    assert_ne!(draw(5, 0), draw(5, 1));
    assert_ne!(draw(5, 0), draw(6, 0));
    let mut g = Rng::for_endpoint(5, 3);
    let mut hits = [0u32; 10];
    for _ in 0..10_000 {
        hits[g.below(10) as usize] += 1;
    }
    assert!(hits.iter().all(|&h| (800..1200).contains(&h)), "{hits:?}");
    let heads = (0..10_000).filter(|_| g.chance(0.25)).count();
    assert!((2200..2800).contains(&heads), "{heads}");
    assert!(!g.chance(0.0) && g.chance(1.0));
}

#[test]
fn device_registration_and_in_flight_limit() {
    let _g = guard("device_registration_and_in_flight_limit", 6);
    let faults = MemFaults {
        max_in_flight: 3,
        ..MemFaults::default()
    };
    let (_f, mut a, mut b, mut s, mut r) = pair(6, faults);
    assert_eq!(a.name(), "mem");
    let devs = a.devices().unwrap();
    assert_eq!(devs.len(), 1);
    assert_eq!(
        (
            devs[0].name.as_str(),
            devs[0].speed_mbps,
            devs[0].latency_us
        ),
        ("mem", 100_000, 1.0)
    );
    assert_eq!(devs[0].caps.max_requests, 3);
    let e = a.register(std::ptr::null(), 8).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    a.register(std::ptr::null(), 0).unwrap();
    a.deregister(()).unwrap();
    // A null buffer is refused for data, accepted for an empty message.
    // SAFETY: the calls fail or carry no bytes.
    let e = unsafe { a.isend(&mut s, std::ptr::null(), 8, [0; 3], None) }.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);

    let src = vec![4u8; 16];
    let mut q: Vec<MemRequest> = (0..3).map(|_| send(&mut a, &mut s, &src, [0; 3])).collect();
    // SAFETY: `src` outlives the request.
    let fourth = unsafe { a.isend(&mut s, src.as_ptr(), 16, [0; 3], None) }.unwrap();
    assert!(fourth.is_none(), "max_in_flight exceeded");
    let mut dst = vec![0u8; 16];
    let mut rq = recv(&mut b, &mut r, &mut dst);
    wait(&mut a, &mut q[0]).unwrap();
    wait(&mut b, &mut rq).unwrap();
    // SAFETY: `src` outlives the request.
    let fourth = unsafe { a.isend(&mut s, src.as_ptr(), 16, [0; 3], None) }.unwrap();
    assert!(fourth.is_some(), "finished request still counted");
}

#[test]
fn dropped_request_is_abandoned_safely() {
    let _g = guard("dropped_request_is_abandoned_safely", 7);
    let (_f, mut a, mut b, mut s, mut r) = pair(7, MemFaults::default());
    let gone = vec![1u8; 16];
    drop(send(&mut a, &mut s, &gone, [0; 3]));
    drop(gone);
    let mut dst = vec![0u8; 16];
    let mut rq = recv(&mut b, &mut r, &mut dst);
    assert_remote(wait(&mut b, &mut rq), "abandoned");
    assert!(dst.iter().all(|&x| x == 0));
    let next = vec![2u8; 16];
    let mut sq = send(&mut a, &mut s, &next, [1; 3]);
    let mut rq = recv(&mut b, &mut r, &mut dst);
    assert_eq!(wait(&mut b, &mut rq).unwrap().tag, [1; 3]);
    wait(&mut a, &mut sq).unwrap();
    assert_eq!(dst, next);
}

#[test]
fn wait_activity_is_bounded_and_woken() {
    let _g = guard("wait_activity_is_bounded_and_woken", 8);
    let (_f, mut a, mut b, mut s, mut r) = pair(8, MemFaults::default());
    let start = Instant::now();
    for _ in 0..5 {
        a.wait_activity(Duration::from_secs(10)).unwrap();
    }
    assert!(
        start.elapsed() < Duration::from_millis(500),
        "wait overslept"
    );
    // A receive posted by another thread wakes a waiting sender.
    let src = vec![6u8; 4096];
    let mut sq = send(&mut a, &mut s, &src, [0; 3]);
    let peer = std::thread::spawn(move || {
        let mut dst = vec![0u8; 4096];
        let mut rq = recv(&mut b, &mut r, &mut dst);
        wait(&mut b, &mut rq).map(|_| dst)
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    let done = loop {
        if let Some(done) = a.test(&mut sq).unwrap() {
            break done;
        }
        assert!(Instant::now() < deadline, "send never completed");
        a.wait_activity(Duration::from_secs(1)).unwrap();
    };
    assert_eq!(done.bytes, 4096);
    assert_eq!(peer.join().unwrap().unwrap(), src);
}
