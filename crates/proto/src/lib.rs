//! The southbound contract between the controller and node agents.
//!
//! A node's desired state is a map from stable keys to typed [`Item`]s. The
//! controller sends a [`ToAgent::Snapshot`] of the whole map on connect and then
//! [`ToAgent::Delta`]s (upserts and removals) under increasing versions; the agent
//! answers [`FromAgent::Ack`] or [`FromAgent::Nack`] for each version, reports
//! heartbeats and port up/down. Items name ports by their Neutron id; the agent
//! maps them to its local devices (TAP, VF, OVS port).
//!
//! Keys: `net/{vni}`, `iface/{port_id}`, `remote/{vni}/{mac}`, `bd/{vni}`,
//! `dhcp/{vlan}/{mac}`, and on gateways `rif/{port_id}`, `snat/{router}`,
//! `fip/{external_ip}`, `route/{router}/{destination}/{prefix_len}`, `gw/{router}`,
//! and on filtering nodes (vRouter, OVS) `sg/{port_id}` and `sgm/{group_id}`.
//! MACs are lowercase `aa:bb:cc:dd:ee:ff` strings.

pub mod introspect;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

pub use introspect::{
    ArpEntry, BridgeEntry, CounterState, InterfaceState, NetworkTables, NodeState, RouterState,
};

/// What a node does, from its agent type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Vrouter,
    Ovs,
    Sriov,
    Gateway,
}

impl Role {
    /// The Neutron agent type an agent of this role reports.
    pub fn agent_type(self) -> &'static str {
        match self {
            Role::Vrouter => "vRouter agent",
            Role::Ovs => "Open vSwitch agent",
            Role::Sriov => "NIC Switch agent",
            Role::Gateway => "Gateway agent",
        }
    }

    /// The name `--role` takes.
    pub fn name(self) -> &'static str {
        match self {
            Role::Vrouter => "vrouter",
            Role::Ovs => "ovs",
            Role::Sriov => "sriov",
            Role::Gateway => "gateway",
        }
    }

    pub fn from_agent_type(t: &str) -> Option<Role> {
        [Role::Vrouter, Role::Ovs, Role::Sriov, Role::Gateway]
            .into_iter()
            .find(|r| r.agent_type() == t)
    }
}

/// DHCP answer for one port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub routes: Vec<(Ipv4Addr, u8, Ipv4Addr)>,
    pub mtu: u16,
    pub lease_secs: u32,
    pub server: Ipv4Addr,
}

/// How a VM interface is attached on its node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "vif_type", rename_all = "snake_case")]
pub enum Attachment {
    /// A vRouter interface in the network's VRF.
    Vrouter { vni: u32 },
    /// An OVS access port tagged with the network's VLAN on a physnet.
    Ovs { vlan: u16, physnet: String },
    /// An SR-IOV VF with the VLAN set on it.
    HwVeb { vlan: u16, physnet: String },
    /// A router interface on the gateway node: the subnet's gateway address
    /// in the network's bridge domain, routed in `router`'s domain.
    Router {
        vni: u32,
        router: String,
        prefix_len: u8,
    },
}

/// An allowed address pair: a prefix usable from a MAC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pair {
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    pub mac: String,
}

/// A node's items by key. Shared, not copied: the controller holds each
/// item once for every node given it, and an agent in the same process
/// (the emulated lab, the benchmarks) keeps the same allocation. On the
/// wire an `Arc` is just its item.
pub type Items = BTreeMap<String, std::sync::Arc<Item>>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Item {
    /// A network present on a vRouter: its VRF and the VTEPs to flood to.
    Network { vni: u32, flood: Vec<Ipv4Addr> },
    /// A VM port bound to this node.
    Interface {
        port_id: String,
        mac: String,
        ips: Vec<Ipv4Addr>,
        pairs: Vec<Pair>,
        port_security: bool,
        /// Neutron's `admin_state_up`: a port that is down forwards nothing
        /// (OVS's dead VLAN); the node keeps its device and reports it down.
        #[serde(default = "admin_up_default")]
        admin_up: bool,
        attachment: Attachment,
        lease: Option<Lease>,
    },
    /// A MAC (with its IPs) behind another VTEP: the EVPN type-2 route.
    RemoteMac {
        vni: u32,
        mac: String,
        ips: Vec<Ipv4Addr>,
        vtep: Ipv4Addr,
    },
    /// Gateway: a VLAN on a physnet stitched to a VNI, flooding to these VTEPs.
    BridgeDomain {
        vni: u32,
        vlan: u16,
        physnet: String,
        flood: Vec<Ipv4Addr>,
    },
    /// Gateway: a DHCP answer for a VLAN-side port.
    DhcpPort {
        vlan: u16,
        mac: String,
        lease: Lease,
    },
    /// Gateway: a router interface (`rif/{port_id}`) owning `ip` in the
    /// network's bridge domain; interfaces of one `router` route together.
    RouterInterface {
        router: String,
        vni: u32,
        ip: Ipv4Addr,
        prefix_len: u8,
        mac: String,
    },
    /// Gateway: source NAT of a router's interfaces to its gateway address
    /// (`snat/{router}`).
    Snat {
        router: String,
        external_ip: Ipv4Addr,
        interfaces: Vec<String>,
    },
    /// Gateway: a floating IP (`fip/{external_ip}`), 1:1 with `internal_ip`
    /// behind router interface `interface`.
    FloatingIp {
        router: String,
        external_ip: Ipv4Addr,
        internal_ip: Ipv4Addr,
        interface: String,
    },
    /// Gateway: a router's gateway port (`gw/{router}`): its address on the
    /// external network, answered there like Neutron's `qg-` interface.
    RouterGateway {
        router: String,
        port_id: String,
        ip: Ipv4Addr,
    },
    /// A VM port's security groups on its node (`sg/{port_id}`): allow
    /// rules; a rule from a remote group names the group, whose members'
    /// addresses come in its [`Item::GroupMembers`]. The node tracks
    /// connections.
    PortFilter {
        port_id: String,
        /// Shared: ports in the same groups have the same rules, and at
        /// 100,000 ports a list each was tens of megabytes.
        rules: std::sync::Arc<[FilterRule]>,
    },
    /// A security group's members' addresses (`sgm/{group_id}`), shared by
    /// every filter on the node with a rule from that group (Neutron's
    /// ipsets, OVN's address sets): a member joining or leaving rewrites
    /// this one item, not every filter that names the group. A node holds
    /// it exactly while one of its `sg/` items names the group. Fixed IPs
    /// (as /32 or /128) and allowed-address-pair prefixes, sorted, without
    /// duplicates.
    GroupMembers {
        group_id: String,
        addrs: Vec<(std::net::IpAddr, u8)>,
    },
    /// Gateway: an extra route of a router (`route/{router}/{destination}/{prefix_len}`).
    Route {
        router: String,
        destination: Ipv4Addr,
        prefix_len: u8,
        nexthop: Ipv4Addr,
    },
}

/// One allow rule of a port's filter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilterRule {
    /// To the VM (else from it).
    pub ingress: bool,
    pub ipv6: bool,
    /// `None`: any protocol.
    pub protocol: Option<u8>,
    /// Ports (TCP, UDP, …) or ICMP type (`port_min`) and code (`port_max`).
    pub port_min: Option<u16>,
    pub port_max: Option<u16>,
    /// `None`: any address; else these prefixes (`remote_ip_prefix`).
    pub remote: Option<Vec<(std::net::IpAddr, u8)>>,
    /// A remote group (`remote_group_id`), with `remote` then `Some([])`
    /// (so an agent that predates member sets admits no one by the rule,
    /// never everyone): the rule admits peers whose address is in the group's
    /// [`Item::GroupMembers`] on the node; a node without that item admits
    /// no one by this rule (the group has no members).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_group: Option<String>,
}

fn admin_up_default() -> bool {
    true
}

/// Changes to a node's map under one version.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delta {
    pub version: u64,
    pub upserts: Items,
    pub removals: Vec<String>,
    /// MACs withdrawn from the network (their port was deleted, or moved or
    /// changed MAC): the node drops what it *learned* about them, as
    /// l2population's `remove_fdb_entries` makes Neutron agents do. Not part
    /// of the desired state, so snapshots do not carry it; learned entries
    /// missed while disconnected age out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forget: Vec<String>,
}

impl Delta {
    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty() && self.removals.is_empty() && self.forget.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToAgent {
    Snapshot {
        version: u64,
        items: Items,
    },
    Delta(Delta),
    /// Asks for the state the node's pipeline runs now (answered by
    /// [`FromAgent::Introspection`] with the same `id`); changes nothing.
    Introspect {
        id: u64,
    },
    /// The controller refuses this session (its hello named another host or
    /// role than its credential, or it broke the protocol) and closes it.
    Refused {
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FromAgent {
    Hello {
        host: String,
        role: Role,
        configurations: serde_json::Map<String, serde_json::Value>,
        /// The version the agent still runs (0 after a fresh start).
        version: u64,
    },
    Ack {
        version: u64,
    },
    Nack {
        version: u64,
        error: String,
    },
    Heartbeat,
    PortStatus {
        port_id: String,
        up: bool,
    },
    /// Every port that is up on this node (its device is plugged and the
    /// node runs it, administratively up); every other port bound here is
    /// down. Sent after each snapshot is applied, so a resync after either
    /// side restarted leaves no stale `ACTIVE` behind.
    PortsUp {
        ports: Vec<String>,
    },
    /// The answer to [`ToAgent::Introspect`].
    Introspection {
        id: u64,
        state: Box<NodeState>,
    },
}
