//! Fabric switch pipeline: VLAN-aware learning and flooding across trunks,
//! per-trunk VLAN filters, ageing, and property tests.

mod common;

use std::collections::BTreeSet;

use common::*;
use proptest::prelude::*;
use switchyard_dataplane::fabric::{FabricSwitch, Update};
use switchyard_dataplane::frames::BROADCAST;
use switchyard_dataplane::wire::vlan;
use switchyard_dataplane::{DropReason, Duration, Input, Mac, Output, Pipeline};

fn a() -> Mac {
    mac(0, 1)
}
fn b() -> Mac {
    mac(0, 2)
}

fn trunk(port: u32, vlans: Option<&[u16]>) -> Update {
    Update::Trunk {
        port,
        vlans: vlans.map(|v| v.iter().copied().collect::<BTreeSet<u16>>()),
    }
}

/// Port 1 carries every VLAN (the gateway), 2 carries 101 and 102 (compute-1),
/// 3 carries 101 (compute-3), 4 carries 200.
fn fabric() -> FabricSwitch {
    let mut f = FabricSwitch::new();
    f.apply(&[
        trunk(1, None),
        trunk(2, Some(&[101, 102])),
        trunk(3, Some(&[101])),
        trunk(4, Some(&[200])),
    ]);
    f
}

fn frame(dst: Mac, src: Mac, vid: u16) -> Vec<u8> {
    vlan::push_tag(&udp(dst, src, ip(50, 50, 50, 11), ip(50, 50, 50, 12)), vid).expect("tag")
}

fn at(f: &mut FabricSwitch, ms: i64, port: u32, data: &[u8]) -> Vec<Output> {
    run(f, t(ms), Input::Frame { port, data })
}

#[test]
fn floods_unknown_to_trunks_carrying_the_vlan() {
    let mut s = fabric();
    let f = frame(b(), a(), 101);
    let out = at(&mut s, 0, 1, &f);
    // Tag kept, frame byte-identical; port 4 does not carry 101.
    assert_eq!(frames_out(&out), vec![(2, f.clone()), (3, f.clone())]);
    assert_eq!(s.fdb().entries(), vec![(101, a(), 1)]);
    let f = frame(BROADCAST, a(), 200);
    assert_eq!(frames_out(&at(&mut s, 0, 1, &f)), vec![(4, f)]);
}

#[test]
fn learns_per_vlan() {
    let mut s = fabric();
    at(&mut s, 0, 1, &frame(BROADCAST, a(), 101));
    // B on port 3 answers A on VLAN 101: unicast to port 1.
    let f = frame(a(), b(), 101);
    assert_eq!(
        at(&mut s, 1, 3, &f),
        vec![Output::Frame { port: 1, data: f }]
    );
    // A on VLAN 102 is unknown: flooded to the trunks carrying 102 (1 only, from 2).
    let f = frame(a(), b(), 102);
    assert_eq!(ports_out(&at(&mut s, 2, 2, &f)), vec![1]);
    assert_eq!(
        s.fdb().entries(),
        vec![(101, a(), 1), (101, b(), 3), (102, b(), 2)]
    );
    // A frame to a MAC learned on the ingress port is not sent back.
    assert!(at(&mut s, 3, 1, &frame(a(), mac(3, 3), 101)).is_empty());
}

#[test]
fn untagged_and_filtered_vlans_dropped() {
    let mut s = fabric();
    let plain = udp(BROADCAST, a(), ip(50, 50, 50, 11), ip(50, 50, 50, 255));
    assert!(at(&mut s, 0, 1, &plain).is_empty());
    // Ingress filter: port 3 carries 101 only, port 4 carries 200 only.
    assert!(at(&mut s, 0, 3, &frame(BROADCAST, a(), 102)).is_empty());
    assert!(at(&mut s, 0, 4, &frame(BROADCAST, a(), 101)).is_empty());
    assert_eq!(s.counters().dropped(DropReason::UnknownVlan), 3);
    assert!(s.fdb().is_empty(), "nothing learned from filtered frames");
    assert!(at(&mut s, 0, 1, &[0u8; 13]).is_empty());
    assert!(at(&mut s, 0, 1, &frame(BROADCAST, a(), 101)[..17]).is_empty());
    assert_eq!(s.counters().dropped(DropReason::Malformed), 2);
    assert!(
        run(
            &mut s,
            t(0),
            Input::Underlay {
                src: ip(1, 1, 1, 1),
                data: &[0; 40]
            }
        )
        .is_empty()
    );
    assert_eq!(s.counters().dropped(DropReason::UnknownPort), 1);
    assert_eq!(s.counters().tx, 0);
}

#[test]
fn ageing_and_mac_moves() {
    let mut s = fabric();
    at(&mut s, 0, 3, &frame(BROADCAST, b(), 101));
    let mut scratch = Vec::new();
    assert_eq!(
        s.poll(t(5), &mut scratch),
        Some(t(0) + Duration::from_secs(300))
    );
    assert_eq!(
        ports_out(&at(&mut s, 10, 1, &frame(b(), a(), 101))),
        vec![3]
    );
    // B moves behind port 2 (migration + gratuitous ARP).
    at(&mut s, 20, 2, &frame(BROADCAST, b(), 101));
    assert_eq!(
        ports_out(&at(&mut s, 30, 1, &frame(b(), a(), 101))),
        vec![2]
    );
    // Aged out: flooded again.
    s.poll(t(400_000), &mut scratch);
    assert!(s.fdb().is_empty());
    assert_eq!(
        ports_out(&at(&mut s, 400_001, 1, &frame(b(), a(), 101))),
        vec![2, 3]
    );
}

#[test]
fn removing_a_trunk_flushes_it() {
    let mut s = fabric();
    at(&mut s, 0, 3, &frame(BROADCAST, b(), 101));
    s.apply(&[Update::RemoveTrunk { port: 3 }]);
    assert!(s.fdb().is_empty());
    assert_eq!(ports_out(&at(&mut s, 1, 1, &frame(b(), a(), 101))), vec![2]);
    assert!(at(&mut s, 2, 3, &frame(a(), b(), 101)).is_empty());
}

#[test]
fn narrowing_a_trunk_filter_stops_unicast_to_it() {
    let mut s = fabric();
    at(&mut s, 0, 2, &frame(BROADCAST, b(), 102));
    s.apply(&[trunk(2, Some(&[101]))]);
    let out = at(&mut s, 1, 1, &frame(b(), a(), 102));
    assert!(
        !ports_out(&out).contains(&2),
        "port 2 no longer carries VLAN 102: {out:?}"
    );
}

#[test]
fn frame_on_unknown_port_counted_as_unknown_port() {
    let mut s = fabric();
    assert!(at(&mut s, 0, 9, &frame(BROADCAST, a(), 101)).is_empty());
    assert_eq!(s.counters().dropped(DropReason::UnknownPort), 1);
}

fn seeds() -> Vec<Vec<u8>> {
    vec![
        frame(b(), a(), 101),
        frame(BROADCAST, a(), 102),
        frame(a(), b(), 200),
        udp(BROADCAST, a(), ip(50, 50, 50, 11), ip(50, 50, 50, 255)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn process_never_panics_and_counts(
        inputs in prop::collection::vec((0u32..6, frame_bytes(seeds()), 0i64..200_000), 1..24)
    ) {
        let mut s = fabric();
        let mut out = Vec::new();
        let mut now = 0;
        for (port, data, dt) in &inputs {
            now += dt;
            let input = if *port == 0 {
                Input::Underlay { src: ip(192, 0, 2, 1), data }
            } else {
                Input::Frame { port: *port, data }
            };
            s.process(t(now), input, &mut out);
            let _ = s.poll(t(now), &mut out);
        }
        let c = s.counters();
        prop_assert_eq!(c.rx, inputs.len() as u64);
        prop_assert_eq!(c.tx, out.len() as u64);
        prop_assert!(total_drops(&s) <= c.rx);
        for o in &out {
            let Output::Frame { port, data } = o else {
                return Err(TestCaseError::fail("fabric never emits underlay"));
            };
            // Egress filter holds: every frame out is tagged with a VLAN its trunk carries.
            let vid = vlan::vlan_of(data);
            let ok = match (port, vid) {
                (1, Ok(Some(_))) => true,
                (2, Ok(Some(v))) => v == 101 || v == 102,
                (3, Ok(Some(v))) => v == 101,
                (4, Ok(Some(v))) => v == 200,
                _ => false,
            };
            prop_assert!(ok, "port {} vid {:?}", port, vid);
        }
    }
}
