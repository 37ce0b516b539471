//! The compiler: the Neutron model (and which agents are alive) in, each
//! node's desired state out, kept up to date incrementally.
//!
//! A bound port contributes:
//! * on its own node, an `iface/{port}` item (`rif/{port}` for a router
//!   interface on its gateway node);
//! * on every vRouter that has a port in the same network and on every
//!   gateway serving the network, a `remote/{vni}/{mac}` item pointing at the
//!   VTEP that reaches it: its vRouter's, or the network's VLAN gateway's for
//!   a VLAN-side (OVS, SR-IOV) port;
//! * on the network's VLAN gateway, for a VLAN-side port, a `dhcp/{vlan}/{mac}` item.
//!
//! A filtered VM port (vRouter or OVS node) also contributes its `sg/{port}`
//! item there, and its node holds `sgm/{group}` for each remote group its
//! rules name (see [`crate::secgroups`]): a membership change rewrites those
//! sets where they are held, not the filters.
//!
//! # Gateways
//!
//! A network is served by the gateways that hold its router interfaces and,
//! while it has VLAN-side ports, by exactly one **VLAN gateway** that stitches
//! its VLAN to its VNI: the eligible gateway (alive agent, enabled, with a
//! VTEP) that ranks first for the network's VNI by rendezvous hashing. Only one
//! gateway may bridge a VLAN to a VNI (two would duplicate every frame), and
//! hashing spreads networks over gateways while moving only the dead
//! gateway's networks when one dies; a gateway that comes back takes its
//! networks back (it announces their MACs on the VLAN when it does). Each
//! gateway serving a network holds `bd/{vni}`: with the VLAN on the VLAN
//! gateway, overlay-only (`vlan` 0) on the others, flooding to the network's
//! vRouters and the other gateways serving it.
//!
//! A vRouter holds `net/{vni}` while it has a port in the network, with the
//! flood list of the other members and the network's gateways. A port change
//! touches only its node, the other members of its network and its gateways;
//! [`Stats`] counts what each batch touched.
//!
//! Liveness is an input ([`Liveness`]), computed at the edge from heartbeats
//! and `agent_down_time`: the compiler keeps no clock. A full compile and any
//! sequence of incremental ones over the same model and liveness give the same
//! items (property-tested in `tests/incremental.rs`).

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;

use switchyard_model::{AGENT_TYPE_GATEWAY, Agent, Change, Kind, Port, Record, State, Timestamp};
use switchyard_proto::{Attachment, Delta, FilterRule, Item, Role};

use crate::facts::{NodeFacts, PortFacts, Side, node_facts, port_facts};
use crate::secgroups::{GroupSets, Write, filter_rule};

/// The compiler's tables hash with foldhash, seeded at random per process:
/// a full compile makes some 650,000 item writes at 100,000 ports, each a
/// node lookup and an item lookup, and SipHash was a tenth of its time.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Which agents count as alive now (Neutron's `alive`). An input of the
/// compiler like the model: the edge says what time it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Liveness {
    /// As Neutron computes `alive`: a heartbeat within `agent_down_time_s` of `now`.
    At {
        now: Timestamp,
        agent_down_time_s: u64,
    },
    /// Exactly the agents on these hosts (tests).
    Hosts(BTreeSet<String>),
    /// Every agent (tests, benchmarks).
    All,
}

impl Liveness {
    pub fn at(now: Timestamp, agent_down_time_s: u64) -> Self {
        Liveness::At {
            now,
            agent_down_time_s,
        }
    }

    /// Every agent of the model alive.
    pub fn all(_st: &State) -> Self {
        Liveness::All
    }

    pub fn from_hosts<I: IntoIterator<Item = S>, S: Into<String>>(hosts: I) -> Self {
        Liveness::Hosts(hosts.into_iter().map(Into::into).collect())
    }

    pub fn is_alive(&self, a: &Agent) -> bool {
        match self {
            Liveness::At {
                now,
                agent_down_time_s,
            } => a.is_alive(*now, *agent_down_time_s),
            Liveness::Hosts(h) => h.contains(&a.host),
            Liveness::All => true,
        }
    }
}

#[derive(Debug, Default)]
struct Node {
    facts: Option<NodeFacts>,
    /// Hashed, not ordered: a full compile inserts hundreds of thousands of
    /// items, and only snapshots need them in key order. Keys and items are
    /// shared: a port's `remote/` item is the same on every node that holds
    /// it (a network's vRouters and gateways), so it is stored once.
    items: HashMap<Arc<str>, Arc<Item>>,
    version: u64,
    /// Keys changed since the last version was cut.
    dirty: BTreeSet<Arc<str>>,
    /// MACs withdrawn since the last cut (see [`Delta::forget`]).
    forget: BTreeSet<String>,
}

/// Where a network's gateway side is compiled to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Placement {
    /// The gateway stitching the network's VLAN side to its VNI (while it has one).
    vlan_gw: Option<String>,
    /// Every gateway serving the network: `vlan_gw` and the gateways holding
    /// its router interfaces.
    gws: BTreeSet<String>,
}

#[derive(Debug, Default)]
struct Net {
    ports: BTreeSet<String>,
    /// vRouter host -> ports it has in the network
    vrouters: BTreeMap<String, usize>,
    /// (physnet, vlan) -> VLAN-side ports
    vlans: BTreeMap<(String, u16), usize>,
    /// Gateway host -> router interfaces it holds in the network.
    rif_gws: BTreeMap<String, usize>,
    /// The placement the network's items were last written for.
    placed: Placement,
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
    /// Every gateway node, sorted (derived from `nodes`).
    gws: Vec<String>,
    /// Gateways that may serve networks: alive, enabled, with a VTEP; sorted.
    eligible: Vec<String>,
    /// Off while a full compile builds every node from nothing: then every item
    /// is new, and tracking them one by one would only cost time.
    untracked: bool,
    /// Boxed: at 100,000 ports, growing the table moves every entry at
    /// once (hashbrown resizes in one go), and with the facts inline that
    /// one insert took over 100 ms under the write lock.
    ports: HashMap<String, Box<PortFacts>>,
    /// Each router's gateway items (SNAT, floating IPs, routes) and the node
    /// they are on, as last compiled.
    routers: HashMap<String, (String, BTreeMap<String, Item>)>,
    /// Ports pre-plugged (INACTIVE bindings) on other hosts: port → (host, item).
    preplugged: HashMap<String, Vec<(String, Item)>>,
    /// Which router each router port and floating IP belonged to at the last
    /// compile, so a deletion finds the router to recompile.
    router_of: HashMap<String, String>,
    nets: HashMap<u32, Net>,
    /// Each filtered port's `sg/` item and the node it is on.
    /// The item is the one its node holds (shared, not a copy: at 100,000
    /// ports the copies were some 40 MB).
    filters: HashMap<String, (String, Arc<Item>)>,
    /// The same item on the hosts of a port's INACTIVE bindings (a live
    /// migration's destination): the port's rules are there before the VM.
    preplug_filters: HashMap<String, Vec<(String, Item)>>,
    /// The remote groups' member sets (`sgm/`) and the nodes holding them.
    group_sets: GroupSets,
    /// Each port's security groups at the last compile: a change of its
    /// addresses or groups changes those groups' member sets.
    port_groups: HashMap<String, Vec<String>>,
    /// Each rule's group at the last compile (a deleted rule's group).
    rule_group: HashMap<String, String>,
    pub last: Stats,
}

/// A port with its facts, as the facts thread hands them over.
type FactsOf<'s> = (&'s String, &'s Port, Option<PortFacts>);
/// A port with its filter item (`None`: not filtered).
type FilterOf<'s> = (&'s String, &'s Port, Option<Item>);

fn remote_key(vni: u32, mac: &str) -> String {
    format!("remote/{vni}/{mac}")
}

fn dhcp_key(vlan: u16, mac: &str) -> String {
    format!("dhcp/{vlan}/{mac}")
}

/// Rendezvous (highest random weight) score of `host` for network `vni`:
/// FNV-1a over both, finished with splitmix64's mixer. Stable across
/// releases and processes (unlike `std`'s hasher), so every controller and
/// every restart picks the same gateway.
fn rendezvous(vni: u32, host: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in vni.to_be_bytes().iter().chain(host.as_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// Writes `item` under `key` on `host` (a node whose agent is gone keeps no
/// desired state, as a full compile would not create it). Both are shared
/// with the other nodes given the same.
fn put_in(
    nodes: &mut HashMap<String, Node>,
    untracked: bool,
    host: &str,
    key: &Arc<str>,
    item: &Arc<Item>,
) {
    let Some(n) = nodes.get_mut(host).filter(|n| n.facts.is_some()) else {
        return;
    };
    // One probe: in a full compile nearly every key is new.
    match n.items.entry(key.clone()) {
        Entry::Occupied(mut have) => {
            if Arc::ptr_eq(have.get(), item) || **have.get() == **item {
                return;
            }
            have.insert(item.clone());
        }
        Entry::Vacant(slot) => {
            slot.insert(item.clone());
        }
    }
    if !untracked {
        n.dirty.insert(key.clone());
    }
}

fn del_in(nodes: &mut HashMap<String, Node>, untracked: bool, host: &str, key: &str) {
    let Some(n) = nodes.get_mut(host) else {
        return;
    };
    if let Some((k, _)) = n.items.remove_entry(key)
        && !untracked
    {
        n.dirty.insert(k);
    }
}

/// The hosts holding a port's `remote/` item: the network's vRouters and the
/// gateways serving it, but never the port's own node, nor, for a VLAN-side
/// port, the VLAN gateway (which reaches it on its trunk).
fn remote_holders<'a>(net: &'a Net, p: &'a PortFacts) -> impl Iterator<Item = &'a String> + 'a {
    let vlan_side = matches!(p.side, Side::Vlan { .. });
    let vlan_gw = net.placed.vlan_gw.as_ref();
    net.vrouters
        .keys()
        .chain(
            net.placed
                .gws
                .iter()
                .filter(move |g| !(vlan_side && vlan_gw == Some(*g))),
        )
        .filter(move |h| **h != p.host)
}

impl Compiler {
    pub fn new() -> Self {
        Self::default()
    }

    /// Compiles everything from scratch.
    pub fn full(st: &State, live: &Liveness) -> Self {
        let mut c = Compiler::new();
        c.sync_nodes(st);
        c.eligible = c.eligible_gateways(st, live);
        c.untracked = true;
        c.reserve_items(st);
        let filters = c.place_all_ports(st);
        let routers: Vec<String> = st.routers.keys().cloned().collect();
        for r in &routers {
            c.refresh_router(st, r);
        }
        match filters {
            Some(items) => {
                for (id, p, item) in items {
                    c.refresh_filter_with(st, id, Some(p), item);
                }
            }
            None => {
                for id in st.ports.keys() {
                    c.refresh_filter(st, id);
                }
            }
        }
        c.rule_group = st
            .security_group_rules
            .values()
            .map(|r| (r.id.clone(), r.security_group_id.clone()))
            .collect();
        c.untracked = false;
        // Every node with state starts at version 1: what a snapshot carries.
        for n in c.nodes.values_mut() {
            n.dirty.clear();
            n.forget.clear();
            if !n.items.is_empty() {
                n.version = 1;
            }
        }
        c
    }

    /// Places every port of the model. Their facts are a pure function of
    /// the model, so a second thread derives them, a chunk at a time, while
    /// this one places what it has been given (a fifth of a full compile's
    /// time moves off its critical path on two cores), then renders every
    /// port's filter item, which it returns with the port, in the same order.
    /// Without the thread, this one derives the facts and returns `None`.
    fn place_all_ports<'s>(&mut self, st: &'s State) -> Option<Vec<FilterOf<'s>>> {
        const CHUNK: usize = 1024;
        std::thread::scope(|s| {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<FactsOf<'_>>>(16);
            let facts = std::thread::Builder::new()
                .name("compile-facts".into())
                .spawn_scoped(s, move || {
                    let mut chunk = Vec::with_capacity(CHUNK);
                    for (id, p) in Self::ports_by_network(st) {
                        chunk.push((id, p, port_facts(st, p)));
                        if chunk.len() == CHUNK {
                            let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK));
                            if tx.send(full).is_err() {
                                return Vec::new();
                            }
                        }
                    }
                    let _ = tx.send(chunk);
                    drop(tx);
                    // Ports in the same groups share one rule list.
                    let mut lists = HashMap::default();
                    Self::ports_by_network(st)
                        .map(|(id, p)| (id, p, Self::filter_item_sharing(id, p, st, &mut lists)))
                        .collect::<Vec<_>>()
                });
            let Ok(facts) = facts else {
                for id in st.ports.keys() {
                    self.refresh_port(st, id);
                }
                return None;
            };
            for chunk in rx {
                for (id, p, new) in chunk {
                    self.refresh_port_with(st, id, Some(p), new);
                }
            }
            // A panic there is the compile's, as if this thread had met it.
            Some(
                facts
                    .join()
                    .unwrap_or_else(|e| std::panic::resume_unwind(e)),
            )
        })
    }

    /// Every port of the model, a network's ports together (then any whose
    /// network is missing). Placing a network's ports one after another keeps
    /// the network and its members' tables in cache; in the model's order
    /// (random UUIDs) nearly every write missed it.
    fn ports_by_network(st: &State) -> impl Iterator<Item = (&String, &Port)> {
        let in_nets = st
            .networks
            .keys()
            .flat_map(|n| st.network_port_ids(n))
            .filter_map(|id| st.ports.get_key_value(id));
        let orphans = st
            .ports
            .iter()
            .filter(|(_, p)| !st.networks.contains_key(&p.network_id));
        in_nets.chain(orphans)
    }

    /// Sizes each node's item table for what a full compile will put there,
    /// about: a node in a network holds an item for each of its ports, and
    /// each own port has a few. Growing the tables instead rehashed them
    /// again and again and was a fifth of the compile's time.
    fn reserve_items(&mut self, st: &State) {
        let mut nets: HashMap<&str, (usize, BTreeSet<&str>)> = HashMap::default();
        for p in st.ports.values() {
            let host = p.active_binding().host.as_str();
            if host.is_empty() {
                continue;
            }
            let (count, hosts) = nets.entry(p.network_id.as_str()).or_default();
            *count += 1;
            hosts.insert(host);
        }
        let mut want: HashMap<&str, usize> = HashMap::default();
        for (count, hosts) in nets.values() {
            for h in hosts {
                *want.entry(h).or_default() += count + 2;
            }
        }
        // Only vRouters hold their networks' ports (OVS and SR-IOV nodes
        // hold their own; gateways are placed later).
        for (h, n) in want {
            if let Some(node) = self.nodes.get_mut(h)
                && node.facts.as_ref().is_some_and(|f| f.role == Role::Vrouter)
            {
                node.items.reserve(n);
            }
        }
    }

    // ---- item bookkeeping ------------------------------------------------------

    fn put(&mut self, host: &str, key: String, item: Item) {
        put_in(
            &mut self.nodes,
            self.untracked,
            host,
            &Arc::from(key),
            &Arc::new(item),
        );
    }

    /// As [`Compiler::put`], with an item the compiler keeps too.
    fn put_shared(&mut self, host: &str, key: String, item: Arc<Item>) {
        put_in(
            &mut self.nodes,
            self.untracked,
            host,
            &Arc::from(key),
            &item,
        );
    }

    fn del(&mut self, host: &str, key: &str) {
        del_in(&mut self.nodes, self.untracked, host, key);
    }

    fn refresh_gateways(&mut self) {
        self.gws = self
            .nodes
            .iter()
            .filter(|(_, n)| n.facts.as_ref().is_some_and(|f| f.role == Role::Gateway))
            .map(|(h, _)| h.clone())
            .collect();
        self.gws.sort();
    }

    /// Gateways that may serve networks now: alive, enabled
    /// (`admin_state_up`), with a VTEP.
    fn eligible_gateways(&self, st: &State, live: &Liveness) -> Vec<String> {
        self.gws
            .iter()
            .filter(|h| self.vtep_of(h).is_some())
            .filter(|h| {
                st.agent_by_type_host(AGENT_TYPE_GATEWAY, h)
                    .is_some_and(|a| a.admin_state_up && live.is_alive(a))
            })
            .cloned()
            .collect()
    }

    /// The gateway that bridges network `vni`'s VLAN side (rendezvous hashing
    /// over the eligible gateways).
    fn vlan_gateway(&self, vni: u32) -> Option<String> {
        self.eligible
            .iter()
            .max_by_key(|h| (rendezvous(vni, h), std::cmp::Reverse(h.as_str())))
            .cloned()
    }

    fn placement(&self, vni: u32, net: &Net) -> Placement {
        let vlan_gw = if net.vlans.is_empty() {
            None
        } else {
            self.vlan_gateway(vni)
        };
        let mut gws: BTreeSet<String> = net
            .rif_gws
            .keys()
            .filter(|h| self.role_of(h) == Some(Role::Gateway))
            .cloned()
            .collect();
        gws.extend(vlan_gw.iter().cloned());
        Placement { vlan_gw, gws }
    }

    fn vtep_of(&self, host: &str) -> Option<Ipv4Addr> {
        self.nodes
            .get(host)
            .and_then(|n| n.facts.as_ref())
            .and_then(|f| f.vtep)
    }

    // ---- security groups -------------------------------------------------------

    /// Port `id`'s filter item: a VM port with port security (in groups
    /// or not; no group is a filter with no rule, so nothing but DHCP and
    /// neighbour discovery passes, as in Neutron).
    fn filter_item(st: &State, id: &str) -> Option<Item> {
        let p = st.ports.get(id)?;
        Self::filter_item_sharing(id, p, st, &mut HashMap::default())
    }

    /// As [`Compiler::filter_item`], taking the rule list from `lists`
    /// (by the port's groups) when an earlier port had the same groups.
    fn filter_item_sharing<'s>(
        id: &str,
        p: &'s Port,
        st: &State,
        lists: &mut HashMap<&'s [String], Arc<[FilterRule]>>,
    ) -> Option<Item> {
        if !p.port_security_enabled || p.device_owner.starts_with("network:") {
            return None;
        }
        let rules = lists
            .entry(p.security_groups.as_slice())
            .or_insert_with(|| {
                p.security_groups
                    .iter()
                    .flat_map(|g| st.group_rules(g))
                    .map(filter_rule)
                    .collect()
            })
            .clone();
        Some(Item::PortFilter {
            port_id: id.to_string(),
            rules,
        })
    }

    /// Whether `host`'s node filters ports: vRouter and OVS nodes (an
    /// SR-IOV VF bypasses the host, as in Neutron: nothing there can).
    fn filters_ports(&self, host: &str) -> bool {
        matches!(self.role_of(host), Some(Role::Vrouter | Role::Ovs))
    }

    /// Port `id`'s filter item (`item`, rendered) and the node of its
    /// active binding.
    fn filter_for(&self, id: &str, item: Option<Item>) -> Option<(String, Item)> {
        let f = self.ports.get(id)?;
        if !self.filters_ports(&f.host) {
            return None;
        }
        Some((f.host.clone(), item?))
    }

    /// Port `id`'s filter item on the hosts of its INACTIVE bindings, other
    /// than the active one's.
    fn preplug_filters_for(
        &self,
        st: &State,
        id: &str,
        port: Option<&Port>,
        active: Option<&str>,
    ) -> Vec<(String, Item)> {
        let Some(p) = port else {
            return Vec::new();
        };
        let mut hosts: Vec<&str> = p
            .bindings
            .iter()
            .filter(|b| b.status == switchyard_model::BindingStatus::Inactive)
            .map(|b| b.host.as_str())
            .filter(|h| Some(*h) != active && self.filters_ports(h))
            .collect();
        if hosts.is_empty() {
            // Nearly every port: its filter item is not even rendered.
            return Vec::new();
        }
        hosts.sort_unstable();
        hosts.dedup();
        match Self::filter_item(st, id) {
            Some(item) => hosts
                .into_iter()
                .map(|h| (h.to_string(), item.clone()))
                .collect(),
            None => Vec::new(),
        }
    }

    fn refresh_filter(&mut self, st: &State, id: &str) {
        // Rendered only where a node filters the port.
        let filtered = self
            .ports
            .get(id)
            .is_some_and(|f| self.filters_ports(&f.host));
        let port = st.ports.get(id);
        let item = port
            .filter(|_| filtered)
            .and_then(|p| Self::filter_item_sharing(id, p, st, &mut HashMap::default()));
        self.refresh_filter_with(st, id, port, item);
    }

    /// As [`Compiler::refresh_filter`], with the model's port (`None`: gone)
    /// and its filter item already rendered ([`Compiler::filter_item`]).
    fn refresh_filter_with(
        &mut self,
        st: &State,
        id: &str,
        port: Option<&Port>,
        item: Option<Item>,
    ) {
        match port {
            Some(p) if !p.security_groups.is_empty() => {
                self.port_groups
                    .insert(id.to_string(), p.security_groups.clone());
            }
            _ => {
                self.port_groups.remove(id);
            }
        }
        let want = self.filter_for(id, item).map(|(h, i)| (h, Arc::new(i)));
        let pre_want =
            self.preplug_filters_for(st, id, port, self.ports.get(id).map(|f| f.host.as_str()));
        let pre_have = self.preplug_filters.get(id).cloned().unwrap_or_default();
        if want.as_ref() == self.filters.get(id) && pre_want == pre_have {
            return;
        }
        // The pre-plugged copies first: the active one below may land on a
        // host that held one (the binding activated there). They name their
        // groups like any filter, so the destination holds the member sets.
        let key = format!("sg/{id}");
        let mut writes = Vec::new();
        let hosts: BTreeSet<&String> = pre_have.iter().chain(&pre_want).map(|(h, _)| h).collect();
        for h in hosts {
            let old = pre_have.iter().find(|(x, _)| x == h).map(|(_, i)| i);
            let new = pre_want.iter().find(|(x, _)| x == h).map(|(_, i)| i);
            if old != new {
                self.group_sets.refilter(
                    st,
                    old.map(|i| (h.as_str(), i)),
                    new.map(|i| (h.as_str(), i)),
                    &mut writes,
                );
            }
        }
        for (h, _) in pre_have
            .iter()
            .filter(|(h, _)| !pre_want.iter().any(|(w, _)| w == h))
        {
            self.del(h, &key);
        }
        for (h, item) in &pre_want {
            self.put(h, key.clone(), item.clone());
        }
        self.write(writes);
        if pre_want.is_empty() {
            self.preplug_filters.remove(id);
        } else {
            self.preplug_filters.insert(id.to_string(), pre_want);
        }
        let have = self.filters.get(id);
        if want.as_ref() == have {
            return;
        }
        let mut writes = Vec::new();
        self.group_sets.refilter(
            st,
            have.map(|(h, i)| (h.as_str(), &**i)),
            want.as_ref().map(|(h, i)| (h.as_str(), &**i)),
            &mut writes,
        );
        if let Some((h, _)) = have
            && want.as_ref().is_none_or(|(w, _)| w != h)
            && !self
                .preplug_filters
                .get(id)
                .is_some_and(|pre| pre.iter().any(|(p, _)| p == h))
        {
            let h = h.clone();
            self.del(&h, &key);
        }
        self.write(writes);
        match want {
            Some((h, item)) => {
                self.put_shared(&h, key, item.clone());
                self.filters.insert(id.to_string(), (h, item));
            }
            None => {
                self.filters.remove(id);
            }
        }
    }

    /// `groups`' members may have changed: their sets are rendered again
    /// and rewritten where held (no filter changes for it).
    fn refresh_group_sets<'a>(&mut self, st: &State, groups: impl IntoIterator<Item = &'a String>) {
        let mut writes = Vec::new();
        self.group_sets.refresh(st, groups, &mut writes);
        self.write(writes);
    }

    fn write(&mut self, writes: Vec<Write>) {
        for w in writes {
            match w.item {
                Some(item) => self.put(&w.host, w.key, item),
                None => self.del(&w.host, &w.key),
            }
        }
    }

    fn role_of(&self, host: &str) -> Option<Role> {
        self.nodes
            .get(host)
            .and_then(|n| n.facts.as_ref())
            .map(|f| f.role)
    }

    /// Where a port is reached from the overlay.
    fn location(&self, p: &PortFacts, placed: &Placement) -> Option<Ipv4Addr> {
        match p.side {
            Side::Overlay => self.vtep_of(&p.host),
            Side::Vlan { .. } => placed.vlan_gw.as_deref().and_then(|g| self.vtep_of(g)),
        }
    }

    fn remote_item(&self, vni: u32, p: &PortFacts, placed: &Placement) -> Option<Item> {
        Some(Item::RemoteMac {
            vni,
            mac: p.mac.clone(),
            ips: p.ips.clone(),
            vtep: self.location(p, placed)?,
        })
    }

    /// Re-derives a network's own items: the VRF and flood list on each of
    /// its vRouters, the bridge domain on each gateway serving it (and none
    /// on the others).
    fn refresh_net_items(&mut self, vni: u32) {
        let (members, placed, vlan) = match self.nets.get(&vni) {
            Some(net) => (
                net.vrouters.keys().cloned().collect::<Vec<String>>(),
                net.placed.clone(),
                net.vlans.keys().next().cloned(),
            ),
            None => (Vec::new(), Placement::default(), None),
        };
        let vteps = |c: &Self, hosts: &mut dyn Iterator<Item = &String>| -> Vec<Ipv4Addr> {
            let mut v: Vec<Ipv4Addr> = hosts.filter_map(|h| c.vtep_of(h)).collect();
            v.sort();
            v.dedup();
            v
        };
        let gw_vteps = vteps(self, &mut placed.gws.iter());
        for h in &members {
            let mut flood = vteps(self, &mut members.iter().filter(|o| *o != h));
            flood.extend(gw_vteps.iter().copied());
            flood.sort();
            flood.dedup();
            self.put(h, format!("net/{vni}"), Item::Network { vni, flood });
        }
        let vr_vteps = vteps(self, &mut members.iter());
        for gw in self.gws.clone() {
            let key = format!("bd/{vni}");
            if !placed.gws.contains(&gw) {
                self.del(&gw, &key);
                continue;
            }
            let (vlan, physnet) = match (&placed.vlan_gw, &vlan) {
                (Some(v), Some((physnet, vlan))) if *v == gw => (*vlan, physnet.clone()),
                // Overlay side only: the network is routed here, bridged elsewhere.
                _ => (0, String::new()),
            };
            let mut flood = vr_vteps.clone();
            flood.extend(vteps(self, &mut placed.gws.iter().filter(|o| **o != gw)));
            flood.sort();
            flood.dedup();
            self.put(
                &gw,
                key,
                Item::BridgeDomain {
                    vni,
                    vlan,
                    physnet,
                    flood,
                },
            );
        }
    }

    /// Network `vni`'s placement changed from `old` to what it says now:
    /// rewrites the gateway-side items of each of its ports, the location of
    /// its VLAN-side ports on its vRouters, and the network's own items.
    fn replace(&mut self, vni: u32, old: &Placement) {
        let Some(net) = self.nets.get(&vni) else {
            self.refresh_net_items(vni);
            return;
        };
        let new = &net.placed;
        let touched: BTreeSet<&String> = old.gws.iter().chain(new.gws.iter()).collect();
        let vlan_moved = old.vlan_gw != new.vlan_gw;
        for id in &net.ports {
            let Some(q) = self.ports.get(id) else {
                continue;
            };
            let key: Arc<str> = Arc::from(remote_key(vni, &q.mac));
            let item = self.remote_item(vni, q, new).map(Arc::new);
            let vlan = match q.side {
                Side::Vlan { vlan, .. } => Some(vlan),
                Side::Overlay => None,
            };
            for g in &touched {
                let holds = new.gws.contains(*g)
                    && **g != q.host
                    && !(vlan.is_some() && new.vlan_gw.as_ref() == Some(*g));
                match (&item, holds) {
                    (Some(it), true) => {
                        put_in(&mut self.nodes, self.untracked, g, &key, it);
                    }
                    _ => del_in(&mut self.nodes, self.untracked, g, &key),
                }
            }
            if let (Some(vlan), true) = (vlan, vlan_moved) {
                let dkey = dhcp_key(vlan, &q.mac);
                if let Some(o) = &old.vlan_gw {
                    del_in(&mut self.nodes, self.untracked, o, &dkey);
                }
                if let (Some(n), Some(lease)) = (&new.vlan_gw, &q.lease) {
                    let item = Item::DhcpPort {
                        vlan,
                        mac: q.mac.clone(),
                        lease: lease.clone(),
                    };
                    put_in(
                        &mut self.nodes,
                        self.untracked,
                        n,
                        &Arc::from(dkey),
                        &Arc::new(item),
                    );
                }
                for h in net.vrouters.keys() {
                    match &item {
                        Some(it) => put_in(&mut self.nodes, self.untracked, h, &key, it),
                        None => del_in(&mut self.nodes, self.untracked, h, &key),
                    }
                }
            }
        }
        self.refresh_net_items(vni);
    }

    /// Brings every network's placement in line with the eligible gateways.
    fn replace_all(&mut self) {
        let mut vnis: Vec<u32> = self.nets.keys().copied().collect();
        vnis.sort_unstable();
        for vni in vnis {
            let Some(net) = self.nets.get(&vni) else {
                continue;
            };
            let new = self.placement(vni, net);
            if new == net.placed {
                continue;
            }
            let old = match self.nets.get_mut(&vni) {
                Some(net) => std::mem::replace(&mut net.placed, new),
                None => continue,
            };
            self.replace(vni, &old);
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
        let Some(mut net) = self.nets.remove(&vni) else {
            return;
        };
        net.ports.remove(id);
        // Only the last VLAN-side port, or a gateway's last router interface
        // in the network, can change where its gateway side is.
        let mut may_move = false;
        if matches!(p.attachment, Attachment::Router { .. })
            && let Some(c) = net.rif_gws.get_mut(&p.host)
        {
            *c = c.saturating_sub(1);
            if *c == 0 {
                net.rif_gws.remove(&p.host);
                may_move = true;
            }
        }
        let mut left = false;
        match &p.side {
            Side::Overlay => {
                if let Some(c) = net.vrouters.get_mut(&p.host) {
                    *c = c.saturating_sub(1);
                    if *c == 0 {
                        net.vrouters.remove(&p.host);
                        left = true;
                    }
                }
            }
            Side::Vlan { physnet, vlan } => {
                let k = (physnet.clone(), *vlan);
                if let Some(c) = net.vlans.get_mut(&k) {
                    *c = c.saturating_sub(1);
                    if *c == 0 {
                        net.vlans.remove(&k);
                        may_move |= net.vlans.is_empty();
                    }
                }
            }
        }
        // Its own items, where the current placement put them.
        let key = remote_key(vni, &p.mac);
        for h in net.vrouters.keys().chain(net.placed.gws.iter()) {
            if *h != p.host {
                del_in(&mut self.nodes, self.untracked, h, &key);
            }
        }
        if let (Side::Vlan { vlan, .. }, Some(gw)) = (&p.side, &net.placed.vlan_gw) {
            del_in(
                &mut self.nodes,
                self.untracked,
                gw,
                &dhcp_key(*vlan, &p.mac),
            );
        }
        // A vRouter left the network: its VRF and everything it knew of the
        // network go.
        if left {
            del_in(
                &mut self.nodes,
                self.untracked,
                &p.host,
                &format!("net/{vni}"),
            );
            for o in &net.ports {
                if let Some(op) = self.ports.get(o) {
                    del_in(
                        &mut self.nodes,
                        self.untracked,
                        &p.host,
                        &remote_key(vni, &op.mac),
                    );
                }
            }
        }
        let old = if may_move {
            let new = self.placement(vni, &net);
            (new != net.placed).then(|| std::mem::replace(&mut net.placed, new))
        } else {
            None
        };
        let empty = net.ports.is_empty();
        self.nets.insert(vni, net);
        match old {
            Some(old) => self.replace(vni, &old),
            None if left => self.refresh_net_items(vni),
            None => {}
        }
        if empty {
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

    /// Joins a port to its network: remote entries, DHCP, flood lists, and
    /// the network's placement if the port changes it.
    fn place_port(&mut self, p: PortFacts) {
        let id = p.port_id.clone();
        let Some(vni) = p.vni else {
            self.ports.insert(id, Box::new(p));
            return;
        };
        let overlay_here = p.side == Side::Overlay && self.role_of(&p.host) == Some(Role::Vrouter);
        // The network is taken out of the map while its members are written
        // to, so its member list need not be copied for every port.
        let mut net = self.nets.remove(&vni).unwrap_or_default();
        net.ports.insert(id.clone());
        // Only a network's first VLAN-side port, or a gateway's first router
        // interface in it, can change where its gateway side is.
        let mut may_move = false;
        if matches!(p.attachment, Attachment::Router { .. }) {
            let c = net.rif_gws.entry(p.host.clone()).or_default();
            may_move |= *c == 0;
            *c += 1;
        }
        let mut joined = false;
        match &p.side {
            Side::Overlay if overlay_here => {
                let c = net.vrouters.entry(p.host.clone()).or_default();
                joined = *c == 0;
                *c += 1;
            }
            Side::Overlay => {}
            Side::Vlan { physnet, vlan } => {
                may_move |= net.vlans.is_empty();
                *net.vlans.entry((physnet.clone(), *vlan)).or_default() += 1;
            }
        }
        let old = if may_move {
            let new = self.placement(vni, &net);
            (new != net.placed).then(|| std::mem::replace(&mut net.placed, new))
        } else {
            None
        };
        // The port's own items, under the network's placement now.
        if let Some(item) = self.remote_item(vni, &p, &net.placed) {
            let key: Arc<str> = Arc::from(remote_key(vni, &p.mac));
            let item = Arc::new(item);
            for h in remote_holders(&net, &p) {
                put_in(&mut self.nodes, self.untracked, h, &key, &item);
            }
        }
        if let (Side::Vlan { vlan, .. }, Some(lease), Some(gw)) =
            (&p.side, &p.lease, &net.placed.vlan_gw)
        {
            let item = Item::DhcpPort {
                vlan: *vlan,
                mac: p.mac.clone(),
                lease: lease.clone(),
            };
            put_in(
                &mut self.nodes,
                self.untracked,
                gw,
                &Arc::from(dhcp_key(*vlan, &p.mac)),
                &Arc::new(item),
            );
        }
        if joined {
            // A vRouter new to the network learns every other port of it.
            for o in &net.ports {
                let Some(op) = self.ports.get(o) else {
                    continue;
                };
                if op.host == p.host {
                    continue;
                }
                if let Some(item) = self.remote_item(vni, op, &net.placed) {
                    let k = remote_key(vni, &op.mac);
                    // Another holder's copy, key and item, when it has this one.
                    let shared = remote_holders(&net, op)
                        .find(|h| **h != p.host)
                        .and_then(|h| {
                            let n = self.nodes.get(h.as_str())?;
                            let (key, have) = n.items.get_key_value(k.as_str())?;
                            (**have == item).then(|| (key.clone(), have.clone()))
                        });
                    let (k, item) = shared.unwrap_or_else(|| (Arc::from(k), Arc::new(item)));
                    put_in(&mut self.nodes, self.untracked, &p.host, &k, &item);
                }
            }
        }
        self.ports.insert(id, Box::new(p));
        self.nets.insert(vni, net);
        match old {
            Some(old) => self.replace(vni, &old),
            None if joined => self.refresh_net_items(vni),
            None => {}
        }
    }
    /// Recompiles one port from the model (gone or unbound: removed).
    pub fn refresh_port(&mut self, st: &State, id: &str) {
        let port = st.ports.get(id);
        let new = port.and_then(|p| port_facts(st, p));
        self.refresh_port_with(st, id, port, new);
    }

    /// As [`Compiler::refresh_port`], with the model's port (`None`: gone)
    /// and its facts (`None`: gone or unbound) already derived.
    fn refresh_port_with(
        &mut self,
        st: &State,
        id: &str,
        port: Option<&Port>,
        new: Option<PortFacts>,
    ) {
        let pre = self.preplugs(st, id, port, new.as_ref());
        if new.is_some()
            && self.ports.get(id).map(|b| &**b) == new.as_ref()
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
    fn preplugs(
        &self,
        st: &State,
        id: &str,
        port: Option<&Port>,
        active: Option<&PortFacts>,
    ) -> Vec<(String, Item)> {
        let Some(p) = port else {
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
        hosts.extend(self.gws.iter().cloned());
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
        let gateway_ip = r.gateway.as_ref().and_then(|g| {
            st.ports.get(&g.port_id).and_then(|p| {
                p.fixed_ips
                    .iter()
                    .find_map(|f| crate::facts::v4_of(&f.ip_address))
            })
        });
        if let (Some(g), Some(ip)) = (r.gateway.as_ref(), gateway_ip) {
            items.insert(
                format!("gw/{rid}"),
                Item::RouterGateway {
                    router: rid.to_string(),
                    port_id: g.port_id.clone(),
                    ip,
                },
            );
        }
        if let Some(_g) = r.gateway.as_ref().filter(|g| g.enable_snat)
            && let Some(ext) = gateway_ip
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

    /// Each host's node facts from the agents table. A host with agents of
    /// several roles (a stale record beside the live one) is taken as the one
    /// that reported last (ties by id), so the choice depends on the model alone.
    fn wanted_nodes(st: &State) -> BTreeMap<String, NodeFacts> {
        let mut best: BTreeMap<String, (Timestamp, &str, NodeFacts)> = BTreeMap::new();
        for a in st.agents.values() {
            let Some(f) = node_facts(a) else { continue };
            let rank = (a.heartbeat_timestamp, a.id.as_str());
            match best.get(&a.host) {
                Some((t, id, _)) if (*t, *id) >= rank => {}
                _ => {
                    best.insert(a.host.clone(), (rank.0, rank.1, f));
                }
            }
        }
        best.into_iter().map(|(h, (_, _, f))| (h, f)).collect()
    }

    /// Brings the node list in line with the agents table; heartbeats change
    /// nothing here. Says what changed, so that [`Compiler::apply`] recompiles
    /// only what it must.
    fn sync_nodes(&mut self, st: &State) -> NodeChange {
        let want = Self::wanted_nodes(st);
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
                let keys: Vec<Arc<str>> = n.items.keys().cloned().collect();
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

    /// Liveness changed (no model change): moves networks whose gateway died,
    /// or came back. Returns the deltas to send.
    pub fn set_liveness(&mut self, st: &State, live: &Liveness) -> BTreeMap<String, Delta> {
        self.apply(st, &[], live)
    }

    /// Ends a catch-up: a compiler built from an older model, then given the
    /// changes committed since, each against the model as it was when that
    /// change was applied, not as it was when it was committed. Every change
    /// names what to recompile, but a remote group's member set is derived
    /// from other ports: one rendered while the catch-up was behind holds
    /// members as the model had them then, and a member's later change is
    /// tied to its groups only by what this compiler has seen of it
    /// (`port_groups`), which may be older; the property test
    /// `a_late_full_compile_catches_up_with_the_changes_made_meanwhile`
    /// found such a stale set. Every held set is rendered again from the
    /// model as it is now, then liveness is applied.
    pub fn caught_up(&mut self, st: &State, live: &Liveness) -> BTreeMap<String, Delta> {
        let groups = self.group_sets.referenced();
        self.refresh_group_sets(st, &groups);
        self.apply(st, &[], live)
    }

    /// Whether `live` would change which gateways serve networks (cheap: the
    /// edge checks this on every tick before taking the write path).
    pub fn liveness_matters(&self, st: &State, live: &Liveness) -> bool {
        self.eligible_gateways(st, live) != self.eligible
    }

    /// Applies one committed transaction's changes, with liveness as the edge
    /// sees it now. Returns the deltas to send.
    pub fn apply(
        &mut self,
        st: &State,
        changes: &[Change],
        live: &Liveness,
    ) -> BTreeMap<String, Delta> {
        self.last = Stats::default();
        let node_change = if changes.iter().any(|(k, _, _)| *k == Kind::Agent) {
            self.sync_nodes(st)
        } else {
            NodeChange::None
        };
        let eligible = self.eligible_gateways(st, live);
        let eligible_changed = eligible != self.eligible;
        self.eligible = eligible;
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
            for id in &ids {
                self.refresh_filter(st, id);
            }
            // The batch may have changed members too (ports beside agents).
            let groups = self.group_sets.referenced();
            self.refresh_group_sets(st, &groups);
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
            return self.cut();
        }
        if eligible_changed {
            self.replace_all();
        }
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
            // All removed before any is placed again: they were placed while
            // the host had no node, so none counts towards the host's share
            // of its networks; removing one after another was placed again
            // would take that one's count away.
            for id in &ids {
                self.remove_port(id);
            }
            for id in &ids {
                self.refresh_port(st, id);
            }
            for id in &ids {
                self.refresh_filter(st, id);
            }
        }
        let mut ports: BTreeSet<String> = BTreeSet::new();
        let mut routers: BTreeSet<String> = BTreeSet::new();
        // Ports whose filters may change, and groups whose members may have
        // changed (their sets, where referenced, are rendered again).
        let mut filtered: BTreeSet<String> = BTreeSet::new();
        let mut member_of: BTreeSet<String> = BTreeSet::new();
        for (kind, id, rec) in changes {
            match kind {
                Kind::Port => {
                    ports.insert(id.clone());
                    filtered.insert(id.clone());
                    if let Some(old) = self.port_groups.get(id) {
                        member_of.extend(old.iter().cloned());
                    }
                    if let Some(p) = st.ports.get(id) {
                        member_of.extend(p.security_groups.iter().cloned());
                    }
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
                        Some(switchyard_model::Record::Segment(s)) => Some(s.network_id.clone()),
                        Some(switchyard_model::Record::Network(n)) => Some(n.id.clone()),
                        _ => None,
                    };
                    if let Some(n) = net {
                        ports.extend(st.network_port_ids(&n).cloned());
                    }
                }
                // A group's or a rule's change reaches the group's members.
                Kind::SecurityGroup => filtered.extend(st.group_ports(id)),
                Kind::SecurityGroupRule => {
                    let group = match rec {
                        Some(Record::SecurityGroupRule(r)) => {
                            self.rule_group
                                .insert(id.clone(), r.security_group_id.clone());
                            Some(r.security_group_id.clone())
                        }
                        _ => self.rule_group.remove(id),
                    };
                    if let Some(g) = group {
                        filtered.extend(st.group_ports(&g));
                    }
                }
                // Quotas configure the API, not the network.
                Kind::Agent | Kind::Quota => {}
            }
        }
        for id in ports {
            self.refresh_port(st, &id);
        }
        for id in filtered {
            self.refresh_filter(st, &id);
        }
        // After the filters: they decide which nodes hold which sets.
        self.refresh_group_sets(st, &member_of);
        // After the ports: a router's items name its compiled interfaces.
        for r in routers {
            self.refresh_router(st, &r);
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
                        d.upserts.insert(k.to_string(), Arc::clone(item));
                    }
                    None => d.removals.push(k.to_string()),
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
    pub fn snapshot(&self, host: &str) -> Option<(u64, switchyard_proto::Items)> {
        self.nodes.get(host).map(|n| {
            (
                n.version,
                n.items
                    .iter()
                    .map(|(k, v)| (k.to_string(), Arc::clone(v)))
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
