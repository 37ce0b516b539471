//! The compiler: the Neutron model in, each node's desired state out, kept up to
//! date incrementally.
//!
//! A bound port contributes:
//! * on its own node, an `iface/{port}` item;
//! * on every vRouter that has a port in the same network (and on the gateway),
//!   a `remote/{vni}/{mac}` item pointing at the VTEP that reaches it: its
//!   vRouter's, or the gateway's for a VLAN-side port;
//! * on the gateway, for a VLAN-side port, a `dhcp/{vlan}/{mac}` item, and the
//!   network's `bd/{vni}` bridge domain while any VLAN-side port exists.
//!
//! A vRouter holds `net/{vni}` while it has a port in the network, with the flood
//! list of the other members. A port change touches only its node, the other
//! members of its network and the gateway; [`Stats`] counts what each batch touched.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;

use switchyard_model::{Change, Kind, State};
use switchyard_proto::{Delta, Item, Role};

use crate::facts::{NodeFacts, PortFacts, Side, node_facts, port_facts};

#[derive(Debug, Default)]
struct Node {
    facts: Option<NodeFacts>,
    /// Hashed, not ordered: a full compile inserts hundreds of thousands of
    /// items, and only snapshots need them in key order.
    items: HashMap<String, Item>,
    version: u64,
    /// Keys changed since the last version was cut.
    dirty: BTreeSet<String>,
    /// MACs withdrawn since the last cut (see [`Delta::forget`]).
    forget: BTreeSet<String>,
}

#[derive(Debug, Default)]
struct Net {
    ports: BTreeSet<String>,
    /// vRouter host -> ports it has in the network
    vrouters: BTreeMap<String, usize>,
    /// (physnet, vlan) -> VLAN-side ports
    vlans: BTreeMap<(String, u16), usize>,
}

/// How a batch changed the node set.
#[derive(Debug, PartialEq, Eq)]
enum NodeChange {
    None,
    /// Only these nodes are new, none of them a gateway.
    Added(Vec<String>),
    /// Anything else: every port is recompiled against the new node set.
    Other,
}

/// What the last batch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub nodes_touched: usize,
    pub items_changed: usize,
    pub ports_compiled: usize,
}

#[derive(Debug, Default)]
pub struct Compiler {
    /// Hashed: every item write looks its node up by host name.
    nodes: HashMap<String, Node>,
    /// Gateway hosts and VTEPs, derived from `nodes` whenever they change.
    gws: Vec<(String, Option<Ipv4Addr>)>,
    /// Off while a full compile builds every node from nothing: then every item
    /// is new, and tracking them one by one would only cost time.
    untracked: bool,
    ports: HashMap<String, PortFacts>,
    nets: HashMap<u32, Net>,
    pub last: Stats,
}

fn remote_key(vni: u32, mac: &str) -> String {
    format!("remote/{vni}/{mac}")
}

impl Compiler {
    pub fn new() -> Self {
        Self::default()
    }

    /// Compiles everything from scratch.
    pub fn full(st: &State) -> Self {
        let mut c = Compiler::new();
        c.sync_nodes(st);
        c.untracked = true;
        for id in st.ports.keys() {
            c.refresh_port(st, id);
        }
        c.untracked = false;
        // Every node with state starts at version 1: what a snapshot carries.
        for n in c.nodes.values_mut() {
            n.dirty.clear();
            if !n.items.is_empty() {
                n.version = 1;
            }
        }
        c
    }

    // ---- item bookkeeping ------------------------------------------------------

    fn put(&mut self, host: &str, key: String, item: Item) {
        // A node whose agent is gone keeps no desired state (as a full compile
        // would not create it).
        let Some(n) = self.nodes.get_mut(host).filter(|n| n.facts.is_some()) else {
            return;
        };
        if n.items.get(&key) != Some(&item) {
            if !self.untracked {
                n.dirty.insert(key.clone());
            }
            n.items.insert(key, item);
        }
    }

    fn del(&mut self, host: &str, key: &str) {
        let Some(n) = self.nodes.get_mut(host) else {
            return;
        };
        if n.items.remove(key).is_some() && !self.untracked {
            n.dirty.insert(key.to_string());
        }
    }

    fn gateways(&self) -> Vec<(String, Option<Ipv4Addr>)> {
        self.gws.clone()
    }

    fn refresh_gateways(&mut self) {
        self.gws = self
            .nodes
            .iter()
            .filter_map(|(h, n)| {
                n.facts
                    .as_ref()
                    .filter(|f| f.role == Role::Gateway)
                    .map(|f| (h.clone(), f.vtep))
            })
            .collect();
        // The first gateway (by name) is where VLAN-side ports are reached.
        self.gws.sort();
    }

    fn vtep_of(&self, host: &str) -> Option<Ipv4Addr> {
        self.nodes
            .get(host)
            .and_then(|n| n.facts.as_ref())
            .and_then(|f| f.vtep)
    }

    fn role_of(&self, host: &str) -> Option<Role> {
        self.nodes
            .get(host)
            .and_then(|n| n.facts.as_ref())
            .map(|f| f.role)
    }

    /// Where a port is reached from the overlay.
    fn location(&self, p: &PortFacts) -> Option<Ipv4Addr> {
        match p.side {
            Side::Overlay => self.vtep_of(&p.host),
            Side::Vlan { .. } => self.gws.first().and_then(|(_, v)| *v),
        }
    }

    fn remote_item(&self, vni: u32, p: &PortFacts) -> Option<Item> {
        Some(Item::RemoteMac {
            vni,
            mac: p.mac.clone(),
            ips: p.ips.clone(),
            vtep: self.location(p)?,
        })
    }

    /// Re-derives the flood lists of a network on its vRouters and gateway(s).
    fn refresh_flood(&mut self, vni: u32) {
        let Some(net) = self.nets.get(&vni) else {
            return;
        };
        let members: Vec<String> = net.vrouters.keys().cloned().collect();
        let vlans: Vec<(String, u16)> = net.vlans.keys().cloned().collect();
        let gws = self.gateways();
        let gw_vteps: Vec<Ipv4Addr> = gws.iter().filter_map(|(_, v)| *v).collect();
        for h in &members {
            let mut flood: Vec<Ipv4Addr> = members
                .iter()
                .filter(|o| *o != h)
                .filter_map(|o| self.vtep_of(o))
                .chain(gw_vteps.iter().copied())
                .collect();
            flood.sort();
            flood.dedup();
            self.put(h, format!("net/{vni}"), Item::Network { vni, flood });
        }
        let mut vr_vteps: Vec<Ipv4Addr> = members.iter().filter_map(|o| self.vtep_of(o)).collect();
        vr_vteps.sort();
        for (gw, _) in gws {
            // One bridge domain per network: the VLAN of its (first) physnet.
            match vlans.first() {
                Some((physnet, vlan)) => self.put(
                    &gw,
                    format!("bd/{vni}"),
                    Item::BridgeDomain {
                        vni,
                        vlan: *vlan,
                        physnet: physnet.clone(),
                        flood: vr_vteps.clone(),
                    },
                ),
                None => self.del(&gw, &format!("bd/{vni}")),
            }
        }
    }

    // ---- ports -----------------------------------------------------------------

    fn remove_port(&mut self, id: &str) {
        let Some(p) = self.ports.remove(id) else {
            return;
        };
        self.del(&p.host, &format!("iface/{id}"));
        let Some(vni) = p.vni else { return };
        let mut flood_changed = false;
        let (members, others): (Vec<String>, Vec<String>) = {
            let Some(net) = self.nets.get_mut(&vni) else {
                return;
            };
            net.ports.remove(id);
            match &p.side {
                Side::Overlay => {
                    if let Some(c) = net.vrouters.get_mut(&p.host) {
                        *c -= 1;
                        if *c == 0 {
                            net.vrouters.remove(&p.host);
                            flood_changed = true;
                        }
                    }
                }
                Side::Vlan { physnet, vlan } => {
                    let k = (physnet.clone(), *vlan);
                    if let Some(c) = net.vlans.get_mut(&k) {
                        *c -= 1;
                        if *c == 0 {
                            net.vlans.remove(&k);
                            flood_changed = true;
                        }
                    }
                }
            }
            (
                net.vrouters.keys().cloned().collect(),
                net.ports.iter().cloned().collect(),
            )
        };
        let key = remote_key(vni, &p.mac);
        for h in &members {
            if *h != p.host {
                self.del(h, &key);
            }
        }
        for (gw, _) in self.gateways() {
            self.del(&gw, &key);
            if let Side::Vlan { vlan, .. } = &p.side {
                self.del(&gw, &format!("dhcp/{vlan}/{}", p.mac));
            }
        }
        // The host left the network: its VRF and everything learned for it go.
        if p.side == Side::Overlay && !members.contains(&p.host) {
            self.del(&p.host, &format!("net/{vni}"));
            for o in &others {
                if let Some(op) = self.ports.get(o) {
                    let k = remote_key(vni, &op.mac);
                    self.del(&p.host, &k);
                }
            }
        }
        if flood_changed {
            self.refresh_flood(vni);
        }
        if self.nets.get(&vni).is_some_and(|n| n.ports.is_empty()) {
            self.nets.remove(&vni);
        }
    }

    fn add_port(&mut self, p: PortFacts) {
        let id = p.port_id.clone();
        self.put(
            &p.host,
            format!("iface/{id}"),
            Item::Interface {
                port_id: id.clone(),
                mac: p.mac.clone(),
                ips: p.ips.clone(),
                pairs: p.pairs.clone(),
                port_security: p.port_security,
                admin_up: p.admin_up,
                attachment: p.attachment.clone(),
                lease: p.lease.clone(),
            },
        );
        let Some(vni) = p.vni else {
            self.ports.insert(id, p);
            return;
        };
        let overlay_here = p.side == Side::Overlay && self.role_of(&p.host) == Some(Role::Vrouter);
        // The network is taken out of the map while its members are written to,
        // so its member list need not be copied for every port.
        let mut net = self.nets.remove(&vni).unwrap_or_default();
        let (joined, new_vlan, others) = {
            net.ports.insert(id.clone());
            let mut joined = false;
            let mut new_vlan = false;
            match &p.side {
                Side::Overlay if overlay_here => {
                    let c = net.vrouters.entry(p.host.clone()).or_default();
                    joined = *c == 0;
                    *c += 1;
                }
                Side::Overlay => {}
                Side::Vlan { physnet, vlan } => {
                    let c = net.vlans.entry((physnet.clone(), *vlan)).or_default();
                    new_vlan = *c == 0;
                    *c += 1;
                }
            }
            // Only a vRouter new to the network needs the other ports.
            let others: Vec<String> = if joined {
                net.ports.iter().filter(|o| **o != id).cloned().collect()
            } else {
                Vec::new()
            };
            (joined, new_vlan, others)
        };
        if let Some(item) = self.remote_item(vni, &p) {
            let key = remote_key(vni, &p.mac);
            for h in net.vrouters.keys() {
                if *h != p.host {
                    self.put(h, key.clone(), item.clone());
                }
            }
            for (gw, _) in self.gateways() {
                if p.side == Side::Overlay {
                    self.put(&gw, key.clone(), item.clone());
                }
            }
        }
        if let (Side::Vlan { vlan, .. }, Some(lease)) = (&p.side, &p.lease) {
            for (gw, _) in self.gateways() {
                self.put(
                    &gw,
                    format!("dhcp/{vlan}/{}", p.mac),
                    Item::DhcpPort {
                        vlan: *vlan,
                        mac: p.mac.clone(),
                        lease: lease.clone(),
                    },
                );
            }
        }
        if joined {
            // A vRouter new to the network learns every other port of it.
            for o in &others {
                let Some(op) = self.ports.get(o) else {
                    continue;
                };
                if op.host == p.host {
                    continue;
                }
                if let Some(item) = self.remote_item(vni, op) {
                    let k = remote_key(vni, &op.mac);
                    self.put(&p.host, k, item);
                }
            }
        }
        self.ports.insert(id, p);
        self.nets.insert(vni, net);
        if joined || new_vlan {
            self.refresh_flood(vni);
        }
    }

    /// Recompiles one port from the model (gone or unbound: removed).
    pub fn refresh_port(&mut self, st: &State, id: &str) {
        let new = st.ports.get(id).and_then(|p| port_facts(st, p));
        if new.is_some() && self.ports.get(id) == new.as_ref() {
            return;
        }
        let old = self.ports.get(id).cloned();
        self.remove_port(id);
        if let Some(old) = old
            && !self.untracked
            && new
                .as_ref()
                .is_none_or(|n| (&n.mac, &n.host, n.vni) != (&old.mac, &old.host, old.vni))
        {
            self.withdraw(&old);
        }
        if let Some(p) = new {
            self.add_port(p);
        }
        self.last.ports_compiled += 1;
    }

    /// Tells every node of the port's network (and the port's own node and
    /// the gateways) to forget what it learned about the port's MAC.
    fn withdraw(&mut self, p: &PortFacts) {
        let mut hosts: BTreeSet<String> = BTreeSet::from([p.host.clone()]);
        hosts.extend(self.gws.iter().map(|(h, _)| h.clone()));
        if let Some(net) = p.vni.and_then(|v| self.nets.get(&v)) {
            hosts.extend(net.vrouters.keys().cloned());
            hosts.extend(
                net.ports
                    .iter()
                    .filter_map(|id| self.ports.get(id))
                    .map(|q| q.host.clone()),
            );
        }
        for h in hosts {
            if let Some(n) = self.nodes.get_mut(&h) {
                n.forget.insert(p.mac.clone());
            }
        }
    }

    // ---- nodes -----------------------------------------------------------------

    /// Brings the node list in line with the agents table; heartbeats change
    /// nothing here. Says what changed, so that [`Compiler::apply`] recompiles
    /// only what it must.
    fn sync_nodes(&mut self, st: &State) -> NodeChange {
        let want: BTreeMap<String, NodeFacts> = st
            .agents
            .values()
            .filter_map(node_facts)
            .map(|f| (f.host.clone(), f))
            .collect();
        let have: BTreeMap<String, NodeFacts> = self
            .nodes
            .iter()
            .filter_map(|(h, n)| n.facts.clone().map(|f| (h.clone(), f)))
            .collect();
        if want == have {
            return NodeChange::None;
        }
        // New non-gateway nodes only: the common case (a compute node's agent
        // registers). Anything else — a node gone, a role or VTEP changed, a
        // gateway added — changes items on every node of its networks.
        let only_added: Option<Vec<String>> = {
            let kept = have.iter().all(|(h, f)| want.get(h) == Some(f));
            let added: Vec<String> = want
                .iter()
                .filter(|(h, _)| !have.contains_key(*h))
                .map(|(h, _)| h.clone())
                .collect();
            let no_gateway = added
                .iter()
                .all(|h| want.get(h).is_some_and(|f| f.role != Role::Gateway));
            (kept && no_gateway).then_some(added)
        };
        for (h, f) in &want {
            self.nodes.entry(h.clone()).or_default().facts = Some(f.clone());
        }
        for (h, n) in self.nodes.iter_mut() {
            if !want.contains_key(h) && n.facts.take().is_some() {
                let keys: Vec<String> = n.items.keys().cloned().collect();
                n.items.clear();
                n.dirty.extend(keys);
            }
        }
        self.refresh_gateways();
        match only_added {
            Some(hosts) => NodeChange::Added(hosts),
            None => NodeChange::Other,
        }
    }

    /// Applies one committed transaction's changes. Returns the deltas to send.
    pub fn apply(&mut self, st: &State, changes: &[Change]) -> BTreeMap<String, Delta> {
        self.last = Stats::default();
        let node_change = if changes.iter().any(|(k, _, _)| *k == Kind::Agent) {
            self.sync_nodes(st)
        } else {
            NodeChange::None
        };
        if let NodeChange::Added(hosts) = &node_change {
            // Ports already bound to a newly registered host (its agent was
            // deleted and came back, say) get their items now; nothing else
            // depends on a node that had no state.
            let hosts: BTreeSet<&String> = hosts.iter().collect();
            let ids: Vec<String> = self
                .ports
                .values()
                .filter(|p| hosts.contains(&p.host))
                .map(|p| p.port_id.clone())
                .collect();
            for id in &ids {
                self.remove_port(id);
                self.refresh_port(st, id);
            }
        }
        if node_change == NodeChange::Other {
            // Recompile all ports against the new node set, diffing item by item.
            let ids: Vec<String> = self
                .ports
                .keys()
                .cloned()
                .chain(st.ports.keys().cloned())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            for id in &ids {
                self.remove_port(id);
            }
            for id in &ids {
                self.refresh_port(st, id);
            }
        } else {
            let mut ports: BTreeSet<String> = BTreeSet::new();
            for (kind, id, rec) in changes {
                match kind {
                    Kind::Port => {
                        ports.insert(id.clone());
                    }
                    // Subnets (DHCP data), networks (MTU) and segments affect every port on them.
                    Kind::Subnet | Kind::Network | Kind::Segment => {
                        let net = match rec {
                            Some(switchyard_model::Record::Subnet(s)) => Some(s.network_id.clone()),
                            Some(switchyard_model::Record::Segment(s)) => {
                                Some(s.network_id.clone())
                            }
                            Some(switchyard_model::Record::Network(n)) => Some(n.id.clone()),
                            _ => None,
                        };
                        if let Some(n) = net {
                            ports.extend(st.network_port_ids(&n).cloned());
                        }
                    }
                    // Routers and floating IPs are not compiled yet: their
                    // ports (interfaces, gateway) are not realised on nodes.
                    Kind::Agent | Kind::Router | Kind::FloatingIp => {}
                }
            }
            for id in ports {
                self.refresh_port(st, &id);
            }
        }
        self.cut()
    }

    /// Turns the dirty keys of every node into a versioned delta.
    fn cut(&mut self) -> BTreeMap<String, Delta> {
        let mut out = BTreeMap::new();
        for (h, n) in self.nodes.iter_mut() {
            if n.dirty.is_empty() && n.forget.is_empty() {
                continue;
            }
            n.version += 1;
            let mut d = Delta {
                version: n.version,
                forget: std::mem::take(&mut n.forget).into_iter().collect(),
                ..Delta::default()
            };
            for k in std::mem::take(&mut n.dirty) {
                match n.items.get(&k) {
                    Some(item) => {
                        d.upserts.insert(k, item.clone());
                    }
                    None => d.removals.push(k),
                }
            }
            self.last.items_changed += d.upserts.len() + d.removals.len();
            out.insert(h.clone(), d);
        }
        self.last.nodes_touched = out.len();
        out
    }

    /// Deltas for anything changed since the last cut (after [`Compiler::full`]
    /// there is nothing: its state goes out as snapshots).
    pub fn initial_versions(&mut self) -> BTreeMap<String, Delta> {
        self.cut()
    }

    /// A node's current desired state and version (what a snapshot carries).
    pub fn snapshot(&self, host: &str) -> Option<(u64, BTreeMap<String, Item>)> {
        self.nodes.get(host).map(|n| {
            (
                n.version,
                n.items
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            )
        })
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    pub fn item_count(&self) -> usize {
        self.nodes.values().map(|n| n.items.len()).sum()
    }
}
