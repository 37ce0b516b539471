//! The in-memory model: every resource table plus the indexes that allocators and
//! conflict checks need, and a journal that makes a group of writes atomic.
//!
//! Contract: all writes go through [`State::put`] / [`State::remove`], which keep
//! the indexes in step with the tables. Between [`State::begin`] and
//! [`State::commit`] / [`State::rollback`] every first touch of a key records its
//! previous value, so a failed operation (validation, allocation or a failed
//! database write) is undone completely and nothing half-written stays visible.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::mac::Mac;
use crate::resources::{
    Agent, FloatingIp, Network, NetworkType, Port, QuotaSet, Router, SecurityGroup,
    SecurityGroupRule, Segment, Subnet,
};

/// Which table a record lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Network,
    Segment,
    Subnet,
    Port,
    Agent,
    Router,
    FloatingIp,
    Quota,
    SecurityGroup,
    SecurityGroupRule,
}

impl Kind {
    pub const ALL: [Kind; 10] = [
        Kind::Network,
        Kind::Segment,
        Kind::Subnet,
        Kind::Port,
        Kind::Agent,
        Kind::Router,
        Kind::FloatingIp,
        Kind::Quota,
        Kind::SecurityGroup,
        Kind::SecurityGroupRule,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Network => "network",
            Kind::Segment => "segment",
            Kind::Subnet => "subnet",
            Kind::Port => "port",
            Kind::Agent => "agent",
            Kind::Router => "router",
            Kind::FloatingIp => "floatingip",
            Kind::Quota => "quota",
            Kind::SecurityGroup => "security_group",
            Kind::SecurityGroupRule => "security_group_rule",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// Any stored record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "body", rename_all = "lowercase")]
pub enum Record {
    Network(Network),
    Segment(Segment),
    Subnet(Subnet),
    Port(Port),
    Agent(Agent),
    Router(Router),
    FloatingIp(FloatingIp),
    Quota(QuotaSet),
    SecurityGroup(SecurityGroup),
    SecurityGroupRule(SecurityGroupRule),
}

impl Record {
    pub fn kind(&self) -> Kind {
        match self {
            Record::Network(_) => Kind::Network,
            Record::Segment(_) => Kind::Segment,
            Record::Subnet(_) => Kind::Subnet,
            Record::Port(_) => Kind::Port,
            Record::Agent(_) => Kind::Agent,
            Record::Router(_) => Kind::Router,
            Record::FloatingIp(_) => Kind::FloatingIp,
            Record::Quota(_) => Kind::Quota,
            Record::SecurityGroup(_) => Kind::SecurityGroup,
            Record::SecurityGroupRule(_) => Kind::SecurityGroupRule,
        }
    }

    /// The project owning the record (`None`: agents, which no project owns).
    pub fn project_id(&self) -> Option<&str> {
        match self {
            Record::Network(x) => Some(&x.std.project_id),
            Record::Segment(x) => Some(&x.std.project_id),
            Record::Subnet(x) => Some(&x.std.project_id),
            Record::Port(x) => Some(&x.std.project_id),
            Record::Router(x) => Some(&x.std.project_id),
            Record::FloatingIp(x) => Some(&x.std.project_id),
            Record::SecurityGroup(x) => Some(&x.std.project_id),
            Record::SecurityGroupRule(x) => Some(&x.std.project_id),
            Record::Quota(x) => Some(&x.project_id),
            Record::Agent(_) => None,
        }
    }

    pub fn id(&self) -> &str {
        match self {
            Record::Network(r) => &r.id,
            Record::Segment(r) => &r.id,
            Record::Subnet(r) => &r.id,
            Record::Port(r) => &r.id,
            Record::Agent(r) => &r.id,
            Record::Router(r) => &r.id,
            Record::FloatingIp(r) => &r.id,
            Record::Quota(r) => &r.project_id,
            Record::SecurityGroup(r) => &r.id,
            Record::SecurityGroupRule(r) => &r.id,
        }
    }
}

/// A change to persist: the final value of a key (None = deleted).
pub type Change = (Kind, String, Option<Record>);

/// Which segment holds a segmentation id; the allocators read these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SegKey<'a> {
    Flat(&'a str),
    Vlan(&'a str, u32),
    Tunnel(NetworkType, u32),
}

#[derive(Debug, Default)]
pub struct State {
    pub networks: BTreeMap<String, Network>,
    pub segments: BTreeMap<String, Segment>,
    pub subnets: BTreeMap<String, Subnet>,
    pub ports: BTreeMap<String, Port>,
    pub agents: BTreeMap<String, Agent>,
    pub routers: BTreeMap<String, Router>,
    pub floatingips: BTreeMap<String, FloatingIp>,
    /// Projects' quota limits set by an admin (by project id).
    pub quotas: BTreeMap<String, QuotaSet>,
    pub security_groups: BTreeMap<String, SecurityGroup>,
    pub security_group_rules: BTreeMap<String, SecurityGroupRule>,

    // Indexes, derived from the tables above.
    /// (kind, project id) -> how many of that kind the project owns (what
    /// quotas count).
    usage: HashMap<(Kind, String), usize>,
    /// group id -> its rules' ids
    rules_by_group: HashMap<String, BTreeSet<String>>,
    /// group id -> ids of rules of any group that name it as remote group
    rules_by_remote_group: HashMap<String, BTreeSet<String>>,
    /// group id -> member ports' ids
    ports_by_group: HashMap<String, BTreeSet<String>>,
    /// project id -> its default group's id
    default_groups: HashMap<String, String>,
    segments_by_network: HashMap<String, BTreeSet<String>>,
    subnets_by_network: HashMap<String, BTreeSet<String>>,
    ports_by_network: HashMap<String, BTreeSet<String>>,
    flat_alloc: HashMap<String, String>,
    vlan_alloc: HashMap<(String, u32), String>,
    tunnel_alloc: HashMap<(NetworkType, u32), String>,
    /// subnet id -> address -> port id
    ips: HashMap<String, BTreeMap<IpAddr, String>>,
    /// (network id, mac) -> port id
    macs: HashMap<(String, Mac), String>,
    /// (agent_type, host) -> agent id
    agents_by_type_host: HashMap<(String, String), String>,
    /// segment id -> number of binding levels (of any port binding) on it
    segment_refs: HashMap<String, usize>,
    /// device id -> ports with that device (a router's ports, a VM's ports)
    ports_by_device: HashMap<String, BTreeSet<String>>,
    /// port id -> floating IPs associated with it
    fips_by_port: HashMap<String, BTreeSet<String>>,
    /// router id -> floating IPs it realises (the controller compiles a
    /// router's FIPs without scanning them all).
    fips_by_router: HashMap<String, BTreeSet<String>>,

    /// One copy of each distinct binding `vif_details` (by its JSON): at
    /// 100,000 ports a map each was about 60 MB. Bounded by what drivers
    /// put there (driver, agent configuration, VLAN), never per port.
    details: HashMap<String, Details>,

    journal: Option<Journal>,
}

type Details = std::sync::Arc<serde_json::Map<String, serde_json::Value>>;

#[derive(Debug, Default)]
struct Journal {
    /// Previous values, in first-touch order.
    undo: Vec<(Kind, String, Option<Record>)>,
    /// Touched keys, with whether the key existed before the transaction.
    touched: BTreeMap<(Kind, String), bool>,
    /// The open savepoint, if any (see [`State::savepoint`]).
    savepoint: Option<Savepoint>,
}

/// What a savepoint needs to undo: the keys touched since it was taken, as
/// they were then, and how long the transaction's own undo list was.
#[derive(Debug, Default)]
struct Savepoint {
    undo: Vec<(Kind, String, Option<Record>)>,
    seen: std::collections::HashSet<(Kind, String)>,
    txn_undo_len: usize,
}

impl State {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every record, copied (what [`State::from_records`] builds the same
    /// state from).
    pub fn records(&self) -> impl Iterator<Item = Record> + '_ {
        self.networks
            .values()
            .cloned()
            .map(Record::Network)
            .chain(self.segments.values().cloned().map(Record::Segment))
            .chain(self.subnets.values().cloned().map(Record::Subnet))
            .chain(self.ports.values().cloned().map(Record::Port))
            .chain(self.agents.values().cloned().map(Record::Agent))
            .chain(self.routers.values().cloned().map(Record::Router))
            .chain(self.floatingips.values().cloned().map(Record::FloatingIp))
            .chain(self.quotas.values().cloned().map(Record::Quota))
            .chain(
                self.security_groups
                    .values()
                    .cloned()
                    .map(Record::SecurityGroup),
            )
            .chain(
                self.security_group_rules
                    .values()
                    .cloned()
                    .map(Record::SecurityGroupRule),
            )
    }

    /// Builds the state from stored records (at start-up).
    pub fn from_records(records: impl IntoIterator<Item = Record>) -> Self {
        let mut s = State::new();
        for r in records {
            s.put(r);
        }
        s
    }

    // ---- transactions ------------------------------------------------------

    pub fn begin(&mut self) {
        self.journal = Some(Journal::default());
    }

    pub fn in_txn(&self) -> bool {
        self.journal.is_some()
    }

    /// Ends the transaction and returns the final value of every touched key, in
    /// a stable order, for the store to persist.
    pub fn commit(&mut self) -> Vec<Change> {
        let Some(j) = self.journal.take() else {
            return Vec::new();
        };
        j.touched
            .into_iter()
            .filter_map(|((k, id), existed)| {
                let now = self.get(k, &id);
                // Made and removed within the transaction: nothing to persist or log.
                (existed || now.is_some()).then_some((k, id, now))
            })
            .collect()
    }

    /// The changes of the open transaction, without ending it.
    pub fn pending(&self) -> Vec<Change> {
        let Some(j) = &self.journal else {
            return Vec::new();
        };
        j.touched
            .iter()
            .filter_map(|((k, id), existed)| {
                let now = self.get(*k, id);
                (*existed || now.is_some()).then(|| (*k, id.clone(), now))
            })
            .collect()
    }

    /// The open transaction's touched keys as they were at [`State::begin`]
    /// (`None`: absent then), in first-touch order.
    pub fn undo(&self) -> &[(Kind, String, Option<Record>)] {
        self.journal.as_ref().map_or(&[], |j| j.undo.as_slice())
    }

    /// Puts back every touched key as it was at [`State::begin`].
    pub fn rollback(&mut self) {
        let Some(j) = self.journal.take() else {
            return;
        };
        for (kind, id, old) in j.undo.into_iter().rev() {
            self.set_raw(kind, &id, old);
        }
    }

    /// Marks the point [`State::rollback_to_savepoint`] returns to, within
    /// the open transaction (a no-op outside one). Taking one replaces the
    /// previous: a batch of operations sharing one transaction takes one
    /// before each, so a failing operation is undone without its neighbours.
    pub fn savepoint(&mut self) {
        if let Some(j) = self.journal.as_mut() {
            j.savepoint = Some(Savepoint {
                txn_undo_len: j.undo.len(),
                ..Savepoint::default()
            });
        }
    }

    /// Puts every key touched since [`State::savepoint`] back as it was
    /// then; the transaction stays open with what came before.
    pub fn rollback_to_savepoint(&mut self) {
        let Some(j) = self.journal.as_mut() else {
            return;
        };
        let Some(sp) = j.savepoint.take() else {
            return;
        };
        // Keys first touched after the savepoint leave the transaction
        // entirely, so its changes are as if the undone operation never ran.
        for (kind, id, _) in j.undo.drain(sp.txn_undo_len..) {
            j.touched.remove(&(kind, id));
        }
        for (kind, id, old) in sp.undo.into_iter().rev() {
            self.set_raw(kind, &id, old);
        }
    }

    fn note(&mut self, kind: Kind, id: &str) {
        let Some(j) = &self.journal else {
            return;
        };
        let key = (kind, id.to_string());
        let in_txn = j.touched.contains_key(&key);
        let in_savepoint = j.savepoint.as_ref().is_none_or(|sp| sp.seen.contains(&key));
        if in_txn && in_savepoint {
            return;
        }
        let old = self.get(kind, id);
        if let Some(j) = self.journal.as_mut() {
            if !in_savepoint && let Some(sp) = j.savepoint.as_mut() {
                sp.seen.insert(key.clone());
                sp.undo.push((kind, id.to_string(), old.clone()));
            }
            if !in_txn {
                j.touched.insert(key, old.is_some());
                j.undo.push((kind, id.to_string(), old));
            }
        }
    }

    // ---- generic access ----------------------------------------------------

    pub fn get(&self, kind: Kind, id: &str) -> Option<Record> {
        match kind {
            Kind::Network => self.networks.get(id).cloned().map(Record::Network),
            Kind::Segment => self.segments.get(id).cloned().map(Record::Segment),
            Kind::Subnet => self.subnets.get(id).cloned().map(Record::Subnet),
            Kind::Port => self.ports.get(id).cloned().map(Record::Port),
            Kind::Agent => self.agents.get(id).cloned().map(Record::Agent),
            Kind::Router => self.routers.get(id).cloned().map(Record::Router),
            Kind::FloatingIp => self.floatingips.get(id).cloned().map(Record::FloatingIp),
            Kind::Quota => self.quotas.get(id).cloned().map(Record::Quota),
            Kind::SecurityGroup => self
                .security_groups
                .get(id)
                .cloned()
                .map(Record::SecurityGroup),
            Kind::SecurityGroupRule => self
                .security_group_rules
                .get(id)
                .cloned()
                .map(Record::SecurityGroupRule),
        }
    }

    /// Makes `d` the shared copy of its value.
    fn share_details(&mut self, d: &mut Details) {
        let Ok(key) = serde_json::to_string(&**d) else {
            return;
        };
        match self.details.get(&key) {
            Some(shared) => *d = shared.clone(),
            None => {
                self.details.insert(key, d.clone());
            }
        }
    }

    /// Inserts or replaces a record, keeping indexes and the journal.
    pub fn put(&mut self, record: Record) {
        let kind = record.kind();
        let id = record.id().to_string();
        self.note(kind, &id);
        self.set_raw(kind, &id, Some(record));
    }

    pub fn remove(&mut self, kind: Kind, id: &str) -> Option<Record> {
        self.note(kind, id);
        self.set_raw(kind, id, None)
    }

    fn set_raw(&mut self, kind: Kind, id: &str, new: Option<Record>) -> Option<Record> {
        let old = match kind {
            Kind::Network => self.networks.remove(id).map(Record::Network),
            Kind::Segment => self.segments.remove(id).map(Record::Segment),
            Kind::Subnet => self.subnets.remove(id).map(Record::Subnet),
            Kind::Port => self.ports.remove(id).map(Record::Port),
            Kind::Agent => self.agents.remove(id).map(Record::Agent),
            Kind::Router => self.routers.remove(id).map(Record::Router),
            Kind::FloatingIp => self.floatingips.remove(id).map(Record::FloatingIp),
            Kind::Quota => self.quotas.remove(id).map(Record::Quota),
            Kind::SecurityGroup => self.security_groups.remove(id).map(Record::SecurityGroup),
            Kind::SecurityGroupRule => self
                .security_group_rules
                .remove(id)
                .map(Record::SecurityGroupRule),
        };
        if let Some(o) = &old {
            self.unindex(o);
        }
        if let Some(n) = new {
            self.index(&n);
            match n {
                Record::Network(r) => {
                    self.networks.insert(id.to_string(), r);
                }
                Record::Segment(r) => {
                    self.segments.insert(id.to_string(), r);
                }
                Record::Subnet(r) => {
                    self.subnets.insert(id.to_string(), r);
                }
                Record::Port(mut r) => {
                    for b in &mut r.bindings {
                        self.share_details(&mut b.vif_details);
                    }
                    self.ports.insert(id.to_string(), r);
                }
                Record::Agent(r) => {
                    self.agents.insert(id.to_string(), r);
                }
                Record::Router(r) => {
                    self.routers.insert(id.to_string(), r);
                }
                Record::FloatingIp(r) => {
                    self.floatingips.insert(id.to_string(), r);
                }
                Record::Quota(r) => {
                    self.quotas.insert(id.to_string(), r);
                }
                Record::SecurityGroup(r) => {
                    self.security_groups.insert(id.to_string(), r);
                }
                Record::SecurityGroupRule(r) => {
                    self.security_group_rules.insert(id.to_string(), r);
                }
            }
        }
        old
    }

    /// How many resources of `kind` project `project` owns.
    pub fn usage(&self, kind: Kind, project: &str) -> usize {
        self.usage
            .get(&(kind, project.to_string()))
            .copied()
            .unwrap_or(0)
    }

    /// The project a counted record belongs to (what quotas count).
    pub fn owner(r: &Record) -> Option<&str> {
        match r {
            Record::Segment(_) | Record::Agent(_) | Record::Quota(_) => None,
            _ => r.project_id(),
        }
    }

    fn index(&mut self, r: &Record) {
        if let Some(p) = Self::owner(r) {
            *self.usage.entry((r.kind(), p.to_string())).or_default() += 1;
        }
        match r {
            Record::Quota(_) => {}
            Record::SecurityGroup(g) => {
                if g.is_default {
                    self.default_groups
                        .insert(g.std.project_id.clone(), g.id.clone());
                }
            }
            Record::SecurityGroupRule(x) => {
                self.rules_by_group
                    .entry(x.security_group_id.clone())
                    .or_default()
                    .insert(x.id.clone());
                if let Some(g) = &x.remote_group_id {
                    self.rules_by_remote_group
                        .entry(g.clone())
                        .or_default()
                        .insert(x.id.clone());
                }
            }
            Record::Network(_) => {}
            Record::Segment(s) => {
                self.segments_by_network
                    .entry(s.network_id.clone())
                    .or_default()
                    .insert(s.id.clone());
                if let Some(k) = seg_alloc_key(s) {
                    match k {
                        SegKey::Flat(p) => {
                            self.flat_alloc.insert(p.to_string(), s.id.clone());
                        }
                        SegKey::Vlan(p, v) => {
                            self.vlan_alloc.insert((p.to_string(), v), s.id.clone());
                        }
                        SegKey::Tunnel(t, v) => {
                            self.tunnel_alloc.insert((t, v), s.id.clone());
                        }
                    }
                }
            }
            Record::Subnet(s) => {
                self.subnets_by_network
                    .entry(s.network_id.clone())
                    .or_default()
                    .insert(s.id.clone());
            }
            Record::Port(p) => {
                self.ports_by_network
                    .entry(p.network_id.clone())
                    .or_default()
                    .insert(p.id.clone());
                for ip in &p.fixed_ips {
                    self.ips
                        .entry(ip.subnet_id.clone())
                        .or_default()
                        .insert(ip.ip_address, p.id.clone());
                }
                self.macs
                    .insert((p.network_id.clone(), p.mac_address), p.id.clone());
                for seg in bound_segments(p) {
                    *self.segment_refs.entry(seg.to_string()).or_default() += 1;
                }
                if !p.device_id.is_empty() {
                    self.ports_by_device
                        .entry(p.device_id.clone())
                        .or_default()
                        .insert(p.id.clone());
                }
                for g in &p.security_groups {
                    self.ports_by_group
                        .entry(g.clone())
                        .or_default()
                        .insert(p.id.clone());
                }
            }
            Record::Agent(a) => {
                self.agents_by_type_host
                    .insert((a.agent_type.clone(), a.host.clone()), a.id.clone());
            }
            Record::Router(_) => {}
            Record::FloatingIp(f) => {
                if let Some(port) = &f.port_id {
                    self.fips_by_port
                        .entry(port.clone())
                        .or_default()
                        .insert(f.id.clone());
                }
                if let Some(router) = &f.router_id {
                    self.fips_by_router
                        .entry(router.clone())
                        .or_default()
                        .insert(f.id.clone());
                }
            }
        }
    }

    fn unindex(&mut self, r: &Record) {
        if let Some(p) = Self::owner(r) {
            let key = (r.kind(), p.to_string());
            if let Some(n) = self.usage.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    self.usage.remove(&key);
                }
            }
        }
        fn drop_from(map: &mut HashMap<String, BTreeSet<String>>, key: &str, id: &str) {
            if let Some(set) = map.get_mut(key) {
                set.remove(id);
                if set.is_empty() {
                    map.remove(key);
                }
            }
        }
        match r {
            Record::Network(_) | Record::Quota(_) => {}
            Record::SecurityGroup(g) => {
                if self.default_groups.get(&g.std.project_id) == Some(&g.id) {
                    self.default_groups.remove(&g.std.project_id);
                }
            }
            Record::SecurityGroupRule(x) => {
                drop_from(&mut self.rules_by_group, &x.security_group_id, &x.id);
                if let Some(g) = &x.remote_group_id {
                    drop_from(&mut self.rules_by_remote_group, g, &x.id);
                }
            }
            Record::Segment(s) => {
                drop_from(&mut self.segments_by_network, &s.network_id, &s.id);
                if let Some(k) = seg_alloc_key(s) {
                    match k {
                        // Only the holder releases a key: during a rollback another
                        // record may hold it by the time this one is unindexed.
                        SegKey::Flat(p) => {
                            if self.flat_alloc.get(p) == Some(&s.id) {
                                self.flat_alloc.remove(p);
                            }
                        }
                        SegKey::Vlan(p, v) => {
                            let key = (p.to_string(), v);
                            if self.vlan_alloc.get(&key) == Some(&s.id) {
                                self.vlan_alloc.remove(&key);
                            }
                        }
                        SegKey::Tunnel(t, v) => {
                            if self.tunnel_alloc.get(&(t, v)) == Some(&s.id) {
                                self.tunnel_alloc.remove(&(t, v));
                            }
                        }
                    }
                }
            }
            Record::Subnet(s) => drop_from(&mut self.subnets_by_network, &s.network_id, &s.id),
            Record::Port(p) => {
                drop_from(&mut self.ports_by_network, &p.network_id, &p.id);
                for ip in &p.fixed_ips {
                    if let Some(m) = self.ips.get_mut(&ip.subnet_id) {
                        if m.get(&ip.ip_address) == Some(&p.id) {
                            m.remove(&ip.ip_address);
                        }
                        if m.is_empty() {
                            self.ips.remove(&ip.subnet_id);
                        }
                    }
                }
                let key = (p.network_id.clone(), p.mac_address);
                if self.macs.get(&key) == Some(&p.id) {
                    self.macs.remove(&key);
                }
                for seg in bound_segments(p) {
                    if let Some(n) = self.segment_refs.get_mut(seg) {
                        *n -= 1;
                        if *n == 0 {
                            self.segment_refs.remove(seg);
                        }
                    }
                }
                if !p.device_id.is_empty() {
                    drop_from(&mut self.ports_by_device, &p.device_id, &p.id);
                }
                for g in &p.security_groups {
                    drop_from(&mut self.ports_by_group, g, &p.id);
                }
            }
            Record::Agent(a) => {
                let key = (a.agent_type.clone(), a.host.clone());
                if self.agents_by_type_host.get(&key) == Some(&a.id) {
                    self.agents_by_type_host.remove(&key);
                }
            }
            Record::Router(_) => {}
            Record::FloatingIp(f) => {
                if let Some(port) = &f.port_id {
                    drop_from(&mut self.fips_by_port, port, &f.id);
                }
                if let Some(router) = &f.router_id {
                    drop_from(&mut self.fips_by_router, router, &f.id);
                }
            }
        }
    }

    // ---- typed helpers -----------------------------------------------------

    pub fn put_network(&mut self, r: Network) {
        self.put(Record::Network(r))
    }
    pub fn put_segment(&mut self, r: Segment) {
        self.put(Record::Segment(r))
    }
    pub fn put_subnet(&mut self, r: Subnet) {
        self.put(Record::Subnet(r))
    }
    pub fn put_port(&mut self, r: Port) {
        self.put(Record::Port(r))
    }
    pub fn put_agent(&mut self, r: Agent) {
        self.put(Record::Agent(r))
    }
    pub fn put_router(&mut self, r: Router) {
        self.put(Record::Router(r))
    }
    pub fn put_floatingip(&mut self, r: FloatingIp) {
        self.put(Record::FloatingIp(r))
    }

    /// Project `project`'s default security group, if it was made.
    pub fn default_security_group(&self, project: &str) -> Option<&SecurityGroup> {
        self.default_groups
            .get(project)
            .and_then(|id| self.security_groups.get(id))
    }

    /// The rules of group `id`, in id order.
    pub fn group_rules(&self, id: &str) -> Vec<&SecurityGroupRule> {
        self.rules_by_group
            .get(id)
            .into_iter()
            .flatten()
            .filter_map(|r| self.security_group_rules.get(r))
            .collect()
    }

    /// The ids of rules (of any group) naming group `id` as remote group.
    pub fn rules_with_remote_group(&self, id: &str) -> Vec<String> {
        self.rules_by_remote_group
            .get(id)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The ids of group `id`'s member ports.
    pub fn group_ports(&self, id: &str) -> Vec<String> {
        self.ports_by_group
            .get(id)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Ports whose `device_id` is `device` (a router's interfaces and gateway
    /// port, a VM's ports), in id order.
    pub fn device_ports(&self, device: &str) -> Vec<&Port> {
        self.ports_by_device
            .get(device)
            .into_iter()
            .flatten()
            .filter_map(|id| self.ports.get(id))
            .collect()
    }

    /// A router's interface ports, in id order.
    pub fn router_interfaces(&self, router_id: &str) -> Vec<&Port> {
        self.device_ports(router_id)
            .into_iter()
            .filter(|p| p.device_owner == crate::resources::OWNER_ROUTER_INTERFACE)
            .collect()
    }

    /// Floating IPs associated with a port.
    /// The floating IPs a router realises (`router_id`).
    pub fn router_floatingips(&self, router_id: &str) -> Vec<&FloatingIp> {
        self.fips_by_router
            .get(router_id)
            .into_iter()
            .flatten()
            .filter_map(|id| self.floatingips.get(id))
            .collect()
    }

    pub fn port_floatingips(&self, port_id: &str) -> Vec<&FloatingIp> {
        self.fips_by_port
            .get(port_id)
            .into_iter()
            .flatten()
            .filter_map(|id| self.floatingips.get(id))
            .collect()
    }

    // ---- index queries -----------------------------------------------------

    /// Segments of a network: static ones in `segment_index` order, then dynamic ones.
    pub fn network_segments(&self, network_id: &str) -> Vec<&Segment> {
        let mut v: Vec<&Segment> = self
            .segments_by_network
            .get(network_id)
            .into_iter()
            .flatten()
            .filter_map(|id| self.segments.get(id))
            .collect();
        v.sort_by(|a, b| {
            (a.is_dynamic, a.segment_index, &a.std.created_at, &a.id).cmp(&(
                b.is_dynamic,
                b.segment_index,
                &b.std.created_at,
                &b.id,
            ))
        });
        v
    }

    /// Subnets of a network in creation order (Neutron lists them so).
    pub fn network_subnets(&self, network_id: &str) -> Vec<&Subnet> {
        let mut v: Vec<&Subnet> = self
            .subnets_by_network
            .get(network_id)
            .into_iter()
            .flatten()
            .filter_map(|id| self.subnets.get(id))
            .collect();
        v.sort_by(|a, b| {
            (a.order, &a.std.created_at, &a.id).cmp(&(b.order, &b.std.created_at, &b.id))
        });
        v
    }

    pub fn network_port_ids(&self, network_id: &str) -> impl Iterator<Item = &String> {
        self.ports_by_network.get(network_id).into_iter().flatten()
    }

    pub fn segment_holder(&self, key: SegKey<'_>) -> Option<&str> {
        match key {
            SegKey::Flat(p) => self.flat_alloc.get(p),
            SegKey::Vlan(p, v) => self.vlan_alloc.get(&(p.to_string(), v)),
            SegKey::Tunnel(t, v) => self.tunnel_alloc.get(&(t, v)),
        }
        .map(String::as_str)
    }

    /// Port holding an address on a subnet.
    pub fn ip_holder(&self, subnet_id: &str, ip: &IpAddr) -> Option<&str> {
        self.ips
            .get(subnet_id)
            .and_then(|m| m.get(ip))
            .map(String::as_str)
    }

    /// Allocated addresses of a subnet, in order.
    pub fn subnet_ips(&self, subnet_id: &str) -> Option<&BTreeMap<IpAddr, String>> {
        self.ips.get(subnet_id)
    }

    /// Whether any port binding (active or not) uses the segment.
    pub fn segment_in_use(&self, segment_id: &str) -> bool {
        self.segment_refs.contains_key(segment_id)
    }

    pub fn mac_holder(&self, network_id: &str, mac: &Mac) -> Option<&str> {
        self.macs
            .get(&(network_id.to_string(), *mac))
            .map(String::as_str)
    }

    pub fn agent_by_type_host(&self, agent_type: &str, host: &str) -> Option<&Agent> {
        self.agents_by_type_host
            .get(&(agent_type.to_string(), host.to_string()))
            .and_then(|id| self.agents.get(id))
    }

    pub fn agents_on_host<'a>(&'a self, host: &'a str) -> impl Iterator<Item = &'a Agent> + 'a {
        self.agents.values().filter(move |a| a.host == host)
    }
}

/// Segments a port's bindings use, one entry per binding level.
fn bound_segments(p: &Port) -> impl Iterator<Item = &str> {
    p.bindings
        .iter()
        .flat_map(|b| b.levels.iter().map(|l| l.segment_id.as_str()))
}

/// The allocation a segment holds, if any.
pub fn seg_alloc_key(s: &Segment) -> Option<SegKey<'_>> {
    match (
        s.network_type,
        s.physical_network.as_deref(),
        s.segmentation_id,
    ) {
        (NetworkType::Flat, Some(p), _) => Some(SegKey::Flat(p)),
        (NetworkType::Vlan, Some(p), Some(v)) => Some(SegKey::Vlan(p, v)),
        (t, _, Some(v)) if t.is_tunnel() => Some(SegKey::Tunnel(t, v)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::StdAttrs;

    fn seg(id: &str, vlan: u32) -> Segment {
        let now = chrono::DateTime::from_timestamp(0, 0).expect("epoch");
        Segment {
            id: id.into(),
            network_id: "n".into(),
            name: None,
            network_type: NetworkType::Vlan,
            physical_network: Some("physnet1".into()),
            segmentation_id: Some(vlan),
            is_dynamic: true,
            segment_index: 0,
            std: StdAttrs::new(String::new(), String::new(), vec![], now),
        }
    }

    #[test]
    fn made_and_removed_in_one_transaction_is_not_a_change() {
        let mut st = State::new();
        st.begin();
        st.put_segment(seg("a", 100));
        st.remove(Kind::Segment, "a");
        assert!(st.pending().is_empty());
        assert!(st.commit().is_empty());
        assert!(st.segment_holder(SegKey::Vlan("physnet1", 100)).is_none());
    }

    fn bound_port(id: &str, vlan: &str) -> Record {
        let v = serde_json::json!({"id": id, "network_id": "n", "name": "",
            "mac_address": "fa:16:3e:61:18:30", "fixed_ips": [], "device_id": "",
            "device_owner": "compute:nova", "status": "DOWN", "admin_state_up": true,
            "allowed_address_pairs": [], "port_security_enabled": true, "security_groups": [],
            "bindings": [{"host": "h", "vnic_type": "direct", "profile": {}, "vif_type": "hw_veb",
                "vif_details": {"connectivity": "l2", "vlan": vlan}, "status": "ACTIVE", "levels": []}],
            "std": {"project_id": "p", "revision_number": 0, "created_at": "2027-01-15T08:00:00Z",
                "updated_at": "2027-01-15T08:00:00Z", "tags": [], "description": ""}});
        Record::Port(serde_json::from_value(v).expect("port"))
    }

    #[test]
    fn ports_bound_alike_share_their_details() {
        let st = State::from_records([
            bound_port("a", "100"),
            bound_port("b", "100"),
            bound_port("c", "200"),
        ]);
        let d = |id: &str| st.ports[id].bindings[0].vif_details.clone();
        assert!(std::sync::Arc::ptr_eq(&d("a"), &d("b")));
        assert!(!std::sync::Arc::ptr_eq(&d("a"), &d("c")));
        assert_eq!(d("c")["vlan"], "200");
    }

    #[test]
    fn rollback_restores_allocation_keys_whatever_the_order() {
        let mut st = State::from_records([Record::Segment(seg("a", 100))]);
        st.begin();
        // "a" gives up VLAN 100 and "b" takes it within one transaction.
        st.remove(Kind::Segment, "a");
        st.put_segment(seg("b", 100));
        assert_eq!(st.segment_holder(SegKey::Vlan("physnet1", 100)), Some("b"));
        st.rollback();
        assert_eq!(st.segment_holder(SegKey::Vlan("physnet1", 100)), Some("a"));
        assert!(!st.segments.contains_key("b"));
    }

    /// Segment `id` holding one of its own four VLANs (the model leaves
    /// conflicts between segments to ML2, which checks before it puts).
    fn seg_n(id: u8, v: u32) -> Segment {
        seg(&format!("s{id}"), 100 + u32::from(id) * 4 + v)
    }

    /// One step of a batch: put segment `id` holding `vlan`, or remove it.
    fn step(st: &mut State, (id, vlan): (u8, Option<u32>)) {
        match vlan {
            Some(v) => st.put_segment(seg_n(id, v)),
            None => {
                st.remove(Kind::Segment, &format!("s{id}"));
            }
        }
    }

    fn holders(st: &State) -> Vec<(u32, Option<String>)> {
        (100..116)
            .map(|v| {
                let h = st.segment_holder(SegKey::Vlan("physnet1", v));
                (v, h.map(str::to_string))
            })
            .collect()
    }

    proptest::proptest! {
        /// A batch of operations in one transaction, each behind a
        /// savepoint and some rolled back, ends exactly where running only
        /// the kept ones would: same records, same allocations, same changes.
        #[test]
        fn rolling_back_to_a_savepoint_is_as_if_the_operation_never_ran(
            start in proptest::collection::vec((0u8..4, 0u32..4), 0..4),
            ops in proptest::collection::vec(
                (proptest::collection::vec((0u8..4, proptest::option::of(0u32..4)), 1..4),
                 proptest::bool::ANY),
                1..8),
        ) {
            let initial: Vec<Record> = start
                .iter()
                .copied()
                .collect::<BTreeMap<u8, u32>>()
                .into_iter()
                .map(|(id, v)| Record::Segment(seg_n(id, v)))
                .collect();
            let mut batched = State::from_records(initial.clone());
            let mut kept = State::from_records(initial);
            batched.begin();
            kept.begin();
            for (steps, keep) in &ops {
                batched.savepoint();
                for s in steps {
                    step(&mut batched, *s);
                }
                if *keep {
                    for s in steps {
                        step(&mut kept, *s);
                    }
                } else {
                    batched.rollback_to_savepoint();
                }
            }
            proptest::prop_assert_eq!(&batched.segments, &kept.segments);
            proptest::prop_assert_eq!(holders(&batched), holders(&kept));
            proptest::prop_assert_eq!(batched.undo(), kept.undo());
            proptest::prop_assert_eq!(batched.commit(), kept.commit());
        }
    }
}
