//! DHCPv4 responder: answers DISCOVER with OFFER and REQUEST with ACK (or NAK)
//! for the one lease the controller configured for a port. Used by the vRouter
//! for its local interfaces and by the gateway for VLAN-side ports.

use std::net::Ipv4Addr;

use smoltcp::wire::{
    DhcpMessageType, DhcpOption, DhcpPacket, DhcpRepr, EthernetFrame, EthernetProtocol, IpProtocol,
    Ipv4Packet, UdpPacket,
};

use crate::frames::{self, Mac};

pub const SERVER_PORT: u16 = 67;
/// Host routes carried in option 121 (9 bytes each at most, plus the default).
pub const MAX_ROUTES: usize = 26;
pub const CLIENT_PORT: u16 = 68;

/// Everything a port's DHCP answer carries: the controller's type, used as is.
pub use switchyard_proto::Lease;

/// What a frame turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not a DHCP client message: forward it normally.
    NotDhcp,
    /// A DHCP client message that does not parse: drop and count.
    Malformed,
    /// A DHCP message the server ignores (RELEASE, INFORM, DECLINE...).
    Ignored,
    /// The reply frame to send back to the client's port.
    Reply(Vec<u8>),
}

use crate::frames::prefix_mask as mask;

/// RFC 3442 classless static routes, option 121.
fn classless_routes(routes: &[(Ipv4Addr, u8, Ipv4Addr)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (dst, len, via) in routes {
        let len = (*len).min(32);
        out.push(len);
        let significant = usize::from(len).div_ceil(8);
        out.extend_from_slice(&dst.octets()[..significant]);
        out.extend_from_slice(&via.octets());
    }
    out
}

/// Answers a DHCP client message from `client_mac` with `lease`.
pub fn respond(frame: &[u8], server_mac: Mac, lease: &Lease) -> Verdict {
    let Ok(eth) = EthernetFrame::new_checked(frame) else {
        return Verdict::NotDhcp;
    };
    if eth.ethertype() != EthernetProtocol::Ipv4 {
        return Verdict::NotDhcp;
    }
    let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else {
        return Verdict::NotDhcp;
    };
    if ip.next_header() != IpProtocol::Udp {
        return Verdict::NotDhcp;
    }
    let Ok(udp) = UdpPacket::new_checked(ip.payload()) else {
        return Verdict::NotDhcp;
    };
    if udp.dst_port() != SERVER_PORT || udp.src_port() != CLIENT_PORT {
        return Verdict::NotDhcp;
    }
    let Ok(pkt) = DhcpPacket::new_checked(udp.payload()) else {
        return Verdict::Malformed;
    };
    let Ok(req) = DhcpRepr::parse(&pkt) else {
        return Verdict::Malformed;
    };
    // The answer is switched to chaddr: it must be the sender, or a VM could
    // aim answers at another VM.
    if req.client_hardware_address != eth.src_addr() {
        return Verdict::Malformed;
    }
    let reply_type = match req.message_type {
        DhcpMessageType::Discover => DhcpMessageType::Offer,
        DhcpMessageType::Request => {
            let asked = req.requested_ip.unwrap_or(req.client_ip);
            let ours = req.server_identifier.is_none_or(|s| s == lease.server);
            if !ours {
                // The client chose another server's offer.
                return Verdict::Ignored;
            }
            if asked == lease.ip {
                DhcpMessageType::Ack
            } else {
                DhcpMessageType::Nak
            }
        }
        _ => return Verdict::Ignored,
    };
    let nak = reply_type == DhcpMessageType::Nak;
    // RFC 3442: a client that gets option 121 ignores option 3, so the default
    // route goes into 121 too (as Neutron's dnsmasq does). Bounded so the option
    // stays within 255 bytes.
    let mut route_list: Vec<(Ipv4Addr, u8, Ipv4Addr)> =
        lease.routes.iter().take(MAX_ROUTES).copied().collect();
    if let (false, Some(r)) = (route_list.is_empty(), lease.router) {
        route_list.push((Ipv4Addr::UNSPECIFIED, 0, r));
    }
    let routes = classless_routes(&route_list);
    let mtu = lease.mtu.to_be_bytes();
    let mut extra: Vec<DhcpOption<'_>> = Vec::new();
    if !nak {
        extra.push(DhcpOption {
            kind: 26,
            data: &mtu,
        });
        if !routes.is_empty() {
            extra.push(DhcpOption {
                kind: 121,
                data: &routes,
            });
        }
    }
    let dns = if nak || lease.dns.is_empty() {
        None
    } else {
        let mut v = heapless::Vec::new();
        for d in lease.dns.iter().take(3) {
            let _ = v.push(*d);
        }
        Some(v)
    };
    let rep = DhcpRepr {
        message_type: reply_type,
        transaction_id: req.transaction_id,
        secs: 0,
        client_hardware_address: req.client_hardware_address,
        client_ip: Ipv4Addr::UNSPECIFIED,
        your_ip: if nak { Ipv4Addr::UNSPECIFIED } else { lease.ip },
        server_ip: Ipv4Addr::UNSPECIFIED,
        router: if nak { None } else { lease.router },
        subnet_mask: if nak {
            None
        } else {
            Some(mask(lease.prefix_len))
        },
        relay_agent_ip: Ipv4Addr::UNSPECIFIED,
        broadcast: false,
        requested_ip: None,
        client_identifier: None,
        server_identifier: Some(lease.server),
        parameter_request_list: None,
        dns_servers: dns,
        max_size: None,
        lease_duration: if nak { None } else { Some(lease.lease_secs) },
        renew_duration: None,
        rebind_duration: None,
        additional_options: &extra,
    };
    let mut body = vec![0u8; rep.buffer_len()];
    let mut p = DhcpPacket::new_unchecked(&mut body[..]);
    if rep.emit(&mut p).is_err() {
        return Verdict::Malformed;
    }
    // RFC 2131 4.1: a renewing client (ciaddr set) is answered by unicast; a
    // client that asked for broadcast gets broadcast; others get the broadcast
    // address at their own MAC (they have no address yet).
    let (eth_dst, ip_dst) = if !req.client_ip.is_unspecified() && !nak {
        (req.client_hardware_address, req.client_ip)
    } else if req.broadcast {
        (frames::BROADCAST, Ipv4Addr::BROADCAST)
    } else {
        (req.client_hardware_address, Ipv4Addr::BROADCAST)
    };
    Verdict::Reply(frames::udp(
        eth_dst,
        server_mac,
        lease.server,
        ip_dst,
        SERVER_PORT,
        CLIENT_PORT,
        64,
        &body,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_and_routes() {
        assert_eq!(mask(24), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(mask(0), Ipv4Addr::new(0, 0, 0, 0));
        assert_eq!(mask(32), Ipv4Addr::new(255, 255, 255, 255));
        let r = classless_routes(&[(Ipv4Addr::new(10, 1, 0, 0), 16, Ipv4Addr::new(50, 50, 50, 1))]);
        assert_eq!(r, vec![16, 10, 1, 50, 50, 50, 1]);
    }
}
