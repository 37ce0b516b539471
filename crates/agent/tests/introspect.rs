//! Introspection shows what each pipeline runs: interfaces with their local
//! ports, bridge and ARP tables, flood lists and counters, and forgets what a
//! removal delta took away.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use switchyard_agent::{NodeAgent, pipeline_for};
use switchyard_dataplane::frames::{self, mac_serde::parse_mac};
use switchyard_dataplane::wire::vlan;
use switchyard_dataplane::{Input, Instant, PortNo};
use switchyard_proto::{
    Attachment, BridgeEntry, Delta, FromAgent, Item, Lease, NodeState, Role, ToAgent,
};

const VNI: u32 = 1000;
const VTEP_12: &str = "192.0.2.12";
const VTEP_14: &str = "192.0.2.14";
const LOCAL_MAC: &str = "fa:16:3e:00:00:01";
const REMOTE_MAC: &str = "fa:16:3e:00:00:02";
const DHCP_MAC: &str = "fa:16:3e:00:00:03";
const FAR_MAC: &str = "fa:16:3e:00:00:04";

fn ip(s: &str) -> Ipv4Addr {
    s.parse().expect("ip")
}

fn agent(role: Role) -> NodeAgent {
    let mac = parse_mac("02:00:00:00:00:fe").expect("mac");
    let (dp, range) = pipeline_for(role, mac, Some(ip("192.0.2.1")), 0, 8).expect("pipeline");
    NodeAgent::new("node-1", role, dp, range)
}

fn iface(id: &str, mac: &str, addr: &str, attachment: Attachment) -> Item {
    Item::Interface {
        port_id: id.into(),
        admin_up: true,
        mac: mac.into(),
        ips: vec![ip(addr)],
        pairs: vec![],
        port_security: true,
        attachment,
        lease: None,
    }
}

fn remote(mac: &str, addr: &str, vtep: &str) -> Item {
    Item::RemoteMac {
        vni: VNI,
        mac: mac.into(),
        ips: vec![ip(addr)],
        vtep: ip(vtep),
    }
}

fn snapshot(version: u64, items: Vec<(String, Item)>) -> ToAgent {
    ToAgent::Snapshot {
        version,
        items: items.into_iter().map(|(k, v)| (k, v.into())).collect(),
    }
}

fn removal(version: u64, keys: &[&str]) -> ToAgent {
    ToAgent::Delta(Delta {
        version,
        upserts: BTreeMap::new(),
        removals: keys.iter().map(|k| k.to_string()).collect(),
        ..Delta::default()
    })
}

fn acked(a: &mut NodeAgent, msg: &ToAgent) {
    let r = a.handle(msg);
    assert!(matches!(r, FromAgent::Ack { .. }), "{r:?}");
}

fn send(a: &mut NodeAgent, port: PortNo, data: &[u8]) {
    let mut out = Vec::new();
    a.dataplane
        .pipeline()
        .process(Instant::from_secs(1), Input::Frame { port, data }, &mut out);
}

fn udp_from(src: &str, dst: &str) -> Vec<u8> {
    frames::udp(
        parse_mac(dst).expect("mac"),
        parse_mac(src).expect("mac"),
        ip("50.50.50.10"),
        ip("50.50.50.20"),
        1000,
        2000,
        64,
        b"hi",
    )
}

fn entry(mac: &str, to: &str) -> BridgeEntry {
    BridgeEntry {
        mac: mac.into(),
        points_to: to.into(),
    }
}

/// The state survives a JSON round trip, and MACs are written with colons.
fn json_round_trip(s: &NodeState) {
    let text = serde_json::to_string(s).expect("serialize");
    assert!(!text.contains("fa-16-3e"), "MACs with colons: {text}");
    let back: NodeState = serde_json::from_str(&text).expect("deserialize");
    assert_eq!(&back, s);
}

#[test]
fn vrouter_interfaces_tables_and_removal() {
    let mut a = agent(Role::Vrouter);
    let empty = a.introspect();
    assert_eq!(empty.version, 0);
    assert!(empty.interfaces.is_empty() && empty.networks.is_empty());
    acked(
        &mut a,
        &snapshot(
            3,
            vec![
                (
                    format!("net/{VNI}"),
                    Item::Network {
                        vni: VNI,
                        flood: vec![ip(VTEP_12), ip(VTEP_14)],
                    },
                ),
                (
                    "iface/p1".into(),
                    iface(
                        "p1",
                        LOCAL_MAC,
                        "50.50.50.10",
                        Attachment::Vrouter { vni: VNI },
                    ),
                ),
                (
                    format!("remote/{VNI}/{REMOTE_MAC}"),
                    remote(REMOTE_MAC, "50.50.50.20", VTEP_12),
                ),
            ],
        ),
    );
    let s = a.introspect();
    assert_eq!(s.host, "node-1");
    assert_eq!(s.role, Role::Vrouter);
    assert_eq!(s.version, 3);
    assert_eq!(s.interfaces.len(), 1);
    let i = s.interface("p1").expect("p1 listed");
    assert_eq!(i.local_port, 1);
    assert_eq!(Some(i.local_port), a.port_of("p1"));
    assert_eq!(i.mac, LOCAL_MAC);
    assert_eq!(i.ips, vec![ip("50.50.50.10")]);
    assert_eq!(i.vif_type, "vrouter");
    assert_eq!(i.vni, Some(VNI));
    assert_eq!(i.vlan, None);
    assert_eq!(i.status, "ACTIVE");
    assert!(i.port_security);

    assert_eq!(s.networks.len(), 1);
    let n = s.network_by_vni(VNI).expect("network");
    assert_eq!(n.vlan, None);
    assert_eq!(n.flood, vec![ip(VTEP_12), ip(VTEP_14)]);
    assert_eq!(
        n.bridge,
        vec![
            entry(LOCAL_MAC, "port 1"),
            entry(REMOTE_MAC, "vtep 192.0.2.12")
        ]
    );
    assert_eq!(n.arp_for(ip("50.50.50.10")), Some(LOCAL_MAC));
    assert_eq!(n.arp_for(ip("50.50.50.20")), Some(REMOTE_MAC));
    assert_eq!(n.arp.len(), 2);
    json_round_trip(&s);

    // A frame on a port nothing is plugged into is counted as such.
    send(&mut a, 77, &udp_from(LOCAL_MAC, REMOTE_MAC));
    // A known unicast from the VM goes to its VTEP.
    send(&mut a, 1, &udp_from(LOCAL_MAC, REMOTE_MAC));
    let c = a.introspect().counters;
    assert_eq!((c.rx, c.tx), (2, 1));
    assert_eq!(c.drops.get("unknown_port"), Some(&1));
    assert_eq!(c.drops.len(), 1);

    // The remote MAC and the interface go: so do their entries.
    acked(
        &mut a,
        &removal(4, &[&format!("remote/{VNI}/{REMOTE_MAC}"), "iface/p1"]),
    );
    let s = a.introspect();
    assert_eq!(s.version, 4);
    assert!(s.interfaces.is_empty(), "{:?}", s.interfaces);
    let n = s.network_by_vni(VNI).expect("network stays");
    assert!(n.bridge.is_empty(), "{:?}", n.bridge);
    assert!(n.arp.is_empty(), "{:?}", n.arp);
    assert_eq!(n.flood, vec![ip(VTEP_12), ip(VTEP_14)]);
}

#[test]
fn vrouter_lists_an_interface_the_pipeline_lost_as_down() {
    let mut a = agent(Role::Vrouter);
    acked(
        &mut a,
        &snapshot(
            1,
            vec![
                (
                    format!("net/{VNI}"),
                    Item::Network {
                        vni: VNI,
                        flood: vec![],
                    },
                ),
                (
                    "iface/p1".into(),
                    iface(
                        "p1",
                        LOCAL_MAC,
                        "50.50.50.10",
                        Attachment::Vrouter { vni: VNI },
                    ),
                ),
            ],
        ),
    );
    assert_eq!(a.introspect().interfaces[0].status, "ACTIVE");
    // Removing the network takes the interface out of the pipeline, while the
    // agent still holds its port: introspection says so rather than echo the item.
    acked(&mut a, &removal(2, &[&format!("net/{VNI}")]));
    let s = a.introspect();
    assert!(s.networks.is_empty());
    let i = s.interface("p1").expect("still listed");
    assert_eq!(i.status, "DOWN");
    assert_eq!(i.local_port, 1);
    assert_eq!(i.vni, Some(VNI));
}

#[test]
fn ovs_access_ports_and_learned_fdb() {
    let mut a = agent(Role::Ovs);
    acked(
        &mut a,
        &snapshot(
            1,
            vec![(
                "iface/p1".into(),
                iface(
                    "p1",
                    LOCAL_MAC,
                    "50.50.50.10",
                    Attachment::Ovs {
                        vlan: 101,
                        physnet: "physnet1".into(),
                    },
                ),
            )],
        ),
    );
    let s = a.introspect();
    let i = s.interface("p1").expect("p1 listed");
    assert_eq!(i.local_port, 10);
    assert_eq!(i.mac, LOCAL_MAC);
    assert_eq!(i.ips, vec![ip("50.50.50.10")]);
    assert_eq!(i.vif_type, "ovs");
    assert_eq!((i.vlan, i.vni), (Some(101), None));
    assert_eq!(i.status, "ACTIVE");
    let n = s.network_by_vlan(101).expect("vlan 101");
    assert!(n.bridge.is_empty(), "nothing learned yet");
    assert!(n.flood.is_empty());

    // The bridge learns the VM on its port and a far MAC on the trunk.
    send(&mut a, 10, &udp_from(LOCAL_MAC, FAR_MAC));
    let tagged = vlan::push_tag(&udp_from(FAR_MAC, LOCAL_MAC), 101).expect("tag");
    send(&mut a, 0, &tagged);
    let s = a.introspect();
    let n = s.network_by_vlan(101).expect("vlan 101");
    assert_eq!(n.bridge_to(LOCAL_MAC), Some("port 10"));
    assert_eq!(n.bridge_to(FAR_MAC), Some("trunk port 0"));
    assert_eq!((s.counters.rx, s.counters.tx), (2, 2));
    json_round_trip(&s);

    acked(&mut a, &removal(2, &["iface/p1"]));
    let s = a.introspect();
    assert!(s.interfaces.is_empty());
    let n = s
        .network_by_vlan(101)
        .expect("the trunk entry is still learned");
    assert_eq!(n.bridge_to(LOCAL_MAC), None, "flushed with its port");
    assert_eq!(n.bridge_to(FAR_MAC), Some("trunk port 0"));

    // The controller withdraws the far MAC (its port was deleted elsewhere).
    acked(
        &mut a,
        &ToAgent::Delta(Delta {
            version: 3,
            forget: vec![FAR_MAC.to_string()],
            ..Delta::default()
        }),
    );
    let s = a.introspect();
    assert!(
        s.network_by_vlan(101)
            .is_none_or(|n| n.bridge_to(FAR_MAC).is_none()),
        "forgotten: {s:?}"
    );
}

#[test]
fn sriov_vfs_and_their_macs() {
    let mut a = agent(Role::Sriov);
    let hw = |vlan| Attachment::HwVeb {
        vlan,
        physnet: "physnet2".into(),
    };
    acked(
        &mut a,
        &snapshot(
            1,
            vec![
                (
                    "iface/v1".into(),
                    iface("v1", LOCAL_MAC, "50.50.60.10", hw(200)),
                ),
                (
                    "iface/v2".into(),
                    iface("v2", REMOTE_MAC, "50.50.61.10", hw(201)),
                ),
            ],
        ),
    );
    let s = a.introspect();
    assert_eq!(s.interfaces.len(), 2);
    let v1 = s.interface("v1").expect("v1 listed");
    let v2 = s.interface("v2").expect("v2 listed");
    assert_eq!(
        [v1.local_port, v2.local_port],
        [
            a.port_of("v1").expect("port"),
            a.port_of("v2").expect("port")
        ]
    );
    assert!(v1.local_port >= 100 && v2.local_port >= 100);
    assert_eq!(v1.mac, LOCAL_MAC);
    assert_eq!(v1.ips, vec![ip("50.50.60.10")]);
    assert_eq!(v1.vif_type, "hw_veb");
    assert_eq!((v1.vlan, v1.vni), (Some(200), None));
    assert!(v1.port_security);
    assert_eq!(v2.vlan, Some(201));
    let n200 = s.network_by_vlan(200).expect("vlan 200");
    assert_eq!(
        n200.bridge,
        vec![entry(LOCAL_MAC, &format!("port {}", v1.local_port))]
    );
    assert_eq!(
        s.network_by_vlan(201)
            .expect("vlan 201")
            .bridge_to(REMOTE_MAC),
        Some(format!("port {}", v2.local_port).as_str())
    );

    // A spoofed source on the VF is dropped and counted.
    send(&mut a, v1.local_port, &udp_from(FAR_MAC, REMOTE_MAC));
    assert_eq!(a.introspect().counters.drops.get("spoofed_mac"), Some(&1));

    acked(&mut a, &removal(2, &["iface/v1"]));
    let s = a.introspect();
    assert!(s.interface("v1").is_none());
    assert!(s.network_by_vlan(200).is_none(), "no VF left on VLAN 200");
    assert!(s.interface("v2").is_some());
}

fn lease(addr: &str) -> Lease {
    Lease {
        ip: ip(addr),
        prefix_len: 24,
        router: Some(ip("50.50.50.1")),
        dns: vec![],
        routes: vec![],
        mtu: 1500,
        lease_secs: 3600,
        server: ip("50.50.50.1"),
    }
}

#[test]
fn gateway_bridge_domains() {
    let mut a = agent(Role::Gateway);
    acked(
        &mut a,
        &snapshot(
            5,
            vec![
                (
                    format!("bd/{VNI}"),
                    Item::BridgeDomain {
                        vni: VNI,
                        vlan: 100,
                        physnet: "physnet1".into(),
                        flood: vec![ip(VTEP_12), ip(VTEP_14)],
                    },
                ),
                (
                    format!("remote/{VNI}/{REMOTE_MAC}"),
                    remote(REMOTE_MAC, "50.50.50.20", VTEP_12),
                ),
                (
                    format!("dhcp/100/{DHCP_MAC}"),
                    Item::DhcpPort {
                        vlan: 100,
                        mac: DHCP_MAC.into(),
                        lease: lease("50.50.50.30"),
                    },
                ),
            ],
        ),
    );
    let s = a.introspect();
    assert_eq!(s.role, Role::Gateway);
    assert!(s.interfaces.is_empty(), "a gateway plugs no VMs");
    assert_eq!(s.networks.len(), 1);
    let n = s.network_by_vni(VNI).expect("bridge domain");
    assert_eq!(n.vlan, Some(100));
    assert_eq!(n.flood, vec![ip(VTEP_12), ip(VTEP_14)]);
    assert_eq!(
        n.bridge,
        vec![entry(REMOTE_MAC, "vtep 192.0.2.12 (config)")]
    );
    assert_eq!(n.arp_for(ip("50.50.50.20")), Some(REMOTE_MAC));
    assert_eq!(n.arp_for(ip("50.50.50.30")), Some(DHCP_MAC));

    // A frame on the trunk teaches the gateway where its source lives.
    let tagged = vlan::push_tag(&udp_from(FAR_MAC, REMOTE_MAC), 100).expect("tag");
    send(&mut a, 0, &tagged);
    let s = a.introspect();
    let n = s.network_by_vni(VNI).expect("bridge domain");
    assert_eq!(n.bridge_to(FAR_MAC), Some("trunk vlan 100"));
    assert_eq!(s.counters.tx, 1, "forwarded to the remote MAC's VTEP");
    json_round_trip(&s);

    acked(
        &mut a,
        &removal(
            6,
            &[
                &format!("remote/{VNI}/{REMOTE_MAC}"),
                &format!("dhcp/100/{DHCP_MAC}"),
            ],
        ),
    );
    let s = a.introspect();
    let n = s.network_by_vni(VNI).expect("bridge domain stays");
    assert_eq!(n.bridge_to(REMOTE_MAC), None);
    assert_eq!(n.arp_for(ip("50.50.50.20")), None);
    assert_eq!(n.arp_for(ip("50.50.50.30")), None);
    assert_eq!(n.bridge_to(FAR_MAC), Some("trunk vlan 100"));

    // Removing the bridge domain removes its tables.
    acked(&mut a, &removal(7, &[&format!("bd/{VNI}")]));
    assert!(a.introspect().networks.is_empty());
}
