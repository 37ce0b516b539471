//! The compiler against models built with the real ML2 operations.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};
use switchyard_controller::{Compiler, Liveness};
use switchyard_ml2::{Ctx, Ml2, Ml2Config, ops};
use switchyard_model::{Change, State};
use switchyard_proto::{Attachment, Delta, Item};

struct Model {
    ml2: Ml2,
    st: State,
    ctx: Ctx,
}

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().cloned().expect("object")
}

impl Model {
    fn new() -> Self {
        let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).expect("time");
        Model {
            ml2: Ml2::with_seed(&Ml2Config::default(), 7).expect("ml2"),
            st: State::new(),
            ctx: Ctx::admin("p", now),
        }
    }

    /// Runs one transaction and returns its committed changes.
    fn txn<T>(&mut self, f: impl FnOnce(&Ml2, &mut State, &Ctx) -> T) -> (T, Vec<Change>) {
        self.st.begin();
        let r = f(&self.ml2, &mut self.st, &self.ctx);
        (r, self.st.commit())
    }

    fn agent(&mut self, host: &str, agent_type: &str, conf: Value) -> Vec<Change> {
        let body = obj(json!({"host": host, "agent_type": agent_type, "configurations": conf}));
        self.txn(|_, st, ctx| ops::agents::report_state(st, ctx, &body).expect("report"))
            .1
    }

    fn lab_agents(&mut self) {
        self.agent(
            "compute-1",
            "Open vSwitch agent",
            json!({"bridge_mappings": {"physnet1": "br-phys"}}),
        );
        self.agent(
            "compute-2",
            "vRouter agent",
            json!({"tunneling_ip": "192.0.2.12"}),
        );
        self.agent(
            "compute-3",
            "NIC Switch agent",
            json!({"device_mappings": {"physnet1": ["eth1"]}}),
        );
        self.agent(
            "compute-4",
            "vRouter agent",
            json!({"tunneling_ip": "192.0.2.14"}),
        );
        self.agent(
            "gateway",
            "Gateway agent",
            json!({"tunneling_ip": "192.0.2.1"}),
        );
    }

    fn network(&mut self, cidr: &str) -> String {
        let (id, _) = self.txn(|ml2, st, ctx| {
            ops::networks::create(ml2, st, ctx, &obj(json!({"name": "n"}))).expect("network")
        });
        let b = obj(json!({"network_id": id, "cidr": cidr, "ip_version": 4}));
        self.txn(|_, st, ctx| ops::subnets::create(st, ctx, &b).expect("subnet"));
        id
    }

    fn port(&mut self, net: &str, host: &str, vnic: &str) -> (String, Vec<Change>) {
        let b = obj(
            json!({"network_id": net, "binding:host_id": host, "binding:vnic_type": vnic, "device_owner": "compute:nova"}),
        );
        self.txn(|ml2, st, ctx| ops::ports::create(ml2, st, ctx, &b).expect("port"))
    }

    fn delete_port(&mut self, id: &str) -> Vec<Change> {
        self.txn(|_, st, ctx| ops::ports::delete(st, ctx, id).expect("delete"))
            .1
    }
}

fn items(c: &Compiler, host: &str) -> BTreeMap<String, Item> {
    c.snapshot(host)
        .map(|(_, i)| i)
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, Item::clone(&v)))
        .collect()
}

#[test]
fn reference_network_compiles_to_every_backend() {
    let mut m = Model::new();
    m.lab_agents();
    let net = m.network("50.50.50.0/24");
    let (p_ovs, _) = m.port(&net, "compute-1", "normal");
    let (p_vr, _) = m.port(&net, "compute-2", "normal");
    let (p_sriov, _) = m.port(&net, "compute-3", "direct");
    let c = Compiler::full(&m.st, &Liveness::all(&m.st));

    let c1 = items(&c, "compute-1");
    let Some(Item::Interface {
        attachment: Attachment::Ovs { vlan, physnet },
        lease: Some(lease),
        ..
    }) = c1.get(&format!("iface/{p_ovs}"))
    else {
        panic!("compute-1: {c1:?}");
    };
    assert_eq!(physnet, "physnet1");
    assert!((100..=199).contains(vlan));
    assert_eq!(
        lease.router.map(|r| r.to_string()).as_deref(),
        Some("50.50.50.1")
    );
    assert_eq!(lease.mtu, 1450);
    let c3 = items(&c, "compute-3");
    assert!(
        matches!(c3.get(&format!("iface/{p_sriov}")), Some(Item::Interface { attachment: Attachment::HwVeb { vlan: v, .. }, .. }) if v == vlan)
    );

    // The vRouter has the VRF, floods to the gateway, and reaches the VLAN side via the gateway.
    let c2 = items(&c, "compute-2");
    assert!(matches!(
        c2.get(&format!("iface/{p_vr}")),
        Some(Item::Interface {
            attachment: Attachment::Vrouter { vni: 1000 },
            ..
        })
    ));
    assert_eq!(
        c2.get("net/1000"),
        Some(&Item::Network {
            vni: 1000,
            flood: vec!["192.0.2.1".parse().expect("ip")]
        })
    );
    let remotes: Vec<(&String, &Item)> = c2
        .iter()
        .filter(|(k, _)| k.starts_with("remote/"))
        .collect();
    assert_eq!(remotes.len(), 2, "{remotes:?}");
    for (_, r) in remotes {
        assert!(matches!(r, Item::RemoteMac { vtep, .. } if vtep.to_string() == "192.0.2.1"));
    }
    // compute-4 has no port in the network: nothing about it.
    assert!(items(&c, "compute-4").is_empty());

    // The gateway stitches the VLAN to the VNI, answers DHCP on the VLAN side, and reaches the vRouter VM.
    let gw = items(&c, "gateway");
    assert_eq!(
        gw.get("bd/1000"),
        Some(&Item::BridgeDomain {
            vni: 1000,
            vlan: *vlan,
            physnet: "physnet1".into(),
            flood: vec!["192.0.2.12".parse().expect("ip")]
        })
    );
    assert_eq!(gw.keys().filter(|k| k.starts_with("dhcp/")).count(), 2);
    assert_eq!(gw.keys().filter(|k| k.starts_with("remote/")).count(), 1);
}

/// The nodes whose deltas change more than security-group member sets:
/// a port's sets (its project's default group's, say) reach every node
/// holding a filter that names one of its groups, whatever the network.
fn beyond_member_sets(d: &BTreeMap<String, Delta>) -> Vec<String> {
    d.iter()
        .filter(|(_, d)| !d.removals.is_empty() || d.upserts.keys().any(|k| !k.starts_with("sgm/")))
        .map(|(h, _)| h.clone())
        .collect()
}

#[test]
fn a_port_change_touches_only_the_nodes_it_concerns() {
    let mut m = Model::new();
    m.lab_agents();
    let net = m.network("50.50.50.0/24");
    let other = m.network("60.60.60.0/24");
    m.port(&net, "compute-2", "normal");
    m.port(&other, "compute-4", "normal");
    let mut c = Compiler::full(&m.st, &Liveness::all(&m.st));
    c.initial_versions();

    // A second vRouter port in `net` on compute-2: its own node only (no one
    // else is in the network, and no gateway serves it: no VLAN side, no router).
    let (_, ch) = m.port(&net, "compute-2", "normal");
    let d = c.apply(&m.st, &ch, &Liveness::all(&m.st));
    assert_eq!(beyond_member_sets(&d), vec!["compute-2".to_string()]);
    assert_eq!(c.last.ports_compiled, 1);

    // compute-4 joins `net`: it learns the network and compute-2 learns it.
    let before = c.snapshot("compute-4").map(|(v, _)| v);
    let (p4, ch) = m.port(&net, "compute-4", "normal");
    let d = c.apply(&m.st, &ch, &Liveness::all(&m.st));
    assert_eq!(
        beyond_member_sets(&d),
        vec!["compute-2".to_string(), "compute-4".to_string()]
    );
    let d4 = &d["compute-4"];
    assert!(d4.upserts.contains_key("net/1000"));
    assert_eq!(
        d4.upserts
            .keys()
            .filter(|k| k.starts_with("remote/1000/"))
            .count(),
        2
    );
    // Versions advance per node.
    assert_eq!(Some(d4.version - 1), before);

    // Deleting it removes what it brought, on the same nodes.
    let ch = m.delete_port(&p4);
    let d = c.apply(&m.st, &ch, &Liveness::all(&m.st));
    assert!(d["compute-4"].removals.contains(&"net/1000".to_string()));
    assert!(d["compute-4"].removals.contains(&format!("iface/{p4}")));
    assert!(!d.contains_key("compute-1") && !d.contains_key("compute-3"));
}

#[test]
fn incremental_equals_full_compile() {
    let mut m = Model::new();
    m.lab_agents();
    let nets = [m.network("10.1.0.0/24"), m.network("10.2.0.0/24")];
    let mut c = Compiler::full(&m.st, &Liveness::all(&m.st));
    c.initial_versions();
    let hosts = [
        ("compute-1", "normal"),
        ("compute-2", "normal"),
        ("compute-3", "direct"),
        ("compute-4", "normal"),
        ("compute-9", "normal"),
    ];
    let mut made = Vec::new();
    for i in 0..40usize {
        let (h, v) = hosts[i % hosts.len()];
        let (id, ch) = m.port(&nets[i % 2], h, v);
        c.apply(&m.st, &ch, &Liveness::all(&m.st));
        made.push(id);
        if i % 3 == 2 {
            let gone = made.remove(i % made.len());
            let ch = m.delete_port(&gone);
            c.apply(&m.st, &ch, &Liveness::all(&m.st));
        }
    }
    let full = Compiler::full(&m.st, &Liveness::all(&m.st));
    for h in [
        "compute-1",
        "compute-2",
        "compute-3",
        "compute-4",
        "gateway",
    ] {
        assert_eq!(items(&c, h), items(&full, h), "{h} differs");
    }
}

#[test]
fn deleted_ports_are_withdrawn_from_learned_tables_of_their_network() {
    let mut m = Model::new();
    m.lab_agents();
    let net = m.network("50.50.50.0/24");
    let other = m.network("60.60.60.0/24");
    m.port(&net, "compute-1", "normal");
    m.port(&other, "compute-3", "direct");
    let (p2, _) = m.port(&net, "compute-2", "normal");
    let mut c = Compiler::full(&m.st, &Liveness::all(&m.st));
    c.initial_versions();
    let mac = m.st.ports[&p2].mac_address.to_string();

    // Renaming a port changes nothing a node forwards on: nothing to forget.
    let b = obj(json!({"name": "renamed"}));
    let (_, ch) = m.txn(|ml2, st, ctx| ops::ports::update(ml2, st, ctx, &p2, &b).expect("update"));
    let d = c.apply(&m.st, &ch, &Liveness::all(&m.st));
    assert!(d.values().all(|d| d.forget.is_empty()), "{d:?}");

    // Deleting it: every node of the network (the OVS node learnt the MAC from
    // traffic, the gateway too) and its own node forget it; compute-3, on
    // another network only, is left alone.
    let ch = m.delete_port(&p2);
    let d = c.apply(&m.st, &ch, &Liveness::all(&m.st));
    for host in ["compute-1", "compute-2", "gateway"] {
        assert_eq!(d[host].forget, vec![mac.clone()], "{host}");
    }
    assert!(!d.contains_key("compute-3"), "{d:?}");
    // Forgetting is an event, not state: a snapshot does not carry it.
    assert!(c.snapshot("compute-1").is_some());
}

#[test]
fn a_new_compute_node_recompiles_only_its_own_ports() {
    let mut m = Model::new();
    m.lab_agents();
    let net = m.network("10.1.0.0/24");
    for h in ["compute-1", "compute-2", "compute-4", "compute-2"] {
        m.port(&net, h, "normal");
    }
    let mut c = Compiler::full(&m.st, &Liveness::all(&m.st));
    c.initial_versions();

    // A new vRouter node registers: no port is on it yet, nothing to recompile.
    let ch = m.agent(
        "compute-5",
        "vRouter agent",
        json!({"tunneling_ip": "192.0.2.15"}),
    );
    let d = c.apply(&m.st, &ch, &Liveness::all(&m.st));
    assert_eq!(c.last.ports_compiled, 0, "{d:?}");
    assert!(d.is_empty(), "{d:?}");
    // Its first port joins it to the network like any port would.
    let (_, ch) = m.port(&net, "compute-5", "normal");
    c.apply(&m.st, &ch, &Liveness::all(&m.st));
    assert!(items(&c, "compute-5").contains_key("net/1000"));
    let full = Compiler::full(&m.st, &Liveness::all(&m.st));
    for h in [
        "compute-1",
        "compute-2",
        "compute-4",
        "compute-5",
        "gateway",
    ] {
        assert_eq!(items(&c, h), items(&full, h), "{h} differs");
    }

    // compute-2's agent is deleted and registers again: its two ports come back.
    let agent_id =
        m.st.agents
            .values()
            .find(|a| a.host == "compute-2")
            .map(|a| a.id.clone())
            .expect("agent");
    let (_, ch) = m.txn(|_, st, ctx| ops::agents::delete(st, ctx, &agent_id).expect("delete"));
    c.apply(&m.st, &ch, &Liveness::all(&m.st));
    assert!(items(&c, "compute-2").is_empty());
    let ch = m.agent(
        "compute-2",
        "vRouter agent",
        json!({"tunneling_ip": "192.0.2.12"}),
    );
    c.apply(&m.st, &ch, &Liveness::all(&m.st));
    assert_eq!(c.last.ports_compiled, 2, "only compute-2's ports");
    let full = Compiler::full(&m.st, &Liveness::all(&m.st));
    for h in [
        "compute-1",
        "compute-2",
        "compute-4",
        "compute-5",
        "gateway",
    ] {
        assert_eq!(
            items(&c, h),
            items(&full, h),
            "{h} differs after re-registration"
        );
    }

    // A gateway appearing changes every network's remote entries: full recompile.
    let ch = m.agent(
        "gateway-2",
        "Gateway agent",
        json!({"tunneling_ip": "192.0.2.2"}),
    );
    c.apply(&m.st, &ch, &Liveness::all(&m.st));
    assert_eq!(c.last.ports_compiled, 5);
    let full = Compiler::full(&m.st, &Liveness::all(&m.st));
    for h in ["compute-2", "compute-5", "gateway", "gateway-2"] {
        assert_eq!(items(&c, h), items(&full, h), "{h} differs");
    }
}

#[test]
fn routers_compile_incrementally_to_what_a_full_compile_gives() {
    let mut m = Model::new();
    m.lab_agents();
    m.agent(
        "gateway-2",
        "Gateway agent",
        json!({"tunneling_ip": "192.0.2.2"}),
    );
    let (public, _) = m.txn(|ml2, st, ctx| {
        let id = ops::networks::create(
            ml2,
            st,
            ctx,
            &obj(json!({"name": "public", "router:external": true,
                "provider:network_type": "flat", "provider:physical_network": "public"})),
        )
        .expect("public");
        ops::subnets::create(
            st,
            ctx,
            &obj(json!({"network_id": id, "cidr": "203.0.113.0/24", "ip_version": 4})),
        )
        .expect("subnet");
        id
    });
    let net = m.network("10.1.0.0/24");
    let sub = m.st.network_subnets(&net)[0].id.clone();
    let mut c = Compiler::full(&m.st, &Liveness::all(&m.st));
    c.initial_versions();
    let (vm, ch) = m.port(&net, "compute-2", "normal");
    c.apply(&m.st, &ch, &Liveness::all(&m.st));
    let (router, ch) = m.txn(|ml2, st, ctx| {
        ops::routers::create(
            ml2,
            st,
            ctx,
            &obj(json!({"name": "r", "external_gateway_info": {"network_id": public}})),
        )
        .expect("router")
    });
    c.apply(&m.st, &ch, &Liveness::all(&m.st));
    let (_, ch) = m.txn(|ml2, st, ctx| {
        ops::routers::add_interface(ml2, st, ctx, &router, &obj(json!({"subnet_id": sub})))
            .expect("interface")
    });
    c.apply(&m.st, &ch, &Liveness::all(&m.st));
    let (fip, ch) = m.txn(|ml2, st, ctx| {
        ops::floatingips::create(
            ml2,
            st,
            ctx,
            &obj(json!({"floating_network_id": public, "port_id": vm})),
        )
        .expect("fip")
    });
    c.apply(&m.st, &ch, &Liveness::all(&m.st));
    let (_, ch) = m.txn(|ml2, st, ctx| {
        ops::routers::update(
            ml2,
            st,
            ctx,
            &router,
            &obj(json!({"routes": [{"destination": "172.16.0.0/16", "nexthop": "10.1.0.254"}]})),
        )
        .expect("routes")
    });
    c.apply(&m.st, &ch, &Liveness::all(&m.st));
    let host = m.st.routers[&router].host.clone();
    let on = items(&c, &host);
    let keys: Vec<&str> = on
        .keys()
        .map(String::as_str)
        .filter(|k| !k.starts_with("remote/") && !k.starts_with("bd/"))
        .collect();
    assert_eq!(keys.len(), 5, "rif, gw, snat, fip, route: {keys:?}");
    assert!(on.contains_key(&format!("gw/{router}")));
    assert!(keys.iter().any(|k| k.starts_with("rif/")));
    assert!(on.contains_key(&format!("snat/{router}")));
    assert!(keys.iter().any(|k| k.starts_with("route/")));
    assert!(keys.iter().any(|k| k.starts_with("fip/")));
    // The vRouter learns the router interface behind the gateway's VTEP.
    assert!(
        items(&c, "compute-2")
            .values()
            .any(|i| matches!(i, Item::RemoteMac { ips, .. } if ips.contains(&"10.1.0.1".parse().expect("ip"))))
    );
    let full = Compiler::full(&m.st, &Liveness::all(&m.st));
    for h in ["compute-2", "gateway", "gateway-2"] {
        assert_eq!(items(&c, h), items(&full, h), "{h} differs");
    }
    // Dismantling takes everything off the gateway again.
    let (_, ch) = m.txn(|_, st, ctx| ops::floatingips::delete(st, ctx, &fip).expect("delete fip"));
    c.apply(&m.st, &ch, &Liveness::all(&m.st));
    let (_, ch) = m.txn(|ml2, st, ctx| {
        ops::routers::update(ml2, st, ctx, &router, &obj(json!({"routes": []}))).expect("routes")
    });
    c.apply(&m.st, &ch, &Liveness::all(&m.st));
    let (_, ch) = m.txn(|ml2, st, ctx| {
        ops::routers::remove_interface(ml2, st, ctx, &router, &obj(json!({"subnet_id": sub})))
            .expect("remove")
    });
    c.apply(&m.st, &ch, &Liveness::all(&m.st));
    let (_, ch) =
        m.txn(|ml2, st, ctx| ops::routers::delete(ml2, st, ctx, &router).expect("delete"));
    c.apply(&m.st, &ch, &Liveness::all(&m.st));
    let left: Vec<String> = items(&c, &host)
        .keys()
        .filter(|k| {
            ["rif/", "snat/", "fip/", "route/", "bd/"]
                .iter()
                .any(|p| k.starts_with(p))
        })
        .cloned()
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let full = Compiler::full(&m.st, &Liveness::all(&m.st));
    for h in ["compute-2", "gateway", "gateway-2"] {
        assert_eq!(items(&c, h), items(&full, h), "{h} differs after teardown");
    }
}

#[test]
fn inactive_bindings_are_preplugged_down_and_activation_flips_them_up() {
    let mut m = Model::new();
    m.lab_agents();
    let net = m.network("10.1.0.0/24");
    let (p, _) = m.port(&net, "compute-1", "normal");
    let mut c = Compiler::full(&m.st, &Liveness::all(&m.st));
    c.initial_versions();
    let key = format!("iface/{p}");
    let admin_up = |c: &Compiler, h: &str| match items(c, h).get(&key) {
        Some(Item::Interface {
            admin_up,
            attachment,
            ..
        }) => Some((*admin_up, attachment.clone())),
        _ => None,
    };
    // Nova's first step: an INACTIVE binding on the destination.
    let (_, ch) = m.txn(|ml2, st, ctx| {
        ops::bindings::create(ml2, st, ctx, &p, &obj(json!({"host": "compute-2"})))
            .expect("binding")
    });
    let d = c.apply(&m.st, &ch, &Liveness::all(&m.st));
    assert!(d.contains_key("compute-2"), "{d:?}");
    assert!(!d.contains_key("compute-4"), "only the destination: {d:?}");
    assert!(matches!(
        admin_up(&c, "compute-2"),
        Some((false, Attachment::Vrouter { .. }))
    ));
    assert!(matches!(
        admin_up(&c, "compute-1"),
        Some((true, Attachment::Ovs { .. }))
    ));
    assert_eq!(
        items(&c, "compute-2"),
        items(&Compiler::full(&m.st, &Liveness::all(&m.st)), "compute-2")
    );

    // Activation: the destination's device comes up, the source's goes.
    let (_, ch) =
        m.txn(|_, st, ctx| ops::bindings::activate(st, ctx, &p, "compute-2").expect("activate"));
    c.apply(&m.st, &ch, &Liveness::all(&m.st));
    assert!(matches!(
        admin_up(&c, "compute-2"),
        Some((true, Attachment::Vrouter { .. }))
    ));
    // The old binding is INACTIVE and cleared (as ML2 leaves it): the source
    // device goes with the activation.
    assert_eq!(admin_up(&c, "compute-1"), None);
    let (_, ch) =
        m.txn(|_, st, ctx| ops::bindings::delete(st, ctx, &p, "compute-1").expect("delete"));
    c.apply(&m.st, &ch, &Liveness::all(&m.st));
    assert_eq!(admin_up(&c, "compute-1"), None);
    let full = Compiler::full(&m.st, &Liveness::all(&m.st));
    for h in ["compute-1", "compute-2", "gateway"] {
        assert_eq!(items(&c, h), items(&full, h), "{h} differs");
    }

    // A migration rolled back before activation leaves nothing on the destination.
    let (_, ch) = m.txn(|ml2, st, ctx| {
        ops::bindings::create(ml2, st, ctx, &p, &obj(json!({"host": "compute-4"})))
            .expect("binding")
    });
    c.apply(&m.st, &ch, &Liveness::all(&m.st));
    assert!(admin_up(&c, "compute-4").is_some());
    let (_, ch) =
        m.txn(|_, st, ctx| ops::bindings::delete(st, ctx, &p, "compute-4").expect("delete"));
    c.apply(&m.st, &ch, &Liveness::all(&m.st));
    assert_eq!(admin_up(&c, "compute-4"), None);
}
