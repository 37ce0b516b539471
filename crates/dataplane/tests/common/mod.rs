//! Helpers shared by the pipeline integration tests: addresses, frame builders,
//! DHCP client messages and reply parsing, output filters, proptest strategies.
#![allow(dead_code)]

use std::net::Ipv4Addr;

use proptest::prelude::*;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, DhcpMessageType, DhcpPacket, DhcpRepr, EthernetAddress,
    EthernetFrame, EthernetProtocol, Icmpv4Packet, Icmpv4Repr, IpProtocol, Ipv4Packet, Ipv4Repr,
    UdpPacket,
};
use switchyard_dataplane::frames::{self, BROADCAST};
use switchyard_dataplane::spoof::{AllowedPair, PortSecurity};
use switchyard_dataplane::{Input, Instant, Mac, Output, Pipeline, PortNo};

/// A locally administered unicast MAC ending in `a:b`.
pub fn mac(a: u8, b: u8) -> Mac {
    EthernetAddress([0x02, 0, 0, 0, a, b])
}

pub const fn ip(a: u8, b: u8, c: u8, d: u8) -> Ipv4Addr {
    Ipv4Addr::new(a, b, c, d)
}

pub fn t(ms: i64) -> Instant {
    Instant::from_millis(ms)
}

pub fn secured(mac: Mac, ips: &[Ipv4Addr]) -> PortSecurity {
    PortSecurity {
        enabled: true,
        mac,
        ips: ips.to_vec(),
        pairs: Vec::new(),
    }
}

pub fn secured_with_pair(mac: Mac, ips: &[Ipv4Addr], pair: (Ipv4Addr, u8, Mac)) -> PortSecurity {
    PortSecurity {
        pairs: vec![AllowedPair {
            ip: pair.0,
            prefix_len: pair.1,
            mac: pair.2,
        }],
        ..secured(mac, ips)
    }
}

pub fn insecure(mac: Mac) -> PortSecurity {
    PortSecurity {
        enabled: false,
        ..secured(mac, &[])
    }
}

/// An Ethernet/IPv4/UDP frame of exactly `len` bytes (at least 42).
pub fn udp_frame(dst_mac: Mac, src_mac: Mac, src: Ipv4Addr, dst: Ipv4Addr, len: usize) -> Vec<u8> {
    let payload: Vec<u8> = (0..len.saturating_sub(42)).map(|i| i as u8).collect();
    let f = frames::udp(dst_mac, src_mac, src, dst, 40000, 5000, 64, &payload);
    assert_eq!(f.len(), len.max(42));
    f
}

/// A small UDP frame (64 bytes).
pub fn udp(dst_mac: Mac, src_mac: Mac, src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    udp_frame(dst_mac, src_mac, src, dst, 64)
}

/// An ICMP echo request frame.
pub fn ping(dst_mac: Mac, src_mac: Mac, src: Ipv4Addr, dst: Ipv4Addr, seq: u16) -> Vec<u8> {
    let icmp = Icmpv4Repr::EchoRequest {
        ident: 0x1234,
        seq_no: seq,
        data: b"switchyard-ping-payload",
    };
    let ipr = Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol::Icmp,
        payload_len: icmp.buffer_len(),
        hop_limit: 64,
    };
    let caps = ChecksumCapabilities::default();
    let mut body = vec![0u8; ipr.buffer_len() + icmp.buffer_len()];
    let mut p = Ipv4Packet::new_unchecked(&mut body[..]);
    ipr.emit(&mut p, &caps);
    icmp.emit(&mut Icmpv4Packet::new_unchecked(p.payload_mut()), &caps);
    frames::ethernet(dst_mac, src_mac, EthernetProtocol::Ipv4, &body)
}

/// A broadcast ARP request from `sha`/`spa` for `tpa`.
pub fn arp_request(sha: Mac, spa: Ipv4Addr, tpa: Ipv4Addr) -> Vec<u8> {
    frames::arp(
        ArpOperation::Request,
        BROADCAST,
        sha,
        spa,
        EthernetAddress([0; 6]),
        tpa,
    )
}

/// Parses an ARP frame: (eth dst, eth src, op, sha, spa, tha, tpa).
#[allow(clippy::type_complexity)]
pub fn parse_arp(frame: &[u8]) -> (Mac, Mac, ArpOperation, Mac, Ipv4Addr, Mac, Ipv4Addr) {
    let eth = EthernetFrame::new_checked(frame).expect("ethernet");
    assert_eq!(eth.ethertype(), EthernetProtocol::Arp);
    let p = ArpPacket::new_checked(eth.payload()).expect("arp");
    let ArpRepr::EthernetIpv4 {
        operation,
        source_hardware_addr,
        source_protocol_addr,
        target_hardware_addr,
        target_protocol_addr,
    } = ArpRepr::parse(&p).expect("arp repr")
    else {
        panic!("not ethernet/ipv4 ARP")
    };
    (
        eth.dst_addr(),
        eth.src_addr(),
        operation,
        source_hardware_addr,
        source_protocol_addr,
        target_hardware_addr,
        target_protocol_addr,
    )
}

/// A DHCP client message (DISCOVER / REQUEST ...) as a broadcast frame from
/// 0.0.0.0:68 to 255.255.255.255:67.
pub fn dhcp_client(
    client: Mac,
    kind: DhcpMessageType,
    xid: u32,
    requested: Option<Ipv4Addr>,
    server_id: Option<Ipv4Addr>,
) -> Vec<u8> {
    let repr = DhcpRepr {
        message_type: kind,
        transaction_id: xid,
        secs: 0,
        client_hardware_address: client,
        client_ip: Ipv4Addr::UNSPECIFIED,
        your_ip: Ipv4Addr::UNSPECIFIED,
        server_ip: Ipv4Addr::UNSPECIFIED,
        router: None,
        subnet_mask: None,
        relay_agent_ip: Ipv4Addr::UNSPECIFIED,
        broadcast: false,
        requested_ip: requested,
        client_identifier: Some(client),
        server_identifier: server_id,
        parameter_request_list: Some(&[1, 3, 6, 26, 121]),
        dns_servers: None,
        max_size: Some(1432),
        lease_duration: None,
        renew_duration: None,
        rebind_duration: None,
        additional_options: &[],
    };
    let mut body = vec![0u8; repr.buffer_len()];
    repr.emit(&mut DhcpPacket::new_unchecked(&mut body[..]))
        .expect("emit dhcp");
    dhcp_frame(client, &body)
}

/// Wraps a raw BOOTP/DHCP payload in Ethernet/IPv4/UDP 68→67 broadcast.
pub fn dhcp_frame(client: Mac, dhcp_payload: &[u8]) -> Vec<u8> {
    frames::udp(
        BROADCAST,
        client,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::BROADCAST,
        68,
        67,
        64,
        dhcp_payload,
    )
}

/// The fields of a DHCP reply the tests check.
#[derive(Debug, Clone)]
pub struct DhcpReply {
    pub eth_dst: Mac,
    pub eth_src: Mac,
    pub ip_src: Ipv4Addr,
    pub ip_dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
    pub message_type: DhcpMessageType,
    pub xid: u32,
    pub chaddr: Mac,
    pub your_ip: Ipv4Addr,
    pub subnet_mask: Option<Ipv4Addr>,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub lease: Option<u32>,
    pub server_id: Option<Ipv4Addr>,
    /// Every option as (kind, data), in order.
    pub options: Vec<(u8, Vec<u8>)>,
}

impl DhcpReply {
    pub fn option(&self, kind: u8) -> Option<&[u8]> {
        self.options
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, d)| &d[..])
    }
}

/// Parses a DHCP server reply frame with smoltcp's checked views (checksums verified).
pub fn parse_dhcp_reply(frame: &[u8]) -> DhcpReply {
    let eth = EthernetFrame::new_checked(frame).expect("ethernet");
    assert_eq!(eth.ethertype(), EthernetProtocol::Ipv4);
    let ipp = Ipv4Packet::new_checked(eth.payload()).expect("ipv4");
    assert!(ipp.verify_checksum(), "IPv4 header checksum");
    assert_eq!(ipp.next_header(), IpProtocol::Udp);
    let u = UdpPacket::new_checked(ipp.payload()).expect("udp");
    assert!(
        u.verify_checksum(&ipp.src_addr().into(), &ipp.dst_addr().into()),
        "UDP checksum"
    );
    let d = DhcpPacket::new_checked(u.payload()).expect("dhcp packet");
    let r = DhcpRepr::parse(&d).expect("dhcp repr");
    DhcpReply {
        eth_dst: eth.dst_addr(),
        eth_src: eth.src_addr(),
        ip_src: ipp.src_addr(),
        ip_dst: ipp.dst_addr(),
        sport: u.src_port(),
        dport: u.dst_port(),
        message_type: r.message_type,
        xid: r.transaction_id,
        chaddr: r.client_hardware_address,
        your_ip: r.your_ip,
        subnet_mask: r.subnet_mask,
        router: r.router,
        dns: r
            .dns_servers
            .map(|v| v.iter().copied().collect())
            .unwrap_or_default(),
        lease: r.lease_duration,
        server_id: r.server_identifier,
        options: d.options().map(|o| (o.kind, o.data.to_vec())).collect(),
    }
}

/// Runs one input through a pipeline and returns what it emitted.
pub fn run(p: &mut dyn Pipeline, now: Instant, input: Input<'_>) -> Vec<Output> {
    let mut out = Vec::new();
    p.process(now, input, &mut out);
    out
}

pub fn frame_in(p: &mut dyn Pipeline, port: PortNo, data: &[u8]) -> Vec<Output> {
    run(p, t(0), Input::Frame { port, data })
}

/// (port, frame) of every frame output, sorted by port.
pub fn frames_out(out: &[Output]) -> Vec<(PortNo, Vec<u8>)> {
    let mut v: Vec<(PortNo, Vec<u8>)> = out
        .iter()
        .filter_map(|o| match o {
            Output::Frame { port, data } => Some((*port, data.clone())),
            Output::Underlay { .. } => None,
        })
        .collect();
    v.sort_by_key(|(p, _)| *p);
    v
}

pub fn ports_out(out: &[Output]) -> Vec<PortNo> {
    frames_out(out).into_iter().map(|(p, _)| p).collect()
}

/// (dst VTEP, datagram) of every underlay output, sorted by VTEP.
pub fn underlay_out(out: &[Output]) -> Vec<(Ipv4Addr, Vec<u8>)> {
    let mut v: Vec<(Ipv4Addr, Vec<u8>)> = out
        .iter()
        .filter_map(|o| match o {
            Output::Underlay { dst, data } => Some((*dst, data.clone())),
            Output::Frame { .. } => None,
        })
        .collect();
    v.sort_by_key(|(d, _)| *d);
    v
}

/// Sum of all drop counters.
pub fn total_drops(p: &dyn Pipeline) -> u64 {
    p.counters().drops.values().sum()
}

/// Random bytes, biased towards lengths around real header boundaries.
pub fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..80),
        prop::collection::vec(any::<u8>(), 0..600),
    ]
}

/// A valid frame from `seeds`, truncated and/or with some bytes overwritten:
/// reaches deeper into the parsers than uniform random bytes.
pub fn mutated(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    (
        0..seeds.len(),
        any::<prop::sample::Index>(),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        any::<bool>(),
    )
        .prop_map(move |(i, cut, flips, truncate)| {
            let mut f = seeds[i].clone();
            for (at, b) in flips {
                let n = f.len();
                f[at.index(n)] = b;
            }
            if truncate {
                let n = f.len() + 1;
                f.truncate(cut.index(n));
            }
            f
        })
}

/// A frame or a mutated seed frame.
pub fn frame_bytes(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![bytes(), mutated(seeds)]
}
