//! ML2 binding through the API: one network across OVS, SR-IOV and vRouter
//! hosts, failures, port status from agents, and Nova's live-migration flows.

mod common;

use common::{Server, id};
use reqwest::Method;
use serde_json::{Value, json};

/// A device report by `host`'s agent, with its credential.
async fn device(s: &Server, port: &str, host: &str, status: &str) -> common::Resp {
    let auth = format!("Bearer {}", s.token(host, common::lab_role(host)));
    s.req(
        Method::PUT,
        &format!("/switchyard/v1/ports/{port}/device"),
        Some(json!({"device": {"host": host, "status": status}})),
        &[("authorization", &auth)],
    )
    .await
}

fn vlan_segments(segs: &Value) -> Vec<Value> {
    segs["segments"]
        .as_array()
        .expect("segments")
        .iter()
        .filter(|s| s["network_type"] == "vlan")
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_network_three_backends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    s.lab_agents().await;
    let n = s.network("demo-net").await;
    s.subnet(&n, "50.50.50.0/24").await;
    let ovs = s
        .port(
            &n,
            json!({"binding:host_id": "compute-1", "device_owner": "compute:nova"}),
        )
        .await;
    let vr = s
        .port(
            &n,
            json!({"binding:host_id": "compute-2", "device_owner": "compute:nova"}),
        )
        .await;
    let sriov = s
        .port(&n, json!({"binding:host_id": "compute-3", "binding:vnic_type": "direct", "device_owner": "compute:nova"}))
        .await;
    assert_eq!(ovs["binding:vif_type"], "ovs");
    assert_eq!(
        ovs["binding:vif_details"]["bound_drivers"],
        json!({"0": "fabric", "1": "openvswitch"})
    );
    assert_eq!(ovs["binding:vif_details"]["bridge_name"], "br-int");
    assert_eq!(vr["binding:vif_type"], "vrouter");
    assert_eq!(
        vr["binding:vif_details"]["bound_drivers"],
        json!({"0": "vrouter"})
    );
    assert_eq!(sriov["binding:vif_type"], "hw_veb");
    assert_eq!(
        sriov["binding:vif_details"]["bound_drivers"],
        json!({"0": "fabric", "1": "sriovnicswitch"})
    );

    // OVS and SR-IOV hosts on physnet1 share one dynamic VLAN for the network.
    let segs = s
        .get(&format!("/v2.0/segments?network_id={}", id(&n)))
        .await
        .body;
    let vlans = vlan_segments(&segs);
    assert_eq!(vlans.len(), 1, "{segs}");
    let vlan = vlans[0]["segmentation_id"].as_u64().expect("vlan id");
    assert!((100..=199).contains(&vlan));
    assert_eq!(
        sriov["binding:vif_details"]["vlan"],
        json!(vlan.to_string())
    );
    // The network still shows only its static VXLAN segment.
    let net = s.get(&format!("/v2.0/networks/{}", id(&n))).await.body["network"].clone();
    assert_eq!(net["provider:network_type"], "vxlan");

    // A second network gets its own VLAN.
    let n2 = s.network("other").await;
    s.subnet(&n2, "10.2.0.0/24").await;
    s.port(&n2, json!({"binding:host_id": "compute-1"})).await;
    let segs2 = s
        .get(&format!("/v2.0/segments?network_id={}", id(&n2)))
        .await
        .body;
    assert_ne!(vlan_segments(&segs2)[0]["segmentation_id"], json!(vlan));

    // Ports are DOWN until their agent reports the device up on the bound host.
    assert_eq!(ovs["status"], "DOWN");
    let r = device(&s, &id(&ovs), "compute-2", "up").await;
    assert_eq!(r.status, 409);
    let r = device(&s, &id(&ovs), "compute-1", "up").await;
    assert_eq!(r.body["port"]["status"], "ACTIVE");
    assert_eq!(r.body["port"]["revision_number"], 1);

    // The binding's levels (an admin's view): the fabric driver on the
    // VXLAN segment, then openvswitch on the dynamic VLAN; applied by
    // compute-1, whose agent reported the device up.
    let b = s
        .get(&format!("/switchyard/v1/ports/{}/binding", id(&ovs)))
        .await
        .body["binding"]
        .clone();
    assert_eq!(b["applied_by"], "compute-1", "{b}");
    assert_eq!(b["node"]["host"], "compute-1", "{b}");
    let levels = &b["bindings"][0]["levels"];
    assert_eq!(levels[0]["driver"], "fabric", "{b}");
    assert_eq!(levels[0]["network_type"], "vxlan", "{b}");
    assert_eq!(
        levels[0]["segmentation_id"], net["provider:segmentation_id"],
        "{b}"
    );
    assert_eq!(levels[1]["driver"], "openvswitch", "{b}");
    assert_eq!(levels[1]["network_type"], "vlan", "{b}");
    assert_eq!(levels[1]["physical_network"], "physnet1", "{b}");
    assert_eq!(levels[1]["segmentation_id"], json!(vlan), "{b}");
    // A port whose agent has not reported it is not applied yet.
    let b = s
        .get(&format!("/switchyard/v1/ports/{}/binding", id(&vr)))
        .await
        .body["binding"]
        .clone();
    assert_eq!(b["applied_by"], Value::Null, "{b}");
    assert_eq!(b["bindings"][0]["levels"][0]["driver"], "vrouter", "{b}");
    // All bound ports at once, each with its active binding's levels.
    let all = s.get("/switchyard/v1/bindings").await.body;
    let mine = all["bindings"]
        .as_array()
        .expect("list")
        .iter()
        .find(|b| b["port_id"] == id(&ovs).as_str())
        .cloned()
        .expect("the OVS port is listed");
    assert_eq!(mine["host"], "compute-1", "{mine}");
    assert_eq!(mine["levels"][1]["segmentation_id"], json!(vlan), "{mine}");
    assert_eq!(s.get("/switchyard/v1/bindings?host=x").await.status, 400);
    // Segments are an admin's: a member is refused; an unknown port is 404.
    let member = s
        .req(
            Method::GET,
            &format!("/switchyard/v1/ports/{}/binding", id(&ovs)),
            None,
            &[("X-Project-Id", "p"), ("X-Roles", "member")],
        )
        .await;
    assert_eq!(member.status, 403, "{:?}", member.body);
    let member = s
        .req(
            Method::GET,
            "/switchyard/v1/bindings",
            None,
            &[("X-Project-Id", "p"), ("X-Roles", "member")],
        )
        .await;
    assert_eq!(member.status, 403, "{:?}", member.body);
    assert_eq!(
        s.get("/switchyard/v1/ports/no-such-port/binding")
            .await
            .status,
        404
    );
    let r = device(&s, &id(&ovs), "compute-1", "down").await;
    assert_eq!(r.body["port"]["status"], "DOWN");

    // Deleting the last VLAN-side ports releases the dynamic segment.
    s.delete(&format!("/v2.0/ports/{}", id(&ovs))).await;
    assert_eq!(
        vlan_segments(
            &s.get(&format!("/v2.0/segments?network_id={}", id(&n)))
                .await
                .body
        )
        .len(),
        1
    );
    s.delete(&format!("/v2.0/ports/{}", id(&sriov))).await;
    assert_eq!(
        vlan_segments(
            &s.get(&format!("/v2.0/segments?network_id={}", id(&n)))
                .await
                .body
        )
        .len(),
        0
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_bindings_and_dead_agents() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    s.lab_agents().await;
    let n = s.network("net").await;
    s.subnet(&n, "10.0.0.0/24").await;
    let p = s.port(&n, json!({"binding:host_id": "compute-9"})).await;
    assert_eq!(p["binding:vif_type"], "binding_failed");
    let p2 = s
        .port(
            &n,
            json!({"binding:host_id": "compute-2", "binding:vnic_type": "direct"}),
        )
        .await;
    assert_eq!(
        p2["binding:vif_type"], "binding_failed",
        "a vRouter host cannot take an SR-IOV port"
    );
    let r = s
        .post(
            "/v2.0/ports",
            json!({"port": {"network_id": n["id"], "binding:vnic_type": "sideways"}}),
        )
        .await;
    assert_eq!(r.status, 400);
    // No VLAN leaked by the failed attempts.
    assert!(vlan_segments(&s.get("/v2.0/segments").await.body).is_empty());

    // Heartbeats stop: the host's agent is dead and binding is refused.
    s.clock.advance(80);
    let dead = s.port(&n, json!({"binding:host_id": "compute-1"})).await;
    assert_eq!(dead["binding:vif_type"], "binding_failed");
    // It reports again; any update of the port retries the failed binding.
    s.report(
        "compute-1",
        "Open vSwitch agent",
        json!({"bridge_mappings": {"physnet1": "br-phys"}}),
    )
    .await;
    let r = s
        .put(
            &format!("/v2.0/ports/{}", id(&dead)),
            json!({"port": {"name": "retry"}}),
        )
        .await;
    assert_eq!(r.body["port"]["binding:vif_type"], "ovs");
    // An agent disabled by the operator binds nothing.
    let agents = s.get("/v2.0/agents?host=compute-1").await.body["agents"].clone();
    s.put(
        &format!("/v2.0/agents/{}", id(&agents[0])),
        json!({"agent": {"admin_state_up": false}}),
    )
    .await;
    let off = s.port(&n, json!({"binding:host_id": "compute-1"})).await;
    assert_eq!(off["binding:vif_type"], "binding_failed");
    // Unsetting the host unbinds.
    let r = s
        .put(
            &format!("/v2.0/ports/{}", id(&dead)),
            json!({"port": {"binding:host_id": ""}}),
        )
        .await;
    assert_eq!(r.body["port"]["binding:vif_type"], "unbound");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multiple_bindings_live_migration_ovs_to_vrouter() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    s.lab_agents().await;
    let n = s.network("demo-net").await;
    s.subnet(&n, "50.50.50.0/24").await;
    let p = s.port(&n, json!({"binding:host_id": "compute-1", "device_owner": "compute:nova", "device_id": "vm-migrate"})).await;
    let pid = id(&p);
    device(&s, &pid, "compute-1", "up").await;
    let (ip, mac) = (
        p["fixed_ips"][0]["ip_address"].clone(),
        p["mac_address"].clone(),
    );
    let b = format!("/v2.0/ports/{pid}/bindings");

    let r = s.get(&b).await;
    assert_eq!(r.body["bindings"].as_array().expect("list").len(), 1);
    assert_eq!(r.body["bindings"][0]["status"], "ACTIVE");
    assert_eq!(r.body["bindings"][0]["vif_type"], "ovs");

    // 1. The conductor creates the destination binding: INACTIVE, real vif_type.
    let r = s
        .post(
            &b,
            json!({"binding": {"host": "compute-4", "vnic_type": "normal", "profile": {}}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["binding"]["host"], "compute-4");
    assert_eq!(r.body["binding"]["status"], "INACTIVE");
    assert_eq!(r.body["binding"]["vif_type"], "vrouter");
    let r = s.post(&b, json!({"binding": {"host": "compute-4"}})).await;
    assert_eq!(
        (r.status, r.error_type()),
        (409, "PortBindingAlreadyExists")
    );
    let r = s.get(&format!("{b}/compute-4")).await;
    assert_eq!(r.body["binding"]["status"], "INACTIVE");
    // The port itself is still on the source, still ACTIVE.
    let port = s.get(&format!("/v2.0/ports/{pid}")).await.body["port"].clone();
    assert_eq!(
        (port["binding:host_id"].clone(), port["status"].clone()),
        (json!("compute-1"), json!("ACTIVE"))
    );
    let r = s.get(&format!("{b}?status=INACTIVE")).await;
    assert_eq!(r.body["bindings"].as_array().expect("list").len(), 1);

    // 2. Activate on the destination.
    let r = s
        .req(Method::PUT, &format!("{b}/compute-4/activate"), None, &[])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["binding"]["status"], "ACTIVE");
    let r = s
        .req(Method::PUT, &format!("{b}/compute-4/activate"), None, &[])
        .await;
    assert_eq!(
        (r.status, r.error_type()),
        (409, "PortBindingAlreadyActive")
    );
    let r = s
        .req(Method::PUT, &format!("{b}/compute-7/activate"), None, &[])
        .await;
    assert_eq!((r.status, r.error_type()), (404, "PortBindingNotFound"));
    let port = s.get(&format!("/v2.0/ports/{pid}")).await.body["port"].clone();
    assert_eq!(port["binding:host_id"], "compute-4");
    assert_eq!(port["binding:vif_type"], "vrouter");
    assert_eq!(port["status"], "DOWN");
    assert_eq!(port["fixed_ips"][0]["ip_address"], ip);
    assert_eq!(port["mac_address"], mac);
    let src = s.get(&format!("{b}/compute-1")).await.body["binding"].clone();
    assert_eq!(
        (src["status"].clone(), src["vif_type"].clone()),
        (json!("INACTIVE"), json!("unbound"))
    );
    // The source's dynamic VLAN is released once nothing is bound through it.
    assert!(
        vlan_segments(
            &s.get(&format!("/v2.0/segments?network_id={}", id(&n)))
                .await
                .body
        )
        .is_empty()
    );

    // 3. The destination agent plugs the VIF; 4. the source binding goes.
    let r = device(&s, &pid, "compute-4", "up").await;
    assert_eq!(r.body["port"]["status"], "ACTIVE");
    assert_eq!(s.delete(&format!("{b}/compute-1")).await.status, 204);
    assert_eq!(s.delete(&format!("{b}/compute-1")).await.status, 404);
    let r = s.get(&b).await;
    assert_eq!(r.body["bindings"].as_array().expect("list").len(), 1);
    assert_eq!(r.body["bindings"][0]["host"], "compute-4");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binding_errors_leave_nothing_behind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    s.lab_agents().await;
    let n = s.network("net").await;
    s.subnet(&n, "10.0.0.0/24").await;
    let sriov = s
        .port(&n, json!({"binding:host_id": "compute-3", "binding:vnic_type": "direct", "device_owner": "compute:nova"}))
        .await;
    let before = s.get(&format!("/v2.0/ports/{}", id(&sriov))).await.body;
    // An SR-IOV port cannot move to a vRouter host: 500 PortBindingError, nothing stored.
    let r = s
        .post(
            &format!("/v2.0/ports/{}/bindings", id(&sriov)),
            json!({"binding": {"host": "compute-2"}}),
        )
        .await;
    assert_eq!((r.status, r.error_type()), (500, "PortBindingError"));
    assert_eq!(
        r.message(),
        format!(
            "Binding for port {} on host compute-2 could not be created or updated.",
            id(&sriov)
        )
    );
    assert_eq!(
        s.get(&format!("/v2.0/ports/{}", id(&sriov))).await.body,
        before
    );
    assert_eq!(
        s.get(&format!("/v2.0/ports/{}/bindings", id(&sriov)))
            .await
            .body["bindings"]
            .as_array()
            .expect("list")
            .len(),
        1
    );
    // It can move to another SR-IOV host... of which the lab has one; a dead one fails too.
    s.report(
        "compute-5",
        "NIC Switch agent",
        json!({"device_mappings": {"physnet1": ["eth1"]}}),
    )
    .await;
    let r = s
        .post(
            &format!("/v2.0/ports/{}/bindings", id(&sriov)),
            json!({"binding": {"host": "compute-5"}}),
        )
        .await;
    assert_eq!(r.body["binding"]["vif_type"], "hw_veb");

    // Only compute (and manila) ports take multiple bindings.
    let plain = s.port(&n, json!({"device_owner": "network:dhcp"})).await;
    let r = s
        .post(
            &format!("/v2.0/ports/{}/bindings", id(&plain)),
            json!({"binding": {"host": "compute-2"}}),
        )
        .await;
    assert_eq!((r.status, r.error_type()), (400, "BadRequest"));
    let r = s
        .post(
            "/v2.0/ports/00000000-0000-0000-0000-000000000000/bindings",
            json!({"binding": {"host": "compute-2"}}),
        )
        .await;
    assert_eq!((r.status, r.error_type()), (404, "PortNotFound"));
    let r = s
        .post(
            &format!("/v2.0/ports/{}/bindings", id(&sriov)),
            json!({"binding": {}}),
        )
        .await;
    assert_eq!(r.status, 400);
    let r = s
        .req(
            Method::GET,
            &format!("/v2.0/ports/{}/bindings", id(&sriov)),
            None,
            &[("x-roles", "member")],
        )
        .await;
    assert_eq!(r.status, 403);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_migrating_to_flow() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    s.lab_agents().await;
    let n = s.network("net").await;
    s.subnet(&n, "10.0.0.0/24").await;
    let p = s
        .port(
            &n,
            json!({"binding:host_id": "compute-2", "device_owner": "compute:nova"}),
        )
        .await;
    let pid = id(&p);
    device(&s, &pid, "compute-2", "up").await;
    // Nova (without binding-extended) marks the destination in the profile...
    let r = s
        .put(
            &format!("/v2.0/ports/{pid}"),
            json!({"port": {"binding:profile": {"migrating_to": "compute-1"}}}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body["port"]["binding:profile"]["migrating_to"],
        "compute-1"
    );
    assert_eq!(r.body["port"]["binding:host_id"], "compute-2");
    assert_eq!(
        r.body["port"]["status"], "ACTIVE",
        "marking a migration does not unplug the source"
    );
    let r = s
        .put(
            &format!("/v2.0/ports/{pid}"),
            json!({"port": {"binding:profile": {"migrating_to": 7}}}),
        )
        .await;
    assert_eq!(r.status, 400);
    // ...then moves the host and clears the mark.
    let r = s
        .put(
            &format!("/v2.0/ports/{pid}"),
            json!({"port": {"binding:host_id": "compute-1", "binding:profile": {}}}),
        )
        .await;
    assert_eq!(r.body["port"]["binding:host_id"], "compute-1");
    assert_eq!(r.body["port"]["binding:vif_type"], "ovs");
    assert_eq!(r.body["port"]["binding:profile"], json!({}));
    assert_eq!(r.body["port"]["status"], "DOWN");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activating_a_first_binding_replaces_the_hostless_placeholder() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    s.lab_agents().await;
    let n = s.network("net").await;
    s.subnet(&n, "10.0.0.0/24").await;
    let p = s.port(&n, json!({"device_owner": "compute:nova"})).await;
    let b = format!("/v2.0/ports/{}/bindings", id(&p));
    let r = s.post(&b, json!({"binding": {"host": "compute-2"}})).await;
    assert_eq!(
        r.body["binding"]["status"], "INACTIVE",
        "the unbound placeholder is the active binding"
    );
    let r = s
        .req(Method::PUT, &format!("{b}/compute-2/activate"), None, &[])
        .await;
    assert_eq!(r.status, 200);
    let all = s.get(&b).await.body["bindings"].clone();
    assert_eq!(all.as_array().expect("list").len(), 1, "{all}");
    assert_eq!(all[0]["host"], "compute-2");
    let port = s.get(&format!("/v2.0/ports/{}", id(&p))).await.body["port"].clone();
    assert_eq!(port["binding:vif_type"], "vrouter");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slaac_addresses_follow_a_mac_change() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    let n = s.network("v6").await;
    s.create("subnets", "subnet", json!({"network_id": n["id"], "cidr": "2001:db8::/64", "ip_version": 6, "ipv6_address_mode": "slaac", "ipv6_ra_mode": "slaac"})).await;
    let p = s
        .port(&n, json!({"mac_address": "fa:16:3e:12:34:56"}))
        .await;
    assert_eq!(
        p["fixed_ips"][0]["ip_address"],
        "2001:db8::f816:3eff:fe12:3456"
    );
    let r = s
        .put(
            &format!("/v2.0/ports/{}", id(&p)),
            json!({"port": {"mac_address": "fa:16:3e:ab:cd:ef"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body["port"]["fixed_ips"][0]["ip_address"],
        "2001:db8::f816:3eff:feab:cdef"
    );
    s.stop().await;
}
