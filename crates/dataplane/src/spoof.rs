//! Anti-spoofing for VM-facing ports (Neutron's port security): a port may send
//! only from its MAC with one of its fixed IPs, or from an allowed address pair.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use smoltcp::wire::{
    ArpPacket, ArpRepr, EthernetFrame, EthernetProtocol, IpProtocol, Ipv4Packet, UdpPacket,
};

use crate::DropReason;
use crate::frames::Mac;

/// An allowed address pair: a prefix that may be used from `mac`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllowedPair {
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    #[serde(with = "crate::frames::mac_serde")]
    pub mac: Mac,
}

/// What a port may send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortSecurity {
    pub enabled: bool,
    #[serde(with = "crate::frames::mac_serde")]
    pub mac: Mac,
    pub ips: Vec<Ipv4Addr>,
    pub pairs: Vec<AllowedPair>,
}

use crate::frames::in_prefix;

impl PortSecurity {
    fn mac_ok(&self, mac: &Mac) -> bool {
        *mac == self.mac || self.pairs.iter().any(|p| p.mac == *mac)
    }

    fn ip_ok(&self, mac: &Mac, ip: Ipv4Addr) -> bool {
        (*mac == self.mac && self.ips.contains(&ip))
            || self
                .pairs
                .iter()
                .any(|p| p.mac == *mac && in_prefix(ip, p.ip, p.prefix_len))
    }

    /// Checks a frame the port sent. Frames this check cannot read are left to
    /// the pipeline's own parsing (which counts them as malformed).
    pub fn check(&self, frame: &[u8]) -> Result<(), DropReason> {
        if !self.enabled {
            return Ok(());
        }
        let eth = EthernetFrame::new_checked(frame).map_err(|_| DropReason::Malformed)?;
        let src = eth.src_addr();
        if !self.mac_ok(&src) {
            return Err(DropReason::SpoofedMac);
        }
        match eth.ethertype() {
            EthernetProtocol::Ipv4 => {
                let ip =
                    Ipv4Packet::new_checked(eth.payload()).map_err(|_| DropReason::Malformed)?;
                // A VM may not answer as a DHCP server (Neutron's DHCP spoofing rule).
                if ip.next_header() == IpProtocol::Udp
                    && UdpPacket::new_checked(ip.payload()).is_ok_and(|u| u.src_port() == 67)
                {
                    return Err(DropReason::RogueDhcp);
                }
                let s = ip.src_addr();
                if self.ip_ok(&src, s) {
                    return Ok(());
                }
                // DHCP before the port has an address: 0.0.0.0:68 -> 67.
                if s.is_unspecified()
                    && ip.next_header() == IpProtocol::Udp
                    && UdpPacket::new_checked(ip.payload())
                        .is_ok_and(|u| u.src_port() == 68 && u.dst_port() == 67)
                {
                    return Ok(());
                }
                Err(DropReason::SpoofedIp)
            }
            EthernetProtocol::Arp => {
                let p = ArpPacket::new_checked(eth.payload()).map_err(|_| DropReason::Malformed)?;
                let ArpRepr::EthernetIpv4 {
                    source_hardware_addr,
                    source_protocol_addr,
                    ..
                } = ArpRepr::parse(&p).map_err(|_| DropReason::Malformed)?
                else {
                    return Err(DropReason::Malformed);
                };
                if source_hardware_addr != src {
                    return Err(DropReason::SpoofedMac);
                }
                if source_protocol_addr.is_unspecified() || self.ip_ok(&src, source_protocol_addr) {
                    Ok(())
                } else {
                    Err(DropReason::SpoofedIp)
                }
            }
            // IPv6 and the rest are outside this IPv4 data plane: refuse them from
            // a secured port rather than let them through unchecked.
            _ => Err(DropReason::Unsupported),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frames;

    fn port() -> PortSecurity {
        PortSecurity {
            enabled: true,
            mac: Mac::from_bytes(&[0xfa, 0x16, 0x3e, 0, 0, 1]),
            ips: vec![Ipv4Addr::new(10, 0, 0, 5)],
            pairs: vec![AllowedPair {
                ip: Ipv4Addr::new(10, 0, 9, 0),
                prefix_len: 24,
                mac: Mac::from_bytes(&[0xfa, 0x16, 0x3e, 0, 0, 2]),
            }],
        }
    }

    fn udp_from(mac: Mac, src: Ipv4Addr, sport: u16, dport: u16) -> Vec<u8> {
        frames::udp(
            frames::BROADCAST,
            mac,
            src,
            Ipv4Addr::BROADCAST,
            sport,
            dport,
            64,
            b"x",
        )
    }

    #[test]
    fn addresses_pairs_dhcp_and_rogue_servers() {
        let p = port();
        let me = p.mac;
        let pair_mac = p.pairs[0].mac;
        assert_eq!(
            p.check(&udp_from(me, Ipv4Addr::new(10, 0, 0, 5), 1000, 53)),
            Ok(())
        );
        assert_eq!(
            p.check(&udp_from(me, Ipv4Addr::new(10, 0, 0, 6), 1000, 53)),
            Err(DropReason::SpoofedIp)
        );
        assert_eq!(
            p.check(&udp_from(pair_mac, Ipv4Addr::new(10, 0, 9, 77), 1000, 53)),
            Ok(())
        );
        // A pair's prefix is only good with the pair's MAC.
        assert_eq!(
            p.check(&udp_from(me, Ipv4Addr::new(10, 0, 9, 77), 1000, 53)),
            Err(DropReason::SpoofedIp)
        );
        let other = Mac::from_bytes(&[0xfa, 0x16, 0x3e, 0, 0, 9]);
        assert_eq!(
            p.check(&udp_from(other, Ipv4Addr::new(10, 0, 0, 5), 1000, 53)),
            Err(DropReason::SpoofedMac)
        );
        assert_eq!(
            p.check(&udp_from(me, Ipv4Addr::UNSPECIFIED, 68, 67)),
            Ok(())
        );
        assert_eq!(
            p.check(&udp_from(me, Ipv4Addr::new(10, 0, 0, 5), 67, 68)),
            Err(DropReason::RogueDhcp)
        );
        let off = PortSecurity {
            enabled: false,
            ..p
        };
        assert_eq!(
            off.check(&udp_from(other, Ipv4Addr::new(1, 2, 3, 4), 67, 68)),
            Ok(())
        );
    }
}
