//! SR-IOV NIC pipeline: VF hairpin, tagging via the PF, spoof check, uplink
//! delivery, and property tests.

mod common;

use common::*;
use proptest::prelude::*;
use switchyard_dataplane::frames::BROADCAST;
use switchyard_dataplane::sriov::{SriovNic, Update, Vf};
use switchyard_dataplane::wire::vlan;
use switchyard_dataplane::{DropReason, Input, Mac, Output, Pipeline};

const UPLINK: u32 = 100;

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
fn far() -> Mac {
    mac(1, 1)
}

fn vf(port: u32, mac: Mac, vlan: u16, spoof_check: bool) -> Update {
    Update::Vf(Vf {
        port,
        mac,
        vlan,
        spoof_check,
    })
}

fn nic() -> SriovNic {
    let mut n = SriovNic::new();
    n.apply(
        1,
        &[
            Update::Uplink { port: UPLINK },
            vf(1, a(), 101, true),
            vf(2, b(), 101, true),
            vf(3, c(), 102, true),
            vf(4, d(), 101, false),
        ],
    );
    assert_eq!(n.version(), 1);
    assert_eq!(n.vfs().count(), 4);
    n
}

fn tagged(f: &[u8], vid: u16) -> Vec<u8> {
    vlan::push_tag(f, vid).expect("tag")
}

fn a_to(dst: Mac) -> Vec<u8> {
    udp(dst, a(), ip(50, 50, 50, 11), ip(50, 50, 50, 12))
}

#[test]
fn hairpin_vf_to_vf_same_vlan() {
    let mut n = nic();
    let f = a_to(b());
    assert_eq!(
        frame_in(&mut n, 1, &f),
        vec![Output::Frame { port: 2, data: f }]
    );
    assert_eq!(n.counters().tx, 1);
}

#[test]
fn different_vlan_goes_to_pf_tagged() {
    let mut n = nic();
    // C is a VF on VLAN 102: not hairpinned from VLAN 101.
    let f = a_to(c());
    assert_eq!(
        frame_in(&mut n, 1, &f),
        vec![Output::Frame {
            port: UPLINK,
            data: tagged(&f, 101)
        }]
    );
    // Unknown unicast leaves through the PF tagged with the VF's VLAN.
    let f = a_to(far());
    let out = frame_in(&mut n, 1, &f);
    assert_eq!(out.len(), 1);
    let Output::Frame { port: UPLINK, data } = &out[0] else {
        panic!("{out:?}")
    };
    assert_eq!(vlan::vlan_of(data), Ok(Some(101)));
    assert_eq!(vlan::pop_tag(data).expect("untag"), f);
}

#[test]
fn broadcast_hairpins_and_goes_up() {
    let mut n = nic();
    let f = a_to(BROADCAST);
    let out = frame_in(&mut n, 1, &f);
    assert_eq!(
        frames_out(&out),
        vec![(2, f.clone()), (4, f.clone()), (UPLINK, tagged(&f, 101))]
    );
}

#[test]
fn uplink_untags_to_vf() {
    let mut n = nic();
    let f = udp(a(), far(), ip(50, 50, 50, 1), ip(50, 50, 50, 11));
    assert_eq!(
        frame_in(&mut n, UPLINK, &tagged(&f, 101)),
        vec![Output::Frame {
            port: 1,
            data: f.clone()
        }]
    );
    // A on VLAN 102 is not VF 1.
    assert!(frame_in(&mut n, UPLINK, &tagged(&f, 102)).is_empty());
    assert_eq!(n.counters().dropped(DropReason::UnknownUnicast), 1);
    let bc = udp(BROADCAST, far(), ip(50, 50, 50, 1), ip(50, 50, 50, 255));
    assert_eq!(
        frames_out(&frame_in(&mut n, UPLINK, &tagged(&bc, 101))),
        vec![(1, bc.clone()), (2, bc.clone()), (4, bc)]
    );
}

#[test]
fn unknown_unicast_from_uplink_dropped() {
    let mut n = nic();
    let f = udp(mac(5, 5), far(), ip(50, 50, 50, 1), ip(50, 50, 50, 55));
    assert!(frame_in(&mut n, UPLINK, &tagged(&f, 101)).is_empty());
    assert_eq!(n.counters().dropped(DropReason::UnknownUnicast), 1);
    // A VLAN no VF uses, and untagged frames.
    assert!(frame_in(&mut n, UPLINK, &tagged(&f, 999)).is_empty());
    assert!(frame_in(&mut n, UPLINK, &f).is_empty());
    assert_eq!(n.counters().dropped(DropReason::UnknownVlan), 2);
    assert!(frame_in(&mut n, UPLINK, &tagged(&f, 101)[..16]).is_empty());
    assert_eq!(n.counters().dropped(DropReason::Malformed), 1);
    assert_eq!(n.counters().tx, 0);
}

#[test]
fn spoof_check() {
    let mut n = nic();
    let f = udp(b(), mac(9, 9), ip(50, 50, 50, 11), ip(50, 50, 50, 12));
    assert!(frame_in(&mut n, 1, &f).is_empty());
    assert_eq!(n.counters().dropped(DropReason::SpoofedMac), 1);
    // VF 4 has spoof checking off.
    let f = udp(b(), mac(9, 9), ip(1, 2, 3, 4), ip(50, 50, 50, 12));
    assert_eq!(ports_out(&frame_in(&mut n, 4, &f)), vec![2]);
    // Too short to have a source MAC.
    assert!(frame_in(&mut n, 1, &f[..11]).is_empty());
    assert_eq!(n.counters().dropped(DropReason::Malformed), 1);
}

#[test]
fn unknown_port_no_uplink_and_removal() {
    let mut n = nic();
    assert!(frame_in(&mut n, 9, &a_to(b())).is_empty());
    assert!(
        run(
            &mut n,
            t(0),
            Input::Underlay {
                src: ip(192, 0, 2, 1),
                data: &[0; 40]
            }
        )
        .is_empty()
    );
    assert_eq!(n.counters().dropped(DropReason::UnknownPort), 2);
    n.apply(2, &[Update::RemoveVf { port: 2 }]);
    assert_eq!(n.version(), 2);
    // B gone: unicast to B now leaves through the PF.
    assert_eq!(ports_out(&frame_in(&mut n, 1, &a_to(b()))), vec![UPLINK]);
    assert!(frame_in(&mut n, 2, &a_to(b())).is_empty());
    // A NIC without an uplink can only hairpin.
    let mut lonely = SriovNic::new();
    lonely.apply(1, &[vf(1, a(), 101, true), vf(2, b(), 101, true)]);
    assert_eq!(ports_out(&frame_in(&mut lonely, 1, &a_to(b()))), vec![2]);
    assert!(frame_in(&mut lonely, 1, &a_to(far())).is_empty());
    assert_eq!(lonely.counters().dropped(DropReason::NoRoute), 1);
}

#[test]
fn vf_reconfigured_mac_and_vlan() {
    let mut n = nic();
    n.apply(2, &[vf(2, mac(0, 0x22), 102, true)]);
    // Old MAC now unknown on VLAN 101: up the PF; new VLAN hairpins with C.
    assert_eq!(ports_out(&frame_in(&mut n, 1, &a_to(b()))), vec![UPLINK]);
    let f = udp(mac(0, 0x22), c(), ip(60, 60, 60, 13), ip(60, 60, 60, 22));
    assert_eq!(ports_out(&frame_in(&mut n, 3, &f)), vec![2]);
    assert!(
        frame_in(
            &mut n,
            2,
            &udp(c(), b(), ip(60, 60, 60, 22), ip(60, 60, 60, 13))
        )
        .is_empty()
    );
    assert_eq!(n.counters().dropped(DropReason::SpoofedMac), 1);
}

fn seeds() -> Vec<Vec<u8>> {
    let down = udp(a(), far(), ip(50, 50, 50, 1), ip(50, 50, 50, 11));
    vec![
        a_to(b()),
        a_to(BROADCAST),
        a_to(far()),
        tagged(&down, 101),
        tagged(
            &udp(BROADCAST, far(), ip(50, 50, 50, 1), ip(50, 50, 50, 255)),
            102,
        ),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn process_never_panics_and_counts(
        inputs in prop::collection::vec((0u32..6, any::<bool>(), frame_bytes(seeds())), 1..24)
    ) {
        let mut n = nic();
        let mut out = Vec::new();
        for (port, underlay, data) in &inputs {
            let port = if *port == 5 { UPLINK } else { *port };
            let input = if *underlay && port == 0 {
                Input::Underlay { src: ip(192, 0, 2, 1), data }
            } else {
                Input::Frame { port, data }
            };
            n.process(t(0), input, &mut out);
        }
        let c = n.counters();
        prop_assert_eq!(c.rx, inputs.len() as u64);
        prop_assert_eq!(c.tx, out.len() as u64);
        prop_assert!(total_drops(&n) <= c.rx);
        for o in &out {
            let Output::Frame { port, data } = o else {
                return Err(TestCaseError::fail("SR-IOV never emits underlay"));
            };
            if *port == UPLINK {
                prop_assert!(matches!(vlan::vlan_of(data), Ok(Some(101 | 102))));
            }
        }
    }
}
