//! In-place header rewriting for NAT. Which connection a packet belongs to
//! and what it is translated to is connection tracking's
//! ([`crate::conntrack`]: the gateway's SNAT is a tracker with NAT entries).
//!
//! Rewriting is done in place on the copy that becomes the output frame, with
//! incremental checksum updates (RFC 1624): the L4 checksum is adjusted for the
//! changed address and port words rather than recomputed over the payload, so
//! a packet that arrived with a bad checksum still leaves with a bad one.

use std::net::Ipv4Addr;

use smoltcp::wire::Ipv4Packet;

use crate::conntrack::{ICMP, TCP, UDP};

/// How long an idle connection keeps its binding: connection tracking's
/// timeouts (one TCP state machine for NAT and filtering).
pub use crate::conntrack::Timeouts as NatTimeouts;

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
}
