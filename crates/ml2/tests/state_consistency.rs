//! `State` keeps its indexes (addresses, MACs, segment allocations, per-network
//! lists, agents) in step with its tables across commits and rollbacks: after any
//! sequence of transactions, every lookup answers as a `State` rebuilt with
//! `State::from_records` from the remaining records does.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::json;
use switchyard_ml2::ops::{networks, ports, subnets};
use switchyard_ml2::{Ctx, Ml2};
use switchyard_model::{NeutronError, State};

struct World {
    ml2: Ml2,
    st: State,
    clock: Clock,
    u: Universe,
}

fn world() -> World {
    let ml2 = ml2();
    let mut st = State::new();
    let clock = Clock::new();
    report_ovs(&mut st, &clock, "ovs-1");
    report_sriov(&mut st, &clock, "sriov-1");
    report_vrouter(&mut st, &clock, "vr-1");
    World {
        ml2,
        st,
        clock,
        u: Universe::default(),
    }
}

/// A network with a /28 subnet, inside the caller's transaction.
fn net_with_subnet(
    ml2: &Ml2,
    st: &mut State,
    ctx: &Ctx,
    cidr: &str,
) -> Result<String, NeutronError> {
    let n = networks::create(ml2, st, ctx, &obj(json!({"name": "n"})))?;
    subnets::create(
        st,
        ctx,
        &obj(json!({"network_id": n, "ip_version": 4, "cidr": cidr})),
    )?;
    Ok(n)
}

#[test]
fn failed_bulk_port_create_leaves_indexes_as_a_rebuild() {
    let mut w = world();
    let ctx = w.clock.ctx();
    let n = txn(&mut w.st, |st| {
        net_with_subnet(&w.ml2, st, &ctx, "10.0.0.0/28")
    })
    .unwrap();
    let sid = w.st.network_subnets(&n)[0].id.clone();
    let a = port_on(&w.ml2, &mut w.st, &ctx, &n, "vr-1", "normal");
    let b = port_on(&w.ml2, &mut w.st, &ctx, &n, "vr-1", "normal");
    let ip_b = port(&w.st, &b).fixed_ips[0].ip_address;
    let before = tables(&w.st);
    w.u.observe(&w.st);

    // A bulk request as the API runs it: every item in one transaction. The
    // items allocate addresses, MACs and a dynamic VLAN, move and delete other
    // ports; the last item asks for an address in use and fails.
    w.st.begin();
    let bulk = |st: &mut State, u: &mut Universe| -> Result<(), NeutronError> {
        let ml2 = &w.ml2;
        for host in ["ovs-1", "sriov-1", "vr-1"] {
            let vnic = if host == "sriov-1" {
                "direct"
            } else {
                "normal"
            };
            ports::create(
                ml2,
                st,
                &ctx,
                &obj(json!({"network_id": n, "binding:host_id": host, "binding:vnic_type": vnic})),
            )?;
            u.observe(st);
        }
        // Port a moves to a new address, b is deleted and its address re-used.
        ports::update(
            ml2,
            st,
            &ctx,
            &a,
            &obj(
                json!({"fixed_ips": [{"subnet_id": sid, "ip_address": "10.0.0.14"}], "binding:host_id": "ovs-1"}),
            ),
        )?;
        ports::delete(st, &ctx, &b)?;
        ports::create(
            ml2,
            st,
            &ctx,
            &obj(json!({"network_id": n, "fixed_ips": [{"ip_address": ip_b.to_string()}]})),
        )?;
        let n2 = net_with_subnet(ml2, st, &ctx, "10.0.1.0/28")?;
        ports::create(
            ml2,
            st,
            &ctx,
            &obj(json!({"network_id": n2, "binding:host_id": "ovs-1"})),
        )?;
        u.observe(st);
        assert!(st.in_txn());
        assert!(!st.pending().is_empty());
        // 10.0.0.14 is now a's: this one fails.
        ports::create(
            ml2,
            st,
            &ctx,
            &obj(json!({"network_id": n, "fixed_ips": [{"ip_address": "10.0.0.14"}]})),
        )?;
        Ok(())
    };
    let r = bulk(&mut w.st, &mut w.u);
    assert_err(r, 409, "IpAddressInUse");
    w.st.rollback();
    assert!(!w.st.in_txn());

    assert_eq!(tables(&w.st), before);
    assert_indexes_match_rebuild(&w.st, &w.u);
    // Spot checks of what the bulk had taken.
    assert_eq!(w.st.ip_holder(&sid, &ip_b), Some(b.as_str()));
    assert_eq!(w.st.ip_holder(&sid, &"10.0.0.14".parse().unwrap()), None);
    assert_eq!(vlan_holder(&w.st, 100), None);
    assert_eq!(vlan_holder(&w.st, 101), None);
    for m in &w.u.macs {
        let holder = w.st.mac_holder(&n, m);
        assert!(holder.is_none() || holder == Some(a.as_str()) || holder == Some(b.as_str()));
    }
    // And the state keeps working: the freed resources are handed out again.
    let p = port_on(&w.ml2, &mut w.st, &ctx, &n, "ovs-1", "normal");
    assert_eq!(
        port(&w.st, &p).active_binding().levels[1].segment_id,
        vlan_holder(&w.st, 100).unwrap()
    );
    assert_indexes_match_rebuild(&w.st, &w.u);
}

#[test]
fn commit_reports_every_touched_key_and_rebuild_matches() {
    let mut w = world();
    let ctx = w.clock.ctx();
    let n = txn(&mut w.st, |st| {
        net_with_subnet(&w.ml2, st, &ctx, "10.0.0.0/28")
    })
    .unwrap();
    w.st.begin();
    let p = ports::create(
        &w.ml2,
        &mut w.st,
        &ctx,
        &obj(json!({"network_id": n, "binding:host_id": "ovs-1"})),
    )
    .unwrap();
    let changes = w.st.commit();
    // The port and its dynamic segment, both present.
    let kinds: Vec<_> = changes
        .iter()
        .map(|(k, _, v)| (k.as_str(), v.is_some()))
        .collect();
    assert!(kinds.contains(&("port", true)), "{kinds:?}");
    assert!(kinds.contains(&("segment", true)), "{kinds:?}");
    assert_eq!(changes.len(), 2);
    // Persisting the changes and reloading gives the same state.
    let fresh = State::from_records(records(&w.st));
    assert_eq!(tables(&fresh), tables(&w.st));
    w.u.observe(&w.st);
    assert_indexes_match_rebuild(&w.st, &w.u);

    // Delete in a transaction: the port and the released segment, both gone.
    w.st.begin();
    ports::delete(&mut w.st, &ctx, &p).unwrap();
    let changes = w.st.commit();
    assert_eq!(changes.len(), 2);
    assert!(changes.iter().all(|(_, _, v)| v.is_none()));
    assert_indexes_match_rebuild(&w.st, &w.u);
}

// ---------------------------------------------------------------------------
// Random transactions, committed or rolled back
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    CreateNet,
    DeleteNet(Index),
    /// A port on a network, on host 0..4 (ovs-1, sriov-1, vr-1, none), maybe at a given address.
    CreatePort(Index, u8, Option<u8>),
    DeletePort(Index),
    MovePort(Index, u8),
    Rebind(Index, u8),
    /// A heartbeat after some seconds (agents die after 75 s without one).
    Tick(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => Just(Op::CreateNet),
        1 => any::<Index>().prop_map(Op::DeleteNet),
        4 => (any::<Index>(), 0u8..4, prop::option::of(2u8..=14))
            .prop_map(|(i, h, a)| Op::CreatePort(i, h, a)),
        2 => any::<Index>().prop_map(Op::DeletePort),
        2 => (any::<Index>(), 2u8..=14).prop_map(|(i, a)| Op::MovePort(i, a)),
        2 => (any::<Index>(), 0u8..4).prop_map(|(i, h)| Op::Rebind(i, h)),
        1 => (0u8..100).prop_map(Op::Tick),
    ]
}

fn host(h: u8) -> (&'static str, &'static str) {
    match h {
        0 => ("ovs-1", "normal"),
        1 => ("sriov-1", "direct"),
        2 => ("vr-1", "normal"),
        _ => ("", "normal"),
    }
}

fn nth(keys: Vec<String>, i: &Index) -> Option<String> {
    if keys.is_empty() {
        None
    } else {
        Some(keys[i.index(keys.len())].clone())
    }
}

fn apply(w: &mut World, ctx: &Ctx, op: &Op, cidr_seq: &mut u8) -> Result<(), NeutronError> {
    let ml2 = &w.ml2;
    let st = &mut w.st;
    match op {
        Op::CreateNet => {
            *cidr_seq = cidr_seq.wrapping_add(1);
            net_with_subnet(ml2, st, ctx, &format!("10.1.{}.0/28", cidr_seq))?;
        }
        Op::DeleteNet(i) => {
            if let Some(n) = nth(st.networks.keys().cloned().collect(), i) {
                let pids: Vec<String> = st.network_port_ids(&n).cloned().collect();
                for p in pids {
                    ports::delete(st, ctx, &p)?;
                }
                let sids: Vec<String> = st
                    .network_subnets(&n)
                    .iter()
                    .map(|s| s.id.clone())
                    .collect();
                for s in sids {
                    subnets::delete(ml2, st, ctx, &s)?;
                }
                networks::delete(ml2, st, ctx, &n)?;
            }
        }
        Op::CreatePort(i, h, addr) => {
            if let Some(n) = nth(st.networks.keys().cloned().collect(), i) {
                let (host, vnic) = host(*h);
                let mut body = json!({"network_id": n, "device_owner": "compute:nova"});
                if !host.is_empty() {
                    body["binding:host_id"] = json!(host);
                    body["binding:vnic_type"] = json!(vnic);
                }
                if let (Some(a), Some(s)) = (addr, st.network_subnets(&n).first()) {
                    let ip = ipnet::IpNet::network(&s.cidr);
                    let ip = switchyard_ml2::ipam::from_u128(
                        switchyard_ml2::ipam::to_u128(ip) + u128::from(*a),
                        false,
                    );
                    body["fixed_ips"] = json!([{"ip_address": ip.to_string()}]);
                }
                ports::create(ml2, st, ctx, &obj(body))?;
            }
        }
        Op::DeletePort(i) => {
            if let Some(p) = nth(st.ports.keys().cloned().collect(), i) {
                ports::delete(st, ctx, &p)?;
            }
        }
        Op::MovePort(i, a) => {
            if let Some(p) = nth(st.ports.keys().cloned().collect(), i) {
                let Some(f) = st.ports[&p].fixed_ips.first().cloned() else {
                    return Ok(());
                };
                let s = &st.subnets[&f.subnet_id];
                let ip = switchyard_ml2::ipam::from_u128(
                    switchyard_ml2::ipam::to_u128(s.cidr.network()) + u128::from(*a),
                    false,
                );
                ports::update(
                    ml2,
                    st,
                    ctx,
                    &p,
                    &obj(
                        json!({"fixed_ips": [{"subnet_id": f.subnet_id, "ip_address": ip.to_string()}]}),
                    ),
                )?;
            }
        }
        Op::Rebind(i, h) => {
            if let Some(p) = nth(st.ports.keys().cloned().collect(), i) {
                let (host, vnic) = host(*h);
                ports::update(
                    ml2,
                    st,
                    ctx,
                    &p,
                    &obj(json!({"binding:host_id": host, "binding:vnic_type": vnic})),
                )?;
            }
        }
        Op::Tick(_) => unreachable!("handled by the caller"),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn indexes_match_a_rebuild_after_any_commit_or_rollback(
        txns in prop::collection::vec(
            (prop::collection::vec(op(), 1..6), prop::bool::weighted(0.7)),
            1..24,
        ),
    ) {
        let mut w = world();
        let mut cidr_seq = 0u8;
        {
            let ctx = w.clock.ctx();
            txn(&mut w.st, |st| net_with_subnet(&w.ml2, st, &ctx, "10.0.0.0/28")).unwrap();
        }
        for (ops, commit) in txns {
            let before = tables(&w.st);
            w.st.begin();
            let mut failed = false;
            for op in &ops {
                if let Op::Tick(s) = op {
                    w.clock.advance(i64::from(*s));
                    for (h, t) in [("ovs-1", 0), ("sriov-1", 1), ("vr-1", 2)] {
                        if s % 3 != t {
                            let clock = w.clock;
                            // A heartbeat inside the open transaction.
                            let body = match t {
                                0 => json!({"bridge_mappings": {PHYSNET: "br-phys"}}),
                                1 => json!({"device_mappings": {PHYSNET: ["eth1"]}}),
                                _ => json!({}),
                            };
                            let agent_type = match t {
                                0 => switchyard_model::AGENT_TYPE_OVS,
                                1 => switchyard_model::AGENT_TYPE_SRIOV,
                                _ => switchyard_model::AGENT_TYPE_VROUTER,
                            };
                            switchyard_ml2::ops::agents::report_state(
                                &mut w.st,
                                &clock.ctx(),
                                &obj(json!({"host": h, "agent_type": agent_type, "configurations": body})),
                            ).unwrap();
                        }
                    }
                    continue;
                }
                let ctx = w.clock.ctx();
                let r = apply(&mut w, &ctx, op, &mut cidr_seq);
                w.u.observe(&w.st);
                if r.is_err() {
                    failed = true;
                    break;
                }
            }
            if commit && !failed {
                w.st.commit();
            } else {
                w.st.rollback();
                prop_assert_eq!(tables(&w.st), before);
            }
            prop_assert!(!w.st.in_txn());
            assert_indexes_match_rebuild(&w.st, &w.u);
        }
    }
}
