//! Tests of the hybrid transport over tcp: which backend a connection takes, and data both
//! ways on each.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use super::*;
use crate::transport::tcp::{TcpConfig, TcpTransport};
use crate::transport::testkit::{connect_pair, connect_to, DEADLINE};

fn hybrid(shm: bool, host: u8) -> Hybrid<TcpTransport> {
    hybrid_sized(shm, host, 0)
}

fn hybrid_sized(shm: bool, host: u8, socket_buf_bytes: usize) -> Hybrid<TcpTransport> {
    let tcp = TcpTransport::new(TcpConfig {
        bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        socket_buf_bytes,
        congestion: Default::default(),
    })
    .unwrap();
    Hybrid::new(tcp, shm, [host; 16]).unwrap()
}

#[test]
fn with_shm_the_engine_keeps_the_default_depth() {
    let buffered = |shm| {
        hybrid_sized(shm, 1, 1 << 20).devices().unwrap()[0]
            .caps
            .buffered_bytes
    };
    assert_eq!(buffered(true), 0, "shm beside tcp: nothing to fill");
    assert_eq!(buffered(false), 2 << 20, "tcp alone: its socket buffer");
}

#[test]
fn with_shm_one_host_keeps_the_default_channels() {
    let channels = |shm| hybrid(shm, 1).devices().unwrap()[0].caps.host_channels;
    assert_eq!(channels(true), 0, "shm carries the host's traffic");
    assert_eq!(channels(false), 1, "tcp alone: one channel");
}

type Conns = (HybridSendConn<TcpTransport>, HybridRecvConn<TcpTransport>);

/// One message each way (the second over the reverse of the connection), checked.
fn both_ways(x: &mut Hybrid<TcpTransport>, y: &mut Hybrid<TcpTransport>, conns: Conns) {
    let (mut s, mut r) = conns;
    let mut back_r = x.reverse_recv(&s).unwrap();
    let mut back_s = y.reverse_send(&r).unwrap();
    let msg: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
    let (mut got, mut back) = (vec![0u8; msg.len()], vec![0u8; msg.len()]);
    // SAFETY: every buffer outlives its request (all finish below).
    let mut reqs = unsafe {
        vec![
            (
                false,
                x.isend(&mut s, msg.as_ptr(), msg.len(), [1, 2, 3], None)
                    .unwrap()
                    .unwrap(),
            ),
            (
                true,
                y.irecv(&mut r, got.as_mut_ptr(), got.len(), None)
                    .unwrap()
                    .unwrap(),
            ),
            (
                true,
                y.isend(&mut back_s, msg.as_ptr(), msg.len(), [4, 5, 6], None)
                    .unwrap()
                    .unwrap(),
            ),
            (
                false,
                x.irecv(&mut back_r, back.as_mut_ptr(), back.len(), None)
                    .unwrap()
                    .unwrap(),
            ),
        ]
    };
    let t0 = Instant::now();
    while !reqs.is_empty() {
        assert!(t0.elapsed() < DEADLINE, "transfers did not finish");
        reqs.retain_mut(|(on_y, q)| {
            let t = if *on_y { &mut *y } else { &mut *x };
            t.test(q).unwrap().is_none()
        });
    }
    assert_eq!(got, msg);
    assert_eq!(back, msg);
}

fn is_shm(c: &Conns) -> bool {
    matches!(
        (&c.0, &c.1),
        (HybridSendConn::Shm(_), HybridRecvConn::Shm(_))
    )
}

#[test]
fn one_host_goes_through_shm_and_two_hosts_through_the_network() {
    let (mut a, mut b) = (hybrid(true, 1), hybrid(true, 1));
    let c = connect_pair(&mut a, &mut b);
    assert!(is_shm(&c), "same host: shm");
    both_ways(&mut a, &mut b, c);
    let (mut a, mut b) = (hybrid(true, 1), hybrid(true, 2));
    let c = connect_pair(&mut a, &mut b);
    assert!(matches!(c.0, HybridSendConn::Net(_)), "other host: tcp");
    both_ways(&mut a, &mut b, c);
    let (mut a, mut b) = (hybrid(false, 1), hybrid(false, 1));
    let c = connect_pair(&mut a, &mut b);
    assert!(matches!(c.0, HybridSendConn::Net(_)), "shm off: tcp");
    both_ways(&mut a, &mut b, c);
}

#[test]
fn an_unreachable_shm_listener_falls_back_to_the_network() {
    let (mut a, mut b) = (hybrid(true, 1), hybrid(true, 1));
    let (own, mut l) = b.listen(0).unwrap();
    let (host, net, _) = decode(&own).unwrap();
    // The peer's shm listener as seen from another network namespace: not there.
    let mut sh = b"oxshm1".to_vec();
    sh.extend_from_slice(&this_host());
    sh.extend_from_slice(&1u32.to_le_bytes());
    sh.extend_from_slice(b"oxccl-shm-not-here");
    let h = encode(&host, &net, Some(&ConnectHandle::new(&sh).unwrap())).unwrap();
    let c = connect_to(&mut a, &mut b, &h, &mut l);
    b.close_listen(l).unwrap();
    assert!(matches!(c.0, HybridSendConn::Net(_)), "fell back to tcp");
    both_ways(&mut a, &mut b, c);
}

#[test]
fn foreign_handles_are_refused() {
    let mut a = hybrid(true, 1);
    let e = a
        .connect(0, &ConnectHandle::new(b"oxshm1-or-tcp").unwrap())
        .err()
        .unwrap();
    assert!(e.to_string().contains("OXCCL_SHM"), "{e}");
}
