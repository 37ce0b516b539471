//! Live migrations that cannot complete roll back, as Nova's flow does:
//! a `direct` (SR-IOV) port to a vRouter host and a destination whose agent
//! is known dead fail at the binding (400, nothing left on the destination);
//! a destination whose agent died too recently for Neutron to know binds
//! but never pre-plugs, and the migration is rolled back after the VIF
//! plugging timeout. In every case the VM keeps running on its source with
//! connectivity, and a ping stream across the failed attempt loses nothing.

mod common;

use std::time::Duration;

use common::bindings;
use serde_json::{Value, json};
use switchyard_lab::client::{LabClient, migration};
use switchyard_lab::live::{LiveLab, Options};

async fn port_of(c: &LabClient, server: &str) -> String {
    let p = c
        .get(&format!("/v2.0/ports?device_id={server}"))
        .await
        .expect("ports");
    p["ports"][0]["id"].as_str().expect("port").to_string()
}

async fn last_migration(c: &LabClient, server: &str) -> Value {
    let m = c
        .get(&format!(
            "/compute/v2.1/os-migrations?instance_uuid={server}"
        ))
        .await
        .expect("migrations");
    m["migrations"][0].clone()
}

async fn stream(c: &LabClient, from: &str, to: &str) {
    c.put(
        &format!("/switchyard/v1/lab/guests/{from}/stream"),
        &json!({"stream": {"target": to, "interval_ms": 10}}),
    )
    .await
    .expect("stream");
}

async fn stop_stream(c: &LabClient, from: &str) -> Value {
    let r = c
        .delete(&format!("/switchyard/v1/lab/guests/{from}/stream"))
        .await
        .expect("stop");
    r["stream"].clone()
}

/// The host picker's answer for a server: host -> why not (`null`: fits).
async fn destinations(c: &LabClient, server: &str) -> std::collections::BTreeMap<String, Value> {
    let d = c
        .get(&format!("/switchyard/v1/lab/servers/{server}/destinations"))
        .await
        .expect("destinations");
    d["destinations"]
        .as_array()
        .expect("list")
        .iter()
        .map(|h| {
            assert_eq!(h["fits"], h["reason"].is_null(), "{h}");
            (
                h["host"].as_str().expect("host").to_string(),
                h["reason"].clone(),
            )
        })
        .collect()
}

/// Pings until a short run is answered in full.
async fn warm(c: &LabClient, from: &str, to: &str) {
    migration::warm(c, from, to).await.expect("warm path");
}

/// No request lost except possibly the one in flight when it stopped.
fn nothing_lost(r: &Value) -> bool {
    let sent = r["sent"].as_u64().unwrap_or(0);
    sent > 50
        && r["lost"]
            .as_array()
            .is_some_and(|l| l.iter().all(|s| s.as_u64().unwrap_or(0) + 1 >= sent))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_migrations_roll_back_and_lose_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = Options::reference(dir.path().join("switchyard.db")).expect("reference");
    // Long enough that step 3 binds before Neutron notices the stopped
    // agent even on a loaded machine, short enough for step 2 to wait out.
    opts.ml2.agent_down_time = 4;
    opts.heartbeat = Duration::from_millis(300);
    opts.compute.vif_plugging_timeout = Duration::from_secs(3);
    let mut live = LiveLab::start(opts).await.expect("lab");
    let c = LabClient::new(&live.url());
    let n = c
        .post("/v2.0/networks", &json!({"network": {"name": "rb"}}))
        .await
        .expect("net");
    let net = n["network"]["id"].as_str().expect("id").to_string();
    c.post(
        "/v2.0/subnets",
        &json!({"subnet": {"network_id": net, "ip_version": 4, "cidr": "10.63.0.0/24"}}),
    )
    .await
    .expect("subnet");
    let limit = Duration::from_secs(60);
    c.boot("peer", json!([{"uuid": net}]), "compute-2", limit)
        .await
        .expect("peer");
    let vm = c
        .boot("vm", json!([{"uuid": net}]), "compute-1", limit)
        .await
        .expect("vm");
    let vm_id = vm["id"].as_str().expect("id").to_string();
    let vm_ip = vm["addresses"]["rb"][0]["addr"]
        .as_str()
        .expect("ip")
        .to_string();
    let vm_port = port_of(&c, &vm_id).await;
    let action = |id: &str| format!("/compute/v2.1/servers/{id}/action");
    let to = |h: &str| json!({"os-migrateLive": {"host": h, "block_migration": "auto"}});

    // 1. A direct port cannot bind on a vRouter host.
    let p = c
        .post(
            "/v2.0/ports",
            &json!({"port": {"network_id": net, "binding:vnic_type": "direct"}}),
        )
        .await
        .expect("port");
    let vf_port = p["port"]["id"].as_str().expect("id").to_string();
    let vf = c
        .boot("vf", json!([{"port": vf_port}]), "compute-3", limit)
        .await
        .expect("vf vm");
    let vf_id = vf["id"].as_str().expect("id").to_string();
    let vf_ip = vf["addresses"]["rb"][0]["addr"]
        .as_str()
        .expect("ip")
        .to_string();
    warm(&c, "peer", &vf_ip).await;
    stream(&c, "peer", &vf_ip).await;
    let (s, v) = c
        .call(
            reqwest::Method::POST,
            &action(&vf_id),
            Some(&to("compute-4")),
        )
        .await
        .expect("call");
    assert_eq!(s, 400, "{v}");
    let msg = v["badRequest"]["message"].as_str().expect("message");
    assert!(
        msg.starts_with("Migration pre-check error: Binding failed for port")
            && msg.contains(&vf_port)
            && msg.contains(
                "binding:vnic_type direct cannot be bound on compute-4, whose networking is vrouter"
            ),
        "{msg}"
    );
    let s = c
        .get(&format!("/compute/v2.1/servers/{vf_id}"))
        .await
        .expect("server");
    assert_eq!(s["server"]["status"], "ACTIVE");
    assert_eq!(s["server"]["OS-EXT-SRV-ATTR:host"], "compute-3");
    assert_eq!(
        bindings(&c, &vf_port).await,
        vec![("compute-3".to_string(), "ACTIVE".to_string())]
    );
    let m = last_migration(&c, &vf_id).await;
    assert_eq!(m["status"], "error", "{m}");
    assert_eq!(m["switchyard:error"], msg);
    assert_eq!(m["switchyard:steps"], json!([]), "no step done: {m}");
    // The host picker said so before: no vRouter or OVS host takes a VF.
    let d = destinations(&c, &vf_id).await;
    assert_eq!(
        d["compute-4"],
        "host compute-4 (vrouter networking) cannot plug a port of binding:vnic_type direct"
    );
    assert_eq!(d["compute-3"], "the instance runs on compute-3");
    assert!(d.values().all(|r| !r.is_null()), "{d:?}");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let r = stop_stream(&c, "peer").await;
    assert!(nothing_lost(&r), "{r}");

    // 2. The destination's agent is dead and Neutron knows it.
    live.stop_agent("compute-4").await.expect("stop");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let a = c.get("/v2.0/agents?host=compute-4").await.expect("agents");
        if a["agents"][0]["alive"] == false {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "agent never dead: {a}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let d = destinations(&c, &vm_id).await;
    assert_eq!(
        d["compute-4"],
        "the networking agent on compute-4 is not alive"
    );
    assert_eq!(d["compute-2"], Value::Null, "{d:?}");
    assert_eq!(
        d["compute-3"],
        "host compute-3 (sriov networking) cannot plug a port of binding:vnic_type normal"
    );
    warm(&c, "peer", &vm_ip).await;
    stream(&c, "peer", &vm_ip).await;
    let (s, v) = c
        .call(
            reqwest::Method::POST,
            &action(&vm_id),
            Some(&to("compute-4")),
        )
        .await
        .expect("call");
    assert_eq!(s, 400, "{v}");
    assert!(
        v["badRequest"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("Binding failed for port")
                && m.ends_with("the networking agent on compute-4 is not alive")),
        "{v}"
    );
    assert_eq!(
        bindings(&c, &vm_port).await,
        vec![("compute-1".to_string(), "ACTIVE".to_string())]
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    let r = stop_stream(&c, "peer").await;
    assert!(nothing_lost(&r), "{r}");

    // 3. The destination's agent just died: the binding is made, the
    //    destination never pre-plugs, the migration rolls back after the
    //    VIF plugging timeout while the VM keeps answering on its source.
    live.start_agent("compute-4").expect("start");
    live.stop_agent("compute-2").await.expect("stop");
    stream(&c, "peer", &vm_ip).await;
    c.post(&action(&vm_id), &to("compute-2"))
        .await
        .expect("accepted: the binding succeeds");
    let s = c
        .get(&format!("/compute/v2.1/servers/{vm_id}"))
        .await
        .expect("server");
    assert_eq!(s["server"]["status"], "MIGRATING");
    let s = c
        .wait_server(&vm_id, Duration::from_secs(30), |s| {
            s["status"] != "MIGRATING"
        })
        .await
        .expect("ends");
    assert_eq!(s["status"], "ACTIVE");
    assert_eq!(s["OS-EXT-SRV-ATTR:host"], "compute-1");
    assert_eq!(
        bindings(&c, &vm_port).await,
        vec![("compute-1".to_string(), "ACTIVE".to_string())]
    );
    let m = last_migration(&c, &vm_id).await;
    assert_eq!(m["status"], "error", "{m}");
    assert!(
        m["switchyard:error"]
            .as_str()
            .is_some_and(|e| e.contains("pre-live-migration on compute-2")
                && e.contains("keeps running on compute-1")),
        "{m}"
    );
    let steps: Vec<&str> = m["switchyard:steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter_map(|s| s["step"].as_str())
        .collect();
    assert_eq!(steps, ["binding created"], "{m}");
    assert_eq!(
        live.hypervisor()
            .guest("vm")
            .expect("guest")
            .host
            .as_deref(),
        Some("compute-1")
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    let r = stop_stream(&c, "peer").await;
    assert!(nothing_lost(&r), "{r}");

    // 4. Agents back: the same migration now succeeds.
    live.start_agent("compute-2").expect("start");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let a = c.get("/v2.0/agents?host=compute-4").await.expect("agents");
        if a["agents"][0]["alive"] == true {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "agent never back: {a}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.post(&action(&vm_id), &to("compute-4"))
        .await
        .expect("migrate");
    let s = c
        .wait_server(&vm_id, Duration::from_secs(30), |s| {
            s["status"] != "MIGRATING"
        })
        .await
        .expect("ends");
    assert_eq!(s["OS-EXT-SRV-ATTR:host"], "compute-4");
    assert_eq!(last_migration(&c, &vm_id).await["status"], "completed");
    live.shutdown().await;
}
