//! Property tests of the allocators: IPAM on a small subnet, VNIs from a small
//! range, provider VLANs and dynamic VLAN segments sharing a small physnet range.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use common::*;
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::json;
use switchyard_ml2::Ml2Config;
use switchyard_ml2::ops::{networks, ports};
use switchyard_model::{NetworkType, SegKey, State, VIF_TYPE_BINDING_FAILED};

// ---------------------------------------------------------------------------
// IPAM
// ---------------------------------------------------------------------------

const CIDR: &str = "10.0.0.0/28";
/// Default pool of 10.0.0.0/28 with gateway .1: .2 .. .14.
const POOL: std::ops::RangeInclusive<u8> = 2..=14;

fn ip(o: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, o))
}

#[derive(Debug, Clone)]
enum IpOp {
    /// A port with no fixed_ips: one address from the pool.
    Create,
    /// A port asking for 10.0.0.o.
    CreateAt(u8),
    /// A port created in a transaction that is then rolled back.
    CreateRolledBack,
    Delete(Index),
    /// Update a port's fixed_ips to 10.0.0.o.
    MoveTo(Index, u8),
}

fn ip_op() -> impl Strategy<Value = IpOp> {
    prop_oneof![
        5 => Just(IpOp::Create),
        2 => prop_oneof![Just(0u8), 2u8..=15].prop_map(IpOp::CreateAt),
        1 => Just(IpOp::CreateRolledBack),
        3 => any::<Index>().prop_map(IpOp::Delete),
        1 => (any::<Index>(), POOL).prop_map(|(i, o)| IpOp::MoveTo(i, o)),
    ]
}

fn pick(model: &BTreeMap<String, IpAddr>, i: &Index) -> Option<String> {
    if model.is_empty() {
        None
    } else {
        model.keys().nth(i.index(model.len())).cloned()
    }
}

/// Addresses of the ports, from the port table itself.
fn port_ips(st: &State, subnet: &str) -> Vec<(String, IpAddr)> {
    st.ports
        .values()
        .flat_map(|p| {
            p.fixed_ips
                .iter()
                .filter(|f| f.subnet_id == subnet)
                .map(|f| (p.id.clone(), f.ip_address))
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn ipam_never_hands_out_an_address_twice(ops in prop::collection::vec(ip_op(), 1..60)) {
        let ml2 = ml2();
        let mut st = State::new();
        let mut clock = Clock::new();
        let ctx = clock.ctx();
        let n = net(&ml2, &mut st, &ctx);
        let sid = create_subnet(&mut st, &ctx, &n, CIDR);
        let pool: BTreeSet<IpAddr> = POOL.map(ip).collect();
        prop_assert_eq!(
            st.subnets[&sid].allocation_pools.iter().map(|p| (p.start, p.end)).collect::<Vec<_>>(),
            vec![(ip(2), ip(14))]
        );
        // port id -> address
        let mut model: BTreeMap<String, IpAddr> = BTreeMap::new();

        for op in ops {
            clock.advance(1);
            let ctx = clock.ctx();
            let held: BTreeSet<IpAddr> = model.values().copied().collect();
            let full = held.len() == pool.len();
            match op {
                IpOp::Create => {
                    let r = create_port(&ml2, &mut st, &ctx, json!({"network_id": n}));
                    if full {
                        assert_err(r, 409, "IpAddressGenerationFailure");
                    } else {
                        let id = r.unwrap();
                        let got = port(&st, &id).fixed_ips.clone();
                        prop_assert_eq!(got.len(), 1);
                        let a = got[0].ip_address;
                        prop_assert!(pool.contains(&a), "{} outside the pool", a);
                        prop_assert!(!held.contains(&a), "{} handed out twice", a);
                        model.insert(id, a);
                    }
                }
                IpOp::CreateAt(o) => {
                    let r = create_port(
                        &ml2,
                        &mut st,
                        &ctx,
                        json!({"network_id": n, "fixed_ips": [{"subnet_id": sid, "ip_address": ip(o).to_string()}]}),
                    );
                    if o == 0 || o == 15 {
                        assert_err(r, 400, "InvalidIpForSubnet");
                    } else if held.contains(&ip(o)) {
                        assert_err(r, 409, "IpAddressInUse");
                    } else {
                        let id = r.unwrap();
                        prop_assert_eq!(port(&st, &id).fixed_ips[0].ip_address, ip(o));
                        model.insert(id, ip(o));
                    }
                }
                IpOp::CreateRolledBack => {
                    st.begin();
                    let r = ports::create(&ml2, &mut st, &ctx, &obj(json!({"network_id": n})));
                    st.rollback();
                    if full {
                        assert_err(r, 409, "IpAddressGenerationFailure");
                    } else {
                        let id = r.unwrap();
                        prop_assert!(!st.ports.contains_key(&id));
                    }
                }
                IpOp::Delete(i) => {
                    if let Some(id) = pick(&model, &i) {
                        delete_port(&mut st, &ctx, &id).unwrap();
                        model.remove(&id);
                    }
                }
                IpOp::MoveTo(i, o) => {
                    if let Some(id) = pick(&model, &i) {
                        let r = update_port(
                            &ml2,
                            &mut st,
                            &ctx,
                            &id,
                            json!({"fixed_ips": [{"ip_address": ip(o).to_string()}]}),
                        );
                        let holder = model.iter().find(|(_, a)| **a == ip(o)).map(|(k, _)| k.clone());
                        match holder {
                            Some(h) if h != id => assert_err(r, 409, "IpAddressInUse"),
                            _ => {
                                r.unwrap();
                                model.insert(id, ip(o));
                            }
                        }
                    }
                }
            }

            // Invariants, read from the port table.
            let ips = port_ips(&st, &sid);
            let distinct: BTreeSet<IpAddr> = ips.iter().map(|(_, a)| *a).collect();
            prop_assert_eq!(distinct.len(), ips.len(), "duplicate address in {:?}", ips);
            prop_assert!(distinct.is_subset(&pool), "address outside the pool: {:?}", distinct);
            let from_ports: BTreeMap<String, IpAddr> = ips.into_iter().collect();
            prop_assert_eq!(&from_ports, &model);
            prop_assert_eq!(st.ports.len(), model.len());
            // The index agrees with the table.
            let index: BTreeMap<IpAddr, String> =
                st.subnet_ips(&sid).cloned().unwrap_or_default();
            let expect: BTreeMap<IpAddr, String> =
                model.iter().map(|(k, v)| (*v, k.clone())).collect();
            prop_assert_eq!(index, expect);
        }
    }
}

#[test]
fn ipam_exhausts_exactly_at_the_pool_size_and_recovers() {
    let ml2 = ml2();
    let mut st = State::new();
    let clock = Clock::new();
    let ctx = clock.ctx();
    let n = net(&ml2, &mut st, &ctx);
    create_subnet(&mut st, &ctx, &n, CIDR);
    let mut ids = Vec::new();
    for _ in POOL {
        ids.push(create_port(&ml2, &mut st, &ctx, json!({"network_id": n})).unwrap());
    }
    let before = tables(&st);
    assert_err(
        create_port(&ml2, &mut st, &ctx, json!({"network_id": n})),
        409,
        "IpAddressGenerationFailure",
    );
    assert_eq!(tables(&st), before);
    // Free one in the middle: exactly that one comes back.
    let freed = port(&st, &ids[5]).fixed_ips[0].ip_address;
    delete_port(&mut st, &ctx, &ids[5]).unwrap();
    let p = create_port(&ml2, &mut st, &ctx, json!({"network_id": n})).unwrap();
    assert_eq!(port(&st, &p).fixed_ips[0].ip_address, freed);
    assert_err(
        create_port(&ml2, &mut st, &ctx, json!({"network_id": n})),
        409,
        "IpAddressGenerationFailure",
    );
}

// ---------------------------------------------------------------------------
// VNIs
// ---------------------------------------------------------------------------

const VNI_LO: u32 = 1000;
const VNI_HI: u32 = 1007;

#[derive(Debug, Clone)]
enum NetOp {
    Create,
    /// Admin asks for a VNI (1008 and 1009 are outside the project range).
    CreateVni(u32),
    CreateRolledBack,
    Delete(Index),
}

fn net_op() -> impl Strategy<Value = NetOp> {
    prop_oneof![
        5 => Just(NetOp::Create),
        2 => (VNI_LO..=VNI_HI + 2).prop_map(NetOp::CreateVni),
        1 => Just(NetOp::CreateRolledBack),
        3 => any::<Index>().prop_map(NetOp::Delete),
    ]
}

fn vni_of(st: &State, n: &str) -> u32 {
    let s = static_segment(st, n);
    assert_eq!(s.network_type, NetworkType::Vxlan);
    s.segmentation_id.expect("vni")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn vnis_are_unique_and_exhaust_exactly_when_the_range_is_full(
        ops in prop::collection::vec(net_op(), 1..40),
    ) {
        let ml2 = ml2_with(Ml2Config {
            vni_ranges: vec![format!("{VNI_LO}:{VNI_HI}")],
            ..Ml2Config::default()
        });
        let mut st = State::new();
        let ctx = Clock::new().ctx();
        let mut model: BTreeMap<String, u32> = BTreeMap::new();
        for op in ops {
            let held: BTreeSet<u32> = model.values().copied().collect();
            let full = (VNI_LO..=VNI_HI).all(|v| held.contains(&v));
            match op {
                NetOp::Create => {
                    let r = create_network(&ml2, &mut st, &ctx, json!({}));
                    if full {
                        assert_err(r, 503, "NoNetworkAvailable");
                    } else {
                        let id = r.unwrap();
                        let v = vni_of(&st, &id);
                        prop_assert!((VNI_LO..=VNI_HI).contains(&v));
                        prop_assert!(!held.contains(&v), "VNI {} given twice", v);
                        model.insert(id, v);
                    }
                }
                NetOp::CreateVni(v) => {
                    let r = create_network(
                        &ml2,
                        &mut st,
                        &ctx,
                        json!({"provider:network_type": "vxlan", "provider:segmentation_id": v}),
                    );
                    if held.contains(&v) {
                        assert_err(r, 409, "TunnelIdInUse");
                    } else {
                        let id = r.unwrap();
                        prop_assert_eq!(vni_of(&st, &id), v);
                        model.insert(id, v);
                    }
                }
                NetOp::CreateRolledBack => {
                    st.begin();
                    let r = networks::create(&ml2, &mut st, &ctx, &obj(json!({})));
                    st.rollback();
                    if full {
                        assert_err(r, 503, "NoNetworkAvailable");
                    } else {
                        prop_assert!(!st.networks.contains_key(&r.unwrap()));
                    }
                }
                NetOp::Delete(i) => {
                    if !model.is_empty() {
                        let id = model.keys().nth(i.index(model.len())).cloned().unwrap();
                        delete_network(&ml2, &mut st, &ctx, &id).unwrap();
                        model.remove(&id);
                    }
                }
            }
            // Invariants from the segment table.
            let vnis: Vec<(String, u32)> = st
                .segments
                .values()
                .map(|s| (s.network_id.clone(), s.segmentation_id.unwrap()))
                .collect();
            let distinct: BTreeSet<u32> = vnis.iter().map(|(_, v)| *v).collect();
            prop_assert_eq!(distinct.len(), vnis.len(), "duplicate VNI: {:?}", vnis);
            prop_assert_eq!(vnis.into_iter().collect::<BTreeMap<_, _>>(), model.clone());
            for (n, v) in &model {
                let holder = st.segment_holder(SegKey::Tunnel(NetworkType::Vxlan, *v)).unwrap();
                prop_assert_eq!(&st.segments[holder].network_id, n);
            }
            for v in VNI_LO..=VNI_HI + 2 {
                prop_assert_eq!(
                    st.segment_holder(SegKey::Tunnel(NetworkType::Vxlan, v)).is_some(),
                    model.values().any(|x| *x == v)
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------
// VLANs: provider networks and dynamic segments on one small physnet range
// ---------------------------------------------------------------------------

const VLAN_LO: u32 = 100;
const VLAN_HI: u32 = 103;

fn small_vlan_ml2() -> switchyard_ml2::Ml2 {
    ml2_with(Ml2Config {
        network_vlan_ranges: vec![format!("{PHYSNET}:{VLAN_LO}:{VLAN_HI}")],
        ..Ml2Config::default()
    })
}

#[derive(Debug, Clone)]
enum VlanOp {
    /// Provider VLAN network on physnet1, with or without a VLAN id.
    Provider(Option<u32>),
    /// A project (VXLAN) network with a port on the OVS host.
    TenantWithOvsPort,
    /// A port on an existing project network: OVS or SR-IOV host.
    Port(Index, bool),
    DeletePort(Index),
    /// Deletes a network with its ports.
    DeleteNet(Index),
}

fn vlan_op() -> impl Strategy<Value = VlanOp> {
    prop_oneof![
        2 => prop::option::of(VLAN_LO - 2..=VLAN_HI + 2).prop_map(VlanOp::Provider),
        3 => Just(VlanOp::TenantWithOvsPort),
        2 => (any::<Index>(), any::<bool>()).prop_map(|(i, s)| VlanOp::Port(i, s)),
        2 => any::<Index>().prop_map(VlanOp::DeletePort),
        2 => any::<Index>().prop_map(VlanOp::DeleteNet),
    ]
}

/// VLANs of physnet1 held by any segment, from the segment table.
fn held_vlans(st: &State) -> BTreeSet<u32> {
    st.segments
        .values()
        .filter(|s| s.network_type == NetworkType::Vlan)
        .filter_map(|s| s.segmentation_id)
        .collect()
}

fn project_networks(st: &State) -> Vec<String> {
    st.networks
        .keys()
        .filter(|n| static_segment(st, n).network_type == NetworkType::Vxlan)
        .cloned()
        .collect()
}

/// The invariants of VLAN allocation and dynamic segments.
fn check_vlan_invariants(st: &State) -> Result<(), TestCaseError> {
    let vlans: Vec<(String, u32)> = st
        .segments
        .values()
        .filter(|s| s.network_type == NetworkType::Vlan)
        .map(|s| (s.id.clone(), s.segmentation_id.unwrap()))
        .collect();
    let distinct: BTreeSet<u32> = vlans.iter().map(|(_, v)| *v).collect();
    prop_assert_eq!(distinct.len(), vlans.len(), "duplicate VLAN: {:?}", vlans);
    for (id, v) in &vlans {
        prop_assert_eq!(
            st.segment_holder(SegKey::Vlan(PHYSNET, *v)),
            Some(id.as_str())
        );
    }
    for v in VLAN_LO - 2..=VLAN_HI + 2 {
        if !distinct.contains(&v) {
            prop_assert_eq!(st.segment_holder(SegKey::Vlan(PHYSNET, v)), None);
        }
    }
    for n in st.networks.keys() {
        let dynamic = dynamic_segments(st, n);
        prop_assert!(dynamic.len() <= 1, "two dynamic segments on {}", n);
        for d in &dynamic {
            let v = d.segmentation_id.unwrap();
            prop_assert!((VLAN_LO..=VLAN_HI).contains(&v));
            // No leak: every dynamic segment is used by a binding level.
            let used = st.network_port_ids(n).any(|pid| {
                st.ports[pid]
                    .bindings
                    .iter()
                    .any(|b| b.levels.iter().any(|l| l.segment_id == d.id))
            });
            prop_assert!(used, "dynamic segment {} of {} is unused", d.id, n);
        }
    }
    for p in st.ports.values() {
        let b = p.active_binding();
        if b.vif_type == VIF_TYPE_BINDING_FAILED {
            prop_assert!(b.levels.is_empty());
        }
        for l in &b.levels {
            let s = st.segments.get(&l.segment_id);
            prop_assert!(s.is_some_and(|s| s.network_id == p.network_id));
        }
        if b.vif_type == "hw_veb" {
            let seg = &st.segments[&b.levels[1].segment_id];
            prop_assert_eq!(
                b.vif_details.get("vlan"),
                Some(&json!(seg.segmentation_id.unwrap().to_string()))
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn vlans_are_unique_across_provider_and_dynamic_segments(
        ops in prop::collection::vec(vlan_op(), 1..40),
    ) {
        let ml2 = small_vlan_ml2();
        let mut st = State::new();
        let clock = Clock::new();
        report_ovs(&mut st, &clock, "ovs-1");
        report_sriov(&mut st, &clock, "sriov-1");
        let ctx = clock.ctx();
        let range: BTreeSet<u32> = (VLAN_LO..=VLAN_HI).collect();
        let mut u = Universe::default();

        for op in ops {
            let held = held_vlans(&st);
            let range_full = range.is_subset(&held);
            match op {
                VlanOp::Provider(v) => {
                    let mut body = json!({"provider:network_type": "vlan", "provider:physical_network": PHYSNET});
                    if let Some(v) = v {
                        body["provider:segmentation_id"] = json!(v);
                    }
                    let r = create_network(&ml2, &mut st, &ctx, body);
                    match v {
                        Some(v) if held.contains(&v) => assert_err(r, 409, "VlanIdInUse"),
                        None if range_full => assert_err(r, 503, "NoNetworkAvailable"),
                        _ => {
                            let id = r.unwrap();
                            let got = static_segment(&st, &id).segmentation_id.unwrap();
                            prop_assert!(!held.contains(&got));
                            if let Some(v) = v {
                                prop_assert_eq!(got, v);
                            } else {
                                prop_assert!(range.contains(&got));
                            }
                        }
                    }
                }
                VlanOp::TenantWithOvsPort => {
                    let n = net(&ml2, &mut st, &ctx);
                    let p = port_on(&ml2, &mut st, &ctx, &n, "ovs-1", "normal");
                    if range_full {
                        prop_assert_eq!(vif_type(&st, &p), VIF_TYPE_BINDING_FAILED);
                        prop_assert!(dynamic_segments(&st, &n).is_empty());
                    } else {
                        prop_assert_eq!(vif_type(&st, &p), "ovs");
                        let d = dynamic_segments(&st, &n);
                        prop_assert_eq!(d.len(), 1);
                        prop_assert!(!held.contains(&d[0].segmentation_id.unwrap()));
                    }
                }
                VlanOp::Port(i, sriov) => {
                    let nets = project_networks(&st);
                    if !nets.is_empty() {
                        let n = nets[i.index(nets.len())].clone();
                        let existing = dynamic_segments(&st, &n);
                        let (host, vnic, vif) = if sriov {
                            ("sriov-1", "direct", "hw_veb")
                        } else {
                            ("ovs-1", "normal", "ovs")
                        };
                        let p = port_on(&ml2, &mut st, &ctx, &n, host, vnic);
                        let after = dynamic_segments(&st, &n);
                        if !existing.is_empty() {
                            // Shared with the network's other ports.
                            prop_assert_eq!(vif_type(&st, &p), vif);
                            prop_assert_eq!(&after, &existing);
                        } else if range_full {
                            prop_assert_eq!(vif_type(&st, &p), VIF_TYPE_BINDING_FAILED);
                            prop_assert!(after.is_empty());
                        } else {
                            prop_assert_eq!(vif_type(&st, &p), vif);
                            prop_assert_eq!(after.len(), 1);
                        }
                    }
                }
                VlanOp::DeletePort(i) => {
                    let ids: Vec<String> = st.ports.keys().cloned().collect();
                    if !ids.is_empty() {
                        let id = &ids[i.index(ids.len())];
                        let n = port(&st, id).network_id.clone();
                        let dyn_before = dynamic_segments(&st, &n);
                        let others_bound = st
                            .network_port_ids(&n)
                            .filter(|pid| *pid != id)
                            .any(|pid| port(&st, pid).active_binding().levels.len() == 2);
                        delete_port(&mut st, &ctx, id).unwrap();
                        let dyn_after = dynamic_segments(&st, &n);
                        if others_bound {
                            prop_assert_eq!(dyn_after, dyn_before);
                        } else {
                            prop_assert!(dyn_after.is_empty());
                            for d in dyn_before {
                                prop_assert_eq!(vlan_holder(&st, d.segmentation_id.unwrap()), None);
                            }
                        }
                    }
                }
                VlanOp::DeleteNet(i) => {
                    let nets: Vec<String> = st.networks.keys().cloned().collect();
                    if !nets.is_empty() {
                        let n = nets[i.index(nets.len())].clone();
                        let freed: Vec<u32> = st
                            .network_segments(&n)
                            .iter()
                            .filter_map(|s| s.segmentation_id)
                            .collect();
                        let pids: Vec<String> = st.network_port_ids(&n).cloned().collect();
                        if !pids.is_empty() {
                            assert_err(delete_network(&ml2, &mut st, &ctx, &n), 409, "NetworkInUse");
                        }
                        for pid in pids {
                            delete_port(&mut st, &ctx, &pid).unwrap();
                        }
                        delete_network(&ml2, &mut st, &ctx, &n).unwrap();
                        for v in freed {
                            if (VLAN_LO - 2..=VLAN_HI + 2).contains(&v) {
                                prop_assert_eq!(vlan_holder(&st, v), None);
                            }
                        }
                    }
                }
            }
            check_vlan_invariants(&st)?;
            u.observe(&st);
        }
        assert_indexes_match_rebuild(&st, &u);
    }
}

#[test]
fn the_fifth_network_finds_no_dynamic_vlan_until_one_is_freed() {
    let ml2 = small_vlan_ml2();
    let mut st = State::new();
    let clock = Clock::new();
    report_ovs(&mut st, &clock, "ovs-1");
    report_sriov(&mut st, &clock, "sriov-1");
    let ctx = clock.ctx();
    let mut nets = Vec::new();
    let mut ports = Vec::new();
    for want in VLAN_LO..=VLAN_HI {
        let n = net(&ml2, &mut st, &ctx);
        let p = port_on(&ml2, &mut st, &ctx, &n, "ovs-1", "normal");
        assert_eq!(vif_type(&st, &p), "ovs");
        assert_eq!(dynamic_segments(&st, &n)[0].segmentation_id, Some(want));
        nets.push(n);
        ports.push(p);
    }
    let n5 = net(&ml2, &mut st, &ctx);
    let p5 = port_on(&ml2, &mut st, &ctx, &n5, "ovs-1", "normal");
    assert_eq!(vif_type(&st, &p5), VIF_TYPE_BINDING_FAILED);
    let s5 = port_on(&ml2, &mut st, &ctx, &n5, "sriov-1", "direct");
    assert_eq!(vif_type(&st, &s5), VIF_TYPE_BINDING_FAILED);
    assert!(dynamic_segments(&st, &n5).is_empty());
    // But the full range does not stop SR-IOV on a network that has its VLAN.
    let s2 = port_on(&ml2, &mut st, &ctx, &nets[2], "sriov-1", "direct");
    assert_eq!(
        port(&st, &s2).active_binding().vif_details.get("vlan"),
        Some(&json!("102"))
    );
    // Provider VLANs: the taken ones are 409, an automatic one is 503.
    assert_err(
        create_network(
            &ml2,
            &mut st,
            &ctx,
            json!({"provider:network_type": "vlan", "provider:physical_network": PHYSNET, "provider:segmentation_id": 101}),
        ),
        409,
        "VlanIdInUse",
    );
    assert_err(
        create_network(
            &ml2,
            &mut st,
            &ctx,
            json!({"provider:network_type": "vlan", "provider:physical_network": PHYSNET}),
        ),
        503,
        "NoNetworkAvailable",
    );

    // Free network 1 (VLAN 101): its port first, then the network.
    assert_err(
        delete_network(&ml2, &mut st, &ctx, &nets[1]),
        409,
        "NetworkInUse",
    );
    delete_port(&mut st, &ctx, &ports[1]).unwrap();
    assert_eq!(vlan_holder(&st, 101), None);
    delete_network(&ml2, &mut st, &ctx, &nets[1]).unwrap();
    // The failed port binds on its next update, with VLAN 101; SR-IOV shares it.
    update_port(&ml2, &mut st, &ctx, &p5, json!({"name": "retry"})).unwrap();
    assert_eq!(vif_type(&st, &p5), "ovs");
    assert_eq!(dynamic_segments(&st, &n5)[0].segmentation_id, Some(101));
    update_port(&ml2, &mut st, &ctx, &s5, json!({"name": "retry"})).unwrap();
    assert_eq!(
        port(&st, &s5).active_binding().vif_details.get("vlan"),
        Some(&json!("101"))
    );

    // A network deleted with its DHCP port (auto-deleted) frees its VLAN too.
    let dhcp = create_port(
        &ml2,
        &mut st,
        &ctx,
        json!({"network_id": nets[3], "device_owner": "network:dhcp", "binding:host_id": "ovs-1"}),
    )
    .unwrap();
    assert_eq!(vif_type(&st, &dhcp), "ovs");
    delete_port(&mut st, &ctx, &ports[3]).unwrap();
    assert!(vlan_holder(&st, 103).is_some());
    delete_network(&ml2, &mut st, &ctx, &nets[3]).unwrap();
    assert_eq!(vlan_holder(&st, 103), None);
    assert!(!st.ports.contains_key(&dhcp));
    let p = create_network(
        &ml2,
        &mut st,
        &ctx,
        json!({"provider:network_type": "vlan", "provider:physical_network": PHYSNET}),
    )
    .unwrap();
    assert_eq!(static_segment(&st, &p).segmentation_id, Some(103));
}
