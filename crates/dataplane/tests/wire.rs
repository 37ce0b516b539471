//! Parsers and checks over untrusted bytes: 802.1Q, VXLAN, the DHCP responder,
//! port security, MAC parsing. Unit cases plus never-panic property tests.

mod common;

use std::net::Ipv4Addr;

use common::*;
use proptest::prelude::*;
use smoltcp::wire::{DhcpMessageType, EthernetProtocol};
use switchyard_dataplane::dhcp::{self, Lease, Verdict};
use switchyard_dataplane::frames::{self, BROADCAST, mac_serde::parse_mac};
use switchyard_dataplane::spoof::PortSecurity;
use switchyard_dataplane::wire::{vlan, vxlan};
use switchyard_dataplane::{DropReason, Mac};

fn lease() -> Lease {
    Lease {
        ip: ip(50, 50, 50, 11),
        prefix_len: 24,
        router: Some(ip(50, 50, 50, 1)),
        dns: vec![
            ip(9, 9, 9, 9),
            ip(1, 1, 1, 1),
            ip(8, 8, 8, 8),
            ip(8, 8, 4, 4),
        ],
        routes: vec![(ip(10, 0, 0, 0), 8, ip(50, 50, 50, 1))],
        mtu: 1450,
        lease_secs: 3600,
        server: ip(50, 50, 50, 2),
    }
}

fn server_mac() -> Mac {
    mac(0xff, 1)
}

fn client() -> Mac {
    mac(0, 1)
}

#[test]
fn vlan_tag_fields() {
    let f = udp(BROADCAST, client(), ip(1, 1, 1, 1), ip(2, 2, 2, 2));
    let t = vlan::push_tag(&f, 0xf065).expect("tag");
    assert_eq!(t.len(), f.len() + vlan::TAG_LEN);
    assert_eq!(
        &t[12..16],
        &[0x81, 0x00, 0x00, 0x65],
        "TPID then TCI with VID masked to 12 bits"
    );
    assert_eq!(vlan::vlan_of(&t), Ok(Some(0x065)));
    assert_eq!(vlan::pop_tag(&t), Ok(f.clone()));
    // PCP and DEI bits are not part of the VID.
    let mut p = t.clone();
    p[14] |= 0xf0;
    assert_eq!(vlan::vlan_of(&p), Ok(Some(0x065)));
    // Lengths: 14 bytes untagged is enough to say "untagged"; a tag needs 18.
    assert_eq!(vlan::vlan_of(&f[..14]), Ok(None));
    assert!(vlan::vlan_of(&f[..13]).is_err());
    assert!(vlan::vlan_of(&t[..17]).is_err());
    assert_eq!(vlan::vlan_of(&t[..18]), Ok(Some(0x065)));
    assert!(vlan::pop_tag(&t[..17]).is_err());
    assert!(vlan::push_tag(&f[..13], 5).is_err());
    assert_eq!(vlan::push_tag(&f[..14], 5).map(|v| v.len()), Ok(18));
}

#[test]
fn vxlan_header() {
    let inner = udp(BROADCAST, client(), ip(1, 1, 1, 1), ip(2, 2, 2, 2));
    let p = vxlan::encap(0xff_ffff, &inner);
    assert_eq!(&p[..8], &[0x08, 0, 0, 0, 0xff, 0xff, 0xff, 0]);
    let v = vxlan::Packet::new_checked(&p[..]).expect("valid");
    assert_eq!(v.vni(), 0xff_ffff);
    assert_eq!(v.payload(), &inner[..]);
    // VNIs wider than 24 bits are truncated, never spill into the flags.
    let p = vxlan::encap(0x0100_0001, &inner);
    assert_eq!(p[0], 0x08);
    assert_eq!(vxlan::Packet::new_checked(&p[..]).expect("valid").vni(), 1);
    // An 8-byte header with an empty payload is valid; 7 bytes are not.
    let empty = vxlan::encap(7, &[]);
    assert_eq!(
        vxlan::Packet::new_checked(&empty[..])
            .expect("valid")
            .payload(),
        &[] as &[u8]
    );
    assert!(vxlan::Packet::new_checked(&empty[..7]).is_err());
    // Other flag bits are ignored as RFC 7348 says; the I flag is required.
    let mut other = vxlan::encap(9, &inner);
    other[0] = 0xff;
    assert_eq!(
        vxlan::Packet::new_checked(&other[..]).expect("I set").vni(),
        9
    );
    other[0] = 0xf7;
    assert!(vxlan::Packet::new_checked(&other[..]).is_err());
    assert_eq!(vxlan::UDP_PORT, 4789);
}

#[test]
fn dhcp_respond_verdicts() {
    let l = lease();
    // Not DHCP: ARP, truncated Ethernet, UDP to other ports, TCP.
    assert_eq!(
        dhcp::respond(&arp_request(client(), l.ip, l.server), server_mac(), &l),
        Verdict::NotDhcp
    );
    assert_eq!(
        dhcp::respond(&[0u8; 10], server_mac(), &l),
        Verdict::NotDhcp
    );
    assert_eq!(
        dhcp::respond(&udp(BROADCAST, client(), l.ip, l.server), server_mac(), &l),
        Verdict::NotDhcp
    );
    let server_to_client =
        frames::udp(BROADCAST, client(), l.server, l.ip, 67, 68, 64, &[0u8; 300]);
    assert_eq!(
        dhcp::respond(&server_to_client, server_mac(), &l),
        Verdict::NotDhcp
    );
    // DHCP ports but body too short, or no magic cookie, or no message type.
    assert_eq!(
        dhcp::respond(&dhcp_frame(client(), &[1; 20]), server_mac(), &l),
        Verdict::Malformed
    );
    let good = dhcp_client(client(), DhcpMessageType::Discover, 5, None, None);
    let body = &good[42..];
    let mut no_magic = body.to_vec();
    no_magic[236] ^= 0xff;
    assert_eq!(
        dhcp::respond(&dhcp_frame(client(), &no_magic), server_mac(), &l),
        Verdict::Malformed
    );
    let mut no_type = body[..240].to_vec();
    no_type.push(255);
    assert_eq!(
        dhcp::respond(&dhcp_frame(client(), &no_type), server_mac(), &l),
        Verdict::Malformed
    );
    // Message type present but with an op code of BOOTREPLY.
    let mut reply_op = body.to_vec();
    reply_op[0] = 2;
    assert_eq!(
        dhcp::respond(&dhcp_frame(client(), &reply_op), server_mac(), &l),
        Verdict::Malformed
    );
    // RELEASE, DECLINE, INFORM are ignored.
    for kind in [
        DhcpMessageType::Release,
        DhcpMessageType::Decline,
        DhcpMessageType::Inform,
    ] {
        let f = dhcp_client(client(), kind, 5, Some(l.ip), Some(l.server));
        assert_eq!(
            dhcp::respond(&f, server_mac(), &l),
            Verdict::Ignored,
            "{kind:?}"
        );
    }
}

#[test]
fn dhcp_offer_contents() {
    let l = lease();
    let Verdict::Reply(f) = dhcp::respond(
        &dhcp_client(client(), DhcpMessageType::Discover, 42, None, None),
        server_mac(),
        &l,
    ) else {
        panic!("no reply")
    };
    let r = parse_dhcp_reply(&f);
    assert_eq!(r.message_type, DhcpMessageType::Offer);
    assert_eq!(r.xid, 42);
    assert_eq!((r.eth_dst, r.eth_src), (client(), server_mac()));
    assert_eq!(r.your_ip, l.ip);
    assert_eq!(r.subnet_mask, Some(ip(255, 255, 255, 0)));
    // At most three DNS servers fit smoltcp's representation; the first three are kept in order.
    assert_eq!(r.dns, vec![ip(9, 9, 9, 9), ip(1, 1, 1, 1), ip(8, 8, 8, 8)]);
    assert_eq!(r.lease, Some(3600));
    assert_eq!(r.option(26), Some(&[0x05, 0xaa][..]));
    // The default route follows the host routes (RFC 3442: option 121 replaces option 3).
    assert_eq!(
        r.option(121),
        Some(&[8, 10, 50, 50, 50, 1, 0, 50, 50, 50, 1][..])
    );
    // REQUEST in the renewing state: ciaddr set, no requested-ip, no server id.
    let mut renew = dhcp_client(client(), DhcpMessageType::Request, 43, None, None);
    renew[42 + 12..42 + 16].copy_from_slice(&l.ip.octets());
    let Verdict::Reply(f) = dhcp::respond(&renew, server_mac(), &l) else {
        panic!("no reply")
    };
    let ack = parse_dhcp_reply(&f);
    assert_eq!(ack.message_type, DhcpMessageType::Ack);
    // A renewing client has an address: the answer is unicast to it (RFC 2131 4.1).
    assert_eq!((ack.eth_dst, ack.ip_dst), (client(), l.ip));
    // A DHCP message whose chaddr is not its sender is refused.
    let mut forged = dhcp_client(client(), DhcpMessageType::Discover, 45, None, None);
    forged[6..12].copy_from_slice(&[0xfa, 0x16, 0x3e, 9, 9, 9]);
    assert_eq!(dhcp::respond(&forged, server_mac(), &l), Verdict::Malformed);
    // A lease without routes, router or DNS omits them.
    let bare = Lease {
        router: None,
        dns: vec![],
        routes: vec![],
        ..lease()
    };
    let Verdict::Reply(f) = dhcp::respond(
        &dhcp_client(client(), DhcpMessageType::Discover, 44, None, None),
        server_mac(),
        &bare,
    ) else {
        panic!("no reply")
    };
    let r = parse_dhcp_reply(&f);
    assert_eq!((r.router, r.dns.len(), r.option(121)), (None, 0, None));
    assert!(r.option(26).is_some());
}

fn sec() -> PortSecurity {
    secured_with_pair(
        client(),
        &[ip(50, 50, 50, 11)],
        (ip(10, 1, 0, 0), 16, mac(0, 0xaa)),
    )
}

#[test]
fn port_security_check() {
    let s = sec();
    let ok = |f: &[u8]| s.check(f);
    assert_eq!(
        ok(&udp(
            BROADCAST,
            client(),
            ip(50, 50, 50, 11),
            ip(50, 50, 50, 1)
        )),
        Ok(())
    );
    assert_eq!(
        ok(&udp(
            BROADCAST,
            mac(9, 9),
            ip(50, 50, 50, 11),
            ip(50, 50, 50, 1)
        )),
        Err(DropReason::SpoofedMac)
    );
    assert_eq!(
        ok(&udp(
            BROADCAST,
            client(),
            ip(50, 50, 50, 12),
            ip(50, 50, 50, 1)
        )),
        Err(DropReason::SpoofedIp)
    );
    // Allowed pair: a /16 from its own MAC only.
    assert_eq!(
        ok(&udp(
            BROADCAST,
            mac(0, 0xaa),
            ip(10, 1, 200, 3),
            ip(50, 50, 50, 1)
        )),
        Ok(())
    );
    assert_eq!(
        ok(&udp(
            BROADCAST,
            mac(0, 0xaa),
            ip(10, 2, 0, 1),
            ip(50, 50, 50, 1)
        )),
        Err(DropReason::SpoofedIp)
    );
    assert_eq!(
        ok(&udp(
            BROADCAST,
            client(),
            ip(10, 1, 0, 1),
            ip(50, 50, 50, 1)
        )),
        Err(DropReason::SpoofedIp)
    );
    // DHCP from 0.0.0.0 is allowed, other traffic from 0.0.0.0 is not.
    assert_eq!(
        ok(&dhcp_client(
            client(),
            DhcpMessageType::Discover,
            1,
            None,
            None
        )),
        Ok(())
    );
    assert_eq!(
        ok(&udp(
            BROADCAST,
            client(),
            Ipv4Addr::UNSPECIFIED,
            ip(50, 50, 50, 1)
        )),
        Err(DropReason::SpoofedIp)
    );
    // ARP: sender checked, probes allowed, SHA must equal the frame source.
    assert_eq!(
        ok(&arp_request(
            client(),
            ip(50, 50, 50, 11),
            ip(50, 50, 50, 1)
        )),
        Ok(())
    );
    assert_eq!(
        ok(&arp_request(
            client(),
            Ipv4Addr::UNSPECIFIED,
            ip(50, 50, 50, 1)
        )),
        Ok(())
    );
    assert_eq!(
        ok(&arp_request(client(), ip(50, 50, 50, 1), ip(50, 50, 50, 1))),
        Err(DropReason::SpoofedIp)
    );
    let mut forged = arp_request(client(), ip(50, 50, 50, 11), ip(50, 50, 50, 1));
    forged[22..28].copy_from_slice(&mac(9, 9).0);
    assert_eq!(ok(&forged), Err(DropReason::SpoofedMac));
    // Truncated headers, and other ethertypes.
    let f = udp(BROADCAST, client(), ip(50, 50, 50, 11), ip(50, 50, 50, 1));
    assert_eq!(ok(&f[..13]), Err(DropReason::Malformed));
    assert_eq!(ok(&f[..30]), Err(DropReason::Malformed));
    let a = arp_request(client(), ip(50, 50, 50, 11), ip(50, 50, 50, 1));
    assert_eq!(ok(&a[..30]), Err(DropReason::Malformed));
    let v6 = frames::ethernet(BROADCAST, client(), EthernetProtocol::Ipv6, &[0; 40]);
    assert_eq!(ok(&v6), Err(DropReason::Unsupported));
    let tagged = vlan::push_tag(&f, 101).expect("tag");
    assert_eq!(ok(&tagged), Err(DropReason::Unsupported));
    // Disabled: anything, even garbage.
    let off = insecure(client());
    assert_eq!(off.check(&[1, 2, 3]), Ok(()));
}

#[test]
fn mac_strings() {
    assert_eq!(parse_mac("02:00:00:00:00:01"), Some(client()));
    assert_eq!(parse_mac("FF:ff:FF:ff:FF:ff"), Some(BROADCAST));
    for bad in [
        "",
        "02:00:00:00:00",
        "02:00:00:00:00:01:02",
        "2:00:00:00:00:01",
        "zz:00:00:00:00:01",
        "02-00-00-00-00-01",
    ] {
        assert_eq!(parse_mac(bad), None, "{bad}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn vlan_never_panics(b in prop::collection::vec(any::<u8>(), 0..64), vid in any::<u16>()) {
        let v = vlan::vlan_of(&b);
        if let Ok(Some(id)) = v {
            prop_assert!(id < 4096);
            let popped = vlan::pop_tag(&b).expect("a parsed tag can be popped");
            prop_assert_eq!(popped.len(), b.len() - 4);
            prop_assert_eq!(vlan::push_tag(&popped, id).map(|t| t[16..].to_vec()), Ok(b[16..].to_vec()));
        }
        if let Ok(t) = vlan::push_tag(&b, vid) {
            prop_assert_eq!(vlan::vlan_of(&t), Ok(Some(vid & 0x0fff)));
            prop_assert_eq!(vlan::pop_tag(&t), Ok(b.clone()));
        }
    }

    #[test]
    fn vxlan_roundtrip_and_never_panics(b in prop::collection::vec(any::<u8>(), 0..64), vni in 0u32..(1 << 24)) {
        if let Ok(p) = vxlan::Packet::new_checked(&b[..]) {
            prop_assert_eq!(p.payload().len(), b.len() - 8);
            prop_assert!(p.vni() < (1 << 24));
        }
        let e = vxlan::encap(vni, &b);
        let p = vxlan::Packet::new_checked(&e[..]).expect("own encap parses");
        prop_assert_eq!(p.vni(), vni);
        prop_assert_eq!(p.payload(), &b[..]);
    }

    #[test]
    fn dhcp_respond_never_panics(
        body in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..400),
            mutated(vec![
                dhcp_client(client(), DhcpMessageType::Discover, 1, None, None)[42..].to_vec(),
                dhcp_client(client(), DhcpMessageType::Request, 2, Some(ip(50, 50, 50, 11)), Some(ip(50, 50, 50, 2)))[42..].to_vec(),
            ]),
        ],
        raw in frame_bytes(vec![dhcp_client(client(), DhcpMessageType::Discover, 1, None, None)]),
        prefix in any::<u8>(),
        mtu in any::<u16>(),
    ) {
        let l = Lease { prefix_len: prefix, mtu, ..lease() };
        for f in [dhcp_frame(client(), &body), raw] {
            if let Verdict::Reply(r) = dhcp::respond(&f, server_mac(), &l) {
                let rep = parse_dhcp_reply(&r);
                prop_assert!(matches!(
                    rep.message_type,
                    DhcpMessageType::Offer | DhcpMessageType::Ack | DhcpMessageType::Nak
                ));
            }
        }
    }

    #[test]
    fn port_security_never_panics(
        f in frame_bytes(vec![
            udp(BROADCAST, client(), ip(50, 50, 50, 11), ip(50, 50, 50, 1)),
            arp_request(client(), ip(50, 50, 50, 11), ip(50, 50, 50, 1)),
            dhcp_client(client(), DhcpMessageType::Discover, 1, None, None),
        ]),
        prefix in any::<u8>(),
    ) {
        let s = PortSecurity { pairs: vec![switchyard_dataplane::spoof::AllowedPair { ip: ip(10, 1, 0, 0), prefix_len: prefix, mac: mac(0, 0xaa) }], ..sec() };
        let v = s.check(&f);
        if v.is_ok() {
            // Whatever passes came from one of the permitted MACs.
            let (_, src) = frames::macs(&f).expect("passing frames have MACs");
            prop_assert!(src == client() || src == mac(0, 0xaa));
        }
    }

    #[test]
    fn parse_mac_never_panics(s in "\\PC{0,24}") {
        let _ = parse_mac(&s);
    }
}
