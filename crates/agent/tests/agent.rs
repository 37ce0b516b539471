//! The agent's contract: snapshots applied as differences, deltas in order,
//! bad input refused without changing anything.

use std::collections::BTreeMap;
use std::sync::Arc;

use switchyard_agent::{Dataplane, NodeAgent, PortRange};
use switchyard_dataplane::frames::mac_serde::parse_mac;
use switchyard_dataplane::vrouter::Vrouter;
use switchyard_proto::{Attachment, Delta, FromAgent, Item, Items, Role, ToAgent};

fn agent() -> NodeAgent {
    let mac = parse_mac("02:00:00:00:00:02").expect("mac");
    NodeAgent::new(
        "compute-2",
        Role::Vrouter,
        Dataplane::Vrouter(Vrouter::new(mac)),
        PortRange { first: 1, count: 2 },
    )
}

fn iface(id: &str, mac: &str) -> Item {
    Item::Interface {
        port_id: id.into(),
        admin_up: true,
        mac: mac.into(),
        ips: vec!["50.50.50.10".parse().expect("ip")],
        pairs: vec![],
        port_security: true,
        attachment: Attachment::Vrouter { vni: 1000 },
        lease: None,
    }
}

fn net() -> Item {
    Item::Network {
        vni: 1000,
        flood: vec!["192.0.2.1".parse().expect("ip")],
    }
}

fn snapshot(version: u64, items: &[(&str, Item)]) -> ToAgent {
    ToAgent::Snapshot {
        version,
        items: items
            .iter()
            .map(|(k, v)| (k.to_string(), Arc::new(v.clone())))
            .collect(),
    }
}

/// Upserts as a delta carries them.
fn arcs(m: BTreeMap<String, Item>) -> Items {
    m.into_iter().map(|(k, v)| (k, Arc::new(v))).collect()
}

#[test]
fn snapshot_then_deltas_in_order() {
    let mut a = agent();
    let r = a.handle(&snapshot(
        3,
        &[
            ("net/1000", net()),
            ("iface/p1", iface("p1", "fa:16:3e:00:00:01")),
        ],
    ));
    assert_eq!(r, FromAgent::Ack { version: 3 });
    assert_eq!(a.port_of("p1"), Some(1));
    // A gap is refused: the controller must send a snapshot.
    let gap = ToAgent::Delta(Delta {
        version: 5,
        ..Delta::default()
    });
    assert!(matches!(a.handle(&gap), FromAgent::Nack { version: 5, .. }));
    let mut up = BTreeMap::new();
    up.insert("iface/p2".to_string(), iface("p2", "fa:16:3e:00:00:02"));
    let d = ToAgent::Delta(Delta {
        version: 4,
        upserts: arcs(up),
        removals: vec!["iface/p1".into()],
        ..Delta::default()
    });
    assert_eq!(a.handle(&d), FromAgent::Ack { version: 4 });
    assert_eq!(a.port_of("p1"), None);
    // p1's port is only freed once the version applied: p2 takes the next one.
    assert_eq!(a.port_of("p2"), Some(2));
    assert_eq!(a.version(), 4);
    let mut up = BTreeMap::new();
    up.insert("iface/p3".to_string(), iface("p3", "fa:16:3e:00:00:03"));
    assert_eq!(
        a.handle(&ToAgent::Delta(Delta {
            version: 5,
            upserts: arcs(up),
            removals: vec![],
            ..Delta::default()
        })),
        FromAgent::Ack { version: 5 }
    );
    assert_eq!(a.port_of("p3"), Some(1), "the freed port is reused");
}

#[test]
fn a_resync_snapshot_touches_only_what_differs() {
    let mut a = agent();
    a.handle(&snapshot(
        1,
        &[
            ("net/1000", net()),
            ("iface/p1", iface("p1", "fa:16:3e:00:00:01")),
        ],
    ));
    let port = a.port_of("p1");
    // The controller restarted and resends the same state under a new version.
    let r = a.handle(&snapshot(
        7,
        &[
            ("net/1000", net()),
            ("iface/p1", iface("p1", "fa:16:3e:00:00:01")),
        ],
    ));
    assert_eq!(r, FromAgent::Ack { version: 7 });
    assert_eq!(
        a.port_of("p1"),
        port,
        "an unchanged interface keeps its port"
    );
    // A snapshot without an item removes it.
    a.handle(&snapshot(8, &[("net/1000", net())]));
    assert_eq!(a.port_of("p1"), None);
    assert_eq!(a.items().len(), 1);
}

#[test]
fn bad_items_are_refused_and_change_nothing() {
    let mut a = agent();
    a.handle(&snapshot(1, &[("net/1000", net())]));
    // An interface in a network the node does not have.
    let bad = Item::Interface {
        port_id: "p9".into(),
        admin_up: true,
        mac: "fa:16:3e:00:00:09".into(),
        ips: vec![],
        pairs: vec![],
        port_security: true,
        attachment: Attachment::Vrouter { vni: 4242 },
        lease: None,
    };
    let mut up = BTreeMap::new();
    up.insert("iface/p9".to_string(), bad);
    let r = a.handle(&ToAgent::Delta(Delta {
        version: 2,
        upserts: arcs(up),
        removals: vec![],
        ..Delta::default()
    }));
    assert!(matches!(r, FromAgent::Nack { version: 2, .. }), "{r:?}");
    assert_eq!(a.version(), 1);
    assert_eq!(a.port_of("p9"), None, "the port number is given back");
    // A gateway-only item on a vRouter, and a bad MAC.
    let mut up = BTreeMap::new();
    up.insert(
        "dhcp/100/x".to_string(),
        Item::DhcpPort {
            vlan: 100,
            mac: "not-a-mac".into(),
            lease: switchyard_proto::Lease {
                ip: "10.0.0.2".parse().expect("ip"),
                prefix_len: 24,
                router: None,
                dns: vec![],
                routes: vec![],
                mtu: 1500,
                lease_secs: 60,
                server: "10.0.0.1".parse().expect("ip"),
            },
        },
    );
    assert!(matches!(
        a.handle(&ToAgent::Delta(Delta {
            version: 2,
            upserts: arcs(up),
            removals: vec![],
            ..Delta::default()
        })),
        FromAgent::Nack { .. }
    ));
    // Port numbers run out: refused, not wrapped.
    let mut up = BTreeMap::new();
    for i in 0..3 {
        up.insert(
            format!("iface/q{i}"),
            iface(&format!("q{i}"), &format!("fa:16:3e:00:01:0{i}")),
        );
    }
    assert!(matches!(
        a.handle(&ToAgent::Delta(Delta {
            version: 2,
            upserts: arcs(up),
            removals: vec![],
            ..Delta::default()
        })),
        FromAgent::Nack { .. }
    ));
    assert_eq!(a.items().len(), 1);
}

#[test]
fn an_administratively_down_port_keeps_its_device_and_forwards_nothing() {
    let mut a = agent();
    let up = iface("p1", "fa:16:3e:00:00:01");
    assert_eq!(
        a.handle(&snapshot(
            1,
            &[("net/1000", net()), ("iface/p1", up.clone())]
        )),
        FromAgent::Ack { version: 1 }
    );
    // Applied but no device yet: not up.
    assert_eq!(a.take_port_status(), vec![]);
    a.set_device("p1", true);
    assert_eq!(a.take_port_status(), vec![("p1".to_string(), true)]);
    let mut down = up.clone();
    if let Item::Interface { admin_up, .. } = &mut down {
        *admin_up = false;
    }
    let mut ups = BTreeMap::new();
    ups.insert("iface/p1".to_string(), down);
    let d = ToAgent::Delta(Delta {
        version: 2,
        upserts: arcs(ups),
        ..Delta::default()
    });
    assert_eq!(a.handle(&d), FromAgent::Ack { version: 2 });
    assert_eq!(a.take_port_status(), vec![("p1".to_string(), false)]);
    assert_eq!(a.port_of("p1"), Some(1), "the device stays");
    let s = a.introspect();
    assert_eq!(s.interface("p1").map(|i| i.status.as_str()), Some("DOWN"));
    let Dataplane::Vrouter(v) = &a.dataplane else {
        unreachable!()
    };
    assert!(v.interface(1).is_none(), "nothing forwards for it");

    let mut ups = BTreeMap::new();
    ups.insert("iface/p1".to_string(), up);
    let d = ToAgent::Delta(Delta {
        version: 3,
        upserts: arcs(ups),
        ..Delta::default()
    });
    assert_eq!(a.handle(&d), FromAgent::Ack { version: 3 });
    assert_eq!(a.take_port_status(), vec![("p1".to_string(), true)]);
    assert_eq!(a.port_of("p1"), Some(1));
    assert_eq!(
        a.introspect().interface("p1").map(|i| i.status.as_str()),
        Some("ACTIVE")
    );
}

/// A port is up only while its device is plugged *and* the node runs its
/// interface administratively up; the device keeps its local port while
/// plugged, even when the controller withdraws the interface and gives it back.
#[test]
fn a_port_is_up_only_while_its_device_is_plugged_and_applied() {
    let mut a = agent();
    a.set_device("p1", true);
    assert_eq!(a.take_port_status(), vec![], "a device alone is not up");
    assert_eq!(
        a.handle(&snapshot(
            1,
            &[
                ("net/1000", net()),
                ("iface/p1", iface("p1", "fa:16:3e:00:00:01"))
            ]
        )),
        FromAgent::Ack { version: 1 }
    );
    assert_eq!(a.take_port_status(), vec![("p1".to_string(), true)]);
    assert_eq!(a.ports_up(), vec!["p1".to_string()]);
    let port = a.port_of("p1");
    // The interface is withdrawn (its agent record deleted, say): down, but
    // the plugged device keeps its port number.
    let d = ToAgent::Delta(Delta {
        version: 2,
        removals: vec!["iface/p1".to_string()],
        ..Delta::default()
    });
    assert_eq!(a.handle(&d), FromAgent::Ack { version: 2 });
    assert_eq!(a.take_port_status(), vec![("p1".to_string(), false)]);
    assert_eq!(a.port_of("p1"), port);
    let mut ups = BTreeMap::new();
    ups.insert("iface/p1".to_string(), iface("p1", "fa:16:3e:00:00:01"));
    let d = ToAgent::Delta(Delta {
        version: 3,
        upserts: arcs(ups),
        ..Delta::default()
    });
    assert_eq!(a.handle(&d), FromAgent::Ack { version: 3 });
    assert_eq!(a.take_port_status(), vec![("p1".to_string(), true)]);
    assert_eq!(a.port_of("p1"), port, "same device, same port");
    // The VM goes away: down; its port number is free once nothing holds it.
    a.set_device("p1", false);
    assert_eq!(a.take_port_status(), vec![("p1".to_string(), false)]);
    assert!(a.ports_up().is_empty());
    assert_eq!(a.port_of("p1"), port, "the interface still holds it");
}

/// A port's `sg/` item filters its traffic on the node: new traffic to it
/// that no rule admits is dropped and counted; without the item it passes.
#[test]
fn a_port_filter_item_filters_the_ports_traffic() {
    use switchyard_dataplane::wire::vxlan;
    use switchyard_dataplane::{DropReason, Input, frames};
    use switchyard_proto::FilterRule;
    let mut a = agent();
    let egress_only = Item::PortFilter {
        port_id: "p1".into(),
        rules: vec![FilterRule {
            ingress: false,
            ipv6: false,
            protocol: None,
            port_min: None,
            port_max: None,
            remote: None,
            remote_group: None,
        }]
        .into(),
    };
    let r = a.handle(&snapshot(
        1,
        &[
            ("net/1000", net()),
            ("iface/p1", iface("p1", "fa:16:3e:00:00:01")),
            ("sg/p1", egress_only),
        ],
    ));
    assert_eq!(r, FromAgent::Ack { version: 1 });
    let p1 = parse_mac("fa:16:3e:00:00:01").expect("mac");
    let far = parse_mac("fa:16:3e:00:00:99").expect("mac");
    let inner = frames::udp(
        p1,
        far,
        "50.50.50.99".parse().expect("ip"),
        "50.50.50.10".parse().expect("ip"),
        5000,
        6000,
        64,
        b"hello",
    );
    let encap = vxlan::encap(1000, &inner);
    let send = |a: &mut NodeAgent| {
        let mut out = Vec::new();
        a.dataplane.pipeline().process(
            switchyard_dataplane::Instant::from_secs(1),
            Input::Underlay {
                src: "192.0.2.14".parse().expect("ip"),
                data: &encap,
            },
            &mut out,
        );
        out.len()
    };
    assert_eq!(send(&mut a), 0, "no ingress rule");
    assert_eq!(a.dataplane.counters().dropped(DropReason::SgNoRule), 1);
    let d = ToAgent::Delta(Delta {
        version: 2,
        removals: vec!["sg/p1".into()],
        ..Delta::default()
    });
    assert_eq!(a.handle(&d), FromAgent::Ack { version: 2 });
    assert_eq!(send(&mut a), 1, "unfiltered");
}

/// A rule from a remote group refers to the node's `sgm/` set of it: a
/// peer is admitted once the set lists it, and a new flow is refused once
/// the set is removed (an absent set: no members).
#[test]
fn a_group_members_item_feeds_the_rules_that_name_the_group() {
    use switchyard_dataplane::wire::vxlan;
    use switchyard_dataplane::{DropReason, Input, frames};
    use switchyard_proto::FilterRule;
    let mut a = agent();
    let from_group = Item::PortFilter {
        port_id: "p1".into(),
        rules: vec![FilterRule {
            ingress: true,
            ipv6: false,
            protocol: None,
            port_min: None,
            port_max: None,
            remote: None,
            remote_group: Some("g".into()),
        }]
        .into(),
    };
    let r = a.handle(&snapshot(
        1,
        &[
            ("net/1000", net()),
            ("iface/p1", iface("p1", "fa:16:3e:00:00:01")),
            ("sg/p1", from_group),
        ],
    ));
    assert_eq!(r, FromAgent::Ack { version: 1 });
    let p1 = parse_mac("fa:16:3e:00:00:01").expect("mac");
    let far = parse_mac("fa:16:3e:00:00:99").expect("mac");
    let peer: std::net::Ipv4Addr = "50.50.50.99".parse().expect("ip");
    let send = |a: &mut NodeAgent, sport: u16| {
        let inner = frames::udp(
            p1,
            far,
            peer,
            "50.50.50.10".parse().expect("ip"),
            sport,
            6000,
            64,
            b"hello",
        );
        let encap = vxlan::encap(1000, &inner);
        let mut out = Vec::new();
        a.dataplane.pipeline().process(
            switchyard_dataplane::Instant::from_secs(1),
            Input::Underlay {
                src: "192.0.2.14".parse().expect("ip"),
                data: &encap,
            },
            &mut out,
        );
        out.len()
    };
    assert_eq!(send(&mut a, 5000), 0, "no set: no members");
    let members = Item::GroupMembers {
        group_id: "g".into(),
        addrs: vec![(std::net::IpAddr::V4(peer), 32)],
    };
    let d = ToAgent::Delta(Delta {
        version: 2,
        upserts: arcs(BTreeMap::from([("sgm/g".to_string(), members)])),
        ..Delta::default()
    });
    assert_eq!(a.handle(&d), FromAgent::Ack { version: 2 });
    assert_eq!(send(&mut a, 5001), 1, "a member");
    let d = ToAgent::Delta(Delta {
        version: 3,
        removals: vec!["sgm/g".into()],
        ..Delta::default()
    });
    assert_eq!(a.handle(&d), FromAgent::Ack { version: 3 });
    assert_eq!(send(&mut a, 5002), 0, "the set is gone");
    assert_eq!(send(&mut a, 5001), 1, "the open flow goes on");
    assert_eq!(a.dataplane.counters().dropped(DropReason::SgNoRule), 2);
    // A set under another group's key is refused, and changes nothing.
    let wrong = Item::GroupMembers {
        group_id: "h".into(),
        addrs: vec![(std::net::IpAddr::V4(peer), 32)],
    };
    let d = ToAgent::Delta(Delta {
        version: 4,
        upserts: arcs(BTreeMap::from([("sgm/g".to_string(), wrong)])),
        ..Delta::default()
    });
    assert!(matches!(a.handle(&d), FromAgent::Nack { version: 4, .. }));
    assert_eq!(send(&mut a, 5003), 0);
}
