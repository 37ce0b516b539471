//! Source NAT as an extension of connection tracking, as Linux keeps it: a
//! connection's entry may say which address and port its original direction
//! leaves with ([`SnatTo`]), and the answer is found by that translated
//! address. The gateway's SNAT is a [`Tracker`] whose zone is the router an
//! inside host is behind (routers may reuse inside addresses), with the
//! same TCP state machine, timeouts, bound and expiry as the packet filters'.
//!
//! One external port (or ICMP echo id) per connection: an answer must come
//! from the remote the inside host talked to, on the port it talked to, to
//! reach it. Ports are allocated from a range, the inside port kept when it
//! is free (as Linux does), else the next free one after the last given.

use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr};

use rustc_hash::FxHashMap;

use super::{Dir, Entry, TcpFlags, TcpState, Tracker, Tuple};
use crate::Instant;

/// Where a connection's original direction is translated to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnatTo {
    pub ip: Ipv4Addr,
    /// The source port, or the ICMP echo id.
    pub port: u16,
}

/// The translated ports in use, and where the next allocation looks.
#[derive(Debug)]
pub(super) struct Ports<Z> {
    /// (protocol, external IP, port) → the connection holding it.
    held: FxHashMap<(u8, Ipv4Addr, u16), (Z, Tuple)>,
    /// Ports held per (protocol, external IP), to refuse quickly when full.
    in_use: FxHashMap<(u8, Ipv4Addr), u32>,
    cursor: u32,
    lo: u16,
    hi: u16,
}

impl<Z> Default for Ports<Z> {
    fn default() -> Self {
        Ports {
            held: FxHashMap::default(),
            in_use: FxHashMap::default(),
            cursor: 0,
            lo: 1024,
            hi: u16::MAX,
        }
    }
}

impl<Z> Ports<Z> {
    /// Gives back the port `key`'s connection holds (nothing if another
    /// connection holds it).
    pub(super) fn release(&mut self, key: &(Z, Tuple), proto: u8, to: SnatTo)
    where
        Z: PartialEq,
    {
        let at = (proto, to.ip, to.port);
        if self.held.get(&at) != Some(key) {
            return;
        }
        self.held.remove(&at);
        if let Some(n) = self.in_use.get_mut(&(proto, to.ip)) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.in_use.remove(&(proto, to.ip));
            }
        }
    }

    fn allocate(&mut self, proto: u8, ip: Ipv4Addr, preferred: u16) -> Option<u16> {
        let span = u32::from(self.hi) - u32::from(self.lo) + 1;
        if self.in_use.get(&(proto, ip)).copied().unwrap_or(0) >= span {
            return None;
        }
        let free = |p: u16| !self.held.contains_key(&(proto, ip, p));
        if (self.lo..=self.hi).contains(&preferred) && free(preferred) {
            return Some(preferred);
        }
        let found = (0..span).find_map(|i| {
            let off = (self.cursor + i) % span;
            let p = u16::try_from(u32::from(self.lo) + off).ok()?;
            free(p).then_some((off, p))
        });
        let (off, p) = found?;
        self.cursor = (off + 1) % span;
        Some(p)
    }
}

/// One translated connection, for introspection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnatEntry<Z> {
    pub zone: Z,
    /// As the inside host sent it.
    pub original: Tuple,
    pub to: SnatTo,
    pub expires: Instant,
}

impl<Z: Copy + Eq + Hash> Tracker<Z> {
    /// The range translated ports and ICMP ids come from (default
    /// 1024–65535; given the wrong way round, swapped).
    pub fn set_snat_range(&mut self, lo: u16, hi: u16) {
        let (lo, hi) = if lo <= hi { (lo, hi) } else { (hi, lo) };
        self.ports.lo = lo;
        self.ports.hi = hi;
        self.ports.cursor = 0;
    }

    /// The external port for an outbound packet `t` of `zone` translated to
    /// `ip`: the connection's, refreshed, or a new connection's. `None`: no
    /// free port on `ip`, or the table is full (the caller drops the packet).
    pub fn snat(
        &mut self,
        zone: Z,
        t: Tuple,
        flags: TcpFlags,
        ip: Ipv4Addr,
        now: Instant,
    ) -> Option<u16> {
        let key = (zone, t);
        if let Some(e) = self.conns.get_mut(&key) {
            match e.snat {
                Some(to) if e.expires > now && to.ip == ip => {
                    e.advance(t.proto, Dir::Original, flags, now, &self.timeouts);
                    return Some(to.port);
                }
                // Timed out, or its router's address changed: a new one.
                _ => self.remove(&key),
            }
        }
        if !self.room(now) {
            return None;
        }
        let port = self.ports.allocate(t.proto, ip, t.sport)?;
        let tcp = TcpState::Syn.next(Dir::Original, flags);
        self.ports.held.insert((t.proto, ip, port), key);
        *self.ports.in_use.entry((t.proto, ip)).or_default() += 1;
        self.conns.insert(
            key,
            Entry {
                tcp,
                expires: now + self.timeouts.of(t.proto, tcp),
                snat: Some(SnatTo { ip, port }),
            },
        );
        Some(port)
    }

    /// The connection an inbound answer belongs to — one of `proto` to
    /// `to` from `remote` — refreshed as a reply: its zone and original
    /// tuple, so the caller can translate the answer back.
    pub fn unsnat(
        &mut self,
        proto: u8,
        to: SnatTo,
        remote: IpAddr,
        remote_port: u16,
        flags: TcpFlags,
        now: Instant,
    ) -> Option<(Z, Tuple)> {
        let key = *self.ports.held.get(&(proto, to.ip, to.port))?;
        if key.1.dst != remote || key.1.dport != remote_port {
            return None;
        }
        let e = self.conns.get_mut(&key)?;
        if e.expires <= now {
            return None;
        }
        e.advance(proto, Dir::Reply, flags, now, &self.timeouts);
        Some(key)
    }

    /// The translated connections.
    pub fn snat_entries(&self) -> impl Iterator<Item = SnatEntry<Z>> + '_ {
        self.conns.iter().filter_map(|((zone, t), e)| {
            e.snat.map(|to| SnatEntry {
                zone: *zone,
                original: *t,
                to,
                expires: e.expires,
            })
        })
    }

    /// Keeps only the connections `keep` accepts, given their zone, tuple and
    /// translation (if any).
    pub fn retain(&mut self, mut keep: impl FnMut(Z, &Tuple, Option<SnatTo>) -> bool) {
        let ports = &mut self.ports;
        self.conns.retain(|(z, t), e| {
            let k = keep(*z, t, e.snat);
            if !k && let Some(to) = e.snat {
                ports.release(&(*z, *t), t.proto, to);
            }
            k
        });
    }
}

#[cfg(test)]
mod tests {
    use super::super::{ICMP, TCP, UDP};
    use super::*;
    use crate::Duration;

    fn t(s: u64) -> Instant {
        Instant::from_secs(s as i64)
    }

    const REMOTE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);

    fn udp(port: u16) -> Tuple {
        Tuple {
            proto: UDP,
            src: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5)),
            dst: IpAddr::V4(REMOTE),
            sport: port,
            dport: 53,
        }
    }

    const NONE: TcpFlags = TcpFlags {
        syn: false,
        ack: false,
        fin: false,
        rst: false,
    };

    #[test]
    fn allocates_the_inside_port_then_scans_then_refuses() {
        let mut ct: Tracker<u64> = Tracker::new(16);
        ct.set_snat_range(2001, 2000);
        let ip = Ipv4Addr::new(203, 0, 113, 2);
        assert_eq!(ct.snat(0, udp(2000), NONE, ip, t(0)), Some(2000));
        assert_eq!(ct.snat(0, udp(2000), NONE, ip, t(0)), Some(2000));
        assert_eq!(ct.snat(0, udp(5), NONE, ip, t(0)), Some(2001));
        assert_eq!(ct.snat(0, udp(6), NONE, ip, t(0)), None);
        assert_eq!(ct.len(), 2);
        // Expiry gives the ports back.
        assert_eq!(ct.expire(t(121)), None);
        assert_eq!(ct.snat(0, udp(6), NONE, ip, t(121)), Some(2000));
    }

    #[test]
    fn a_full_table_refuses_a_new_translation() {
        let mut ct: Tracker<u64> = Tracker::new(2);
        let ip = Ipv4Addr::new(203, 0, 113, 2);
        assert!(ct.snat(0, udp(1), NONE, ip, t(0)).is_some());
        assert!(ct.snat(0, udp(2), NONE, ip, t(0)).is_some());
        assert_eq!(ct.snat(0, udp(3), NONE, ip, t(0)), None);
        // Known connections still pass.
        assert!(ct.snat(0, udp(1), NONE, ip, t(1)).is_some());
    }

    #[test]
    fn zones_with_the_same_inside_connection_are_translated_apart() {
        let mut ct: Tracker<u64> = Tracker::new(16);
        let (ip_a, ip_b) = (
            Ipv4Addr::new(203, 0, 113, 10),
            Ipv4Addr::new(203, 0, 113, 20),
        );
        let f = udp(4000);
        assert_eq!(ct.snat(0, f, NONE, ip_a, t(0)), Some(4000));
        assert_eq!(ct.snat(1, f, NONE, ip_b, t(0)), Some(4000));
        assert_eq!(ct.snat(0, f, NONE, ip_a, t(1)), Some(4000));
        assert_eq!(ct.len(), 2);
        let back = |ct: &mut Tracker<u64>, ip| {
            let to = SnatTo { ip, port: 4000 };
            ct.unsnat(UDP, to, IpAddr::V4(REMOTE), 53, NONE, t(2))
        };
        assert_eq!(back(&mut ct, ip_a), Some((0, f)));
        assert_eq!(back(&mut ct, ip_b), Some((1, f)));
        ct.retain(|z, _, _| z != 1);
        assert_eq!(ct.len(), 1);
        assert_eq!(back(&mut ct, ip_b), None);
        // The port went back with the connection.
        assert_eq!(ct.snat(2, f, NONE, ip_b, t(3)), Some(4000));
    }

    #[test]
    fn an_answer_must_come_from_the_remote_in_time() {
        let mut ct: Tracker<u64> = Tracker::new(16);
        let ip = Ipv4Addr::new(203, 0, 113, 2);
        let port = ct.snat(0, udp(4000), NONE, ip, t(0)).expect("port");
        let to = SnatTo { ip, port };
        let from = |a: [u8; 4]| IpAddr::V4(Ipv4Addr::from(a));
        let back = |ct: &mut Tracker<u64>, r, rp, at| ct.unsnat(UDP, to, r, rp, NONE, at);
        assert_eq!(
            back(&mut ct, from([198, 51, 100, 1]), 53, t(1)),
            Some((0, udp(4000)))
        );
        assert_eq!(back(&mut ct, from([198, 51, 100, 2]), 53, t(1)), None);
        assert_eq!(back(&mut ct, from([198, 51, 100, 1]), 54, t(1)), None);
        // Answered: established UDP lives the UDP timeout from its last packet.
        assert_eq!(back(&mut ct, from([198, 51, 100, 1]), 53, t(500)), None);
        assert_eq!(ct.snat(0, udp(4000), NONE, ip, t(501)), Some(4000));
    }

    #[test]
    fn tcp_and_echo_translations_follow_their_state() {
        let mut ct: Tracker<u64> = Tracker::new(16);
        let ip = Ipv4Addr::new(203, 0, 113, 2);
        let syn = TcpFlags { syn: true, ..NONE };
        let tcp = Tuple {
            proto: TCP,
            dport: 443,
            ..udp(40000)
        };
        let port = ct.snat(0, tcp, syn, ip, t(0)).expect("port");
        let to = SnatTo { ip, port };
        let synack = TcpFlags {
            syn: true,
            ack: true,
            ..NONE
        };
        let r = IpAddr::V4(REMOTE);
        assert!(ct.unsnat(TCP, to, r, 443, synack, t(1)).is_some());
        // Established: alive an hour later.
        let later = t(1) + Duration::from_secs(3600);
        assert!(ct.unsnat(TCP, to, r, 443, NONE, later).is_some());
        let fin = TcpFlags { fin: true, ..NONE };
        assert!(ct.unsnat(TCP, to, r, 443, fin, later).is_some());
        assert!(ct.expire(later + Duration::from_secs(31)).is_none());
        // An echo is matched by its id, the remote's "port" 0.
        let echo = Tuple {
            proto: ICMP,
            sport: 7,
            dport: 0,
            ..udp(0)
        };
        let id = ct.snat(0, echo, NONE, ip, t(0)).expect("id");
        let to = SnatTo { ip, port: id };
        assert_eq!(ct.unsnat(ICMP, to, r, 0, NONE, t(1)), Some((0, echo)));
        assert_eq!(ct.unsnat(UDP, to, r, 0, NONE, t(1)), None);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Out { zone: u64, sport: u16, ip: u8 },
        In { ip: u8, port: u16 },
        Tick(u16),
        DropZone(u64),
        DropIp(u8),
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            4 => (0u64..3, 0u16..6, 0u8..2).prop_map(|(zone, sport, ip)| Op::Out { zone, sport, ip }),
            2 => (0u8..2, 1020u16..1030).prop_map(|(ip, port)| Op::In { ip, port }),
            1 => (0u16..200).prop_map(Op::Tick),
            1 => (0u64..3).prop_map(Op::DropZone),
            1 => (0u8..2).prop_map(Op::DropIp),
        ]
    }

    proptest::proptest! {
        /// Whatever happens, each translated connection holds exactly its
        /// own port, no port is held twice or by no one, and the per-address
        /// counts match: ports are never leaked nor shared.
        #[test]
        fn ports_are_held_by_exactly_the_live_translations(
            ops in proptest::collection::vec(op(), 1..80)
        ) {
            let mut ct: Tracker<u64> = Tracker::new(6);
            ct.set_snat_range(1024, 1027);
            let ext = |i: u8| Ipv4Addr::new(203, 0, 113, 1 + i);
            let mut now = t(0);
            for o in ops {
                match o {
                    Op::Out { zone, sport, ip } => {
                        let _ = ct.snat(zone, udp(sport), NONE, ext(ip), now);
                    }
                    Op::In { ip, port } => {
                        let to = SnatTo { ip: ext(ip), port };
                        let _ = ct.unsnat(UDP, to, IpAddr::V4(REMOTE), 53, NONE, now);
                    }
                    Op::Tick(s) => {
                        now += Duration::from_secs(u64::from(s));
                        let _ = ct.expire(now);
                    }
                    Op::DropZone(z) => ct.forget_zone(z),
                    Op::DropIp(i) => ct.retain(|_, _, to| to.is_none_or(|to| to.ip != ext(i))),
                }
                let entries: Vec<SnatEntry<u64>> = ct.snat_entries().collect();
                proptest::prop_assert_eq!(entries.len(), ct.ports.held.len());
                for e in &entries {
                    let holder = ct.ports.held.get(&(e.original.proto, e.to.ip, e.to.port));
                    proptest::prop_assert_eq!(holder, Some(&(e.zone, e.original)));
                    proptest::prop_assert!((1024..=1027).contains(&e.to.port));
                }
                let total: u32 = ct.ports.in_use.values().sum();
                proptest::prop_assert_eq!(total as usize, entries.len());
            }
        }
    }
}
