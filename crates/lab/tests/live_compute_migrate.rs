//! Live migration through the compute API in every supported direction, on
//! the reference lab plus a second OVS node (compute-5) and a second SR-IOV
//! node (compute-6): OVS→vRouter, vRouter→vRouter, vRouter→OVS, OVS→OVS,
//! SR-IOV→SR-IOV; a VM with two ports on two networks; a second request
//! while a migration runs (409). Each move is measured with a 10 ms ping
//! stream from another VM; the IP and MAC stay, `vif_type` follows the host.

mod common;

use common::{bindings, id, network};
use serde_json::json;
use switchyard_lab::client::migration::migrate_under_stream;
use switchyard_lab::client::{LabClient, demo};
use switchyard_lab::live::compute::MIGRATION_STEPS;
use switchyard_lab::live::{LiveLab, Options};
use switchyard_lab::topology::{REFERENCE, Topology};

const MORE_NODES: &str = r#"
[[nodes]]
name = "compute-5"
role = "ovs"
trunk_port = 1
physnet = "physnet1"

[[nodes]]
name = "compute-6"
role = "sriov"
trunk_port = 1
physnet = "physnet1"
vfs = 4

[[links]]
a = "compute-5:1"
b = "fabric:5"

[[links]]
a = "compute-6:1"
b = "fabric:6"
"#;

async fn lab() -> (LiveLab, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = Options::reference(dir.path().join("switchyard.db")).expect("reference");
    opts.topology = Topology::from_toml(&format!("{REFERENCE}\n{MORE_NODES}")).expect("topology");
    let live = LiveLab::start(opts).await.expect("lab");
    (live, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_direction_two_ports_and_concurrent_requests() {
    let (live, _dir) = lab().await;
    let c = LabClient::new(&live.url());
    let net = network(&c, "mig-a", "10.61.0.0/24").await;
    let limit = std::time::Duration::from_secs(60);
    c.boot("peer", json!([{"uuid": net}]), "compute-2", limit)
        .await
        .expect("peer");
    let mover = c
        .boot("mover", json!([{"uuid": net}]), "compute-1", limit)
        .await
        .expect("mover");
    let mover = id(&mover);
    let port = {
        let p = c
            .get(&format!("/v2.0/ports?device_id={mover}"))
            .await
            .expect("ports");
        p["ports"][0]["id"].as_str().expect("port").to_string()
    };
    for (dest, vif) in [
        ("compute-4", "vrouter"), // OVS -> vRouter
        ("compute-2", "vrouter"), // vRouter -> vRouter
        ("compute-5", "ovs"),     // vRouter -> OVS
        ("compute-1", "ovs"),     // OVS -> OVS
    ] {
        let m = migrate_under_stream(&c, &mover, "peer", dest, 10)
            .await
            .expect("migration");
        eprintln!(
            "{} -> {}: lost {} of {} (outage {} ms, migration {} ms)",
            m.from_host, m.to_host, m.lost_pings, m.sent, m.outage_ms, m.migration_ms
        );
        assert!(m.ok(), "{m:?}");
        assert_eq!(m.to_host, dest);
        assert_eq!(m.vif_type_after, vif);
        assert!(m.lost_pings <= 10, "{m:?}");
        // The port is ACTIVE on the destination (its agent reported it).
        let p = c.get(&format!("/v2.0/ports/{port}")).await.expect("port");
        assert_eq!(p["port"]["status"], "ACTIVE", "{p}");
        assert_eq!(p["port"]["binding:host_id"], dest);
        // Only the destination's binding is left, and it is the active one.
        assert_eq!(
            bindings(&c, &port).await,
            vec![(dest.to_string(), "ACTIVE".to_string())]
        );
        let g = live.hypervisor().guest("mover").expect("guest");
        assert_eq!(g.host.as_deref(), Some(dest));
        // Every step of the move is recorded, in order.
        let migs = c
            .get(&format!(
                "/compute/v2.1/os-migrations?instance_uuid={mover}"
            ))
            .await
            .expect("migrations");
        let steps = migs["migrations"][0]["switchyard:steps"]
            .as_array()
            .expect("steps")
            .clone();
        let names: Vec<&str> = steps.iter().filter_map(|s| s["step"].as_str()).collect();
        assert_eq!(names, MIGRATION_STEPS, "{migs}");
        assert!(steps.iter().all(|s| s["error"].is_null()), "{migs}");
        let times: Vec<&str> = steps.iter().filter_map(|s| s["at"].as_str()).collect();
        assert!(times.is_sorted() && times.len() == 5, "{times:?}");
    }
    // The host picker: where `mover` (a normal port, now on compute-1)
    // could go, and why not elsewhere.
    let d = c
        .get(&format!("/switchyard/v1/lab/servers/{mover}/destinations"))
        .await
        .expect("destinations");
    let why = |h: &str| {
        d["destinations"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["host"] == h))
            .map(|x| x["reason"].clone())
            .unwrap_or_else(|| panic!("{h} missing: {d}"))
    };
    assert_eq!(why("compute-1"), "the instance runs on compute-1");
    for h in ["compute-2", "compute-4", "compute-5"] {
        assert_eq!(why(h), serde_json::Value::Null, "{d}");
    }
    assert_eq!(
        why("compute-6"),
        "host compute-6 (sriov networking) cannot plug a port of binding:vnic_type normal"
    );
    let (s, v) = c
        .call(
            reqwest::Method::GET,
            "/switchyard/v1/lab/servers/no-such-server/destinations",
            None,
        )
        .await
        .expect("call");
    assert_eq!(s, 404, "{v}");
    assert_eq!(v["NeutronError"]["type"], "InstanceNotFound", "{v}");

    // SR-IOV -> SR-IOV: a VF on another NIC, same MAC and VLAN.
    let p = c
        .post(
            "/v2.0/ports",
            &json!({"port": {"network_id": net, "binding:vnic_type": "direct"}}),
        )
        .await
        .expect("direct port");
    let vf_port = p["port"]["id"].as_str().expect("id").to_string();
    let vf = c
        .boot("vf-vm", json!([{"port": vf_port}]), "compute-3", limit)
        .await
        .expect("vf vm");
    let m = migrate_under_stream(&c, &id(&vf), "peer", "compute-6", 10)
        .await
        .expect("sriov migration");
    assert!(m.ok(), "{m:?}");
    assert_eq!(
        (m.vif_type_before.as_str(), m.vif_type_after.as_str()),
        ("hw_veb", "hw_veb")
    );
    assert!(m.lost_pings <= 10, "{m:?}");

    // Two ports on two networks: both move, both keep answering.
    let net_b = network(&c, "mig-b", "10.62.0.0/24").await;
    c.boot("peer-b", json!([{"uuid": net_b}]), "compute-4", limit)
        .await
        .expect("peer b");
    let two = c
        .boot(
            "two",
            json!([{"uuid": net}, {"uuid": net_b}]),
            "compute-1",
            limit,
        )
        .await
        .expect("two-port vm");
    let addrs = &two["addresses"];
    assert_eq!(addrs["mig-a"][0]["version"], 4, "{two}");
    assert!(
        addrs["mig-b"][0]["addr"]
            .as_str()
            .expect("b")
            .starts_with("10.62.0.")
    );
    let two = id(&two);
    let m = migrate_under_stream(&c, &two, "peer", "compute-4", 10)
        .await
        .expect("two-port migration");
    assert!(m.ok(), "{m:?}");
    let ports = c
        .get(&format!("/v2.0/ports?device_id={two}"))
        .await
        .expect("ports");
    let ports = ports["ports"].as_array().expect("ports");
    assert_eq!(ports.len(), 2);
    for p in ports {
        assert_eq!(p["binding:host_id"], "compute-4", "{p}");
        assert_eq!(p["binding:vif_type"], "vrouter", "{p}");
    }
    for g in ["two", "two.eth1"] {
        let info = live.hypervisor().guest(g).expect("guest");
        assert_eq!(info.host.as_deref(), Some("compute-4"), "{g}");
    }
    let b_ip = ports
        .iter()
        .find(|p| p["network_id"] == net_b.as_str())
        .and_then(|p| p["fixed_ips"][0]["ip_address"].as_str())
        .expect("b address")
        .to_string();
    let r = c
        .post(
            "/switchyard/v1/lab/guests/peer-b/ping",
            &json!({"ping": {"target": b_ip, "count": 5, "interval_ms": 20}}),
        )
        .await
        .expect("ping");
    assert!(r["ping"]["answered"].as_u64().expect("n") >= 4, "{r}");

    // A second request while a migration runs is refused with Nova's 409,
    // and so is deleting the server; the first migration completes.
    let action = format!("/compute/v2.1/servers/{mover}/action");
    let go = json!({"os-migrateLive": {"host": "compute-4", "block_migration": "auto"}});
    c.post(&action, &go).await.expect("first");
    let (s, v) = c
        .call(
            reqwest::Method::POST,
            &action,
            Some(&json!({"os-migrateLive": {"host": "compute-2", "block_migration": "auto"}})),
        )
        .await
        .expect("second");
    assert_eq!(s, 409, "{v}");
    assert_eq!(
        v["conflictingRequest"]["message"],
        format!("Cannot 'os-migrateLive' instance {mover} while it is in task_state migrating")
    );
    let (s, v) = c
        .call(
            reqwest::Method::DELETE,
            &format!("/compute/v2.1/servers/{mover}"),
            None,
        )
        .await
        .expect("delete");
    assert_eq!(s, 409, "{v}");
    let done = c
        .wait_server(&mover, limit, |s| s["status"] == "ACTIVE")
        .await
        .expect("completes");
    assert_eq!(done["OS-EXT-SRV-ATTR:host"], "compute-4");
    let migs = c
        .get("/compute/v2.1/os-migrations")
        .await
        .expect("migrations");
    let statuses: Vec<&str> = migs["migrations"]
        .as_array()
        .expect("list")
        .iter()
        .filter(|m| m["instance_uuid"] == mover.as_str())
        .filter_map(|m| m["status"].as_str())
        .collect();
    assert_eq!(statuses, vec!["completed"; 5], "{migs}");

    let vm = demo::vm(&c, &done).await.expect("vm");
    assert_eq!(vm.vif_type, "vrouter");

    // A floating IP follows its VM: reachable from the internet on a vRouter
    // node, and again after a live migration to the OVS node.
    let subnet = c
        .get(&format!("/v2.0/subnets?network_id={net}"))
        .await
        .expect("subnets")["subnets"][0]["id"]
        .as_str()
        .expect("subnet")
        .to_string();
    let (public, _router) = c.router_to_public("r", &subnet).await.expect("router");
    let (_, fip) = c.floating_ip(&public, &port).await.expect("fip");
    let from_internet = || async {
        let mut best = 0;
        for _ in 0..5 {
            let r = c
                .post(
                    "/switchyard/v1/lab/internet/ping",
                    &json!({"ping": {"target": fip, "count": 5, "interval_ms": 20}}),
                )
                .await
                .expect("internet ping");
            best = best.max(r["ping"]["answered"].as_u64().unwrap_or(0));
            if best == 5 {
                break;
            }
        }
        best
    };
    // The port's default group admits only its members: the internet's
    // pings are dropped until a rule lets ICMP in.
    assert_eq!(
        from_internet().await,
        0,
        "the default group keeps the internet out"
    );
    c.allow_ingress(&port, json!({"protocol": "icmp"}))
        .await
        .expect("ICMP rule");
    assert_eq!(from_internet().await, 5, "FIP on compute-4");
    let m = migrate_under_stream(&c, &mover, "peer", "compute-1", 10)
        .await
        .expect("migration with a FIP");
    assert!(m.ok(), "{m:?}");
    assert_eq!(from_internet().await, 5, "FIP after moving to compute-1");
    let f = c
        .get(&format!("/v2.0/floatingips?port_id={port}"))
        .await
        .expect("fip");
    assert_eq!(f["floatingips"][0]["fixed_ip_address"], vm.ip.as_str());
    live.shutdown().await;
}
