//! The internet node: the upstream router on the gateway's external link
//! (203.0.113.1 in the reference lab) with hosts behind it (198.51.100.0/24).
//! It answers ARP for its own address and ping for itself and its hosts, and
//! remembers the source addresses it saw, so tests can check SNAT. It can
//! also ping from one of its hosts toward an address on the external link (a
//! floating IP), resolving it by ARP as the upstream router would.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;

use smoltcp::time::Duration;
use switchyard_dataplane::PortNo;

use crate::guest::PingStream;

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
    /// The port of the external link.
    pub port: PortNo,
    /// A ping stream from one of the hosts (`from`) toward the external link.
    probe: Option<(Ipv4Addr, PingStream)>,
    arp: HashMap<Ipv4Addr, Mac>,
    arp_sent: Option<Instant>,
    counters: Counters,
}

/// The ICMP echo identifier of the internet node's probes.
const PROBE_IDENT: u16 = 0x5359;

impl Internet {
    pub fn new(mac: Mac, ip: Ipv4Addr, hosts: (Ipv4Addr, u8)) -> Self {
        Internet {
            mac,
            ip,
            hosts,
            seen_sources: BTreeSet::new(),
            port: 1,
            probe: None,
            arp: HashMap::new(),
            arp_sent: None,
            counters: Counters::default(),
        }
    }

    /// Starts pinging `target` from host `from` (one of `hosts`), `count`
    /// requests `interval` apart.
    pub fn start_ping(
        &mut self,
        from: Ipv4Addr,
        target: Ipv4Addr,
        interval: Duration,
        count: u16,
        now: Instant,
    ) {
        self.probe = Some((
            from,
            PingStream {
                target,
                interval,
                next_at: now,
                next_seq: 0,
                log: BTreeMap::new(),
                duplicates: 0,
                count: Some(count),
            },
        ));
    }

    pub fn stop_ping(&mut self) -> Option<PingStream> {
        self.probe.take().map(|(_, p)| p)
    }

    pub fn ping(&self) -> Option<&PingStream> {
        self.probe.as_ref().map(|(_, p)| p)
    }

    fn echo_request(&self, from: Ipv4Addr, target: Ipv4Addr, dst: Mac, seq: u16) -> Vec<u8> {
        let caps = ChecksumCapabilities::default();
        let req = Icmpv4Repr::EchoRequest {
            ident: PROBE_IDENT,
            seq_no: seq,
            data: b"switchyard-internet",
        };
        let ip = Ipv4Repr {
            src_addr: from,
            dst_addr: target,
            next_header: IpProtocol::Icmp,
            payload_len: req.buffer_len(),
            hop_limit: 64,
        };
        let mut body = vec![0u8; ip.buffer_len() + req.buffer_len()];
        let mut p = Ipv4Packet::new_unchecked(&mut body[..]);
        ip.emit(&mut p, &caps);
        req.emit(&mut Icmpv4Packet::new_unchecked(p.payload_mut()), &caps);
        frames::ethernet(dst, self.mac, EthernetProtocol::Ipv4, &body)
    }

    /// Learns ARP replies and records echo replies to the probe.
    fn observe(&mut self, now: Instant, frame: &[u8]) {
        let Ok(eth) = EthernetFrame::new_checked(frame) else {
            return;
        };
        match eth.ethertype() {
            EthernetProtocol::Arp => {
                if let Ok(ArpRepr::EthernetIpv4 {
                    operation: ArpOperation::Reply,
                    source_hardware_addr,
                    source_protocol_addr,
                    ..
                }) = ArpPacket::new_checked(eth.payload()).and_then(|p| ArpRepr::parse(&p))
                {
                    self.arp.insert(source_protocol_addr, source_hardware_addr);
                }
            }
            EthernetProtocol::Ipv4 if eth.dst_addr() == self.mac => {
                let caps = ChecksumCapabilities::default();
                let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else {
                    return;
                };
                let Ok(icmp) = Icmpv4Packet::new_checked(ip.payload())
                    .and_then(|p| Icmpv4Repr::parse(&p, &caps))
                else {
                    return;
                };
                if let (
                    Icmpv4Repr::EchoReply {
                        ident: PROBE_IDENT,
                        seq_no,
                        ..
                    },
                    Some((from, p)),
                ) = (icmp, self.probe.as_mut())
                    && ip.dst_addr() == *from
                    && ip.src_addr() == p.target
                    && let Some(e) = p.log.get_mut(&seq_no)
                {
                    if e.1.is_some() {
                        p.duplicates += 1;
                    } else {
                        e.1 = Some(now);
                    }
                }
            }
            _ => {}
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
        self.observe(_now, data);
        match self.answer(data) {
            Some(r) => {
                self.counters.tx += 1;
                out.push(Output::Frame { port, data: r });
            }
            None => self.counters.drop(DropReason::NoRoute),
        }
    }

    fn poll(&mut self, now: Instant, out: &mut Vec<Output>) -> Option<Instant> {
        let (from, target, due) = match &self.probe {
            Some((from, p)) => (
                *from,
                p.target,
                p.next_at <= now && p.count.is_none_or(|c| p.log.len() < usize::from(c)),
            ),
            None => return None,
        };
        if !due {
            return None;
        }
        let Some(mac) = self.arp.get(&target).copied() else {
            // Resolve first (again every 100 ms); requests wait meanwhile.
            if self
                .arp_sent
                .is_none_or(|t| now - t >= Duration::from_millis(100))
            {
                self.arp_sent = Some(now);
                let req = frames::arp(
                    ArpOperation::Request,
                    frames::BROADCAST,
                    self.mac,
                    self.ip,
                    smoltcp::wire::EthernetAddress([0; 6]),
                    target,
                );
                self.counters.tx += 1;
                out.push(Output::Frame {
                    port: self.port,
                    data: req,
                });
            }
            return None;
        };
        let seq = self.probe.as_ref().map_or(0, |(_, p)| p.next_seq);
        let frame = self.echo_request(from, target, mac, seq);
        if let Some((_, p)) = self.probe.as_mut() {
            p.log.insert(seq, (now, None));
            p.next_seq = p.next_seq.wrapping_add(1);
            p.next_at += p.interval;
        }
        self.counters.tx += 1;
        out.push(Output::Frame {
            port: self.port,
            data: frame,
        });
        None
    }

    fn counters(&self) -> &Counters {
        &self.counters
    }
}
