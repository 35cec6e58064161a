//! Tests of the tcp backend over loopback. Most drive two transports from one thread with a
//! bounded polling loop; the timing checks use a second thread.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use super::*;
use crate::transport::testkit::{connect_pair, finish, pattern};

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const DEADLINE: Duration = Duration::from_secs(8);

fn transport(ip: IpAddr, buf: usize) -> TcpTransport {
    TcpTransport::new(TcpConfig {
        bind_ip: ip,
        socket_buf_bytes: buf,
        congestion: Default::default(),
    })
    .unwrap()
}

/// `a` sends to `b` over one connection.
struct Pair {
    a: TcpTransport,
    b: TcpTransport,
    s: TcpSendConn,
    r: TcpRecvConn,
}

fn pair_on(ip: IpAddr, buf: usize) -> Pair {
    let mut a = transport(ip, buf);
    let mut b = transport(ip, buf);
    let (s, r) = connect_pair(&mut a, &mut b);
    Pair { a, b, s, r }
}

/// Tests `q` until it finishes (bounded).
fn pair(buf: usize) -> Pair {
    pair_on(LOCAL, buf)
}

fn tag(i: u64) -> Tag {
    [i, i.wrapping_mul(31) + 7, u64::MAX - i]
}

impl Pair {
    fn send(&mut self, data: &[u8], t: Tag) -> Option<TcpRequest> {
        // SAFETY: every test keeps `data` alive and unmodified until the request completes.
        unsafe {
            self.a
                .isend(&mut self.s, data.as_ptr(), data.len(), t, None)
                .unwrap()
        }
    }

    fn recv(&mut self, buf: &mut [u8]) -> Option<TcpRequest> {
        // SAFETY: every test keeps `buf` alive and untouched until the request completes.
        unsafe {
            self.b
                .irecv(&mut self.r, buf.as_mut_ptr(), buf.len(), None)
                .unwrap()
        }
    }

    /// Tests every unfinished request on both sides until all have finished.
    fn drive(
        &mut self,
        sends: &mut [(TcpRequest, Option<Completion>)],
        recvs: &mut [(TcpRequest, Option<Completion>)],
    ) -> Result<()> {
        let t0 = Instant::now();
        loop {
            let mut all = true;
            for (req, done) in sends.iter_mut().filter(|(_, d)| d.is_none()) {
                *done = self.a.test(req)?;
                all &= done.is_some();
            }
            for (req, done) in recvs.iter_mut().filter(|(_, d)| d.is_none()) {
                *done = self.b.test(req)?;
                all &= done.is_some();
            }
            if all {
                return Ok(());
            }
            assert!(t0.elapsed() < DEADLINE, "transfers did not finish in time");
        }
    }
}

fn unfinished(reqs: Vec<TcpRequest>) -> Vec<(TcpRequest, Option<Completion>)> {
    reqs.into_iter().map(|r| (r, None)).collect()
}

/// Sends `sizes` back to back, receives them into exact-size buffers, checks every byte.
fn exchange(p: &mut Pair, sizes: &[usize], recv_first: bool) {
    let msgs: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| pattern(i as u64 + 1, n))
        .collect();
    let mut bufs: Vec<Vec<u8>> = sizes.iter().map(|&n| vec![0xEEu8; n]).collect();
    let (mut sends, mut recvs) = (Vec::new(), Vec::new());
    if recv_first {
        for b in bufs.iter_mut() {
            recvs.push(p.recv(b).unwrap());
        }
    }
    for (i, m) in msgs.iter().enumerate() {
        sends.push(p.send(m, tag(i as u64)).unwrap());
    }
    if !recv_first {
        for b in bufs.iter_mut() {
            recvs.push(p.recv(b).unwrap());
        }
    }
    let (mut sends, mut recvs) = (unfinished(sends), unfinished(recvs));
    p.drive(&mut sends, &mut recvs).unwrap();
    for (i, ((_, s), (_, r))) in sends.iter().zip(&recvs).enumerate() {
        let expect = Completion {
            bytes: sizes[i],
            tag: tag(i as u64),
        };
        assert_eq!(*s, Some(expect), "send {i}");
        assert_eq!(*r, Some(expect), "recv {i}");
        assert!(
            bufs[i] == msgs[i],
            "payload {i} ({} bytes) differs",
            sizes[i]
        );
    }
}

const SIZES: [usize; 7] = [0, 1, 7, 32, (64 << 10) - 1, 64 << 10, (1 << 20) + 3];

#[test]
fn connect_accept_and_device() {
    let p = pair(0);
    let devs = p.a.devices().unwrap();
    assert_eq!(devs.len(), 1);
    assert_eq!(devs[0].name, "lo");
    assert!(devs[0].speed_mbps > 0);
    assert!(!devs[0].caps.needs_registration && !devs[0].caps.rdma_write);
    assert_eq!(devs[0].caps.max_requests, 16);
    assert_eq!(
        devs[0].caps.buffered_bytes, 0,
        "socket buffers left to the kernel"
    );
    let sized = transport(LOCAL, 1 << 20).devices().unwrap();
    assert_eq!(sized[0].caps.buffered_bytes, 2 << 20, "twice SO_SNDBUF");
    assert_eq!(devs[0].caps.host_channels, 1, "one channel within a host");
    assert_eq!(p.a.name(), "tcp");
}

#[test]
fn handle_roundtrip_and_rejects_foreign_bytes() {
    for addr in [
        SocketAddr::new(LOCAL, 4242),
        SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 65535),
    ] {
        let h = listen::encode_handle(addr).unwrap();
        assert!(h.as_bytes().len() <= crate::transport::MAX_HANDLE_BYTES);
        assert_eq!(listen::decode_handle(&h).unwrap(), addr);
    }
    let mut t = transport(LOCAL, 0);
    for junk in [&b""[..], b"oxtc", b"xxxx\x04\x00\x00\x01\x7f\x00\x00\x01"] {
        let e = t
            .connect(0, &ConnectHandle::new(junk).unwrap())
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    }
    let (h, _l) = t.listen(0).unwrap();
    assert_eq!(
        t.connect(1, &h).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
}

#[test]
fn unspecified_bind_address_is_rejected() {
    let e = TcpTransport::new(TcpConfig {
        bind_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        socket_buf_bytes: 0,
        congestion: Default::default(),
    })
    .err()
    .unwrap();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
}

#[test]
fn sizes_one_at_a_time() {
    let mut p = pair(0);
    for &n in &SIZES {
        exchange(&mut p, &[n], false);
    }
}

#[test]
fn sizes_queued_back_to_back() {
    let mut p = pair(0);
    exchange(&mut p, &SIZES, false);
    exchange(&mut p, &SIZES, true);
}

#[test]
fn ipv6_loopback() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("IPv6 loopback unavailable; skipping");
        return;
    }
    let mut p = pair_on(IpAddr::V6(Ipv6Addr::LOCALHOST), 0);
    exchange(&mut p, &[5, 100_000], false);
}

/// Many messages of irregular sizes: headers and payloads split across staging reads in
/// every way, with receives posted in windows.
#[test]
fn irregular_stream() {
    let mut p = pair(32 << 10);
    let mut x: u64 = 12345;
    let sizes: Vec<usize> = (0..300)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            match (x >> 60) % 4 {
                0 => (x >> 20) as usize % 40,
                1 => (x >> 20) as usize % 3000,
                2 => (x >> 20) as usize % 70_000,
                _ => (x >> 20) as usize % 200_000,
            }
        })
        .collect();
    for window in sizes.chunks(13) {
        exchange(&mut p, window, false);
    }
}

#[test]
fn too_small_receive_completes_with_the_message_s_length_and_tag_and_then_fails() {
    let mut p = pair(0);
    let msg = pattern(1, 100);
    let mut buf = vec![0u8; 50];
    let s = p.send(&msg, tag(7)).unwrap();
    let r = p.recv(&mut buf).unwrap();
    let (mut s, mut r) = (unfinished(vec![s]), unfinished(vec![r]));
    // The receive reports what came (so the engine can name the peer's call), writes
    // nothing, and the connection is failed from then on.
    p.drive(&mut s, &mut r).unwrap();
    let c = r[0].1.expect("the receive completed");
    assert_eq!((c.bytes, c.tag), (100, tag(7)));
    assert!(
        buf.iter().all(|&b| b == 0),
        "a rejected message was written"
    );
    let mut buf2 = vec![0u8; 100];
    // SAFETY: `buf2` outlives the (refused) receive.
    let e = match unsafe { p.b.irecv(&mut p.r, buf2.as_mut_ptr(), buf2.len(), None) } {
        Err(e) => e,
        Ok(_) => panic!("a failed connection accepted a receive"),
    };
    assert_eq!(e.kind(), ErrorKind::InvalidUsage, "{e}");
    assert!(
        e.message().contains("message of 100 bytes from 127.0.0.1:")
            && e.message()
                .contains("exceeds the posted receive of 50 bytes"),
        "{e}"
    );
}

#[test]
fn peer_close_mid_message_is_remote() {
    let mut p = pair(64 << 10);
    let msg = pattern(2, 4 << 20);
    let mut req = p.send(&msg, tag(0)).unwrap();
    for _ in 0..10 {
        assert!(
            p.a.test(&mut req).unwrap().is_none(),
            "4 MiB cannot fit the buffers"
        );
    }
    p.a.close_send(p.s).unwrap();
    let mut buf = vec![0u8; 4 << 20];
    let mut r = p.recv(&mut buf).unwrap();
    let t0 = Instant::now();
    let e = loop {
        match p.b.test(&mut r) {
            Ok(None) => assert!(t0.elapsed() < DEADLINE, "no error in time"),
            Ok(Some(c)) => panic!("receive completed: {c:?}"),
            Err(e) => break e,
        }
    };
    assert_eq!(e.kind(), ErrorKind::Remote, "{e}");
    assert!(
        e.message().contains("connection closed by peer 127.0.0.1:"),
        "{e}"
    );
    assert!(e.message().contains("in the middle of a message"), "{e}");
}

/// Blocks SIGPIPE in this thread while `f` runs, then reports whether one was raised.
fn raised_sigpipe(f: impl FnOnce()) -> bool {
    // SAFETY: plain signal-mask calls on this thread with properly initialised sets.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPIPE);
        assert_eq!(libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old), 0);
        f();
        let mut pending: libc::sigset_t = std::mem::zeroed();
        libc::sigpending(&mut pending);
        let raised = libc::sigismember(&pending, libc::SIGPIPE) == 1;
        if raised {
            let zero = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            libc::sigtimedwait(&set, std::ptr::null_mut(), &zero);
        }
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        raised
    }
}

#[test]
fn send_to_closed_peer_is_remote_without_sigpipe() {
    let mut p = pair(64 << 10);
    p.b.close_recv(p.r).unwrap();
    let msg = pattern(3, 64 << 10);
    let mut err = None;
    let raised = raised_sigpipe(|| {
        let t0 = Instant::now();
        'outer: while t0.elapsed() < DEADLINE {
            // SAFETY: `msg` outlives the requests (the connection fails or completes them).
            let posted = unsafe { p.a.isend(&mut p.s, msg.as_ptr(), msg.len(), tag(0), None) };
            let mut req = match posted {
                Ok(Some(r)) => r,
                Ok(None) => panic!("queue full although requests are tested"),
                Err(e) => {
                    err = Some(e);
                    break;
                }
            };
            loop {
                match p.a.test(&mut req) {
                    Ok(Some(_)) => break,
                    Ok(None) => {
                        if t0.elapsed() > DEADLINE {
                            break 'outer;
                        }
                    }
                    Err(e) => {
                        err = Some(e);
                        break 'outer;
                    }
                }
            }
        }
    });
    let e = err.expect("sending to a closed peer never failed");
    assert_eq!(e.kind(), ErrorKind::Remote, "{e}");
    assert!(e.message().contains("sending to 127.0.0.1:"), "{e}");
    assert!(!raised, "SIGPIPE was raised");
}

#[test]
fn back_pressure_with_late_receiver() {
    let mut p = pair(16 << 10);
    let n = 16;
    let msgs: Vec<Vec<u8>> = (0..n)
        .map(|i| pattern(100 + i, 200_000 + i as usize))
        .collect();
    let mut sends: Vec<TcpRequest> = msgs
        .iter()
        .enumerate()
        .map(|(i, m)| p.send(m, tag(i as u64)).unwrap())
        .collect();
    let extra = pattern(0, 10);
    assert!(
        p.send(&extra, tag(99)).is_none(),
        "17th send must be refused"
    );
    for _ in 0..50 {
        for r in sends.iter_mut() {
            let _ = p.a.test(r).unwrap();
        }
    }
    // Without a reader only a few hundred KiB fit in the socket buffers.
    assert!(p.a.test(&mut sends[n as usize - 1]).unwrap().is_none());
    let mut bufs: Vec<Vec<u8>> = (0..n).map(|_| vec![0u8; 300_000]).collect();
    let recvs: Vec<TcpRequest> = bufs.iter_mut().map(|b| p.recv(b).unwrap()).collect();
    let (mut s, mut r) = (unfinished(sends), unfinished(recvs));
    // Requests that finished during the loop above are remembered until tested.
    p.drive(&mut s, &mut r).unwrap();
    for i in 0..n as usize {
        let c = r[i].1.unwrap();
        assert_eq!(c.tag, tag(i as u64));
        assert_eq!(&bufs[i][..c.bytes], &msgs[i][..]);
    }
    // All slots are free again.
    let more: Vec<TcpRequest> = (0..n).map(|_| p.send(&extra, tag(7)).unwrap()).collect();
    assert_eq!(more.len(), 16);
}

#[test]
fn completed_request_tested_again_is_invalid_usage() {
    let mut p = pair(0);
    let msg = pattern(4, 8);
    let mut buf = [0u8; 8];
    let s = p.send(&msg, tag(1)).unwrap();
    let r = p.recv(&mut buf).unwrap();
    let (mut s, mut r) = (unfinished(vec![s]), unfinished(vec![r]));
    p.drive(&mut s, &mut r).unwrap();
    assert_eq!(
        p.a.test(&mut s[0].0).unwrap_err().kind(),
        ErrorKind::InvalidUsage
    );
    assert_eq!(
        p.b.test(&mut r[0].0).unwrap_err().kind(),
        ErrorKind::InvalidUsage
    );
    p.a.close_send(p.s).unwrap();
    assert_eq!(
        p.a.close_send(p.s).unwrap_err().kind(),
        ErrorKind::InvalidUsage
    );
    // SAFETY: the call fails before touching the buffer.
    let e = unsafe { p.a.isend(&mut p.s, msg.as_ptr(), 8, tag(0), None) }.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidUsage);
}

#[test]
fn connect_refused_is_remote() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr = SocketAddr::new(LOCAL, port);
    let h = listen::encode_handle(addr).unwrap();
    let mut t = transport(LOCAL, 0);
    let t0 = Instant::now();
    let e = match t.connect(0, &h) {
        Err(e) => e,
        Ok(mut c) => loop {
            match t.poll_connect(&mut c) {
                Ok(None) => assert!(
                    t0.elapsed() < DEADLINE,
                    "connect neither failed nor succeeded"
                ),
                Ok(Some(_)) => panic!("connected to a port nobody listens on"),
                Err(e) => break e,
            }
        },
    };
    assert_eq!(e.kind(), ErrorKind::Remote, "{e}");
    assert!(e.message().contains(&addr.to_string()), "{e}");
}

#[test]
fn wait_activity_times_out_when_idle() {
    let mut p = pair(0);
    let mut buf = [0u8; 8];
    let mut r = p.recv(&mut buf).unwrap();
    assert!(p.b.test(&mut r).unwrap().is_none());
    let t0 = Instant::now();
    p.b.wait_activity(Duration::from_millis(50)).unwrap();
    let el = t0.elapsed();
    assert!(el >= Duration::from_millis(40), "returned after {el:?}");
    assert!(el < Duration::from_secs(2), "returned after {el:?}");
    // Nothing posted anywhere: still bounded.
    let mut idle = transport(LOCAL, 0);
    let t0 = Instant::now();
    idle.wait_activity(Duration::from_millis(20)).unwrap();
    assert!(t0.elapsed() < Duration::from_secs(2));
}

#[test]
fn wait_activity_returns_early_on_data() {
    let Pair {
        mut a,
        mut b,
        mut s,
        mut r,
    } = pair(0);
    let mut buf = [0u8; 8];
    // SAFETY: `buf` outlives the request, which completes below.
    let mut req = unsafe { b.irecv(&mut r, buf.as_mut_ptr(), 8, None) }
        .unwrap()
        .unwrap();
    assert!(b.test(&mut req).unwrap().is_none());
    let sender = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        let msg = *b"8 bytes!";
        // SAFETY: `msg` lives until the send completes in the loop below.
        let mut q = unsafe { a.isend(&mut s, msg.as_ptr(), 8, tag(5), None) }
            .unwrap()
            .unwrap();
        finish(&mut a, &mut q);
        a
    });
    let t0 = Instant::now();
    b.wait_activity(Duration::from_secs(6)).unwrap();
    let el = t0.elapsed();
    assert!(el < Duration::from_secs(4), "did not wake on data: {el:?}");
    let t1 = Instant::now();
    let c = loop {
        if let Some(c) = b.test(&mut req).unwrap() {
            break c;
        }
        b.wait_activity(Duration::from_millis(100)).unwrap();
        assert!(t1.elapsed() < DEADLINE);
    };
    assert_eq!(c.tag, tag(5));
    assert_eq!(&buf, b"8 bytes!");
    sender.join().unwrap();
}

/// Runs `f` on a fresh connection pair split over two threads: sender, receiver.
fn two_threads<R: Send + 'static>(
    buf: usize,
    send: impl FnOnce(&mut TcpTransport, &mut TcpSendConn) -> R + Send + 'static,
    recv: impl FnOnce(&mut TcpTransport, &mut TcpRecvConn) -> R,
) -> (R, R) {
    let Pair {
        mut a,
        mut b,
        mut s,
        mut r,
    } = pair(buf);
    let h = std::thread::spawn(move || send(&mut a, &mut s));
    let rr = recv(&mut b, &mut r);
    (h.join().unwrap(), rr)
}

/// Prints the throughput of 64 MiB in 512 KiB messages between two threads, with the OS's
/// socket buffers and with 4 MiB ones.
#[test]
#[ignore]
fn throughput_64mib() {
    const MSG: usize = 512 << 10;
    const COUNT: usize = 128;
    const DEPTH: usize = 4;
    // Loopback timings vary run to run on a shared machine: three runs per setting.
    for buf in [0, 0, 0, 4 << 20, 4 << 20, 4 << 20] {
        let (_, (bytes, el)) = two_threads(
            buf,
            |a, s| {
                let data = pattern(1, MSG);
                let mut q = std::collections::VecDeque::new();
                let mut posted = 0;
                let t0 = Instant::now();
                while posted < COUNT || !q.is_empty() {
                    assert!(t0.elapsed() < DEADLINE, "sender stalled");
                    while posted < COUNT && q.len() < DEPTH {
                        // SAFETY: `data` outlives every request.
                        let r = unsafe { a.isend(s, data.as_ptr(), MSG, tag(0), None) };
                        q.push_back(r.unwrap().unwrap());
                        posted += 1;
                    }
                    if let Some(r) = q.front_mut() {
                        if a.test(r).unwrap().is_some() {
                            q.pop_front();
                        }
                    }
                }
                (0, Duration::ZERO)
            },
            |b, r| {
                let mut bufs = vec![vec![0u8; MSG]; DEPTH];
                let mut q = std::collections::VecDeque::new();
                let (mut posted, mut bytes) = (0, 0);
                let t0 = Instant::now();
                while posted < COUNT || !q.is_empty() {
                    assert!(t0.elapsed() < DEADLINE, "receiver stalled");
                    while posted < COUNT && q.len() < DEPTH {
                        let p = bufs[posted % DEPTH].as_mut_ptr();
                        // SAFETY: buffer `posted % DEPTH` is reused only after its request
                        // (DEPTH posts earlier) completed.
                        let rq = unsafe { b.irecv(r, p, MSG, None) };
                        q.push_back(rq.unwrap().unwrap());
                        posted += 1;
                    }
                    if let Some(rq) = q.front_mut() {
                        if let Some(c) = b.test(rq).unwrap() {
                            bytes += c.bytes;
                            q.pop_front();
                        }
                    }
                }
                (bytes, t0.elapsed())
            },
        );
        assert_eq!(bytes, MSG * COUNT);
        println!(
            "tcp throughput (socket_buf_bytes {buf}): {:.0} MB/s ({bytes} bytes in {el:?})",
            bytes as f64 / el.as_secs_f64() / 1e6
        );
    }
}

/// Prints the round-trip time of an 8-byte message (ping-pong between two threads).
#[test]
#[ignore]
fn latency_8_bytes() {
    const ITERS: usize = 20_000;
    let mut a = transport(LOCAL, 0);
    let mut b = transport(LOCAL, 0);
    let (mut ab, mut ab_r) = connect_pair(&mut a, &mut b);
    let (mut ba, mut ba_r) = connect_pair(&mut b, &mut a);
    let pong = std::thread::spawn(move || {
        let mut buf = [0u8; 8];
        for _ in 0..ITERS {
            // SAFETY: `buf` is not touched while the request is pending.
            let mut q = unsafe { b.irecv(&mut ab_r, buf.as_mut_ptr(), 8, None) }
                .unwrap()
                .unwrap();
            finish(&mut b, &mut q);
            // SAFETY: as above.
            let mut q = unsafe { b.isend(&mut ba, buf.as_ptr(), 8, tag(0), None) }
                .unwrap()
                .unwrap();
            finish(&mut b, &mut q);
        }
    });
    let msg = [7u8; 8];
    let mut buf = [0u8; 8];
    let t0 = Instant::now();
    for _ in 0..ITERS {
        // SAFETY: `msg`/`buf` outlive the requests, completed in place.
        let mut q = unsafe { a.isend(&mut ab, msg.as_ptr(), 8, tag(0), None) }
            .unwrap()
            .unwrap();
        finish(&mut a, &mut q);
        // SAFETY: as above.
        let mut q = unsafe { a.irecv(&mut ba_r, buf.as_mut_ptr(), 8, None) }
            .unwrap()
            .unwrap();
        finish(&mut a, &mut q);
    }
    let el = t0.elapsed();
    pong.join().unwrap();
    assert_eq!(buf, msg);
    println!(
        "tcp 8-byte round trip: {:.2} us",
        el.as_secs_f64() * 1e6 / ITERS as f64
    );
}

/// Prints the time of the data movement of a 2-rank ring allreduce of 1 MiB (no reduction):
/// each rank sends and receives 512 KiB twice, in `pieces` messages per step.
#[test]
#[ignore]
fn exchange_like_allreduce_1mib() {
    const HALF: usize = 512 << 10;
    const ITERS: usize = 300;
    for pieces in [1, 4] {
        let mut a = transport(LOCAL, 4 << 20);
        let mut b = transport(LOCAL, 4 << 20);
        let (ab, ab_r) = connect_pair(&mut a, &mut b);
        let (ba, ba_r) = connect_pair(&mut b, &mut a);
        let rank = move |mut t: TcpTransport, mut s: TcpSendConn, mut r: TcpRecvConn| {
            let data = pattern(1, HALF);
            let mut buf = vec![0u8; HALF];
            let piece = HALF / pieces;
            let mut times = Vec::with_capacity(ITERS);
            for _ in 0..ITERS {
                let t0 = Instant::now();
                for _step in 0..2 {
                    let mut reqs = Vec::with_capacity(2 * pieces);
                    for k in 0..pieces {
                        let off = k * piece;
                        // SAFETY: both buffers outlive the requests, finished below.
                        unsafe {
                            let p = buf.as_mut_ptr().add(off);
                            reqs.push(t.irecv(&mut r, p, piece, None).unwrap().unwrap());
                            let q = data.as_ptr().add(off);
                            reqs.push(t.isend(&mut s, q, piece, tag(0), None).unwrap().unwrap());
                        }
                    }
                    let mut done = vec![false; reqs.len()];
                    let t1 = Instant::now();
                    while done.iter().any(|d| !d) {
                        for (q, d) in reqs.iter_mut().zip(done.iter_mut()) {
                            if !*d {
                                *d = t.test(q).unwrap().is_some();
                            }
                        }
                        assert!(t1.elapsed() < DEADLINE, "exchange stalled");
                    }
                }
                times.push(t0.elapsed());
            }
            assert!(buf == data);
            times.sort();
            times
        };
        let other = std::thread::spawn(move || rank(b, ba, ab_r));
        let times = rank(a, ab, ba_r);
        other.join().unwrap();
        println!(
            "2-rank 1 MiB allreduce data movement ({pieces} message(s) per step): median {:?}, \
             best {:?}",
            times[times.len() / 2],
            times[0]
        );
    }
}

/// Random and mutated byte streams from a stranger's socket into a receiving end with
/// receives posted: every receive completes, fails, or waits for more bytes; nothing
/// panics, and a completed receive never reports more bytes than its buffer holds.
#[test]
fn fuzz_streams_into_a_receiving_end() {
    use std::io::Write;
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let mut t = transport(lo, 0);
    let (h, mut l) = t.listen(0).unwrap();
    let addr = listen::decode_handle(&h).unwrap();
    let mut frame = Vec::new();
    for w in [7u64, 8, 9, 40] {
        frame.extend_from_slice(&w.to_le_bytes());
    }
    frame.extend_from_slice(&[5u8; 40]);
    let mut two = frame.clone();
    two.extend_from_slice(&frame);
    for (k, b) in crate::fuzz::inputs(&[frame, two], 300, 71).enumerate() {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(&b).unwrap();
        // Every other stream ends after its bytes (a Remote error where a receive waits);
        // the rest stay open (a receive waits for more, up to 20 ms here).
        let _open = (k % 2 == 1).then_some(s);
        let t0 = Instant::now();
        let mut r = loop {
            if let Some(r) = t.accept(&mut l).unwrap() {
                break r;
            }
            assert!(t0.elapsed() < Duration::from_secs(5), "no connection");
        };
        let mut bufs = [vec![0u8; 48], vec![0u8; 48]];
        for buf in bufs.iter_mut() {
            let Ok(Some(mut q)) = (unsafe { t.irecv(&mut r, buf.as_mut_ptr(), buf.len(), None) })
            else {
                break;
            };
            let t1 = Instant::now();
            loop {
                match t.test(&mut q) {
                    Ok(Some(c)) => {
                        // An over-long message completes with its length, nothing written.
                        assert!(c.bytes <= buf.len() || buf.iter().all(|&x| x == 0));
                        break;
                    }
                    Err(_) => break,
                    Ok(None) if t1.elapsed() > Duration::from_millis(20) => break,
                    Ok(None) => {}
                }
            }
        }
        t.close_recv(r).unwrap();
    }
}
