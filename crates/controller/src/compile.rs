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
use switchyard_proto::{Attachment, Delta, Item, Role};

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
    /// Router interfaces in the network (they need its bridge domain on the gateway).
    rifs: usize,
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
    /// Each router's gateway items (SNAT, floating IPs, routes) and the node
    /// they are on, as last compiled.
    routers: HashMap<String, (String, BTreeMap<String, Item>)>,
    /// Ports pre-plugged (INACTIVE bindings) on other hosts: port → (host, item).
    preplugged: HashMap<String, Vec<(String, Item)>>,
    /// Which router each router port and floating IP belonged to at the last
    /// compile, so a deletion finds the router to recompile.
    router_of: HashMap<String, String>,
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
        let routers: Vec<String> = st.routers.keys().cloned().collect();
        for r in &routers {
            c.refresh_router(st, r);
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
            let rifs = self.nets.get(&vni).map_or(0, |n| n.rifs);
            match vlans.first() {
                // Routed but VLAN-less: a domain on the overlay side only.
                None if rifs > 0 => self.put(
                    &gw,
                    format!("bd/{vni}"),
                    Item::BridgeDomain {
                        vni,
                        vlan: 0,
                        physnet: String::new(),
                        flood: vr_vteps.clone(),
                    },
                ),
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
        self.del(&p.host, &format!("rif/{id}"));
        let Some(vni) = p.vni else { return };
        let mut flood_changed = false;
        let (members, others): (Vec<String>, Vec<String>) = {
            let Some(net) = self.nets.get_mut(&vni) else {
                return;
            };
            net.ports.remove(id);
            if matches!(p.attachment, Attachment::Router { .. }) {
                net.rifs = net.rifs.saturating_sub(1);
                flood_changed = true;
            }
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
            if gw != p.host {
                self.del(&gw, &key);
            }
            if let Side::Vlan { vlan, .. } = &p.side {
                self.del(&gw, &format!("dhcp/{vlan}/{}", p.mac));
            }
        }
        // A vRouter left the network: its VRF and everything learned for it
        // go. (A router interface leaving the gateway is not a vRouter
        // leaving: the gateway keeps what it knows of the network.)
        let router_port = matches!(p.attachment, Attachment::Router { .. });
        if p.side == Side::Overlay && !router_port && !members.contains(&p.host) {
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
        if let (
            Attachment::Router {
                vni,
                router,
                prefix_len,
            },
            Some(ip),
        ) = (&p.attachment, p.ips.first())
        {
            self.put(
                &p.host,
                format!("rif/{id}"),
                Item::RouterInterface {
                    router: router.clone(),
                    vni: *vni,
                    ip: *ip,
                    prefix_len: *prefix_len,
                    mac: p.mac.clone(),
                },
            );
        } else {
            self.put_iface(&p);
        }
        self.place_port(p);
    }

    fn put_iface(&mut self, p: &PortFacts) {
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
    }

    /// Joins a port to its network: remote entries, DHCP, flood lists.
    fn place_port(&mut self, p: PortFacts) {
        let id = p.port_id.clone();
        let Some(vni) = p.vni else {
            self.ports.insert(id, p);
            return;
        };
        let overlay_here = p.side == Side::Overlay && self.role_of(&p.host) == Some(Role::Vrouter);
        // The network is taken out of the map while its members are written to,
        // so its member list need not be copied for every port.
        let mut net = self.nets.remove(&vni).unwrap_or_default();
        // `domain_changed`: a new VLAN side or a router interface, either of
        // which changes the gateway's bridge domain for the network.
        let (joined, domain_changed, others) = {
            net.ports.insert(id.clone());
            let mut joined = false;
            let mut domain_changed = matches!(p.attachment, Attachment::Router { .. });
            if domain_changed {
                net.rifs += 1;
            }
            match &p.side {
                Side::Overlay if overlay_here => {
                    let c = net.vrouters.entry(p.host.clone()).or_default();
                    joined = *c == 0;
                    *c += 1;
                }
                Side::Overlay => {}
                Side::Vlan { physnet, vlan } => {
                    let c = net.vlans.entry((physnet.clone(), *vlan)).or_default();
                    domain_changed = *c == 0;
                    *c += 1;
                }
            }
            // Only a vRouter new to the network needs the other ports.
            let others: Vec<String> = if joined {
                net.ports.iter().filter(|o| **o != id).cloned().collect()
            } else {
                Vec::new()
            };
            (joined, domain_changed, others)
        };
        if let Some(item) = self.remote_item(vni, &p) {
            let key = remote_key(vni, &p.mac);
            for h in net.vrouters.keys() {
                if *h != p.host {
                    self.put(h, key.clone(), item.clone());
                }
            }
            for (gw, _) in self.gateways() {
                if p.side == Side::Overlay && gw != p.host {
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
        if joined || domain_changed {
            self.refresh_flood(vni);
        }
    }

    /// Recompiles one port from the model (gone or unbound: removed).
    pub fn refresh_port(&mut self, st: &State, id: &str) {
        let new = st.ports.get(id).and_then(|p| port_facts(st, p));
        let pre = self.preplugs(st, id, new.as_ref());
        if new.is_some()
            && self.ports.get(id) == new.as_ref()
            && self
                .preplugged
                .get(id)
                .map_or(pre.is_empty(), |old| *old == pre)
        {
            return;
        }
        let old = self.ports.get(id).cloned();
        self.remove_port(id);
        for (host, _) in self.preplugged.remove(id).unwrap_or_default() {
            self.del(&host, &format!("iface/{id}"));
        }
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
        for (host, item) in &pre {
            self.put(host, format!("iface/{id}"), item.clone());
        }
        if !pre.is_empty() {
            self.preplugged.insert(id.to_string(), pre);
        }
        self.last.ports_compiled += 1;
    }

    /// A port's INACTIVE bindings (made for a live migration), pre-plugged on
    /// their hosts: the device exists there, administratively down, so the
    /// hypervisor can plug the VM before the binding is activated; activation
    /// then only flips it up. Hosts already holding the active binding are skipped.
    fn preplugs(&self, st: &State, id: &str, active: Option<&PortFacts>) -> Vec<(String, Item)> {
        let Some(p) = st.ports.get(id) else {
            return Vec::new();
        };
        p.bindings
            .iter()
            .filter(|b| b.status == switchyard_model::BindingStatus::Inactive)
            .filter(|b| active.is_none_or(|a| a.host != b.host))
            .filter_map(|b| crate::facts::binding_facts(st, p, b))
            .filter(|f| !matches!(f.attachment, Attachment::Router { .. }))
            .map(|f| {
                (
                    f.host.clone(),
                    Item::Interface {
                        port_id: id.to_string(),
                        mac: f.mac,
                        ips: f.ips,
                        pairs: f.pairs,
                        port_security: f.port_security,
                        admin_up: false,
                        attachment: f.attachment,
                        lease: f.lease,
                    },
                )
            })
            .collect()
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

    // ---- routers ---------------------------------------------------------------

    /// A router's gateway items as the model has them now: SNAT to its
    /// gateway address, its floating IPs, its extra routes; all on the gateway
    /// node it is placed on, naming its compiled interfaces.
    fn router_items(&self, st: &State, rid: &str) -> (String, BTreeMap<String, Item>) {
        let mut items = BTreeMap::new();
        let Some(r) = st
            .routers
            .get(rid)
            .filter(|r| self.role_of(&r.host) == Some(Role::Gateway))
        else {
            return (String::new(), items);
        };
        // (interface id, address, prefix) of every compiled interface on its node.
        let rifs: Vec<(String, Ipv4Addr, u8)> = st
            .router_interfaces(rid)
            .into_iter()
            .filter_map(|p| self.ports.get(&p.id))
            .filter(|f| f.host == r.host)
            .filter_map(|f| match &f.attachment {
                Attachment::Router { prefix_len, .. } => f
                    .ips
                    .first()
                    .map(|ip| (f.port_id.clone(), *ip, *prefix_len)),
                _ => None,
            })
            .collect();
        let rif_for = |ip: Ipv4Addr| {
            rifs.iter()
                .find(|(_, a, len)| crate::facts::same_prefix(*a, ip, *len))
                .map(|(id, ..)| id.clone())
        };
        if let Some(g) = r.gateway.as_ref().filter(|g| g.enable_snat)
            && let Some(ext) = st.ports.get(&g.port_id).and_then(|p| {
                p.fixed_ips
                    .iter()
                    .find_map(|f| crate::facts::v4_of(&f.ip_address))
            })
        {
            items.insert(
                format!("snat/{rid}"),
                Item::Snat {
                    router: rid.to_string(),
                    external_ip: ext,
                    interfaces: rifs.iter().map(|(id, ..)| id.clone()).collect(),
                },
            );
        }
        for f in st.router_floatingips(rid) {
            let (Some(ext), Some(inside)) = (
                crate::facts::v4_of(&f.floating_ip_address),
                f.fixed_ip_address.as_ref().and_then(crate::facts::v4_of),
            ) else {
                continue;
            };
            if let Some(iface) = rif_for(inside) {
                items.insert(
                    format!("fip/{ext}"),
                    Item::FloatingIp {
                        router: rid.to_string(),
                        external_ip: ext,
                        internal_ip: inside,
                        interface: iface,
                    },
                );
            }
        }
        for rt in &r.routes {
            // The gateway routes via next hops on its interfaces' subnets; a
            // next hop on the external subnet is not realised (yet).
            let (ipnet::IpNet::V4(dest), std::net::IpAddr::V4(nh)) = (rt.destination, rt.nexthop)
            else {
                continue;
            };
            if rif_for(nh).is_some() {
                items.insert(
                    format!("route/{rid}/{}/{}", dest.network(), dest.prefix_len()),
                    Item::Route {
                        router: rid.to_string(),
                        destination: dest.network(),
                        prefix_len: dest.prefix_len(),
                        nexthop: nh,
                    },
                );
            }
        }
        (r.host.clone(), items)
    }

    /// Recompiles one router's gateway items, moving them if it moved.
    pub fn refresh_router(&mut self, st: &State, rid: &str) {
        let (host, items) = self.router_items(st, rid);
        let (old_host, old) = self.routers.remove(rid).unwrap_or_default();
        for k in old.keys() {
            if old_host != host || !items.contains_key(k) {
                self.del(&old_host, k);
            }
        }
        for (k, v) in &items {
            self.put(&host, k.clone(), v.clone());
        }
        self.router_of.retain(|_, r| r != rid);
        if st.routers.contains_key(rid) {
            for p in st.device_ports(rid) {
                self.router_of.insert(p.id.clone(), rid.to_string());
            }
            for f in st.router_floatingips(rid) {
                self.router_of.insert(f.id.clone(), rid.to_string());
            }
        }
        if !items.is_empty() || !old.is_empty() {
            self.routers.insert(rid.to_string(), (host, items));
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
            let routers: Vec<String> = self
                .routers
                .keys()
                .cloned()
                .chain(st.routers.keys().cloned())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            for r in &routers {
                self.refresh_router(st, r);
            }
        } else {
            let mut ports: BTreeSet<String> = BTreeSet::new();
            let mut routers: BTreeSet<String> = BTreeSet::new();
            for (kind, id, rec) in changes {
                match kind {
                    Kind::Port => {
                        ports.insert(id.clone());
                        if let Some(switchyard_model::Record::Port(p)) = rec
                            && p.device_owner.starts_with("network:router")
                        {
                            routers.insert(p.device_id.clone());
                        }
                        if let Some(r) = self.router_of.get(id) {
                            routers.insert(r.clone());
                        }
                    }
                    Kind::Router => {
                        routers.insert(id.clone());
                    }
                    Kind::FloatingIp => {
                        if let Some(switchyard_model::Record::FloatingIp(f)) = rec
                            && let Some(r) = &f.router_id
                        {
                            routers.insert(r.clone());
                        }
                        if let Some(r) = self.router_of.get(id) {
                            routers.insert(r.clone());
                        }
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
                    Kind::Agent => {}
                }
            }
            for id in ports {
                self.refresh_port(st, &id);
            }
            // After the ports: a router's items name its compiled interfaces.
            for r in routers {
                self.refresh_router(st, &r);
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
