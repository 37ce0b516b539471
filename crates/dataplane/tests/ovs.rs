//! OVS bridge pipeline: learning, ageing, VLAN flooding, trunk tagging,
//! anti-spoofing, and property tests.

mod common;

use common::*;
use proptest::prelude::*;
use switchyard_dataplane::frames::BROADCAST;
use switchyard_dataplane::ovs::{AccessPort, OvsBridge, Update};
use switchyard_dataplane::wire::vlan;
use switchyard_dataplane::{DropReason, Duration, Input, Mac, Output, Pipeline};

const TRUNK: u32 = 100;

fn a() -> Mac {
    mac(0, 1)
}
fn b() -> Mac {
    mac(0, 2)
}
fn c() -> Mac {
    mac(0, 3)
}
fn d() -> Mac {
    mac(0, 4)
}
/// A host beyond the trunk (e.g. the gateway) on VLAN 101.
fn far() -> Mac {
    mac(1, 1)
}

fn bridge() -> OvsBridge {
    let mut o = OvsBridge::new();
    o.apply(
        1,
        &[
            Update::Trunk { port: TRUNK },
            Update::Access(AccessPort {
                port: 1,
                vlan: 101,
                security: secured(a(), &[ip(50, 50, 50, 11)]),
            }),
            Update::Access(AccessPort {
                port: 2,
                vlan: 101,
                security: secured(b(), &[ip(50, 50, 50, 12)]),
            }),
            Update::Access(AccessPort {
                port: 3,
                vlan: 102,
                security: secured(c(), &[ip(60, 60, 60, 13)]),
            }),
            Update::Access(AccessPort {
                port: 4,
                vlan: 101,
                security: insecure(d()),
            }),
        ],
    );
    assert_eq!(o.version(), 1);
    o
}

fn at(o: &mut OvsBridge, ms: i64, port: u32, data: &[u8]) -> Vec<Output> {
    run(o, t(ms), Input::Frame { port, data })
}

fn a_to(dst: Mac) -> Vec<u8> {
    udp(dst, a(), ip(50, 50, 50, 11), ip(50, 50, 50, 12))
}

fn b_to(dst: Mac) -> Vec<u8> {
    udp(dst, b(), ip(50, 50, 50, 12), ip(50, 50, 50, 11))
}

fn tagged(f: &[u8], vid: u16) -> Vec<u8> {
    vlan::push_tag(f, vid).expect("tag")
}

#[test]
fn unknown_unicast_floods_vlan_then_learned_unicast() {
    let mut o = bridge();
    let f = a_to(b());
    let out = at(&mut o, 0, 1, &f);
    // Ports 2 and 4 (VLAN 101), the trunk tagged 101; never port 3 (VLAN 102).
    assert_eq!(
        frames_out(&out),
        vec![(2, f.clone()), (4, f.clone()), (TRUNK, tagged(&f, 101))]
    );
    assert_eq!(o.fdb().entries(), vec![(101, a(), 1)]);
    // B answers: A is known, unicast to port 1 only.
    let g = b_to(a());
    assert_eq!(
        at(&mut o, 10, 2, &g),
        vec![Output::Frame { port: 1, data: g }]
    );
    // And now B is known too.
    assert_eq!(
        at(&mut o, 20, 1, &f),
        vec![Output::Frame { port: 2, data: f }]
    );
    assert_eq!(o.counters().tx, 5);
    assert_eq!(o.fdb().len(), 2);
}

#[test]
fn ageing_via_poll_with_later_instant() {
    let mut o = bridge();
    at(&mut o, 0, 1, &a_to(BROADCAST));
    let mut scratch = Vec::new();
    let next = o.poll(t(1_000), &mut scratch);
    assert_eq!(next, Some(t(0) + Duration::from_secs(300)));
    assert!(scratch.is_empty());
    // Still known just before expiry.
    assert_eq!(ports_out(&at(&mut o, 299_000, 2, &b_to(a()))), vec![1]);
    // A refreshed nothing; B was learned at 299 s. At 300 s A is gone.
    assert_eq!(
        o.poll(t(300_000), &mut scratch),
        Some(t(299_000) + Duration::from_secs(300))
    );
    assert_eq!(o.fdb().entries(), vec![(101, b(), 2)]);
    let out = at(&mut o, 300_001, 2, &b_to(a()));
    assert_eq!(
        ports_out(&out),
        vec![1, 4, TRUNK],
        "flooded again after ageing"
    );
    // Everything aged out: poll has nothing to wait for.
    assert_eq!(o.poll(t(10_000_000), &mut scratch), None);
    assert!(o.fdb().is_empty());
}

#[test]
fn lookup_honours_ageing_without_poll() {
    let mut o = bridge();
    at(&mut o, 0, 1, &a_to(BROADCAST));
    let out = at(&mut o, 400_000, 2, &b_to(a()));
    assert_eq!(ports_out(&out), vec![1, 4, TRUNK]);
}

#[test]
fn broadcast_floods_within_vlan_only() {
    let mut o = bridge();
    let f = udp(BROADCAST, c(), ip(60, 60, 60, 13), ip(60, 60, 60, 255));
    let out = at(&mut o, 0, 3, &f);
    assert_eq!(frames_out(&out), vec![(TRUNK, tagged(&f, 102))]);
    let f = a_to(BROADCAST);
    assert_eq!(ports_out(&at(&mut o, 0, 1, &f)), vec![2, 4, TRUNK]);
}

#[test]
fn tagging_to_trunk_and_untagging_from_trunk() {
    let mut o = bridge();
    // far (behind the trunk, VLAN 101) broadcasts: untagged to 1, 2, 4; not 3; not back.
    let inner = udp(BROADCAST, far(), ip(50, 50, 50, 1), ip(50, 50, 50, 255));
    let out = at(&mut o, 0, TRUNK, &tagged(&inner, 101));
    assert_eq!(
        frames_out(&out),
        vec![(1, inner.clone()), (2, inner.clone()), (4, inner)]
    );
    assert_eq!(o.fdb().entries(), vec![(101, far(), TRUNK)]);
    // A to far: only the trunk, tagged 101, inner byte-identical.
    let f = a_to(far());
    let out = at(&mut o, 1, 1, &f);
    assert_eq!(out.len(), 1);
    let Output::Frame { port: TRUNK, data } = &out[0] else {
        panic!("{out:?}")
    };
    assert_eq!(vlan::vlan_of(data), Ok(Some(101)));
    assert_eq!(vlan::pop_tag(data).expect("untag"), f);
    // far to A (A now learned): untagged to port 1 only.
    let g = udp(a(), far(), ip(50, 50, 50, 1), ip(50, 50, 50, 11));
    assert_eq!(
        at(&mut o, 2, TRUNK, &tagged(&g, 101)),
        vec![Output::Frame {
            port: 1,
            data: g.clone()
        }]
    );
    // The same MAC on VLAN 102 is a different station: no access port there is A.
    let out = at(&mut o, 3, TRUNK, &tagged(&g, 102));
    assert_eq!(
        ports_out(&out),
        vec![3],
        "unknown on VLAN 102: flooded to VLAN 102 only"
    );
    // Priority bits in the TCI do not change the VLAN.
    let mut pcp = tagged(&g, 101);
    pcp[14] |= 0xe0;
    assert_eq!(ports_out(&at(&mut o, 4, TRUNK, &pcp)), vec![1]);
}

#[test]
fn unknown_or_missing_vlan_on_trunk_dropped() {
    let mut o = bridge();
    let inner = udp(BROADCAST, far(), ip(50, 50, 50, 1), ip(50, 50, 50, 255));
    assert!(at(&mut o, 0, TRUNK, &tagged(&inner, 555)).is_empty());
    assert!(
        at(&mut o, 0, TRUNK, &inner).is_empty(),
        "untagged on the trunk"
    );
    assert_eq!(o.counters().dropped(DropReason::UnknownVlan), 2);
    assert!(o.fdb().is_empty(), "nothing learned from dropped frames");
    // Truncated tags.
    assert!(at(&mut o, 0, TRUNK, &tagged(&inner, 101)[..15]).is_empty());
    assert!(at(&mut o, 0, TRUNK, &[0u8; 5]).is_empty());
    assert_eq!(o.counters().dropped(DropReason::Malformed), 2);
}

#[test]
fn anti_spoofing_on_access_ports() {
    let mut o = bridge();
    let out = at(
        &mut o,
        0,
        1,
        &udp(
            BROADCAST,
            mac(9, 9),
            ip(50, 50, 50, 11),
            ip(50, 50, 50, 255),
        ),
    );
    assert!(out.is_empty());
    assert_eq!(o.counters().dropped(DropReason::SpoofedMac), 1);
    let out = at(
        &mut o,
        0,
        1,
        &udp(BROADCAST, a(), ip(50, 50, 50, 99), ip(50, 50, 50, 255)),
    );
    assert!(out.is_empty());
    assert_eq!(o.counters().dropped(DropReason::SpoofedIp), 1);
    let out = at(
        &mut o,
        0,
        1,
        &arp_request(a(), ip(50, 50, 50, 12), ip(50, 50, 50, 1)),
    );
    assert!(out.is_empty());
    assert_eq!(o.counters().dropped(DropReason::SpoofedIp), 2);
    assert!(o.fdb().is_empty(), "spoofed sources are not learned");
    // A spoofer cannot steal B's FDB entry.
    at(&mut o, 0, 2, &b_to(BROADCAST));
    at(
        &mut o,
        1,
        1,
        &udp(BROADCAST, b(), ip(50, 50, 50, 12), ip(50, 50, 50, 255)),
    );
    assert_eq!(o.fdb().entries(), vec![(101, b(), 2)]);
    // Port 4 has port security disabled.
    let out = at(
        &mut o,
        2,
        4,
        &udp(BROADCAST, mac(7, 7), ip(1, 2, 3, 4), ip(50, 50, 50, 255)),
    );
    assert_eq!(ports_out(&out), vec![1, 2, TRUNK]);
    // DHCP from an unconfigured guest passes.
    let discover = dhcp_client(a(), smoltcp::wire::DhcpMessageType::Discover, 1, None, None);
    assert_eq!(ports_out(&at(&mut o, 3, 1, &discover)), vec![2, 4, TRUNK]);
}

#[test]
fn unknown_port_and_underlay_dropped() {
    let mut o = bridge();
    assert!(at(&mut o, 0, 42, &a_to(b())).is_empty());
    assert!(
        run(
            &mut o,
            t(0),
            Input::Underlay {
                src: ip(192, 0, 2, 1),
                data: &[0; 30]
            }
        )
        .is_empty()
    );
    assert_eq!(o.counters().dropped(DropReason::UnknownPort), 2);
}

#[test]
fn mac_move_and_port_removal() {
    let mut o = bridge();
    let inner = udp(BROADCAST, far(), ip(50, 50, 50, 1), ip(50, 50, 50, 255));
    at(&mut o, 0, TRUNK, &tagged(&inner, 101));
    assert_eq!(o.fdb().entries(), vec![(101, far(), TRUNK)]);
    // far's MAC migrates onto port 4 (security off) and announces itself.
    at(
        &mut o,
        1,
        4,
        &udp(BROADCAST, far(), ip(50, 50, 50, 1), ip(50, 50, 50, 255)),
    );
    assert_eq!(o.fdb().entries(), vec![(101, far(), 4)]);
    assert_eq!(ports_out(&at(&mut o, 2, 1, &a_to(far()))), vec![4]);
    // Re-configuring or removing the port flushes what was learned on it.
    o.apply(2, &[Update::RemoveAccess { port: 4 }]);
    assert_eq!(o.fdb().entries(), vec![(101, a(), 1)]);
    assert_eq!(ports_out(&at(&mut o, 3, 1, &a_to(far()))), vec![2, TRUNK]);
    assert!(at(&mut o, 4, 4, &a_to(far())).is_empty());
    assert_eq!(o.counters().dropped(DropReason::UnknownPort), 1);
    o.apply(
        3,
        &[Update::Access(AccessPort {
            port: 1,
            vlan: 102,
            security: secured(a(), &[ip(50, 50, 50, 11)]),
        })],
    );
    assert!(o.fdb().is_empty());
    assert_eq!(
        ports_out(&at(&mut o, 5, 1, &a_to(BROADCAST))),
        vec![3, TRUNK]
    );
}

fn seeds() -> Vec<Vec<u8>> {
    let inner = udp(BROADCAST, far(), ip(50, 50, 50, 1), ip(50, 50, 50, 255));
    vec![
        a_to(b()),
        a_to(BROADCAST),
        a_to(far()),
        arp_request(a(), ip(50, 50, 50, 11), ip(50, 50, 50, 12)),
        tagged(&inner, 101),
        tagged(&udp(a(), far(), ip(50, 50, 50, 1), ip(50, 50, 50, 11)), 101),
        tagged(&inner, 102),
        udp(BROADCAST, c(), ip(60, 60, 60, 13), ip(60, 60, 60, 255)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn process_never_panics_and_counts(
        inputs in prop::collection::vec((0u32..6, any::<bool>(), frame_bytes(seeds()), 0i64..400_000), 1..24)
    ) {
        let mut o = bridge();
        let mut out = Vec::new();
        let mut now = 0;
        for (port, underlay, data, dt) in &inputs {
            now += dt;
            let port = if *port == 5 { TRUNK } else { *port };
            let input = if *underlay && port == 0 {
                Input::Underlay { src: ip(192, 0, 2, 1), data }
            } else {
                Input::Frame { port, data }
            };
            o.process(t(now), input, &mut out);
            let _ = o.poll(t(now), &mut out);
        }
        let c = o.counters();
        prop_assert_eq!(c.rx, inputs.len() as u64);
        prop_assert_eq!(c.tx, out.len() as u64);
        prop_assert!(total_drops(&o) <= c.rx);
        for o in &out {
            let Output::Frame { port, data } = o else {
                return Err(TestCaseError::fail("OVS never emits underlay"));
            };
            // Frames to the trunk carry a tag for a configured VLAN.
            if *port == TRUNK {
                let vid = vlan::vlan_of(data);
                prop_assert!(matches!(vid, Ok(Some(101 | 102))), "{:?}", vid);
            }
        }
    }
}

/// Security groups on an OVS access port, as Neutron's `openvswitch`
/// firewall applies them: B admits nothing new but answers to its own
/// connections; the filter goes when port security does.
#[test]
fn security_groups_filter_an_access_port_statefully() {
    use switchyard_dataplane::frames;
    use switchyard_dataplane::secgroup::{Direction, Ethertype, PortFilter, Remote, Rule};
    let mut o = bridge();
    let egress_only = PortFilter {
        rules: vec![Rule {
            direction: Direction::Egress,
            ethertype: Ethertype::V4,
            protocol: None,
            port_min: None,
            port_max: None,
            remote: Remote::Any,
        }],
    };
    o.apply(
        2,
        &[Update::Filter {
            port: 2,
            filter: Some(egress_only),
        }],
    );
    assert!(o.filtered(2) && !o.filtered(1));
    // Teach the bridge where A and B are (ARP is not the filter's).
    at(
        &mut o,
        0,
        1,
        &arp_request(a(), ip(50, 50, 50, 11), ip(50, 50, 50, 12)),
    );
    at(
        &mut o,
        0,
        2,
        &arp_request(b(), ip(50, 50, 50, 12), ip(50, 50, 50, 11)),
    );
    // A's UDP to B: no ingress rule on B.
    let out = at(&mut o, 1, 1, &a_to(b()));
    assert!(!ports_out(&out).contains(&2), "{out:?}");
    assert_eq!(o.counters().dropped(DropReason::SgNoRule), 1);
    // B's own flow to A, and A's answer to it, pass.
    assert_eq!(ports_out(&at(&mut o, 2, 2, &b_to(a()))), vec![1]);
    let answer = frames::udp(
        b(),
        a(),
        ip(50, 50, 50, 11),
        ip(50, 50, 50, 12),
        5000,
        40000,
        64,
        b"x",
    );
    assert_eq!(ports_out(&at(&mut o, 3, 1, &answer)), vec![2]);
    // From beyond the trunk too: new is refused, so nothing reaches B.
    let from_far = tagged(&udp(b(), far(), ip(50, 50, 50, 1), ip(50, 50, 50, 12)), 101);
    assert!(at(&mut o, 4, TRUNK, &from_far).is_empty());
    o.apply(
        3,
        &[Update::Filter {
            port: 2,
            filter: None,
        }],
    );
    assert_eq!(ports_out(&at(&mut o, 5, 1, &a_to(b()))), vec![2]);
}

/// The emulated OVS bridge holds remote groups' member sets too: B admits
/// A's new flows only while A is in the group B's rule names.
#[test]
fn a_remote_group_rule_on_an_access_port_follows_the_group_members_update() {
    use switchyard_dataplane::secgroup::{Direction, Ethertype, PortFilter, Remote, Rule};
    let mut o = bridge();
    let from_group = PortFilter {
        rules: vec![Rule {
            direction: Direction::Ingress,
            ethertype: Ethertype::V4,
            protocol: None,
            port_min: None,
            port_max: None,
            remote: Remote::Group("g".into()),
        }],
    };
    o.apply(
        2,
        &[Update::Filter {
            port: 2,
            filter: Some(from_group),
        }],
    );
    at(
        &mut o,
        0,
        1,
        &arp_request(a(), ip(50, 50, 50, 11), ip(50, 50, 50, 12)),
    );
    at(
        &mut o,
        0,
        2,
        &arp_request(b(), ip(50, 50, 50, 12), ip(50, 50, 50, 11)),
    );
    assert!(!ports_out(&at(&mut o, 1, 1, &a_to(b()))).contains(&2));
    let a_ip = std::net::IpAddr::V4(ip(50, 50, 50, 11));
    o.apply(
        3,
        &[Update::GroupMembers {
            group: "g".into(),
            addrs: Some(vec![(a_ip, 32)]),
        }],
    );
    assert_eq!(o.group_members("g").map(|s| s.len()), Some(1));
    assert_eq!(ports_out(&at(&mut o, 2, 1, &a_to(b()))), vec![2]);
    o.apply(
        4,
        &[Update::GroupMembers {
            group: "g".into(),
            addrs: None,
        }],
    );
    assert!(o.group_members("g").is_none());
    assert_eq!(o.counters().dropped(DropReason::SgNoRule), 1);
}
