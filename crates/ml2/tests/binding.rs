//! Golden scenarios of hierarchical port binding: OVS and SR-IOV hosts reached
//! through the fabric on a shared dynamic VLAN, vRouter hosts bound directly,
//! failures, agent liveness, dynamic segment release, rebinding and the
//! `binding-extended` live-migration flow.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::json;
use switchyard_ml2::ops::{agents, bindings, ports};
use switchyard_model::{
    AGENT_TYPE_OVS, BindingLevel, BindingStatus, NetworkType, PortStatus, VIF_TYPE_BINDING_FAILED,
    VIF_TYPE_UNBOUND,
};

struct Lab {
    ml2: switchyard_ml2::Ml2,
    st: switchyard_model::State,
    clock: Clock,
}

/// The reference lab: ovs-1 and ovs-2 (OVS), sriov-1 (NIC switch), vr-1 (vRouter).
fn lab() -> Lab {
    let ml2 = ml2();
    let mut st = switchyard_model::State::new();
    let clock = Clock::new();
    report_ovs(&mut st, &clock, "ovs-1");
    report_ovs(&mut st, &clock, "ovs-2");
    report_sriov(&mut st, &clock, "sriov-1");
    report_vrouter(&mut st, &clock, "vr-1");
    Lab { ml2, st, clock }
}

impl Lab {
    fn net(&mut self) -> String {
        net(&self.ml2, &mut self.st, &self.clock.ctx())
    }
    fn port(&mut self, network_id: &str, host: &str, vnic: &str) -> String {
        port_on(
            &self.ml2,
            &mut self.st,
            &self.clock.ctx(),
            network_id,
            host,
            vnic,
        )
    }
    fn update(
        &mut self,
        id: &str,
        body: serde_json::Value,
    ) -> Result<(), switchyard_model::NeutronError> {
        update_port(&self.ml2, &mut self.st, &self.clock.ctx(), id, body)
    }
    fn delete(&mut self, id: &str) {
        delete_port(&mut self.st, &self.clock.ctx(), id).unwrap();
    }
}

fn level(level: u32, driver: &str, segment_id: &str) -> BindingLevel {
    BindingLevel {
        level,
        driver: driver.into(),
        segment_id: segment_id.into(),
    }
}

#[test]
fn ovs_sriov_and_vrouter_hosts_bind_with_a_shared_dynamic_vlan() {
    let mut lab = lab();
    let n1 = lab.net();
    let vx = static_segment(&lab.st, &n1);
    assert_eq!(vx.network_type, NetworkType::Vxlan);
    assert_eq!(vx.segmentation_id, Some(1000));
    assert_eq!(lab.st.networks[&n1].mtu, 1450);

    // OVS host: fabric binds the VNI and continues on a dynamic VLAN for OVS.
    let p_ovs = lab.port(&n1, "ovs-1", "normal");
    let dynamic = dynamic_segments(&lab.st, &n1);
    assert_eq!(dynamic.len(), 1);
    let dyn_seg = dynamic[0].clone();
    assert_eq!(dyn_seg.network_type, NetworkType::Vlan);
    assert_eq!(dyn_seg.physical_network.as_deref(), Some(PHYSNET));
    assert_eq!(dyn_seg.segmentation_id, Some(100));
    assert_eq!(vlan_holder(&lab.st, 100), Some(dyn_seg.id.clone()));
    let b = port(&lab.st, &p_ovs).active_binding().clone();
    assert_eq!(b.vif_type, "ovs");
    assert_eq!(b.host, "ovs-1");
    assert_eq!(b.status, BindingStatus::Active);
    assert_eq!(
        b.levels,
        vec![
            level(0, "fabric", &vx.id),
            level(1, "openvswitch", &dyn_seg.id)
        ]
    );
    assert_eq!(
        b.vif_details.get("bound_drivers"),
        Some(&json!({"0": "fabric", "1": "openvswitch"}))
    );
    assert_eq!(b.vif_details.get("bridge_name"), Some(&json!("br-int")));
    assert_eq!(b.vif_details.get("datapath_type"), Some(&json!("system")));
    assert_eq!(b.vif_details.get("port_filter"), Some(&json!(true)));
    assert_eq!(b.vif_details.get("connectivity"), Some(&json!("l2")));
    assert_eq!(port(&lab.st, &p_ovs).status, PortStatus::Down);

    // SR-IOV host, vnic direct: the SAME dynamic segment, the VLAN as a string.
    let p_sriov = lab.port(&n1, "sriov-1", "direct");
    assert_eq!(dynamic_segments(&lab.st, &n1), vec![dyn_seg.clone()]);
    let b = port(&lab.st, &p_sriov).active_binding().clone();
    assert_eq!(b.vif_type, "hw_veb");
    assert_eq!(b.vif_details.get("vlan"), Some(&json!("100")));
    assert_eq!(b.vif_details.get("physical_network"), Some(&json!(PHYSNET)));
    assert_eq!(
        b.levels,
        vec![
            level(0, "fabric", &vx.id),
            level(1, "sriovnicswitch", &dyn_seg.id)
        ]
    );
    assert_eq!(
        b.vif_details.get("bound_drivers"),
        Some(&json!({"0": "fabric", "1": "sriovnicswitch"}))
    );

    // A second OVS host on the same network shares the segment too.
    let p_ovs2 = lab.port(&n1, "ovs-2", "normal");
    assert_eq!(
        port(&lab.st, &p_ovs2).active_binding().levels[1].segment_id,
        dyn_seg.id
    );

    // vRouter host: one level, on the VXLAN segment itself.
    let p_vr = lab.port(&n1, "vr-1", "normal");
    let b = port(&lab.st, &p_vr).active_binding().clone();
    assert_eq!(b.vif_type, "vrouter");
    assert_eq!(b.levels, vec![level(0, "vrouter", &vx.id)]);
    assert_eq!(
        b.vif_details.get("bound_drivers"),
        Some(&json!({"0": "vrouter"}))
    );
    assert_eq!(dynamic_segments(&lab.st, &n1).len(), 1);

    // A second network: its own VNI and a different dynamic VLAN.
    let n2 = lab.net();
    assert_eq!(static_segment(&lab.st, &n2).segmentation_id, Some(1001));
    let q_ovs = lab.port(&n2, "ovs-1", "normal");
    let d2 = dynamic_segments(&lab.st, &n2);
    assert_eq!(d2.len(), 1);
    assert_eq!(d2[0].segmentation_id, Some(101));
    assert_ne!(d2[0].id, dyn_seg.id);
    assert_eq!(
        port(&lab.st, &q_ovs).active_binding().levels[1].segment_id,
        d2[0].id
    );
    let q_sriov = lab.port(&n2, "sriov-1", "direct");
    assert_eq!(
        port(&lab.st, &q_sriov)
            .active_binding()
            .vif_details
            .get("vlan"),
        Some(&json!("101"))
    );
    // Network 1 still on 100.
    assert_eq!(
        port(&lab.st, &p_sriov)
            .active_binding()
            .vif_details
            .get("vlan"),
        Some(&json!("100"))
    );
}

#[test]
fn hosts_that_cannot_bind_give_binding_failed_and_leak_nothing() {
    let mut lab = lab();
    let n = lab.net();
    let before = lab.st.segments.len();

    let p = lab.port(&n, "no-such-host", "normal");
    assert_eq!(vif_type(&lab.st, &p), VIF_TYPE_BINDING_FAILED);
    assert!(port(&lab.st, &p).active_binding().levels.is_empty());

    // vnic direct on a vRouter host: nothing binds it.
    let p = lab.port(&n, "vr-1", "direct");
    assert_eq!(vif_type(&lab.st, &p), VIF_TYPE_BINDING_FAILED);

    // vnic direct (no switchdev) on an OVS-only host: the fabric allocates a
    // dynamic VLAN for level 1, nothing binds there, and the VLAN is released.
    let p = lab.port(&n, "ovs-1", "direct");
    assert_eq!(vif_type(&lab.st, &p), VIF_TYPE_BINDING_FAILED);
    assert_eq!(lab.st.segments.len(), before);
    assert_eq!(vlan_holder(&lab.st, 100), None);

    // With switchdev, OVS hardware offload binds it.
    let p = create_port(
        &lab.ml2,
        &mut lab.st,
        &lab.clock.ctx(),
        json!({
            "network_id": n,
            "binding:host_id": "ovs-1",
            "binding:vnic_type": "direct",
            "binding:profile": {"capabilities": ["switchdev"]},
        }),
    )
    .unwrap();
    assert_eq!(vif_type(&lab.st, &p), "ovs");

    // No host: unbound, not failed.
    let p = create_port(
        &lab.ml2,
        &mut lab.st,
        &lab.clock.ctx(),
        json!({"network_id": n}),
    )
    .unwrap();
    assert_eq!(vif_type(&lab.st, &p), VIF_TYPE_UNBOUND);
}

#[test]
fn dead_agent_refuses_binding_until_it_reports_again() {
    let mut lab = lab();
    let n = lab.net();

    // Exactly agent_down_time old: still alive.
    lab.clock.advance(75);
    let p = lab.port(&n, "ovs-1", "normal");
    assert_eq!(vif_type(&lab.st, &p), "ovs");

    lab.clock.advance(1); // 76 s since the last heartbeat
    let p_dead = lab.port(&n, "ovs-1", "normal");
    assert_eq!(vif_type(&lab.st, &p_dead), VIF_TYPE_BINDING_FAILED);
    let p_sriov_dead = lab.port(&n, "sriov-1", "direct");
    assert_eq!(vif_type(&lab.st, &p_sriov_dead), VIF_TYPE_BINDING_FAILED);
    let p_vr_dead = lab.port(&n, "vr-1", "normal");
    assert_eq!(vif_type(&lab.st, &p_vr_dead), VIF_TYPE_BINDING_FAILED);
    // The already-bound port keeps its binding and its dynamic segment.
    assert_eq!(vif_type(&lab.st, &p), "ovs");
    assert_eq!(dynamic_segments(&lab.st, &n).len(), 1);

    // A new heartbeat: new ports bind again.
    let clock = lab.clock;
    report_ovs(&mut lab.st, &clock, "ovs-1");
    let p2 = lab.port(&n, "ovs-1", "normal");
    assert_eq!(vif_type(&lab.st, &p2), "ovs");
    // A port whose binding failed is retried on its next update.
    lab.update(&p_dead, json!({"name": "retry"})).unwrap();
    assert_eq!(vif_type(&lab.st, &p_dead), "ovs");
    assert_eq!(
        port(&lab.st, &p_dead).active_binding().levels,
        port(&lab.st, &p2).active_binding().levels
    );
    // The vRouter agent is still dead.
    lab.update(&p_vr_dead, json!({"name": "retry"})).unwrap();
    assert_eq!(vif_type(&lab.st, &p_vr_dead), VIF_TYPE_BINDING_FAILED);
}

#[test]
fn admin_down_agent_is_refused() {
    let mut lab = lab();
    let n = lab.net();
    let ctx = lab.clock.ctx();
    let ovs = lab
        .st
        .agent_by_type_host(switchyard_model::AGENT_TYPE_OVS, "ovs-1")
        .unwrap()
        .id
        .clone();
    txn(&mut lab.st, |st| {
        agents::update(st, &ctx, &ovs, &obj(json!({"admin_state_up": false})))
    })
    .unwrap();
    let p = lab.port(&n, "ovs-1", "normal");
    assert_eq!(vif_type(&lab.st, &p), VIF_TYPE_BINDING_FAILED);
    assert!(dynamic_segments(&lab.st, &n).is_empty());

    // A heartbeat does not re-enable it; the admin does.
    let clock = lab.clock;
    report_ovs(&mut lab.st, &clock, "ovs-1");
    let p2 = lab.port(&n, "ovs-1", "normal");
    assert_eq!(vif_type(&lab.st, &p2), VIF_TYPE_BINDING_FAILED);
    txn(&mut lab.st, |st| {
        agents::update(st, &ctx, &ovs, &obj(json!({"admin_state_up": true})))
    })
    .unwrap();
    let p3 = lab.port(&n, "ovs-1", "normal");
    assert_eq!(vif_type(&lab.st, &p3), "ovs");
}

#[test]
fn deleting_the_last_user_releases_the_dynamic_segment() {
    let mut lab = lab();
    let n = lab.net();
    let a = lab.port(&n, "ovs-1", "normal");
    let b = lab.port(&n, "sriov-1", "direct");
    let seg = dynamic_segments(&lab.st, &n)[0].clone();
    assert_eq!(seg.segmentation_id, Some(100));

    lab.delete(&a);
    assert_eq!(dynamic_segments(&lab.st, &n), vec![seg.clone()]);
    assert_eq!(vlan_holder(&lab.st, 100), Some(seg.id.clone()));

    lab.delete(&b);
    assert!(dynamic_segments(&lab.st, &n).is_empty());
    assert!(!lab.st.segments.contains_key(&seg.id));
    assert_eq!(vlan_holder(&lab.st, 100), None);

    // VLAN 100 is free again: another network gets it.
    let n2 = lab.net();
    lab.port(&n2, "ovs-2", "normal");
    assert_eq!(dynamic_segments(&lab.st, &n2)[0].segmentation_id, Some(100));
}

#[test]
fn rollback_releases_allocated_segments() {
    let mut lab = lab();
    let ctx = lab.clock.ctx();
    let n = lab.net();
    let before = tables(&lab.st);

    // A port whose transaction fails after binding (e.g. the store write failed).
    lab.st.begin();
    let p = ports::create(
        &lab.ml2,
        &mut lab.st,
        &ctx,
        &obj(json!({"network_id": n, "binding:host_id": "ovs-1"})),
    )
    .unwrap();
    assert_eq!(vif_type(&lab.st, &p), "ovs");
    assert!(vlan_holder(&lab.st, 100).is_some());
    lab.st.rollback();
    assert_eq!(tables(&lab.st), before);
    assert_eq!(vlan_holder(&lab.st, 100), None);

    // A network create that is rolled back frees its VNI.
    lab.st.begin();
    let n2 = switchyard_ml2::ops::networks::create(&lab.ml2, &mut lab.st, &ctx, &obj(json!({})))
        .unwrap();
    assert_eq!(static_segment(&lab.st, &n2).segmentation_id, Some(1001));
    lab.st.rollback();
    assert_eq!(tables(&lab.st), before);
    let n3 = lab.net();
    assert_eq!(static_segment(&lab.st, &n3).segmentation_id, Some(1001));

    // Next port after the rollback gets VLAN 100 again.
    let p = lab.port(&n, "ovs-1", "normal");
    assert_eq!(
        port(&lab.st, &p).active_binding().levels[1].segment_id,
        vlan_holder(&lab.st, 100).unwrap()
    );
    assert_indexes_match_rebuild(&lab.st, &Universe::default());
}

#[test]
fn rebinding_through_port_update() {
    let mut lab = lab();
    let n = lab.net();
    let vx = static_segment(&lab.st, &n);
    let p = lab.port(&n, "ovs-1", "normal");
    let ctx = lab.clock.ctx();
    txn(&mut lab.st, |st| {
        ports::set_device_status(st, &ctx, &p, "ovs-1", true)
    })
    .unwrap();
    assert_eq!(port(&lab.st, &p).status, PortStatus::Active);
    let seg = dynamic_segments(&lab.st, &n)[0].clone();
    let rev = port(&lab.st, &p).std.revision_number;

    // To another OVS host: same dynamic segment, port DOWN until the agent says up.
    lab.clock.advance(5);
    lab.update(&p, json!({"binding:host_id": "ovs-2"})).unwrap();
    let b = port(&lab.st, &p).active_binding().clone();
    assert_eq!(b.host, "ovs-2");
    assert_eq!(b.vif_type, "ovs");
    assert_eq!(b.levels[1].segment_id, seg.id);
    // (The port should also be DOWN here: see `host_change_sets_the_port_down`.)
    assert_eq!(port(&lab.st, &p).std.revision_number, rev + 1);
    assert_eq!(port(&lab.st, &p).std.updated_at, lab.clock.now());
    assert_eq!(port(&lab.st, &p).bindings.len(), 1);

    // To the vRouter host: one level, dynamic segment released.
    lab.update(&p, json!({"binding:host_id": "vr-1"})).unwrap();
    let b = port(&lab.st, &p).active_binding().clone();
    assert_eq!(b.vif_type, "vrouter");
    assert_eq!(b.levels, vec![level(0, "vrouter", &vx.id)]);
    assert!(dynamic_segments(&lab.st, &n).is_empty());
    assert_eq!(vlan_holder(&lab.st, 100), None);

    // To the SR-IOV host as direct: a dynamic VLAN again.
    lab.update(
        &p,
        json!({"binding:host_id": "sriov-1", "binding:vnic_type": "direct"}),
    )
    .unwrap();
    assert_eq!(vif_type(&lab.st, &p), "hw_veb");
    assert_eq!(dynamic_segments(&lab.st, &n).len(), 1);

    // To an unknown host: failed, and the segment goes.
    lab.update(&p, json!({"binding:host_id": "nowhere"}))
        .unwrap();
    assert_eq!(vif_type(&lab.st, &p), VIF_TYPE_BINDING_FAILED);
    assert!(dynamic_segments(&lab.st, &n).is_empty());

    // Unbinding: host "" gives unbound.
    lab.update(
        &p,
        json!({"binding:host_id": "ovs-1", "binding:vnic_type": "normal"}),
    )
    .unwrap();
    assert_eq!(vif_type(&lab.st, &p), "ovs");
    lab.update(&p, json!({"binding:host_id": ""})).unwrap();
    assert_eq!(vif_type(&lab.st, &p), VIF_TYPE_UNBOUND);
    assert!(port(&lab.st, &p).active_binding().levels.is_empty());
    assert!(dynamic_segments(&lab.st, &n).is_empty());
    assert_indexes_match_rebuild(&lab.st, &Universe::default());
}

/// Moving an ACTIVE port to another host must make it DOWN until the new host's
/// agent reports the device up (Neutron's provisioning block), even when the new
/// binding has the same vif_type and levels as the old one.
#[test]
fn host_change_sets_the_port_down() {
    let mut lab = lab();
    let n = lab.net();
    let p = lab.port(&n, "ovs-1", "normal");
    let ctx = lab.clock.ctx();
    txn(&mut lab.st, |st| {
        ports::set_device_status(st, &ctx, &p, "ovs-1", true)
    })
    .unwrap();
    assert_eq!(port(&lab.st, &p).status, PortStatus::Active);
    lab.update(&p, json!({"binding:host_id": "ovs-2"})).unwrap();
    assert_eq!(port(&lab.st, &p).active_binding().host, "ovs-2");
    assert_eq!(port(&lab.st, &p).status, PortStatus::Down);
}

#[test]
fn host_change_to_a_different_binding_sets_the_port_down() {
    let mut lab = lab();
    let n = lab.net();
    let p = lab.port(&n, "ovs-1", "normal");
    let ctx = lab.clock.ctx();
    txn(&mut lab.st, |st| {
        ports::set_device_status(st, &ctx, &p, "ovs-1", true)
    })
    .unwrap();
    lab.update(&p, json!({"binding:host_id": "vr-1"})).unwrap();
    assert_eq!(port(&lab.st, &p).status, PortStatus::Down);
    // A change that does not move the port keeps the reported state.
    txn(&mut lab.st, |st| {
        ports::set_device_status(st, &ctx, &p, "vr-1", true)
    })
    .unwrap();
    lab.update(&p, json!({"binding:profile": {"migrating_to": "ovs-1"}}))
        .unwrap();
    assert_eq!(port(&lab.st, &p).status, PortStatus::Active);
    assert_eq!(vif_type(&lab.st, &p), "vrouter");
}

#[test]
fn live_migration_with_multiple_bindings() {
    let mut lab = lab();
    let n = lab.net();
    let vx = static_segment(&lab.st, &n);
    let p = lab.port(&n, "ovs-1", "normal");
    let ctx = lab.clock.ctx();
    txn(&mut lab.st, |st| {
        ports::set_device_status(st, &ctx, &p, "ovs-1", true)
    })
    .unwrap();
    let seg = dynamic_segments(&lab.st, &n)[0].clone();
    let rev0 = port(&lab.st, &p).std.revision_number;

    // Destination binding on the vRouter host: INACTIVE, bound.
    lab.clock.advance(10);
    let ctx = lab.clock.ctx();
    let host = txn(&mut lab.st, |st| {
        bindings::create(&lab.ml2, st, &ctx, &p, &obj(json!({"host": "vr-1"})))
    })
    .unwrap();
    assert_eq!(host, "vr-1");
    let pt = port(&lab.st, &p).clone();
    assert_eq!(pt.bindings.len(), 2);
    let dest = pt.binding_for("vr-1").unwrap();
    assert_eq!(dest.status, BindingStatus::Inactive);
    assert_eq!(dest.vif_type, "vrouter");
    assert_eq!(dest.vnic_type, "normal");
    assert_eq!(dest.levels, vec![level(0, "vrouter", &vx.id)]);
    assert_eq!(pt.active_binding().host, "ovs-1");
    assert_eq!(pt.active_binding().vif_type, "ovs");
    assert_eq!(pt.status, PortStatus::Active);
    assert_eq!(pt.std.revision_number, rev0 + 1);
    let (_, got) = bindings::get(&lab.st, &ctx, &p, "vr-1").unwrap();
    assert_eq!(got.vif_type, "vrouter");

    // Duplicate: 409, nothing changed.
    let before = tables(&lab.st);
    assert_err(
        txn(&mut lab.st, |st| {
            bindings::create(&lab.ml2, st, &ctx, &p, &obj(json!({"host": "vr-1"})))
        }),
        409,
        "PortBindingAlreadyExists",
    );
    assert_err(
        txn(&mut lab.st, |st| {
            bindings::create(&lab.ml2, st, &ctx, &p, &obj(json!({"host": "ovs-1"})))
        }),
        409,
        "PortBindingAlreadyExists",
    );
    assert_eq!(tables(&lab.st), before);

    // Activate: flips, the old binding INACTIVE and cleared, port DOWN, revision bumped.
    lab.clock.advance(10);
    let ctx = lab.clock.ctx();
    txn(&mut lab.st, |st| bindings::activate(st, &ctx, &p, "vr-1")).unwrap();
    let pt = port(&lab.st, &p).clone();
    assert_eq!(pt.active_binding().host, "vr-1");
    assert_eq!(pt.active_binding().vif_type, "vrouter");
    let src = pt.binding_for("ovs-1").unwrap();
    assert_eq!(src.status, BindingStatus::Inactive);
    assert_eq!(src.vif_type, VIF_TYPE_UNBOUND);
    assert!(src.vif_details.is_empty());
    assert!(src.levels.is_empty());
    assert_eq!(pt.status, PortStatus::Down);
    assert_eq!(pt.std.revision_number, rev0 + 2);
    assert_eq!(pt.std.updated_at, lab.clock.now());
    assert_eq!(
        pt.bindings
            .iter()
            .filter(|b| b.status == BindingStatus::Active)
            .count(),
        1
    );
    // The source's dynamic VLAN is no longer used by anything.
    assert!(!lab.st.segments.contains_key(&seg.id));
    assert_eq!(vlan_holder(&lab.st, 100), None);

    // Activate again: 409.
    assert_err(
        txn(&mut lab.st, |st| bindings::activate(st, &ctx, &p, "vr-1")),
        409,
        "PortBindingAlreadyActive",
    );
    // Activating a host without a binding: 404.
    assert_err(
        txn(&mut lab.st, |st| bindings::activate(st, &ctx, &p, "ovs-2")),
        404,
        "PortBindingNotFound",
    );

    // Delete the source binding.
    txn(&mut lab.st, |st| bindings::delete(st, &ctx, &p, "ovs-1")).unwrap();
    let pt = port(&lab.st, &p).clone();
    assert_eq!(pt.bindings.len(), 1);
    assert_eq!(pt.std.revision_number, rev0 + 3);
    assert_err(
        txn(&mut lab.st, |st| bindings::delete(st, &ctx, &p, "ovs-1")),
        404,
        "PortBindingNotFound",
    );
    assert_indexes_match_rebuild(&lab.st, &Universe::default());
}

#[test]
fn migration_back_to_ovs_reuses_the_network_vlan() {
    let mut lab = lab();
    let n = lab.net();
    let keep = lab.port(&n, "sriov-1", "direct");
    let seg = dynamic_segments(&lab.st, &n)[0].clone();
    let p = lab.port(&n, "vr-1", "normal");
    let ctx = lab.clock.ctx();
    txn(&mut lab.st, |st| {
        bindings::create(&lab.ml2, st, &ctx, &p, &obj(json!({"host": "ovs-2"})))
    })
    .unwrap();
    let dest = port(&lab.st, &p).binding_for("ovs-2").unwrap().clone();
    assert_eq!(dest.status, BindingStatus::Inactive);
    assert_eq!(dest.vif_type, "ovs");
    assert_eq!(dest.levels[1].segment_id, seg.id);
    // Deleting the INACTIVE destination keeps the segment (still used by `keep`).
    txn(&mut lab.st, |st| bindings::delete(st, &ctx, &p, "ovs-2")).unwrap();
    assert_eq!(dynamic_segments(&lab.st, &n), vec![seg]);
    lab.delete(&keep);
    assert!(dynamic_segments(&lab.st, &n).is_empty());
}

#[test]
fn bindings_need_a_compute_port() {
    let mut lab = lab();
    let n = lab.net();
    let ctx = lab.clock.ctx();
    let p = create_port(
        &lab.ml2,
        &mut lab.st,
        &ctx,
        json!({"network_id": n, "device_owner": "network:dhcp", "binding:host_id": "ovs-1"}),
    )
    .unwrap();
    let before = tables(&lab.st);
    assert_err(
        txn(&mut lab.st, |st| {
            bindings::create(&lab.ml2, st, &ctx, &p, &obj(json!({"host": "vr-1"})))
        }),
        400,
        "BadRequest",
    );
    let q = create_port(&lab.ml2, &mut lab.st, &ctx, json!({"network_id": n})).unwrap();
    let before_q = tables(&lab.st);
    assert_err(
        txn(&mut lab.st, |st| {
            bindings::create(&lab.ml2, st, &ctx, &q, &obj(json!({"host": "vr-1"})))
        }),
        400,
        "BadRequest",
    );
    assert_eq!(tables(&lab.st), before_q);
    assert_ne!(tables(&lab.st), before);
}

#[test]
fn binding_to_a_host_that_cannot_bind_is_a_500_and_changes_nothing() {
    let mut lab = lab();
    let n = lab.net();
    let p = lab.port(&n, "vr-1", "normal");
    let ctx = lab.clock.ctx();
    let before = tables(&lab.st);
    let mut u = Universe::default();
    u.observe(&lab.st);

    for body in [
        json!({"host": "nowhere"}),
        // The fabric allocates a dynamic VLAN for level 1, then nothing binds it.
        json!({"host": "ovs-1", "vnic_type": "direct"}),
        json!({"host": "vr-1-twin"}),
    ] {
        lab.st.begin();
        let r = bindings::create(&lab.ml2, &mut lab.st, &ctx, &p, &obj(body.clone()));
        u.observe(&lab.st);
        lab.st.rollback();
        assert_err(r, 500, "PortBindingError");
        assert_eq!(tables(&lab.st), before, "{body}");
        assert_eq!(vlan_holder(&lab.st, 100), None);
        assert_indexes_match_rebuild(&lab.st, &u);
    }

    // A dead destination agent: 500 too.
    lab.clock.advance(76);
    let ctx = lab.clock.ctx();
    let clock = lab.clock;
    report_vrouter(&mut lab.st, &clock, "vr-1");
    let before = tables(&lab.st);
    assert_err(
        txn(&mut lab.st, |st| {
            bindings::create(&lab.ml2, st, &ctx, &p, &obj(json!({"host": "ovs-1"})))
        }),
        500,
        "PortBindingError",
    );
    assert_eq!(tables(&lab.st), before);
}

#[test]
fn hosts_on_several_physnets_keep_only_the_dynamic_segment_they_use() {
    let ml2 = ml2_with(switchyard_ml2::Ml2Config {
        network_vlan_ranges: vec!["physnet1:100:199".into(), "physnet2:200:299".into()],
        ..switchyard_ml2::Ml2Config::default()
    });
    let mut st = switchyard_model::State::new();
    let clock = Clock::new();
    let ctx = clock.ctx();
    report(
        &mut st,
        &clock,
        "ovs-both",
        switchyard_model::AGENT_TYPE_OVS,
        json!({"bridge_mappings": {"physnet1": "br-1", "physnet2": "br-2"}}),
    );
    report(
        &mut st,
        &clock,
        "sriov-2",
        switchyard_model::AGENT_TYPE_SRIOV,
        json!({"device_mappings": {"physnet2": ["eth2"]}}),
    );
    let n = net(&ml2, &mut st, &ctx);
    let p = port_on(&ml2, &mut st, &ctx, &n, "ovs-both", "normal");
    assert_eq!(vif_type(&st, &p), "ovs");
    // Both physnets were offered at level 1; only the one bound stays.
    let d = dynamic_segments(&st, &n);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].physical_network.as_deref(), Some("physnet1"));
    assert_eq!(port(&st, &p).active_binding().levels[1].segment_id, d[0].id);
    assert_eq!(
        st.segment_holder(switchyard_model::SegKey::Vlan("physnet2", 200)),
        None
    );
    // SR-IOV on physnet2 only: a second dynamic segment, on physnet2.
    let s = port_on(&ml2, &mut st, &ctx, &n, "sriov-2", "direct");
    assert_eq!(vif_type(&st, &s), "hw_veb");
    assert_eq!(
        port(&st, &s).active_binding().vif_details.get("vlan"),
        Some(&json!("200"))
    );
    assert_eq!(dynamic_segments(&st, &n).len(), 2);
    delete_port(&mut st, &ctx, &p).unwrap();
    let d = dynamic_segments(&st, &n);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].physical_network.as_deref(), Some("physnet2"));
    assert_indexes_match_rebuild(&st, &Universe::default());
}

/// An OVS agent whose firewall is `noop` (Linux-mode Open vSwitch, which
/// does not apply security groups yet) binds with `port_filter: false`: the
/// binding never claims a filter the node does not apply. SR-IOV `direct`
/// ports bypass the host and never claim one either.
#[test]
fn port_filter_says_whether_the_node_filters() {
    let mut lab = lab();
    report(
        &mut lab.st,
        &lab.clock,
        "ovs-noop",
        AGENT_TYPE_OVS,
        json!({"bridge_mappings": {PHYSNET: "br-phys"}, "firewall_driver": "noop"}),
    );
    let n = lab.net();
    for (host, vnic, filters) in [
        ("ovs-1", "normal", true),
        ("ovs-noop", "normal", false),
        ("vr-1", "normal", true),
        ("sriov-1", "direct", false),
    ] {
        let p = lab.port(&n, host, vnic);
        let b = port(&lab.st, &p).active_binding().clone();
        assert_eq!(
            b.vif_details.get("port_filter"),
            Some(&json!(filters)),
            "{host}: {:?}",
            b.vif_details
        );
    }
}
