//! Per-pipeline counters: packets in, packets out, drops by reason.

use std::collections::BTreeMap;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// Truncated or inconsistent headers.
    Malformed,
    /// A frame on a port the pipeline has no configuration for.
    UnknownPort,
    /// Source MAC not the port's.
    SpoofedMac,
    /// Source IP (or ARP sender) not the port's fixed IPs or allowed pairs.
    SpoofedIp,
    /// A DHCP server answer (UDP from port 67) sent by a VM.
    RogueDhcp,
    /// VXLAN with a VNI that has no network here.
    UnknownVni,
    /// VXLAN from a VTEP that is not a member of the network.
    UnknownVtep,
    /// A VLAN the port or trunk does not carry.
    UnknownVlan,
    /// Unicast to a MAC this element cannot place, where flooding is not allowed.
    UnknownUnicast,
    /// No route for the destination.
    NoRoute,
    /// IPv4 TTL reached zero.
    TtlExceeded,
    /// A packet this element does not handle (e.g. IP options, fragments to NAT).
    Unsupported,
    /// No free source port or id for SNAT.
    NatExhausted,
    /// Inbound on the external side with no connection or floating IP.
    NoNatBinding,
    /// A new connection no security-group rule of its direction allows.
    SgNoRule,
    /// A packet of no tracked connection that cannot open one (a stray TCP
    /// segment, an unasked echo reply, an ICMP error about nothing).
    SgInvalid,
    /// A new connection refused because the connection table is full.
    SgTableFull,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Counters {
    pub rx: u64,
    pub tx: u64,
    /// Source MACs not learned because the learning table was full (the frames
    /// were still forwarded).
    pub not_learned: u64,
    pub drops: BTreeMap<DropReason, u64>,
}

impl Counters {
    pub fn drop(&mut self, why: DropReason) {
        *self.drops.entry(why).or_default() += 1;
    }

    pub fn dropped(&self, why: DropReason) -> u64 {
        self.drops.get(&why).copied().unwrap_or(0)
    }
}
