//! Helpers shared by the ML2 integration tests: a virtual clock, JSON bodies,
//! agent registration, transactional wrappers and state snapshots / index checks.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use chrono::{Duration, TimeZone, Utc};
use serde_json::{Map, Value, json};
use switchyard_ml2::ops::{agents, networks, ports, subnets};
use switchyard_ml2::{Ctx, Ml2, Ml2Config};
use switchyard_model::{
    AGENT_TYPE_OVS, AGENT_TYPE_SRIOV, AGENT_TYPE_VROUTER, Agent, Mac, Network, NetworkType,
    NeutronError, Port, Record, SegKey, Segment, State, Subnet, Timestamp, state::seg_alloc_key,
};

pub const PROJECT: &str = "0f4a8c7e1d2b4e6f8a9b0c1d2e3f4a5b";
pub const PHYSNET: &str = "physnet1";

/// A hand-driven clock: nothing here ever reads the wall clock.
#[derive(Debug, Clone, Copy)]
pub struct Clock(pub Timestamp);

impl Clock {
    pub fn new() -> Self {
        Clock(
            Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0)
                .single()
                .expect("valid start time"),
        )
    }
    pub fn now(&self) -> Timestamp {
        self.0
    }
    pub fn advance(&mut self, secs: i64) {
        self.0 += Duration::seconds(secs);
    }
    pub fn ctx(&self) -> Ctx {
        Ctx::admin(PROJECT, self.0)
    }
}

pub fn ml2() -> Ml2 {
    ml2_with(Ml2Config::default())
}

pub fn ml2_with(cfg: Ml2Config) -> Ml2 {
    Ml2::with_seed(&cfg, 42).expect("valid ml2 config")
}

/// A JSON object literal as a body map.
pub fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

/// Runs `f` inside a transaction: commit on success, rollback on error (as the API does).
pub fn txn<T>(
    st: &mut State,
    f: impl FnOnce(&mut State) -> Result<T, NeutronError>,
) -> Result<T, NeutronError> {
    st.begin();
    let r = f(st);
    match &r {
        Ok(_) => {
            st.commit();
        }
        Err(_) => st.rollback(),
    }
    r
}

pub fn report(st: &mut State, clock: &Clock, host: &str, agent_type: &str, conf: Value) -> String {
    let ctx = clock.ctx();
    txn(st, |st| {
        agents::report_state(
            st,
            &ctx,
            &obj(json!({"host": host, "agent_type": agent_type, "configurations": conf})),
        )
    })
    .expect("report_state")
}

pub fn report_ovs(st: &mut State, clock: &Clock, host: &str) -> String {
    report(
        st,
        clock,
        host,
        AGENT_TYPE_OVS,
        json!({"bridge_mappings": {PHYSNET: "br-phys"}}),
    )
}

pub fn report_sriov(st: &mut State, clock: &Clock, host: &str) -> String {
    report(
        st,
        clock,
        host,
        AGENT_TYPE_SRIOV,
        json!({"device_mappings": {PHYSNET: ["eth1"]}}),
    )
}

pub fn report_vrouter(st: &mut State, clock: &Clock, host: &str) -> String {
    report(st, clock, host, AGENT_TYPE_VROUTER, json!({}))
}

pub fn create_network(
    ml2: &Ml2,
    st: &mut State,
    ctx: &Ctx,
    body: Value,
) -> Result<String, NeutronError> {
    txn(st, |st| networks::create(ml2, st, ctx, &obj(body)))
}

pub fn net(ml2: &Ml2, st: &mut State, ctx: &Ctx) -> String {
    create_network(ml2, st, ctx, json!({"name": "net"})).expect("create network")
}

pub fn delete_network(ml2: &Ml2, st: &mut State, ctx: &Ctx, id: &str) -> Result<(), NeutronError> {
    txn(st, |st| networks::delete(ml2, st, ctx, id))
}

pub fn create_subnet(st: &mut State, ctx: &Ctx, network_id: &str, cidr: &str) -> String {
    txn(st, |st| {
        subnets::create(
            st,
            ctx,
            &obj(json!({"network_id": network_id, "ip_version": 4, "cidr": cidr})),
        )
    })
    .expect("create subnet")
}

pub fn create_port(
    ml2: &Ml2,
    st: &mut State,
    ctx: &Ctx,
    body: Value,
) -> Result<String, NeutronError> {
    txn(st, |st| ports::create(ml2, st, ctx, &obj(body)))
}

/// A port bound to `host` with the given vnic type.
pub fn port_on(
    ml2: &Ml2,
    st: &mut State,
    ctx: &Ctx,
    network_id: &str,
    host: &str,
    vnic: &str,
) -> String {
    create_port(
        ml2,
        st,
        ctx,
        json!({
            "network_id": network_id,
            "binding:host_id": host,
            "binding:vnic_type": vnic,
            "device_owner": "compute:nova",
        }),
    )
    .expect("create port")
}

pub fn update_port(
    ml2: &Ml2,
    st: &mut State,
    ctx: &Ctx,
    id: &str,
    body: Value,
) -> Result<(), NeutronError> {
    txn(st, |st| ports::update(ml2, st, ctx, id, &obj(body)))
}

pub fn delete_port(st: &mut State, ctx: &Ctx, id: &str) -> Result<(), NeutronError> {
    txn(st, |st| ports::delete(st, ctx, id))
}

pub fn port<'s>(st: &'s State, id: &str) -> &'s Port {
    st.ports.get(id).expect("port exists")
}

pub fn vif_type(st: &State, id: &str) -> String {
    port(st, id).active_binding().vif_type.clone()
}

/// The dynamic segments of a network.
pub fn dynamic_segments(st: &State, network_id: &str) -> Vec<Segment> {
    st.network_segments(network_id)
        .into_iter()
        .filter(|s| s.is_dynamic)
        .cloned()
        .collect()
}

/// The static segment of a single-segment network.
pub fn static_segment(st: &State, network_id: &str) -> Segment {
    let v: Vec<&Segment> = st
        .network_segments(network_id)
        .into_iter()
        .filter(|s| !s.is_dynamic)
        .collect();
    assert_eq!(v.len(), 1, "one static segment expected");
    v[0].clone()
}

pub fn vlan_holder(st: &State, vlan: u32) -> Option<String> {
    st.segment_holder(SegKey::Vlan(PHYSNET, vlan))
        .map(str::to_string)
}

pub fn assert_err(r: Result<impl std::fmt::Debug, NeutronError>, status: u16, kind: &str) {
    match r {
        Ok(v) => panic!("expected {status} {kind}, got Ok({v:?})"),
        Err(e) => {
            assert_eq!((e.status, e.kind.as_str()), (status, kind), "error: {e}");
        }
    }
}

/// Every table of a state, comparable.
#[derive(Debug, Clone, PartialEq)]
pub struct Tables {
    pub networks: BTreeMap<String, Network>,
    pub segments: BTreeMap<String, Segment>,
    pub subnets: BTreeMap<String, Subnet>,
    pub ports: BTreeMap<String, Port>,
    pub agents: BTreeMap<String, Agent>,
}

pub fn tables(st: &State) -> Tables {
    Tables {
        networks: st.networks.clone(),
        segments: st.segments.clone(),
        subnets: st.subnets.clone(),
        ports: st.ports.clone(),
        agents: st.agents.clone(),
    }
}

pub fn records(st: &State) -> Vec<Record> {
    let mut v = Vec::new();
    v.extend(st.networks.values().cloned().map(Record::Network));
    v.extend(st.segments.values().cloned().map(Record::Segment));
    v.extend(st.subnets.values().cloned().map(Record::Subnet));
    v.extend(st.ports.values().cloned().map(Record::Port));
    v.extend(st.agents.values().cloned().map(Record::Agent));
    v
}

/// Keys ever seen during a test, so index checks also cover what was removed
/// or rolled back (a stale index entry for a vanished record is a bug too).
#[derive(Debug, Default, Clone)]
pub struct Universe {
    pub networks: BTreeSet<String>,
    pub subnets: BTreeSet<String>,
    pub ips: BTreeSet<IpAddr>,
    pub macs: BTreeSet<Mac>,
    pub vlans: BTreeSet<u32>,
    pub vnis: BTreeSet<u32>,
    pub flats: BTreeSet<String>,
    pub agents: BTreeSet<(String, String)>,
}

impl Universe {
    /// Records every key the state currently holds (call it before a rollback too).
    pub fn observe(&mut self, st: &State) {
        self.networks.extend(st.networks.keys().cloned());
        for s in st.segments.values() {
            self.networks.insert(s.network_id.clone());
            match seg_alloc_key(s) {
                Some(SegKey::Vlan(_, v)) => {
                    self.vlans.insert(v);
                }
                Some(SegKey::Tunnel(NetworkType::Vxlan, v)) => {
                    self.vnis.insert(v);
                }
                Some(SegKey::Flat(p)) => {
                    self.flats.insert(p.to_string());
                }
                _ => {}
            }
        }
        for s in st.subnets.values() {
            self.subnets.insert(s.id.clone());
            self.networks.insert(s.network_id.clone());
            // Small subnets only: every address of the CIDR.
            if s.cidr.prefix_len() >= 24 && s.ip_version == 4 {
                self.ips.extend(s.cidr.hosts());
                self.ips.insert(s.cidr.network());
                self.ips.insert(s.cidr.broadcast());
            }
        }
        for p in st.ports.values() {
            self.networks.insert(p.network_id.clone());
            self.macs.insert(p.mac_address);
            for f in &p.fixed_ips {
                self.subnets.insert(f.subnet_id.clone());
                self.ips.insert(f.ip_address);
            }
        }
        for a in st.agents.values() {
            self.agents.insert((a.agent_type.clone(), a.host.clone()));
        }
    }
}

/// Asserts that every index query of `st` answers as a `State` rebuilt from its
/// records does, for every key in `u` (plus what `st` holds now).
pub fn assert_indexes_match_rebuild(st: &State, u: &Universe) {
    let mut u = u.clone();
    u.observe(st);
    let fresh = State::from_records(records(st));
    assert_eq!(tables(st), tables(&fresh));
    let ids = |v: Vec<&Segment>| v.into_iter().map(|s| s.id.clone()).collect::<Vec<_>>();
    for n in &u.networks {
        assert_eq!(
            ids(st.network_segments(n)),
            ids(fresh.network_segments(n)),
            "network_segments({n})"
        );
        let subs = |s: &State| {
            s.network_subnets(n)
                .into_iter()
                .map(|x| x.id.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(subs(st), subs(&fresh), "network_subnets({n})");
        let ports = |s: &State| s.network_port_ids(n).cloned().collect::<BTreeSet<_>>();
        assert_eq!(ports(st), ports(&fresh), "network_port_ids({n})");
        for m in &u.macs {
            assert_eq!(
                st.mac_holder(n, m),
                fresh.mac_holder(n, m),
                "mac_holder({n}, {m})"
            );
        }
    }
    for s in &u.subnets {
        let norm = |x: Option<&BTreeMap<IpAddr, String>>| x.cloned().unwrap_or_default();
        assert_eq!(
            norm(st.subnet_ips(s)),
            norm(fresh.subnet_ips(s)),
            "subnet_ips({s})"
        );
        for ip in &u.ips {
            assert_eq!(
                st.ip_holder(s, ip),
                fresh.ip_holder(s, ip),
                "ip_holder({s}, {ip})"
            );
        }
    }
    for v in u.vlans.iter().copied().chain(1..=300) {
        let k = SegKey::Vlan(PHYSNET, v);
        assert_eq!(st.segment_holder(k), fresh.segment_holder(k), "vlan {v}");
    }
    for v in u.vnis.iter().copied().chain(990..=1030) {
        let k = SegKey::Tunnel(NetworkType::Vxlan, v);
        assert_eq!(st.segment_holder(k), fresh.segment_holder(k), "vni {v}");
    }
    for p in u.flats.iter().map(String::as_str).chain([PHYSNET]) {
        let k = SegKey::Flat(p);
        assert_eq!(st.segment_holder(k), fresh.segment_holder(k), "flat {p}");
    }
    for (t, h) in &u.agents {
        assert_eq!(
            st.agent_by_type_host(t, h).map(|a| &a.id),
            fresh.agent_by_type_host(t, h).map(|a| &a.id),
            "agent ({t}, {h})"
        );
    }
}
