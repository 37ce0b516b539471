//! Connection tracking for the pipelines: what connection a packet belongs
//! to, in which direction, and in what state — `New`, `Established`,
//! `Related` (an ICMP error about a tracked connection) or `Invalid` (a TCP
//! segment that neither opens nor continues a connection, an echo reply no
//! request asked for) — with TCP's progress and idle timeouts. As Linux's
//! conntrack does by default (`nf_conntrack_tcp_loose`), a TCP segment
//! with ACK and no SYN, FIN or RST that belongs to no known connection is `New`
//! too: a connection seen mid-stream — its VM was live-migrated here, or
//! the node restarted — is picked up as established if the rules admit it,
//! not cut. Stateful
//! packet filters ask it, as Linux's conntrack is asked by `ct_state`
//! matches and OVS's `ct()` action. Source NAT is an extension of the same
//! entries ([`snat`]): the gateway's SNAT is a tracker too.
//!
//! Connections live in zones (a VM interface, say), so the same addresses
//! seen by two interfaces are two connections. Nothing is created by a
//! lookup: the filter decides whether a `New` packet may pass and then
//! [`Tracker::commit`]s it, as `ct(commit)` does. The table is bounded; when
//! full, a new connection is refused (the caller drops and counts it).
//!
//! Time comes in as an argument; frames are read with checked views
//! ([`Packet::parse_ip`]), so a truncated header is "not a packet", never a
//! panic.

use std::hash::Hash;
use std::net::IpAddr;

use rustc_hash::FxHashMap;

use smoltcp::wire::{Icmpv4Message, Icmpv4Packet, Ipv4Packet, TcpPacket, UdpPacket};

use crate::{Duration, Instant};

mod snat;
pub use snat::{SnatEntry, SnatTo};

/// How often a full table looks for idle connections to drop.
pub const SWEEP_EVERY: Duration = Duration::from_secs(1);

pub const ICMP: u8 = 1;
pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const ICMPV6: u8 = 58;

/// How long an idle connection is remembered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub icmp: Duration,
    /// UDP and every protocol without its own.
    pub udp: Duration,
    /// A TCP connection the other side has not answered yet (SYN sent).
    pub tcp_syn: Duration,
    pub tcp_established: Duration,
    /// After a FIN or RST from either side.
    pub tcp_closing: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            icmp: Duration::from_secs(30),
            udp: Duration::from_secs(120),
            tcp_syn: Duration::from_secs(60),
            tcp_established: Duration::from_secs(2 * 3600),
            tcp_closing: Duration::from_secs(30),
        }
    }
}

impl Timeouts {
    /// The idle timeout of a connection of `proto` in TCP state `tcp`.
    pub fn of(&self, proto: u8, tcp: TcpState) -> Duration {
        match (proto, tcp) {
            (ICMP | ICMPV6, _) => self.icmp,
            (TCP, TcpState::Syn) => self.tcp_syn,
            (TCP, TcpState::Established) => self.tcp_established,
            (TCP, TcpState::Closing) => self.tcp_closing,
            _ => self.udp,
        }
    }
}

/// How far a TCP connection got (other protocols stay `Syn` until answered,
/// then `Established`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpState {
    Syn,
    Established,
    Closing,
}

/// The TCP flags that move a connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpFlags {
    pub syn: bool,
    pub ack: bool,
    pub fin: bool,
    pub rst: bool,
}

impl TcpFlags {
    /// A TCP segment's flags.
    pub fn of(p: &TcpPacket<&[u8]>) -> Self {
        TcpFlags {
            syn: p.syn(),
            ack: p.ack(),
            fin: p.fin(),
            rst: p.rst(),
        }
    }
}

impl TcpState {
    /// The state after a segment in `dir`.
    pub fn next(self, dir: Dir, f: TcpFlags) -> TcpState {
        match self {
            _ if f.fin || f.rst => TcpState::Closing,
            TcpState::Syn if dir == Dir::Reply => TcpState::Established,
            s => s,
        }
    }
}

/// Which way a packet goes on its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// As the packet that opened it.
    Original,
    Reply,
}

/// Addresses and ports of a packet (ICMP echoes: the identifier as the
/// requester's "port", 0 as the other's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuple {
    pub proto: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
}

/// Hashed as a few machine words (an IPv4 tuple is two), not field by
/// field: every packet of a filtered port looks its connection up, and the
/// derived hash fed the hasher ten times for an IPv4 tuple.
impl Hash for Tuple {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        let bits = |a: IpAddr| match a {
            IpAddr::V4(v) => u128::from(u32::from(v)),
            IpAddr::V6(v) => u128::from(v) ^ (1 << 127),
        };
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                h.write_u64((u64::from(u32::from(s)) << 32) | u64::from(u32::from(d)));
            }
            (s, d) => {
                h.write_u128(bits(s));
                h.write_u128(bits(d));
            }
        }
        h.write_u64(
            (u64::from(self.sport) << 32) | (u64::from(self.dport) << 16) | u64::from(self.proto),
        );
    }
}

impl Tuple {
    /// The tuple of an answer to this packet.
    pub fn reply(&self) -> Tuple {
        Tuple {
            proto: self.proto,
            src: self.dst,
            dst: self.src,
            sport: self.dport,
            dport: self.sport,
        }
    }
}

/// What kind of packet, as far as tracking goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Tcp(TcpFlags),
    EchoRequest,
    EchoReply,
    /// An ICMP error quoting the packet that caused it (its tuple as that
    /// packet had it).
    IcmpError(Tuple),
    /// UDP, other ICMP messages, other protocols, later fragments.
    Other,
}

/// A packet's tracking facts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    pub tuple: Tuple,
    pub kind: Kind,
}

impl Packet {
    /// An IPv4 or IPv6 packet's facts (`None`: not a whole IP header).
    /// Headers beyond the IP header that are cut short leave the ports 0
    /// and the kind `Other`.
    pub fn parse_ip(ip: &[u8]) -> Option<Packet> {
        match ip.first()? >> 4 {
            4 => parse_v4(ip),
            6 => parse_v6(ip),
            _ => None,
        }
    }
}

fn l4(proto: u8, src: IpAddr, dst: IpAddr, payload: &[u8], first: bool) -> Packet {
    let mut t = Tuple {
        proto,
        src,
        dst,
        sport: 0,
        dport: 0,
    };
    let mut kind = Kind::Other;
    if first {
        match proto {
            TCP => {
                if let Ok(p) = TcpPacket::new_checked(payload) {
                    t.sport = p.src_port();
                    t.dport = p.dst_port();
                    kind = Kind::Tcp(TcpFlags::of(&p));
                } else if let Some((s, d)) = ports(payload) {
                    // Quoted in an ICMP error: 8 bytes, the ports in them.
                    (t.sport, t.dport) = (s, d);
                }
            }
            UDP => {
                if let Ok(p) = UdpPacket::new_checked(payload) {
                    t.sport = p.src_port();
                    t.dport = p.dst_port();
                } else if let Some((s, d)) = ports(payload) {
                    (t.sport, t.dport) = (s, d);
                }
            }
            ICMP => {
                if let Ok(p) = Icmpv4Packet::new_checked(payload) {
                    match p.msg_type() {
                        Icmpv4Message::EchoRequest => {
                            t.sport = p.echo_ident();
                            kind = Kind::EchoRequest;
                        }
                        Icmpv4Message::EchoReply => {
                            t.dport = p.echo_ident();
                            kind = Kind::EchoReply;
                        }
                        Icmpv4Message::DstUnreachable
                        | Icmpv4Message::TimeExceeded
                        | Icmpv4Message::ParamProblem => {
                            if let Some(inner) = parse_v4(p.data()) {
                                kind = Kind::IcmpError(inner.tuple);
                            }
                        }
                        _ => {}
                    }
                }
            }
            // ICMPv6 (RFC 4443): type, code, checksum, then the echo
            // identifier or, in an error, 4 bytes and the quoted packet.
            ICMPV6 => {
                let ident = payload.get(4..6).map(|b| u16::from_be_bytes([b[0], b[1]]));
                match (payload.first(), ident) {
                    (Some(128), Some(id)) => {
                        t.sport = id;
                        kind = Kind::EchoRequest;
                    }
                    (Some(129), Some(id)) => {
                        t.dport = id;
                        kind = Kind::EchoReply;
                    }
                    (Some(1..=4), _) => {
                        if let Some(inner) = payload.get(8..).and_then(parse_v6) {
                            kind = Kind::IcmpError(inner.tuple);
                        }
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    Packet { tuple: t, kind }
}

/// The two ports every port-numbered transport starts with.
fn ports(l4: &[u8]) -> Option<(u16, u16)> {
    let b = l4.get(..4)?;
    Some((
        u16::from_be_bytes([b[0], b[1]]),
        u16::from_be_bytes([b[2], b[3]]),
    ))
}

/// An IPv4 packet; an ICMP error's quoted header may be cut after 8 bytes
/// of its payload, so the header's length is trusted over the buffer's.
fn parse_v4(ip: &[u8]) -> Option<Packet> {
    let p = Ipv4Packet::new_checked(ip).ok().or_else(|| quoted_v4(ip))?;
    let hl = usize::from(p.header_len());
    let payload = ip.get(hl..)?;
    let first = p.frag_offset() == 0;
    Some(l4(
        u8::from(p.next_header()),
        IpAddr::V4(p.src_addr()),
        IpAddr::V4(p.dst_addr()),
        payload,
        first,
    ))
}

/// An IPv4 TCP or UDP packet's tuple and TCP flags read straight from its
/// bytes, for the common case only: a 20-byte header, the whole packet
/// there, not a later fragment, a whole TCP or UDP header (else `None`).
fn quick_v4(ip: &[u8]) -> Option<(Tuple, TcpFlags)> {
    if ip.len() < 20 || ip[0] != 0x45 {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    if total < 20 || total > ip.len() || u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff != 0 {
        return None;
    }
    let l4 = &ip[20..total];
    let proto = ip[9];
    let flags = match proto {
        TCP => {
            let off = usize::from(*l4.get(12)? >> 4) * 4;
            if off < 20 || off > l4.len() {
                return None;
            }
            let f = l4[13];
            TcpFlags {
                fin: f & 0x01 != 0,
                syn: f & 0x02 != 0,
                rst: f & 0x04 != 0,
                ack: f & 0x10 != 0,
            }
        }
        UDP if l4.len() >= 8 => TcpFlags::default(),
        _ => return None,
    };
    let v4 = |o: usize| {
        IpAddr::V4(std::net::Ipv4Addr::new(
            ip[o],
            ip[o + 1],
            ip[o + 2],
            ip[o + 3],
        ))
    };
    Some((
        Tuple {
            proto,
            src: v4(12),
            dst: v4(16),
            sport: u16::from_be_bytes([l4[0], l4[1]]),
            dport: u16::from_be_bytes([l4[2], l4[3]]),
        },
        flags,
    ))
}

/// A quoted IPv4 header whose total length is longer than what was quoted.
fn quoted_v4(ip: &[u8]) -> Option<Ipv4Packet<&[u8]>> {
    let p = Ipv4Packet::new_unchecked(ip);
    let hl = usize::from(*ip.first()? & 0x0f) * 4;
    (ip.len() >= 20 && hl >= 20 && ip.len() >= hl && p.version() == 4).then_some(p)
}

/// An IPv6 packet (the fixed header, RFC 8200; a payload cut short, as
/// quoted in an ICMPv6 error, is taken as far as it goes). Extension headers
/// are not walked: such a packet is tracked by its next-header number alone.
fn parse_v6(ip: &[u8]) -> Option<Packet> {
    let h = ip.get(..40)?;
    if h[0] >> 4 != 6 {
        return None;
    }
    let addr = |r: std::ops::Range<usize>| -> Option<IpAddr> {
        let b: [u8; 16] = h.get(r)?.try_into().ok()?;
        Some(IpAddr::V6(std::net::Ipv6Addr::from(b)))
    };
    Some(l4(h[6], addr(8..24)?, addr(24..40)?, &ip[40..], true))
}

/// What tracking says of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Opens a connection (not remembered until committed).
    New,
    Established(Dir),
    /// An ICMP error about a tracked connection.
    Related,
    Invalid,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    tcp: TcpState,
    expires: Instant,
    /// Source NAT of the original direction, if any.
    snat: Option<SnatTo>,
}

impl Entry {
    /// Moves the connection on by a packet of `proto` in `dir` and restarts
    /// its idle time: TCP by its flags, anything else becomes established
    /// once answered.
    fn advance(&mut self, proto: u8, dir: Dir, flags: TcpFlags, now: Instant, t: &Timeouts) {
        self.tcp = if proto == TCP {
            self.tcp.next(dir, flags)
        } else if dir == Dir::Reply {
            TcpState::Established
        } else {
            self.tcp
        };
        self.expires = now + t.of(proto, self.tcp);
    }
}

/// The connections of every zone. Keys are hashed with FxHash: tuples come
/// from packets, but an attacker choosing them gains nothing beyond the
/// bounded table (the limit, not the hash, keeps it small).
#[derive(Debug)]
pub struct Tracker<Z> {
    conns: FxHashMap<(Z, Tuple), Entry>,
    limit: usize,
    pub timeouts: Timeouts,
    /// Translated ports held by SNAT'd connections (empty when none are).
    ports: snat::Ports<Z>,
    /// When a full table last swept out its idle connections.
    swept: Option<Instant>,
}

impl<Z: Copy + Eq + Hash> Tracker<Z> {
    /// At most `limit` connections at a time.
    pub fn new(limit: usize) -> Self {
        Tracker {
            conns: FxHashMap::default(),
            limit,
            timeouts: Timeouts::default(),
            ports: snat::Ports::default(),
            swept: None,
        }
    }

    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// The live connection a tuple names, in its original direction or as
    /// its reply.
    fn find(&self, zone: Z, t: &Tuple, now: Instant) -> Option<(Tuple, Dir)> {
        let live = |k: &Tuple| self.conns.get(&(zone, *k)).is_some_and(|e| e.expires > now);
        if live(t) {
            Some((*t, Dir::Original))
        } else {
            let r = t.reply();
            live(&r).then_some((r, Dir::Reply))
        }
    }

    /// The packet's state in `zone`, refreshing (and, for TCP, advancing)
    /// the connection it belongs to.
    pub fn track(&mut self, zone: Z, p: &Packet, now: Instant) -> State {
        if let Kind::IcmpError(inner) = p.kind {
            return if self.find(zone, &inner, now).is_some() {
                State::Related
            } else {
                State::Invalid
            };
        }
        let flags = match p.kind {
            Kind::Tcp(f) => f,
            _ => TcpFlags::default(),
        };
        if let Some(dir) = self.refresh(zone, p.tuple, flags, now) {
            return State::Established(dir);
        }
        match p.kind {
            Kind::Tcp(f) if f.syn && !f.ack && !f.rst && !f.fin => State::New,
            // Picked up mid-stream (see the module doc).
            Kind::Tcp(f) if f.ack && !f.syn && !f.rst && !f.fin => State::New,
            Kind::Tcp(_) | Kind::EchoReply => State::Invalid,
            _ => State::New,
        }
    }

    /// The established path without building a [`Packet`]: an IPv4 TCP or
    /// UDP packet (no options, not a later fragment) of a live connection in
    /// `zone` is tracked as [`Tracker::track`] would and its direction
    /// returned; anything else is `None`, and the caller takes `track`.
    pub fn track_established(&mut self, zone: Z, ip: &[u8], now: Instant) -> Option<Dir> {
        let (t, flags) = quick_v4(ip)?;
        self.refresh(zone, t, flags, now)
    }

    /// The live connection of tuple `t` (either direction) moved on by a
    /// packet with `flags` and its idle time restarted; its direction.
    /// One lookup per direction at most, the entry updated in place.
    fn refresh(&mut self, zone: Z, t: Tuple, flags: TcpFlags, now: Instant) -> Option<Dir> {
        let timeouts = self.timeouts;
        for (key, dir) in [(t, Dir::Original), (t.reply(), Dir::Reply)] {
            if let Some(e) = self.conns.get_mut(&(zone, key))
                && e.expires > now
            {
                e.advance(key.proto, dir, flags, now, &timeouts);
                return Some(dir);
            }
        }
        None
    }

    /// Remembers the connection a `New` packet opens (`false`: the table is
    /// full, the packet must not pass).
    pub fn commit(&mut self, zone: Z, p: &Packet, now: Instant) -> bool {
        let key = (zone, p.tuple);
        if self.conns.contains_key(&key) {
            return true;
        }
        if !self.room(now) {
            return false;
        }
        // A connection picked up mid-stream has no handshake left to wait for.
        let tcp = match p.kind {
            Kind::Tcp(f) if !f.syn => TcpState::Established,
            _ => TcpState::Syn,
        };
        self.conns.insert(
            key,
            Entry {
                tcp,
                expires: now + self.timeouts.of(p.tuple.proto, tcp),
                snat: None,
            },
        );
        true
    }

    /// Whether one more connection fits, after dropping idle ones if not.
    /// A full table is swept at most once per [`SWEEP_EVERY`]: a flood of
    /// new connections against a table full of live ones must not cost a
    /// scan of the whole table per packet.
    fn room(&mut self, now: Instant) -> bool {
        if self.conns.len() >= self.limit
            && self.swept.is_none_or(|t| now >= t + SWEEP_EVERY || now < t)
        {
            self.swept = Some(now);
            self.expire(now);
        }
        self.conns.len() < self.limit
    }

    fn remove(&mut self, key: &(Z, Tuple)) {
        if let Some(Entry { snat: Some(to), .. }) = self.conns.remove(key) {
            self.ports.release(key, key.1.proto, to);
        }
    }

    /// Forgets every connection of `zone` (its interface went away).
    pub fn forget_zone(&mut self, zone: Z) {
        self.retain(|z, _, _| z != zone);
    }

    /// Drops idle connections; returns the next expiry.
    pub fn expire(&mut self, now: Instant) -> Option<Instant> {
        let ports = &mut self.ports;
        self.conns.retain(|(z, t), e| {
            let live = e.expires > now;
            if !live && let Some(to) = e.snat {
                ports.release(&(*z, *t), t.proto, to);
            }
            live
        });
        self.conns.values().map(|e| e.expires).min()
    }
}

/// An IPv4 packet of `proto` around `payload` (no options, checksum 0).
#[cfg(test)]
pub(crate) fn test_ipv4(src: [u8; 4], dst: [u8; 4], proto: u8, payload: &[u8]) -> Vec<u8> {
    let total = u16::try_from(20 + payload.len()).expect("small");
    let mut v = vec![0x45, 0];
    v.extend(total.to_be_bytes());
    v.extend([0, 0, 0x40, 0, 64, proto, 0, 0]);
    v.extend(src);
    v.extend(dst);
    v.extend(payload);
    v
}

#[cfg(test)]
mod tests {
    use super::test_ipv4 as ipv4;
    use super::*;
    use std::net::Ipv4Addr;

    fn t0() -> Instant {
        Instant::from_secs(1000)
    }

    fn tcp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, f: TcpFlags) -> Packet {
        Packet {
            tuple: Tuple {
                proto: TCP,
                src: IpAddr::V4(Ipv4Addr::from(src)),
                dst: IpAddr::V4(Ipv4Addr::from(dst)),
                sport,
                dport,
            },
            kind: Kind::Tcp(f),
        }
    }

    const SYN: TcpFlags = TcpFlags {
        syn: true,
        ack: false,
        fin: false,
        rst: false,
    };
    const SYNACK: TcpFlags = TcpFlags {
        syn: true,
        ack: true,
        fin: false,
        rst: false,
    };
    const ACK: TcpFlags = TcpFlags {
        syn: false,
        ack: true,
        fin: false,
        rst: false,
    };
    const FIN: TcpFlags = TcpFlags {
        syn: false,
        ack: true,
        fin: true,
        rst: false,
    };

    const A: [u8; 4] = [10, 0, 0, 2];
    const B: [u8; 4] = [10, 0, 0, 3];

    #[test]
    fn a_tcp_connection_opens_answers_and_closes() {
        let mut ct: Tracker<u32> = Tracker::new(16);
        let syn = tcp(A, 40000, B, 22, SYN);
        assert_eq!(ct.track(1, &syn, t0()), State::New);
        assert!(ct.commit(1, &syn, t0()));
        let synack = tcp(B, 22, A, 40000, SYNACK);
        assert_eq!(ct.track(1, &synack, t0()), State::Established(Dir::Reply));
        let ack = tcp(A, 40000, B, 22, ACK);
        assert_eq!(ct.track(1, &ack, t0()), State::Established(Dir::Original));
        // Established: it lives the established timeout, not the SYN one.
        let later = t0() + Duration::from_secs(3000);
        assert_eq!(ct.track(1, &ack, later), State::Established(Dir::Original));
        // A FIN moves it to closing: gone after the closing timeout.
        ct.track(1, &tcp(B, 22, A, 40000, FIN), later);
        let gone = later + Duration::from_secs(31);
        // Gone: a later segment would be met as a new, mid-stream one.
        assert_eq!(ct.track(1, &ack, gone), State::New);
        assert_eq!(ct.expire(gone), None);
        assert!(ct.is_empty());
    }

    /// The byte-level established path reads the same tuple and flags as
    /// the full parse, and takes nothing it cannot read whole.
    #[test]
    fn the_quick_read_agrees_with_the_full_parse() {
        for f in [0x02u8, 0x12, 0x10, 0x11, 0x04] {
            let mut h = vec![
                0x9c, 0x40, 0, 22, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, f, 0xff, 0xff,
            ];
            h.extend([0, 0, 0, 0]);
            let p = test_ipv4([10, 0, 0, 1], [10, 0, 0, 2], TCP, &h);
            let full = Packet::parse_ip(&p).expect("packet");
            let (t, flags) = quick_v4(&p).expect("quick");
            assert_eq!(t, full.tuple);
            assert_eq!(Kind::Tcp(flags), full.kind);
        }
        let u = test_ipv4(
            [10, 0, 0, 1],
            [10, 0, 0, 2],
            UDP,
            &[0, 53, 4, 0, 0, 8, 0, 0],
        );
        assert_eq!(
            quick_v4(&u).map(|q| q.0),
            Packet::parse_ip(&u).map(|p| p.tuple)
        );
        for bad in [&u[..19], &u[..27]] {
            assert!(quick_v4(bad).is_none());
        }
        let mut frag = u.clone();
        frag[7] = 1;
        assert!(quick_v4(&frag).is_none());
        let ping = test_ipv4(
            [10, 0, 0, 1],
            [10, 0, 0, 2],
            ICMP,
            &[8, 0, 0, 0, 0, 1, 0, 1],
        );
        assert!(quick_v4(&ping).is_none());
    }

    /// A connection met mid-stream (its VM moved here with it open) is
    /// picked up from an ACK, as Linux's `nf_conntrack_tcp_loose` does, and
    /// is established at once: both directions carry on.
    #[test]
    fn a_connection_met_mid_stream_is_picked_up() {
        let mut ct: Tracker<u32> = Tracker::new(16);
        let ack = tcp(A, 40000, B, 22, ACK);
        assert_eq!(ct.track(1, &ack, t0()), State::New);
        assert!(ct.commit(1, &ack, t0()));
        assert_eq!(
            ct.track(1, &tcp(B, 22, A, 40000, ACK), t0()),
            State::Established(Dir::Reply)
        );
        // It lives the established timeout, not the SYN one.
        let later = t0() + Timeouts::default().tcp_syn + Duration::from_secs(1);
        assert_eq!(ct.track(1, &ack, later), State::Established(Dir::Original));
    }

    #[test]
    fn a_bare_syn_opens_and_zones_are_apart() {
        let mut ct: Tracker<u32> = Tracker::new(16);
        for f in [SYNACK, FIN] {
            assert_eq!(
                ct.track(1, &tcp(A, 1, B, 2, f), t0()),
                State::Invalid,
                "{f:?}"
            );
        }
        let syn = tcp(A, 1, B, 2, SYN);
        assert_eq!(ct.track(1, &syn, t0()), State::New);
        ct.commit(1, &syn, t0());
        // The same addresses on another interface are another connection.
        assert_eq!(ct.track(2, &tcp(B, 2, A, 1, SYNACK), t0()), State::Invalid);
        ct.forget_zone(1);
        assert_eq!(ct.track(1, &tcp(B, 2, A, 1, SYNACK), t0()), State::Invalid);
    }

    #[test]
    fn an_unanswered_syn_expires_sooner_than_an_established_connection() {
        let mut ct: Tracker<u8> = Tracker::new(16);
        let syn = tcp(A, 1, B, 2, SYN);
        ct.commit(0, &syn, t0());
        let after = t0() + Duration::from_secs(61);
        assert_eq!(ct.track(0, &tcp(B, 2, A, 1, SYNACK), after), State::Invalid);
    }

    fn echo(src: [u8; 4], dst: [u8; 4], id: u16, request: bool) -> Vec<u8> {
        let mut icmp = vec![if request { 8 } else { 0 }, 0, 0, 0];
        icmp.extend(id.to_be_bytes());
        icmp.extend([0, 1, 0xde, 0xad]);
        ipv4(src, dst, ICMP, &icmp)
    }

    #[test]
    fn echoes_and_icmp_errors_are_read_from_frames() {
        let mut ct: Tracker<u8> = Tracker::new(16);
        let req = Packet::parse_ip(&echo(A, B, 7, true)).expect("request");
        assert_eq!(req.kind, Kind::EchoRequest);
        let rep = Packet::parse_ip(&echo(B, A, 7, false)).expect("reply");
        assert_eq!(ct.track(0, &rep, t0()), State::Invalid, "no request asked");
        assert_eq!(ct.track(0, &req, t0()), State::New);
        ct.commit(0, &req, t0());
        assert_eq!(ct.track(0, &rep, t0()), State::Established(Dir::Reply));
        let other = Packet::parse_ip(&echo(B, A, 8, false)).expect("reply");
        assert_eq!(ct.track(0, &other, t0()), State::Invalid, "another id");

        // A UDP flow A -> B:53, then a port unreachable from B quoting it
        // (the quote is cut after 8 bytes of UDP, as routers send it).
        let mut udp = Vec::new();
        udp.extend(5353u16.to_be_bytes());
        udp.extend(53u16.to_be_bytes());
        udp.extend(20u16.to_be_bytes());
        udp.extend([0, 0]);
        udp.extend([1u8; 12]);
        let out = ipv4(A, B, UDP, &udp);
        let flow = Packet::parse_ip(&out).expect("udp");
        assert_eq!((flow.tuple.sport, flow.tuple.dport), (5353, 53));
        let mut err = vec![3, 3, 0, 0, 0, 0, 0, 0];
        err.extend(&out[..28]);
        let unreachable = Packet::parse_ip(&ipv4(B, A, ICMP, &err)).expect("error");
        assert!(
            matches!(unreachable.kind, Kind::IcmpError(_)),
            "{unreachable:?}"
        );
        assert_eq!(
            ct.track(0, &unreachable, t0()),
            State::Invalid,
            "no such flow yet"
        );
        assert_eq!(ct.track(0, &flow, t0()), State::New);
        ct.commit(0, &flow, t0());
        assert_eq!(ct.track(0, &unreachable, t0()), State::Related);
    }

    fn ipv6(src: u8, dst: u8, next: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![0x60, 0, 0, 0];
        v.extend(u16::try_from(payload.len()).expect("small").to_be_bytes());
        v.extend([next, 64]);
        for last in [src, dst] {
            let mut a = [0u8; 16];
            a[0] = 0xfd;
            a[15] = last;
            v.extend(a);
        }
        v.extend(payload);
        v
    }

    #[test]
    fn ipv6_echoes_tcp_and_errors() {
        let mut ct: Tracker<u8> = Tracker::new(16);
        let req = Packet::parse_ip(&ipv6(2, 3, ICMPV6, &[128, 0, 0, 0, 0, 9, 0, 1])).expect("v6");
        let rep = Packet::parse_ip(&ipv6(3, 2, ICMPV6, &[129, 0, 0, 0, 0, 9, 0, 1])).expect("v6");
        assert_eq!(ct.track(0, &req, t0()), State::New);
        ct.commit(0, &req, t0());
        assert_eq!(ct.track(0, &rep, t0()), State::Established(Dir::Reply));
        let mut syn = vec![
            0x9c, 0x40, 0, 22, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff,
        ];
        syn.extend([0, 0, 0, 0]);
        let syn_bytes = ipv6(2, 3, TCP, &syn);
        let s = Packet::parse_ip(&syn_bytes).expect("v6 tcp");
        assert_eq!(
            (s.tuple.sport, s.tuple.dport, s.kind),
            (40000, 22, Kind::Tcp(SYN))
        );
        assert_eq!(ct.track(0, &s, t0()), State::New);
        ct.commit(0, &s, t0());
        // Packet too big from a router on the path, quoting the SYN.
        let mut err = vec![2, 0, 0, 0, 0, 0, 5, 0];
        err.extend(&syn_bytes[..48]);
        let ptb = Packet::parse_ip(&ipv6(9, 2, ICMPV6, &err)).expect("v6 error");
        assert_eq!(ct.track(0, &ptb, t0()), State::Related);
    }

    #[test]
    fn a_full_table_refuses_new_connections_until_some_expire() {
        let mut ct: Tracker<u8> = Tracker::new(2);
        for port in [1, 2] {
            assert!(ct.commit(0, &tcp(A, port, B, 80, SYN), t0()));
        }
        assert!(!ct.commit(0, &tcp(A, 3, B, 80, SYN), t0()));
        let later = t0() + Duration::from_secs(61);
        assert!(ct.commit(0, &tcp(A, 3, B, 80, SYN), later));
        assert_eq!(ct.len(), 1);
    }

    #[test]
    fn garbage_is_not_a_packet_and_short_headers_are_not_a_panic() {
        assert_eq!(Packet::parse_ip(&[]), None);
        assert_eq!(Packet::parse_ip(&[0x45; 10]), None);
        assert_eq!(Packet::parse_ip(&[0x70; 60]), None);
        // A whole IPv4 header with a TCP header cut short: no ports.
        let p = Packet::parse_ip(&ipv4(A, B, TCP, &[0, 80, 1])).expect("ip");
        assert_eq!((p.tuple.sport, p.kind), (0, Kind::Other));
    }
}
