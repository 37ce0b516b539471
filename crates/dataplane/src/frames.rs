//! Building frames with smoltcp's `Repr::emit`: Ethernet, ARP, IPv4/UDP.

use std::net::Ipv4Addr;

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, IpProtocol, Ipv4Packet, Ipv4Repr, UdpPacket, UdpRepr,
};

pub type Mac = EthernetAddress;

pub const BROADCAST: Mac = EthernetAddress([0xff; 6]);
const ETH_HEADER: usize = 14;

/// An Ethernet frame around `payload`.
pub fn ethernet(dst: Mac, src: Mac, ethertype: EthernetProtocol, payload: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; ETH_HEADER + payload.len()];
    let mut f = EthernetFrame::new_unchecked(&mut buf[..]);
    EthernetRepr {
        src_addr: src,
        dst_addr: dst,
        ethertype,
    }
    .emit(&mut f);
    f.payload_mut().copy_from_slice(payload);
    buf
}

/// An ARP packet in an Ethernet frame.
pub fn arp(
    op: ArpOperation,
    eth_dst: Mac,
    sha: Mac,
    spa: Ipv4Addr,
    tha: Mac,
    tpa: Ipv4Addr,
) -> Vec<u8> {
    let repr = ArpRepr::EthernetIpv4 {
        operation: op,
        source_hardware_addr: sha,
        source_protocol_addr: spa,
        target_hardware_addr: tha,
        target_protocol_addr: tpa,
    };
    let mut body = vec![0u8; repr.buffer_len()];
    repr.emit(&mut ArpPacket::new_unchecked(&mut body[..]));
    ethernet(eth_dst, sha, EthernetProtocol::Arp, &body)
}

/// A gratuitous ARP announcing `ip` at `mac` (what QEMU sends after migration).
pub fn gratuitous_arp(mac: Mac, ip: Ipv4Addr) -> Vec<u8> {
    arp(
        ArpOperation::Request,
        BROADCAST,
        mac,
        ip,
        EthernetAddress([0; 6]),
        ip,
    )
}

/// An IPv4/UDP datagram in an Ethernet frame, with checksums.
#[allow(clippy::too_many_arguments)]
pub fn udp(
    eth_dst: Mac,
    eth_src: Mac,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    ttl: u8,
    payload: &[u8],
) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let ip = Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol::Udp,
        payload_len: udp_len,
        hop_limit: ttl,
    };
    let mut body = vec![0u8; ip.buffer_len() + udp_len];
    let caps = ChecksumCapabilities::default();
    let mut p = Ipv4Packet::new_unchecked(&mut body[..]);
    ip.emit(&mut p, &caps);
    let mut u = UdpPacket::new_unchecked(p.payload_mut());
    UdpRepr {
        src_port: sport,
        dst_port: dport,
    }
    .emit(
        &mut u,
        &src.into(),
        &dst.into(),
        payload.len(),
        |b| b.copy_from_slice(payload),
        &caps,
    );
    ethernet(eth_dst, eth_src, EthernetProtocol::Ipv4, &body)
}

/// Source and destination MAC of a frame, if it is long enough to have them.
pub fn macs(frame: &[u8]) -> Option<(Mac, Mac)> {
    if frame.len() < ETH_HEADER {
        return None;
    }
    let mut d = [0u8; 6];
    let mut s = [0u8; 6];
    d.copy_from_slice(&frame[0..6]);
    s.copy_from_slice(&frame[6..12]);
    Some((EthernetAddress(d), EthernetAddress(s)))
}

/// The netmask of an IPv4 prefix length (lengths above 32 count as 32).
pub fn prefix_mask(len: u8) -> Ipv4Addr {
    let bits = if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len.min(32)))
    };
    Ipv4Addr::from(bits)
}

/// Whether `ip` lies in `net`/`len`.
pub fn in_prefix(ip: Ipv4Addr, net: Ipv4Addr, len: u8) -> bool {
    let m = u32::from(prefix_mask(len));
    u32::from(ip) & m == u32::from(net) & m
}

/// Whether a MAC is broadcast or multicast (flooded rather than looked up).
pub fn is_bum(mac: &Mac) -> bool {
    mac.0[0] & 1 == 1
}

/// serde for MACs as `aa:bb:cc:dd:ee:ff` strings (`#[serde(with = "crate::frames::mac_serde")]`).
pub mod mac_serde {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::Mac;

    pub fn serialize<S: Serializer>(m: &Mac, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_mac(m))
    }

    /// `aa:bb:cc:dd:ee:ff`, as Neutron writes MACs (smoltcp's `Display` uses dashes).
    pub fn format_mac(m: &Mac) -> String {
        let b = m.0;
        format!(
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Mac, D::Error> {
        let s = String::deserialize(d)?;
        parse_mac(&s).ok_or_else(|| serde::de::Error::custom(format!("'{s}' is not a MAC address")))
    }

    pub fn parse_mac(s: &str) -> Option<Mac> {
        let mut out = [0u8; 6];
        let mut n = 0;
        for part in s.split(':') {
            if n == 6 || part.len() != 2 {
                return None;
            }
            out[n] = u8::from_str_radix(part, 16).ok()?;
            n += 1;
        }
        (n == 6).then_some(smoltcp::wire::EthernetAddress(out))
    }
}

/// A frame as sent by a VM on an access port or VF: untagged frames pass,
/// priority-tagged ones (VID 0) lose their tag, and frames tagged with a real
/// VLAN are refused, as Open vSwitch access ports and VST-mode NICs do.
pub fn from_access_port(frame: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, crate::DropReason> {
    use crate::wire::vlan;
    match vlan::vlan_of(frame) {
        Err(_) => Err(crate::DropReason::Malformed),
        Ok(None) => Ok(std::borrow::Cow::Borrowed(frame)),
        Ok(Some(0)) => vlan::pop_tag(frame)
            .map(std::borrow::Cow::Owned)
            .map_err(|_| crate::DropReason::Malformed),
        Ok(Some(_)) => Err(crate::DropReason::UnknownVlan),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::vlan;

    #[test]
    fn access_ports_refuse_tagged_frames_and_strip_priority_tags() {
        let f = udp(
            BROADCAST,
            EthernetAddress([2, 0, 0, 0, 0, 1]),
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::BROADCAST,
            1,
            2,
            64,
            b"x",
        );
        assert_eq!(from_access_port(&f).expect("untagged").as_ref(), &f[..]);
        let prio = vlan::push_tag(&f, 0).expect("tag");
        assert_eq!(
            from_access_port(&prio).expect("priority tag").as_ref(),
            &f[..]
        );
        let tagged = vlan::push_tag(&f, 100).expect("tag");
        assert_eq!(
            from_access_port(&tagged),
            Err(crate::DropReason::UnknownVlan)
        );
        assert_eq!(
            from_access_port(&f[..10]),
            Err(crate::DropReason::Malformed)
        );
    }
}
