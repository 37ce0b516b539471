//! The SNAT connection table and in-place header rewriting.
//!
//! A connection is keyed by what the inside host sent (the router it is
//! behind, protocol, inside address and port or ICMP echo id, remote address
//! and port: routers may use the same inside addresses) and maps to an
//! allocated external port (or echo id) on the SNAT address. The reverse map is
//! keyed by the external triple and checked against the remote end, so only the
//! remote the inside host talked to can use the binding.
//!
//! Rewriting is done in place on the copy that becomes the output frame, with
//! incremental checksum updates (RFC 1624): the L4 checksum is adjusted for the
//! changed address and port words rather than recomputed over the payload, so
//! a packet that arrived with a bad checksum still leaves with a bad one.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use smoltcp::wire::Ipv4Packet;

use crate::conntrack::{Dir, TcpFlags, TcpState};
use crate::{Duration, Instant};

pub(super) use crate::conntrack::{ICMP, TCP, UDP};

/// How long an idle connection keeps its binding: connection tracking's
/// timeouts (one TCP state machine for NAT and filtering).
pub use crate::conntrack::Timeouts as NatTimeouts;

/// What the inside host sent: the connection key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Flow {
    /// The router the inside host is behind.
    pub router: super::RouterNo,
    pub proto: u8,
    pub inside: Ipv4Addr,
    /// Source port, or the ICMP echo id.
    pub inside_port: u16,
    pub remote: Ipv4Addr,
    /// Destination port, 0 for ICMP.
    pub remote_port: u16,
}

/// The external side of a binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Mapped {
    pub proto: u8,
    pub ip: Ipv4Addr,
    pub port: u16,
}

/// TCP flags that move a connection's state.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Seg {
    pub fin: bool,
    pub rst: bool,
}

impl Seg {
    fn flags(self) -> TcpFlags {
        TcpFlags {
            fin: self.fin,
            rst: self.rst,
            ..TcpFlags::default()
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Conn {
    ext: Mapped,
    expires: Instant,
    tcp: TcpState,
}

/// One binding, for introspection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Binding {
    pub flow: Flow,
    pub ext: Mapped,
    pub expires: Instant,
}

#[derive(Debug)]
pub(super) struct Table {
    conns: HashMap<Flow, Conn>,
    rev: HashMap<Mapped, Flow>,
    /// Bindings per (protocol, external IP), to refuse quickly when exhausted.
    in_use: HashMap<(u8, Ipv4Addr), u32>,
    cursor: u32,
    lo: u16,
    hi: u16,
    pub timeouts: NatTimeouts,
}

impl Table {
    pub fn new() -> Self {
        Table {
            conns: HashMap::new(),
            rev: HashMap::new(),
            in_use: HashMap::new(),
            cursor: 0,
            lo: 1024,
            hi: u16::MAX,
            timeouts: NatTimeouts::default(),
        }
    }

    pub fn set_range(&mut self, lo: u16, hi: u16) {
        let (lo, hi) = if lo <= hi { (lo, hi) } else { (hi, lo) };
        self.lo = lo;
        self.hi = hi;
    }

    pub fn len(&self) -> usize {
        self.conns.len()
    }

    fn timeout(&self, proto: u8, tcp: TcpState) -> Duration {
        self.timeouts.of(proto, tcp)
    }

    fn remove(&mut self, flow: &Flow) {
        if let Some(c) = self.conns.remove(flow) {
            self.rev.remove(&c.ext);
            if let Some(n) = self.in_use.get_mut(&(c.ext.proto, c.ext.ip)) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.in_use.remove(&(c.ext.proto, c.ext.ip));
                }
            }
        }
    }

    fn allocate(&mut self, proto: u8, ip: Ipv4Addr, preferred: u16) -> Option<u16> {
        let span = u32::from(self.hi) - u32::from(self.lo) + 1;
        let used = self.in_use.get(&(proto, ip)).copied().unwrap_or(0);
        if used >= span {
            return None;
        }
        let free = |t: &Self, p: u16| !t.rev.contains_key(&Mapped { proto, ip, port: p });
        // Keep the inside port when it is free, as Linux does.
        if (self.lo..=self.hi).contains(&preferred) && free(self, preferred) {
            return Some(preferred);
        }
        for i in 0..span {
            let off = (self.cursor + i) % span;
            let p = u16::try_from(u32::from(self.lo) + off).ok()?;
            if free(self, p) {
                self.cursor = (off + 1) % span;
                return Some(p);
            }
        }
        None
    }

    /// The external port for an outbound packet of `flow`, creating the binding
    /// on `ip` if needed. `None`: no free port.
    pub fn outbound(&mut self, now: Instant, flow: Flow, ip: Ipv4Addr, seg: Seg) -> Option<u16> {
        let timeouts_for = |t: &Self, st| now + t.timeout(flow.proto, st);
        if let Some(c) = self.conns.get(&flow).copied() {
            if c.expires > now && c.ext.ip == ip {
                let tcp = c.tcp.next(Dir::Original, seg.flags());
                let expires = timeouts_for(self, tcp);
                if let Some(c) = self.conns.get_mut(&flow) {
                    c.tcp = tcp;
                    c.expires = expires;
                }
                return Some(c.ext.port);
            }
            self.remove(&flow);
        }
        let port = self.allocate(flow.proto, ip, flow.inside_port)?;
        let ext = Mapped {
            proto: flow.proto,
            ip,
            port,
        };
        let tcp = TcpState::Syn.next(Dir::Original, seg.flags());
        let expires = timeouts_for(self, tcp);
        self.conns.insert(flow, Conn { ext, expires, tcp });
        self.rev.insert(ext, flow);
        *self.in_use.entry((flow.proto, ip)).or_default() += 1;
        Some(port)
    }

    /// The connection an inbound packet to `ext` from `remote:remote_port`
    /// belongs to, refreshing it.
    pub fn inbound(
        &mut self,
        now: Instant,
        ext: Mapped,
        remote: Ipv4Addr,
        remote_port: u16,
        seg: Seg,
    ) -> Option<Flow> {
        let flow = *self.rev.get(&ext)?;
        if flow.remote != remote || flow.remote_port != remote_port {
            return None;
        }
        let c = self.conns.get(&flow).copied()?;
        if c.expires <= now {
            return None;
        }
        let tcp = c.tcp.next(Dir::Reply, seg.flags());
        let expires = now + self.timeout(flow.proto, tcp);
        if let Some(c) = self.conns.get_mut(&flow) {
            c.tcp = tcp;
            c.expires = expires;
        }
        Some(flow)
    }

    /// Drops expired connections; returns the next expiry.
    pub fn expire(&mut self, now: Instant) -> Option<Instant> {
        let dead: Vec<Flow> = self
            .conns
            .iter()
            .filter(|(_, c)| c.expires <= now)
            .map(|(f, _)| *f)
            .collect();
        for f in &dead {
            self.remove(f);
        }
        self.conns.values().map(|c| c.expires).min()
    }

    /// Keeps only bindings whose connection and external IP pass `keep`.
    pub fn retain(&mut self, keep: impl Fn(&Flow, Ipv4Addr) -> bool) {
        let dead: Vec<Flow> = self
            .conns
            .iter()
            .filter(|(f, c)| !keep(f, c.ext.ip))
            .map(|(f, _)| *f)
            .collect();
        for f in &dead {
            self.remove(f);
        }
    }

    pub fn bindings(&self) -> impl Iterator<Item = Binding> + '_ {
        self.conns.iter().map(|(f, c)| Binding {
            flow: *f,
            ext: c.ext,
            expires: c.expires,
        })
    }
}

/// Header changes for one forwarded packet.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Rewrite {
    pub src: Option<Ipv4Addr>,
    pub dst: Option<Ipv4Addr>,
    /// Source port, or the ICMP echo id on the way out.
    pub src_port: Option<u16>,
    /// Destination port, or the ICMP echo id on the way back.
    pub dst_port: Option<u16>,
    /// Decrement the TTL (forwarded packets; not locally originated ones).
    pub ttl: bool,
}

/// RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m').
fn csum_update(hc: u16, old: u16, new: u16) -> u16 {
    let mut s = u32::from(!hc) + u32::from(!old) + u32::from(new);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    !(s as u16)
}

fn csum_update_addr(hc: u16, old: Ipv4Addr, new: Ipv4Addr) -> u16 {
    let (o, n) = (old.octets(), new.octets());
    let hc = csum_update(
        hc,
        u16::from_be_bytes([o[0], o[1]]),
        u16::from_be_bytes([n[0], n[1]]),
    );
    csum_update(
        hc,
        u16::from_be_bytes([o[2], o[3]]),
        u16::from_be_bytes([n[2], n[3]]),
    )
}

fn get16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    if let Some(s) = b.get_mut(at..at + 2) {
        s.copy_from_slice(&v.to_be_bytes());
    }
}

/// Applies `rw` to the IPv4 packet `ip` (already checked: header length and
/// total length within the buffer). Never panics: fields that are not there
/// are left alone.
pub(super) fn rewrite(ip: &mut [u8], rw: &Rewrite) {
    let Some(&vihl) = ip.first() else { return };
    let hl = usize::from(vihl & 0x0f) * 4;
    if hl < 20 || ip.len() < hl {
        return;
    }
    let proto = ip[9];
    let first_fragment = get16(ip, 6).is_some_and(|f| f & 0x1fff == 0);
    let old_src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let old_dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let new_src = rw.src.unwrap_or(old_src);
    let new_dst = rw.dst.unwrap_or(old_dst);
    let (hdr, l4) = ip.split_at_mut(hl);
    if first_fragment {
        // (checksum offset, covers the pseudo-header, UDP's "0 = none")
        let layout = match proto {
            TCP => Some((16, true, false)),
            UDP => Some((6, true, true)),
            ICMP => Some((2, false, false)),
            _ => None,
        };
        if let Some((at, pseudo, udp)) = layout
            && let Some(mut sum) = get16(l4, at)
        {
            let has_sum = !(udp && sum == 0);
            if pseudo {
                sum = csum_update_addr(sum, old_src, new_src);
                sum = csum_update_addr(sum, old_dst, new_dst);
            }
            // ICMP echo: the id is at offset 4; TCP/UDP: ports at 0 and 2.
            let ports: [(usize, Option<u16>); 2] = if proto == ICMP {
                [(4, rw.src_port.or(rw.dst_port)), (4, None)]
            } else {
                [(0, rw.src_port), (2, rw.dst_port)]
            };
            for (off, new) in ports {
                if let (Some(new), Some(old)) = (new, get16(l4, off)) {
                    sum = csum_update(sum, old, new);
                    put16(l4, off, new);
                }
            }
            if has_sum {
                if udp && sum == 0 {
                    sum = 0xffff;
                }
                put16(l4, at, sum);
            }
        }
    }
    hdr[12..16].copy_from_slice(&new_src.octets());
    hdr[16..20].copy_from_slice(&new_dst.octets());
    if rw.ttl {
        hdr[8] = hdr[8].saturating_sub(1);
    }
    Ipv4Packet::new_unchecked(&mut hdr[..]).fill_checksum();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: u64) -> Instant {
        Instant::from_secs(s as i64)
    }

    fn flow(port: u16) -> Flow {
        Flow {
            router: 0,
            proto: UDP,
            inside: Ipv4Addr::new(10, 0, 0, 5),
            inside_port: port,
            remote: Ipv4Addr::new(198, 51, 100, 1),
            remote_port: 53,
        }
    }

    #[test]
    fn csum_update_matches_recompute() {
        // Sum of words 0x1234, 0xabcd: one's complement sum 0xbe01 -> checksum !0xbe01.
        let full = |a: u16, b: u16| {
            let s = u32::from(a) + u32::from(b);
            !(((s & 0xffff) + (s >> 16)) as u16)
        };
        assert_eq!(
            csum_update(full(0x1234, 0xabcd), 0x1234, 0x4321),
            full(0x4321, 0xabcd)
        );
    }

    #[test]
    fn allocates_preferred_then_scans_then_exhausts() {
        let mut tb = Table::new();
        tb.set_range(2000, 2001);
        let ip = Ipv4Addr::new(203, 0, 113, 2);
        assert_eq!(
            tb.outbound(t(0), flow(2000), ip, Seg::default()),
            Some(2000)
        );
        assert_eq!(
            tb.outbound(t(0), flow(2000), ip, Seg::default()),
            Some(2000)
        );
        assert_eq!(tb.outbound(t(0), flow(5), ip, Seg::default()), Some(2001));
        assert_eq!(tb.outbound(t(0), flow(6), ip, Seg::default()), None);
        assert_eq!(tb.len(), 2);
        // Expiry frees ports.
        assert_eq!(tb.expire(t(121)), None);
        assert_eq!(tb.outbound(t(121), flow(6), ip, Seg::default()), Some(2000));
    }

    #[test]
    fn routers_with_the_same_inside_flow_get_separate_bindings() {
        let mut tb = Table::new();
        let (ip_a, ip_b) = (
            Ipv4Addr::new(203, 0, 113, 10),
            Ipv4Addr::new(203, 0, 113, 20),
        );
        let a = flow(4000);
        let b = Flow { router: 1, ..a };
        assert_eq!(tb.outbound(t(0), a, ip_a, Seg::default()), Some(4000));
        assert_eq!(tb.outbound(t(0), b, ip_b, Seg::default()), Some(4000));
        // Neither evicted the other.
        assert_eq!(tb.outbound(t(1), a, ip_a, Seg::default()), Some(4000));
        assert_eq!(tb.len(), 2);
        let back = |tb: &mut Table, ip| {
            let m = Mapped {
                proto: UDP,
                ip,
                port: 4000,
            };
            tb.inbound(t(2), m, a.remote, a.remote_port, Seg::default())
        };
        assert_eq!(back(&mut tb, ip_a), Some(a));
        assert_eq!(back(&mut tb, ip_b), Some(b));
        tb.retain(|f, _| f.router != 1);
        assert_eq!(tb.len(), 1);
        assert_eq!(back(&mut tb, ip_b), None);
    }

    #[test]
    fn inbound_checks_remote_and_expiry() {
        let mut tb = Table::new();
        let ip = Ipv4Addr::new(203, 0, 113, 2);
        let p = tb
            .outbound(t(0), flow(4000), ip, Seg::default())
            .expect("port");
        let m = Mapped {
            proto: UDP,
            ip,
            port: p,
        };
        assert_eq!(
            tb.inbound(t(1), m, Ipv4Addr::new(198, 51, 100, 1), 53, Seg::default()),
            Some(flow(4000))
        );
        assert_eq!(
            tb.inbound(t(1), m, Ipv4Addr::new(198, 51, 100, 2), 53, Seg::default()),
            None
        );
        assert_eq!(
            tb.inbound(t(1), m, Ipv4Addr::new(198, 51, 100, 1), 54, Seg::default()),
            None
        );
        assert_eq!(
            tb.inbound(
                t(500),
                m,
                Ipv4Addr::new(198, 51, 100, 1),
                53,
                Seg::default()
            ),
            None
        );
    }
}
