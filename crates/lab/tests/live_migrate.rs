//! A running guest moves from an OVS node to a vRouter node the way Nova's
//! multiple-bindings flow does it, driven over the Neutron API: INACTIVE
//! binding on the destination (pre-plugged there), the guest moves, the
//! binding is activated, the source binding deleted. It keeps its IP and
//! MAC, its port becomes `vif_type=vrouter`, and a 10 ms ping stream to it
//! loses only a few packets. This is the flow the compute API runs
//! (`live_compute*.rs` test it through that API); here it is driven by hand,
//! which also lets the test hold activation back and check that the ping
//! stream measures the outage that causes.

use std::time::Duration as StdDuration;

use serde_json::{Value, json};
use smoltcp::time::Duration;
use switchyard_lab::live::{LiveLab, Options};

async fn call(
    http: &reqwest::Client,
    m: reqwest::Method,
    url: String,
    body: Option<Value>,
) -> (u16, Value) {
    let mut r = http.request(m, url);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.expect("request");
    let s = resp.status().as_u16();
    let t = resp.text().await.expect("body");
    (s, serde_json::from_str(&t).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ovs_to_vrouter_keeps_address_and_loses_few_pings() {
    let dir = tempfile::tempdir().expect("tempdir");
    let live = LiveLab::start(
        Options::reference(dir.path().join("switchyard.db")).expect("reference lab"),
    )
    .await
    .expect("lab");
    let http = reqwest::Client::new();
    let u = live.url();
    let (_, n) = call(
        &http,
        reqwest::Method::POST,
        format!("{u}/v2.0/networks"),
        Some(json!({"network": {"name": "demo-net"}})),
    )
    .await;
    let net = n["network"]["id"].as_str().expect("net").to_string();
    call(
        &http,
        reqwest::Method::POST,
        format!("{u}/v2.0/subnets"),
        Some(json!({"subnet": {"network_id": net, "ip_version": 4, "cidr": "10.50.0.0/24"}})),
    )
    .await;
    let mut ports = Vec::new();
    for (name, host) in [("vm-a", "compute-1"), ("vm-peer", "compute-4")] {
        let (s, p) = call(
            &http,
            reqwest::Method::POST,
            format!("{u}/v2.0/ports"),
            Some(json!({"port": {"network_id": net, "binding:host_id": host, "device_owner": "compute:nova", "device_id": name}})),
        )
        .await;
        assert_eq!(s, 201, "{p}");
        let id = p["port"]["id"].as_str().expect("id").to_string();
        let (s, g) = call(
            &http,
            reqwest::Method::POST,
            format!("{u}/switchyard/v1/lab/guests"),
            Some(json!({"guest": {"name": name, "port_id": id}})),
        )
        .await;
        assert_eq!(s, 201, "{g}");
        ports.push((id, p["port"]["mac_address"].clone()));
    }
    let hyp = live.hypervisor().clone();
    let ip = hyp
        .wait_for_address("vm-a", StdDuration::from_secs(20))
        .await
        .expect("dhcp");
    hyp.wait_for_address("vm-peer", StdDuration::from_secs(20))
        .await
        .expect("dhcp");
    // Warm the path (ARP both ways), then stream at 10 ms.
    let mut warm = false;
    for _ in 0..20 {
        let r = hyp
            .ping(
                "vm-peer",
                ip,
                3,
                Duration::from_millis(20),
                Duration::from_millis(500),
            )
            .await
            .expect("ping");
        if r.clean() {
            warm = true;
            break;
        }
    }
    assert!(warm, "the path answers before the move");
    hyp.start_ping("vm-peer", ip, Duration::from_millis(10), None)
        .expect("stream");
    tokio::time::sleep(StdDuration::from_millis(300)).await;

    let (port, mac) = &ports[0];
    // Nova: an INACTIVE binding on the destination...
    let (s, b) = call(
        &http,
        reqwest::Method::POST,
        format!("{u}/v2.0/ports/{port}/bindings"),
        Some(json!({"binding": {"host": "compute-2"}})),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["binding"]["status"], "INACTIVE");
    assert_eq!(b["binding"]["vif_type"], "vrouter");
    // ...pre-plug and move the running guest...
    hyp.migrate("vm-a", "compute-2", StdDuration::from_secs(10))
        .await
        .expect("moved");
    // ...activate, then drop the source binding.
    let (s, a) = call(
        &http,
        reqwest::Method::PUT,
        format!("{u}/v2.0/ports/{port}/bindings/compute-2/activate"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{a}");
    let (s, _) = call(
        &http,
        reqwest::Method::DELETE,
        format!("{u}/v2.0/ports/{port}/bindings/compute-1"),
        None,
    )
    .await;
    assert_eq!(s, 204);
    tokio::time::sleep(StdDuration::from_millis(1500)).await;
    let r = hyp.stop_ping("vm-peer").expect("guest").expect("stream");

    let (_, p) = call(
        &http,
        reqwest::Method::GET,
        format!("{u}/v2.0/ports/{port}"),
        None,
    )
    .await;
    assert_eq!(p["port"]["binding:host_id"], "compute-2");
    assert_eq!(p["port"]["binding:vif_type"], "vrouter");
    assert_eq!(&p["port"]["mac_address"], mac);
    assert_eq!(p["port"]["fixed_ips"][0]["ip_address"], ip.to_string());
    let g = hyp.guest("vm-a").expect("guest");
    assert_eq!(g.host.as_deref(), Some("compute-2"));
    assert_eq!(
        g.ip.as_deref(),
        Some(format!("{ip}/24").as_str()),
        "kept its address"
    );
    // Everything after the outage is answered, and the outage is short.
    let last = r.sent.saturating_sub(1) as u16;
    let lost: Vec<u16> = r.lost.iter().copied().filter(|s| *s < last).collect();
    assert!(r.sent >= 150, "{r:?}");
    assert!(
        lost.len() <= 10,
        "lost {} pings at 10 ms: {lost:?}",
        lost.len()
    );
    assert_eq!(r.duplicates, 0);
    eprintln!(
        "OVS -> vRouter: lost {} of {} pings at 10 ms ({:?})",
        lost.len(),
        r.sent,
        lost
    );

    // The measurement sees an outage when there is one: back to compute-1,
    // with activation held back 300 ms after the guest moved (its new device
    // is administratively down until then), the stream loses that window.
    hyp.start_ping("vm-peer", ip, Duration::from_millis(10), None)
        .expect("stream");
    tokio::time::sleep(StdDuration::from_millis(300)).await;
    let (s, b) = call(
        &http,
        reqwest::Method::POST,
        format!("{u}/v2.0/ports/{port}/bindings"),
        Some(json!({"binding": {"host": "compute-1"}})),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    hyp.migrate("vm-a", "compute-1", StdDuration::from_secs(10))
        .await
        .expect("moved back");
    tokio::time::sleep(StdDuration::from_millis(300)).await;
    let (s, a) = call(
        &http,
        reqwest::Method::PUT,
        format!("{u}/v2.0/ports/{port}/bindings/compute-1/activate"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{a}");
    tokio::time::sleep(StdDuration::from_millis(1500)).await;
    let r = hyp.stop_ping("vm-peer").expect("guest").expect("stream");
    eprintln!(
        "held activation: lost {} of {}, outage {} ms",
        r.lost.len(),
        r.sent,
        r.outage_ms
    );
    assert!(r.outage_ms >= 200, "{r:?}");
    assert!(r.lost.len() >= 20, "{r:?}");
    live.shutdown().await;
}
