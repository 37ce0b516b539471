//! Incremental compilation equals a full compile, whatever happens: random
//! sequences of API operations *and* agent events (registration, deletion,
//! re-registration, role change, a gateway disabled, agents dying and coming
//! back as time passes, the failover pass moving routers off dead gateways,
//! live migrations) are applied to one compiler incrementally, and after each
//! step every node's items must equal a fresh full compile of the same model
//! at the same time.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use proptest::prelude::*;
use serde_json::{Map, Value, json};
use switchyard_controller::{Compiler, Liveness};
use switchyard_ml2::{Ctx, Ml2, Ml2Config, ops};
use switchyard_model::{Change, State};
use switchyard_proto::{Delta, Item, Items};

/// Agents that may run: (host, agent type, configurations). Two entries share
/// compute-4 (a vRouter node re-registered as an OVS node: a role change).
const AGENTS: [(&str, &str, &str); 9] = [
    (
        "compute-1",
        "Open vSwitch agent",
        r#"{"bridge_mappings": {"physnet1": "br-phys"}}"#,
    ),
    (
        "compute-2",
        "vRouter agent",
        r#"{"tunneling_ip": "192.0.2.12"}"#,
    ),
    (
        "compute-3",
        "NIC Switch agent",
        r#"{"device_mappings": {"physnet1": ["eth1"]}}"#,
    ),
    (
        "compute-4",
        "vRouter agent",
        r#"{"tunneling_ip": "192.0.2.14"}"#,
    ),
    (
        "compute-5",
        "Open vSwitch agent",
        r#"{"bridge_mappings": {"physnet1": "br-phys"}}"#,
    ),
    (
        "gateway",
        "Gateway agent",
        r#"{"tunneling_ip": "192.0.2.1"}"#,
    ),
    (
        "gateway-2",
        "Gateway agent",
        r#"{"tunneling_ip": "192.0.2.2"}"#,
    ),
    (
        "gateway-3",
        "Gateway agent",
        r#"{"tunneling_ip": "192.0.2.3"}"#,
    ),
    (
        "compute-4",
        "Open vSwitch agent",
        r#"{"bridge_mappings": {"physnet1": "br-phys"}}"#,
    ),
];

const HOSTS: [&str; 8] = [
    "compute-1",
    "compute-2",
    "compute-3",
    "compute-4",
    "compute-5",
    "gateway",
    "gateway-2",
    "gateway-3",
];

/// Neutron's default `agent_down_time`.
const DOWN: u64 = 75;

#[derive(Debug, Clone)]
enum Op {
    Network,
    Port {
        net: usize,
        host: usize,
        direct: bool,
    },
    DeletePort(usize),
    AdminState(usize, bool),
    Rebind(usize, usize),
    Migrate(usize, usize),
    Register(usize),
    DeleteAgent(usize),
    DisableGateway(usize, bool),
    /// The agent stops (no more heartbeats) or starts again.
    Stop(usize),
    Start(usize),
    /// 30 s pass: running agents heartbeat, the others may go dead.
    Tick,
    /// The failover pass (`reschedule_stranded`), as the controller's tick runs it.
    Failover,
    Router(usize),
    RemoveInterface(usize),
    DeleteRouter(usize),
    FloatingIp(usize),
    /// A security group (with its egress rules; the first makes the default).
    Group,
    /// A rule in group `0` from group `1` (a remote group) or, with `None`,
    /// from a prefix.
    GroupRule(usize, Option<usize>),
    DeleteGroupRule(usize),
    /// Port `0` becomes a member of group `1` only (or of none).
    Join(usize, Option<usize>),
    /// Port `0`'s port security off (and groups dropped) or on.
    PortSecurity(usize, bool),
    /// Port `0` gets an allowed address pair (a prefix) or loses its pairs.
    Pairs(usize, bool),
    /// Port `0` asks for a new fixed IP on its subnet.
    NewAddress(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => Just(Op::Network),
        6 => (0..4usize, 0..5usize, any::<bool>()).prop_map(|(net, host, direct)| Op::Port { net, host, direct }),
        2 => (0..64usize).prop_map(Op::DeletePort),
        1 => (0..64usize, any::<bool>()).prop_map(|(p, up)| Op::AdminState(p, up)),
        1 => (0..64usize, 0..5usize).prop_map(|(p, h)| Op::Rebind(p, h)),
        1 => (0..64usize, 0..5usize).prop_map(|(p, h)| Op::Migrate(p, h)),
        2 => (0..AGENTS.len()).prop_map(Op::Register),
        1 => (0..HOSTS.len()).prop_map(Op::DeleteAgent),
        1 => (5..8usize, any::<bool>()).prop_map(|(g, up)| Op::DisableGateway(g, up)),
        2 => (0..AGENTS.len()).prop_map(Op::Stop),
        2 => (0..AGENTS.len()).prop_map(Op::Start),
        3 => Just(Op::Tick),
        1 => Just(Op::Failover),
        2 => (0..4usize).prop_map(Op::Router),
        1 => (0..8usize).prop_map(Op::RemoveInterface),
        1 => (0..8usize).prop_map(Op::DeleteRouter),
        1 => (0..64usize).prop_map(Op::FloatingIp),
        2 => Just(Op::Group),
        3 => (0..8usize, proptest::option::of(0..8usize)).prop_map(|(g, r)| Op::GroupRule(g, r)),
        1 => (0..64usize).prop_map(Op::DeleteGroupRule),
        4 => (0..64usize, proptest::option::of(0..8usize)).prop_map(|(p, g)| Op::Join(p, g)),
        1 => (0..64usize, any::<bool>()).prop_map(|(p, on)| Op::PortSecurity(p, on)),
        1 => (0..64usize, any::<bool>()).prop_map(|(p, on)| Op::Pairs(p, on)),
        1 => (0..64usize).prop_map(Op::NewAddress),
    ]
}

/// Operations that change security groups and their members, and the port
/// and agent events that move filters between nodes: what decides which
/// nodes hold which member sets.
fn group_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => Just(Op::Network),
        5 => (0..2usize, 0..5usize, any::<bool>()).prop_map(|(net, host, direct)| Op::Port { net, host, direct }),
        1 => (0..32usize).prop_map(Op::DeletePort),
        1 => (0..32usize, 0..5usize).prop_map(|(p, h)| Op::Rebind(p, h)),
        1 => (0..32usize, 0..5usize).prop_map(|(p, h)| Op::Migrate(p, h)),
        1 => (0..AGENTS.len()).prop_map(Op::Register),
        1 => (0..5usize).prop_map(Op::DeleteAgent),
        2 => Just(Op::Group),
        3 => (0..4usize, proptest::option::of(0..4usize)).prop_map(|(g, r)| Op::GroupRule(g, r)),
        1 => (0..32usize).prop_map(Op::DeleteGroupRule),
        5 => (0..32usize, proptest::option::of(0..4usize)).prop_map(|(p, g)| Op::Join(p, g)),
        1 => (0..32usize, any::<bool>()).prop_map(|(p, on)| Op::PortSecurity(p, on)),
        2 => (0..32usize, any::<bool>()).prop_map(|(p, on)| Op::Pairs(p, on)),
        1 => (0..32usize).prop_map(Op::NewAddress),
    ]
}

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

struct World {
    ml2: Ml2,
    st: State,
    /// Seconds since the start.
    t: i64,
    running: BTreeSet<usize>,
    nets: Vec<String>,
    ports: Vec<String>,
    routers: Vec<String>,
    groups: Vec<String>,
    public: String,
    compiler: Compiler,
    /// What the compiler sent for the last transaction.
    deltas: BTreeMap<String, Delta>,
    /// A second compiler started from a full compile of an earlier model,
    /// and the changes committed since, not yet applied to it (what a
    /// restarted controller catches up with).
    late: Option<(Compiler, Vec<Change>)>,
}

impl World {
    fn ctx(&self) -> Ctx {
        let now = chrono::DateTime::from_timestamp(1_800_000_000 + self.t, 0).expect("time");
        Ctx::admin("p", now)
    }

    fn live(&self) -> Liveness {
        Liveness::at(self.ctx().now, DOWN)
    }

    /// One transaction, rolled back on error as the API does; the compiler
    /// sees what was committed.
    fn txn<T>(
        &mut self,
        f: impl FnOnce(&Ml2, &mut State, &Ctx) -> switchyard_model::Result<T>,
    ) -> Option<T> {
        let ctx = self.ctx();
        self.st.begin();
        match f(&self.ml2, &mut self.st, &ctx) {
            Ok(v) => {
                let changes: Vec<Change> = self.st.commit();
                let live = self.live();
                self.deltas = self.compiler.apply(&self.st, &changes, &live);
                if let Some((_, backlog)) = &mut self.late {
                    backlog.extend(changes);
                }
                Some(v)
            }
            Err(_) => {
                self.st.rollback();
                None
            }
        }
    }

    /// A port changed on the model directly (what the port API does not
    /// take yet), as one transaction.
    fn edit_port(&mut self, id: &str, f: impl FnOnce(&mut switchyard_model::Port)) {
        self.txn(|_, st, _| {
            let mut port = st
                .ports
                .get(id)
                .cloned()
                .ok_or_else(|| ops::port_not_found(id))?;
            f(&mut port);
            st.put_port(port);
            Ok(())
        });
    }

    fn report(&mut self, i: usize) {
        let (host, ty, conf) = AGENTS[i];
        let conf: Value = serde_json::from_str(conf).unwrap_or(Value::Null);
        let body = obj(json!({"host": host, "agent_type": ty, "configurations": conf}));
        self.txn(|_, st, ctx| ops::agents::report_state(st, ctx, &body));
    }

    fn new() -> Self {
        let ml2 = Ml2::with_seed(&Ml2Config::default(), 11).expect("ml2");
        let st = State::new();
        let compiler = Compiler::full(&st, &Liveness::All);
        let mut w = World {
            ml2,
            st,
            t: 0,
            running: BTreeSet::new(),
            nets: Vec::new(),
            ports: Vec::new(),
            routers: Vec::new(),
            groups: Vec::new(),
            public: String::new(),
            compiler,
            deltas: BTreeMap::new(),
            late: None,
        };
        for i in [0, 1, 2, 3, 5] {
            w.running.insert(i);
            w.report(i);
        }
        w.public = w
            .txn(|ml2, st, ctx| {
                let id = ops::networks::create(
                    ml2,
                    st,
                    ctx,
                    &obj(json!({"name": "public", "router:external": true,
                        "provider:network_type": "flat", "provider:physical_network": "public"})),
                )?;
                ops::subnets::create(
                    st,
                    ctx,
                    &obj(json!({"network_id": id, "cidr": "203.0.113.0/24", "ip_version": 4})),
                )?;
                Ok(id)
            })
            .unwrap_or_default();
        w
    }

    fn pick(v: &[String], i: usize) -> Option<&String> {
        (!v.is_empty()).then(|| &v[i % v.len()])
    }

    fn step(&mut self, op: &Op) {
        match op {
            Op::Network => {
                let n = self.nets.len();
                let cidr = format!("10.{n}.0.0/24");
                if let Some(id) = self.txn(|ml2, st, ctx| {
                    let id = ops::networks::create(ml2, st, ctx, &obj(json!({"name": "n"})))?;
                    ops::subnets::create(
                        st,
                        ctx,
                        &obj(json!({"network_id": id, "cidr": cidr, "ip_version": 4})),
                    )?;
                    Ok(id)
                }) {
                    self.nets.push(id);
                }
            }
            Op::Port { net, host, direct } => {
                let Some(net) = Self::pick(&self.nets, *net).cloned() else {
                    return;
                };
                let vnic = if *direct { "direct" } else { "normal" };
                let b = obj(json!({"network_id": net, "binding:host_id": HOSTS[*host],
                    "binding:vnic_type": vnic, "device_owner": "compute:nova"}));
                if let Some(id) = self.txn(|ml2, st, ctx| ops::ports::create(ml2, st, ctx, &b)) {
                    self.ports.push(id);
                }
            }
            Op::DeletePort(i) => {
                if let Some(id) = Self::pick(&self.ports, *i).cloned() {
                    self.txn(|_, st, ctx| ops::ports::delete(st, ctx, &id));
                    self.ports.retain(|p| *p != id);
                }
            }
            Op::AdminState(i, up) => {
                if let Some(id) = Self::pick(&self.ports, *i).cloned() {
                    let b = obj(json!({"admin_state_up": up}));
                    self.txn(|ml2, st, ctx| ops::ports::update(ml2, st, ctx, &id, &b));
                }
            }
            Op::Rebind(i, h) => {
                if let Some(id) = Self::pick(&self.ports, *i).cloned() {
                    let b = obj(json!({"binding:host_id": HOSTS[*h]}));
                    self.txn(|ml2, st, ctx| ops::ports::update(ml2, st, ctx, &id, &b));
                }
            }
            Op::Migrate(i, h) => {
                let Some(id) = Self::pick(&self.ports, *i).cloned() else {
                    return;
                };
                let dest = HOSTS[*h];
                let b = obj(json!({"host": dest}));
                if self
                    .txn(|ml2, st, ctx| ops::bindings::create(ml2, st, ctx, &id, &b))
                    .is_none()
                {
                    return;
                }
                let source = self
                    .st
                    .ports
                    .get(&id)
                    .map(|p| p.active_binding().host.clone());
                self.txn(|_, st, ctx| ops::bindings::activate(st, ctx, &id, dest));
                if let Some(source) = source {
                    self.txn(|_, st, ctx| ops::bindings::delete(st, ctx, &id, &source));
                }
            }
            Op::Register(i) => {
                self.running.insert(*i);
                self.report(*i);
            }
            Op::DeleteAgent(h) => {
                let ids: Vec<String> = self
                    .st
                    .agents
                    .values()
                    .filter(|a| a.host == HOSTS[*h])
                    .map(|a| a.id.clone())
                    .collect();
                for id in ids {
                    self.txn(|_, st, ctx| ops::agents::delete(st, ctx, &id));
                }
            }
            Op::DisableGateway(g, up) => {
                let id = self
                    .st
                    .agents
                    .values()
                    .find(|a| a.host == HOSTS[*g])
                    .map(|a| a.id.clone());
                if let Some(id) = id {
                    let b = obj(json!({"admin_state_up": up}));
                    self.txn(|_, st, ctx| ops::agents::update(st, ctx, &id, &b));
                }
            }
            Op::Stop(i) => {
                self.running.remove(i);
            }
            Op::Start(i) => {
                self.running.insert(*i);
                self.report(*i);
            }
            Op::Tick => {
                self.t += 30;
                let running: Vec<usize> = self.running.iter().copied().collect();
                for i in running {
                    // Only agents whose record exists heartbeat into it (a
                    // deleted one re-registers through Register/Start).
                    let (host, ty, _) = AGENTS[i];
                    if self.st.agent_by_type_host(ty, host).is_some() {
                        self.report(i);
                    }
                }
                // Time passing alone changes liveness: the edge's tick.
                let live = self.live();
                self.compiler.set_liveness(&self.st, &live);
            }
            Op::Failover => {
                let ml2 = Ml2::with_seed(&Ml2Config::default(), 11).expect("ml2");
                self.txn(|_, st, ctx| ops::routers::reschedule_stranded(&ml2, st, ctx));
            }
            Op::Router(n) => {
                let Some(net) = Self::pick(&self.nets, *n).cloned() else {
                    return;
                };
                let Some(sub) = self.st.network_subnets(&net).first().map(|s| s.id.clone()) else {
                    return;
                };
                let public = self.public.clone();
                if let Some(r) = self.txn(|ml2, st, ctx| {
                    let r = ops::routers::create(
                        ml2,
                        st,
                        ctx,
                        &obj(json!({"name": "r", "external_gateway_info": {"network_id": public}})),
                    )?;
                    ops::routers::add_interface(ml2, st, ctx, &r, &obj(json!({"subnet_id": sub})))?;
                    Ok(r)
                }) {
                    self.routers.push(r);
                }
            }
            Op::RemoveInterface(r) => {
                let Some(rid) = Self::pick(&self.routers, *r).cloned() else {
                    return;
                };
                let port = self
                    .st
                    .router_interfaces(&rid)
                    .first()
                    .map(|p| p.id.clone());
                if let Some(port) = port {
                    let b = obj(json!({"port_id": port}));
                    self.txn(|ml2, st, ctx| ops::routers::remove_interface(ml2, st, ctx, &rid, &b));
                }
            }
            Op::DeleteRouter(r) => {
                let Some(rid) = Self::pick(&self.routers, *r).cloned() else {
                    return;
                };
                let ifaces: Vec<String> = self
                    .st
                    .router_interfaces(&rid)
                    .iter()
                    .map(|p| p.id.clone())
                    .collect();
                let fips: Vec<String> = self
                    .st
                    .router_floatingips(&rid)
                    .iter()
                    .map(|f| f.id.clone())
                    .collect();
                self.txn(|ml2, st, ctx| {
                    for f in &fips {
                        ops::floatingips::delete(st, ctx, f)?;
                    }
                    for p in &ifaces {
                        let b = obj(json!({"port_id": p}));
                        ops::routers::remove_interface(ml2, st, ctx, &rid, &b)?;
                    }
                    ops::routers::delete(ml2, st, ctx, &rid)
                });
                self.routers.retain(|r| *r != rid);
            }
            Op::Group => {
                let b = obj(json!({"name": format!("g{}", self.groups.len())}));
                if let Some(id) = self.txn(|_, st, ctx| ops::secgroups::create_group(st, ctx, &b)) {
                    self.groups.push(id);
                }
            }
            Op::GroupRule(g, remote) => {
                if let Some(group) = Self::pick(&self.groups, *g).cloned() {
                    let mut b = obj(json!({"security_group_id": group, "direction": "ingress",
                        "protocol": "tcp", "port_range_min": 22 + self.t as u64 % 100, "port_range_max": 200}));
                    match remote.and_then(|r| Self::pick(&self.groups, r).cloned()) {
                        Some(r) => {
                            b.insert("remote_group_id".into(), json!(r));
                        }
                        None => {
                            b.insert("remote_ip_prefix".into(), json!("192.0.2.0/24"));
                        }
                    }
                    self.txn(|_, st, ctx| ops::secgroups::create_rule(st, ctx, &b));
                }
            }
            Op::DeleteGroupRule(i) => {
                let rules: Vec<String> = self.st.security_group_rules.keys().cloned().collect();
                if let Some(id) = Self::pick(&rules, *i).cloned() {
                    self.txn(|_, st, ctx| ops::secgroups::delete_rule(st, ctx, &id));
                }
            }
            Op::Join(p, g) => {
                // Membership set on the model directly: the port API does not
                // take security groups yet.
                if let Some(id) = Self::pick(&self.ports, *p).cloned() {
                    let groups: Vec<String> = g
                        .and_then(|g| Self::pick(&self.groups, g).cloned())
                        .into_iter()
                        .collect();
                    self.edit_port(&id, |port| port.security_groups = groups);
                }
            }
            Op::PortSecurity(p, on) => {
                if let Some(id) = Self::pick(&self.ports, *p).cloned() {
                    let on = *on;
                    self.edit_port(&id, |port| {
                        port.port_security_enabled = on;
                        if !on {
                            port.security_groups.clear();
                        }
                    });
                }
            }
            Op::Pairs(p, on) => {
                if let Some(id) = Self::pick(&self.ports, *p).cloned() {
                    let pairs = if *on {
                        json!([{"ip_address": "198.51.100.0/28"}, {"ip_address": "10.0.0.77"}])
                    } else {
                        json!([])
                    };
                    let b = obj(json!({"allowed_address_pairs": pairs}));
                    self.txn(|ml2, st, ctx| ops::ports::update(ml2, st, ctx, &id, &b));
                }
            }
            Op::NewAddress(p) => {
                let Some(id) = Self::pick(&self.ports, *p).cloned() else {
                    return;
                };
                let Some(sub) = self
                    .st
                    .ports
                    .get(&id)
                    .and_then(|port| port.fixed_ips.first().map(|f| f.subnet_id.clone()))
                else {
                    return;
                };
                let b = obj(json!({"fixed_ips": [{"subnet_id": sub}]}));
                self.txn(|ml2, st, ctx| ops::ports::update(ml2, st, ctx, &id, &b));
            }
            Op::FloatingIp(p) => {
                let Some(port) = Self::pick(&self.ports, *p).cloned() else {
                    return;
                };
                let public = self.public.clone();
                let b = obj(json!({"floating_network_id": public, "port_id": port}));
                self.txn(|ml2, st, ctx| ops::floatingips::create(ml2, st, ctx, &b));
            }
        }
    }

    /// Group `g`'s members' addresses, from the model: fixed IPs and
    /// allowed address pairs, sorted, once each.
    fn members(&self, g: &str) -> Vec<(IpAddr, u8)> {
        let mut v = Vec::new();
        for p in self.st.ports.values() {
            if !p.security_groups.iter().any(|x| x == g) {
                continue;
            }
            for f in &p.fixed_ips {
                v.push((f.ip_address, if f.ip_address.is_ipv4() { 32 } else { 128 }));
            }
            for pair in &p.allowed_address_pairs {
                let (a, len) = pair
                    .ip_address
                    .split_once('/')
                    .unwrap_or((&pair.ip_address, "32"));
                if let (Ok(a), Ok(len)) = (a.parse(), len.parse()) {
                    v.push((a, len));
                }
            }
        }
        v.sort();
        v.dedup();
        v
    }

    /// On every node: a member set exactly for each group its filters name,
    /// holding the group's members now; filters carry no member addresses.
    fn check_member_sets(&self, step: usize, op: &Op) -> Result<(), TestCaseError> {
        for h in HOSTS {
            let items = self
                .compiler
                .snapshot(h)
                .map(|(_, i)| i)
                .unwrap_or_default();
            let mut named = BTreeSet::new();
            for item in items.values() {
                if let Item::PortFilter { rules, .. } = &**item {
                    for r in rules.iter() {
                        if let Some(g) = &r.remote_group {
                            prop_assert_eq!(
                                r.remote.as_deref(),
                                Some(&[][..]),
                                "step {} ({:?}): {:?}",
                                step,
                                op,
                                r
                            );
                            named.insert(g.clone());
                        }
                    }
                }
            }
            let mut held = BTreeSet::new();
            for (k, item) in &items {
                let Some(g) = k.strip_prefix("sgm/") else {
                    continue;
                };
                let Item::GroupMembers { group_id, addrs } = &**item else {
                    return Err(TestCaseError::fail(format!("{k} is {item:?}")));
                };
                prop_assert_eq!(group_id.as_str(), g);
                prop_assert_eq!(
                    addrs,
                    &self.members(g),
                    "after step {} ({:?}), {}: {}",
                    step,
                    op,
                    h,
                    k
                );
                held.insert(g.to_string());
            }
            prop_assert_eq!(named, held, "after step {} ({:?}), {}", step, op, h);
        }
        Ok(())
    }

    /// Applies the first `n` changes of the late compiler's backlog to it,
    /// against the model as it is now (as the catch-up does).
    fn catch_up(&mut self, n: usize) {
        let live = self.live();
        if let Some((c, backlog)) = &mut self.late {
            let n = n.min(backlog.len());
            c.apply(&self.st, &backlog[..n], &live);
            backlog.drain(..n);
        }
    }

    fn check(&self, step: usize, op: &Op) -> Result<(), TestCaseError> {
        self.check_member_sets(step, op)?;
        self.check_compiler(&self.compiler, step, op)
    }

    fn check_compiler(&self, c: &Compiler, step: usize, op: &Op) -> Result<(), TestCaseError> {
        let full = Compiler::full(&self.st, &self.live());
        for h in HOSTS {
            let inc: Items = c.snapshot(h).map(|(_, i)| i).unwrap_or_default();
            let want: Items = full.snapshot(h).map(|(_, i)| i).unwrap_or_default();
            if inc != want {
                let extra: Vec<&String> = inc
                    .iter()
                    .filter(|(k, v)| want.get(*k) != Some(v))
                    .map(|(k, _)| k)
                    .collect();
                let missing: Vec<&String> = want
                    .iter()
                    .filter(|(k, v)| inc.get(*k) != Some(v))
                    .map(|(k, _)| k)
                    .collect();
                return Err(TestCaseError::fail(format!(
                    "after step {step} ({op:?}), {h}: incremental has {extra:?} that a full compile has not, and lacks {missing:?}"
                )));
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn incremental_equals_full_under_api_and_agent_events(ops in proptest::collection::vec(op(), 1..60)) {
        let mut w = World::new();
        w.check(0, &Op::Tick)?;
        for (i, op) in ops.iter().enumerate() {
            w.step(op);
            w.check(i + 1, op)?;
        }
    }

    /// A compiler started from a full compile of the model as it was at
    /// some step, then given the changes committed since in slices of any
    /// size against the model as it is when each slice is applied (a
    /// restarted controller's catch-up, with writes going on), ends in the
    /// state a full compile of the final model gives.
    #[test]
    fn a_late_full_compile_catches_up_with_the_changes_made_meanwhile(
        ops in proptest::collection::vec(op(), 1..60),
        start in 0usize..60,
        slices in proptest::collection::vec(0usize..6, 60),
    ) {
        let mut w = World::new();
        let start = start % ops.len();
        for (i, op) in ops.iter().enumerate() {
            if i == start {
                w.late = Some((Compiler::full(&w.st, &w.live()), Vec::new()));
            }
            w.step(op);
            w.catch_up(slices[i]);
        }
        w.catch_up(usize::MAX);
        let live = w.live();
        let Some((mut late, _)) = w.late.take() else {
            return Err(TestCaseError::fail("no late compiler"));
        };
        late.caught_up(&w.st, &live);
        w.check_compiler(&late, ops.len(), &Op::Tick)?;
    }

    /// The same, weighted to security groups: rules from remote groups,
    /// members joining and leaving, their addresses changing, filters
    /// moving between nodes; every node holds exactly the member sets its
    /// filters name, current.
    #[test]
    fn member_sets_follow_groups_filters_and_addresses(ops in proptest::collection::vec(group_op(), 1..50)) {
        let mut w = World::new();
        w.step(&Op::Register(4));
        for op in [Op::Network, Op::Group, Op::Group, Op::GroupRule(0, Some(0))] {
            w.step(&op);
        }
        w.check(0, &Op::Tick)?;
        for (i, op) in ops.iter().enumerate() {
            w.step(op);
            w.check(i + 1, op)?;
        }
    }
}

/// The scenario of the fault report, by hand: compute-2's agent record is
/// deleted and its agent registers again with its heartbeat; the gateway and
/// the other vRouter get back every `remote/` item for compute-2's ports.
#[test]
fn a_deleted_agent_that_registers_again_gets_everything_back() {
    let mut w = World::new();
    w.step(&Op::Network);
    w.step(&Op::Register(3));
    for host in [0, 1, 1, 3, 2] {
        w.step(&Op::Port {
            net: 0,
            host,
            direct: host == 2,
        });
    }
    let before = w.compiler.snapshot("gateway").map(|(_, i)| i);
    w.step(&Op::DeleteAgent(1));
    w.check(1, &Op::DeleteAgent(1)).expect("after delete");
    w.step(&Op::Register(1));
    w.check(2, &Op::Register(1)).expect("after re-registration");
    assert_eq!(w.compiler.snapshot("gateway").map(|(_, i)| i), before);
}

fn bridge_vlan(w: &World, host: &str) -> Option<u16> {
    w.compiler.snapshot(host).and_then(|(_, items)| {
        items.values().find_map(|i| match &**i {
            Item::BridgeDomain { vlan, .. } => Some(*vlan),
            _ => None,
        })
    })
}

fn vtep_of_remote(w: &World, host: &str, mac: &str) -> Option<String> {
    w.compiler.snapshot(host).and_then(|(_, items)| {
        items.values().find_map(|i| match &**i {
            Item::RemoteMac { mac: m, vtep, .. } if m == mac => Some(vtep.to_string()),
            _ => None,
        })
    })
}

/// Two gateways: exactly one bridges the network's VLAN; when its agent dies
/// the other takes the VLAN side and the vRouters reach the OVS port through
/// it; a disabled gateway is not chosen; when the first comes back the
/// network is back where rendezvous hashing puts it, and nothing bridges twice.
#[test]
fn the_vlan_side_follows_live_gateways() {
    let mut w = World::new();
    w.step(&Op::Register(6));
    w.step(&Op::Network);
    w.step(&Op::Port {
        net: 0,
        host: 0,
        direct: false,
    });
    w.step(&Op::Port {
        net: 0,
        host: 1,
        direct: false,
    });
    let ovs_mac = w.st.ports[&w.ports[0]].mac_address.to_string();
    let bridging = |w: &World| -> Vec<&str> {
        ["gateway", "gateway-2"]
            .into_iter()
            .filter(|g| bridge_vlan(w, g).is_some_and(|v| v != 0))
            .collect()
    };
    let first = bridging(&w);
    assert_eq!(first.len(), 1, "exactly one gateway bridges the VLAN");
    let (dead, other, other_vtep) = if first[0] == "gateway" {
        (5, "gateway-2", "192.0.2.2")
    } else {
        (6, "gateway", "192.0.2.1")
    };
    w.step(&Op::Stop(dead));
    w.step(&Op::Tick);
    w.step(&Op::Tick);
    w.step(&Op::Tick);
    assert_eq!(bridging(&w), vec![other], "the live gateway took over");
    assert_eq!(
        vtep_of_remote(&w, "compute-2", &ovs_mac).as_deref(),
        Some(other_vtep),
        "the vRouter reaches the OVS port through the live gateway"
    );
    w.check(1, &Op::Tick).expect("same as full");
    // The live one disabled too: nobody bridges, the vRouter has no way to the VLAN side.
    w.step(&Op::DisableGateway(if dead == 5 { 6 } else { 5 }, false));
    assert!(bridging(&w).is_empty());
    assert_eq!(vtep_of_remote(&w, "compute-2", &ovs_mac), None);
    w.step(&Op::DisableGateway(if dead == 5 { 6 } else { 5 }, true));
    // The dead one comes back: the network returns to where hashing puts it.
    w.step(&Op::Start(dead));
    assert_eq!(bridging(&w), first);
    w.check(2, &Op::Start(dead)).expect("same as full");
}

/// A seed the property found: ports on compute-1 and compute-4, compute-4's
/// agent deleted and registered again, more ports on compute-1, then a port
/// rebound. Incremental must equal full at every step.
#[test]
fn ports_after_a_reregistered_agent_stay_in_step() {
    let mut w = World::new();
    let port = |host| Op::Port {
        net: 0,
        host,
        direct: false,
    };
    let mut ops = vec![Op::Network, port(0), port(0), Op::AdminState(0, false)];
    ops.extend([port(3), port(3), Op::DeleteAgent(3), port(0), port(0)]);
    ops.extend([
        Op::Register(3),
        port(0),
        port(0),
        port(0),
        Op::Rebind(11, 0),
    ]);
    w.check(0, &Op::Tick).expect("start");
    for (i, op) in ops.iter().enumerate() {
        w.step(op);
        w.check(i + 1, op).expect("incremental equals full");
    }
}

/// Security groups reach vRouters as `sg/` items: a member port's rules,
/// a remote group named, its members' addresses in the node's `sgm/` item
/// and kept current as members join and leave; port security off removes
/// the filter, and the set with it.
#[test]
fn security_group_filters_follow_membership() {
    let mut w = World::new();
    w.step(&Op::Network);
    w.step(&Op::Register(1));
    for _ in 0..3 {
        w.step(&Op::Port {
            net: 0,
            host: 1,
            direct: false,
        });
    }
    w.step(&Op::Group); // g0 (the default group is made first, not in `groups`)
    w.step(&Op::Group); // g1
    w.step(&Op::GroupRule(0, Some(1))); // g0 admits tcp from g1's members
    for p in 0..3 {
        w.step(&Op::Join(p, None));
    }
    w.step(&Op::Join(0, Some(0)));
    w.check(0, &Op::Tick).expect("in step");
    let g1 = w.groups[1].clone();
    let rules = |w: &World| -> Vec<switchyard_proto::FilterRule> {
        let id = &w.ports[0];
        w.compiler
            .snapshot("compute-2")
            .and_then(|(_, items)| items.get(&format!("sg/{id}")).map(|i| Item::clone(i)))
            .map(|i| match i {
                Item::PortFilter { rules, .. } => rules.to_vec(),
                other => panic!("{other:?}"),
            })
            .unwrap_or_default()
    };
    let from_g1 = |w: &World| {
        rules(w)
            .into_iter()
            .find(|r| r.ingress && r.protocol == Some(6))
            .map(|r| (r.remote, r.remote_group))
    };
    let g1_members = |w: &World| {
        w.compiler
            .snapshot("compute-2")
            .and_then(|(_, items)| items.get(&format!("sgm/{g1}")).map(|i| Item::clone(i)))
            .map(|i| match i {
                Item::GroupMembers { addrs, .. } => addrs,
                other => panic!("{other:?}"),
            })
    };
    assert_eq!(rules(&w).len(), 3, "two egress rules and the ingress one");
    assert_eq!(
        from_g1(&w),
        Some((Some(vec![]), Some(g1.clone()))),
        "names g1"
    );
    assert_eq!(g1_members(&w), Some(vec![]), "g1 has no members yet");
    // Port 1 joins g1: compute-2's set of g1 lists its address; port 0's
    // filter is unchanged.
    let filter = rules(&w);
    w.step(&Op::Join(1, Some(1)));
    w.check(1, &Op::Join(1, Some(1))).expect("in step");
    let ip = w.st.ports[&w.ports[1]].fixed_ips[0].ip_address;
    assert_eq!(g1_members(&w), Some(vec![(ip, 32)]));
    assert_eq!(rules(&w), filter);
    // Its allowed address pairs are members' addresses too.
    w.step(&Op::Pairs(1, true));
    w.check(2, &Op::Pairs(1, true)).expect("in step");
    let net = |a: &str, len| (a.parse::<IpAddr>().expect("ip"), len);
    let mut want = vec![(ip, 32), net("198.51.100.0", 28), net("10.0.0.77", 32)];
    want.sort();
    assert_eq!(g1_members(&w), Some(want));
    assert_eq!(rules(&w), filter);
    // It leaves again; port security off on port 0 removes its filter, and
    // the set no filter names any more.
    w.step(&Op::Join(1, None));
    assert_eq!(g1_members(&w), Some(vec![]));
    w.step(&Op::PortSecurity(0, false));
    w.check(3, &Op::PortSecurity(0, false)).expect("in step");
    assert!(rules(&w).is_empty());
    assert_eq!(g1_members(&w), None);
}

/// The keys of a delta's upserts and removals.
fn keys(d: &Delta) -> (Vec<String>, Vec<String>) {
    (d.upserts.keys().cloned().collect(), d.removals.clone())
}

/// One port joining a group whose rules name it changes that group's
/// member set, once per node that holds it, and nothing else: no filter,
/// no node without a filter naming the group. A node's set goes with its
/// last filter naming the group.
#[test]
fn a_join_rewrites_only_the_groups_member_set_where_it_is_named() {
    let mut w = World::new();
    w.step(&Op::Network);
    let port = |host, direct| Op::Port {
        net: 0,
        host,
        direct,
    };
    // p0 on compute-1 (OVS), p1 on compute-2 and p2 on compute-4
    // (vRouters), p3 on compute-3 (SR-IOV: never filtered), p4 on compute-2.
    for op in [
        port(0, false),
        port(1, false),
        port(3, false),
        port(2, true),
        port(1, false),
    ] {
        w.step(&op);
    }
    w.step(&Op::Group); // g0: admits tcp from its own members
    w.step(&Op::Group); // g1: egress rules only
    w.step(&Op::GroupRule(0, Some(0)));
    // p0 and p1 in g0; p2, p3 and p4 in g1 (out of the default group).
    for (p, g) in [(0, 0), (1, 0), (2, 1), (3, 1), (4, 1)] {
        w.step(&Op::Join(p, Some(g)));
    }
    w.check(0, &Op::Tick).expect("in step");
    let g0 = w.groups[0].clone();
    let key = format!("sgm/{g0}");
    let holders = |w: &World| -> Vec<&str> {
        HOSTS
            .into_iter()
            .filter(|h| {
                w.compiler
                    .snapshot(h)
                    .is_some_and(|(_, items)| items.contains_key(&key))
            })
            .collect()
    };
    assert_eq!(holders(&w), vec!["compute-1", "compute-2"]);

    // p3 (SR-IOV, no filter of its own) joins g0: only g0's set changes,
    // on compute-1 and compute-2; compute-4 (a filter, none naming g0)
    // and every other node get nothing.
    w.step(&Op::Join(3, Some(0)));
    w.check(1, &Op::Join(3, Some(0))).expect("in step");
    assert_eq!(
        w.deltas.keys().map(String::as_str).collect::<Vec<_>>(),
        vec!["compute-1", "compute-2"]
    );
    for d in w.deltas.values() {
        assert_eq!(keys(d), (vec![key.clone()], vec![]));
        let Some(Item::GroupMembers { addrs, .. }) = d.upserts.get(&key).map(|i| &**i) else {
            panic!("{d:?}");
        };
        let ip = w.st.ports[&w.ports[3]].fixed_ips[0].ip_address;
        assert!(addrs.contains(&(ip, 32)), "{addrs:?}");
        assert_eq!(addrs.len(), 3);
    }

    // p4 on compute-2 joins g0: its own filter changes there, and g0's set
    // on both holders; still nothing elsewhere.
    w.step(&Op::Join(4, Some(0)));
    w.check(2, &Op::Join(4, Some(0))).expect("in step");
    let p4 = format!("sg/{}", w.ports[4]);
    assert_eq!(
        w.deltas.keys().map(String::as_str).collect::<Vec<_>>(),
        vec!["compute-1", "compute-2"]
    );
    assert_eq!(keys(&w.deltas["compute-1"]), (vec![key.clone()], vec![]));
    let (mut ups, rems) = keys(&w.deltas["compute-2"]);
    ups.sort();
    let mut want = vec![key.clone(), p4];
    want.sort();
    assert_eq!((ups, rems), (want, vec![]));

    // p0, compute-1's only filter naming g0, leaves: compute-1 loses its
    // filter and the set; compute-2's set loses p0's address.
    w.step(&Op::Join(0, None));
    w.check(3, &Op::Join(0, None)).expect("in step");
    let d1 = &w.deltas["compute-1"];
    assert!(d1.removals.contains(&key), "{d1:?}");
    assert!(!d1.upserts.contains_key(&key));
    assert_eq!(keys(&w.deltas["compute-2"]), (vec![key.clone()], vec![]));
    assert_eq!(holders(&w), vec!["compute-2"]);
}

/// A live migration's destination holds the port's filter (and the member
/// sets its rules name) while the binding there is still INACTIVE, before
/// the VM arrives; activation leaves it there and takes it from the source.
#[test]
fn a_migration_destination_holds_the_filter_before_activation() {
    let mut w = World::new();
    w.step(&Op::Network);
    for h in [1, 3] {
        w.step(&Op::Register(h));
    }
    w.step(&Op::Port {
        net: 0,
        host: 1,
        direct: false,
    });
    w.step(&Op::Group);
    w.step(&Op::GroupRule(0, Some(0)));
    w.step(&Op::Join(0, Some(0)));
    w.check(0, &Op::Tick).expect("in step");
    let id = w.ports[0].clone();
    let (src, dst) = (HOSTS[1], HOSTS[3]);
    let key = format!("sg/{id}");
    let has = |w: &World, host: &str, k: &str| {
        w.compiler
            .snapshot(host)
            .is_some_and(|(_, items)| items.contains_key(k))
    };
    assert!(has(&w, src, &key) && !has(&w, dst, &key));
    let b = obj(json!({"host": dst}));
    w.txn(|ml2, st, ctx| ops::bindings::create(ml2, st, ctx, &id, &b))
        .expect("destination binding");
    w.check(1, &Op::Tick).expect("in step");
    let g0 = w.groups[0].clone();
    assert!(has(&w, dst, &key), "the destination holds the filter");
    assert!(
        has(&w, dst, &format!("sgm/{g0}")),
        "and the set its rule names"
    );
    assert!(has(&w, src, &key), "the source keeps its own");
    w.txn(|_, st, ctx| ops::bindings::activate(st, ctx, &id, dst));
    w.txn(|_, st, ctx| ops::bindings::delete(st, ctx, &id, src));
    w.check(2, &Op::Tick).expect("in step");
    assert!(has(&w, dst, &key) && !has(&w, src, &key));
}
