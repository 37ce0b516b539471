//! Routers through the API, realised on the gateway node of the running lab:
//! guests on OVS, vRouter and SR-IOV nodes reach the internet through the
//! router's SNAT, two networks joined by one router reach each other across
//! backends, removing the interface cuts that, and a floating IP is reached
//! from the internet while it exists.

use std::net::Ipv4Addr;
use std::time::Duration as StdDuration;

use serde_json::{Value, json};
use switchyard_lab::live::{LiveLab, Options};

struct Env {
    live: LiveLab,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Env {
    async fn start() -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let live = LiveLab::start(
            Options::reference(dir.path().join("switchyard.db")).expect("reference lab"),
        )
        .await
        .expect("lab starts");
        Env {
            live,
            http: reqwest::Client::new(),
            _dir: dir,
        }
    }

    async fn call(&self, m: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut r = self.http.request(m, format!("{}{path}", self.live.url()));
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.expect("request");
        let s = resp.status().as_u16();
        let t = resp.text().await.expect("body");
        (s, serde_json::from_str(&t).unwrap_or(Value::Null))
    }

    async fn ok(&self, m: reqwest::Method, path: &str, body: Value) -> Value {
        let (s, v) = self.call(m, path, Some(body)).await;
        assert!((200..300).contains(&s), "{path}: {s} {v}");
        v
    }

    async fn network(&self, name: &str, cidr: &str) -> (String, String) {
        let n = self
            .ok(
                reqwest::Method::POST,
                "/v2.0/networks",
                json!({"network": {"name": name}}),
            )
            .await;
        let nid = n["network"]["id"].as_str().expect("id").to_string();
        let s = self
            .ok(
                reqwest::Method::POST,
                "/v2.0/subnets",
                json!({"subnet": {"network_id": nid, "ip_version": 4, "cidr": cidr}}),
            )
            .await;
        (nid, s["subnet"]["id"].as_str().expect("id").to_string())
    }

    async fn vm(&self, net: &str, name: &str, host: &str, vnic: &str) -> (String, Ipv4Addr) {
        let p = self
            .ok(
                reqwest::Method::POST,
                "/v2.0/ports",
                json!({"port": {"network_id": net, "binding:host_id": host, "binding:vnic_type": vnic,
                    "device_owner": "compute:nova", "device_id": name}}),
            )
            .await;
        let id = p["port"]["id"].as_str().expect("id").to_string();
        self.ok(
            reqwest::Method::POST,
            "/switchyard/v1/lab/guests",
            json!({"guest": {"name": name, "port_id": id}}),
        )
        .await;
        let ip = self
            .live
            .hypervisor()
            .wait_for_address(name, StdDuration::from_secs(20))
            .await
            .expect("DHCP");
        (id, ip)
    }

    /// Pings from a host on the internet until it answers; false if it never does.
    async fn internet_reaches(&self, to: Ipv4Addr, within: StdDuration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let (s, v) = self
                .call(
                    reqwest::Method::POST,
                    "/switchyard/v1/lab/internet/ping",
                    Some(
                        json!({"ping": {"target": to.to_string(), "count": 3, "interval_ms": 20}}),
                    ),
                )
                .await;
            assert_eq!(s, 200, "{v}");
            if v["ping"]["answered"] == 3 {
                return true;
            }
            if tokio::time::Instant::now() > deadline {
                return false;
            }
        }
    }

    /// Pings until a path answers (ARP warm-up), then counts a clean run.
    async fn reaches(&self, from: &str, to: Ipv4Addr) -> bool {
        let deadline = tokio::time::Instant::now() + StdDuration::from_secs(8);
        loop {
            let (_, v) = self
                .call(
                    reqwest::Method::POST,
                    &format!("/switchyard/v1/lab/guests/{from}/ping"),
                    Some(
                        json!({"ping": {"target": to.to_string(), "count": 3, "interval_ms": 20}}),
                    ),
                )
                .await;
            if v["ping"]["answered"] == 3 {
                return true;
            }
            if tokio::time::Instant::now() > deadline {
                return false;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_snat_and_inter_network_routing_across_backends() {
    let env = Env::start().await;
    // `public` comes with the lab: the gateway's external link, 203.0.113.0/24.
    let nets = env
        .ok(
            reqwest::Method::GET,
            "/v2.0/networks?name=public",
            Value::Null,
        )
        .await;
    let pid = nets["networks"][0]["id"]
        .as_str()
        .expect("public exists")
        .to_string();
    assert_eq!(nets["networks"][0]["router:external"], true);
    let (net_a, sub_a) = env.network("net-a", "10.10.0.0/24").await;
    let (net_b, sub_b) = env.network("net-b", "10.20.0.0/24").await;
    let r = env
        .ok(
            reqwest::Method::POST,
            "/v2.0/routers",
            json!({"router": {"name": "r1", "external_gateway_info": {"network_id": pid}}}),
        )
        .await;
    let rid = r["router"]["id"].as_str().expect("id").to_string();
    let snat_ip: Ipv4Addr =
        r["router"]["external_gateway_info"]["external_fixed_ips"][0]["ip_address"]
            .as_str()
            .expect("gateway address")
            .parse()
            .expect("v4");
    for sub in [&sub_a, &sub_b] {
        env.ok(
            reqwest::Method::PUT,
            &format!("/v2.0/routers/{rid}/add_router_interface"),
            json!({"subnet_id": sub}),
        )
        .await;
    }
    env.ok(reqwest::Method::GET, "/v2.0/routers", Value::Null)
        .await;

    let _ovs = env.vm(&net_a, "vm-ovs", "compute-1", "normal").await;
    let (vr_port, vr) = env.vm(&net_a, "vm-vrouter", "compute-2", "normal").await;
    let _sriov = env.vm(&net_a, "vm-sriov", "compute-3", "direct").await;
    let (_, b4) = env.vm(&net_b, "vm-b", "compute-4", "normal").await;

    // Every backend reaches its subnet's gateway address on the gateway node.
    let router_ip: Ipv4Addr = "10.10.0.1".parse().expect("ip");
    for g in ["vm-ovs", "vm-vrouter", "vm-sriov"] {
        assert!(env.reaches(g, router_ip).await, "{g} -> {router_ip}");
    }

    // A failed call changes nothing on the gateway node either.
    let gw_version = |v: &Value| v["node"]["desired_version"].clone();
    let before = env
        .ok(
            reqwest::Method::GET,
            "/switchyard/v1/nodes/gateway",
            Value::Null,
        )
        .await;
    let (s, _) = env
        .call(
            reqwest::Method::PUT,
            &format!("/v2.0/routers/{rid}/add_router_interface"),
            Some(json!({"subnet_id": sub_a})),
        )
        .await;
    assert_eq!(s, 400);
    let after = env
        .ok(
            reqwest::Method::GET,
            "/switchyard/v1/nodes/gateway",
            Value::Null,
        )
        .await;
    assert_eq!(gw_version(&before), gw_version(&after));
    assert_eq!(after["node"]["converged"], true);

    env.live
        .lab()
        .lock()
        .expect("lab")
        .capture("gateway", 2)
        .expect("external link");
    let internet: Ipv4Addr = "198.51.100.7".parse().expect("ip");
    for g in ["vm-ovs", "vm-vrouter", "vm-sriov", "vm-b"] {
        assert!(
            env.reaches(g, internet).await,
            "{g} reaches the internet through SNAT"
        );
    }
    // On the external link only public addresses appear: the router's SNAT
    // address towards the internet, never a project address.
    {
        let lab = env.live.lab();
        let lab = lab.lock().expect("lab");
        let cap = lab.captured("gateway", 2).expect("capture");
        let mut from_snat = 0;
        for (_, f) in &cap.frames {
            let Ok(eth) = smoltcp::wire::EthernetFrame::new_checked(&f[..]) else {
                continue;
            };
            if eth.ethertype() != smoltcp::wire::EthernetProtocol::Ipv4 {
                continue;
            }
            let ip = smoltcp::wire::Ipv4Packet::new_checked(eth.payload()).expect("ipv4");
            for a in [ip.src_addr(), ip.dst_addr()] {
                assert!(
                    a.octets()[..3] == [203, 0, 113] || a.octets()[..3] == [198, 51, 100],
                    "{a} on the external link"
                );
            }
            if ip.src_addr() == snat_ip {
                from_snat += 1;
            }
        }
        assert!(from_snat >= 12, "{from_snat} packets from {snat_ip}");
    }
    // Two networks joined by the router, across backends.
    assert!(
        env.reaches("vm-ovs", b4).await,
        "OVS in net-a -> vRouter in net-b"
    );
    assert!(
        env.reaches("vm-b", vr).await,
        "vRouter in net-b -> vRouter in net-a"
    );

    // Removing net-b's interface cuts it off.
    env.ok(
        reqwest::Method::PUT,
        &format!("/v2.0/routers/{rid}/remove_router_interface"),
        json!({"subnet_id": sub_b}),
    )
    .await;
    let (_, v) = env
        .call(
            reqwest::Method::POST,
            "/switchyard/v1/lab/guests/vm-ovs/ping",
            Some(json!({"ping": {"target": b4.to_string(), "count": 10, "interval_ms": 20}})),
        )
        .await;
    // Give the gateway a moment to apply the removal, then nothing answers.
    let (_, v2) = env
        .call(
            reqwest::Method::POST,
            "/switchyard/v1/lab/guests/vm-ovs/ping",
            Some(json!({"ping": {"target": b4.to_string(), "count": 10, "interval_ms": 20}})),
        )
        .await;
    assert_eq!(v2["ping"]["answered"], 0, "cut off: {v} then {v2}");
    assert!(
        env.reaches("vm-ovs", internet).await,
        "net-a still goes out"
    );

    // A floating IP on the vRouter guest is reachable from the internet, and
    // only while it exists.
    let fip = env
        .ok(
            reqwest::Method::POST,
            "/v2.0/floatingips",
            json!({"floatingip": {"floating_network_id": pid, "port_id": vr_port}}),
        )
        .await;
    assert_eq!(fip["floatingip"]["status"], "ACTIVE", "{fip}");
    let fid = fip["floatingip"]["id"].as_str().expect("id").to_string();
    let faddr: Ipv4Addr = fip["floatingip"]["floating_ip_address"]
        .as_str()
        .expect("addr")
        .parse()
        .expect("v4");
    // The port's default group admits only its members: the internet's
    // pings are dropped until a rule lets ICMP in from its prefix.
    assert!(
        !env.internet_reaches(faddr, StdDuration::from_secs(1)).await,
        "the default group keeps the internet out of {faddr}"
    );
    let port = env
        .ok(
            reqwest::Method::GET,
            &format!("/v2.0/ports/{vr_port}"),
            Value::Null,
        )
        .await;
    env.ok(
        reqwest::Method::POST,
        "/v2.0/security-group-rules",
        json!({"security_group_rule": {"security_group_id": port["port"]["security_groups"][0],
            "direction": "ingress", "protocol": "icmp", "remote_ip_prefix": "198.51.100.0/24"}}),
    )
    .await;
    assert!(
        env.internet_reaches(faddr, StdDuration::from_secs(8)).await,
        "the internet reaches {faddr} -> {vr}"
    );
    // The gateway node shows the router as it runs it.
    let node = env
        .ok(
            reqwest::Method::GET,
            "/switchyard/v1/nodes/gateway",
            Value::Null,
        )
        .await;
    let routers = &node["node"]["applied"]["routers"];
    assert_eq!(routers[0]["router"], rid.as_str(), "{node}");
    assert_eq!(routers[0]["snat"], snat_ip.to_string());
    assert_eq!(
        routers[0]["floating_ips"],
        json!([format!("{faddr} -> {vr}")])
    );
    assert!(node["node"]["applied"]["nat_connections"].as_u64() >= Some(1));
    let (s, _) = env
        .call(
            reqwest::Method::DELETE,
            &format!("/v2.0/floatingips/{fid}"),
            None,
        )
        .await;
    assert_eq!(s, 204);
    tokio::time::sleep(StdDuration::from_millis(300)).await;
    assert!(
        !env.internet_reaches(faddr, StdDuration::from_millis(500))
            .await,
        "the mapping is gone"
    );
    env.live.shutdown().await;
}
