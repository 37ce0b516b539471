//! vRouter pipeline: VRF forwarding, VXLAN encap/decap, BUM flooding, proxy ARP,
//! DHCP, anti-spoofing, configuration updates, and property tests.

mod common;

use std::net::Ipv4Addr;

use common::*;
use proptest::prelude::*;
use smoltcp::wire::{ArpOperation, DhcpMessageType};
use switchyard_dataplane::dhcp::Lease;
use switchyard_dataplane::frames::{self, BROADCAST};
use switchyard_dataplane::vrouter::{ConfigError, Interface, RemoteMac, Update, Vrouter};
use switchyard_dataplane::wire::vxlan;
use switchyard_dataplane::{DropReason, Input, Mac, Output, Pipeline};

const VNI: u32 = 1001;
const VNI2: u32 = 1002;
const GW_VTEP: Ipv4Addr = ip(192, 0, 2, 1);
const C4_VTEP: Ipv4Addr = ip(192, 0, 2, 14);
const SERVER: Ipv4Addr = ip(50, 50, 50, 2);

fn vr_mac() -> Mac {
    mac(0xff, 1)
}
/// Port 1, VNI 1001, 50.50.50.11, DHCP.
fn a() -> Mac {
    mac(0, 1)
}
/// Port 2, VNI 1001, 50.50.50.12, DHCP, allowed pair 50.50.50.100/32 from `pair_mac`.
fn b() -> Mac {
    mac(0, 2)
}
/// Port 3, VNI 1002, 60.60.60.13.
fn c() -> Mac {
    mac(0, 3)
}
/// Port 4, VNI 1001, port security disabled.
fn d() -> Mac {
    mac(0, 4)
}
fn pair_mac() -> Mac {
    mac(0, 0xaa)
}
/// Remote VM behind compute-4, 50.50.50.21.
fn r() -> Mac {
    mac(1, 1)
}
/// The gateway's router interface MAC behind the gateway VTEP, 50.50.50.1.
fn gw() -> Mac {
    mac(1, 0xfe)
}

fn lease(last: u8) -> Lease {
    Lease {
        ip: ip(50, 50, 50, last),
        prefix_len: 24,
        router: Some(ip(50, 50, 50, 1)),
        dns: vec![ip(9, 9, 9, 9), ip(1, 1, 1, 1)],
        routes: vec![
            (ip(169, 254, 169, 254), 32, ip(50, 50, 50, 2)),
            (ip(10, 0, 0, 0), 8, ip(50, 50, 50, 1)),
        ],
        mtu: 1450,
        lease_secs: 86_400,
        server: SERVER,
    }
}

fn config() -> Vec<Update> {
    vec![
        Update::Network {
            vni: VNI,
            flood: vec![GW_VTEP, C4_VTEP],
        },
        Update::Network {
            vni: VNI2,
            flood: vec![GW_VTEP],
        },
        Update::Interface(Interface {
            port: 1,
            vni: VNI,
            security: secured(a(), &[ip(50, 50, 50, 11)]),
            dhcp: Some(lease(11)),
        }),
        Update::Interface(Interface {
            port: 2,
            vni: VNI,
            security: secured_with_pair(
                b(),
                &[ip(50, 50, 50, 12)],
                (ip(50, 50, 50, 100), 32, pair_mac()),
            ),
            dhcp: Some(lease(12)),
        }),
        Update::Interface(Interface {
            port: 3,
            vni: VNI2,
            security: secured(c(), &[ip(60, 60, 60, 13)]),
            dhcp: None,
        }),
        Update::Interface(Interface {
            port: 4,
            vni: VNI,
            security: insecure(d()),
            dhcp: None,
        }),
        Update::Remote(RemoteMac {
            vni: VNI,
            mac: r(),
            ips: vec![ip(50, 50, 50, 21)],
            vtep: C4_VTEP,
        }),
        Update::Remote(RemoteMac {
            vni: VNI,
            mac: gw(),
            ips: vec![ip(50, 50, 50, 1)],
            vtep: GW_VTEP,
        }),
    ]
}

fn vrouter() -> Vrouter {
    let mut v = Vrouter::new(vr_mac());
    v.apply(1, &config()).expect("config applies");
    v
}

fn underlay(v: &mut Vrouter, src: Ipv4Addr, data: &[u8]) -> Vec<Output> {
    run(v, t(0), Input::Underlay { src, data })
}

fn a_ip() -> Ipv4Addr {
    ip(50, 50, 50, 11)
}

#[test]
fn local_to_local_within_vrf() {
    let mut v = vrouter();
    let f = udp(b(), a(), a_ip(), ip(50, 50, 50, 12));
    let out = frame_in(&mut v, 1, &f);
    assert_eq!(out, vec![Output::Frame { port: 2, data: f }]);
    assert_eq!(v.counters().rx, 1);
    assert_eq!(v.counters().tx, 1);
    assert_eq!(total_drops(&v), 0);
}

#[test]
fn no_leak_between_vrfs() {
    let mut v = vrouter();
    // C lives on port 3 in VNI 1002; A (VNI 1001) cannot reach it by MAC.
    let out = frame_in(&mut v, 1, &udp(c(), a(), a_ip(), ip(60, 60, 60, 13)));
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(v.counters().dropped(DropReason::UnknownUnicast), 1);
    // And VNI 1002 broadcasts stay in VNI 1002.
    let out = frame_in(
        &mut v,
        3,
        &udp(BROADCAST, c(), ip(60, 60, 60, 13), ip(60, 60, 60, 255)),
    );
    assert!(ports_out(&out).is_empty());
    let u = underlay_out(&out);
    assert_eq!(u.len(), 1);
    assert_eq!(u[0].0, GW_VTEP);
    assert_eq!(
        vxlan::Packet::new_checked(&u[0].1[..])
            .expect("vxlan")
            .vni(),
        VNI2
    );
}

#[test]
fn local_to_remote_encapsulates() {
    for len in [64, 1400] {
        let mut v = vrouter();
        let f = udp_frame(r(), a(), a_ip(), ip(50, 50, 50, 21), len);
        let out = frame_in(&mut v, 1, &f);
        assert_eq!(out.len(), 1, "{out:?}");
        let Output::Underlay { dst, data } = &out[0] else {
            panic!("expected underlay output, got {out:?}")
        };
        assert_eq!(*dst, C4_VTEP);
        assert_eq!(data.len(), vxlan::HEADER_LEN + f.len());
        assert_eq!(data[0], 0x08, "I flag only");
        assert_eq!(&data[1..4], &[0, 0, 0], "reserved bits zero");
        assert_eq!(data[7], 0, "reserved byte zero");
        let p = vxlan::Packet::new_checked(&data[..]).expect("valid VXLAN");
        assert_eq!(p.vni(), VNI);
        assert_eq!(p.payload(), &f[..], "inner frame byte-identical");
        assert_eq!(v.counters().tx, 1);
    }
}

#[test]
fn remote_to_local_decapsulates() {
    let mut v = vrouter();
    let inner = ping(a(), r(), ip(50, 50, 50, 21), a_ip(), 1);
    let out = underlay(&mut v, C4_VTEP, &vxlan::encap(VNI, &inner));
    assert_eq!(
        out,
        vec![Output::Frame {
            port: 1,
            data: inner.clone()
        }]
    );
    // The same inner frame in the other VNI does not reach A.
    let out = underlay(&mut v, C4_VTEP, &vxlan::encap(VNI2, &inner));
    assert!(out.is_empty());
    assert_eq!(v.counters().dropped(DropReason::UnknownUnicast), 1);
    // Unicast to a remote MAC arriving from the underlay is not reflected back.
    let out = underlay(
        &mut v,
        C4_VTEP,
        &vxlan::encap(VNI, &udp(gw(), r(), ip(50, 50, 50, 21), ip(50, 50, 50, 1))),
    );
    assert!(out.is_empty(), "{out:?}");
}

#[test]
fn bum_from_local_floods_locals_and_every_vtep() {
    let mut v = vrouter();
    let f = udp(BROADCAST, a(), a_ip(), ip(50, 50, 50, 255));
    let out = frame_in(&mut v, 1, &f);
    // Other local ports of the VRF (not the sender, not port 3 in VNI 1002).
    assert_eq!(frames_out(&out), vec![(2, f.clone()), (4, f.clone())]);
    let u = underlay_out(&out);
    assert_eq!(
        u.iter().map(|(d, _)| *d).collect::<Vec<_>>(),
        vec![GW_VTEP, C4_VTEP]
    );
    for (_, data) in &u {
        let p = vxlan::Packet::new_checked(&data[..]).expect("vxlan");
        assert_eq!(p.vni(), VNI);
        assert_eq!(p.payload(), &f[..]);
    }
    assert_eq!(v.counters().tx, 4);
    // Multicast is BUM too.
    let mut mcast = f.clone();
    mcast[..6].copy_from_slice(&[0x01, 0x00, 0x5e, 0, 0, 1]);
    assert_eq!(frame_in(&mut v, 1, &mcast).len(), 4);
}

#[test]
fn bum_from_underlay_split_horizon() {
    let mut v = vrouter();
    let inner = udp(BROADCAST, r(), ip(50, 50, 50, 21), ip(50, 50, 50, 255));
    let out = underlay(&mut v, C4_VTEP, &vxlan::encap(VNI, &inner));
    assert!(
        underlay_out(&out).is_empty(),
        "never re-flooded to the overlay"
    );
    assert_eq!(
        frames_out(&out),
        vec![(1, inner.clone()), (2, inner.clone()), (4, inner)]
    );
}

#[test]
fn proxy_arp_answers_known_ips_locally() {
    let mut v = vrouter();
    // A local neighbour and a remote one (and the gateway behind its VTEP).
    for (target, owner) in [
        (ip(50, 50, 50, 12), b()),
        (ip(50, 50, 50, 21), r()),
        (ip(50, 50, 50, 1), gw()),
    ] {
        let out = frame_in(&mut v, 1, &arp_request(a(), a_ip(), target));
        assert_eq!(out.len(), 1, "answered, never flooded: {out:?}");
        let Output::Frame { port, data } = &out[0] else {
            panic!("{out:?}")
        };
        assert_eq!(*port, 1);
        let (edst, esrc, op, sha, spa, tha, tpa) = parse_arp(data);
        assert_eq!((edst, esrc), (a(), owner));
        assert_eq!(op, ArpOperation::Reply);
        assert_eq!((sha, spa), (owner, target));
        assert_eq!((tha, tpa), (a(), a_ip()));
    }
    assert_eq!(v.counters().tx, 3);
}

#[test]
fn arp_for_unknown_ip_is_flooded() {
    let mut v = vrouter();
    let req = arp_request(a(), a_ip(), ip(50, 50, 50, 99));
    let out = frame_in(&mut v, 1, &req);
    assert_eq!(ports_out(&out), vec![2, 4]);
    assert_eq!(underlay_out(&out).len(), 2);
    // A gratuitous ARP (target == sender) is an announcement: flooded, not answered.
    let garp = frames::gratuitous_arp(a(), a_ip());
    let out = frame_in(&mut v, 1, &garp);
    assert_eq!(ports_out(&out), vec![2, 4]);
    assert_eq!(underlay_out(&out).len(), 2);
}

#[test]
fn dhcp_discover_offer_request_ack() {
    let mut v = vrouter();
    let discover = dhcp_client(a(), DhcpMessageType::Discover, 0xdead_beef, None, None);
    let out = frame_in(&mut v, 1, &discover);
    assert_eq!(out.len(), 1, "answered locally, never flooded: {out:?}");
    let Output::Frame { port: 1, data } = &out[0] else {
        panic!("{out:?}")
    };
    let offer = parse_dhcp_reply(data);
    assert_eq!(offer.message_type, DhcpMessageType::Offer);
    check_lease_fields(&offer, 0xdead_beef);

    let request = dhcp_client(
        a(),
        DhcpMessageType::Request,
        0xdead_bef0,
        Some(a_ip()),
        Some(SERVER),
    );
    let out = frame_in(&mut v, 1, &request);
    assert_eq!(out.len(), 1, "{out:?}");
    let ack = parse_dhcp_reply(match &out[0] {
        Output::Frame { port: 1, data } => data,
        o => panic!("{o:?}"),
    });
    assert_eq!(ack.message_type, DhcpMessageType::Ack);
    check_lease_fields(&ack, 0xdead_bef0);
    assert_eq!(v.counters().tx, 2);
    assert_eq!(total_drops(&v), 0);
}

fn check_lease_fields(r: &DhcpReply, xid: u32) {
    assert_eq!(r.xid, xid);
    assert_eq!(r.chaddr, a());
    assert_eq!((r.eth_dst, r.eth_src), (a(), vr_mac()));
    assert_eq!((r.ip_src, r.ip_dst), (SERVER, Ipv4Addr::BROADCAST));
    assert_eq!((r.sport, r.dport), (67, 68));
    assert_eq!(r.your_ip, a_ip());
    assert_eq!(r.subnet_mask, Some(ip(255, 255, 255, 0)));
    assert_eq!(r.router, Some(ip(50, 50, 50, 1)));
    assert_eq!(r.dns, vec![ip(9, 9, 9, 9), ip(1, 1, 1, 1)]);
    assert_eq!(r.lease, Some(86_400));
    assert_eq!(r.server_id, Some(SERVER));
    assert_eq!(
        r.option(26),
        Some(&1450u16.to_be_bytes()[..]),
        "interface MTU option"
    );
    assert_eq!(
        r.option(121),
        Some(
            &[
                32, 169, 254, 169, 254, 50, 50, 50, 2, 8, 10, 50, 50, 50, 1, 0, 50, 50, 50, 1
            ][..]
        ),
        "RFC 3442 classless static routes, ending with the default route"
    );
}

#[test]
fn dhcp_request_for_wrong_address_is_naked_and_other_server_ignored() {
    let mut v = vrouter();
    let req = dhcp_client(
        a(),
        DhcpMessageType::Request,
        7,
        Some(ip(50, 50, 50, 99)),
        Some(SERVER),
    );
    let out = frame_in(&mut v, 1, &req);
    assert_eq!(out.len(), 1);
    let Output::Frame { data, .. } = &out[0] else {
        panic!()
    };
    let nak = parse_dhcp_reply(data);
    assert_eq!(nak.message_type, DhcpMessageType::Nak);
    assert_eq!(nak.your_ip, Ipv4Addr::UNSPECIFIED);
    assert_eq!(nak.option(26), None);
    // A REQUEST naming another server: silently not ours, and not flooded either.
    let req = dhcp_client(
        a(),
        DhcpMessageType::Request,
        8,
        Some(a_ip()),
        Some(ip(50, 50, 50, 3)),
    );
    assert!(frame_in(&mut v, 1, &req).is_empty());
}

#[test]
fn bad_dhcp_is_malformed_not_flooded() {
    let mut v = vrouter();
    // Truncated BOOTP body (shorter than the magic cookie).
    let out = frame_in(&mut v, 1, &dhcp_frame(a(), &[1, 1, 6, 0, 1, 2, 3, 4]));
    assert!(out.is_empty());
    assert_eq!(v.counters().dropped(DropReason::Malformed), 1);
    // Options whose length runs past the end, before any message type.
    let good = dhcp_client(a(), DhcpMessageType::Discover, 1, None, None);
    let eth_ip_udp = 14 + 20 + 8;
    let mut body = good[eth_ip_udp..eth_ip_udp + 240].to_vec();
    body.extend_from_slice(&[53, 200, 1]);
    let out = frame_in(&mut v, 1, &dhcp_frame(a(), &body));
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(v.counters().dropped(DropReason::Malformed), 2);
}

#[test]
fn spoofed_source_mac_dropped() {
    let mut v = vrouter();
    let out = frame_in(&mut v, 1, &udp(r(), mac(9, 9), a_ip(), ip(50, 50, 50, 21)));
    assert!(out.is_empty());
    assert_eq!(v.counters().dropped(DropReason::SpoofedMac), 1);
    // ARP whose sender hardware address is not the frame's source.
    let mut arp = arp_request(a(), a_ip(), ip(50, 50, 50, 12));
    arp[14 + 8..14 + 14].copy_from_slice(&mac(9, 9).0);
    assert!(frame_in(&mut v, 1, &arp).is_empty());
    assert_eq!(v.counters().dropped(DropReason::SpoofedMac), 2);
}

#[test]
fn spoofed_source_ip_and_arp_sender_dropped() {
    let mut v = vrouter();
    let out = frame_in(
        &mut v,
        1,
        &udp(r(), a(), ip(50, 50, 50, 12), ip(50, 50, 50, 21)),
    );
    assert!(out.is_empty());
    assert_eq!(v.counters().dropped(DropReason::SpoofedIp), 1);
    // ARP claiming B's address from A (cache poisoning): dropped, not answered, not flooded.
    let out = frame_in(
        &mut v,
        1,
        &arp_request(a(), ip(50, 50, 50, 12), ip(50, 50, 50, 21)),
    );
    assert!(out.is_empty());
    let out = frame_in(&mut v, 1, &frames::gratuitous_arp(a(), ip(50, 50, 50, 1)));
    assert!(out.is_empty());
    assert_eq!(v.counters().dropped(DropReason::SpoofedIp), 3);
    assert_eq!(v.counters().tx, 0);
    // An ARP probe (sender 0.0.0.0) is allowed.
    let out = frame_in(
        &mut v,
        1,
        &arp_request(a(), Ipv4Addr::UNSPECIFIED, ip(50, 50, 50, 99)),
    );
    assert_eq!(ports_out(&out), vec![2, 4]);
}

#[test]
fn allowed_address_pair_honoured() {
    let mut v = vrouter();
    let f = udp(r(), pair_mac(), ip(50, 50, 50, 100), ip(50, 50, 50, 21));
    let out = frame_in(&mut v, 2, &f);
    assert_eq!(underlay_out(&out).len(), 1, "{out:?}");
    // The pair's MAC with an address outside the pair's prefix.
    let out = frame_in(
        &mut v,
        2,
        &udp(r(), pair_mac(), ip(50, 50, 50, 101), ip(50, 50, 50, 21)),
    );
    assert!(out.is_empty());
    assert_eq!(v.counters().dropped(DropReason::SpoofedIp), 1);
    // The pair's address from the port's own MAC is not a fixed IP either.
    let out = frame_in(
        &mut v,
        2,
        &udp(r(), b(), ip(50, 50, 50, 100), ip(50, 50, 50, 21)),
    );
    assert!(out.is_empty());
    assert_eq!(v.counters().dropped(DropReason::SpoofedIp), 2);
    // The pair's MAC/IP is not usable from another port.
    let out = frame_in(&mut v, 1, &f);
    assert!(out.is_empty());
    assert_eq!(v.counters().dropped(DropReason::SpoofedMac), 1);
}

#[test]
fn port_security_disabled_lets_anything_through() {
    let mut v = vrouter();
    let f = udp(r(), mac(7, 7), ip(8, 8, 8, 8), ip(50, 50, 50, 21));
    let out = frame_in(&mut v, 4, &f);
    let u = underlay_out(&out);
    assert_eq!(u.len(), 1);
    assert_eq!(u[0].0, C4_VTEP);
    assert_eq!(
        vxlan::Packet::new_checked(&u[0].1[..])
            .expect("vxlan")
            .payload(),
        &f[..]
    );
    // Even non-IPv4 ethertypes.
    let v6 = frames::ethernet(
        r(),
        mac(7, 7),
        smoltcp::wire::EthernetProtocol::Ipv6,
        &[0u8; 40],
    );
    assert_eq!(frame_in(&mut v, 4, &v6).len(), 1);
    // Whereas a secured port refuses IPv6.
    let v6 = frames::ethernet(r(), a(), smoltcp::wire::EthernetProtocol::Ipv6, &[0u8; 40]);
    assert!(frame_in(&mut v, 1, &v6).is_empty());
    assert_eq!(total_drops(&v), 1);
}

#[test]
fn unknown_vni_and_bad_vxlan_dropped_and_counted() {
    let mut v = vrouter();
    let inner = udp(a(), r(), ip(50, 50, 50, 21), a_ip());
    assert!(underlay(&mut v, C4_VTEP, &vxlan::encap(4242, &inner)).is_empty());
    assert_eq!(v.counters().dropped(DropReason::UnknownVni), 1);
    // No I flag, truncated header, inner frame shorter than an Ethernet header.
    let mut no_i = vxlan::encap(VNI, &inner);
    no_i[0] = 0;
    assert!(underlay(&mut v, C4_VTEP, &no_i).is_empty());
    assert!(underlay(&mut v, C4_VTEP, &no_i[..5]).is_empty());
    assert!(underlay(&mut v, C4_VTEP, &vxlan::encap(VNI, &inner[..10])).is_empty());
    assert_eq!(v.counters().dropped(DropReason::Malformed), 3);
    // Frames on ports with no interface.
    assert!(frame_in(&mut v, 77, &inner).is_empty());
    assert_eq!(v.counters().dropped(DropReason::UnknownPort), 1);
    assert_eq!(v.counters().rx, 5);
    assert_eq!(v.counters().tx, 0);
}

#[test]
fn apply_is_all_or_nothing() {
    let mut v = vrouter();
    let before = v.bridge_table(VNI);
    let err = v
        .apply(
            2,
            &[
                Update::Network {
                    vni: 1003,
                    flood: vec![GW_VTEP],
                },
                Update::RemoveInterface { port: 1 },
                Update::Remote(RemoteMac {
                    vni: VNI,
                    mac: r(),
                    ips: vec![],
                    vtep: GW_VTEP,
                }),
                Update::Interface(Interface {
                    port: 9,
                    vni: 1004,
                    security: secured(mac(0, 9), &[]),
                    dhcp: None,
                }),
            ],
        )
        .expect_err("VNI 1004 has no network");
    assert_eq!(err, ConfigError::NoNetwork(1004));
    assert_eq!(v.version(), 1);
    assert_eq!(v.bridge_table(VNI), before, "nothing changed");
    assert!(v.bridge_table(1003).is_empty());
    // Network 1003 was not created, port 1 is still there, R still behind compute-4.
    assert!(
        underlay(
            &mut v,
            GW_VTEP,
            &vxlan::encap(1003, &udp(BROADCAST, r(), a_ip(), a_ip()))
        )
        .is_empty()
    );
    assert_eq!(v.counters().dropped(DropReason::UnknownVni), 1);
    let out = frame_in(&mut v, 1, &udp(r(), a(), a_ip(), ip(50, 50, 50, 21)));
    assert_eq!(underlay_out(&out)[0].0, C4_VTEP);
    // An interface and its network in one version is fine; removing a network
    // and adding an interface on it in one version is not.
    v.apply(
        2,
        &[
            Update::Network {
                vni: 1003,
                flood: vec![],
            },
            Update::Interface(Interface {
                port: 9,
                vni: 1003,
                security: secured(mac(0, 9), &[]),
                dhcp: None,
            }),
        ],
    )
    .expect("valid");
    assert_eq!(
        v.apply(
            3,
            &[
                Update::RemoveNetwork { vni: 1003 },
                Update::Interface(Interface {
                    port: 10,
                    vni: 1003,
                    security: secured(mac(0, 10), &[]),
                    dhcp: None,
                }),
            ]
        ),
        Err(ConfigError::NoNetwork(1003))
    );
    assert_eq!(
        v.bridge_table(1003),
        vec![(mac(0, 9), "port 9".to_string())]
    );
}

#[test]
fn stale_versions_rejected() {
    let mut v = vrouter();
    assert_eq!(
        v.apply(1, &[]),
        Err(ConfigError::StaleVersion { have: 1, got: 1 })
    );
    v.apply(5, &[]).expect("newer");
    assert_eq!(
        v.apply(4, &[Update::RemoveInterface { port: 1 }]),
        Err(ConfigError::StaleVersion { have: 5, got: 4 })
    );
    assert_eq!(v.version(), 5);
    assert_eq!(
        frame_in(&mut v, 1, &udp(b(), a(), a_ip(), ip(50, 50, 50, 12))).len(),
        1
    );
}

#[test]
fn remote_mac_moves_between_vteps() {
    let mut v = vrouter();
    let f = udp(r(), a(), a_ip(), ip(50, 50, 50, 21));
    assert_eq!(underlay_out(&frame_in(&mut v, 1, &f))[0].0, C4_VTEP);
    v.apply(
        2,
        &[Update::Remote(RemoteMac {
            vni: VNI,
            mac: r(),
            ips: vec![ip(50, 50, 50, 22)],
            vtep: GW_VTEP,
        })],
    )
    .expect("move");
    let u = underlay_out(&frame_in(&mut v, 1, &f));
    assert_eq!(u.len(), 1);
    assert_eq!(u[0].0, GW_VTEP);
    assert!(
        v.bridge_table(VNI)
            .contains(&(r(), format!("vtep {GW_VTEP}")))
    );
    // Its old IP is withdrawn (ARP flooded), its new one proxied.
    let out = frame_in(&mut v, 1, &arp_request(a(), a_ip(), ip(50, 50, 50, 21)));
    assert_eq!(out.len(), 4, "old IP no longer proxied: {out:?}");
    let out = frame_in(&mut v, 1, &arp_request(a(), a_ip(), ip(50, 50, 50, 22)));
    assert_eq!(out.len(), 1);
    // Withdrawn entirely.
    v.apply(3, &[Update::RemoveRemote { vni: VNI, mac: r() }])
        .expect("remove");
    assert!(frame_in(&mut v, 1, &f).is_empty());
    assert_eq!(v.counters().dropped(DropReason::UnknownUnicast), 1);
    assert_eq!(
        frame_in(&mut v, 1, &arp_request(a(), a_ip(), ip(50, 50, 50, 22))).len(),
        4
    );
}

#[test]
fn vm_arrives_here_local_wins_over_remote() {
    // The VM behind compute-4 migrates to this node's port 5.
    let mut v = vrouter();
    v.apply(
        2,
        &[Update::Interface(Interface {
            port: 5,
            vni: VNI,
            security: secured(r(), &[ip(50, 50, 50, 21)]),
            dhcp: None,
        })],
    )
    .expect("plug");
    let f = udp(r(), a(), a_ip(), ip(50, 50, 50, 21));
    assert_eq!(
        frame_in(&mut v, 1, &f),
        vec![Output::Frame {
            port: 5,
            data: f.clone()
        }]
    );
    // A late remote route for the same MAC does not steal it back.
    v.apply(
        3,
        &[Update::Remote(RemoteMac {
            vni: VNI,
            mac: r(),
            ips: vec![ip(50, 50, 50, 21)],
            vtep: C4_VTEP,
        })],
    )
    .expect("late remote");
    assert_eq!(ports_out(&frame_in(&mut v, 1, &f)), vec![5]);
}

#[test]
fn remove_interface_and_network() {
    let mut v = vrouter();
    v.apply(2, &[Update::RemoveInterface { port: 2 }])
        .expect("remove");
    assert!(frame_in(&mut v, 1, &udp(b(), a(), a_ip(), ip(50, 50, 50, 12))).is_empty());
    assert_eq!(v.counters().dropped(DropReason::UnknownUnicast), 1);
    assert!(frame_in(&mut v, 2, &udp(a(), b(), ip(50, 50, 50, 12), a_ip())).is_empty());
    assert_eq!(v.counters().dropped(DropReason::UnknownPort), 1);
    // ARP for its IP is no longer proxied.
    assert_eq!(
        frame_in(&mut v, 1, &arp_request(a(), a_ip(), ip(50, 50, 50, 12))).len(),
        3
    );
    v.apply(3, &[Update::RemoveNetwork { vni: VNI2 }])
        .expect("remove network");
    assert!(
        frame_in(
            &mut v,
            3,
            &udp(BROADCAST, c(), ip(60, 60, 60, 13), ip(60, 60, 60, 255))
        )
        .is_empty()
    );
    assert_eq!(v.counters().dropped(DropReason::UnknownPort), 2);
}

/// Migration to this node: the controller plugs the port and withdraws the
/// remote route in one version. The local IP must stay proxied.
#[test]
fn remove_remote_after_local_plug_keeps_proxy_arp() {
    let mut v = vrouter();
    v.apply(
        2,
        &[
            Update::Interface(Interface {
                port: 5,
                vni: VNI,
                security: secured(r(), &[ip(50, 50, 50, 21)]),
                dhcp: None,
            }),
            Update::RemoveRemote { vni: VNI, mac: r() },
        ],
    )
    .expect("apply");
    let out = frame_in(&mut v, 1, &arp_request(a(), a_ip(), ip(50, 50, 50, 21)));
    assert_eq!(out.len(), 1, "expected a proxy ARP reply, got {out:?}");
}

/// Migration away from this node: the controller announces the new location
/// and unplugs the port in one version. Traffic must follow to the new VTEP.
#[test]
fn remote_then_unplug_keeps_remote_route() {
    let mut v = vrouter();
    v.apply(
        2,
        &[
            Update::Remote(RemoteMac {
                vni: VNI,
                mac: b(),
                ips: vec![ip(50, 50, 50, 12)],
                vtep: C4_VTEP,
            }),
            Update::RemoveInterface { port: 2 },
        ],
    )
    .expect("apply");
    let out = frame_in(&mut v, 1, &udp(b(), a(), a_ip(), ip(50, 50, 50, 12)));
    assert_eq!(
        underlay_out(&out).first().map(|u| u.0),
        Some(C4_VTEP),
        "{out:?}"
    );
    let out = frame_in(&mut v, 1, &arp_request(a(), a_ip(), ip(50, 50, 50, 12)));
    assert_eq!(out.len(), 1, "expected a proxy ARP reply, got {out:?}");
}

/// A remote route for a VNI with no Network must not create the network.
#[test]
fn remote_for_unknown_vni_does_not_create_network() {
    let mut v = vrouter();
    let _ = v.apply(
        2,
        &[Update::Remote(RemoteMac {
            vni: 4242,
            mac: mac(4, 2),
            ips: vec![],
            vtep: C4_VTEP,
        })],
    );
    let inner = udp(BROADCAST, mac(4, 2), ip(1, 2, 3, 4), ip(1, 2, 3, 255));
    assert!(underlay(&mut v, C4_VTEP, &vxlan::encap(4242, &inner)).is_empty());
    assert_eq!(v.counters().dropped(DropReason::UnknownVni), 1);
}

fn seeds() -> Vec<Vec<u8>> {
    vec![
        udp(b(), a(), a_ip(), ip(50, 50, 50, 12)),
        udp(r(), a(), a_ip(), ip(50, 50, 50, 21)),
        udp(BROADCAST, a(), a_ip(), ip(50, 50, 50, 255)),
        ping(r(), a(), a_ip(), ip(50, 50, 50, 21), 3),
        arp_request(a(), a_ip(), ip(50, 50, 50, 12)),
        arp_request(a(), a_ip(), ip(50, 50, 50, 99)),
        dhcp_client(a(), DhcpMessageType::Discover, 1, None, None),
        dhcp_client(a(), DhcpMessageType::Request, 2, Some(a_ip()), Some(SERVER)),
        vxlan::encap(VNI, &udp(a(), r(), ip(50, 50, 50, 21), a_ip())),
        vxlan::encap(
            VNI,
            &udp(BROADCAST, r(), ip(50, 50, 50, 21), ip(50, 50, 50, 255)),
        ),
        vxlan::encap(VNI2, &udp(c(), r(), ip(60, 60, 60, 21), ip(60, 60, 60, 13))),
    ]
}

fn inputs() -> impl Strategy<Value = Vec<(bool, u32, Vec<u8>)>> {
    prop::collection::vec((any::<bool>(), 0u32..6, frame_bytes(seeds())), 1..24)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn process_never_panics_and_counts(inputs in inputs()) {
        let mut v = vrouter();
        let mut out = Vec::new();
        for (underlay, port, data) in &inputs {
            let input = if *underlay {
                Input::Underlay { src: C4_VTEP, data }
            } else {
                Input::Frame { port: *port, data }
            };
            v.process(t(0), input, &mut out);
        }
        let c = v.counters();
        prop_assert_eq!(c.rx, inputs.len() as u64);
        prop_assert_eq!(c.tx, out.len() as u64);
        prop_assert!(total_drops(&v) <= c.rx);
        // Nothing ever leaves towards the sender's own port from a secured port,
        // and every underlay output is valid VXLAN in a configured VNI.
        for o in &out {
            if let Output::Underlay { data, .. } = o {
                let p = vxlan::Packet::new_checked(&data[..]);
                prop_assert!(p.is_ok());
                let vni = p.map(|p| p.vni()).unwrap_or_default();
                prop_assert!(vni == VNI || vni == VNI2);
            }
        }
    }
}

/// Security groups on a vRouter interface: A admits new traffic only from
/// B's address; its own connections are answered from anywhere; an
/// unfiltered interface passes everything; removing the filter opens it.
#[test]
fn security_groups_filter_an_interface_statefully() {
    use switchyard_dataplane::frames;
    use switchyard_dataplane::secgroup::{Direction, Ethertype, PortFilter, Remote, Rule};
    let mut v = vrouter();
    let b_ip = ip(50, 50, 50, 12);
    let r_ip = ip(50, 50, 50, 21);
    let rule = |direction, remote| Rule {
        direction,
        ethertype: Ethertype::V4,
        protocol: None,
        port_min: None,
        port_max: None,
        remote,
    };
    let filter = PortFilter {
        rules: vec![
            rule(
                Direction::Ingress,
                Remote::Prefixes(vec![(std::net::IpAddr::V4(b_ip), 32)]),
            ),
            rule(Direction::Egress, Remote::Any),
        ],
    };
    v.apply(
        2,
        &[Update::Filter {
            port: 1,
            filter: Some(filter),
        }],
    )
    .expect("filter");
    assert!(v.filtered(1) && !v.filtered(2));
    // B pings A: admitted by the ingress rule.
    let out = frame_in(&mut v, 2, &ping(a(), b(), b_ip, a_ip(), 1));
    assert_eq!(ports_out(&out), vec![1]);
    // R (behind compute-4) pings A: no rule admits it.
    let out = underlay(
        &mut v,
        C4_VTEP,
        &vxlan::encap(VNI, &ping(a(), r(), r_ip, a_ip(), 2)),
    );
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(v.counters().dropped(DropReason::SgNoRule), 1);
    // A's own UDP flow to R goes out, and R's answer comes back in.
    let out = frame_in(&mut v, 1, &udp(r(), a(), a_ip(), r_ip));
    assert_eq!(underlay_out(&out).len(), 1);
    let answer = frames::udp(a(), r(), r_ip, a_ip(), 5000, 40000, 64, b"answer");
    let out = underlay(&mut v, C4_VTEP, &vxlan::encap(VNI, &answer));
    assert_eq!(ports_out(&out), vec![1], "established");
    // A segment of nothing A opened, from R: not even a new connection.
    let stray = frames::udp(a(), r(), r_ip, a_ip(), 5001, 40000, 64, b"stray");
    assert!(underlay(&mut v, C4_VTEP, &vxlan::encap(VNI, &stray)).is_empty());
    assert!(v.connections() >= 2);
    // Port security off: the filter goes and R's ping passes.
    v.apply(
        3,
        &[Update::Filter {
            port: 1,
            filter: None,
        }],
    )
    .expect("unfilter");
    let out = underlay(
        &mut v,
        C4_VTEP,
        &vxlan::encap(VNI, &ping(a(), r(), r_ip, a_ip(), 3)),
    );
    assert_eq!(ports_out(&out), vec![1]);
    assert_eq!(v.connections(), 0);
}

/// A rule from a remote group on a vRouter interface: A admits new traffic
/// from the group's members as the vRouter holds them (one set, shared by
/// every filter naming the group), B once it is a member, R (behind
/// compute-4) once it joins too; after R leaves, R's flow that was open
/// goes on and a new one is refused.
#[test]
fn a_remote_group_rule_follows_the_group_members_update() {
    use switchyard_dataplane::secgroup::{Direction, Ethertype, PortFilter, Remote, Rule};
    let mut v = vrouter();
    let b_ip = ip(50, 50, 50, 12);
    let r_ip = ip(50, 50, 50, 21);
    let rule = |direction, remote| Rule {
        direction,
        ethertype: Ethertype::V4,
        protocol: None,
        port_min: None,
        port_max: None,
        remote,
    };
    let filter = PortFilter {
        rules: vec![
            rule(Direction::Ingress, Remote::Group("g".into())),
            rule(Direction::Egress, Remote::Any),
        ],
    };
    let members = |ips: &[Ipv4Addr]| {
        Some(
            ips.iter()
                .map(|i| (std::net::IpAddr::V4(*i), 32))
                .collect::<Vec<_>>(),
        )
    };
    let update = |v: &mut Vrouter, version, addrs| {
        v.apply(
            version,
            &[Update::GroupMembers {
                group: "g".into(),
                addrs,
            }],
        )
        .expect("group members");
    };
    v.apply(
        2,
        &[Update::Filter {
            port: 1,
            filter: Some(filter),
        }],
    )
    .expect("filter");
    let from_b = |sport| frames::udp(a(), b(), b_ip, a_ip(), sport, 7000, 64, b"b");
    let from_r = |sport| {
        vxlan::encap(
            VNI,
            &frames::udp(a(), r(), r_ip, a_ip(), sport, 7000, 64, b"r"),
        )
    };
    // No set yet: the group has no members.
    assert!(ports_out(&frame_in(&mut v, 2, &from_b(5000))).is_empty());
    update(&mut v, 3, members(&[b_ip]));
    assert_eq!(v.group_members("g").map(|s| s.len()), Some(1));
    assert_eq!(ports_out(&frame_in(&mut v, 2, &from_b(5001))), vec![1]);
    assert!(
        underlay(&mut v, C4_VTEP, &from_r(6000)).is_empty(),
        "not a member"
    );
    update(&mut v, 4, members(&[b_ip, r_ip]));
    assert_eq!(
        ports_out(&underlay(&mut v, C4_VTEP, &from_r(6001))),
        vec![1]
    );
    // R leaves; then the set goes altogether.
    update(&mut v, 5, members(&[b_ip]));
    assert_eq!(
        ports_out(&underlay(&mut v, C4_VTEP, &from_r(6001))),
        vec![1],
        "established"
    );
    assert!(underlay(&mut v, C4_VTEP, &from_r(6002)).is_empty());
    update(&mut v, 6, None);
    assert!(v.group_members("g").is_none());
    assert!(ports_out(&frame_in(&mut v, 2, &from_b(5002))).is_empty());
    assert_eq!(v.counters().dropped(DropReason::SgNoRule), 4);
}
