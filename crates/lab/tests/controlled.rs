//! The chain the product runs: Neutron model (real ML2 operations) → controller
//! compiler → node agents → pipelines in the lab. Guests are plugged where the
//! agents put their ports and must reach each other across all three backends
//! with nothing configured by hand.

use serde_json::{Map, Value, json};
use smoltcp::time::Duration;
use smoltcp::wire::EthernetAddress;
use switchyard_controller::{Compiler, Liveness};
use switchyard_dataplane::frames::mac_serde::parse_mac;
use switchyard_lab::build::build_with;
use switchyard_lab::{Element, Lab, Topology};
use switchyard_ml2::{Ctx, Ml2, Ml2Config, ops};
use switchyard_model::State;
use switchyard_proto::{FromAgent, ToAgent};

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().cloned().expect("object")
}

struct Cloud {
    ml2: Ml2,
    st: State,
    ctx: Ctx,
}

impl Cloud {
    fn new() -> Self {
        let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).expect("time");
        Cloud {
            ml2: Ml2::with_seed(&Ml2Config::default(), 3).expect("ml2"),
            st: State::new(),
            ctx: Ctx::admin("p", now),
        }
    }
    fn run<T>(&mut self, f: impl FnOnce(&Ml2, &mut State, &Ctx) -> T) -> T {
        self.st.begin();
        let r = f(&self.ml2, &mut self.st, &self.ctx);
        self.st.commit();
        r
    }
}

fn agent_for(spec: &switchyard_lab::topology::NodeSpec, i: usize) -> Option<Element> {
    switchyard_lab::agents::agent_for(spec, i)
        .expect("agent")
        .map(Element::agent)
}

#[test]
fn model_to_pipelines_connects_every_backend() {
    let mut cloud = Cloud::new();
    for (host, agent_type, conf) in [
        (
            "compute-1",
            "Open vSwitch agent",
            json!({"bridge_mappings": {"physnet1": "br-phys"}}),
        ),
        (
            "compute-2",
            "vRouter agent",
            json!({"tunneling_ip": "192.0.2.12"}),
        ),
        (
            "compute-3",
            "NIC Switch agent",
            json!({"device_mappings": {"physnet1": ["eth1"]}}),
        ),
        (
            "compute-4",
            "vRouter agent",
            json!({"tunneling_ip": "192.0.2.14"}),
        ),
        (
            "gateway",
            "Gateway agent",
            json!({"tunneling_ip": "192.0.2.1"}),
        ),
    ] {
        let b = obj(json!({"host": host, "agent_type": agent_type, "configurations": conf}));
        cloud.run(|_, st, ctx| ops::agents::report_state(st, ctx, &b).expect("report"));
    }
    let net = cloud.run(|ml2, st, ctx| {
        ops::networks::create(ml2, st, ctx, &obj(json!({"name": "demo-net"}))).expect("net")
    });
    let sb = obj(json!({"network_id": net, "cidr": "50.50.50.0/24", "ip_version": 4}));
    cloud.run(|_, st, ctx| ops::subnets::create(st, ctx, &sb).expect("subnet"));
    let mut vms = Vec::new();
    for (name, host, vnic) in [
        ("vm-ovs", "compute-1", "normal"),
        ("vm-vrouter", "compute-2", "normal"),
        ("vm-sriov", "compute-3", "direct"),
    ] {
        let b = obj(
            json!({"network_id": net, "binding:host_id": host, "binding:vnic_type": vnic, "device_owner": "compute:nova", "name": name}),
        );
        let id = cloud.run(|ml2, st, ctx| ops::ports::create(ml2, st, ctx, &b).expect("port"));
        let p = &cloud.st.ports[&id];
        let ip = match p.fixed_ips[0].ip_address {
            std::net::IpAddr::V4(a) => a,
            std::net::IpAddr::V6(_) => panic!("v4 expected"),
        };
        vms.push((name, host, id.clone(), p.mac_address.to_string(), ip));
    }

    // The controller compiles; each agent takes its snapshot and acks it.
    let mut compiler = Compiler::full(&cloud.st, &Liveness::All);
    compiler.initial_versions();
    let mut lab: Lab =
        build_with(&Topology::reference().expect("reference"), agent_for).expect("lab");
    for host in [
        "compute-1",
        "compute-2",
        "compute-3",
        "compute-4",
        "gateway",
    ] {
        let (version, items) = compiler.snapshot(host).expect("node compiled");
        let agent = lab.agent(host).expect("agent");
        let reply = agent
            .lock()
            .expect("agent")
            .handle(&ToAgent::Snapshot { version, items });
        assert_eq!(reply, FromAgent::Ack { version }, "{host}");
    }
    // The hypervisor plugs each VM where its agent put the port.
    for (name, host, port_id, mac, _) in &vms {
        let port = lab
            .agent(host)
            .and_then(|a| a.lock().expect("agent").port_of(port_id))
            .expect("agent allocated a port");
        let m: EthernetAddress = parse_mac(mac).expect("mac");
        lab.add_guest(name, m).expect("guest");
        lab.attach(name, host, port).expect("attach");
    }
    assert!(
        lab.run_until(Duration::from_secs(20), |l| vms
            .iter()
            .all(|v| l.guest(v.0).is_ok_and(|g| g.ip.is_some()))),
        "DHCP from the compiled leases"
    );
    for (name, _, _, _, ip) in &vms {
        assert_eq!(
            lab.guest(name).expect("g").ip.map(|c| c.address()),
            Some(*ip),
            "{name} got its Neutron address"
        );
    }
    for (from, ..) in &vms {
        for (to, .., ip) in &vms {
            if from == to {
                continue;
            }
            let now = lab.now;
            lab.guest_mut(from)
                .expect("g")
                .start_ping(*ip, Duration::from_millis(10), now);
            lab.run_for(Duration::from_millis(1500));
            let p = lab.guest_mut(from).expect("g").stop_ping().expect("stream");
            let answered: Vec<bool> = p
                .log
                .values()
                .map(|(_, r)| r.is_some())
                .skip_while(|a| !a)
                .collect();
            let due = answered.len().saturating_sub(10);
            assert!(
                due >= 20 && answered[..due].iter().all(|a| *a),
                "{from} -> {to}: {}/{}",
                p.answered(),
                p.sent()
            );
            assert_eq!(p.duplicates, 0);
        }
    }
}
