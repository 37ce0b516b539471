//! Restart durability and concurrent IPAM over real HTTP.

mod common;

use common::{Server, id};
use serde_json::{Value, json};

async fn snapshot(s: &Server) -> Vec<Value> {
    let mut out = Vec::new();
    for c in ["networks", "subnets", "ports", "segments", "agents"] {
        let mut v = s.get(&format!("/v2.0/{c}")).await.body;
        // Liveness depends on the clock, not on what was stored.
        if let Some(list) = v[c].as_array_mut() {
            for a in list {
                a.as_object_mut().map(|o| o.remove("alive"));
            }
        }
        out.push(v);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_survives_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    s.lab_agents().await;
    let n = s.network("demo-net").await;
    s.subnet(&n, "50.50.50.0/24").await;
    let p = s
        .port(
            &n,
            json!({"binding:host_id": "compute-1", "device_owner": "compute:nova"}),
        )
        .await;
    s.post(
        &format!("/v2.0/ports/{}/bindings", id(&p)),
        json!({"binding": {"host": "compute-2"}}),
    )
    .await;
    s.put(
        &format!("/v2.0/networks/{}/tags", id(&n)),
        json!({"tags": ["keep"]}),
    )
    .await;
    let before = snapshot(&s).await;
    let clock = s.stop().await;

    let s = Server::start_full(dir.path(), Default::default(), clock).await;
    assert_eq!(snapshot(&s).await, before);
    let bindings = s
        .get(&format!("/v2.0/ports/{}/bindings", id(&p)))
        .await
        .body;
    assert_eq!(bindings["bindings"].as_array().expect("list").len(), 2);
    // Allocators continue from the stored state: no address or VNI is reused.
    let q = s.port(&n, json!({})).await;
    assert_ne!(
        q["fixed_ips"][0]["ip_address"],
        p["fixed_ips"][0]["ip_address"]
    );
    let n2 = s.network("second").await;
    assert_ne!(
        n2["provider:segmentation_id"],
        n["provider:segmentation_id"]
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_port_creation_never_duplicates_addresses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    let n = s.network("busy").await;
    s.subnet(&n, "10.7.0.0/24").await; // 253 addresses in the pool
    let mut tasks = Vec::new();
    for i in 0..300 {
        let (http, url, net) = (
            s.http.clone(),
            format!("{}/v2.0/ports", s.base),
            n["id"].clone(),
        );
        tasks.push(tokio::spawn(async move {
            let r = http
                .post(url)
                .json(&json!({"port": {"network_id": net, "name": format!("p{i}")}}))
                .send()
                .await
                .expect("sent");
            let status = r.status().as_u16();
            let body: Value = r.json().await.expect("json");
            (status, body)
        }));
    }
    let mut ips = std::collections::HashSet::new();
    let (mut ok, mut exhausted) = (0, 0);
    for t in tasks {
        let (status, body) = t.await.expect("task");
        match status {
            201 => {
                ok += 1;
                let ip = body["port"]["fixed_ips"][0]["ip_address"]
                    .as_str()
                    .expect("ip")
                    .to_string();
                assert!(ips.insert(ip.clone()), "address {ip} handed out twice");
            }
            409 => {
                assert_eq!(body["NeutronError"]["type"], "IpAddressGenerationFailure");
                exhausted += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!((ok, exhausted), (253, 47));
    let listed = s
        .get(&format!("/v2.0/ports?network_id={}", id(&n)))
        .await
        .body["ports"]
        .as_array()
        .expect("list")
        .len();
    assert_eq!(listed, 253);
    s.stop().await;
}
