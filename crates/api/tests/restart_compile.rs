//! A restarted controller compiles its model in the background while API
//! writes go on: nodes are sent nothing until the compile has caught up with
//! those writes, and what it then holds is what a restart with no writes
//! in between compiles.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use switchyard_api::nodeauth::NodeCredentials;
use switchyard_api::{Clock, Core, Shared};
use switchyard_ml2::{Ctx, Ml2, Ml2Config, ops};
use switchyard_model::Timestamp;
use switchyard_proto::Items;
use switchyard_store::{Durability, SqliteStore};

const HOSTS: [&str; 4] = ["gateway", "compute-1", "compute-2", "compute-3"];

struct Fixed(Timestamp);

impl Clock for Fixed {
    fn now(&self) -> Timestamp {
        self.0
    }
}

fn now() -> Timestamp {
    chrono::DateTime::from_timestamp(1_800_000_000, 0).expect("time")
}

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

fn open(path: &Path) -> (Shared, Option<switchyard_api::core::FirstCompile>) {
    let cfg = Ml2Config {
        network_vlan_ranges: vec!["physnet1:100:199".into()],
        ..Ml2Config::default()
    };
    let store = SqliteStore::open(path, Durability::Process).expect("store");
    let core = Core::open(Ml2::with_seed(&cfg, 3).expect("ml2"), store, now()).expect("core");
    Shared::deferred(core, Arc::new(Fixed(now())), NodeCredentials::in_memory())
}

fn write<T>(
    shared: &Shared,
    op: impl FnOnce(&Ml2, &mut switchyard_model::State, &Ctx) -> switchyard_model::Result<T>,
) -> T {
    let ctx = Ctx::admin("p", now());
    shared
        .write(&ctx, op, |_, _, r| Ok(r))
        .expect("the write is accepted")
}

fn port(shared: &Shared, net: &str, host: &str) -> String {
    let b =
        obj(json!({"network_id": net, "binding:host_id": host, "device_owner": "compute:nova"}));
    write(shared, |ml2, st, ctx| ops::ports::create(ml2, st, ctx, &b))
}

fn wait_compiled(shared: &Shared) {
    let start = Instant::now();
    while !*shared.compiled.borrow() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the compile never caught up"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn desired(shared: &Shared) -> BTreeMap<&'static str, Items> {
    HOSTS
        .iter()
        .map(|h| (*h, shared.snapshot(h).expect("compiled").1))
        .collect()
}

#[test]
fn writes_made_during_the_first_compile_reach_the_nodes() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("db");
    let (net, vlan_net, ports) = {
        let (shared, first) = open(&path);
        first.expect("a first compile").start();
        for (host, ty, conf) in [
            (
                "gateway",
                "Gateway agent",
                json!({"tunneling_ip": "192.0.2.1", "bridge_mappings": {"physnet1": "br-phys"}}),
            ),
            (
                "compute-1",
                "vRouter agent",
                json!({"tunneling_ip": "192.0.2.11"}),
            ),
            (
                "compute-2",
                "vRouter agent",
                json!({"tunneling_ip": "192.0.2.12"}),
            ),
            (
                "compute-3",
                "Open vSwitch agent",
                json!({"bridge_mappings": {"physnet1": "br-phys"}}),
            ),
        ] {
            let b = obj(json!({"host": host, "agent_type": ty, "configurations": conf}));
            write(&shared, |_, st, ctx| ops::agents::report_state(st, ctx, &b));
        }
        let mut nets = Vec::new();
        for (name, extra) in [
            ("overlay", json!({})),
            (
                "vlan",
                json!({"provider:network_type": "vlan", "provider:physical_network": "physnet1"}),
            ),
        ] {
            let mut b = obj(json!({"name": name}));
            b.extend(obj(extra));
            let id = write(&shared, |ml2, st, ctx| {
                ops::networks::create(ml2, st, ctx, &b)
            });
            let cidr = format!("10.{}.0.0/20", nets.len() * 16);
            let sb = obj(json!({"network_id": id, "cidr": cidr, "ip_version": 4}));
            write(&shared, |_, st, ctx| ops::subnets::create(st, ctx, &sb));
            nets.push(id);
        }
        let ports: Vec<String> = ["compute-1", "compute-2", "compute-1"]
            .iter()
            .map(|h| port(&shared, &nets[0], h))
            .collect();
        port(&shared, &nets[1], "compute-3");
        wait_compiled(&shared);
        (nets[0].clone(), nets[1].clone(), ports)
    };

    // The restart: writes go on before the compile has even started.
    let during = {
        let (shared, first) = open(&path);
        assert!(!*shared.compiled.borrow());
        assert!(
            shared.snapshot("compute-1").is_none(),
            "nothing is served before the compile"
        );
        let moved = port(&shared, &net, "compute-2");
        port(&shared, &vlan_net, "compute-3");
        write(&shared, |_, st, ctx| ops::ports::delete(st, ctx, &ports[0]));
        let b = obj(json!({"binding:host_id": "compute-1"}));
        write(&shared, |ml2, st, ctx| {
            ops::ports::update(ml2, st, ctx, &moved, &b)
        });
        // Enough for the catch-up to take several slices of the lock.
        for i in 0..300 {
            port(&shared, &net, HOSTS[1 + i % 2]);
        }
        first.expect("a first compile").start();
        // And while it runs.
        let late = port(&shared, &net, "compute-1");
        wait_compiled(&shared);
        let d = desired(&shared);
        assert!(
            d["compute-1"].contains_key(&format!("iface/{late}")),
            "a port made while compiling is compiled"
        );
        assert!(
            !d["compute-1"].contains_key(&format!("iface/{}", ports[0])),
            "a port deleted before the compile started is gone"
        );
        assert!(
            d["compute-1"].contains_key(&format!("iface/{moved}")),
            "a port moved before the compile started is where it went"
        );
        d
    };

    // What a restart with no writes in between compiles.
    let (shared, first) = open(&path);
    first.expect("a first compile").start();
    wait_compiled(&shared);
    assert_eq!(desired(&shared), during);
}
