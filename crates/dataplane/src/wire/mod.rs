//! Packet views. Ethernet, ARP, IPv4, ICMPv4, UDP, TCP and DHCPv4 come from
//! smoltcp's `wire` (checked views with `new_checked` and `Repr::parse/emit`);
//! 802.1Q and VXLAN, which smoltcp lacks, are written here in the same style.
//! Nothing in this module panics on input bytes.

pub mod vlan;
pub mod vxlan;

pub use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, DhcpMessageType, DhcpPacket, DhcpRepr, EthernetAddress,
    EthernetFrame, EthernetProtocol, EthernetRepr, Icmpv4Packet, Icmpv4Repr, IpProtocol,
    Ipv4Address, Ipv4Packet, Ipv4Repr, TcpPacket, UdpPacket, UdpRepr,
};

/// A frame or header that does not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed packet")]
pub struct Error;

pub type Result<T> = std::result::Result<T, Error>;

impl From<smoltcp::wire::Error> for Error {
    fn from(_: smoltcp::wire::Error) -> Self {
        Error
    }
}
