//! Introspection of what a node's pipeline runs: the agent's answer to "show
//! me your interfaces, tables and counters" (Tungsten Fabric's `vif --list`,
//! `rt --dump` and agent introspect, OVS's `fdb/show`).
//!
//! A [`NodeState`] is read from the pipeline as applied, not from the desired
//! items: an interface is listed because the pipeline has it, a MAC because a
//! bridge table holds it. The shape is flat and JSON-friendly; MACs are
//! lowercase `aa:bb:cc:dd:ee:ff` strings, as everywhere in the southbound.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::Role;

/// An interface present in the pipeline.
pub const STATUS_ACTIVE: &str = "ACTIVE";
/// A port the agent has a local port for, but whose interface the pipeline
/// does not have (e.g. its network was removed under it).
pub const STATUS_DOWN: &str = "DOWN";

/// Everything a node runs, at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeState {
    pub host: String,
    pub role: Role,
    /// The controller version the node has applied (0 before the first snapshot).
    pub version: u64,
    /// VM interfaces, by local port.
    pub interfaces: Vec<InterfaceState>,
    /// Per-network tables, by VNI then VLAN.
    pub networks: Vec<NetworkTables>,
    pub counters: CounterState,
    /// Gateway nodes: the routers applied here, by id.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routers: Vec<RouterState>,
    /// Gateway nodes: SNAT connections in the table now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nat_connections: Option<usize>,
}

/// A router as a gateway node runs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterState {
    pub router: String,
    /// `{port_id} {ip}/{prefix} vni {vni} {mac}` per interface.
    pub interfaces: Vec<String>,
    /// The SNAT address, when the router source-NATs.
    pub snat: Option<Ipv4Addr>,
    /// `{external} -> {internal}` per floating IP.
    pub floating_ips: Vec<String>,
    /// `{destination}/{prefix} via {nexthop}` per extra route.
    pub routes: Vec<String>,
}

/// One VM interface (`vif --list`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceState {
    /// The Neutron port id; empty for an interface the pipeline has but the
    /// agent did not plug.
    pub port_id: String,
    /// The local port (TAP, OVS port, VF) it is plugged into.
    pub local_port: u32,
    pub mac: String,
    pub ips: Vec<Ipv4Addr>,
    /// `vrouter`, `ovs` or `hw_veb`.
    pub vif_type: String,
    pub vlan: Option<u16>,
    pub vni: Option<u32>,
    /// [`STATUS_ACTIVE`] or [`STATUS_DOWN`].
    pub status: String,
    /// Port security (anti-spoofing; the spoof check on a VF).
    pub port_security: bool,
    /// The port's device (TAP, OVS port, VF) is there and attached: what a
    /// hypervisor waits for before it moves a guest onto this node.
    #[serde(default)]
    pub plugged: bool,
}

/// One network's forwarding tables: a vRouter VRF (VNI), an OVS or SR-IOV VLAN,
/// or a gateway bridge domain (both).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkTables {
    pub vni: Option<u32>,
    pub vlan: Option<u16>,
    /// VTEPs that broadcast, unknown unicast and multicast are replicated to.
    pub flood: Vec<Ipv4Addr>,
    /// The bridge (MAC) table, by MAC.
    pub bridge: Vec<BridgeEntry>,
    /// IP → MAC entries (proxy ARP, next-hop resolution), by IP.
    pub arp: Vec<ArpEntry>,
}

/// Where frames to a MAC go: "port 3", "trunk port 0", "vtep 192.0.2.12",
/// "trunk vlan 100", "vtep 192.0.2.12 (config)" (the pipelines' own wording).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BridgeEntry {
    pub mac: String,
    pub points_to: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArpEntry {
    pub ip: Ipv4Addr,
    pub mac: String,
}

/// The pipeline's counters. Drop reasons are named in snake_case
/// (`unknown_port`, `spoofed_mac`, ...), as the dataplane serializes them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterState {
    pub rx: u64,
    pub tx: u64,
    /// Source MACs not learned because the learning table was full.
    pub not_learned: u64,
    pub drops: BTreeMap<String, u64>,
}

impl NodeState {
    /// The interface of a Neutron port, if listed.
    pub fn interface(&self, port_id: &str) -> Option<&InterfaceState> {
        self.interfaces.iter().find(|i| i.port_id == port_id)
    }

    /// The tables of the network with this VNI.
    pub fn network_by_vni(&self, vni: u32) -> Option<&NetworkTables> {
        self.networks.iter().find(|n| n.vni == Some(vni))
    }

    /// The tables of the network on this VLAN.
    pub fn network_by_vlan(&self, vlan: u16) -> Option<&NetworkTables> {
        self.networks.iter().find(|n| n.vlan == Some(vlan))
    }
}

impl NetworkTables {
    /// Where the bridge table sends frames to `mac`.
    pub fn bridge_to(&self, mac: &str) -> Option<&str> {
        self.bridge
            .iter()
            .find(|e| e.mac.eq_ignore_ascii_case(mac))
            .map(|e| e.points_to.as_str())
    }

    /// The MAC the ARP table gives for `ip`.
    pub fn arp_for(&self, ip: Ipv4Addr) -> Option<&str> {
        self.arp.iter().find(|e| e.ip == ip).map(|e| e.mac.as_str())
    }
}
