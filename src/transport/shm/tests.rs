//! Tests of the shm backend: two transports of one process driven from one thread with
//! bounded polling loops (the region is shared memory either way).

use std::time::Instant;

use super::region::Attach;
use super::*;
use crate::transport::testkit::{connect_pair, connect_to, finish, pattern, DEADLINE};

/// Sends `msgs` from `a` to `b` (receives of `cap` bytes each, posted first or after),
/// driving both until all finished; returns the completions of the receives and the data.
/// Large messages skip the ring or not as `attach` says (`Unknown`: as the probe finds).
fn exchange(
    msgs: &[Vec<u8>],
    cap: usize,
    recv_first: bool,
    attach: Attach,
) -> Vec<(Completion, Vec<u8>)> {
    let (mut a, mut b) = (ShmTransport::new().unwrap(), ShmTransport::new().unwrap());
    let (mut s, mut r) = connect_pair(&mut a, &mut b);
    if attach != Attach::Unknown {
        b.recvs.get_mut(r.0).unwrap().force_attach(attach);
    }
    let mut bufs: Vec<Vec<u8>> = msgs.iter().map(|_| vec![0u8; cap]).collect();
    let mut sends = Vec::new();
    let mut recvs = Vec::new();
    let post_recvs = |b: &mut ShmTransport, r: &mut ShmRecvConn, bufs: &mut Vec<Vec<u8>>| {
        bufs.iter_mut()
            .map(|buf| {
                // SAFETY: the buffer outlives the request (finished below).
                unsafe { b.irecv(r, buf.as_mut_ptr(), cap, None) }
                    .unwrap()
                    .expect("room for the receive")
            })
            .collect::<Vec<_>>()
    };
    if recv_first {
        recvs = post_recvs(&mut b, &mut r, &mut bufs);
    }
    for (i, m) in msgs.iter().enumerate() {
        // SAFETY: the message outlives the request.
        let q = unsafe { a.isend(&mut s, m.as_ptr(), m.len(), [i as u64, 7, 9], None) }
            .unwrap()
            .expect("room for the send");
        sends.push(Some(q));
    }
    if !recv_first {
        recvs = post_recvs(&mut b, &mut r, &mut bufs);
    }
    let mut got: Vec<Option<Completion>> = vec![None; msgs.len()];
    let t0 = Instant::now();
    while got.iter().any(Option::is_none) || sends.iter().any(Option::is_some) {
        assert!(t0.elapsed() < DEADLINE, "transfers did not finish in time");
        for q in sends.iter_mut() {
            if let Some(req) = q {
                if a.test(req).unwrap().is_some() {
                    *q = None;
                }
            }
        }
        for (i, q) in recvs.iter_mut().enumerate() {
            if got[i].is_none() {
                got[i] = b.test(q).unwrap();
            }
        }
    }
    let large = msgs
        .iter()
        .filter(|m| m.len() >= attach::ATTACH_MIN)
        .count() as u64;
    let (verdict, attached) = b.recvs.get(r.0).unwrap().attach_state();
    assert_eq!(verdict, attach);
    let want = if attach == Attach::Works { large } else { 0 };
    assert_eq!(attached, want, "messages copied out of the sender");
    got.into_iter()
        .zip(bufs)
        .map(|(c, b)| (c.unwrap(), b))
        .collect()
}

#[test]
fn messages_of_every_size_class_arrive_intact_with_their_tags() {
    let sizes = [
        0usize,
        1,
        31,
        32,
        33,
        4095,
        65536,
        region::CAPACITY - 32,
        region::CAPACITY + 5,
    ];
    for (recv_first, attach) in [true, false]
        .into_iter()
        .flat_map(|f| [(f, Attach::Works), (f, Attach::Refused)])
    {
        let msgs: Vec<Vec<u8>> = sizes.iter().map(|&n| pattern(n as u64, n)).collect();
        let cap = region::CAPACITY + 64;
        let out = exchange(&msgs, cap, recv_first, attach);
        for (i, (c, buf)) in out.into_iter().enumerate() {
            assert_eq!(c.bytes, msgs[i].len());
            assert_eq!(c.tag, [i as u64, 7, 9]);
            assert_eq!(
                &buf[..c.bytes],
                &msgs[i][..],
                "message {i} ({} bytes)",
                c.bytes
            );
        }
    }
}

#[test]
fn three_times_the_ring_streams_through_it() {
    let msgs = vec![pattern(3, 3 * region::CAPACITY + 17)];
    let out = exchange(&msgs, msgs[0].len(), false, Attach::Refused);
    assert_eq!(out[0].1, msgs[0]);
}

#[test]
fn the_receiver_probes_the_sender_once_it_posts_and_large_messages_follow_the_verdict() {
    // Off (the default): no probe, so the sender streams everything through the ring.
    let (mut a, mut b) = (ShmTransport::new().unwrap(), ShmTransport::new().unwrap());
    let (_s, mut r) = connect_pair(&mut a, &mut b);
    let mut buf = [0u8; 8];
    // SAFETY: `buf` outlives the transports' use of it (the receive never completes).
    unsafe { b.irecv(&mut r, buf.as_mut_ptr(), 8, None) }
        .unwrap()
        .unwrap();
    assert_eq!(b.recvs.get(r.0).unwrap().attach_state().0, Attach::Unknown);
    // On: the first receive posted probes.
    let mut a = ShmTransport::new().unwrap();
    let mut b = ShmTransport::new().unwrap().with_attach(true);
    let (_s, mut r) = connect_pair(&mut a, &mut b);
    assert_eq!(b.recvs.get(r.0).unwrap().attach_state().0, Attach::Unknown);
    // SAFETY: `buf` outlives the transports' use of it (the receive never completes).
    unsafe { b.irecv(&mut r, buf.as_mut_ptr(), 8, None) }
        .unwrap()
        .unwrap();
    let (addr, value) = attach::probe();
    let can = attach::can_read(std::process::id(), addr, value);
    let want = if can { Attach::Works } else { Attach::Refused };
    assert_eq!(b.recvs.get(r.0).unwrap().attach_state().0, want);
    // The probe is checked by value: another word is no proof.
    assert!(!attach::can_read(std::process::id(), addr, value ^ 1));
    // Both verdicts deliver a message well past the ring's size.
    for v in [Attach::Works, Attach::Refused] {
        let msgs = vec![pattern(9, 2 * region::CAPACITY + 3), pattern(10, 70_000)];
        let out = exchange(&msgs, 2 * region::CAPACITY + 3, true, v);
        assert!(
            out[0].1 == msgs[0] && out[1].1[..70_000] == msgs[1][..],
            "{v:?}"
        );
    }
}

#[test]
fn an_attached_message_longer_than_the_receive_reports_its_length_then_fails() {
    let (mut a, mut b) = (ShmTransport::new().unwrap(), ShmTransport::new().unwrap());
    let (mut s, mut r) = connect_pair(&mut a, &mut b);
    b.recvs.get_mut(r.0).unwrap().force_attach(Attach::Works);
    let n = 2 * attach::ATTACH_MIN;
    let msg = pattern(1, n);
    let mut buf = vec![0u8; n / 2];
    // SAFETY: both buffers outlive the requests.
    let _q = unsafe { a.isend(&mut s, msg.as_ptr(), n, [1, 2, 3], None) }
        .unwrap()
        .unwrap();
    let mut p = unsafe { b.irecv(&mut r, buf.as_mut_ptr(), n / 2, None) }
        .unwrap()
        .unwrap();
    let c = b
        .test(&mut p)
        .unwrap()
        .expect("completes with the message's length");
    assert_eq!((c.bytes, c.tag), (n, [1, 2, 3]));
    assert!(buf.iter().all(|&x| x == 0), "nothing written");
}

#[test]
fn a_message_longer_than_the_receive_reports_its_length_then_fails() {
    let (mut a, mut b) = (ShmTransport::new().unwrap(), ShmTransport::new().unwrap());
    let (mut s, mut r) = connect_pair(&mut a, &mut b);
    let msg = pattern(1, 100);
    let mut buf = vec![0u8; 10];
    // SAFETY: both buffers outlive the requests.
    let mut q = unsafe { a.isend(&mut s, msg.as_ptr(), 100, [1, 2, 3], None) }
        .unwrap()
        .unwrap();
    let mut p = unsafe { b.irecv(&mut r, buf.as_mut_ptr(), 10, None) }
        .unwrap()
        .unwrap();
    assert!(a.test(&mut q).unwrap().is_some());
    let c = b
        .test(&mut p)
        .unwrap()
        .expect("completes with the message's length");
    assert_eq!((c.bytes, c.tag), (100, [1, 2, 3]));
    assert_eq!(buf, vec![0u8; 10], "nothing written");
    let mut again = unsafe { b.irecv(&mut r, buf.as_mut_ptr(), 10, None) };
    let e = match again.as_mut() {
        Err(e) => e.to_string(),
        Ok(Some(q)) => b.test(q).unwrap_err().to_string(),
        Ok(None) => panic!("no room"),
    };
    assert!(e.contains("exceeds the posted receive of 10 bytes"), "{e}");
}

#[test]
fn a_closed_sender_fails_a_posted_receive_with_remote() {
    let (mut a, mut b) = (ShmTransport::new().unwrap(), ShmTransport::new().unwrap());
    let (s, mut r) = connect_pair(&mut a, &mut b);
    let msg = pattern(2, 64);
    // What was sent before the close still arrives.
    let mut s2 = s;
    let mut q = unsafe { a.isend(&mut s2, msg.as_ptr(), 64, [0; 3], None) }
        .unwrap()
        .unwrap();
    assert!(a.test(&mut q).unwrap().is_some());
    a.close_send(s2).unwrap();
    let mut buf = vec![0u8; 64];
    let mut p = unsafe { b.irecv(&mut r, buf.as_mut_ptr(), 64, None) }
        .unwrap()
        .unwrap();
    assert_eq!(b.test(&mut p).unwrap().map(|c| c.bytes), Some(64));
    assert_eq!(buf, msg);
    let mut p = unsafe { b.irecv(&mut r, buf.as_mut_ptr(), 64, None) }
        .unwrap()
        .unwrap();
    let t0 = Instant::now();
    let e = loop {
        assert!(t0.elapsed() < DEADLINE, "the departure was not noticed");
        match b.test(&mut p) {
            Ok(None) => {}
            Ok(Some(_)) => panic!("a receive completed after the close"),
            Err(e) => break e,
        }
    };
    assert_eq!(e.kind(), crate::ErrorKind::Remote, "{e}");
    assert!(
        e.to_string()
            .contains("closed the connection while a receive was posted"),
        "{e}"
    );
}

#[test]
fn a_closed_receiver_fails_a_send_waiting_for_room() {
    let (mut a, mut b) = (ShmTransport::new().unwrap(), ShmTransport::new().unwrap());
    let (mut s, r) = connect_pair(&mut a, &mut b);
    b.close_recv(r).unwrap();
    let msg = pattern(4, 2 * region::CAPACITY);
    let mut q = unsafe { a.isend(&mut s, msg.as_ptr(), msg.len(), [0; 3], None) }
        .unwrap()
        .unwrap();
    let t0 = Instant::now();
    let e = loop {
        assert!(t0.elapsed() < DEADLINE, "the departure was not noticed");
        match a.test(&mut q) {
            Ok(None) => {}
            Ok(Some(_)) => panic!("the send completed"),
            Err(e) => break e,
        }
    };
    assert_eq!(e.kind(), crate::ErrorKind::Remote, "{e}");
    // Threads of one process: the peer closed, its process lives, so it is no failure.
    assert!(a.confirm_send(&mut s).is_ok());
}

#[test]
fn foreign_handles_are_refused_with_the_reason() {
    let mut a = ShmTransport::new().unwrap();
    let e = a
        .connect(0, &ConnectHandle::new(b"tcp4....").unwrap())
        .unwrap_err();
    assert!(e.to_string().contains("OXCCL_TRANSPORT=shm"), "{e}");
    let mut h = b"oxshm1".to_vec();
    h.extend_from_slice(&[0xee; 16]);
    h.extend_from_slice(&1u32.to_le_bytes());
    h.extend_from_slice(b"oxccl-shm-x");
    let e = a.connect(0, &ConnectHandle::new(&h).unwrap()).unwrap_err();
    assert!(e.to_string().contains("another host"), "{e}");
    let mut h = b"oxshm1".to_vec();
    h.extend_from_slice(&listen::boot_id());
    h.extend_from_slice(&1u32.to_le_bytes());
    h.extend_from_slice(b"oxccl-shm-nobody-listens-here");
    let mut c = a.connect(0, &ConnectHandle::new(&h).unwrap()).unwrap();
    let e = a.poll_connect(&mut c).unwrap_err();
    assert_eq!(e.kind(), crate::ErrorKind::Remote, "{e}");
    assert!(
        e.to_string()
            .contains("connecting to the listener of process 1"),
        "{e}"
    );
}

#[test]
fn a_stranger_without_a_region_is_dropped_and_real_peers_still_connect() {
    let (mut a, mut b) = (ShmTransport::new().unwrap(), ShmTransport::new().unwrap());
    let (h, mut l) = b.listen(0).unwrap();
    let (name, _) = listen::decode_handle(&h).unwrap();
    // A stranger connects and says something else.
    let mut st = listen::start_connect(name, 0).unwrap();
    let (sa, len) = {
        let mut s: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        s.sun_family = libc::AF_UNIX as libc::sa_family_t;
        for (d, &c) in s.sun_path[1..].iter_mut().zip(st.name.iter()) {
            *d = c as libc::c_char;
        }
        (s, (2 + 1 + st.name.len()) as libc::socklen_t)
    };
    // SAFETY: a valid address; a plain write of 3 bytes.
    unsafe {
        assert_eq!(
            libc::connect(
                st.sock.as_raw_fd(),
                (&sa as *const libc::sockaddr_un).cast(),
                len
            ),
            0
        );
        assert_eq!(
            libc::write(st.sock.as_raw_fd(), b"hi!".as_ptr().cast(), 3),
            3
        );
    }
    st.connected = true;
    connect_to(&mut a, &mut b, &h, &mut l);
    let l = b.listeners.get(l.0).unwrap();
    assert!(l.waiting.is_empty(), "the stranger was dropped");
}

#[test]
fn an_idle_wait_sleeps_for_its_timeout() {
    let (mut a, mut b) = (ShmTransport::new().unwrap(), ShmTransport::new().unwrap());
    let (_s, mut r) = connect_pair(&mut a, &mut b);
    let mut buf = [0u8; 8];
    // SAFETY: `buf` outlives the transports' use of it (the receive never completes).
    let mut q = unsafe { b.irecv(&mut r, buf.as_mut_ptr(), 8, None) }
        .unwrap()
        .unwrap();
    assert!(b.test(&mut q).unwrap().is_none());
    let t0 = Instant::now();
    b.wait_activity(Duration::from_millis(50)).unwrap();
    let el = t0.elapsed();
    assert!(el >= Duration::from_millis(40), "returned after {el:?}");
    assert!(el < Duration::from_secs(2), "returned after {el:?}");
}

#[test]
fn a_sleeping_receiver_is_rung_awake_by_the_data() {
    let (mut a, mut b) = (ShmTransport::new().unwrap(), ShmTransport::new().unwrap());
    let (mut s, mut r) = connect_pair(&mut a, &mut b);
    let mut buf = [0u8; 8];
    // SAFETY: `buf` outlives the request, which completes below.
    let mut q = unsafe { b.irecv(&mut r, buf.as_mut_ptr(), 8, None) }
        .unwrap()
        .unwrap();
    assert!(b.test(&mut q).unwrap().is_none());
    let sender = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        let msg = *b"8 bytes!";
        // SAFETY: `msg` lives until the send completes just below.
        let mut w = unsafe { a.isend(&mut s, msg.as_ptr(), 8, [5, 0, 0], None) }
            .unwrap()
            .unwrap();
        finish(&mut a, &mut w);
        a
    });
    let t0 = Instant::now();
    b.wait_activity(Duration::from_secs(6)).unwrap();
    let el = t0.elapsed();
    assert!(el < Duration::from_secs(3), "the data did not ring: {el:?}");
    assert_eq!(finish(&mut b, &mut q).tag, [5, 0, 0]);
    assert_eq!(&buf, b"8 bytes!");
    sender.join().unwrap();
}

/// A message three rings long from `a`, whose receive `b` posts 100 ms later on another
/// thread: `a`'s wait must end when `b` rings (room freed, or the copy-out done), long
/// before its 6 s. Returns how many messages `b` copied straight out of `a`.
fn sender_rung_awake(attach: Attach) -> u64 {
    let (mut a, mut b) = (ShmTransport::new().unwrap(), ShmTransport::new().unwrap());
    let (mut s, mut r) = connect_pair(&mut a, &mut b);
    b.recvs.get_mut(r.0).unwrap().force_attach(attach);
    let msg = pattern(3, 3 * region::CAPACITY);
    // SAFETY: `msg` outlives the request, which completes below.
    let mut w = unsafe { a.isend(&mut s, msg.as_ptr(), msg.len(), [1, 2, 3], None) }
        .unwrap()
        .unwrap();
    assert!(a.test(&mut w).unwrap().is_none(), "waits for the reader");
    let len = msg.len();
    let reader = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        let mut buf = vec![0u8; len];
        // SAFETY: `buf` outlives the request, which completes just below.
        let mut q = unsafe { b.irecv(&mut r, buf.as_mut_ptr(), len, None) }
            .unwrap()
            .unwrap();
        finish(&mut b, &mut q);
        (buf, b.recvs.get(r.0).unwrap().attach_state().1)
    });
    let t0 = Instant::now();
    a.wait_activity(Duration::from_secs(6)).unwrap();
    let el = t0.elapsed();
    assert!(
        el < Duration::from_secs(3),
        "the reader did not ring: {el:?}"
    );
    assert_eq!(finish(&mut a, &mut w).bytes, len);
    let (buf, attached) = reader.join().unwrap();
    assert!(buf == msg, "the payload arrived changed");
    attached
}

#[test]
fn a_sender_sleeping_for_room_is_rung_awake_when_the_reader_frees_it() {
    assert_eq!(sender_rung_awake(Attach::Refused), 0, "through the ring");
}

#[test]
fn a_sender_waiting_for_its_message_to_be_copied_out_is_rung_awake() {
    assert_eq!(
        sender_rung_awake(Attach::Works),
        1,
        "copied out of the sender"
    );
}
