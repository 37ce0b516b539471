//! Security-group filtering of VM interfaces, as Neutron's `openvswitch`
//! firewall driver does it: per interface, a packet that continues a
//! tracked connection (or is an ICMP error about one) passes; an invalid
//! one is dropped; a new one passes only if a rule of its direction allows
//! it, and is then tracked, so its answers pass whatever the rules of the
//! other direction say. Rules only allow; what no rule allows is dropped.
//!
//! A rule from a remote group names the group ([`Remote::Group`]); the
//! group's members' addresses are held once per node ([`Firewall::set_group`]),
//! shared by every interface whose rules name it, as Neutron's ipsets and
//! OVN's address sets are: a member joining or leaving changes one set, not
//! every filter. A set is consulted when a connection is new, so a member
//! removed keeps the connections it has (conntrack), as in Neutron.
//!
//! What every port needs whatever its groups say passes before the rules,
//! as in Neutron: ARP and other non-IP
//! frames are not this module's (anti-spoofing has them), DHCP and DHCPv6
//! requests out and answers in, IPv6 neighbour discovery and MLD, and router
//! solicitations out / advertisements in.
//!
//! Directions are the VM's: `Ingress` is traffic to the VM (the rule's
//! remote is the packet's source), `Egress` from it (the remote is the
//! destination). Time comes in as an argument.

use std::hash::Hash;
use std::net::IpAddr;

use rustc_hash::FxHashMap;

use serde::{Deserialize, Serialize};

use crate::conntrack::{ICMP, ICMPV6, Kind, Packet, State, Tracker, UDP};
use crate::{Counters, DropReason, Instant};

/// The VM's side of the traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Direction {
    /// To the VM.
    Ingress,
    /// From the VM.
    Egress,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ethertype {
    V4,
    V6,
}

/// Addresses a rule admits at the far end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Remote {
    Any,
    /// `remote_ip_prefix` (or any list of prefixes).
    Prefixes(Vec<(IpAddr, u8)>),
    /// `remote_group_id`: the members of this group, as the firewall holds
    /// them now ([`Firewall::set_group`]); none while it holds no set.
    Group(String),
}

/// A remote group's members' addresses, for lookup per new connection:
/// host addresses (fixed IPs, the bulk) sorted for a binary search, and the
/// few shorter prefixes (allowed address pairs with a CIDR) scanned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberSet {
    hosts: Vec<IpAddr>,
    nets: Vec<(IpAddr, u8)>,
}

impl MemberSet {
    pub fn new(addrs: &[(IpAddr, u8)]) -> Self {
        let mut s = MemberSet::default();
        for &(a, len) in addrs {
            let host = match a {
                IpAddr::V4(_) => len >= 32,
                IpAddr::V6(_) => len >= 128,
            };
            if host {
                s.hosts.push(a);
            } else {
                s.nets.push((a, len));
            }
        }
        s.hosts.sort_unstable();
        s.hosts.dedup();
        s
    }

    pub fn contains(&self, addr: IpAddr) -> bool {
        self.hosts.binary_search(&addr).is_ok() || self.nets.iter().any(|n| within(addr, *n))
    }

    pub fn len(&self) -> usize {
        self.hosts.len() + self.nets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The member sets a node holds, by group id.
type Groups = FxHashMap<String, MemberSet>;

/// One allow rule (Neutron's `security_group_rule`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub direction: Direction,
    pub ethertype: Ethertype,
    /// `None`: any protocol.
    pub protocol: Option<u8>,
    /// TCP/UDP/SCTP/…: the destination port range; ICMP: `min` is the type
    /// and `max` the code (each `None`: any).
    pub port_min: Option<u16>,
    pub port_max: Option<u16>,
    pub remote: Remote,
}

/// What an interface is filtered by.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PortFilter {
    pub rules: Vec<Rule>,
}

/// What to do with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Drop,
}

fn within(addr: IpAddr, (net, len): (IpAddr, u8)) -> bool {
    match (addr, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let len = u32::from(len.min(32));
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let len = u32::from(len.min(128));
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// The ICMP type and code of a packet (ICMP or ICMPv6), from its bytes.
fn icmp_type_code(ip: &[u8]) -> Option<(u8, u8)> {
    let off = match ip.first()? >> 4 {
        4 => usize::from(ip.first()? & 0x0f) * 4,
        6 => 40,
        _ => return None,
    };
    Some((*ip.get(off)?, *ip.get(off + 1)?))
}

impl Rule {
    fn allows(&self, dir: Direction, p: &Packet, ip: &[u8], groups: &Groups) -> bool {
        if self.direction != dir {
            return false;
        }
        let v6 = matches!(p.tuple.src, IpAddr::V6(_));
        if v6 != (self.ethertype == Ethertype::V6) {
            return false;
        }
        if let Some(proto) = self.protocol
            && proto != p.tuple.proto
        {
            return false;
        }
        match p.tuple.proto {
            ICMP | ICMPV6 if self.protocol.is_some() => {
                if self.port_min.is_some() || self.port_max.is_some() {
                    let Some((ty, code)) = icmp_type_code(ip) else {
                        return false;
                    };
                    if self.port_min.is_some_and(|t| u16::from(ty) != t)
                        || self.port_max.is_some_and(|c| u16::from(code) != c)
                    {
                        return false;
                    }
                }
            }
            _ => {
                let port = p.tuple.dport;
                if self.port_min.is_some_and(|lo| port < lo)
                    || self.port_max.is_some_and(|hi| port > hi)
                {
                    return false;
                }
            }
        }
        let far = match dir {
            Direction::Ingress => p.tuple.src,
            Direction::Egress => p.tuple.dst,
        };
        match &self.remote {
            Remote::Any => true,
            Remote::Prefixes(nets) => nets.iter().any(|n| within(far, *n)),
            Remote::Group(g) => groups.get(g).is_some_and(|s| s.contains(far)),
        }
    }
}

impl PortFilter {
    /// Whether a rule admits new packet `p` (bytes `ip`) going `dir`.
    fn allows(&self, dir: Direction, p: &Packet, ip: &[u8], groups: &Groups) -> bool {
        self.rules.iter().any(|r| r.allows(dir, p, ip, groups))
    }
}

/// What every port is allowed whatever its groups say (Neutron's base
/// flows): DHCP, DHCPv6, neighbour discovery, MLD, router discovery.
fn always(dir: Direction, p: &Packet, ip: &[u8]) -> bool {
    let t = &p.tuple;
    match (t.proto, dir) {
        (UDP, Direction::Egress) => {
            (t.sport, t.dport) == (68, 67) || (t.sport, t.dport) == (546, 547)
        }
        (UDP, Direction::Ingress) => {
            (t.sport, t.dport) == (67, 68) || (t.sport, t.dport) == (547, 546)
        }
        (ICMPV6, _) => icmp_type_code(ip).is_some_and(|(ty, _)| {
            // MLD (130–132, 143), NS/NA (135, 136); RS out, RA in.
            matches!(ty, 130..=132 | 143 | 135 | 136)
                || (ty == 133 && dir == Direction::Egress)
                || (ty == 134 && dir == Direction::Ingress)
        }),
        _ => false,
    }
}

/// A filtered port's verdict on an IP packet (see [`Firewall::check`]);
/// `allowed` says whether the port's rules admit a new packet.
fn verdict<P: Copy + Eq + Hash>(
    allowed: impl Fn(&Packet, &[u8]) -> bool,
    ct: &mut Tracker<P>,
    port: P,
    dir: Direction,
    ip: &[u8],
    now: Instant,
    counters: &mut Counters,
) -> Verdict {
    // Most packets belong to a live connection: read straight from the
    // bytes, they need no full parse.
    if ct.track_established(port, ip, now).is_some() {
        return Verdict::Pass;
    }
    let Some(p) = Packet::parse_ip(ip) else {
        counters.drop(DropReason::Malformed);
        return Verdict::Drop;
    };
    if always(dir, &p, ip) {
        return Verdict::Pass;
    }
    match ct.track(port, &p, now) {
        State::Established(_) | State::Related => Verdict::Pass,
        State::Invalid => {
            counters.drop(DropReason::SgInvalid);
            Verdict::Drop
        }
        State::New => {
            if !allowed(&p, ip) {
                counters.drop(DropReason::SgNoRule);
                return Verdict::Drop;
            }
            // ICMP errors are never New; an allowed new packet is tracked so
            // that its answers pass.
            if !matches!(p.kind, Kind::IcmpError(_)) && !ct.commit(port, &p, now) {
                counters.drop(DropReason::SgTableFull);
                return Verdict::Drop;
            }
            Verdict::Pass
        }
    }
}

/// The filters of one node's interfaces and their connections.
#[derive(Debug)]
pub struct Firewall<P> {
    ports: FxHashMap<P, PortFilter>,
    /// Remote groups' members, shared by every port's rules.
    groups: Groups,
    ct: Tracker<P>,
}

impl<P: Copy + Eq + Hash> Firewall<P> {
    /// At most `connections` tracked connections over all interfaces.
    pub fn new(connections: usize) -> Self {
        Firewall {
            ports: FxHashMap::default(),
            groups: Groups::default(),
            ct: Tracker::new(connections),
        }
    }

    /// Filters `port` with `f` from now on (connections it had stay: a
    /// removed rule stops new connections, not established ones, as with
    /// conntrack in Neutron).
    pub fn set(&mut self, port: P, f: PortFilter) {
        self.ports.insert(port, f);
    }

    /// `port` is no longer filtered (port security off, or the interface
    /// gone); its connections are forgotten.
    pub fn unset(&mut self, port: P) {
        self.ports.remove(&port);
        self.ct.forget_zone(port);
    }

    /// Group `group`'s members are `addrs` from now on, for every rule
    /// naming it. Only new connections are judged by it: a member removed
    /// keeps its established connections, as a removed rule does.
    pub fn set_group(&mut self, group: &str, addrs: &[(IpAddr, u8)]) {
        self.groups.insert(group.to_string(), MemberSet::new(addrs));
    }

    /// No set is held for `group` any more: its rules admit no one.
    pub fn unset_group(&mut self, group: &str) {
        self.groups.remove(group);
    }

    /// The member set held for `group` (introspection, tests).
    pub fn group(&self, group: &str) -> Option<&MemberSet> {
        self.groups.get(group)
    }

    pub fn filters(&self, port: P) -> bool {
        self.ports.contains_key(&port)
    }

    pub fn connections(&self) -> usize {
        self.ct.len()
    }

    /// The verdict on IP packet `ip` going `dir` at `port` (an unfiltered
    /// port passes everything). Drops are counted by reason.
    pub fn check(
        &mut self,
        port: P,
        dir: Direction,
        ip: &[u8],
        now: Instant,
        counters: &mut Counters,
    ) -> Verdict {
        match self.ports.get(&port) {
            Some(f) => {
                let allowed = |p: &Packet, ip: &[u8]| f.allows(dir, p, ip, &self.groups);
                verdict(allowed, &mut self.ct, port, dir, ip, now, counters)
            }
            None => Verdict::Pass,
        }
    }

    /// The verdict on Ethernet frame `frame` at `port`: IPv4 and IPv6 are
    /// filtered; other frames (ARP, …) are anti-spoofing's, not the
    /// filter's, and pass, as do frames of unfiltered ports.
    pub fn check_frame(
        &mut self,
        port: P,
        dir: Direction,
        frame: &[u8],
        now: Instant,
        counters: &mut Counters,
    ) -> Verdict {
        let Some(f) = self.ports.get(&port) else {
            return Verdict::Pass;
        };
        let Ok(eth) = smoltcp::wire::EthernetFrame::new_checked(frame) else {
            return Verdict::Pass;
        };
        match eth.ethertype() {
            smoltcp::wire::EthernetProtocol::Ipv4 | smoltcp::wire::EthernetProtocol::Ipv6 => {
                let allowed = |p: &Packet, ip: &[u8]| f.allows(dir, p, ip, &self.groups);
                verdict(
                    allowed,
                    &mut self.ct,
                    port,
                    dir,
                    eth.payload(),
                    now,
                    counters,
                )
            }
            _ => Verdict::Pass,
        }
    }

    /// Forgets idle connections; returns when the next one idles out.
    pub fn expire(&mut self, now: Instant) -> Option<Instant> {
        self.ct.expire(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conntrack::{TCP, test_ipv4 as ipv4};
    use std::net::Ipv4Addr;

    fn tcp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, flags: u8) -> Vec<u8> {
        let mut t = Vec::new();
        t.extend(sport.to_be_bytes());
        t.extend(dport.to_be_bytes());
        t.extend([0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
        ipv4(src, dst, TCP, &t)
    }

    const SYN: u8 = 0x02;
    const SYNACK: u8 = 0x12;
    const ACK: u8 = 0x10;
    const FIN: u8 = 0x11;

    fn ping(src: [u8; 4], dst: [u8; 4], request: bool) -> Vec<u8> {
        ipv4(
            src,
            dst,
            ICMP,
            &[if request { 8 } else { 0 }, 0, 0, 0, 0, 7, 0, 1],
        )
    }

    const VM: [u8; 4] = [10, 0, 0, 5];
    const PEER: [u8; 4] = [10, 0, 0, 6];
    const FAR: [u8; 4] = [192, 0, 2, 9];

    fn rule(
        direction: Direction,
        protocol: Option<u8>,
        ports: Option<(u16, u16)>,
        remote: Remote,
    ) -> Rule {
        Rule {
            direction,
            ethertype: Ethertype::V4,
            protocol,
            port_min: ports.map(|p| p.0),
            port_max: ports.map(|p| p.1),
            remote,
        }
    }

    /// Neutron's default group for a VM whose group has members at `peers`:
    /// ingress from the group, all egress.
    fn default_group(peers: Vec<(IpAddr, u8)>) -> PortFilter {
        PortFilter {
            rules: vec![
                rule(Direction::Ingress, None, None, Remote::Prefixes(peers)),
                rule(Direction::Egress, None, None, Remote::Any),
            ],
        }
    }

    fn t(s: i64) -> Instant {
        Instant::from_secs(s)
    }

    fn peer_net() -> Vec<(IpAddr, u8)> {
        vec![(IpAddr::V4(Ipv4Addr::from(PEER)), 32)]
    }

    #[test]
    fn the_default_group_admits_members_and_answers_only() {
        let mut fw: Firewall<u32> = Firewall::new(64);
        let mut c = Counters::default();
        fw.set(1, default_group(peer_net()));
        use Direction::*;
        // A member pings the VM: allowed by the ingress rule.
        assert_eq!(
            fw.check(1, Ingress, &ping(PEER, VM, true), t(1), &mut c),
            Verdict::Pass
        );
        assert_eq!(
            fw.check(1, Egress, &ping(VM, PEER, false), t(1), &mut c),
            Verdict::Pass
        );
        // Someone else cannot; an SSH attempt from afar neither.
        assert_eq!(
            fw.check(1, Ingress, &ping(FAR, VM, true), t(1), &mut c),
            Verdict::Drop
        );
        assert_eq!(
            fw.check(1, Ingress, &tcp(FAR, 5000, VM, 22, SYN), t(1), &mut c),
            Verdict::Drop
        );
        assert_eq!(c.dropped(DropReason::SgNoRule), 2);
        // The VM's own connection out is answered from afar.
        assert_eq!(
            fw.check(1, Egress, &tcp(VM, 40000, FAR, 443, SYN), t(2), &mut c),
            Verdict::Pass
        );
        assert_eq!(
            fw.check(1, Ingress, &tcp(FAR, 443, VM, 40000, SYNACK), t(2), &mut c),
            Verdict::Pass
        );
        // A FIN of no connection is invalid, not merely unmatched.
        assert_eq!(
            fw.check(1, Ingress, &tcp(FAR, 443, VM, 40001, FIN), t(2), &mut c),
            Verdict::Drop
        );
        assert_eq!(c.dropped(DropReason::SgInvalid), 1);
        // Unfiltered ports pass everything.
        assert_eq!(
            fw.check(2, Ingress, &ping(FAR, VM, true), t(2), &mut c),
            Verdict::Pass
        );
    }

    #[test]
    fn a_port_rule_from_a_prefix_and_a_removed_rule_keep_established_connections() {
        let mut fw: Firewall<u32> = Firewall::new(64);
        let mut c = Counters::default();
        use Direction::*;
        let ssh = rule(
            Ingress,
            Some(TCP),
            Some((22, 22)),
            Remote::Prefixes(vec![(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 0)), 24)]),
        );
        fw.set(1, PortFilter { rules: vec![ssh] });
        assert_eq!(
            fw.check(1, Ingress, &tcp(FAR, 5000, VM, 22, SYN), t(1), &mut c),
            Verdict::Pass
        );
        assert_eq!(
            fw.check(1, Egress, &tcp(VM, 22, FAR, 5000, SYNACK), t(1), &mut c),
            Verdict::Pass
        );
        assert_eq!(
            fw.check(1, Ingress, &tcp(FAR, 5001, VM, 23, SYN), t(1), &mut c),
            Verdict::Drop
        );
        assert_eq!(
            fw.check(1, Ingress, &tcp(PEER, 5002, VM, 22, SYN), t(1), &mut c),
            Verdict::Drop
        );
        // The rule goes: the established session goes on, a new one is refused.
        fw.set(1, PortFilter::default());
        assert_eq!(
            fw.check(1, Ingress, &tcp(FAR, 5000, VM, 22, ACK), t(2), &mut c),
            Verdict::Pass
        );
        assert_eq!(
            fw.check(1, Ingress, &tcp(FAR, 5003, VM, 22, SYN), t(2), &mut c),
            Verdict::Drop
        );
        // No egress rule at all: the VM cannot open anything.
        assert_eq!(
            fw.check(1, Egress, &ping(VM, FAR, true), t(2), &mut c),
            Verdict::Drop
        );
        // Port security off: the port is no longer filtered, its state goes.
        fw.unset(1);
        assert_eq!(fw.connections(), 0);
        assert!(!fw.filters(1));
    }

    #[test]
    fn icmp_rules_match_type_and_code_and_errors_relate() {
        let mut fw: Firewall<u32> = Firewall::new(64);
        let mut c = Counters::default();
        use Direction::*;
        let echo_only = rule(Ingress, Some(ICMP), Some((8, 0)), Remote::Any);
        fw.set(
            1,
            PortFilter {
                rules: vec![echo_only, rule(Egress, Some(UDP), None, Remote::Any)],
            },
        );
        assert_eq!(
            fw.check(1, Ingress, &ping(FAR, VM, true), t(1), &mut c),
            Verdict::Pass
        );
        // Timestamp request (type 13): not echo.
        let ts = ipv4(FAR, VM, ICMP, &[13, 0, 0, 0, 0, 7, 0, 1]);
        assert_eq!(fw.check(1, Ingress, &ts, t(1), &mut c), Verdict::Drop);
        // The VM's UDP query out; the port unreachable that answers it is related.
        let mut udp = Vec::new();
        udp.extend(5353u16.to_be_bytes());
        udp.extend(53u16.to_be_bytes());
        udp.extend([0, 8, 0, 0]);
        let out = ipv4(VM, FAR, UDP, &udp);
        assert_eq!(fw.check(1, Egress, &out, t(1), &mut c), Verdict::Pass);
        let mut err = vec![3, 3, 0, 0, 0, 0, 0, 0];
        err.extend(&out);
        assert_eq!(
            fw.check(1, Ingress, &ipv4(FAR, VM, ICMP, &err), t(1), &mut c),
            Verdict::Pass
        );
        // An error about nothing the VM sent is invalid.
        let mut stray = vec![3, 3, 0, 0, 0, 0, 0, 0];
        stray.extend(&ipv4(VM, PEER, UDP, &udp));
        assert_eq!(
            fw.check(1, Ingress, &ipv4(FAR, VM, ICMP, &stray), t(1), &mut c),
            Verdict::Drop
        );
        // DHCP passes whatever the rules say; garbage is dropped as such.
        let mut dhcp = Vec::new();
        dhcp.extend(67u16.to_be_bytes());
        dhcp.extend(68u16.to_be_bytes());
        dhcp.extend([0, 8, 0, 0]);
        assert_eq!(
            fw.check(
                1,
                Ingress,
                &ipv4([10, 0, 0, 2], VM, UDP, &dhcp),
                t(1),
                &mut c
            ),
            Verdict::Pass
        );
        assert_eq!(
            fw.check(1, Ingress, &[0x45, 0, 0], t(1), &mut c),
            Verdict::Drop
        );
        assert_eq!(c.dropped(DropReason::Malformed), 1);
    }

    /// A rule from a remote group admits the group's members as the
    /// firewall holds them now: a member, not a stranger; the stranger once
    /// it joins; after it leaves, no new connection, while the one it has
    /// goes on (conntrack, as in Neutron).
    #[test]
    fn a_remote_group_rule_follows_the_member_set() {
        let mut fw: Firewall<u32> = Firewall::new(64);
        let mut c = Counters::default();
        use Direction::*;
        let v4 = |a: [u8; 4]| (IpAddr::V4(Ipv4Addr::from(a)), 32);
        let ssh_from_group = rule(
            Ingress,
            Some(TCP),
            Some((22, 22)),
            Remote::Group("g".into()),
        );
        fw.set(
            1,
            PortFilter {
                rules: vec![ssh_from_group],
            },
        );
        // No set held yet: the group has no members.
        assert_eq!(
            fw.check(1, Ingress, &tcp(PEER, 5000, VM, 22, SYN), t(1), &mut c),
            Verdict::Drop
        );
        fw.set_group("g", &[v4(PEER)]);
        assert_eq!(
            fw.check(1, Ingress, &tcp(PEER, 5001, VM, 22, SYN), t(1), &mut c),
            Verdict::Pass,
            "a member"
        );
        assert_eq!(
            fw.check(1, Ingress, &tcp(FAR, 5000, VM, 22, SYN), t(1), &mut c),
            Verdict::Drop,
            "not a member"
        );
        // FAR joins: admitted; its session is established.
        fw.set_group("g", &[v4(FAR), v4(PEER)]);
        assert_eq!(
            fw.check(1, Ingress, &tcp(FAR, 5002, VM, 22, SYN), t(2), &mut c),
            Verdict::Pass
        );
        assert_eq!(
            fw.check(1, Egress, &tcp(VM, 22, FAR, 5002, SYNACK), t(2), &mut c),
            Verdict::Pass
        );
        // FAR leaves: its session goes on, a new one is refused.
        fw.set_group("g", &[v4(PEER)]);
        assert_eq!(
            fw.check(1, Ingress, &tcp(FAR, 5002, VM, 22, ACK), t(3), &mut c),
            Verdict::Pass,
            "established"
        );
        assert_eq!(
            fw.check(1, Ingress, &tcp(FAR, 5003, VM, 22, SYN), t(3), &mut c),
            Verdict::Drop
        );
        // The set dropped altogether: no member is admitted any more.
        fw.unset_group("g");
        assert_eq!(
            fw.check(1, Ingress, &tcp(PEER, 5004, VM, 22, SYN), t(3), &mut c),
            Verdict::Drop
        );
        assert_eq!(c.dropped(DropReason::SgNoRule), 4);
    }

    #[test]
    fn member_sets_hold_hosts_and_prefixes_of_both_families() {
        let v4 = |a, b, c, d| IpAddr::V4(Ipv4Addr::new(a, b, c, d));
        let v6 = |s: &str| s.parse::<IpAddr>().expect("v6");
        let s = MemberSet::new(&[
            (v4(10, 0, 0, 9), 32),
            (v4(10, 0, 0, 2), 32),
            (v4(10, 0, 0, 2), 32),
            (v4(172, 16, 0, 0), 12),
            (v6("fd00::5"), 128),
            (v6("fd01::"), 64),
        ]);
        assert_eq!(s.len(), 5, "the duplicate host counted once");
        for a in [v4(10, 0, 0, 2), v4(10, 0, 0, 9), v4(172, 20, 1, 1)] {
            assert!(s.contains(a), "{a}");
        }
        for a in [v4(10, 0, 0, 3), v4(192, 0, 2, 1), v6("fd00::6")] {
            assert!(!s.contains(a), "{a}");
        }
        assert!(s.contains(v6("fd00::5")) && s.contains(v6("fd01::7")));
        assert!(MemberSet::new(&[]).is_empty());
    }

    #[test]
    fn prefixes_match_by_length_and_family() {
        let v4 = |a, b, c, d| IpAddr::V4(Ipv4Addr::new(a, b, c, d));
        assert!(within(v4(10, 1, 2, 3), (v4(10, 0, 0, 0), 8)));
        assert!(!within(v4(11, 1, 2, 3), (v4(10, 0, 0, 0), 8)));
        assert!(within(v4(1, 2, 3, 4), (v4(0, 0, 0, 0), 0)));
        assert!(!within(v4(1, 2, 3, 4), ("::".parse().expect("v6"), 0)));
        assert!(within(
            "fd00::5".parse().expect("v6"),
            ("fd00::".parse().expect("v6"), 64)
        ));
    }
}
