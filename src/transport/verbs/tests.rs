//! Unit tests of the parts that need no RDMA device: formats, choices, the protocol's
//! bookkeeping. The data path is tested for real inside a SoftRoCE VM (tests/verbs.rs).

use std::net::{IpAddr, SocketAddr};

use super::ctrl::RemoteCtrl;
use super::device::{ip_gid, pick_roce_gid, speed_mbps, Gid, HcaSpec};
use super::listen::{decode_handle, encode_handle, HandleInfo, Info};
use super::mr::MrCache;
use super::qp::QpEnd;
use super::sys;
use super::wire::{self, Cts, Imm, SLOTS};
use crate::error::ErrorKind;
use crate::transport::ConnectHandle;

#[test]
fn handles_round_trip_and_fit() {
    for addr in ["10.99.0.2:4791", "[fd00::12]:65000"] {
        let h = HandleInfo {
            addr: addr.parse().unwrap(),
            gid: ip_gid("10.99.0.2".parse().unwrap()),
            lid: 0x1234,
            mtu: 3,
            roce: true,
        };
        let b = encode_handle(&h).unwrap();
        assert!(b.as_bytes().len() <= crate::transport::MAX_HANDLE_BYTES);
        assert_eq!(decode_handle(&b).unwrap(), h);
    }
    let tcp_like = ConnectHandle::new(b"oxtc\x04\x00\x12\x34\x7f\x00\x00\x01").unwrap();
    let e = decode_handle(&tcp_like).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(e.to_string().contains("OXCCL_TRANSPORT"), "{e}");
}

#[test]
fn setup_info_round_trips_and_rejects_other_versions() {
    let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let info = Info {
        gid: [7; 16],
        lid: 9,
        mtu: 5,
        roce: false,
        ctrl: RemoteCtrl {
            eager_in: 0x7f00_0000_1000,
            cts_in: 0x7f00_0004_2000,
            rkey: 0xdead_beef,
        },
        qps: (0..3)
            .map(|i| QpEnd {
                qpn: 100 + i,
                psn: 0xabcd00 + i,
            })
            .collect(),
    };
    let mut b = info.encode();
    assert_eq!(Info::decode(&b, peer).unwrap(), info);
    b[32] ^= 1; // another slot stride: another protocol
    let e = Info::decode(&b, peer).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Remote);
    assert!(e.to_string().contains("mixed oxccl versions"), "{e}");
    let mut b = info.encode();
    b[5] = 0;
    assert!(Info::decode(&b, peer).is_err(), "zero queue pairs");
}

#[test]
fn fuzz_setup_info_and_handles_decode_or_refuse() {
    let seeds = super::listen::fuzz_setup_seeds();
    assert_eq!(seeds.len(), 2);
    for b in crate::fuzz::inputs(&seeds, 30_000, 21) {
        super::listen::fuzz_setup(&b);
    }
}

#[test]
fn hca_spec_follows_nccl_syntax() {
    let s = HcaSpec::parse("mlx5_0:1,mlx5_1").unwrap();
    assert!(s.allows("mlx5_0", 1) && !s.allows("mlx5_0", 2) && s.allows("mlx5_1", 2));
    assert!(s.allows("mlx5_10", 1), "prefix match");
    assert!(!s.allows("rxe0", 1));
    let s = HcaSpec::parse("=mlx5_1").unwrap();
    assert!(s.allows("mlx5_1", 1) && !s.allows("mlx5_10", 1));
    let s = HcaSpec::parse("^rxe0").unwrap();
    assert!(!s.allows("rxe0", 1) && s.allows("rxe1", 1));
    let s = HcaSpec::parse("^=rxe").unwrap();
    assert!(s.allows("rxe0", 1) && !s.allows("rxe", 1));
    for bad in ["", "^", ":1", "mlx5_0:x", "mlx5_0:0"] {
        let e = HcaSpec::parse(bad).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert!(e.to_string().contains("OXCCL_IB_HCA"), "{e}");
    }
}

fn gid(index: u32, text: &str, kind: u32, ifindex: u32) -> Gid {
    let ip: std::net::Ipv6Addr = text.parse().unwrap();
    Gid {
        index,
        gid: ip.octets(),
        kind,
        ifindex,
    }
}

#[test]
fn roce_gid_choice_prefers_v2_ipv4_on_the_ranks_interface() {
    let v1 = sys::IBV_GID_TYPE_ROCE_V1;
    let v2 = sys::IBV_GID_TYPE_ROCE_V2;
    let lo: IpAddr = "127.0.0.1".parse().unwrap();
    // SoftRoCE in Linux 6.1: only RoCE v2 entries, link-local first.
    let rxe = [
        gid(0, "fe80::5449:1cff:fed4:2461", v2, 5),
        gid(1, "::ffff:10.99.0.1", v2, 5),
    ];
    assert_eq!(pick_roce_gid(&rxe, lo, None).unwrap().index, 1);
    // A ConnectX port: v1 and v2 of each address; the rank's address is 10.0.0.7.
    let cx = [
        gid(0, "fe80::1", v1, 4),
        gid(1, "fe80::1", v2, 4),
        gid(2, "::ffff:10.0.0.7", v1, 4),
        gid(3, "::ffff:10.0.0.7", v2, 4),
        gid(4, "fd00::7", v2, 4),
        gid(5, "::ffff:192.168.5.7", v2, 9),
        gid(6, "::", v2, 0),
    ];
    let me: IpAddr = "10.0.0.7".parse().unwrap();
    assert_eq!(pick_roce_gid(&cx, me, Some(4)).unwrap().index, 3);
    // The rank on a VLAN interface (ifindex 9) of the same port: its own address wins.
    let vlan: IpAddr = "192.168.5.7".parse().unwrap();
    assert_eq!(pick_roce_gid(&cx, vlan, Some(9)).unwrap().index, 5);
    // An IPv6 rank address.
    assert_eq!(
        pick_roce_gid(&cx, "fd00::7".parse().unwrap(), Some(4))
            .unwrap()
            .index,
        4
    );
    // A rank address elsewhere (loopback): v2 IPv4 first, lowest index among equals.
    assert_eq!(pick_roce_gid(&cx, lo, None).unwrap().index, 3);
    assert!(pick_roce_gid(&[gid(0, "::", v2, 0)], lo, None).is_none());
}

#[test]
fn link_speed_from_port_codes() {
    assert_eq!(speed_mbps(8, 1), 10_000); // rxe reports FDR10 x1
    assert_eq!(speed_mbps(32, 2), 100_000); // EDR 4x
    assert_eq!(speed_mbps(64, 2), 200_000); // HDR 4x
    assert_eq!(speed_mbps(128, 2), 400_000); // NDR 4x
    assert_eq!(speed_mbps(1, 1), 2_500);
}

#[test]
fn immediates_and_sequence_windows() {
    for seq in [0u64, 1, 15, (1 << 23) - 1, 1 << 23, (1 << 40) + 5] {
        let Imm::Part(low, n) = wire::decode_imm(wire::imm_part(seq, 3)) else {
            panic!("a part")
        };
        assert_eq!(n, 3);
        for base in seq.saturating_sub(SLOTS as u64 - 1)..=seq {
            assert_eq!(
                wire::part_seq(base, low),
                Some(seq),
                "seq {seq} base {base}"
            );
        }
        assert_eq!(wire::part_seq(seq + 1, low), None, "behind the window");
        let Imm::Cts(low) = wire::decode_imm(wire::imm_cts(seq)) else {
            panic!("a CTS")
        };
        assert!(wire::cts_matches(seq, low) && !wire::cts_matches(seq + 1, low));
    }
    let c = Cts {
        seq: 77,
        cap: 1 << 33,
        addr: 0x7fff_0000_1234,
        rkey: 42,
    };
    assert_eq!(Cts::decode(&c.encode()), c);
    assert!(c.zero_copy() && !Cts::default().zero_copy());
    let h = wire::header([1, 2, 3], 12345);
    assert_eq!(wire::parse_header(&h), ([1, 2, 3], 12345));
}

#[test]
fn declared_regions_are_counted_by_range() {
    let buf = vec![0u8; 100];
    let mut c = MrCache::default();
    let a = c.declare(buf.as_ptr(), 100).unwrap();
    let b = c.declare(buf.as_ptr(), 100).unwrap(); // in place: the same range twice
    let s = c.declare(buf[10..].as_ptr(), 50).unwrap();
    assert_eq!(c.len(), 2);
    c.undeclare(a).unwrap();
    assert_eq!(c.len(), 2);
    c.undeclare(b).unwrap();
    c.undeclare(s).unwrap();
    assert_eq!(c.len(), 0);
    let e = c.undeclare(c_region(&buf)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidUsage);
}

fn c_region(buf: &[u8]) -> super::VerbsRegion {
    // A region of another cache: declaring it there makes one this cache does not know.
    MrCache::default().declare(buf.as_ptr(), 3).unwrap()
}
