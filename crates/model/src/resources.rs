//! The stored form of every resource. Fields mirror Neutron's database columns;
//! derived attributes (a network's `subnets`, an agent's `alive`, a port's
//! `binding:*` view) are computed when rendering, never stored twice.

use std::fmt;
use std::net::IpAddr;

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::mac::Mac;

pub type Timestamp = DateTime<Utc>;

/// Attributes every Neutron "standard attribute" resource carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StdAttrs {
    pub project_id: String,
    pub revision_number: u64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub tags: Vec<String>,
    pub description: String,
}

impl StdAttrs {
    pub fn new(project_id: String, description: String, tags: Vec<String>, now: Timestamp) -> Self {
        StdAttrs {
            project_id,
            revision_number: 0,
            created_at: now,
            updated_at: now,
            tags,
            description,
        }
    }

    /// Every change to a resource goes through here, so revisions never skip or stall.
    pub fn bump(&mut self, now: Timestamp) {
        self.revision_number += 1;
        self.updated_at = now;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkType {
    Local,
    Flat,
    Vlan,
    Vxlan,
    Gre,
    Geneve,
}

impl NetworkType {
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkType::Local => "local",
            NetworkType::Flat => "flat",
            NetworkType::Vlan => "vlan",
            NetworkType::Vxlan => "vxlan",
            NetworkType::Gre => "gre",
            NetworkType::Geneve => "geneve",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "local" => NetworkType::Local,
            "flat" => NetworkType::Flat,
            "vlan" => NetworkType::Vlan,
            "vxlan" => NetworkType::Vxlan,
            "gre" => NetworkType::Gre,
            "geneve" => NetworkType::Geneve,
            _ => return None,
        })
    }

    pub fn is_tunnel(self) -> bool {
        matches!(
            self,
            NetworkType::Vxlan | NetworkType::Gre | NetworkType::Geneve
        )
    }
}

impl fmt::Display for NetworkType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Network {
    pub id: String,
    pub name: String,
    pub admin_state_up: bool,
    pub shared: bool,
    pub external: bool,
    pub mtu: u32,
    pub port_security_enabled: bool,
    pub std: StdAttrs,
}

/// A network segment; `is_dynamic` ones are allocated by mechanism drivers during binding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    pub id: String,
    pub network_id: String,
    pub name: Option<String>,
    pub network_type: NetworkType,
    pub physical_network: Option<String>,
    pub segmentation_id: Option<u32>,
    pub is_dynamic: bool,
    /// Order of the static segments of a network (Neutron's `segment_index`).
    pub segment_index: u32,
    pub std: StdAttrs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IpRange {
    pub start: IpAddr,
    pub end: IpAddr,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRoute {
    pub destination: IpNet,
    pub nexthop: IpAddr,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subnet {
    pub id: String,
    pub network_id: String,
    pub name: String,
    pub ip_version: u8,
    pub cidr: IpNet,
    pub gateway_ip: Option<IpAddr>,
    pub allocation_pools: Vec<IpRange>,
    pub host_routes: Vec<HostRoute>,
    pub dns_nameservers: Vec<IpAddr>,
    pub enable_dhcp: bool,
    pub ipv6_ra_mode: Option<String>,
    pub ipv6_address_mode: Option<String>,
    pub segment_id: Option<String>,
    /// Position among the network's subnets: creation order, which decides the
    /// subnet an address is taken from first (timestamps tie within a second).
    #[serde(default)]
    pub order: u64,
    pub std: StdAttrs,
}

impl Subnet {
    /// Addresses on SLAAC / DHCPv6-stateless subnets come from the MAC, not from IPAM.
    pub fn is_auto_address(&self) -> bool {
        self.ip_version == 6
            && matches!(
                self.ipv6_address_mode.as_deref(),
                Some("slaac") | Some("dhcpv6-stateless")
            )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FixedIp {
    pub subnet_id: String,
    pub ip_address: IpAddr,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressPair {
    /// An address or a CIDR, as Neutron allows.
    pub ip_address: String,
    pub mac_address: Mac,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PortStatus {
    #[serde(rename = "ACTIVE")]
    Active,
    #[serde(rename = "DOWN")]
    Down,
    #[serde(rename = "BUILD")]
    Build,
    #[serde(rename = "ERROR")]
    Error,
}

impl PortStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PortStatus::Active => "ACTIVE",
            PortStatus::Down => "DOWN",
            PortStatus::Build => "BUILD",
            PortStatus::Error => "ERROR",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BindingStatus {
    #[serde(rename = "ACTIVE")]
    Active,
    #[serde(rename = "INACTIVE")]
    Inactive,
}

impl BindingStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BindingStatus::Active => "ACTIVE",
            BindingStatus::Inactive => "INACTIVE",
        }
    }
}

pub const VIF_TYPE_UNBOUND: &str = "unbound";
pub const VIF_TYPE_BINDING_FAILED: &str = "binding_failed";

/// One level of a hierarchical binding (Neutron's `ml2_port_binding_levels` row).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindingLevel {
    pub level: u32,
    pub driver: String,
    pub segment_id: String,
}

/// One binding of a port to a host (Neutron's `ml2_port_bindings` row + its levels).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PortBinding {
    pub host: String,
    pub vnic_type: String,
    pub profile: Map<String, Value>,
    pub vif_type: String,
    /// Shared: a model holds few distinct details (one per driver, agent
    /// configuration and VLAN), so ports bound alike hold one copy
    /// ([`crate::State`] makes them share it).
    pub vif_details: std::sync::Arc<Map<String, Value>>,
    pub status: BindingStatus,
    pub levels: Vec<BindingLevel>,
}

impl PortBinding {
    pub fn unbound(host: String, vnic_type: String, profile: Map<String, Value>) -> Self {
        PortBinding {
            host,
            vnic_type,
            profile,
            vif_type: VIF_TYPE_UNBOUND.into(),
            vif_details: std::sync::Arc::default(),
            status: BindingStatus::Active,
            levels: Vec::new(),
        }
    }

    pub fn is_bound(&self) -> bool {
        self.vif_type != VIF_TYPE_UNBOUND && self.vif_type != VIF_TYPE_BINDING_FAILED
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Port {
    pub id: String,
    pub network_id: String,
    pub name: String,
    pub mac_address: Mac,
    pub fixed_ips: Vec<FixedIp>,
    pub device_id: String,
    pub device_owner: String,
    pub status: PortStatus,
    pub admin_state_up: bool,
    pub allowed_address_pairs: Vec<AddressPair>,
    pub port_security_enabled: bool,
    /// The security groups the port is a member of.
    #[serde(default)]
    pub security_groups: Vec<String>,
    /// Exactly one binding is ACTIVE (its host may be empty); others are INACTIVE
    /// bindings made for a live migration.
    pub bindings: Vec<PortBinding>,
    pub std: StdAttrs,
}

impl Port {
    pub fn active_binding(&self) -> &PortBinding {
        // A port whose ACTIVE binding was deleted (allowed, as in Neutron) shows
        // as unbound until a new binding is made.
        self.bindings
            .iter()
            .find(|b| b.status == BindingStatus::Active)
            .unwrap_or(&EMPTY_BINDING)
    }

    pub fn active_binding_mut(&mut self) -> Option<&mut PortBinding> {
        self.bindings
            .iter_mut()
            .find(|b| b.status == BindingStatus::Active)
    }

    pub fn binding_for(&self, host: &str) -> Option<&PortBinding> {
        self.bindings.iter().find(|b| b.host == host)
    }
}

static EMPTY_BINDING: std::sync::LazyLock<PortBinding> =
    std::sync::LazyLock::new(|| PortBinding::unbound(String::new(), "normal".into(), Map::new()));

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Agent {
    pub id: String,
    pub agent_type: String,
    pub binary: String,
    pub topic: String,
    pub host: String,
    pub admin_state_up: bool,
    pub availability_zone: Option<String>,
    pub description: Option<String>,
    pub heartbeat_timestamp: Timestamp,
    pub started_at: Timestamp,
    pub created_at: Timestamp,
    pub resources_synced: Option<bool>,
    pub configurations: Map<String, Value>,
}

impl Agent {
    /// Neutron's `alive`: the last heartbeat is newer than `agent_down_time`.
    pub fn is_alive(&self, now: Timestamp, agent_down_time_s: u64) -> bool {
        let age = now.signed_duration_since(self.heartbeat_timestamp);
        age.num_milliseconds() <= (agent_down_time_s as i64) * 1000
    }
}

pub const AGENT_TYPE_OVS: &str = "Open vSwitch agent";
pub const AGENT_TYPE_SRIOV: &str = "NIC Switch agent";
pub const AGENT_TYPE_VROUTER: &str = "vRouter agent";
pub const AGENT_TYPE_GATEWAY: &str = "Gateway agent";

/// Device owners of the ports the L3 service creates and owns.
pub const OWNER_ROUTER_INTERFACE: &str = "network:router_interface";
pub const OWNER_ROUTER_GATEWAY: &str = "network:router_gateway";
pub const OWNER_FLOATINGIP: &str = "network:floatingip";

/// An extra route of a router (`extraroute`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub destination: IpNet,
    pub nexthop: IpAddr,
}

/// A router's external gateway: the `network:router_gateway` port on an
/// external network, and whether traffic leaving through it is SNATed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayInfo {
    pub network_id: String,
    pub enable_snat: bool,
    pub port_id: String,
}

/// A Neutron router. Its interfaces are the ports whose `device_id` is the
/// router and whose owner is [`OWNER_ROUTER_INTERFACE`], as in Neutron.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Router {
    pub id: String,
    pub name: String,
    pub admin_state_up: bool,
    pub gateway: Option<GatewayInfo>,
    pub routes: Vec<Route>,
    /// The gateway node the router is scheduled on ("" while none is alive).
    pub host: String,
    pub std: StdAttrs,
}

/// A project's quota limits that differ from the defaults (`quotas`):
/// resource (`network`, `port`, …) → limit, `-1` for unlimited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaSet {
    pub project_id: String,
    pub limits: std::collections::BTreeMap<String, i64>,
}

/// A security group: allow rules for the ports that are its members.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecurityGroup {
    pub id: String,
    pub name: String,
    /// Connection tracking on (`stateful-security-group`).
    pub stateful: bool,
    /// Its project's default group (made on first use, named `default`).
    pub is_default: bool,
    pub std: StdAttrs,
}

/// Which way a security group rule admits traffic, seen from the port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleDirection {
    Ingress,
    Egress,
}

impl RuleDirection {
    pub fn as_str(self) -> &'static str {
        match self {
            RuleDirection::Ingress => "ingress",
            RuleDirection::Egress => "egress",
        }
    }
}

/// One allow rule of a security group, as Neutron stores it (the protocol
/// as given: a name or a number, `None` for any).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecurityGroupRule {
    pub id: String,
    pub security_group_id: String,
    pub direction: RuleDirection,
    /// `IPv4` or `IPv6`.
    pub ethertype: String,
    pub protocol: Option<String>,
    pub port_range_min: Option<u32>,
    pub port_range_max: Option<u32>,
    pub remote_ip_prefix: Option<IpNet>,
    pub remote_group_id: Option<String>,
    pub std: StdAttrs,
}

/// Protocol names Neutron takes, with their numbers (neutron-lib
/// `IP_PROTOCOL_MAP`).
pub const IP_PROTOCOLS: [(&str, u8); 25] = [
    ("ah", 51),
    ("dccp", 33),
    ("egp", 8),
    ("esp", 50),
    ("gre", 47),
    ("hopopt", 0),
    ("icmp", 1),
    ("igmp", 2),
    ("ip", 0),
    ("ipip", 4),
    ("ipv6-encap", 41),
    ("ipv6-frag", 44),
    ("ipv6-icmp", 58),
    ("icmpv6", 58),
    ("ipv6-nonxt", 59),
    ("ipv6-opts", 60),
    ("ipv6-route", 43),
    ("ospf", 89),
    ("pgm", 113),
    ("rsvp", 46),
    ("sctp", 132),
    ("tcp", 6),
    ("udp", 17),
    ("udplite", 136),
    ("vrrp", 112),
];

/// The number of a stored security group rule protocol (a name or a number).
pub fn ip_protocol_number(p: &str) -> Option<u8> {
    IP_PROTOCOLS
        .iter()
        .find(|(n, _)| *n == p)
        .map(|(_, v)| *v)
        .or_else(|| p.parse().ok())
}

/// A floating IP: an address on an external network, owned by a
/// `network:floatingip` port, mapped 1:1 to a port's fixed IP through a router.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FloatingIp {
    pub id: String,
    pub floating_network_id: String,
    pub floating_ip_address: IpAddr,
    pub floating_port_id: String,
    pub port_id: Option<String>,
    pub fixed_ip_address: Option<IpAddr>,
    pub router_id: Option<String>,
    pub std: StdAttrs,
}
