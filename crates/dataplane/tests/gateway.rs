//! Gateway pipeline: bridging, ARP, routing, SNAT, floating IPs, DHCP and
//! malformed input, checked frame by frame.

use std::net::Ipv4Addr;

use proptest::prelude::*;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, DhcpMessageType, DhcpPacket, DhcpRepr, EthernetAddress,
    EthernetFrame, EthernetProtocol, Icmpv4Packet, Icmpv4Repr, IpProtocol, Ipv4Packet, Ipv4Repr,
    TcpControl, TcpPacket, TcpRepr, TcpSeqNumber, UdpPacket,
};
use switchyard_dataplane::dhcp::Lease;
use switchyard_dataplane::frames::{self, BROADCAST, Mac};
use switchyard_dataplane::gateway::{
    ConfigError, DhcpPort, External, FloatingIp, Gateway, RemoteMac, RouterInterface, Snat, Update,
};
use switchyard_dataplane::wire::{vlan, vxlan};
use switchyard_dataplane::{DropReason, Duration, Input, Instant, Output, Pipeline};

const TRUNK: u32 = 1;
const EXT: u32 = 2;
const GW_VTEP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const VTEP_12: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 12);
const VTEP_14: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 14);

const RIF_A: Mac = EthernetAddress([0x02, 0xaa, 0, 0, 0, 0x01]);
const RIF_B: Mac = EthernetAddress([0x02, 0xbb, 0, 0, 0, 0x01]);
const EXT_MAC: Mac = EthernetAddress([0x02, 0xee, 0, 0, 0, 0x02]);
const UP_MAC: Mac = EthernetAddress([0x02, 0xee, 0, 0, 0, 0x01]);
const VM_OVS: Mac = EthernetAddress([0x02, 0, 0, 0, 0x10, 0x01]);
const VM_VR: Mac = EthernetAddress([0x02, 0, 0, 0, 0x20, 0x01]);
const VM_B: Mac = EthernetAddress([0x02, 0, 0, 0, 0x30, 0x01]);

const GW_A: Ipv4Addr = Ipv4Addr::new(50, 50, 50, 1);
const GW_B: Ipv4Addr = Ipv4Addr::new(60, 60, 60, 1);
const IP_OVS: Ipv4Addr = Ipv4Addr::new(50, 50, 50, 10);
const IP_VR: Ipv4Addr = Ipv4Addr::new(50, 50, 50, 20);
const IP_B: Ipv4Addr = Ipv4Addr::new(60, 60, 60, 10);
const EXT_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
const UPSTREAM: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
const FIP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 50);
const INTERNET: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);

fn t(ms: i64) -> Instant {
    Instant::from_millis(ms)
}

fn config() -> Vec<Update> {
    vec![
        Update::BridgeDomain {
            vlan: 100,
            vni: 1000,
            flood: vec![VTEP_12, VTEP_14],
        },
        Update::BridgeDomain {
            vlan: 101,
            vni: 1001,
            flood: vec![VTEP_12],
        },
        Update::RouterInterface(RouterInterface {
            id: "rif-a".into(),
            router: String::new(),
            vni: 1000,
            ip: GW_A,
            prefix_len: 24,
            mac: RIF_A,
        }),
        Update::RouterInterface(RouterInterface {
            id: "rif-b".into(),
            router: String::new(),
            vni: 1001,
            ip: GW_B,
            prefix_len: 24,
            mac: RIF_B,
        }),
        Update::External(External {
            port: EXT,
            ip: EXT_IP,
            prefix_len: 24,
            mac: EXT_MAC,
            next_hop: UPSTREAM,
        }),
        Update::Snat(Snat {
            router_interface_ids: vec!["rif-a".into(), "rif-b".into()],
            external_ip: EXT_IP,
        }),
        Update::RemoteMac(RemoteMac {
            vni: 1000,
            mac: VM_VR,
            ips: vec![IP_VR],
            vtep: VTEP_12,
        }),
    ]
}

fn gateway() -> Gateway {
    let mut g = Gateway::new(TRUNK, GW_VTEP, EthernetAddress([0x02, 0, 0, 0, 0, 0xff]));
    g.apply(1, &config()).expect("valid config");
    // The announcements of what it newly bridges (two rounds), out of the way.
    let mut out = Vec::new();
    g.poll(t(0), &mut out);
    g.poll(t(100), &mut out);
    g
}

/// The (VLAN, source MAC) of RARP announcements among `out`.
fn announcements(out: &[Output]) -> Vec<(u16, Mac)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Frame { port, data } if *port == TRUNK => {
                let vid = vlan::vlan_of(data).ok().flatten()?;
                let untagged = vlan::pop_tag(data).ok()?;
                let eth = EthernetFrame::new_checked(&untagged[..]).ok()?;
                (u16::from(eth.ethertype()) == 0x8035 && eth.dst_addr() == frames::BROADCAST)
                    .then_some((vid, eth.src_addr()))
            }
            _ => None,
        })
        .collect()
}

/// A gateway that starts bridging a VLAN announces every MAC it now reaches
/// there (the overlay's and its router interfaces'), twice, so that the VLAN's
/// switches stop sending them to the gateway that bridged them before; a MAC
/// added later is announced alone; overlay-only domains announce nothing.
#[test]
fn taking_over_a_vlan_announces_what_it_reaches() {
    let mut g = Gateway::new(TRUNK, GW_VTEP, EthernetAddress([0x02, 0, 0, 0, 0, 0xff]));
    g.apply(1, &config()).expect("valid config");
    let mut out = Vec::new();
    g.poll(t(0), &mut out);
    let mut first = announcements(&out);
    first.sort();
    let mut want = vec![(100, VM_VR), (100, RIF_A), (101, RIF_B)];
    want.sort();
    assert_eq!(first, want);
    out.clear();
    g.poll(t(50), &mut out);
    assert!(announcements(&out).is_empty(), "the second round waits");
    g.poll(t(100), &mut out);
    let mut second = announcements(&out);
    second.sort();
    assert_eq!(second, want, "and repeats once");
    out.clear();
    g.poll(t(1000), &mut out);
    assert!(announcements(&out).is_empty());
    // One more remote MAC: only it.
    let m = EthernetAddress([0x02, 0, 0, 0, 0, 0x77]);
    g.apply(
        2,
        &[Update::RemoteMac(RemoteMac {
            vni: 1000,
            mac: m,
            ips: vec![],
            vtep: VTEP_14,
        })],
    )
    .expect("remote");
    g.poll(t(2000), &mut out);
    assert_eq!(announcements(&out), vec![(100, m)]);
    g.poll(t(2100), &mut out);
    // An overlay-only domain and its remotes: nothing to announce.
    out.clear();
    g.apply(
        3,
        &[
            Update::BridgeDomain {
                vlan: 0,
                vni: 1002,
                flood: vec![VTEP_12],
            },
            Update::RemoteMac(RemoteMac {
                vni: 1002,
                mac: EthernetAddress([0x02, 0, 0, 0, 0, 0x78]),
                ips: vec![],
                vtep: VTEP_12,
            }),
        ],
    )
    .expect("overlay-only");
    g.poll(t(3000), &mut out);
    g.poll(t(3100), &mut out);
    assert!(announcements(&out).is_empty());
}

fn run(g: &mut Gateway, now: Instant, input: Input<'_>) -> Vec<Output> {
    let mut out = Vec::new();
    g.process(now, input, &mut out);
    out
}

fn trunk(g: &mut Gateway, now: Instant, vid: u16, frame: &[u8]) -> Vec<Output> {
    let tagged = vlan::push_tag(frame, vid).expect("tag");
    run(
        g,
        now,
        Input::Frame {
            port: TRUNK,
            data: &tagged,
        },
    )
}

fn overlay(g: &mut Gateway, now: Instant, src: Ipv4Addr, vni: u32, frame: &[u8]) -> Vec<Output> {
    let data = vxlan::encap(vni, frame);
    run(g, now, Input::Underlay { src, data: &data })
}

fn external(g: &mut Gateway, now: Instant, frame: &[u8]) -> Vec<Output> {
    run(
        g,
        now,
        Input::Frame {
            port: EXT,
            data: frame,
        },
    )
}

/// The untagged inner frame of a trunk output with VLAN `vid`.
fn on_trunk(o: &Output, vid: u16) -> Vec<u8> {
    match o {
        Output::Frame { port, data } if *port == TRUNK => {
            assert_eq!(vlan::vlan_of(data).expect("parses"), Some(vid));
            vlan::pop_tag(data).expect("untag")
        }
        other => panic!("expected a trunk frame, got {other:?}"),
    }
}

/// The inner frame of an underlay output to `vtep` in `vni`.
fn on_vtep(o: &Output, vtep: Ipv4Addr, vni: u32) -> Vec<u8> {
    match o {
        Output::Underlay { dst, data } if *dst == vtep => {
            let p = vxlan::Packet::new_checked(&data[..]).expect("vxlan");
            assert_eq!(p.vni(), vni);
            p.payload().to_vec()
        }
        other => panic!("expected VXLAN to {vtep}, got {other:?}"),
    }
}

fn on_external(o: &Output) -> Vec<u8> {
    match o {
        Output::Frame { port, data } if *port == EXT => data.clone(),
        other => panic!("expected an external frame, got {other:?}"),
    }
}

fn ipv4_frame(dst: Mac, src: Mac, ip: Ipv4Repr, l4: impl FnOnce(&mut [u8])) -> Vec<u8> {
    let mut body = vec![0u8; ip.buffer_len() + ip.payload_len];
    let mut p = Ipv4Packet::new_unchecked(&mut body[..]);
    ip.emit(&mut p, &ChecksumCapabilities::default());
    l4(p.payload_mut());
    frames::ethernet(dst, src, EthernetProtocol::Ipv4, &body)
}

fn icmp(dst: Mac, src: Mac, s: Ipv4Addr, d: Ipv4Addr, ident: u16, request: bool) -> Vec<u8> {
    let data = b"ping-data-0123456789";
    let repr = if request {
        Icmpv4Repr::EchoRequest {
            ident,
            seq_no: 7,
            data,
        }
    } else {
        Icmpv4Repr::EchoReply {
            ident,
            seq_no: 7,
            data,
        }
    };
    let ip = Ipv4Repr {
        src_addr: s,
        dst_addr: d,
        next_header: IpProtocol::Icmp,
        payload_len: repr.buffer_len(),
        hop_limit: 64,
    };
    ipv4_frame(dst, src, ip, |b| {
        repr.emit(
            &mut Icmpv4Packet::new_unchecked(b),
            &ChecksumCapabilities::default(),
        )
    })
}

#[allow(clippy::too_many_arguments)]
fn tcp(
    dst: Mac,
    src: Mac,
    s: Ipv4Addr,
    d: Ipv4Addr,
    sport: u16,
    dport: u16,
    control: TcpControl,
    ack: bool,
) -> Vec<u8> {
    let payload = b"GET / HTTP/1.0\r\n\r\n";
    let repr = TcpRepr {
        src_port: sport,
        dst_port: dport,
        control,
        seq_number: TcpSeqNumber(1000),
        ack_number: ack.then_some(TcpSeqNumber(2000)),
        window_len: 1024,
        window_scale: None,
        max_seg_size: None,
        sack_permitted: false,
        sack_ranges: [None; 3],
        timestamp: None,
        payload,
    };
    let ip = Ipv4Repr {
        src_addr: s,
        dst_addr: d,
        next_header: IpProtocol::Tcp,
        payload_len: repr.buffer_len(),
        hop_limit: 64,
    };
    ipv4_frame(dst, src, ip, |b| {
        repr.emit(
            &mut TcpPacket::new_unchecked(b),
            &s.into(),
            &d.into(),
            &ChecksumCapabilities::default(),
        )
    })
}

/// Checked parse of an untagged IPv4 frame with a valid header checksum.
fn ip_of(frame: &[u8]) -> (EthernetFrame<&[u8]>, Ipv4Packet<&[u8]>) {
    let eth = EthernetFrame::new_checked(frame).expect("ethernet");
    assert_eq!(eth.ethertype(), EthernetProtocol::Ipv4);
    let ip = Ipv4Packet::new_checked(&frame[14..]).expect("ipv4");
    assert!(ip.verify_checksum(), "IPv4 header checksum");
    (eth, ip)
}

fn arp_of(frame: &[u8]) -> ArpRepr {
    let eth = EthernetFrame::new_checked(frame).expect("ethernet");
    assert_eq!(eth.ethertype(), EthernetProtocol::Arp);
    ArpRepr::parse(&ArpPacket::new_checked(eth.payload()).expect("arp")).expect("arp repr")
}

fn arp_reply(dst: Mac, sha: Mac, spa: Ipv4Addr, tpa: Ipv4Addr) -> Vec<u8> {
    frames::arp(ArpOperation::Reply, dst, sha, spa, dst, tpa)
}

fn arp_request(sha: Mac, spa: Ipv4Addr, tpa: Ipv4Addr) -> Vec<u8> {
    frames::arp(
        ArpOperation::Request,
        BROADCAST,
        sha,
        spa,
        EthernetAddress([0; 6]),
        tpa,
    )
}

/// Resolves the upstream router on the external port.
fn resolve_upstream(g: &mut Gateway, now: Instant) {
    let out = external(g, now, &arp_reply(EXT_MAC, UP_MAC, UPSTREAM, EXT_IP));
    assert!(out.is_empty());
}

#[test]
fn vlan_to_vni_bridging() {
    let mut g = gateway();
    let f = frames::udp(VM_VR, VM_OVS, IP_OVS, IP_VR, 1, 2, 64, b"hi");
    let out = trunk(&mut g, t(0), 100, &f);
    assert_eq!(out.len(), 1);
    assert_eq!(on_vtep(&out[0], VTEP_12, 1000), f);
    // The source was learned on the trunk.
    assert!(
        g.bridge_table(1000)
            .contains(&(VM_OVS, "trunk vlan 100".to_string()))
    );
    // BUM from the trunk: ingress replication to the flood list, never back to the trunk.
    let b = frames::udp(
        BROADCAST,
        VM_OVS,
        IP_OVS,
        Ipv4Addr::BROADCAST,
        1,
        2,
        64,
        b"bcast",
    );
    let out = trunk(&mut g, t(1), 100, &b);
    assert_eq!(out.len(), 2);
    assert_eq!(on_vtep(&out[0], VTEP_12, 1000), b);
    assert_eq!(on_vtep(&out[1], VTEP_14, 1000), b);
    // Unknown VLAN: dropped and counted.
    assert!(trunk(&mut g, t(2), 999, &f).is_empty());
    assert_eq!(g.counters().dropped(DropReason::UnknownVlan), 1);
}

#[test]
fn vni_to_vlan_bridging_with_split_horizon_and_learning() {
    let mut g = gateway();
    trunk(&mut g, t(0), 100, &frames::gratuitous_arp(VM_OVS, IP_OVS));
    let f = frames::udp(VM_OVS, VM_VR, IP_VR, IP_OVS, 1, 2, 64, b"back");
    let out = overlay(&mut g, t(1), VTEP_12, 1000, &f);
    assert_eq!(out.len(), 1);
    assert_eq!(on_trunk(&out[0], 100), f);
    // BUM from the overlay goes to the trunk only (split horizon).
    let newcomer = EthernetAddress([0x02, 0, 0, 0, 0x40, 0x01]);
    let b = frames::gratuitous_arp(newcomer, Ipv4Addr::new(50, 50, 50, 40));
    let out = overlay(&mut g, t(2), VTEP_14, 1000, &b);
    assert_eq!(out.len(), 1);
    assert_eq!(on_trunk(&out[0], 100), b);
    // Learned from the VXLAN source.
    assert!(
        g.bridge_table(1000)
            .contains(&(newcomer, "vtep 192.0.2.14".to_string()))
    );
    // Unicast from the trunk to it now goes to that VTEP only.
    let u = frames::udp(
        newcomer,
        VM_OVS,
        IP_OVS,
        Ipv4Addr::new(50, 50, 50, 40),
        1,
        2,
        64,
        b"x",
    );
    let out = trunk(&mut g, t(3), 100, &u);
    assert_eq!(out.len(), 1);
    assert_eq!(on_vtep(&out[0], VTEP_14, 1000), u);
    // Unicast from the overlay to an overlay MAC is not sent back (split horizon).
    let o = frames::udp(
        VM_VR,
        newcomer,
        Ipv4Addr::new(50, 50, 50, 40),
        IP_VR,
        1,
        2,
        64,
        b"y",
    );
    assert!(overlay(&mut g, t(4), VTEP_14, 1000, &o).is_empty());
}

#[test]
fn mac_ageing_by_poll() {
    let mut g = gateway();
    trunk(&mut g, t(0), 100, &frames::gratuitous_arp(VM_OVS, IP_OVS));
    let mut out = Vec::new();
    let next = g.poll(t(1000), &mut out);
    assert!(next.is_some());
    assert!(g.bridge_table(1000).iter().any(|(m, _)| *m == VM_OVS));
    g.poll(t(301_000), &mut out);
    assert!(!g.bridge_table(1000).iter().any(|(m, _)| *m == VM_OVS));
    // Configured remote MACs stay.
    assert!(
        g.bridge_table(1000)
            .contains(&(VM_VR, "vtep 192.0.2.12 (config)".to_string()))
    );
}

#[test]
fn unknown_vni_dropped_and_counted() {
    let mut g = gateway();
    // (The fixture's announcements were sent: they count as tx.)
    let tx = g.counters().tx;
    let f = frames::udp(VM_OVS, VM_VR, IP_VR, IP_OVS, 1, 2, 64, b"x");
    assert!(overlay(&mut g, t(0), VTEP_12, 4242, &f).is_empty());
    assert_eq!(g.counters().dropped(DropReason::UnknownVni), 1);
    assert_eq!(g.counters().rx, 1);
    assert_eq!(g.counters().tx, tx);
}

#[test]
fn arp_reply_for_gateway_ip_from_trunk_side() {
    let mut g = gateway();
    let out = trunk(&mut g, t(0), 100, &arp_request(VM_OVS, IP_OVS, GW_A));
    assert_eq!(out.len(), 1, "answered, not flooded");
    let f = on_trunk(&out[0], 100);
    assert_eq!(frames::macs(&f), Some((VM_OVS, RIF_A)));
    let ArpRepr::EthernetIpv4 {
        operation,
        source_hardware_addr,
        source_protocol_addr,
        target_hardware_addr,
        target_protocol_addr,
    } = arp_of(&f)
    else {
        panic!("not ethernet/ipv4 arp")
    };
    assert_eq!(operation, ArpOperation::Reply);
    assert_eq!((source_hardware_addr, source_protocol_addr), (RIF_A, GW_A));
    assert_eq!(
        (target_hardware_addr, target_protocol_addr),
        (VM_OVS, IP_OVS)
    );
    // The gateway IP of the other domain is not answered in this one: flooded instead.
    let out = trunk(&mut g, t(1), 100, &arp_request(VM_OVS, IP_OVS, GW_B));
    assert_eq!(out.len(), 2);
}

#[test]
fn arp_reply_for_gateway_ip_from_overlay_side() {
    let mut g = gateway();
    let out = overlay(
        &mut g,
        t(0),
        VTEP_12,
        1000,
        &arp_request(VM_VR, IP_VR, GW_A),
    );
    assert_eq!(out.len(), 1);
    let f = on_vtep(&out[0], VTEP_12, 1000);
    assert_eq!(frames::macs(&f), Some((VM_VR, RIF_A)));
    let ArpRepr::EthernetIpv4 {
        operation,
        source_hardware_addr,
        source_protocol_addr,
        ..
    } = arp_of(&f)
    else {
        panic!("not ethernet/ipv4 arp")
    };
    assert_eq!(operation, ArpOperation::Reply);
    assert_eq!((source_hardware_addr, source_protocol_addr), (RIF_A, GW_A));
}

#[test]
fn routes_between_two_bridge_domains_with_arp() {
    let mut g = gateway();
    let f = frames::udp(RIF_A, VM_OVS, IP_OVS, IP_B, 5000, 6000, 64, b"routed");
    let out = trunk(&mut g, t(0), 100, &f);
    // Next hop unknown: ARP request flooded in domain 1001 (trunk + VTEP .12), packet queued.
    assert_eq!(out.len(), 2);
    let req = on_trunk(&out[0], 101);
    let ArpRepr::EthernetIpv4 {
        operation,
        source_hardware_addr,
        source_protocol_addr,
        target_protocol_addr,
        ..
    } = arp_of(&req)
    else {
        panic!("arp")
    };
    assert_eq!(operation, ArpOperation::Request);
    assert_eq!(
        (
            source_hardware_addr,
            source_protocol_addr,
            target_protocol_addr
        ),
        (RIF_B, GW_B, IP_B)
    );
    assert_eq!(on_vtep(&out[1], VTEP_12, 1001), req);
    assert_eq!(g.pending_packets(), 1);
    // The host answers: the queued packet goes out.
    let out = trunk(&mut g, t(5), 101, &arp_reply(RIF_B, VM_B, IP_B, GW_B));
    assert_eq!(out.len(), 1);
    assert_eq!(g.pending_packets(), 0);
    let fwd = on_trunk(&out[0], 101);
    let (eth, ip) = ip_of(&fwd);
    assert_eq!((eth.dst_addr(), eth.src_addr()), (VM_B, RIF_B));
    assert_eq!(
        (ip.src_addr(), ip.dst_addr(), ip.hop_limit()),
        (IP_OVS, IP_B, 63)
    );
    let udp = UdpPacket::new_checked(ip.payload()).expect("udp");
    assert!(udp.verify_checksum(&IP_OVS.into(), &IP_B.into()));
    assert_eq!(udp.payload(), b"routed");
    // Now resolved: the next packet goes straight out.
    let out = trunk(&mut g, t(6), 100, &f);
    assert_eq!(out.len(), 1);
    on_trunk(&out[0], 101);
    // And back, to the vRouter host whose MAC/IP come from config (no ARP needed).
    let back = frames::udp(RIF_B, VM_B, IP_B, IP_VR, 6000, 5000, 64, b"back");
    let out = trunk(&mut g, t(7), 101, &back);
    assert_eq!(out.len(), 1);
    let inner = on_vtep(&out[0], VTEP_12, 1000);
    let (eth, ip) = ip_of(&inner);
    assert_eq!((eth.dst_addr(), eth.src_addr()), (VM_VR, RIF_A));
    assert_eq!(ip.dst_addr(), IP_VR);
}

#[test]
fn ttl_exceeded_dropped_and_counted() {
    let mut g = gateway();
    let f = frames::udp(RIF_A, VM_OVS, IP_OVS, IP_B, 1, 2, 1, b"ttl");
    assert!(trunk(&mut g, t(0), 100, &f).is_empty());
    assert_eq!(g.counters().dropped(DropReason::TtlExceeded), 1);
}

#[test]
fn unresolved_next_hop_times_out_and_is_counted() {
    let mut g = gateway();
    let f = frames::udp(RIF_A, VM_OVS, IP_OVS, IP_B, 1, 2, 64, b"lost");
    trunk(&mut g, t(0), 100, &f);
    let mut out = Vec::new();
    // Retried after a second...
    g.poll(t(1500), &mut out);
    assert_eq!(
        out.len(),
        2,
        "ARP request repeated on both sides of domain 1001"
    );
    // ... and dropped after three.
    out.clear();
    g.poll(t(3500), &mut out);
    assert_eq!(g.pending_packets(), 0);
    assert_eq!(g.counters().dropped(DropReason::NoRoute), 1);
}

#[test]
fn gateway_answers_ping_to_its_own_address() {
    let mut g = gateway();
    let out = overlay(
        &mut g,
        t(0),
        VTEP_12,
        1000,
        &icmp(RIF_A, VM_VR, IP_VR, GW_A, 9, true),
    );
    assert_eq!(out.len(), 1);
    let inner = on_vtep(&out[0], VTEP_12, 1000);
    let (_, ip) = ip_of(&inner);
    assert_eq!((ip.src_addr(), ip.dst_addr()), (GW_A, IP_VR));
    let p = Icmpv4Packet::new_checked(ip.payload()).expect("icmp");
    assert!(p.verify_checksum());
    assert!(matches!(
        Icmpv4Repr::parse(&p, &ChecksumCapabilities::default()),
        Ok(Icmpv4Repr::EchoReply {
            ident: 9,
            seq_no: 7,
            ..
        })
    ));
}

/// Sends a ping from the vRouter host to the internet and returns the echo id
/// used on the external side.
fn snat_ping(g: &mut Gateway, now: Instant) -> u16 {
    let out = overlay(
        g,
        now,
        VTEP_12,
        1000,
        &icmp(RIF_A, VM_VR, IP_VR, INTERNET, 0x1234, true),
    );
    assert_eq!(out.len(), 1);
    let f = on_external(&out[0]);
    let (eth, ip) = ip_of(&f);
    assert_eq!((eth.dst_addr(), eth.src_addr()), (UP_MAC, EXT_MAC));
    assert_eq!(
        (ip.src_addr(), ip.dst_addr(), ip.hop_limit()),
        (EXT_IP, INTERNET, 63)
    );
    let p = Icmpv4Packet::new_checked(ip.payload()).expect("icmp");
    assert!(p.verify_checksum(), "ICMP checksum after SNAT");
    let Ok(Icmpv4Repr::EchoRequest {
        ident,
        seq_no,
        data,
    }) = Icmpv4Repr::parse(&p, &ChecksumCapabilities::default())
    else {
        panic!("echo request")
    };
    assert_eq!((seq_no, data), (7, &b"ping-data-0123456789"[..]));
    ident
}

#[test]
fn snat_icmp_echo_out_and_back() {
    let mut g = gateway();
    // First packet: ARP for the upstream router, packet queued.
    let out = overlay(
        &mut g,
        t(0),
        VTEP_12,
        1000,
        &icmp(RIF_A, VM_VR, IP_VR, INTERNET, 0x1234, true),
    );
    assert_eq!(out.len(), 1);
    let req = on_external(&out[0]);
    let ArpRepr::EthernetIpv4 {
        operation,
        source_protocol_addr,
        target_protocol_addr,
        ..
    } = arp_of(&req)
    else {
        panic!("arp")
    };
    assert_eq!(
        (operation, source_protocol_addr, target_protocol_addr),
        (ArpOperation::Request, EXT_IP, UPSTREAM)
    );
    // The reply releases the queued packet.
    let out = external(&mut g, t(1), &arp_reply(EXT_MAC, UP_MAC, UPSTREAM, EXT_IP));
    assert_eq!(out.len(), 1);
    let buf = on_external(&out[0]);
    let (_, ip) = ip_of(&buf);
    assert_eq!(ip.src_addr(), EXT_IP);
    let ident = snat_ping(&mut g, t(2));
    assert_eq!(g.nat_connections(), 1);
    let b = &g.nat_table()[0];
    assert_eq!(b.proto, IpProtocol::Icmp);
    assert_eq!(b.external.ip(), &EXT_IP);
    assert_eq!(b.external.port(), ident);
    // The echo reply is translated back to the inside host, over VXLAN.
    let out = external(
        &mut g,
        t(3),
        &icmp(EXT_MAC, UP_MAC, INTERNET, EXT_IP, ident, false),
    );
    assert_eq!(out.len(), 1);
    let inner = on_vtep(&out[0], VTEP_12, 1000);
    let (eth, ip) = ip_of(&inner);
    assert_eq!((eth.dst_addr(), eth.src_addr()), (VM_VR, RIF_A));
    assert_eq!((ip.src_addr(), ip.dst_addr()), (INTERNET, IP_VR));
    let p = Icmpv4Packet::new_checked(ip.payload()).expect("icmp");
    assert!(p.verify_checksum());
    assert!(matches!(
        Icmpv4Repr::parse(&p, &ChecksumCapabilities::default()),
        Ok(Icmpv4Repr::EchoReply { ident: 0x1234, .. })
    ));
    // A reply with a wrong id has no binding.
    assert!(
        external(
            &mut g,
            t(4),
            &icmp(
                EXT_MAC,
                UP_MAC,
                INTERNET,
                EXT_IP,
                ident.wrapping_add(1),
                false
            )
        )
        .is_empty()
    );
    assert_eq!(g.counters().dropped(DropReason::NoNatBinding), 1);
}

#[test]
fn snat_icmp_binding_expires_via_poll() {
    let mut g = gateway();
    resolve_upstream(&mut g, t(0));
    let ident = snat_ping(&mut g, t(0));
    let mut out = Vec::new();
    let next = g.poll(t(10_000), &mut out);
    assert_eq!(g.nat_connections(), 1);
    assert!(next.is_some_and(|n| n <= t(30_000)));
    g.poll(t(31_000), &mut out);
    assert_eq!(g.nat_connections(), 0);
    assert!(
        external(
            &mut g,
            t(31_001),
            &icmp(EXT_MAC, UP_MAC, INTERNET, EXT_IP, ident, false)
        )
        .is_empty()
    );
    assert_eq!(g.counters().dropped(DropReason::NoNatBinding), 1);
}

#[test]
fn snat_udp_from_vlan_side_and_back() {
    let mut g = gateway();
    resolve_upstream(&mut g, t(0));
    trunk(&mut g, t(0), 100, &frames::gratuitous_arp(VM_OVS, IP_OVS));
    let f = frames::udp(RIF_A, VM_OVS, IP_OVS, INTERNET, 40000, 53, 64, b"query");
    let out = trunk(&mut g, t(1), 100, &f);
    assert_eq!(out.len(), 1);
    let ef = on_external(&out[0]);
    let (_, ip) = ip_of(&ef);
    assert_eq!(ip.src_addr(), EXT_IP);
    let u = UdpPacket::new_checked(ip.payload()).expect("udp");
    assert!(u.verify_checksum(&EXT_IP.into(), &INTERNET.into()));
    assert_eq!(u.dst_port(), 53);
    let eport = u.src_port();
    assert_eq!(eport, 40000, "inside port kept when free");
    // A second inside host using the same source port gets another external port.
    let f2 = frames::udp(RIF_A, VM_VR, IP_VR, INTERNET, 40000, 53, 64, b"query2");
    let out = overlay(&mut g, t(2), VTEP_12, 1000, &f2);
    let buf = on_external(&out[0]);
    let (_, ip2) = ip_of(&buf);
    let u2 = UdpPacket::new_checked(ip2.payload()).expect("udp");
    assert_ne!(u2.src_port(), eport);
    assert!(u2.verify_checksum(&EXT_IP.into(), &INTERNET.into()));
    assert_eq!(g.nat_connections(), 2);
    // The answer comes back to the VLAN side, tagged.
    let r = frames::udp(EXT_MAC, UP_MAC, INTERNET, EXT_IP, 53, eport, 60, b"answer");
    let out = external(&mut g, t(3), &r);
    assert_eq!(out.len(), 1);
    let back = on_trunk(&out[0], 100);
    let (eth, ip) = ip_of(&back);
    assert_eq!((eth.dst_addr(), eth.src_addr()), (VM_OVS, RIF_A));
    assert_eq!(
        (ip.src_addr(), ip.dst_addr(), ip.hop_limit()),
        (INTERNET, IP_OVS, 59)
    );
    let u = UdpPacket::new_checked(ip.payload()).expect("udp");
    assert!(u.verify_checksum(&INTERNET.into(), &IP_OVS.into()));
    assert_eq!(
        (u.src_port(), u.dst_port(), u.payload()),
        (53, 40000, &b"answer"[..])
    );
    // From another remote port: no binding.
    let r = frames::udp(EXT_MAC, UP_MAC, INTERNET, EXT_IP, 54, eport, 60, b"answer");
    assert!(external(&mut g, t(4), &r).is_empty());
    assert_eq!(g.counters().dropped(DropReason::NoNatBinding), 1);
    // UDP times out after 120 s.
    let mut o = Vec::new();
    g.poll(t(119_000), &mut o);
    assert_eq!(g.nat_connections(), 2);
    g.poll(t(125_000), &mut o);
    assert_eq!(g.nat_connections(), 0);
}

#[test]
fn snat_tcp_out_and_back_with_state_timeouts() {
    let mut g = gateway();
    resolve_upstream(&mut g, t(0));
    let syn = tcp(
        RIF_A,
        VM_VR,
        IP_VR,
        INTERNET,
        50000,
        80,
        TcpControl::Syn,
        false,
    );
    let out = overlay(&mut g, t(0), VTEP_12, 1000, &syn);
    assert_eq!(out.len(), 1);
    let ef = on_external(&out[0]);
    let (_, ip) = ip_of(&ef);
    let p = TcpPacket::new_checked(ip.payload()).expect("tcp");
    assert!(
        p.verify_checksum(&EXT_IP.into(), &INTERNET.into()),
        "TCP checksum after SNAT"
    );
    assert!(p.syn());
    let eport = p.src_port();
    // SYN-ACK back.
    let synack = tcp(
        EXT_MAC,
        UP_MAC,
        INTERNET,
        EXT_IP,
        80,
        eport,
        TcpControl::Syn,
        true,
    );
    let out = external(&mut g, t(10), &synack);
    assert_eq!(out.len(), 1);
    let buf = on_vtep(&out[0], VTEP_12, 1000);
    let (_, ip) = ip_of(&buf);
    assert_eq!(ip.dst_addr(), IP_VR);
    let p = TcpPacket::new_checked(ip.payload()).expect("tcp");
    assert!(p.verify_checksum(&INTERNET.into(), &IP_VR.into()));
    assert_eq!((p.src_port(), p.dst_port()), (80, 50000));
    // Established: survives well past the SYN timeout.
    let mut o = Vec::new();
    g.poll(t(3_600_000), &mut o);
    assert_eq!(g.nat_connections(), 1);
    g.poll(t(2 * 3_600_000 + 20), &mut o);
    assert_eq!(g.nat_connections(), 0);
}

#[test]
fn snat_tcp_unanswered_syn_expires_sooner() {
    let mut g = gateway();
    resolve_upstream(&mut g, t(0));
    let syn = tcp(
        RIF_A,
        VM_VR,
        IP_VR,
        INTERNET,
        50001,
        443,
        TcpControl::Syn,
        false,
    );
    overlay(&mut g, t(0), VTEP_12, 1000, &syn);
    assert_eq!(g.nat_connections(), 1);
    let mut o = Vec::new();
    g.poll(t(61_000), &mut o);
    assert_eq!(g.nat_connections(), 0);
}

#[test]
fn snat_exhaustion_counted() {
    let mut g = gateway();
    g.set_nat_port_range(3000, 3000);
    resolve_upstream(&mut g, t(0));
    let a = frames::udp(RIF_A, VM_VR, IP_VR, INTERNET, 1, 53, 64, b"a");
    let b = frames::udp(RIF_A, VM_VR, IP_VR, INTERNET, 2, 53, 64, b"b");
    assert_eq!(overlay(&mut g, t(0), VTEP_12, 1000, &a).len(), 1);
    assert!(overlay(&mut g, t(0), VTEP_12, 1000, &b).is_empty());
    assert_eq!(g.counters().dropped(DropReason::NatExhausted), 1);
}

#[test]
fn floating_ip_inbound_and_outbound() {
    let mut g = gateway();
    g.apply(
        2,
        &[Update::FloatingIp(FloatingIp {
            external_ip: FIP,
            internal_ip: IP_VR,
            router_interface_id: "rif-a".into(),
        })],
    )
    .expect("fip");
    resolve_upstream(&mut g, t(0));
    // The gateway answers ARP for the floating IP and its own address on the external port.
    for target in [FIP, EXT_IP] {
        let out = external(&mut g, t(0), &arp_request(UP_MAC, UPSTREAM, target));
        assert_eq!(out.len(), 1);
        let ArpRepr::EthernetIpv4 {
            operation,
            source_hardware_addr,
            source_protocol_addr,
            ..
        } = arp_of(&on_external(&out[0]))
        else {
            panic!("arp")
        };
        assert_eq!(
            (operation, source_hardware_addr, source_protocol_addr),
            (ArpOperation::Reply, EXT_MAC, target)
        );
    }
    assert!(
        external(
            &mut g,
            t(0),
            &arp_request(UP_MAC, UPSTREAM, Ipv4Addr::new(203, 0, 113, 99))
        )
        .is_empty()
    );
    // Inbound to the floating IP reaches the inside host, ports untouched.
    let syn = tcp(
        EXT_MAC,
        UP_MAC,
        INTERNET,
        FIP,
        33000,
        22,
        TcpControl::Syn,
        false,
    );
    let out = external(&mut g, t(1), &syn);
    assert_eq!(out.len(), 1);
    let buf = on_vtep(&out[0], VTEP_12, 1000);
    let (eth, ip) = ip_of(&buf);
    assert_eq!(
        (eth.dst_addr(), ip.src_addr(), ip.dst_addr()),
        (VM_VR, INTERNET, IP_VR)
    );
    let p = TcpPacket::new_checked(ip.payload()).expect("tcp");
    assert!(p.verify_checksum(&INTERNET.into(), &IP_VR.into()));
    assert_eq!((p.src_port(), p.dst_port()), (33000, 22));
    // Outbound from that host uses the floating IP, not SNAT.
    let out = overlay(
        &mut g,
        t(2),
        VTEP_12,
        1000,
        &icmp(RIF_A, VM_VR, IP_VR, INTERNET, 77, true),
    );
    let buf = on_external(&out[0]);
    let (_, ip) = ip_of(&buf);
    assert_eq!(ip.src_addr(), FIP);
    let p = Icmpv4Packet::new_checked(ip.payload()).expect("icmp");
    assert!(p.verify_checksum());
    assert_eq!(p.echo_ident(), 77);
    assert_eq!(g.nat_connections(), 0);
    // Removed: inbound has no binding any more.
    g.apply(3, &[Update::RemoveFloatingIp { external_ip: FIP }])
        .expect("remove");
    assert!(external(&mut g, t(3), &syn).is_empty());
    assert_eq!(g.counters().dropped(DropReason::NoNatBinding), 1);
}

fn dhcp_discover(mac: Mac) -> Vec<u8> {
    let rep = DhcpRepr {
        message_type: DhcpMessageType::Discover,
        transaction_id: 0x1234_5678,
        secs: 0,
        client_hardware_address: mac,
        client_ip: Ipv4Addr::UNSPECIFIED,
        your_ip: Ipv4Addr::UNSPECIFIED,
        server_ip: Ipv4Addr::UNSPECIFIED,
        router: None,
        subnet_mask: None,
        relay_agent_ip: Ipv4Addr::UNSPECIFIED,
        broadcast: false,
        requested_ip: None,
        client_identifier: Some(mac),
        server_identifier: None,
        parameter_request_list: None,
        dns_servers: None,
        max_size: None,
        lease_duration: None,
        renew_duration: None,
        rebind_duration: None,
        additional_options: &[],
    };
    let mut body = vec![0u8; rep.buffer_len()];
    rep.emit(&mut DhcpPacket::new_unchecked(&mut body[..]))
        .expect("emit");
    frames::udp(
        BROADCAST,
        mac,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::BROADCAST,
        68,
        67,
        64,
        &body,
    )
}

#[test]
fn dhcp_for_vlan_side_port() {
    let mut g = gateway();
    let lease = Lease {
        ip: IP_OVS,
        prefix_len: 24,
        router: Some(GW_A),
        dns: vec![Ipv4Addr::new(8, 8, 8, 8)],
        routes: vec![],
        mtu: 1450,
        lease_secs: 86400,
        server: GW_A,
    };
    g.apply(
        2,
        &[Update::DhcpPort(DhcpPort {
            vlan: 100,
            mac: VM_OVS,
            lease,
        })],
    )
    .expect("dhcp port");
    let out = trunk(&mut g, t(0), 100, &dhcp_discover(VM_OVS));
    assert_eq!(out.len(), 1, "answered, not flooded");
    let f = on_trunk(&out[0], 100);
    let (eth, ip) = ip_of(&f);
    assert_eq!((eth.dst_addr(), eth.src_addr()), (VM_OVS, RIF_A));
    let u = UdpPacket::new_checked(ip.payload()).expect("udp");
    assert_eq!((u.src_port(), u.dst_port()), (67, 68));
    let dp = DhcpPacket::new_checked(u.payload()).expect("dhcp");
    let d = DhcpRepr::parse(&dp).expect("repr");
    assert_eq!(d.message_type, DhcpMessageType::Offer);
    assert_eq!((d.your_ip, d.router), (IP_OVS, Some(GW_A)));
    // Another MAC on the VLAN is not ours to answer: its DISCOVER is bridged.
    let other = EthernetAddress([0x02, 0, 0, 0, 0x50, 0x01]);
    let out = trunk(&mut g, t(1), 100, &dhcp_discover(other));
    assert_eq!(out.len(), 2);
    // The lease makes the host resolvable without ARP: routed traffic goes straight out.
    let f = frames::udp(RIF_B, VM_B, IP_B, IP_OVS, 1, 2, 64, b"to-ovs");
    let out = trunk(&mut g, t(2), 101, &f);
    assert_eq!(out.len(), 1);
    let buf = on_trunk(&out[0], 100);
    let (eth, _) = ip_of(&buf);
    assert_eq!(eth.dst_addr(), VM_OVS);
}

#[test]
fn config_is_all_or_nothing_and_validated() {
    let mut g = gateway();
    let bad = [
        Update::RemoveRouterInterface { id: "rif-a".into() },
        Update::BridgeDomain {
            vlan: 102,
            vni: 1002,
            flood: vec![],
        },
    ];
    // rif-a is still referenced by the SNAT rule.
    assert!(matches!(
        g.apply(2, &bad),
        Err(ConfigError::NoRouterInterface { .. })
    ));
    assert_eq!(g.version(), 1);
    assert!(g.bridge_table(1002).is_empty());
    assert!(matches!(
        g.apply(
            2,
            &[Update::BridgeDomain {
                vlan: 100,
                vni: 1005,
                flood: vec![]
            }]
        ),
        Err(ConfigError::VlanInUse { vlan: 100 })
    ));
    assert!(matches!(
        g.apply(
            2,
            &[Update::RouterInterface(RouterInterface {
                id: "rif-c".into(),
                router: String::new(),
                vni: 1001,
                ip: Ipv4Addr::new(50, 50, 50, 99),
                prefix_len: 16,
                mac: RIF_B
            })]
        ),
        Err(ConfigError::OverlappingSubnets(..))
    ));
    assert!(matches!(
        g.apply(1, &[]),
        Err(ConfigError::StaleVersion { have: 1, got: 1 })
    ));
    assert_eq!(
        g.apply(2, &[Update::RemoveBridgeDomain { vni: 1001 }]),
        Err(ConfigError::NoBridgeDomain {
            id: "rif-b".into(),
            vni: 1001
        })
    );
    // Removing the SNAT rule flushes its bindings.
    resolve_upstream(&mut g, t(0));
    snat_ping(&mut g, t(0));
    assert_eq!(g.nat_connections(), 1);
    g.apply(
        2,
        &[Update::RemoveSnat {
            external_ip: EXT_IP,
        }],
    )
    .expect("remove snat");
    assert_eq!(g.nat_connections(), 0);
    assert!(
        overlay(
            &mut g,
            t(1),
            VTEP_12,
            1000,
            &icmp(RIF_A, VM_VR, IP_VR, INTERNET, 1, true)
        )
        .is_empty()
    );
    assert_eq!(g.counters().dropped(DropReason::NoRoute), 1);
}

#[test]
fn unknown_port_and_untagged_trunk_frames_counted() {
    let mut g = gateway();
    let f = frames::udp(VM_VR, VM_OVS, IP_OVS, IP_VR, 1, 2, 64, b"x");
    assert!(run(&mut g, t(0), Input::Frame { port: 9, data: &f }).is_empty());
    assert!(
        run(
            &mut g,
            t(0),
            Input::Frame {
                port: TRUNK,
                data: &f
            }
        )
        .is_empty()
    );
    assert_eq!(g.counters().dropped(DropReason::UnknownPort), 1);
    assert_eq!(g.counters().dropped(DropReason::UnknownVlan), 1);
}

#[test]
fn snat_fixture_runs() {
    let mut f = switchyard_dataplane::gateway::snat_fixture(1400);
    let out = run(
        &mut f.gateway,
        t(1),
        Input::Underlay {
            src: f.vtep,
            data: &f.packet,
        },
    );
    assert_eq!(out.len(), 1);
    let data = on_external(&out[0]);
    assert_eq!(data.len(), 1400);
    let (_, ip) = ip_of(&data);
    assert_eq!(ip.src_addr(), EXT_IP);
    let _ = Duration::from_secs(1);
}

// Several routers on one gateway: routing domains, per-router NAT, static routes.

/// Two routers, "a" and "b", both with 10.0.0.0/24 (in different bridge
/// domains) and one more subnet each; router B's interfaces come first, so a
/// lookup that ignored the router would find B's 10.0.0.0/24.
const VLAN_A1: u16 = 110;
const VLAN_A2: u16 = 111;
const VLAN_B1: u16 = 120;
const VLAN_B2: u16 = 121;
const VNI_A1: u32 = 1100;
const VNI_A2: u32 = 1101;
const VNI_B1: u32 = 1200;
const VNI_B2: u32 = 1201;
const MAC_A1: Mac = EthernetAddress([0x02, 0xa1, 0, 0, 0, 0x01]);
const MAC_A2: Mac = EthernetAddress([0x02, 0xa2, 0, 0, 0, 0x01]);
const MAC_B1: Mac = EthernetAddress([0x02, 0xb1, 0, 0, 0, 0x01]);
const MAC_B2: Mac = EthernetAddress([0x02, 0xb2, 0, 0, 0, 0x01]);
const H_A1: Mac = EthernetAddress([0x02, 0xa1, 0, 0, 0, 0x05]);
const H_A2: Mac = EthernetAddress([0x02, 0xa2, 0, 0, 0, 0x05]);
const H_B1: Mac = EthernetAddress([0x02, 0xb1, 0, 0, 0, 0x05]);
const H_B2: Mac = EthernetAddress([0x02, 0xb2, 0, 0, 0, 0x05]);
/// Both routers' gateway address on 10.0.0.0/24, and a host there in each.
const GW0: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const HOST0: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 5);
const GW_A2: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
const HOST_A2: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 5);
const GW_B2: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 1);
const HOST_B2: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 5);
const SNAT_A: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const SNAT_B: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 20);

fn rif(id: &str, router: &str, vni: u32, ip: Ipv4Addr, prefix_len: u8, mac: Mac) -> Update {
    Update::RouterInterface(RouterInterface {
        id: id.into(),
        router: router.into(),
        vni,
        ip,
        prefix_len,
        mac,
    })
}

fn domain(vlan: u16, vni: u32) -> Update {
    Update::BridgeDomain {
        vlan,
        vni,
        flood: vec![],
    }
}

fn route(router: &str, destination: Ipv4Addr, prefix_len: u8, nexthop: Ipv4Addr) -> Update {
    Update::Route {
        router: router.into(),
        destination,
        prefix_len,
        nexthop,
    }
}

fn snat(ids: &[&str], external_ip: Ipv4Addr) -> Update {
    Update::Snat(Snat {
        router_interface_ids: ids.iter().map(|s| s.to_string()).collect(),
        external_ip,
    })
}

/// The two-router gateway, every host already resolved (gratuitous ARP).
fn two_routers() -> Gateway {
    let mut g = Gateway::new(TRUNK, GW_VTEP, EthernetAddress([0x02, 0, 0, 0, 0, 0xff]));
    g.apply(
        1,
        &[
            domain(VLAN_A1, VNI_A1),
            domain(VLAN_A2, VNI_A2),
            domain(VLAN_B1, VNI_B1),
            domain(VLAN_B2, VNI_B2),
            rif("b1", "b", VNI_B1, GW0, 24, MAC_B1),
            rif("b2", "b", VNI_B2, GW_B2, 24, MAC_B2),
            rif("a1", "a", VNI_A1, GW0, 24, MAC_A1),
            rif("a2", "a", VNI_A2, GW_A2, 24, MAC_A2),
            Update::External(External {
                port: EXT,
                ip: EXT_IP,
                prefix_len: 24,
                mac: EXT_MAC,
                next_hop: UPSTREAM,
            }),
        ],
    )
    .expect("overlapping subnets in different routers are fine");
    for (vlan, mac, ip) in [
        (VLAN_A1, H_A1, HOST0),
        (VLAN_A2, H_A2, HOST_A2),
        (VLAN_B1, H_B1, HOST0),
        (VLAN_B2, H_B2, HOST_B2),
    ] {
        trunk(&mut g, t(0), vlan, &frames::gratuitous_arp(mac, ip));
    }
    assert_eq!(g.arp_table(VNI_A1), vec![(HOST0, H_A1)]);
    assert_eq!(g.arp_table(VNI_B1), vec![(HOST0, H_B1)]);
    g
}

/// Sends a UDP datagram from a host to its router interface on `vlan` and
/// returns what came out.
#[allow(clippy::too_many_arguments)]
fn udp_in(
    g: &mut Gateway,
    now: Instant,
    vlan: u16,
    rif_mac: Mac,
    host: Mac,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
) -> Vec<Output> {
    trunk(
        g,
        now,
        vlan,
        &frames::udp(rif_mac, host, src, dst, sport, 53, 64, b"payload"),
    )
}

/// The single routed frame of `out`, on `vlan`: (dst MAC, src MAC, src IP, dst IP, TTL).
fn routed(out: &[Output], vlan: u16) -> (Mac, Mac, Ipv4Addr, Ipv4Addr, u8) {
    assert_eq!(out.len(), 1, "one frame: {out:?}");
    let f = on_trunk(&out[0], vlan);
    let (eth, ip) = ip_of(&f);
    (
        eth.dst_addr(),
        eth.src_addr(),
        ip.src_addr(),
        ip.dst_addr(),
        ip.hop_limit(),
    )
}

#[test]
fn routers_are_separate_routing_domains_with_overlapping_subnets() {
    let mut g = two_routers();
    // Within each router, between its two subnets, from the same address.
    let out = udp_in(&mut g, t(1), VLAN_A1, MAC_A1, H_A1, HOST0, HOST_A2, 1);
    assert_eq!(routed(&out, VLAN_A2), (H_A2, MAC_A2, HOST0, HOST_A2, 63));
    let out = udp_in(&mut g, t(1), VLAN_B1, MAC_B1, H_B1, HOST0, HOST_B2, 1);
    assert_eq!(routed(&out, VLAN_B2), (H_B2, MAC_B2, HOST0, HOST_B2, 63));
    // Back to 10.0.0.5: each router reaches its own.
    let out = udp_in(&mut g, t(2), VLAN_A2, MAC_A2, H_A2, HOST_A2, HOST0, 1);
    assert_eq!(routed(&out, VLAN_A1), (H_A1, MAC_A1, HOST_A2, HOST0, 63));
    let out = udp_in(&mut g, t(2), VLAN_B2, MAC_B2, H_B2, HOST_B2, HOST0, 1);
    assert_eq!(routed(&out, VLAN_B1), (H_B1, MAC_B1, HOST_B2, HOST0, 63));
    // Across routers: dropped, not routed (and nothing is ARPed for).
    assert!(udp_in(&mut g, t(3), VLAN_A1, MAC_A1, H_A1, HOST0, HOST_B2, 1).is_empty());
    assert!(udp_in(&mut g, t(3), VLAN_B1, MAC_B1, H_B1, HOST0, HOST_A2, 1).is_empty());
    assert!(udp_in(&mut g, t(3), VLAN_A2, MAC_A2, H_A2, HOST_A2, HOST_B2, 1).is_empty());
    assert_eq!(g.counters().dropped(DropReason::NoRoute), 3);
    assert_eq!(g.pending_packets(), 0);
    // The other router's interface address is not the gateway's own from here.
    let ping = icmp(MAC_A1, H_A1, HOST0, GW_B2, 5, true);
    assert!(trunk(&mut g, t(4), VLAN_A1, &ping).is_empty());
    assert_eq!(g.counters().dropped(DropReason::NoRoute), 4);
    // Its own is, and the reply goes back into the router it came from.
    for (vlan, rif_mac, host) in [(VLAN_B1, MAC_B1, H_B1), (VLAN_A1, MAC_A1, H_A1)] {
        let ping = icmp(rif_mac, host, HOST0, GW0, 5, true);
        let out = trunk(&mut g, t(5), vlan, &ping);
        assert_eq!(routed(&out, vlan), (host, rif_mac, GW0, HOST0, 64));
    }
    // ARP for the shared gateway address is answered per bridge domain.
    for (vlan, rif_mac, host) in [(VLAN_A1, MAC_A1, H_A1), (VLAN_B1, MAC_B1, H_B1)] {
        let out = trunk(&mut g, t(6), vlan, &arp_request(host, HOST0, GW0));
        assert_eq!(out.len(), 1);
        let ArpRepr::EthernetIpv4 {
            operation,
            source_hardware_addr,
            ..
        } = arp_of(&on_trunk(&out[0], vlan))
        else {
            panic!("arp")
        };
        assert_eq!(
            (operation, source_hardware_addr),
            (ArpOperation::Reply, rif_mac)
        );
    }
    // A static route of router A is not router B's.
    let far = Ipv4Addr::new(172, 16, 0, 9);
    g.apply(2, &[route("a", Ipv4Addr::new(172, 16, 0, 0), 16, HOST_A2)])
        .expect("route");
    let out = udp_in(&mut g, t(7), VLAN_A1, MAC_A1, H_A1, HOST0, far, 1);
    assert_eq!(routed(&out, VLAN_A2), (H_A2, MAC_A2, HOST0, far, 63));
    assert!(udp_in(&mut g, t(7), VLAN_B1, MAC_B1, H_B1, HOST0, far, 1).is_empty());
    assert_eq!(g.counters().dropped(DropReason::NoRoute), 5);
}

#[test]
fn overlapping_subnets_within_one_router_refused() {
    let mut g = two_routers();
    let mac_x = EthernetAddress([0x02, 0xcc, 0, 0, 0, 0x01]);
    let half = Ipv4Addr::new(10, 0, 0, 129);
    // A third interface of router A, inside A's 10.0.0.0/24 (another domain).
    let bad = [domain(130, 1300), rif("a3", "a", 1300, half, 25, mac_x)];
    assert_eq!(
        g.apply(2, &bad),
        Err(ConfigError::OverlappingSubnets("a1".into(), "a3".into()))
    );
    assert_eq!(g.version(), 1);
    assert!(g.bridge_domains().iter().all(|(vni, ..)| *vni != 1300));
    // Moving B's interface into router A makes it overlap there.
    assert_eq!(
        g.apply(2, &[rif("b1", "a", VNI_B1, GW0, 24, MAC_B1)]),
        Err(ConfigError::OverlappingSubnets("b1".into(), "a1".into()))
    );
    // Nothing of it applied: B still routes its 10.0.0.0/24.
    let out = udp_in(&mut g, t(1), VLAN_B1, MAC_B1, H_B1, HOST0, HOST_B2, 1);
    assert_eq!(routed(&out, VLAN_B2).0, H_B2);
    // In a router of its own, the same subnet is fine.
    g.apply(
        2,
        &[domain(130, 1300), rif("c1", "c", 1300, half, 25, mac_x)],
    )
    .expect("third router");
    assert_eq!(g.version(), 2);
}

#[test]
fn routers_may_not_share_an_interface_or_an_snat_rule() {
    let mut g = two_routers();
    let mac_x = EthernetAddress([0x02, 0xcc, 0, 0, 0, 0x01]);
    // Another router's interface in A's bridge domain with A's address...
    assert_eq!(
        g.apply(2, &[rif("c1", "c", VNI_A1, GW0, 24, mac_x)]),
        Err(ConfigError::InterfaceClash("a1".into(), "c1".into()))
    );
    // ... or A's MAC.
    assert_eq!(
        g.apply(
            2,
            &[rif(
                "c1",
                "c",
                VNI_A1,
                Ipv4Addr::new(10, 0, 0, 2),
                24,
                MAC_A1
            )]
        ),
        Err(ConfigError::InterfaceClash("a1".into(), "c1".into()))
    );
    // With its own address and MAC it may share the bridge domain.
    g.apply(
        2,
        &[rif(
            "c1",
            "c",
            VNI_A1,
            Ipv4Addr::new(10, 0, 0, 2),
            24,
            mac_x,
        )],
    )
    .expect("distinct interface");
    // One SNAT address for interfaces of two routers is refused.
    assert_eq!(
        g.apply(3, &[snat(&["a1", "b1"], SNAT_A)]),
        Err(ConfigError::SnatAcrossRouters {
            external_ip: SNAT_A,
            a: "a1".into(),
            b: "b1".into()
        })
    );
    assert_eq!(g.version(), 2);
}

#[test]
fn snat_and_floating_ips_per_router() {
    let mut g = two_routers();
    g.apply(2, &[snat(&["a1", "a2"], SNAT_A), snat(&["b1"], SNAT_B)])
        .expect("snat");
    resolve_upstream(&mut g, t(0));
    // The same inside flow from both routers: each with its router's address.
    let mut ports = Vec::new();
    for (vlan, rif_mac, host, want) in [
        (VLAN_A1, MAC_A1, H_A1, SNAT_A),
        (VLAN_B1, MAC_B1, H_B1, SNAT_B),
    ] {
        let out = udp_in(&mut g, t(1), vlan, rif_mac, host, HOST0, INTERNET, 40000);
        assert_eq!(out.len(), 1);
        let f = on_external(&out[0]);
        let (_, ip) = ip_of(&f);
        assert_eq!((ip.src_addr(), ip.dst_addr()), (want, INTERNET));
        let u = UdpPacket::new_checked(ip.payload()).expect("udp");
        assert!(u.verify_checksum(&want.into(), &INTERNET.into()));
        ports.push(u.src_port());
    }
    assert_eq!(g.nat_connections(), 2, "neither router evicted the other");
    let table = g.nat_table();
    let mut routers: Vec<(&str, Ipv4Addr)> = table
        .iter()
        .map(|b| (b.router.as_str(), *b.external.ip()))
        .collect();
    routers.sort();
    assert_eq!(routers, vec![("a", SNAT_A), ("b", SNAT_B)]);
    // A's other subnet uses A's address too; B's second interface has no SNAT
    // and never gets A's.
    let out = udp_in(&mut g, t(2), VLAN_A2, MAC_A2, H_A2, HOST_A2, INTERNET, 1);
    let f = on_external(&out[0]);
    assert_eq!(ip_of(&f).1.src_addr(), SNAT_A);
    assert!(udp_in(&mut g, t(2), VLAN_B2, MAC_B2, H_B2, HOST_B2, INTERNET, 1).is_empty());
    assert_eq!(g.counters().dropped(DropReason::NoRoute), 1);
    // Replies come back into the router the connection came from (a lookup
    // ignoring the router would find B's 10.0.0.0/24 for both).
    for (ext, port, vlan, host, rif_mac) in [
        (SNAT_A, ports[0], VLAN_A1, H_A1, MAC_A1),
        (SNAT_B, ports[1], VLAN_B1, H_B1, MAC_B1),
    ] {
        let r = frames::udp(EXT_MAC, UP_MAC, INTERNET, ext, 53, port, 60, b"answer");
        let out = external(&mut g, t(3), &r);
        assert_eq!(routed(&out, vlan), (host, rif_mac, INTERNET, HOST0, 59));
        let f = on_trunk(&out[0], vlan);
        let u = UdpPacket::new_checked(ip_of(&f).1.payload())
            .expect("udp")
            .dst_port();
        assert_eq!(u, 40000);
    }
    // A floating IP on B's 10.0.0.5: inbound lands in B, outbound from B's
    // host uses it, A's 10.0.0.5 keeps A's SNAT address.
    g.apply(
        3,
        &[Update::FloatingIp(FloatingIp {
            external_ip: FIP,
            internal_ip: HOST0,
            router_interface_id: "b1".into(),
        })],
    )
    .expect("fip");
    let syn = tcp(
        EXT_MAC,
        UP_MAC,
        INTERNET,
        FIP,
        33000,
        22,
        TcpControl::Syn,
        false,
    );
    let out = external(&mut g, t(4), &syn);
    assert_eq!(routed(&out, VLAN_B1), (H_B1, MAC_B1, INTERNET, HOST0, 63));
    for (vlan, rif_mac, host, want) in [
        (VLAN_A1, MAC_A1, H_A1, SNAT_A),
        (VLAN_B1, MAC_B1, H_B1, FIP),
    ] {
        let out = udp_in(&mut g, t(5), vlan, rif_mac, host, HOST0, INTERNET, 40001);
        let f = on_external(&out[0]);
        assert_eq!(ip_of(&f).1.src_addr(), want);
    }
    // Router B goes away (its interfaces move to a new router "c"): its
    // connections go with it, though the SNAT address stays.
    g.apply(
        4,
        &[
            rif("b1", "c", VNI_B1, GW0, 24, MAC_B1),
            rif("b2", "c", VNI_B2, GW_B2, 24, MAC_B2),
        ],
    )
    .expect("move");
    let left: Vec<String> = g.nat_table().into_iter().map(|b| b.router).collect();
    assert_eq!(
        left,
        vec!["a".to_string(), "a".to_string(), "a".to_string()]
    );
    let r = frames::udp(EXT_MAC, UP_MAC, INTERNET, SNAT_B, 53, ports[1], 60, b"late");
    assert!(external(&mut g, t(6), &r).is_empty());
    assert_eq!(g.counters().dropped(DropReason::NoNatBinding), 1);
}

#[test]
fn static_routes_longest_prefix_via_resolved_nexthop() {
    let mut g = gateway();
    resolve_upstream(&mut g, t(0));
    let nh1 = Ipv4Addr::new(50, 50, 50, 30);
    let nh1_mac = EthernetAddress([0x02, 0, 0, 0, 0x60, 0x01]);
    let nh2 = Ipv4Addr::new(60, 60, 60, 30);
    let nh2_mac = EthernetAddress([0x02, 0, 0, 0, 0x60, 0x02]);
    let wide = Ipv4Addr::new(192, 168, 0, 0);
    let narrow = Ipv4Addr::new(192, 168, 1, 0);
    let in_narrow = Ipv4Addr::new(192, 168, 1, 5);
    let in_wide = Ipv4Addr::new(192, 168, 2, 5);
    // Without routes, both go out with SNAT.
    for d in [in_narrow, in_wide] {
        let out = udp_in(&mut g, t(1), 100, RIF_A, VM_OVS, IP_OVS, d, 1);
        assert_eq!(ip_of(&on_external(&out[0])).1.src_addr(), EXT_IP);
    }
    g.apply(2, &[route("", wide, 16, nh1), route("", narrow, 24, nh2)])
        .expect("routes");
    // The /24 wins for 192.168.1.5: ARP for its next hop in domain 1001, queued.
    let out = udp_in(&mut g, t(2), 100, RIF_A, VM_OVS, IP_OVS, in_narrow, 1);
    assert_eq!(out.len(), 2, "ARP request on the trunk and to VTEP .12");
    let ArpRepr::EthernetIpv4 {
        operation,
        source_protocol_addr,
        target_protocol_addr,
        ..
    } = arp_of(&on_trunk(&out[0], 101))
    else {
        panic!("arp")
    };
    assert_eq!(
        (operation, source_protocol_addr, target_protocol_addr),
        (ArpOperation::Request, GW_B, nh2)
    );
    assert_eq!(g.pending_packets(), 1);
    let out = trunk(&mut g, t(3), 101, &arp_reply(RIF_B, nh2_mac, nh2, GW_B));
    assert_eq!(g.pending_packets(), 0);
    assert_eq!(routed(&out, 101), (nh2_mac, RIF_B, IP_OVS, in_narrow, 63));
    // The /16 for 192.168.2.5, via the other interface's next hop.
    let out = udp_in(&mut g, t(4), 100, RIF_A, VM_OVS, IP_OVS, in_wide, 1);
    assert_eq!(
        out.len(),
        3,
        "ARP request on the trunk and to VTEPs .12 and .14"
    );
    let out = trunk(&mut g, t(5), 100, &arp_reply(RIF_A, nh1_mac, nh1, GW_A));
    assert_eq!(routed(&out, 100), (nh1_mac, RIF_A, IP_OVS, in_wide, 63));
    // Resolved now: straight out.
    let out = udp_in(&mut g, t(6), 101, RIF_B, VM_B, IP_B, in_wide, 1);
    assert_eq!(routed(&out, 100), (nh1_mac, RIF_A, IP_B, in_wide, 63));
    // A host behind a route pings the gateway: the reply goes back via the route.
    let ping = icmp(RIF_A, nh1_mac, in_wide, GW_A, 3, true);
    let out = trunk(&mut g, t(7), 100, &ping);
    assert_eq!(routed(&out, 100), (nh1_mac, RIF_A, GW_A, in_wide, 64));
    // Removing the /24: 192.168.1.5 falls back to the /16.
    g.apply(
        3,
        &[Update::RemoveRoute {
            router: String::new(),
            destination: narrow,
            prefix_len: 24,
        }],
    )
    .expect("remove");
    let out = udp_in(&mut g, t(8), 100, RIF_A, VM_OVS, IP_OVS, in_narrow, 1);
    assert_eq!(routed(&out, 100), (nh1_mac, RIF_A, IP_OVS, in_narrow, 63));
    // Removing the /16 too: SNAT again.
    g.apply(
        4,
        &[Update::RemoveRoute {
            router: String::new(),
            destination: wide,
            prefix_len: 16,
        }],
    )
    .expect("remove");
    let out = udp_in(&mut g, t(9), 100, RIF_A, VM_OVS, IP_OVS, in_narrow, 1);
    assert_eq!(ip_of(&on_external(&out[0])).1.src_addr(), EXT_IP);
}

#[test]
fn bad_static_routes_refuse_the_whole_version() {
    let mut g = gateway();
    resolve_upstream(&mut g, t(0));
    let ok = route(
        "",
        Ipv4Addr::new(10, 9, 0, 0),
        16,
        Ipv4Addr::new(50, 50, 50, 31),
    );
    let dst = Ipv4Addr::new(10, 9, 0, 5);
    let off_subnet = Ipv4Addr::new(70, 0, 0, 1);
    assert_eq!(
        g.apply(
            2,
            &[
                ok.clone(),
                route("", Ipv4Addr::new(172, 16, 0, 0), 12, off_subnet)
            ]
        ),
        Err(ConfigError::BadNexthop {
            router: String::new(),
            destination: Ipv4Addr::new(172, 16, 0, 0),
            prefix_len: 12,
            nexthop: off_subnet,
        })
    );
    // Nor the router's own address, nor another router's subnet.
    for bad in [
        route("", Ipv4Addr::new(172, 16, 0, 0), 12, GW_A),
        route("other", Ipv4Addr::new(172, 16, 0, 0), 12, IP_OVS),
    ] {
        assert!(matches!(
            g.apply(2, &[ok.clone(), bad]),
            Err(ConfigError::BadNexthop { .. })
        ));
    }
    assert_eq!(
        g.apply(2, &[route("", Ipv4Addr::new(10, 9, 0, 1), 16, IP_OVS)]),
        Err(ConfigError::NotNetworkAddress {
            destination: Ipv4Addr::new(10, 9, 0, 1),
            prefix_len: 16
        })
    );
    assert_eq!(
        g.apply(2, &[route("", Ipv4Addr::new(10, 9, 0, 0), 33, IP_OVS)]),
        Err(ConfigError::BadPrefix(33))
    );
    assert_eq!(g.version(), 1);
    // Nothing of those versions applied: 10.9.0.5 still leaves with SNAT.
    let out = udp_in(&mut g, t(1), 100, RIF_A, VM_OVS, IP_OVS, dst, 1);
    assert_eq!(ip_of(&on_external(&out[0])).1.src_addr(), EXT_IP);
    // Alone, the good route applies; then its interface cannot go without it.
    g.apply(2, &[ok]).expect("good route");
    let out = udp_in(&mut g, t(2), 100, RIF_A, VM_OVS, IP_OVS, dst, 1);
    assert_eq!(out.len(), 3, "ARP for the next hop");
    assert!(matches!(
        g.apply(
            3,
            &[
                Update::RemoveSnat {
                    external_ip: EXT_IP
                },
                Update::RemoveRouterInterface { id: "rif-a".into() }
            ]
        ),
        Err(ConfigError::BadNexthop { .. })
    ));
    assert_eq!(g.version(), 2);
}

/// One update for the all-or-nothing property: interfaces in two routers,
/// static routes (some bad), SNAT rules, removals.
fn any_update() -> impl Strategy<Value = Update> {
    let router = prop::sample::select(vec!["", "a", "b"]);
    let id = prop::sample::select(vec!["rif-a", "rif-b", "rif-c", "rif-d"]);
    let net = prop::sample::select(vec![
        (Ipv4Addr::new(50, 50, 50, 1), 24),
        (Ipv4Addr::new(60, 60, 60, 1), 24),
        (Ipv4Addr::new(50, 50, 50, 129), 25),
        (Ipv4Addr::new(70, 0, 0, 1), 8),
    ]);
    let mac = prop::sample::select(vec![RIF_A, RIF_B, VM_B]);
    let dest = prop::sample::select(vec![
        (Ipv4Addr::new(192, 168, 0, 0), 16),
        (Ipv4Addr::new(192, 168, 1, 0), 24),
        (Ipv4Addr::new(192, 168, 1, 1), 24),
        (Ipv4Addr::new(0, 0, 0, 0), 0),
        (Ipv4Addr::new(192, 168, 1, 0), 33),
    ]);
    let hop = prop::sample::select(vec![
        Ipv4Addr::new(50, 50, 50, 30),
        Ipv4Addr::new(60, 60, 60, 30),
        Ipv4Addr::new(70, 1, 1, 1),
        GW_A,
    ]);
    prop_oneof![
        (id.clone(), router.clone(), 1000u32..1002, net, mac)
            .prop_map(|(id, router, vni, (ip, p), mac)| rif(id, router, vni, ip, p, mac)),
        id.clone()
            .prop_map(|id| Update::RemoveRouterInterface { id: id.into() }),
        (router.clone(), dest.clone(), hop).prop_map(|(r, (d, p), h)| route(r, d, p, h)),
        (router, dest).prop_map(|(r, (d, p))| Update::RemoveRoute {
            router: r.into(),
            destination: d,
            prefix_len: p,
        }),
        (prop::collection::vec(id, 0..3), any::<bool>()).prop_map(|(ids, other)| {
            let ip = if other { SNAT_B } else { EXT_IP };
            snat(&ids, ip)
        }),
        Just(Update::RemoveSnat {
            external_ip: EXT_IP
        }),
    ]
}

/// Probe packets from both router interfaces of [`config`] to a few places.
fn probe(g: &mut Gateway) -> (Vec<Output>, u64, u64) {
    let mut out = Vec::new();
    for d in [IP_B, IP_VR, INTERNET, Ipv4Addr::new(192, 168, 1, 5), GW_B] {
        out.extend(udp_in(g, t(50), 100, RIF_A, VM_OVS, IP_OVS, d, 7));
    }
    for d in [IP_OVS, Ipv4Addr::new(192, 168, 2, 5), INTERNET] {
        out.extend(udp_in(g, t(50), 101, RIF_B, VM_B, IP_B, d, 7));
    }
    let c = g.counters();
    (out, c.tx, c.drops.values().sum())
}

fn any_input() -> impl Strategy<Value = (u8, Vec<u8>)> {
    (0u8..6, prop::collection::vec(any::<u8>(), 0..200))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Random bytes on every kind of input, raw and behind valid outer headers:
    /// counted, never a panic.
    #[test]
    fn malformed_input_never_panics((kind, bytes) in any_input()) {
        let mut g = gateway();
        resolve_upstream(&mut g, t(0));
        let mut out = Vec::new();
        let data = match kind {
            // A tagged frame header for a known VLAN, random rest.
            3 => {
                let mut f = vec![0u8; 18];
                f[..6].copy_from_slice(&RIF_A.0);
                f[6..12].copy_from_slice(&VM_OVS.0);
                f[12..16].copy_from_slice(&[0x81, 0, 0, 100]);
                f[16..18].copy_from_slice(&[0x08, 0x00]);
                f.extend_from_slice(&bytes);
                f
            }
            // A VXLAN header for a known VNI, then an Ethernet header to the router, random rest.
            4 => {
                let mut f = frames::ethernet(RIF_A, VM_VR, EthernetProtocol::Ipv4, &bytes);
                if bytes.first().is_some_and(|b| b & 1 == 1) {
                    f[12..14].copy_from_slice(&[0x08, 0x06]);
                }
                vxlan::encap(1000, &f)
            }
            // An external frame to the gateway MAC, random IPv4 or ARP.
            5 => {
                let et = if bytes.first().is_some_and(|b| b & 1 == 1) { EthernetProtocol::Arp } else { EthernetProtocol::Ipv4 };
                frames::ethernet(EXT_MAC, UP_MAC, et, &bytes)
            }
            _ => bytes.clone(),
        };
        let input = match kind {
            0 | 3 => Input::Frame { port: TRUNK, data: &data },
            1 | 5 => Input::Frame { port: EXT, data: &data },
            _ => Input::Underlay { src: VTEP_12, data: &data },
        };
        g.process(t(1), input, &mut out);
        let c = g.counters();
        prop_assert_eq!(c.rx, 2);
        g.poll(t(10_000), &mut out);
    }

    /// Valid IPv4 headers with random payloads through the SNAT path in both
    /// directions: checksums of whatever comes out are valid.
    #[test]
    fn snat_outputs_valid_headers(payload in prop::collection::vec(any::<u8>(), 0..64), sport in any::<u16>(), proto in 0u8..3) {
        let mut g = gateway();
        resolve_upstream(&mut g, t(0));
        let frame = match proto {
            0 => frames::udp(RIF_A, VM_VR, IP_VR, INTERNET, sport, 53, 64, &payload),
            1 => icmp(RIF_A, VM_VR, IP_VR, INTERNET, sport, true),
            _ => tcp(RIF_A, VM_VR, IP_VR, INTERNET, sport, 80, TcpControl::None, true),
        };
        let out = overlay(&mut g, t(1), VTEP_12, 1000, &frame);
        prop_assert_eq!(out.len(), 1);
        let f = on_external(&out[0]);
        let (_, ip) = ip_of(&f);
        prop_assert_eq!(ip.src_addr(), EXT_IP);
        let ok = match proto {
            0 => UdpPacket::new_checked(ip.payload()).expect("udp").verify_checksum(&EXT_IP.into(), &INTERNET.into()),
            1 => Icmpv4Packet::new_checked(ip.payload()).expect("icmp").verify_checksum(),
            _ => TcpPacket::new_checked(ip.payload()).expect("tcp").verify_checksum(&EXT_IP.into(), &INTERNET.into()),
        };
        prop_assert!(ok);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Random versions of interface, route and SNAT updates: a refused version
    /// changes nothing (the gateway forwards exactly as one that never saw it);
    /// an accepted one never panics the packet path.
    #[test]
    fn apply_is_all_or_nothing(updates in prop::collection::vec(any_update(), 1..5)) {
        let mut g = gateway();
        let mut control = gateway();
        resolve_upstream(&mut g, t(0));
        resolve_upstream(&mut control, t(0));
        match g.apply(2, &updates) {
            Err(_) => {
                prop_assert_eq!(g.version(), 1);
                prop_assert_eq!(probe(&mut g), probe(&mut control));
            }
            Ok(()) => {
                prop_assert_eq!(g.version(), 2);
                probe(&mut g);
                let mut out = Vec::new();
                g.poll(t(10_000), &mut out);
            }
        }
    }
}
