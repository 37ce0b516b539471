//! The gateway: the role a Juniper vMX plays in the reference deployment.
//!
//! Ports: one trunk (802.1Q frames to the fabric switch joining the OVS and
//! SR-IOV computes), the underlay (VXLAN to and from the vRouters, as
//! [`Input::Underlay`]/[`Output::Underlay`]) and external ports (untagged
//! Ethernet to the upstream router).
//!
//! * **Bridge domains** join a VLAN on the trunk and a VNI on the overlay
//!   (EVPN-style L2 gateway). MACs are learned on both sides with ageing; remote
//!   vRouter MACs also come from config. BUM from the trunk is replicated to the
//!   domain's flood VTEPs; BUM from the overlay goes to the trunk only (split
//!   horizon).
//! * **Router interfaces** own a subnet's gateway IP and MAC in a bridge domain:
//!   they answer ARP (from either side), answer ping, and route between each
//!   other (within their router) and to the external network.
//! * **Static routes** (Neutron's extraroute) per router: a prefix via a next
//!   hop on one of the router's interface subnets.
//! * **SNAT** (connection table for ICMP echo, UDP and TCP with timeouts) and
//!   **floating IPs** (1:1) translate to and from the external network.
//! * **DHCP** for VLAN-side ports (OVS and SR-IOV VMs), tagged back on the trunk.
//!
//! Next hops are resolved from config (remote MACs' IPs, DHCP leases) or by
//! ARP; packets wait in a small queue while their next hop is being resolved.
//!
//! Each router (the [`RouterInterface::router`] its interfaces name) is its own
//! routing domain: a packet that came in on one of its interfaces is routed
//! only to that router's interfaces and static routes, or out to the external
//! network with that router's SNAT address or floating IPs. Subnets must not
//! overlap within a router (checked by [`Gateway::apply`]); across routers they
//! may. SNAT connections remember the router they belong to, so replies come
//! back into the right one.
//!
//! # The SNAT path is allocation-light
//!
//! Translating a packet costs hash lookups (bridge learning refresh, connection
//! table) and exactly one allocation: the output frame, built with its headers
//! in place and rewritten there with incremental checksum updates. No table is
//! rebuilt per packet. [`snat_fixture`] sets up the path for a benchmark:
//!
//! ```
//! use switchyard_dataplane::gateway::snat_fixture;
//! use switchyard_dataplane::{Input, Instant, Output, Pipeline};
//!
//! let mut f = snat_fixture(64);
//! let mut out = Vec::with_capacity(1);
//! for i in 0..10_000 {
//!     out.clear();
//!     let now = Instant::from_millis(i);
//!     f.gateway.process(now, Input::Underlay { src: f.vtep, data: &f.packet }, &mut out);
//!     assert!(matches!(&out[..], [Output::Frame { .. }]));
//! }
//! assert_eq!(f.gateway.nat_connections(), 1);
//! assert_eq!(f.gateway.counters().tx, 10_000);
//! ```

mod nat;

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddrV4};

use serde::{Deserialize, Serialize};
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    Icmpv4Message, Icmpv4Packet, IpProtocol, Ipv4Packet, TcpPacket, UdpPacket,
};

pub use nat::NatTimeouts;
use nat::Rewrite;

use crate::conntrack::{ICMP, SnatTo, TCP, TcpFlags, Tracker, Tuple, UDP};

use crate::dhcp::{self, Lease};
use crate::frames::{self, Mac};
pub use crate::vrouter::RemoteMac;
use crate::wire::{vlan, vxlan};
use crate::{Counters, DropReason, Duration, Input, Instant, Output, Pipeline, PortNo};

/// Learned MACs are forgotten after this long without traffic.
pub const MAC_AGEING: Duration = Duration::from_secs(300);
/// Learned ARP entries live this long.
pub const NEIGH_TIMEOUT: Duration = Duration::from_secs(300);
/// An unanswered ARP request is repeated after this long.
pub const ARP_RETRY: Duration = Duration::from_secs(1);
/// A packet waiting for ARP is dropped after this long.
pub const PENDING_TIMEOUT: Duration = Duration::from_secs(3);
/// Packets waiting for ARP, in total.
pub const MAX_PENDING: usize = 64;
/// Learned MACs, over all bridge domains.
pub const MAX_LEARNED: usize = 65_536;
/// Learned ARP entries, over all links.
pub const MAX_NEIGH: usize = 65_536;

const ETHERTYPE_IPV4: u16 = 0x0800;
/// VXLAN flags byte with the I (VNI present) bit.
const VXLAN_FLAGS: u8 = 0x08;

/// The `vlan` of a bridge domain that has no VLAN side: the network is
/// routed by the gateway but has no OVS or SR-IOV ports.
pub const NO_VLAN: u16 = 0;

/// A subnet's gateway address, owned by the gateway in a bridge domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterInterface {
    pub id: String,
    /// The router the interface belongs to: interfaces with the same `router`
    /// form one routing domain (the empty string is a router id like any other).
    #[serde(default)]
    pub router: String,
    /// The bridge domain (by VNI) the interface sits in.
    pub vni: u32,
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    #[serde(with = "crate::frames::mac_serde")]
    pub mac: Mac,
}

/// The interface to the external network and its default route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct External {
    pub port: PortNo,
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    #[serde(with = "crate::frames::mac_serde")]
    pub mac: Mac,
    pub next_hop: Ipv4Addr,
}

/// Source NAT to `external_ip` for traffic from these router interfaces (all
/// of one router).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snat {
    pub router_interface_ids: Vec<String>,
    pub external_ip: Ipv4Addr,
}

/// 1:1 NAT between an external address and an inside host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FloatingIp {
    pub external_ip: Ipv4Addr,
    pub internal_ip: Ipv4Addr,
    pub router_interface_id: String,
}

/// A VLAN-side port the gateway answers DHCP for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DhcpPort {
    pub vlan: u16,
    #[serde(with = "crate::frames::mac_serde")]
    pub mac: Mac,
    pub lease: Lease,
}

/// Configuration changes, applied in order under one version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Update {
    /// Creates or replaces the bridge domain joining trunk VLAN `vlan` and VNI `vni`.
    BridgeDomain {
        vlan: u16,
        vni: u32,
        flood: Vec<Ipv4Addr>,
    },
    /// Removes a bridge domain and its remote MACs.
    RemoveBridgeDomain {
        vni: u32,
    },
    RemoteMac(RemoteMac),
    RemoveRemoteMac {
        vni: u32,
        #[serde(with = "crate::frames::mac_serde")]
        mac: Mac,
    },
    /// Creates or replaces (by id) a router interface.
    RouterInterface(RouterInterface),
    RemoveRouterInterface {
        id: String,
    },
    /// Creates or replaces (by port) an external interface.
    External(External),
    RemoveExternal {
        port: PortNo,
    },
    /// Creates or replaces (by external IP) an SNAT rule.
    Snat(Snat),
    RemoveSnat {
        external_ip: Ipv4Addr,
    },
    /// Creates or replaces (by external IP) a floating IP.
    FloatingIp(FloatingIp),
    RemoveFloatingIp {
        external_ip: Ipv4Addr,
    },
    /// Creates or replaces (by VLAN and MAC) a DHCP port.
    DhcpPort(DhcpPort),
    RemoveDhcpPort {
        vlan: u16,
        #[serde(with = "crate::frames::mac_serde")]
        mac: Mac,
    },
    /// Creates or replaces (by router, destination and prefix length) a static
    /// route of `router`: `destination/prefix_len` via `nexthop`, which must be
    /// on one of the router's interface subnets.
    Route {
        router: String,
        destination: Ipv4Addr,
        prefix_len: u8,
        nexthop: Ipv4Addr,
    },
    RemoveRoute {
        router: String,
        destination: Ipv4Addr,
        prefix_len: u8,
    },
    /// Creates or replaces (by router) a router's gateway address on the
    /// external network (Neutron's `qg-` interface): answered to ARP and
    /// ping there, whether or not the router source-NATs.
    RouterGateway {
        router: String,
        ip: Ipv4Addr,
    },
    RemoveRouterGateway {
        router: String,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("version {got} is not newer than the applied version {have}")]
    StaleVersion { have: u64, got: u64 },
    #[error("VLAN {0} is outside 1..=4094")]
    BadVlan(u16),
    #[error("VNI {0} does not fit in 24 bits")]
    BadVni(u32),
    #[error("prefix length {0} is longer than 32")]
    BadPrefix(u8),
    #[error("VLAN {vlan} is bridged to more than one VNI")]
    VlanInUse { vlan: u16 },
    #[error("router interface {id} names VNI {vni}, which has no bridge domain")]
    NoBridgeDomain { id: String, vni: u32 },
    #[error("{what} names router interface {id}, which does not exist")]
    NoRouterInterface { what: String, id: String },
    #[error("router interfaces {0} and {1} of one router have overlapping subnets")]
    OverlappingSubnets(String, String),
    #[error(
        "router interfaces {0} and {1} of different routers share a MAC or an IP in one bridge domain"
    )]
    InterfaceClash(String, String),
    #[error("SNAT {external_ip} names router interfaces {a} and {b} of different routers")]
    SnatAcrossRouters {
        external_ip: Ipv4Addr,
        a: String,
        b: String,
    },
    #[error("route {destination}/{prefix_len}: the destination has host bits set")]
    NotNetworkAddress {
        destination: Ipv4Addr,
        prefix_len: u8,
    },
    #[error(
        "route {destination}/{prefix_len} of router {router:?}: next hop {nexthop} is not a neighbour on one of the router's interface subnets"
    )]
    BadNexthop {
        router: String,
        destination: Ipv4Addr,
        prefix_len: u8,
        nexthop: Ipv4Addr,
    },
    #[error("port {0} is the trunk and cannot be an external port")]
    TrunkPort(PortNo),
}

#[derive(Debug, Clone)]
struct DomainCfg {
    vlan: u16,
    flood: Vec<Ipv4Addr>,
}

/// The configuration as applied (cloned, changed and validated by `apply`).
#[derive(Debug, Clone, Default)]
struct Config {
    domains: BTreeMap<u32, DomainCfg>,
    remotes: HashMap<(u32, Mac), RemoteMac>,
    rifs: Vec<RouterInterface>,
    externals: BTreeMap<PortNo, External>,
    snats: BTreeMap<Ipv4Addr, Snat>,
    fips: BTreeMap<Ipv4Addr, FloatingIp>,
    dhcp: HashMap<(u16, Mac), Lease>,
    /// (router, destination, prefix length) → next hop.
    routes: BTreeMap<(String, Ipv4Addr, u8), Ipv4Addr>,
    /// Router → its gateway address on the external network.
    router_gws: BTreeMap<String, Ipv4Addr>,
}

/// Routers are numbered for the packet path and the SNAT connection table; a
/// router keeps its number while it has interfaces.
type RouterNo = u64;

/// A static route as the packet path uses it.
#[derive(Debug, Clone, Copy)]
struct StaticRoute {
    destination: Ipv4Addr,
    prefix_len: u8,
    nexthop: Ipv4Addr,
    /// The router interface (index into `Config::rifs`) the next hop is on.
    rif: usize,
}

/// Lookup tables derived from [`Config`], rebuilt on every `apply` (never per packet).
#[derive(Debug, Default)]
struct Derived {
    vlans: HashMap<u16, u32>,
    static_bridge: HashMap<(u32, Mac), Ipv4Addr>,
    static_neigh: HashMap<(u32, Ipv4Addr), Mac>,
    /// The SNAT address of each router interface (same index as `Config::rifs`).
    rif_snat: Vec<Option<Ipv4Addr>>,
    /// (router interface index, inside IP) → floating IP.
    fip_out: HashMap<(usize, Ipv4Addr), Ipv4Addr>,
    /// floating IP → (router interface index, inside IP).
    fip_in: HashMap<Ipv4Addr, (usize, Ipv4Addr)>,
    /// The router of each router interface (same index as `Config::rifs`).
    rif_router: Vec<RouterNo>,
    /// Each router's static routes, longest prefix first.
    routes: HashMap<RouterNo, Vec<StaticRoute>>,
}

/// Where a MAC of a bridge domain lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dest {
    Trunk,
    Vtep(Ipv4Addr),
}

#[derive(Debug, Clone, Copy)]
struct Learned {
    dest: Dest,
    expires: Instant,
}

/// An L2 segment the gateway routes onto, for ARP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Link {
    Domain(u32),
    External(PortNo),
}

/// Where a routed packet leaves: the link, and the MAC and IP it leaves from.
#[derive(Debug, Clone, Copy)]
struct Egress {
    link: Link,
    mac: Mac,
    ip: Ipv4Addr,
}

/// How a frame is sent.
#[derive(Debug, Clone, Copy)]
enum Via {
    Trunk(u16),
    Vtep(Ipv4Addr, u32),
    Port(PortNo),
}

#[derive(Debug, Clone, Copy)]
enum Place {
    One(Via),
    Flood(u32),
}

#[derive(Debug)]
struct Pending {
    eg: Egress,
    next_hop: Ipv4Addr,
    /// The IPv4 packet, already rewritten.
    packet: Vec<u8>,
    deadline: Instant,
}

/// Which side of a bridge domain a frame came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Trunk,
    Overlay,
}

/// The Ethernet addresses, type and payload of a frame (tagged or not).
#[derive(Debug, Clone, Copy)]
struct L2<'a> {
    dst: Mac,
    src: Mac,
    ethertype: EthernetProtocol,
    payload: &'a [u8],
}

impl<'a> L2<'a> {
    fn parse(frame: &'a [u8], tagged: bool) -> Option<Self> {
        let hl = if tagged { 14 + vlan::TAG_LEN } else { 14 };
        if frame.len() < hl {
            return None;
        }
        let (dst, src) = frames::macs(frame)?;
        let et = u16::from_be_bytes([frame[hl - 2], frame[hl - 1]]);
        Some(L2 {
            dst,
            src,
            ethertype: EthernetProtocol::from(et),
            payload: &frame[hl..],
        })
    }

    fn is_dhcp_request(&self) -> bool {
        self.ethertype == EthernetProtocol::Ipv4
            && Ipv4Packet::new_checked(self.payload).is_ok_and(|ip| {
                ip.next_header() == IpProtocol::Udp
                    && UdpPacket::new_checked(ip.payload())
                        .is_ok_and(|u| u.dst_port() == dhcp::SERVER_PORT)
            })
    }
}

use crate::frames::in_prefix as in_subnet;

/// How many connections the gateway's SNAT tracks at once (Linux's usual
/// `nf_conntrack_max`); a new one beyond is dropped as `nat_exhausted`.
pub const SNAT_CONNECTIONS_MAX: usize = 262_144;

/// The address of a tuple the gateway built from IPv4 packets.
fn v4(a: std::net::IpAddr) -> Ipv4Addr {
    match a {
        std::net::IpAddr::V4(v) => v,
        std::net::IpAddr::V6(v) => v.to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED),
    }
}

fn earliest(next: &mut Option<Instant>, t: Instant) {
    *next = Some(next.map_or(t, |n| n.min(t)));
}

/// One SNAT binding, for operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatBinding {
    /// The router the inside host is behind.
    pub router: String,
    pub proto: IpProtocol,
    /// Inside address and port (or ICMP echo id).
    pub inside: SocketAddrV4,
    pub remote: SocketAddrV4,
    /// External address and the allocated port (or ICMP echo id).
    pub external: SocketAddrV4,
    pub expires: Instant,
}

#[derive(Debug)]
pub struct Gateway {
    trunk: PortNo,
    vtep: Ipv4Addr,
    /// Source of DHCP answers in a domain with no router interface.
    mac: Mac,
    version: u64,
    cfg: Config,
    derived: Derived,
    learned: HashMap<(u32, Mac), Learned>,
    neigh: HashMap<(Link, Ipv4Addr), (Mac, Instant)>,
    arp_sent: HashMap<(Link, Ipv4Addr), Instant>,
    pending: Vec<Pending>,
    /// SNAT'd connections, zoned by the router the inside host is behind.
    nat: Tracker<RouterNo>,
    /// The number of each router that has interfaces.
    routers: HashMap<String, RouterNo>,
    next_router: RouterNo,
    counters: Counters,
    /// (VLAN, MAC) pairs to announce on the trunk at the next poll, and the
    /// round after that (see [`ANNOUNCE_AGAIN`]).
    announce: Vec<(u16, Mac)>,
    announce_again: Option<(Instant, Vec<(u16, Mac)>)>,
}

/// How long after the first round of announcements the second goes out (a
/// switch busy with the first, or a link coming up, misses fewer).
pub const ANNOUNCE_AGAIN: Duration = Duration::from_millis(100);

/// A RARP request from `mac` to everyone: what QEMU sends to announce a
/// migrated NIC, and what a gateway taking over a VLAN sends for every MAC it
/// now reaches, so that the VLAN's switches learn where those MACs are.
pub fn rarp_announce(mac: Mac) -> Vec<u8> {
    const ETHERTYPE_RARP: u16 = 0x8035;
    let mut body = Vec::with_capacity(28);
    body.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 3]);
    body.extend_from_slice(&mac.0);
    body.extend_from_slice(&[0; 4]);
    body.extend_from_slice(&mac.0);
    body.extend_from_slice(&[0; 4]);
    let mut f = frames::ethernet(
        frames::BROADCAST,
        mac,
        EthernetProtocol::Unknown(ETHERTYPE_RARP),
        &body,
    );
    // Padded to the Ethernet minimum, as a NIC would send it.
    f.resize(f.len().max(60), 0);
    f
}

impl Gateway {
    /// A gateway with its trunk on port `trunk` and VTEP address `vtep`; `mac`
    /// is its own MAC (DHCP answers in domains with no router interface).
    pub fn new(trunk: PortNo, vtep: Ipv4Addr, mac: Mac) -> Self {
        Gateway {
            trunk,
            vtep,
            mac,
            version: 0,
            cfg: Config::default(),
            derived: Derived::default(),
            learned: HashMap::new(),
            neigh: HashMap::new(),
            arp_sent: HashMap::new(),
            pending: Vec::new(),
            nat: Tracker::new(SNAT_CONNECTIONS_MAX),
            routers: HashMap::new(),
            next_router: 0,
            counters: Counters::default(),
            announce: Vec::new(),
            announce_again: None,
        }
    }

    /// What a new configuration makes this gateway newly reach on a VLAN:
    /// every MAC behind the overlay (and every router interface) of a domain
    /// whose VLAN side is new here, and each remote MAC or interface added to
    /// a domain that already had it. Announced on the trunk so the VLAN side
    /// stops sending them to a gateway that no longer bridges them.
    fn newly_reached(old: &Config, new: &Config) -> Vec<(u16, Mac)> {
        // One pass over the remote MACs and interfaces, each looking its
        // domain up (a pass per domain was quadratic: 2,000 domains times
        // 100,000 remote MACs for every update a large gateway applied).
        let vlan_of = |vni: u32| {
            let d = new.domains.get(&vni).filter(|d| d.vlan != NO_VLAN)?;
            let had_vlan = old.domains.get(&vni).is_some_and(|o| o.vlan == d.vlan);
            Some((d.vlan, had_vlan))
        };
        let mut out = Vec::new();
        for r in new.remotes.values() {
            if let Some((vlan, had_vlan)) = vlan_of(r.vni)
                && (!had_vlan || !old.remotes.contains_key(&(r.vni, r.mac)))
            {
                out.push((vlan, r.mac));
            }
        }
        for r in &new.rifs {
            if let Some((vlan, had_vlan)) = vlan_of(r.vni)
                && (!had_vlan || !old.rifs.iter().any(|o| o.vni == r.vni && o.mac == r.mac))
            {
                out.push((vlan, r.mac));
            }
        }
        // In domain order, as before (announcements go out in this order).
        let order: HashMap<u16, usize> = new
            .domains
            .values()
            .enumerate()
            .map(|(i, d)| (d.vlan, i))
            .collect();
        out.sort_by_key(|(vlan, _)| order.get(vlan).copied().unwrap_or(usize::MAX));
        out
    }

    /// MAC announcements waiting for the next poll (tests, introspection).
    pub fn pending_announcements(&self) -> usize {
        self.announce.len()
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn vtep(&self) -> Ipv4Addr {
        self.vtep
    }

    pub fn set_nat_timeouts(&mut self, t: NatTimeouts) {
        self.nat.timeouts = t;
    }

    /// The range SNAT ports and ICMP ids are allocated from (default 1024..=65535).
    pub fn set_nat_port_range(&mut self, lo: u16, hi: u16) {
        self.nat.set_snat_range(lo, hi);
    }

    /// Applies one version of updates. All or nothing: a bad update leaves the
    /// previous configuration in place.
    pub fn apply(&mut self, version: u64, updates: &[Update]) -> Result<(), ConfigError> {
        if version <= self.version && version != 0 {
            return Err(ConfigError::StaleVersion {
                have: self.version,
                got: version,
            });
        }
        let mut cfg = self.cfg.clone();
        for u in updates {
            cfg.apply_one(u, self.trunk)?;
        }
        cfg.validate()?;
        self.announce.extend(Self::newly_reached(&self.cfg, &cfg));
        // Config is fresher news than what was learned about a remote MAC.
        for u in updates {
            if let Update::RemoteMac(r) = u {
                self.learned.remove(&(r.vni, r.mac));
            }
        }
        self.cfg = cfg;
        // A router keeps its number while it has interfaces; a router that
        // comes back later is a new one (its old connections are gone).
        let rifs = &self.cfg.rifs;
        self.routers
            .retain(|name, _| rifs.iter().any(|r| r.router == *name));
        for r in rifs {
            if !self.routers.contains_key(&r.router) {
                self.routers.insert(r.router.clone(), self.next_router);
                self.next_router += 1;
            }
        }
        self.derived = self.cfg.derive(&self.routers);
        let domains = &self.cfg.domains;
        let externals = &self.cfg.externals;
        let link_ok = |l: &Link| match l {
            Link::Domain(v) => domains.contains_key(v),
            Link::External(p) => externals.contains_key(p),
        };
        self.learned.retain(|(vni, _), _| domains.contains_key(vni));
        self.neigh.retain(|(l, _), _| link_ok(l));
        self.arp_sent.retain(|(l, _), _| link_ok(l));
        self.pending.retain(|p| link_ok(&p.eg.link));
        let snats = &self.cfg.snats;
        let live = &self.derived.rif_router;
        self.nat.retain(|router, _, to| {
            to.is_some_and(|to| snats.contains_key(&to.ip)) && live.contains(&router)
        });
        self.version = version;
        Ok(())
    }

    /// A bridge domain's MAC table: MAC → "trunk vlan N", "vtep A.B.C.D"
    /// (learned) or "vtep A.B.C.D (config)".
    pub fn bridge_table(&self, vni: u32) -> Vec<(Mac, String)> {
        let vlan = self.cfg.domains.get(&vni).map_or(0, |d| d.vlan);
        // Configured entries win over learned ones, as in forwarding.
        let mut v: Vec<(Mac, String)> = self
            .learned
            .iter()
            .filter(|((n, m), _)| *n == vni && !self.derived.static_bridge.contains_key(&(vni, *m)))
            .map(|((_, m), l)| {
                let to = match l.dest {
                    Dest::Trunk => format!("trunk vlan {vlan}"),
                    Dest::Vtep(t) => format!("vtep {t}"),
                };
                (*m, to)
            })
            .collect();
        for ((n, m), t) in &self.derived.static_bridge {
            if *n == vni {
                v.push((*m, format!("vtep {t} (config)")));
            }
        }
        v.sort_by_key(|(m, _)| m.0);
        v
    }

    /// Forgets what was learned about `mac`, bridge and ARP entries alike
    /// (the controller withdrew it: its port is gone or moved).
    pub fn forget_mac(&mut self, mac: &Mac) {
        self.learned.retain(|(_, m), _| m != mac);
        self.neigh.retain(|_, (m, _)| m != mac);
    }

    /// The ARP cache: (link, IP, MAC), learned entries only.
    pub fn arp_cache(&self) -> Vec<(String, Ipv4Addr, Mac)> {
        let mut v: Vec<(String, Ipv4Addr, Mac)> = self
            .neigh
            .iter()
            .map(|((l, ip), (m, _))| {
                let l = match l {
                    Link::Domain(v) => format!("vni {v}"),
                    Link::External(p) => format!("port {p}"),
                };
                (l, *ip, *m)
            })
            .collect();
        v.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        v
    }

    /// The trunk port.
    pub fn trunk(&self) -> PortNo {
        self.trunk
    }

    /// Routers' gateway addresses on the external network, by router.
    pub fn router_gateways(&self) -> &BTreeMap<String, Ipv4Addr> {
        &self.cfg.router_gws
    }

    /// The bridge domains as (VNI, VLAN, flood VTEPs), sorted by VNI.
    pub fn bridge_domains(&self) -> Vec<(u32, u16, &[Ipv4Addr])> {
        self.cfg
            .domains
            .iter()
            .map(|(vni, d)| (*vni, d.vlan, d.flood.as_slice()))
            .collect()
    }

    /// A bridge domain's IP → MAC table as next hops are resolved in it,
    /// sorted by IP: configured entries (remote MACs' IPs, DHCP leases) win
    /// over learned ones.
    pub fn arp_table(&self, vni: u32) -> Vec<(Ipv4Addr, Mac)> {
        let mut m: BTreeMap<Ipv4Addr, Mac> = self
            .neigh
            .iter()
            .filter_map(|((l, ip), (mac, _))| (*l == Link::Domain(vni)).then_some((*ip, *mac)))
            .collect();
        for ((n, ip), mac) in &self.derived.static_neigh {
            if *n == vni {
                m.insert(*ip, *mac);
            }
        }
        m.into_iter().collect()
    }

    /// Live SNAT connections.
    pub fn nat_connections(&self) -> usize {
        self.nat.len()
    }

    /// The SNAT connection table, sorted by inside address.
    pub fn nat_table(&self) -> Vec<NatBinding> {
        let router = |n: RouterNo| {
            self.routers
                .iter()
                .find(|(_, v)| **v == n)
                .map(|(k, _)| k.clone())
                .unwrap_or_default()
        };
        let mut v: Vec<NatBinding> = self
            .nat
            .snat_entries()
            .map(|b| NatBinding {
                router: router(b.zone),
                proto: IpProtocol::from(b.original.proto),
                inside: SocketAddrV4::new(v4(b.original.src), b.original.sport),
                remote: SocketAddrV4::new(v4(b.original.dst), b.original.dport),
                external: SocketAddrV4::new(b.to.ip, b.to.port),
                expires: b.expires,
            })
            .collect();
        v.sort_by(|a, b| {
            (a.inside, a.remote, u8::from(a.proto), &a.router).cmp(&(
                b.inside,
                b.remote,
                u8::from(b.proto),
                &b.router,
            ))
        });
        v
    }

    /// Packets waiting for ARP resolution.
    pub fn pending_packets(&self) -> usize {
        self.pending.len()
    }

    fn tx(&mut self, out: &mut Vec<Output>, o: Output) {
        self.counters.tx += 1;
        out.push(o);
    }

    fn output(&self, via: Via, data: Vec<u8>) -> Output {
        match via {
            Via::Trunk(_) => Output::Frame {
                port: self.trunk,
                data,
            },
            Via::Vtep(dst, _) => Output::Underlay { dst, data },
            Via::Port(port) => Output::Frame { port, data },
        }
    }

    /// A buffer holding the headers for `via` and an Ethernet header, with room
    /// for `payload_len` more bytes; the Ethernet payload starts at the
    /// returned offset.
    fn headers(
        via: Via,
        dst: Mac,
        src: Mac,
        ethertype: u16,
        payload_len: usize,
    ) -> (Vec<u8>, usize) {
        let off = match via {
            Via::Trunk(_) => 14 + vlan::TAG_LEN,
            Via::Vtep(..) => vxlan::HEADER_LEN + 14,
            Via::Port(_) => 14,
        };
        let mut b = Vec::with_capacity(off + payload_len);
        if let Via::Vtep(_, vni) = via {
            let v = vni.to_be_bytes();
            b.extend_from_slice(&[VXLAN_FLAGS, 0, 0, 0, v[1], v[2], v[3], 0]);
        }
        b.extend_from_slice(&dst.0);
        b.extend_from_slice(&src.0);
        if let Via::Trunk(vid) = via {
            b.extend_from_slice(&vlan::TPID.to_be_bytes());
            b.extend_from_slice(&(vid & 0x0fff).to_be_bytes());
        }
        b.extend_from_slice(&ethertype.to_be_bytes());
        (b, off)
    }

    /// An untagged Ethernet frame sent `via`.
    fn wrap(&self, via: Via, frame: Vec<u8>) -> Option<Output> {
        let data = match via {
            Via::Trunk(vid) => vlan::push_tag(&frame, vid).ok()?,
            Via::Vtep(_, vni) => vxlan::encap(vni, &frame),
            Via::Port(_) => frame,
        };
        Some(self.output(via, data))
    }

    /// Every way out of a bridge domain: the trunk and the flood VTEPs.
    fn domain_vias(&self, vni: u32) -> Vec<Via> {
        let Some(d) = self.cfg.domains.get(&vni) else {
            return Vec::new();
        };
        let mut v = Vec::with_capacity(1 + d.flood.len());
        if d.vlan != NO_VLAN {
            v.push(Via::Trunk(d.vlan));
        }
        v.extend(
            d.flood
                .iter()
                .filter(|t| **t != self.vtep)
                .map(|t| Via::Vtep(*t, vni)),
        );
        v
    }

    /// Where a MAC is: the controller's remote routes win over what was learned,
    /// so a spoofed source on the trunk cannot pull a vRouter VM's traffic away.
    fn locate(&self, now: Instant, vni: u32, mac: Mac) -> Option<Dest> {
        if let Some(t) = self.derived.static_bridge.get(&(vni, mac)) {
            return Some(Dest::Vtep(*t));
        }
        self.learned
            .get(&(vni, mac))
            .filter(|l| l.expires > now)
            .map(|l| l.dest)
    }

    /// VXLAN is accepted only from VTEPs the domain floods to or that host one
    /// of its configured MACs.
    fn known_vtep(&self, vni: u32, src: Ipv4Addr) -> bool {
        self.cfg
            .domains
            .get(&vni)
            .is_some_and(|d| d.flood.contains(&src))
            || self
                .cfg
                .remotes
                .values()
                .any(|r| r.vni == vni && r.vtep == src)
    }

    fn place(&self, now: Instant, link: Link, mac: Mac) -> Option<Place> {
        match link {
            Link::External(p) => Some(Place::One(Via::Port(p))),
            Link::Domain(vni) => {
                let vlan = self.cfg.domains.get(&vni)?.vlan;
                Some(match self.locate(now, vni, mac) {
                    Some(Dest::Trunk) => Place::One(Via::Trunk(vlan)),
                    Some(Dest::Vtep(t)) => Place::One(Via::Vtep(t, vni)),
                    None => Place::Flood(vni),
                })
            }
        }
    }

    /// Sends an untagged frame to `dst` in bridge domain `vni`.
    fn send_in_domain(
        &mut self,
        now: Instant,
        vni: u32,
        dst: Mac,
        frame: Vec<u8>,
        out: &mut Vec<Output>,
    ) {
        let vias = match self.place(now, Link::Domain(vni), dst) {
            Some(Place::One(via)) => vec![via],
            Some(Place::Flood(vni)) => self.domain_vias(vni),
            None => Vec::new(),
        };
        for via in vias {
            if let Some(o) = self.wrap(via, frame.clone()) {
                self.tx(out, o);
            }
        }
    }

    fn learn(&mut self, now: Instant, vni: u32, mac: Mac, dest: Dest) {
        if self.cfg.rifs.iter().any(|r| r.mac == mac) {
            return;
        }
        let key = (vni, mac);
        if let Dest::Vtep(t) = dest
            && self.derived.static_bridge.get(&key) == Some(&t)
        {
            // Config already says so.
            self.learned.remove(&key);
            return;
        }
        if let Some(l) = self.learned.get_mut(&key) {
            l.dest = dest;
            l.expires = now + MAC_AGEING;
        } else if self.learned.len() < MAX_LEARNED {
            self.learned.insert(
                key,
                Learned {
                    dest,
                    expires: now + MAC_AGEING,
                },
            );
        }
    }

    fn resolve(&self, now: Instant, link: Link, ip: Ipv4Addr) -> Option<Mac> {
        if let Link::Domain(vni) = link
            && let Some(m) = self.derived.static_neigh.get(&(vni, ip))
        {
            return Some(*m);
        }
        self.neigh
            .get(&(link, ip))
            .and_then(|(m, exp)| (*exp > now).then_some(*m))
    }

    /// Records `ip` at `mac` on `link` and sends what was waiting for it.
    fn learn_neigh(
        &mut self,
        now: Instant,
        link: Link,
        ip: Ipv4Addr,
        mac: Mac,
        out: &mut Vec<Output>,
    ) {
        if ip.is_unspecified() || ip.is_broadcast() || frames::is_bum(&mac) {
            return;
        }
        let statically =
            matches!(link, Link::Domain(v) if self.derived.static_neigh.contains_key(&(v, ip)));
        let key = (link, ip);
        if !statically && (self.neigh.contains_key(&key) || self.neigh.len() < MAX_NEIGH) {
            self.neigh.insert(key, (mac, now + NEIGH_TIMEOUT));
        }
        self.arp_sent.remove(&key);
        if self
            .pending
            .iter()
            .any(|p| p.eg.link == link && p.next_hop == ip)
        {
            let (ready, rest): (Vec<Pending>, Vec<Pending>) = std::mem::take(&mut self.pending)
                .into_iter()
                .partition(|p| p.eg.link == link && p.next_hop == ip);
            self.pending = rest;
            for p in ready {
                self.emit_ip(now, p.eg, mac, &p.packet, None, out);
            }
        }
    }

    /// Sends the IPv4 packet `ip` to `mac` out of `eg`, rewriting it on the way
    /// (in the output buffer) when `rw` is given.
    fn emit_ip(
        &mut self,
        now: Instant,
        eg: Egress,
        mac: Mac,
        ip: &[u8],
        rw: Option<&Rewrite>,
        out: &mut Vec<Output>,
    ) {
        match self.place(now, eg.link, mac) {
            Some(Place::One(via)) => {
                let (mut b, off) = Self::headers(via, mac, eg.mac, ETHERTYPE_IPV4, ip.len());
                b.extend_from_slice(ip);
                if let Some(rw) = rw
                    && let Some(p) = b.get_mut(off..)
                {
                    nat::rewrite(p, rw);
                }
                let o = self.output(via, b);
                self.tx(out, o);
            }
            Some(Place::Flood(vni)) => {
                let mut packet = ip.to_vec();
                if let Some(rw) = rw {
                    nat::rewrite(&mut packet, rw);
                }
                for via in self.domain_vias(vni) {
                    let (mut b, _) = Self::headers(via, mac, eg.mac, ETHERTYPE_IPV4, packet.len());
                    b.extend_from_slice(&packet);
                    let o = self.output(via, b);
                    self.tx(out, o);
                }
            }
            None => self.counters.drop(DropReason::NoRoute),
        }
    }

    /// Sends a routed packet towards `next_hop` out of `eg`: now if the next hop
    /// is known, after ARP otherwise.
    #[allow(clippy::too_many_arguments)]
    fn send_ip(
        &mut self,
        now: Instant,
        eg: Egress,
        next_hop: Ipv4Addr,
        ip: &[u8],
        rw: &Rewrite,
        out: &mut Vec<Output>,
    ) {
        if let Some(mac) = self.resolve(now, eg.link, next_hop) {
            self.emit_ip(now, eg, mac, ip, Some(rw), out);
            return;
        }
        if self.pending.len() < MAX_PENDING {
            let mut packet = ip.to_vec();
            nat::rewrite(&mut packet, rw);
            self.pending.push(Pending {
                eg,
                next_hop,
                packet,
                deadline: now + PENDING_TIMEOUT,
            });
        } else {
            self.counters.drop(DropReason::NoRoute);
        }
        self.solicit(now, eg, next_hop, out);
    }

    /// Sends an ARP request for `ip` out of `eg`, at most once per [`ARP_RETRY`].
    fn solicit(&mut self, now: Instant, eg: Egress, ip: Ipv4Addr, out: &mut Vec<Output>) {
        let key = (eg.link, ip);
        match self.arp_sent.get(&key) {
            Some(t) if now < *t + ARP_RETRY => return,
            None if self.arp_sent.len() >= MAX_NEIGH => return,
            _ => {}
        }
        self.arp_sent.insert(key, now);
        let req = frames::arp(
            ArpOperation::Request,
            frames::BROADCAST,
            eg.mac,
            eg.ip,
            EthernetAddress([0; 6]),
            ip,
        );
        match eg.link {
            Link::External(port) => self.tx(out, Output::Frame { port, data: req }),
            Link::Domain(vni) => {
                for via in self.domain_vias(vni) {
                    if let Some(o) = self.wrap(via, req.clone()) {
                        self.tx(out, o);
                    }
                }
            }
        }
    }

    fn rif_egress(&self, i: usize) -> Option<Egress> {
        let r = self.cfg.rifs.get(i)?;
        Some(Egress {
            link: Link::Domain(r.vni),
            mac: r.mac,
            ip: r.ip,
        })
    }

    /// The router of router interface `i`.
    fn router_of(&self, i: usize) -> Option<RouterNo> {
        self.derived.rif_router.get(i).copied()
    }

    /// The interface of `router` whose subnet holds `ip`.
    fn rif_in(&self, router: RouterNo, ip: Ipv4Addr) -> Option<usize> {
        self.cfg
            .rifs
            .iter()
            .zip(&self.derived.rif_router)
            .position(|(r, n)| *n == router && in_subnet(ip, r.ip, r.prefix_len))
    }

    /// How `router` reaches `dst` through one of its interfaces: the interface
    /// and the next hop (`dst` itself when on-link, else the next hop of the
    /// longest static route holding it).
    fn route_in(&self, router: RouterNo, dst: Ipv4Addr) -> Option<(usize, Ipv4Addr)> {
        if let Some(i) = self.rif_in(router, dst) {
            return Some((i, dst));
        }
        self.derived
            .routes
            .get(&router)?
            .iter()
            .find(|s| in_subnet(dst, s.destination, s.prefix_len))
            .map(|s| (s.rif, s.nexthop))
    }

    fn rif_by_mac(&self, vni: u32, mac: Mac) -> Option<usize> {
        self.cfg
            .rifs
            .iter()
            .position(|r| r.vni == vni && r.mac == mac)
    }

    /// The external interface for a packet to `dst` leaving from `src`.
    fn external_for(&self, dst: Ipv4Addr, src: Ipv4Addr) -> Option<External> {
        let e = &self.cfg.externals;
        e.values()
            .find(|x| in_subnet(dst, x.ip, x.prefix_len))
            .or_else(|| e.values().find(|x| in_subnet(src, x.ip, x.prefix_len)))
            .or_else(|| e.values().next())
            .copied()
    }

    /// How a packet to `dst` leaves through external interface `x`: the
    /// interface, and the next hop (`dst` itself when on-link).
    fn external_egress(x: &External, dst: Ipv4Addr) -> (Egress, Ipv4Addr) {
        let eg = Egress {
            link: Link::External(x.port),
            mac: x.mac,
            ip: x.ip,
        };
        let hop = if in_subnet(dst, x.ip, x.prefix_len) {
            dst
        } else {
            x.next_hop
        };
        (eg, hop)
    }

    /// Whether `ip` is the gateway's own, as seen from `router` (its interfaces
    /// and the external ones) or from the external network (`None`: every
    /// interface).
    fn is_own_ip(&self, router: Option<RouterNo>, ip: Ipv4Addr) -> bool {
        self.cfg
            .rifs
            .iter()
            .zip(&self.derived.rif_router)
            .any(|(r, n)| r.ip == ip && router.is_none_or(|router| *n == router))
            || self.cfg.externals.values().any(|e| e.ip == ip)
            || self.cfg.router_gws.values().any(|g| *g == ip)
    }

    /// Addresses the gateway answers ARP for on the external network.
    fn owns_external(&self, ext: &External, ip: Ipv4Addr) -> bool {
        ext.ip == ip
            || self.cfg.snats.contains_key(&ip)
            || self.derived.fip_in.contains_key(&ip)
            || self.cfg.router_gws.values().any(|g| *g == ip)
    }

    /// Sends a packet the gateway itself originates (e.g. an echo reply) in
    /// `router`'s routing domain, or to the external network (`None`).
    fn originate(
        &mut self,
        now: Instant,
        router: Option<RouterNo>,
        packet: &[u8],
        out: &mut Vec<Output>,
    ) {
        let Ok(ip) = Ipv4Packet::new_checked(packet) else {
            return;
        };
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        let keep = Rewrite::default();
        if let Some((i, hop)) = router.and_then(|r| self.route_in(r, dst)) {
            if let Some(eg) = self.rif_egress(i) {
                self.send_ip(now, eg, hop, packet, &keep, out);
            }
        } else if let Some(x) = self.external_for(dst, src) {
            let (eg, hop) = Self::external_egress(&x, dst);
            self.send_ip(now, eg, hop, packet, &keep, out);
        } else {
            self.counters.drop(DropReason::NoRoute);
        }
    }

    /// Answers an ICMP echo request addressed to the gateway, which came from
    /// `router` (`None`: from the external network); other packets to the
    /// gateway are not handled.
    fn local(
        &mut self,
        now: Instant,
        router: Option<RouterNo>,
        ip: &Ipv4Packet<&[u8]>,
        out: &mut Vec<Output>,
    ) {
        let is_echo = ip.next_header() == IpProtocol::Icmp
            && !ip.more_frags()
            && ip.frag_offset() == 0
            && Icmpv4Packet::new_checked(ip.payload())
                .is_ok_and(|p| p.msg_type() == Icmpv4Message::EchoRequest);
        if !is_echo {
            self.counters.drop(DropReason::Unsupported);
            return;
        }
        let mut reply = ip.as_ref()[..usize::from(ip.total_len())].to_vec();
        let mut p = Ipv4Packet::new_unchecked(&mut reply[..]);
        let (src, dst) = (p.src_addr(), p.dst_addr());
        p.set_src_addr(dst);
        p.set_dst_addr(src);
        p.set_hop_limit(64);
        p.fill_checksum();
        let mut icmp = Icmpv4Packet::new_unchecked(p.payload_mut());
        icmp.set_msg_type(Icmpv4Message::EchoReply);
        icmp.fill_checksum();
        self.originate(now, router, &reply, out);
    }

    fn on_trunk(&mut self, now: Instant, frame: &[u8], out: &mut Vec<Output>) {
        let vid = match vlan::vlan_of(frame) {
            Ok(Some(v)) => v,
            Ok(None) => {
                self.counters.drop(DropReason::UnknownVlan);
                return;
            }
            Err(_) => {
                self.counters.drop(DropReason::Malformed);
                return;
            }
        };
        let Some(l2) = L2::parse(frame, true) else {
            self.counters.drop(DropReason::Malformed);
            return;
        };
        let Some(&vni) = self.derived.vlans.get(&vid) else {
            self.counters.drop(DropReason::UnknownVlan);
            return;
        };
        if frames::is_bum(&l2.src) {
            self.counters.drop(DropReason::Malformed);
            return;
        }
        self.learn(now, vni, l2.src, Dest::Trunk);
        if let Some(lease) = self.cfg.dhcp.get(&(vid, l2.src))
            && l2.is_dhcp_request()
        {
            let server = self
                .cfg
                .rifs
                .iter()
                .find(|r| r.vni == vni)
                .map_or(self.mac, |r| r.mac);
            let verdict = match vlan::pop_tag(frame) {
                Ok(untagged) => dhcp::respond(&untagged, server, lease),
                Err(_) => dhcp::Verdict::Malformed,
            };
            match verdict {
                dhcp::Verdict::Reply(r) => match vlan::push_tag(&r, vid) {
                    Ok(data) => {
                        let port = self.trunk;
                        self.tx(out, Output::Frame { port, data });
                    }
                    Err(_) => self.counters.drop(DropReason::Malformed),
                },
                dhcp::Verdict::Malformed => self.counters.drop(DropReason::Malformed),
                dhcp::Verdict::Ignored => {}
                // UDP to port 67 that is not a DHCP client message is ordinary traffic.
                dhcp::Verdict::NotDhcp => self.in_domain(now, vni, Side::Trunk, &l2, frame, out),
            }
            return;
        }
        self.in_domain(now, vni, Side::Trunk, &l2, frame, out);
    }

    fn on_overlay(&mut self, now: Instant, src: Ipv4Addr, data: &[u8], out: &mut Vec<Output>) {
        let Ok(pkt) = vxlan::Packet::new_checked(data) else {
            self.counters.drop(DropReason::Malformed);
            return;
        };
        let vni = pkt.vni();
        if !self.cfg.domains.contains_key(&vni) {
            self.counters.drop(DropReason::UnknownVni);
            return;
        }
        if !self.known_vtep(vni, src) {
            self.counters.drop(DropReason::UnknownVtep);
            return;
        }
        let inner = pkt.payload();
        let Some(l2) = L2::parse(inner, false) else {
            self.counters.drop(DropReason::Malformed);
            return;
        };
        if frames::is_bum(&l2.src) {
            self.counters.drop(DropReason::Malformed);
            return;
        }
        self.learn(now, vni, l2.src, Dest::Vtep(src));
        self.in_domain(now, vni, Side::Overlay, &l2, inner, out);
    }

    /// A frame in bridge domain `vni` from either side: to the router, or bridged.
    /// `raw` is the frame as received (tagged from the trunk, untagged from the overlay).
    fn in_domain(
        &mut self,
        now: Instant,
        vni: u32,
        side: Side,
        l2: &L2<'_>,
        raw: &[u8],
        out: &mut Vec<Output>,
    ) {
        if l2.ethertype == EthernetProtocol::Arp && self.domain_arp(now, vni, l2, out) {
            return;
        }
        if !frames::is_bum(&l2.dst)
            && let Some(i) = self.rif_by_mac(vni, l2.dst)
        {
            if l2.ethertype == EthernetProtocol::Ipv4 {
                self.route_inside(now, i, l2.payload, out);
            } else {
                self.counters.drop(DropReason::Unsupported);
            }
            return;
        }
        let Some(vlan) = self.cfg.domains.get(&vni).map(|d| d.vlan) else {
            self.counters.drop(DropReason::UnknownVni);
            return;
        };
        match side {
            Side::Trunk => {
                let targets: Vec<Ipv4Addr> = if frames::is_bum(&l2.dst) {
                    self.flood_vteps(vni)
                } else {
                    match self.locate(now, vni, l2.dst) {
                        Some(Dest::Vtep(t)) => vec![t],
                        // Hairpin: the fabric delivers it itself.
                        Some(Dest::Trunk) => return,
                        None => self.flood_vteps(vni),
                    }
                };
                if targets.is_empty() && !frames::is_bum(&l2.dst) {
                    self.counters.drop(DropReason::UnknownUnicast);
                    return;
                }
                for t in targets {
                    // VXLAN header + the frame without its tag, in one buffer.
                    let v = vni.to_be_bytes();
                    let mut b = Vec::with_capacity(vxlan::HEADER_LEN + raw.len() - vlan::TAG_LEN);
                    b.extend_from_slice(&[VXLAN_FLAGS, 0, 0, 0, v[1], v[2], v[3], 0]);
                    b.extend_from_slice(&raw[..12]);
                    b.extend_from_slice(&raw[12 + vlan::TAG_LEN..]);
                    self.tx(out, Output::Underlay { dst: t, data: b });
                }
            }
            Side::Overlay => {
                // Split horizon: nothing from the overlay goes back to the overlay.
                if vlan == NO_VLAN {
                    return;
                }
                if !frames::is_bum(&l2.dst)
                    && matches!(self.locate(now, vni, l2.dst), Some(Dest::Vtep(_)))
                {
                    return;
                }
                match vlan::push_tag(raw, vlan) {
                    Ok(data) => {
                        let port = self.trunk;
                        self.tx(out, Output::Frame { port, data });
                    }
                    Err(_) => self.counters.drop(DropReason::Malformed),
                }
            }
        }
    }

    fn flood_vteps(&self, vni: u32) -> Vec<Ipv4Addr> {
        self.cfg
            .domains
            .get(&vni)
            .map(|d| {
                d.flood
                    .iter()
                    .copied()
                    .filter(|t| *t != self.vtep)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// ARP in a bridge domain: learns the sender, answers for router
    /// interfaces, consumes replies to them. Returns whether the frame was
    /// consumed (otherwise it is bridged).
    fn domain_arp(&mut self, now: Instant, vni: u32, l2: &L2<'_>, out: &mut Vec<Output>) -> bool {
        let Ok(repr) = ArpPacket::new_checked(l2.payload).and_then(|p| ArpRepr::parse(&p)) else {
            self.counters.drop(DropReason::Malformed);
            return true;
        };
        let ArpRepr::EthernetIpv4 {
            operation,
            source_hardware_addr: sha,
            source_protocol_addr: spa,
            target_protocol_addr: tpa,
            ..
        } = repr
        else {
            self.counters.drop(DropReason::Malformed);
            return true;
        };
        self.learn_neigh(now, Link::Domain(vni), spa, sha, out);
        match operation {
            ArpOperation::Request if spa != tpa => {
                let Some(r) = self.cfg.rifs.iter().find(|r| r.vni == vni && r.ip == tpa) else {
                    return false;
                };
                let reply = frames::arp(ArpOperation::Reply, sha, r.mac, r.ip, sha, spa);
                self.send_in_domain(now, vni, sha, reply, out);
                true
            }
            ArpOperation::Reply => self.rif_by_mac(vni, l2.dst).is_some(),
            _ => false,
        }
    }

    /// An IPv4 packet sent to router interface `rif`.
    fn route_inside(&mut self, now: Instant, rif: usize, bytes: &[u8], out: &mut Vec<Output>) {
        let Ok(ip) = Ipv4Packet::new_checked(bytes) else {
            self.counters.drop(DropReason::Malformed);
            return;
        };
        if !ip.verify_checksum() {
            self.counters.drop(DropReason::Malformed);
            return;
        }
        let bytes = &bytes[..usize::from(ip.total_len())];
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        let Some(router) = self.router_of(rif) else {
            return;
        };
        if self.is_own_ip(Some(router), dst) {
            self.local(now, Some(router), &ip, out);
            return;
        }
        if dst.is_broadcast() || dst.is_multicast() || dst.is_unspecified() {
            self.counters.drop(DropReason::Unsupported);
            return;
        }
        if ip.hop_limit() <= 1 {
            self.counters.drop(DropReason::TtlExceeded);
            return;
        }
        // Between the router's interfaces, or by one of its static routes.
        if let Some((to, hop)) = self.route_in(router, dst) {
            let Some(eg) = self.rif_egress(to) else {
                return;
            };
            let rw = Rewrite {
                ttl: true,
                ..Rewrite::default()
            };
            self.send_ip(now, eg, hop, bytes, &rw, out);
            return;
        }
        // To the external network: floating IP, else the router's SNAT.
        let Some(r) = self.cfg.rifs.get(rif) else {
            return;
        };
        if !in_subnet(src, r.ip, r.prefix_len) {
            self.counters.drop(DropReason::SpoofedIp);
            return;
        }
        let fragment = ip.more_frags() || ip.frag_offset() != 0;
        let (new_src, rw) = if let Some(&fip) = self.derived.fip_out.get(&(rif, src)) {
            let rw = Rewrite {
                src: Some(fip),
                ttl: true,
                ..Rewrite::default()
            };
            (fip, rw)
        } else if let Some(snat) = self.derived.rif_snat.get(rif).copied().flatten() {
            if fragment {
                self.counters.drop(DropReason::Unsupported);
                return;
            }
            let Some((proto, sport, dport, flags)) = self.l4_out(&ip) else {
                return;
            };
            let t = Tuple {
                proto,
                src: src.into(),
                dst: dst.into(),
                sport,
                dport,
            };
            let Some(port) = self.nat.snat(router, t, flags, snat, now) else {
                self.counters.drop(DropReason::NatExhausted);
                return;
            };
            let rw = Rewrite {
                src: Some(snat),
                src_port: Some(port),
                ttl: true,
                ..Rewrite::default()
            };
            (snat, rw)
        } else {
            self.counters.drop(DropReason::NoRoute);
            return;
        };
        let Some(x) = self.external_for(dst, new_src) else {
            self.counters.drop(DropReason::NoRoute);
            return;
        };
        let (eg, hop) = Self::external_egress(&x, dst);
        self.send_ip(now, eg, hop, bytes, &rw, out);
    }

    /// The SNAT key parts of an outbound packet: (protocol, source port or echo
    /// id, destination port or 0, TCP flags). Counts and returns `None` for
    /// what SNAT does not translate.
    fn l4_out(&mut self, ip: &Ipv4Packet<&[u8]>) -> Option<(u8, u16, u16, TcpFlags)> {
        let r = match ip.next_header() {
            IpProtocol::Icmp => match Icmpv4Packet::new_checked(ip.payload()) {
                Ok(p) if p.msg_type() == Icmpv4Message::EchoRequest => {
                    Ok((ICMP, p.echo_ident(), 0, TcpFlags::default()))
                }
                Ok(_) => Err(DropReason::Unsupported),
                Err(_) => Err(DropReason::Malformed),
            },
            IpProtocol::Udp => match UdpPacket::new_checked(ip.payload()) {
                Ok(p) => Ok((UDP, p.src_port(), p.dst_port(), TcpFlags::default())),
                Err(_) => Err(DropReason::Malformed),
            },
            IpProtocol::Tcp => match TcpPacket::new_checked(ip.payload()) {
                Ok(p) => Ok((TCP, p.src_port(), p.dst_port(), TcpFlags::of(&p))),
                Err(_) => Err(DropReason::Malformed),
            },
            _ => Err(DropReason::Unsupported),
        };
        r.map_err(|why| self.counters.drop(why)).ok()
    }

    fn on_external(&mut self, now: Instant, x: External, frame: &[u8], out: &mut Vec<Output>) {
        let Ok(eth) = EthernetFrame::new_checked(frame) else {
            self.counters.drop(DropReason::Malformed);
            return;
        };
        let dst = eth.dst_addr();
        if dst != x.mac && !frames::is_bum(&dst) {
            self.counters.drop(DropReason::UnknownUnicast);
            return;
        }
        match eth.ethertype() {
            EthernetProtocol::Arp => {
                let Ok(repr) =
                    ArpPacket::new_checked(eth.payload()).and_then(|p| ArpRepr::parse(&p))
                else {
                    self.counters.drop(DropReason::Malformed);
                    return;
                };
                let ArpRepr::EthernetIpv4 {
                    operation,
                    source_hardware_addr: sha,
                    source_protocol_addr: spa,
                    target_protocol_addr: tpa,
                    ..
                } = repr
                else {
                    self.counters.drop(DropReason::Malformed);
                    return;
                };
                if in_subnet(spa, x.ip, x.prefix_len) {
                    self.learn_neigh(now, Link::External(x.port), spa, sha, out);
                }
                if operation == ArpOperation::Request && spa != tpa && self.owns_external(&x, tpa) {
                    let reply = frames::arp(ArpOperation::Reply, sha, x.mac, tpa, sha, spa);
                    self.tx(
                        out,
                        Output::Frame {
                            port: x.port,
                            data: reply,
                        },
                    );
                }
            }
            EthernetProtocol::Ipv4 if dst == x.mac => self.route_outside(now, eth.payload(), out),
            _ => self.counters.drop(DropReason::Unsupported),
        }
    }

    /// An IPv4 packet from the external network.
    fn route_outside(&mut self, now: Instant, bytes: &[u8], out: &mut Vec<Output>) {
        let Ok(ip) = Ipv4Packet::new_checked(bytes) else {
            self.counters.drop(DropReason::Malformed);
            return;
        };
        if !ip.verify_checksum() {
            self.counters.drop(DropReason::Malformed);
            return;
        }
        let bytes = &bytes[..usize::from(ip.total_len())];
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        let fragment = ip.more_frags() || ip.frag_offset() != 0;
        if let Some(&(rif, inside)) = self.derived.fip_in.get(&dst) {
            if ip.hop_limit() <= 1 {
                self.counters.drop(DropReason::TtlExceeded);
                return;
            }
            let Some(eg) = self.rif_egress(rif) else {
                return;
            };
            let rw = Rewrite {
                dst: Some(inside),
                ttl: true,
                ..Rewrite::default()
            };
            self.send_ip(now, eg, inside, bytes, &rw, out);
            return;
        }
        let is_echo_request = ip.next_header() == IpProtocol::Icmp
            && Icmpv4Packet::new_checked(ip.payload())
                .is_ok_and(|p| p.msg_type() == Icmpv4Message::EchoRequest);
        if is_echo_request && self.is_own_ip(None, dst) {
            self.local(now, None, &ip, out);
            return;
        }
        if !self.cfg.snats.contains_key(&dst) || fragment {
            self.counters.drop(DropReason::NoNatBinding);
            return;
        }
        let key = match ip.next_header() {
            IpProtocol::Icmp => Icmpv4Packet::new_checked(ip.payload())
                .ok()
                .filter(|p| p.msg_type() == Icmpv4Message::EchoReply)
                .map(|p| (ICMP, p.echo_ident(), 0, TcpFlags::default())),
            IpProtocol::Udp => UdpPacket::new_checked(ip.payload())
                .ok()
                .map(|p| (UDP, p.dst_port(), p.src_port(), TcpFlags::default())),
            IpProtocol::Tcp => TcpPacket::new_checked(ip.payload())
                .ok()
                .map(|p| (TCP, p.dst_port(), p.src_port(), TcpFlags::of(&p))),
            _ => None,
        };
        let Some((proto, port, remote_port, flags)) = key else {
            self.counters.drop(DropReason::NoNatBinding);
            return;
        };
        let to = SnatTo { ip: dst, port };
        let answer = self
            .nat
            .unsnat(proto, to, src.into(), remote_port, flags, now);
        let Some((router, original)) = answer else {
            self.counters.drop(DropReason::NoNatBinding);
            return;
        };
        if ip.hop_limit() <= 1 {
            self.counters.drop(DropReason::TtlExceeded);
            return;
        }
        // Back into the router the connection came from.
        let inside = v4(original.src);
        let Some(eg) = self.rif_in(router, inside).and_then(|i| self.rif_egress(i)) else {
            self.counters.drop(DropReason::NoRoute);
            return;
        };
        let rw = Rewrite {
            dst: Some(inside),
            dst_port: Some(original.sport),
            ttl: true,
            ..Rewrite::default()
        };
        self.send_ip(now, eg, inside, bytes, &rw, out);
    }
}

impl Config {
    fn apply_one(&mut self, u: &Update, trunk: PortNo) -> Result<(), ConfigError> {
        let vni_ok = |vni: u32| {
            if vni > 0x00ff_ffff {
                Err(ConfigError::BadVni(vni))
            } else {
                Ok(())
            }
        };
        let vlan_ok = |vlan: u16| {
            if (1..=4094).contains(&vlan) {
                Ok(())
            } else {
                Err(ConfigError::BadVlan(vlan))
            }
        };
        let prefix_ok = |p: u8| {
            if p > 32 {
                Err(ConfigError::BadPrefix(p))
            } else {
                Ok(())
            }
        };
        match u {
            Update::BridgeDomain { vlan, vni, flood } => {
                // VLAN 0: a domain on the overlay side only (a routed network
                // with no VLAN-side ports).
                if *vlan != NO_VLAN {
                    vlan_ok(*vlan)?;
                }
                vni_ok(*vni)?;
                self.domains.insert(
                    *vni,
                    DomainCfg {
                        vlan: *vlan,
                        flood: flood.clone(),
                    },
                );
            }
            Update::RemoveBridgeDomain { vni } => {
                self.domains.remove(vni);
                self.remotes.retain(|(v, _), _| v != vni);
            }
            Update::RemoteMac(r) => {
                vni_ok(r.vni)?;
                self.remotes.insert((r.vni, r.mac), r.clone());
            }
            Update::RemoveRemoteMac { vni, mac } => {
                self.remotes.remove(&(*vni, *mac));
            }
            Update::RouterInterface(r) => {
                prefix_ok(r.prefix_len)?;
                if let Some(old) = self.rifs.iter_mut().find(|o| o.id == r.id) {
                    *old = r.clone();
                } else {
                    self.rifs.push(r.clone());
                }
            }
            Update::RemoveRouterInterface { id } => self.rifs.retain(|r| r.id != *id),
            Update::External(x) => {
                prefix_ok(x.prefix_len)?;
                if x.port == trunk {
                    return Err(ConfigError::TrunkPort(x.port));
                }
                self.externals.insert(x.port, *x);
            }
            Update::RemoveExternal { port } => {
                self.externals.remove(port);
            }
            Update::Snat(s) => {
                self.snats.insert(s.external_ip, s.clone());
            }
            Update::RemoveSnat { external_ip } => {
                self.snats.remove(external_ip);
            }
            Update::FloatingIp(f) => {
                self.fips.insert(f.external_ip, f.clone());
            }
            Update::RemoveFloatingIp { external_ip } => {
                self.fips.remove(external_ip);
            }
            Update::DhcpPort(d) => {
                vlan_ok(d.vlan)?;
                prefix_ok(d.lease.prefix_len)?;
                self.dhcp.insert((d.vlan, d.mac), d.lease.clone());
            }
            Update::RemoveDhcpPort { vlan, mac } => {
                self.dhcp.remove(&(*vlan, *mac));
            }
            Update::Route {
                router,
                destination,
                prefix_len,
                nexthop,
            } => {
                prefix_ok(*prefix_len)?;
                let host = u32::from(*destination) & !u32::from(frames::prefix_mask(*prefix_len));
                if host != 0 {
                    return Err(ConfigError::NotNetworkAddress {
                        destination: *destination,
                        prefix_len: *prefix_len,
                    });
                }
                self.routes
                    .insert((router.clone(), *destination, *prefix_len), *nexthop);
            }
            Update::RemoveRoute {
                router,
                destination,
                prefix_len,
            } => {
                self.routes
                    .remove(&(router.clone(), *destination, *prefix_len));
            }
            Update::RouterGateway { router, ip } => {
                self.router_gws.insert(router.clone(), *ip);
            }
            Update::RemoveRouterGateway { router } => {
                self.router_gws.remove(router);
            }
        }
        Ok(())
    }

    /// Checks the configuration as a whole (references and uniqueness).
    fn validate(&self) -> Result<(), ConfigError> {
        let mut vlans = HashMap::new();
        for d in self.domains.values().filter(|d| d.vlan != NO_VLAN) {
            if vlans.insert(d.vlan, ()).is_some() {
                return Err(ConfigError::VlanInUse { vlan: d.vlan });
            }
        }
        for (i, r) in self.rifs.iter().enumerate() {
            if !self.domains.contains_key(&r.vni) {
                return Err(ConfigError::NoBridgeDomain {
                    id: r.id.clone(),
                    vni: r.vni,
                });
            }
            for o in &self.rifs[i + 1..] {
                if r.router == o.router {
                    let shorter = r.prefix_len.min(o.prefix_len);
                    if in_subnet(r.ip, o.ip, shorter) {
                        return Err(ConfigError::OverlappingSubnets(r.id.clone(), o.id.clone()));
                    }
                } else if r.vni == o.vni && (r.mac == o.mac || r.ip == o.ip) {
                    // Which router a frame to the MAC, or an ARP request for
                    // the IP, belongs to would be ambiguous.
                    return Err(ConfigError::InterfaceClash(r.id.clone(), o.id.clone()));
                }
            }
        }
        let rif = |id: &str| self.rifs.iter().find(|r| r.id == id);
        for s in self.snats.values() {
            let mut first: Option<&RouterInterface> = None;
            for id in &s.router_interface_ids {
                let Some(r) = rif(id) else {
                    return Err(ConfigError::NoRouterInterface {
                        what: format!("SNAT {}", s.external_ip),
                        id: id.clone(),
                    });
                };
                match first {
                    Some(f) if f.router != r.router => {
                        return Err(ConfigError::SnatAcrossRouters {
                            external_ip: s.external_ip,
                            a: f.id.clone(),
                            b: r.id.clone(),
                        });
                    }
                    Some(_) => {}
                    None => first = Some(r),
                }
            }
        }
        let has_rif = |id: &str| rif(id).is_some();
        for f in self.fips.values() {
            if !has_rif(&f.router_interface_id) {
                return Err(ConfigError::NoRouterInterface {
                    what: format!("floating IP {}", f.external_ip),
                    id: f.router_interface_id.clone(),
                });
            }
        }
        for ((router, destination, prefix_len), nexthop) in &self.routes {
            // On one of the router's subnets, and not the router itself.
            let on_link = self.rifs.iter().any(|r| {
                r.router == *router && r.ip != *nexthop && in_subnet(*nexthop, r.ip, r.prefix_len)
            });
            if !on_link {
                return Err(ConfigError::BadNexthop {
                    router: router.clone(),
                    destination: *destination,
                    prefix_len: *prefix_len,
                    nexthop: *nexthop,
                });
            }
        }
        Ok(())
    }

    /// The lookup tables; `routers` numbers every router that has interfaces.
    fn derive(&self, routers: &HashMap<String, RouterNo>) -> Derived {
        let mut d = Derived::default();
        for (vni, dom) in self.domains.iter().filter(|(_, d)| d.vlan != NO_VLAN) {
            d.vlans.insert(dom.vlan, *vni);
        }
        for ((vni, mac), r) in &self.remotes {
            d.static_bridge.insert((*vni, *mac), r.vtep);
            for ip in &r.ips {
                d.static_neigh.insert((*vni, *ip), *mac);
            }
        }
        for ((vlan, mac), lease) in &self.dhcp {
            if let Some(vni) = d.vlans.get(vlan) {
                d.static_neigh.insert((*vni, lease.ip), *mac);
            }
        }
        d.rif_snat = self
            .rifs
            .iter()
            .map(|r| {
                self.snats
                    .values()
                    .find(|s| s.router_interface_ids.contains(&r.id))
                    .map(|s| s.external_ip)
            })
            .collect();
        for f in self.fips.values() {
            if let Some(i) = self.rifs.iter().position(|r| r.id == f.router_interface_id) {
                d.fip_out.insert((i, f.internal_ip), f.external_ip);
                d.fip_in.insert(f.external_ip, (i, f.internal_ip));
            }
        }
        d.rif_router = self
            .rifs
            .iter()
            .map(|r| routers.get(&r.router).copied().unwrap_or(RouterNo::MAX))
            .collect();
        for ((router, destination, prefix_len), nexthop) in &self.routes {
            let Some(&n) = routers.get(router) else {
                continue;
            };
            // Validated: the next hop is on one of the router's subnets.
            let Some(rif) = self
                .rifs
                .iter()
                .zip(&d.rif_router)
                .position(|(r, m)| *m == n && in_subnet(*nexthop, r.ip, r.prefix_len))
            else {
                continue;
            };
            d.routes.entry(n).or_default().push(StaticRoute {
                destination: *destination,
                prefix_len: *prefix_len,
                nexthop: *nexthop,
                rif,
            });
        }
        for v in d.routes.values_mut() {
            v.sort_by_key(|s| std::cmp::Reverse(s.prefix_len));
        }
        d
    }
}

impl Pipeline for Gateway {
    fn process(&mut self, now: Instant, input: Input<'_>, out: &mut Vec<Output>) {
        self.counters.rx += 1;
        match input {
            Input::Frame { port, data } if port == self.trunk => self.on_trunk(now, data, out),
            Input::Frame { port, data } => match self.cfg.externals.get(&port).copied() {
                Some(x) => self.on_external(now, x, data, out),
                None => self.counters.drop(DropReason::UnknownPort),
            },
            Input::Underlay { src, data } => self.on_overlay(now, src, data, out),
        }
    }

    fn poll(&mut self, now: Instant, out: &mut Vec<Output>) -> Option<Instant> {
        let mut next = None;
        self.learned.retain(|_, l| l.expires > now);
        self.neigh.retain(|_, (_, exp)| *exp > now);
        self.arp_sent.retain(|_, t| *t + ARP_RETRY > now);
        for l in self.learned.values() {
            earliest(&mut next, l.expires);
        }
        for (_, exp) in self.neigh.values() {
            earliest(&mut next, *exp);
        }
        let before = self.pending.len();
        self.pending.retain(|p| p.deadline > now);
        for _ in self.pending.len()..before {
            self.counters.drop(DropReason::NoRoute);
        }
        let mut again: Vec<(Egress, Ipv4Addr)> = Vec::new();
        for p in &self.pending {
            if !again
                .iter()
                .any(|(e, ip)| e.link == p.eg.link && *ip == p.next_hop)
            {
                again.push((p.eg, p.next_hop));
            }
        }
        for (eg, ip) in again {
            self.solicit(now, eg, ip, out);
            earliest(&mut next, now + ARP_RETRY);
        }
        if let Some(t) = self.nat.expire(now) {
            earliest(&mut next, t);
        }
        let due = match &self.announce_again {
            Some((at, _)) if *at <= now => self.announce_again.take().map(|(_, l)| l),
            _ => None,
        };
        let fresh = std::mem::take(&mut self.announce);
        if !fresh.is_empty() {
            let mut again = self
                .announce_again
                .take()
                .map(|(_, l)| l)
                .unwrap_or_default();
            again.extend(fresh.iter().copied());
            self.announce_again = Some((now + ANNOUNCE_AGAIN, again));
        }
        for (vlan, mac) in fresh.into_iter().chain(due.into_iter().flatten()) {
            if let Ok(data) = vlan::push_tag(&rarp_announce(mac), vlan) {
                let port = self.trunk;
                self.tx(out, Output::Frame { port, data });
            }
        }
        if let Some((at, _)) = &self.announce_again {
            earliest(&mut next, *at);
        }
        next
    }

    fn counters(&self) -> &Counters {
        &self.counters
    }
}

/// A gateway set up for the SNAT fast path, and a packet to push through it.
#[derive(Debug)]
pub struct SnatFixture {
    pub gateway: Gateway,
    /// The vRouter VTEP the packet comes from.
    pub vtep: Ipv4Addr,
    /// A VXLAN payload: a UDP datagram from 50.50.50.10:40000 to
    /// 198.51.100.1:9 in VNI 1000, addressed to the router interface.
    pub packet: Vec<u8>,
}

/// The reference lab's gateway (trunk port 1, external port 2, VTEP 192.0.2.1,
/// router interface 50.50.50.1/24 in VNI 1000 with SNAT to 203.0.113.2, next
/// hop 203.0.113.1 already resolved) and an inside packet whose Ethernet frame
/// is `frame_bytes` long (at least 42). For benchmarks and examples.
pub fn snat_fixture(frame_bytes: usize) -> SnatFixture {
    let rif_mac = EthernetAddress([0x02, 0, 0, 0, 0, 0x01]);
    let ext_mac = EthernetAddress([0x02, 0, 0, 0, 0, 0x02]);
    let vm_mac = EthernetAddress([0x02, 0, 0, 0, 0x10, 0x01]);
    let up_mac = EthernetAddress([0x02, 0, 0, 0, 0xfe, 0x01]);
    let vtep = Ipv4Addr::new(192, 0, 2, 12);
    let mut gateway = Gateway::new(
        1,
        Ipv4Addr::new(192, 0, 2, 1),
        EthernetAddress([0x02, 0, 0, 0, 0, 0xff]),
    );
    let updates = [
        Update::BridgeDomain {
            vlan: 100,
            vni: 1000,
            flood: vec![vtep],
        },
        Update::RouterInterface(RouterInterface {
            id: "rif-demo".into(),
            router: String::new(),
            vni: 1000,
            ip: Ipv4Addr::new(50, 50, 50, 1),
            prefix_len: 24,
            mac: rif_mac,
        }),
        Update::External(External {
            port: 2,
            ip: Ipv4Addr::new(203, 0, 113, 2),
            prefix_len: 24,
            mac: ext_mac,
            next_hop: Ipv4Addr::new(203, 0, 113, 1),
        }),
        Update::Snat(Snat {
            router_interface_ids: vec!["rif-demo".into()],
            external_ip: Ipv4Addr::new(203, 0, 113, 2),
        }),
    ];
    // The configuration above is valid by construction.
    let _ = gateway.apply(1, &updates);
    let mut out = Vec::new();
    let arp = frames::arp(
        ArpOperation::Reply,
        ext_mac,
        up_mac,
        Ipv4Addr::new(203, 0, 113, 1),
        ext_mac,
        Ipv4Addr::new(203, 0, 113, 2),
    );
    gateway.process(
        Instant::from_millis(0),
        Input::Frame {
            port: 2,
            data: &arp,
        },
        &mut out,
    );
    let payload = vec![0u8; frame_bytes.saturating_sub(42)];
    let inner = frames::udp(
        rif_mac,
        vm_mac,
        Ipv4Addr::new(50, 50, 50, 10),
        Ipv4Addr::new(198, 51, 100, 1),
        40000,
        9,
        64,
        &payload,
    );
    SnatFixture {
        gateway,
        vtep,
        packet: vxlan::encap(1000, &inner),
    }
}
