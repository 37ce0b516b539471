//! The internet node: the upstream router on the gateway's external link
//! (203.0.113.1 in the reference lab) with hosts behind it (198.51.100.0/24).
//! It answers ARP for its own address and ping for itself and its hosts, and
//! remembers the source addresses it saw, so tests can check SNAT.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetFrame, EthernetProtocol, Icmpv4Packet, Icmpv4Repr,
    IpProtocol, Ipv4Packet, Ipv4Repr,
};
use switchyard_dataplane::frames::{self, Mac};
use switchyard_dataplane::{Counters, DropReason, Input, Instant, Output, Pipeline};

#[derive(Debug)]
pub struct Internet {
    pub mac: Mac,
    pub ip: Ipv4Addr,
    pub hosts: (Ipv4Addr, u8),
    /// Source addresses of the pings answered.
    pub seen_sources: BTreeSet<Ipv4Addr>,
    counters: Counters,
}

impl Internet {
    pub fn new(mac: Mac, ip: Ipv4Addr, hosts: (Ipv4Addr, u8)) -> Self {
        Internet {
            mac,
            ip,
            hosts,
            seen_sources: BTreeSet::new(),
            counters: Counters::default(),
        }
    }

    fn answer(&mut self, frame: &[u8]) -> Option<Vec<u8>> {
        let eth = EthernetFrame::new_checked(frame).ok()?;
        match eth.ethertype() {
            EthernetProtocol::Arp => {
                let repr = ArpRepr::parse(&ArpPacket::new_checked(eth.payload()).ok()?).ok()?;
                let ArpRepr::EthernetIpv4 {
                    operation: ArpOperation::Request,
                    source_hardware_addr,
                    source_protocol_addr,
                    target_protocol_addr,
                    ..
                } = repr
                else {
                    return None;
                };
                (target_protocol_addr == self.ip).then(|| {
                    frames::arp(
                        ArpOperation::Reply,
                        source_hardware_addr,
                        self.mac,
                        self.ip,
                        source_hardware_addr,
                        source_protocol_addr,
                    )
                })
            }
            EthernetProtocol::Ipv4 => {
                if eth.dst_addr() != self.mac {
                    return None;
                }
                let caps = ChecksumCapabilities::default();
                let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
                let ip_repr = Ipv4Repr::parse(&ip, &caps).ok()?;
                if ip_repr.next_header != IpProtocol::Icmp {
                    return None;
                }
                let dst = ip_repr.dst_addr;
                if dst != self.ip && !frames::in_prefix(dst, self.hosts.0, self.hosts.1) {
                    return None;
                }
                let icmp = Icmpv4Repr::parse(&Icmpv4Packet::new_checked(ip.payload()).ok()?, &caps)
                    .ok()?;
                let Icmpv4Repr::EchoRequest {
                    ident,
                    seq_no,
                    data,
                } = icmp
                else {
                    return None;
                };
                self.seen_sources.insert(ip_repr.src_addr);
                let reply = Icmpv4Repr::EchoReply {
                    ident,
                    seq_no,
                    data,
                };
                let out_ip = Ipv4Repr {
                    src_addr: dst,
                    dst_addr: ip_repr.src_addr,
                    next_header: IpProtocol::Icmp,
                    payload_len: reply.buffer_len(),
                    hop_limit: 64,
                };
                let mut body = vec![0u8; out_ip.buffer_len() + reply.buffer_len()];
                let mut p = Ipv4Packet::new_unchecked(&mut body[..]);
                out_ip.emit(&mut p, &caps);
                reply.emit(&mut Icmpv4Packet::new_unchecked(p.payload_mut()), &caps);
                Some(frames::ethernet(
                    eth.src_addr(),
                    self.mac,
                    EthernetProtocol::Ipv4,
                    &body,
                ))
            }
            _ => None,
        }
    }
}

impl Pipeline for Internet {
    fn process(&mut self, _now: Instant, input: Input<'_>, out: &mut Vec<Output>) {
        self.counters.rx += 1;
        let Input::Frame { port, data } = input else {
            return self.counters.drop(DropReason::UnknownPort);
        };
        match self.answer(data) {
            Some(r) => {
                self.counters.tx += 1;
                out.push(Output::Frame { port, data: r });
            }
            None => self.counters.drop(DropReason::NoRoute),
        }
    }

    fn counters(&self) -> &Counters {
        &self.counters
    }
}
