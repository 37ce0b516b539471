//! The running lab (`switchyard lab up`) driven as a user drives it: the
//! Neutron API and the lab's guest endpoints over real HTTP, real agents on
//! the real southbound, the fabric in real time. Then the controller and an
//! agent are stopped and started while guests ping each other.
//!
//! Waits are deadlines for things to happen (generous, for a loaded CI
//! machine), never assertions about how fast they happen.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration as StdDuration;

use serde_json::{Value, json};
use smoltcp::time::Duration;
use switchyard_lab::live::{LiveLab, Options};

struct Env {
    live: LiveLab,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

async fn start() -> Env {
    let dir = tempfile::tempdir().expect("tempdir");
    let live = LiveLab::start(
        Options::reference(dir.path().join("switchyard.db")).expect("reference lab"),
    )
    .await
    .expect("lab starts");
    let env = Env {
        live,
        http: reqwest::Client::new(),
        _dir: dir,
    };
    env.wait_converged().await;
    env
}

impl Env {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.live.url())
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut r = self.http.request(method, self.url(path));
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).expect("json body")
        };
        (status, v)
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let (s, v) = self.call(reqwest::Method::POST, path, Some(body)).await;
        assert!((200..300).contains(&s), "POST {path}: {s} {v}");
        v
    }

    async fn get(&self, path: &str) -> Value {
        let (s, v) = self.call(reqwest::Method::GET, path, None).await;
        assert_eq!(s, 200, "GET {path}: {v}");
        v
    }

    /// Every node connected and acked what the controller wants it to run.
    async fn wait_converged(&self) {
        let ok = wait(StdDuration::from_secs(30), || async {
            let (s, v) = self
                .call(reqwest::Method::GET, "/switchyard/v1/nodes", None)
                .await;
            s == 200
                && v["nodes"].as_array().is_some_and(|n| {
                    n.len() == 5
                        && n.iter()
                            .all(|n| n["connected"] == true && n["converged"] == true)
                })
        })
        .await;
        assert!(ok, "nodes converge");
    }

    async fn network(&self, name: &str, cidr: &str) -> String {
        let net = self
            .post("/v2.0/networks", json!({"network": {"name": name}}))
            .await;
        let id = net["network"]["id"].as_str().expect("id").to_string();
        self.post(
            "/v2.0/subnets",
            json!({"subnet": {"network_id": id, "ip_version": 4, "cidr": cidr}}),
        )
        .await;
        id
    }

    /// A port bound to `host`, with a guest booted on it, ACTIVE and with its
    /// address; returns (port id, MAC, IP).
    async fn vm(
        &self,
        net: &str,
        name: &str,
        host: &str,
        vnic: &str,
    ) -> (String, String, Ipv4Addr) {
        let p = self
            .post(
                "/v2.0/ports",
                json!({"port": {"network_id": net, "name": name, "binding:host_id": host,
                    "binding:vnic_type": vnic, "device_owner": "compute:nova"}}),
            )
            .await;
        let id = p["port"]["id"].as_str().expect("id").to_string();
        let mac = p["port"]["mac_address"].as_str().expect("mac").to_string();
        let ip: Ipv4Addr = p["port"]["fixed_ips"][0]["ip_address"]
            .as_str()
            .expect("ip")
            .parse()
            .expect("v4");
        let g = self
            .post(
                "/switchyard/v1/lab/guests",
                json!({"guest": {"name": name, "port_id": id}}),
            )
            .await;
        assert_eq!(g["guest"]["host"], host);
        assert_eq!(g["guest"]["mac"], mac.as_str());
        let path = format!("/v2.0/ports/{id}");
        let active = wait(StdDuration::from_secs(20), || async {
            self.get(&path).await["port"]["status"] == "ACTIVE"
        })
        .await;
        assert!(active, "{name} ACTIVE");
        let got = self
            .live
            .hypervisor()
            .wait_for_address(name, StdDuration::from_secs(20))
            .await
            .expect("DHCP");
        assert_eq!(got, ip, "{name} got its Neutron address by DHCP");
        (id, mac, ip)
    }

    async fn ping(&self, from: &str, to: Ipv4Addr, count: u16) -> Value {
        let v = self
            .post(
                &format!("/switchyard/v1/lab/guests/{from}/ping"),
                json!({"ping": {"target": to.to_string(), "count": count, "interval_ms": 10}}),
            )
            .await;
        v["ping"].clone()
    }

    /// Every MAC a node's applied state mentions (interfaces and bridge tables).
    async fn macs_on(&self, host: &str) -> Vec<String> {
        let v = self.get(&format!("/switchyard/v1/nodes/{host}")).await;
        let a = &v["node"]["applied"];
        assert!(a.is_object(), "{host} answers introspection: {v}");
        let mut out = Vec::new();
        for i in a["interfaces"].as_array().into_iter().flatten() {
            out.push(i["mac"].as_str().unwrap_or_default().to_string());
        }
        for n in a["networks"].as_array().into_iter().flatten() {
            for e in n["bridge"].as_array().into_iter().flatten() {
                out.push(e["mac"].as_str().unwrap_or_default().to_string());
            }
            for e in n["arp"].as_array().into_iter().flatten() {
                out.push(e["mac"].as_str().unwrap_or_default().to_string());
            }
        }
        out
    }
}

async fn wait<F, Fut>(limit: StdDuration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if f().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(StdDuration::from_millis(25)).await;
    }
}

/// The guests' stack (smoltcp) drops an echo reply it cannot send yet for
/// want of an ARP entry (Linux would queue it), and a vRouter answers ARP
/// itself, so the responder first learns the requester from this exchange.
/// Measured streams start once a path answered once.
async fn warm_up(env: &Env, from: &str, to: Ipv4Addr) {
    let ok = wait(StdDuration::from_secs(10), || async {
        env.ping(from, to, 1).await["answered"] == 1
    })
    .await;
    assert!(ok, "{from} -> {to} answers at all");
}

const HOSTS: [&str; 5] = [
    "compute-1",
    "compute-2",
    "compute-3",
    "compute-4",
    "gateway",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_api_drives_guests_on_every_backend() {
    let env = start().await;
    let net = env.network("demo-net", "10.10.0.0/24").await;
    let vms = [
        ("vm-ovs", "compute-1", "normal", "ovs"),
        ("vm-vrouter", "compute-2", "normal", "vrouter"),
        ("vm-sriov", "compute-3", "direct", "hw_veb"),
    ];
    let mut made = Vec::new();
    for (name, host, vnic, vif) in vms {
        let (id, mac, ip) = env.vm(&net, name, host, vnic).await;
        let p = env.get(&format!("/v2.0/ports/{id}")).await;
        assert_eq!(p["port"]["binding:vif_type"], vif, "{name}");
        made.push((name, host, id, mac, ip));
    }
    for (from, ..) in &made {
        for (to, _, _, _, ip) in &made {
            if from == to {
                continue;
            }
            warm_up(&env, from, *ip).await;
            let r = env.ping(from, *ip, 20).await;
            assert_eq!(r["sent"], 20, "{from} -> {to}: {r}");
            assert_eq!(r["answered"], 20, "{from} -> {to}: {r}");
            assert_eq!(r["duplicates"], 0, "{from} -> {to}: {r}");
        }
    }
    // admin_state_up=false: the port goes DOWN and forwards nothing; back up,
    // it is ACTIVE and answers again, on the same device.
    let (_, _, vr_port, _, vr_ip) = &made[1];
    let vr_path = format!("/v2.0/ports/{vr_port}");
    let admin = |up: bool| json!({"port": {"admin_state_up": up}});
    let (s, _) = env
        .call(reqwest::Method::PUT, &vr_path, Some(admin(false)))
        .await;
    assert_eq!(s, 200);
    let down = wait(StdDuration::from_secs(10), || async {
        env.get(&vr_path).await["port"]["status"] == "DOWN"
    })
    .await;
    assert!(down, "an administratively down port is DOWN");
    let r = env.ping("vm-ovs", *vr_ip, 10).await;
    assert_eq!(r["answered"], 0, "nothing reaches a down port: {r}");
    let (s, _) = env
        .call(reqwest::Method::PUT, &vr_path, Some(admin(true)))
        .await;
    assert_eq!(s, 200);
    let up = wait(StdDuration::from_secs(10), || async {
        env.get(&vr_path).await["port"]["status"] == "ACTIVE"
    })
    .await;
    assert!(up, "back up, ACTIVE again");
    warm_up(&env, "vm-ovs", *vr_ip).await;
    let r = env.ping("vm-ovs", *vr_ip, 10).await;
    assert_eq!(r["answered"], 10, "{r}");

    // The vRouter node sees the VLAN-side VMs behind the gateway's VTEP.
    let on2 = env.macs_on("compute-2").await;
    for (_, _, _, mac, _) in &made {
        assert!(on2.contains(mac), "compute-2 knows {mac}: {on2:?}");
    }
    // Deleting a port removes its MAC from every node.
    let (_, _, gone_id, gone_mac, _) = &made[1];
    let (s, _) = env
        .call(
            reqwest::Method::DELETE,
            &format!("/v2.0/ports/{gone_id}"),
            None,
        )
        .await;
    assert_eq!(s, 204);
    for host in HOSTS {
        let vanished = wait(StdDuration::from_secs(10), || async {
            !env.macs_on(host).await.contains(gone_mac)
        })
        .await;
        assert!(vanished, "{gone_mac} gone from {host}");
    }
    let (_, _, _, kept_mac, _) = &made[0];
    assert!(env.macs_on("gateway").await.contains(kept_mac));
    // The guest whose port was deleted keeps its device (its VM still has
    // the NIC, as a TAP outlives its Neutron port until Nova unplugs it):
    // the next port gets another device, and the old guest is cut off.
    let old_plug =
        env.get("/switchyard/v1/lab/guests/vm-vrouter").await["guest"]["local_port"].clone();
    let _ = env.vm(&net, "vm-vr2", "compute-2", "normal").await;
    let g = env.get("/switchyard/v1/lab/guests/vm-vr2").await;
    assert_ne!(g["guest"]["local_port"], old_plug);
    let g = env.get("/switchyard/v1/lab/guests/vm-vrouter").await;
    assert_eq!(g["guest"]["host"], "compute-2", "{g}");
    let r = env.ping("vm-vrouter", made[0].4, 3).await;
    assert_eq!(
        r["answered"], 0,
        "a guest without a port forwards nothing: {r}"
    );
    warm_up(&env, "vm-vr2", made[0].4).await;
    let r = env.ping("vm-vr2", made[0].4, 5).await;
    assert_eq!(r["answered"], 5, "{r}");
    // Ping runs are bounded and aimed at a unicast address.
    for bad in [
        json!({"ping": {"target": "0.0.0.0"}}),
        json!({"ping": {"target": "255.255.255.255"}}),
        json!({"ping": {"target": "10.10.0.2", "count": 10000, "interval_ms": 10000}}),
        json!({"ping": {"target": "10.10.0.2", "size": 3}}),
        json!({"ping": {"target": "not-an-ip"}}),
        json!({"pong": {}}),
    ] {
        let (s, v) = env
            .call(
                reqwest::Method::POST,
                "/switchyard/v1/lab/guests/vm-vr2/ping",
                Some(bad.clone()),
            )
            .await;
        assert_eq!(s, 400, "{bad}: {v}");
        assert!(v["NeutronError"]["message"].is_string(), "{v}");
    }
    // The lab's own errors have Neutron's shape.
    let (s, v) = env
        .call(
            reqwest::Method::POST,
            "/switchyard/v1/lab/guests",
            Some(json!({"guest": {"name": "x", "port_id": "nope"}})),
        )
        .await;
    assert_eq!(s, 404, "{v}");
    assert_eq!(v["NeutronError"]["type"], "PortNotFound");
    let (s, v) = env
        .call(
            reqwest::Method::POST,
            "/switchyard/v1/lab/guests",
            Some(json!({"guest": {"name": "vm-ovs", "port_id": made[0].2}})),
        )
        .await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(v["NeutronError"]["type"], "GuestExists");
    // Its guests are IP stacks: no shell to run a command in.
    let (s, v) = env
        .call(
            reqwest::Method::POST,
            "/switchyard/v1/lab/guests/vm-ovs/exec",
            Some(json!({"exec": {"command": "true"}})),
        )
        .await;
    assert_eq!(s, 501, "{v}");
    assert!(v["NeutronError"]["message"].is_string(), "{v}");

    let plugs_before: Vec<Value> = env.get("/switchyard/v1/lab/guests").await["guests"]
        .as_array()
        .expect("guests")
        .iter()
        .skip(1)
        .cloned()
        .collect();
    // Deleting a guest unplugs it; its port is reported down. The guests after
    // it keep their plugs (the lab renumbers its tables underneath).
    let (_, _, ovs_port, _, _) = &made[0];
    let (s, _) = env
        .call(
            reqwest::Method::DELETE,
            "/switchyard/v1/lab/guests/vm-ovs",
            None,
        )
        .await;
    assert_eq!(s, 204);
    let (s, v) = env
        .call(
            reqwest::Method::GET,
            "/switchyard/v1/lab/guests/vm-ovs",
            None,
        )
        .await;
    assert_eq!(
        (s, &v["NeutronError"]["type"]),
        (404, &json!("GuestNotFound"))
    );
    let path = format!("/v2.0/ports/{ovs_port}");
    let down = wait(StdDuration::from_secs(10), || async {
        env.get(&path).await["port"]["status"] == "DOWN"
    })
    .await;
    assert!(down, "the unplugged port goes DOWN");
    let plugs_after = env.get("/switchyard/v1/lab/guests").await["guests"].clone();
    assert_eq!(plugs_after, json!(plugs_before));
    {
        let lab = env.live.lab();
        let lab = lab.lock().expect("lab");
        assert_eq!(lab.guest_at("compute-3", 100), Some("vm-sriov"));
        assert_eq!(lab.guest_at("compute-1", 10), None);
    }
    env.live.shutdown().await;
}

/// Each agent's items and local ports: what a resync must leave untouched.
fn agent_state(live: &LiveLab) -> BTreeMap<String, (String, Vec<(String, u32)>)> {
    live.hosts()
        .into_iter()
        .map(|h| {
            let a = live.agent(&h).expect("agent");
            let a = a.lock().expect("agent");
            let items = serde_json::to_string(a.items()).expect("items");
            let ports = a
                .introspect()
                .interfaces
                .iter()
                .map(|i| (i.port_id.clone(), i.local_port))
                .collect();
            (h, (items, ports))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_restart_keeps_traffic_and_resyncs_to_the_same_state() {
    let mut env = start().await;
    let net = env.network("demo-net", "10.20.0.0/24").await;
    let (_, _, ip_ovs) = env.vm(&net, "vm-ovs", "compute-1", "normal").await;
    let (_, _, ip_vr) = env.vm(&net, "vm-vrouter", "compute-2", "normal").await;
    env.wait_converged().await;
    let before = agent_state(&env.live);
    warm_up(&env, "vm-ovs", ip_vr).await;
    warm_up(&env, "vm-vrouter", ip_ovs).await;
    let hyp = env.live.hypervisor().clone();
    hyp.start_ping("vm-ovs", ip_vr, Duration::from_millis(10), None)
        .expect("ping");
    hyp.start_ping("vm-vrouter", ip_ovs, Duration::from_millis(10), None)
        .expect("ping");
    tokio::time::sleep(StdDuration::from_millis(500)).await;

    env.live.stop_controller().await;
    let (s, _) = (
        env.http
            .get(env.url("/v2.0/networks"))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0),
        (),
    );
    assert_eq!(s, 0, "nothing answers while the controller is down");
    tokio::time::sleep(StdDuration::from_secs(2)).await;
    env.live.start_controller().await.expect("restart");
    env.wait_converged().await;
    tokio::time::sleep(StdDuration::from_millis(500)).await;

    for g in ["vm-ovs", "vm-vrouter"] {
        let r = hyp.stop_ping(g).expect("guest").expect("stream");
        assert!(
            r.sent >= 150,
            "{g}: the stream ran through the outage: {r:?}"
        );
        // The last request may still be in flight when the stream stops.
        let lost: Vec<u16> = r
            .lost
            .iter()
            .copied()
            .filter(|s| usize::from(*s) + 1 < r.sent)
            .collect();
        assert!(lost.is_empty(), "{g}: no losses across the restart: {r:?}");
        assert_eq!(r.duplicates, 0, "{g}");
    }
    assert_eq!(
        before,
        agent_state(&env.live),
        "agents resynced to the same state and ports"
    );
    let nodes = env.get("/switchyard/v1/nodes").await;
    for n in nodes["nodes"].as_array().expect("nodes") {
        assert_eq!(
            n["last_error"],
            Value::Null,
            "no node refused a version: {n}"
        );
    }
    env.live.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_agent_keeps_forwarding_and_catches_up_when_back() {
    let mut env = start().await;
    let net = env.network("demo-net", "10.30.0.0/24").await;
    let (_, _, ip_ovs) = env.vm(&net, "vm-ovs", "compute-1", "normal").await;
    let (_, _, _ip_vr) = env.vm(&net, "vm-vrouter", "compute-2", "normal").await;
    let hyp = env.live.hypervisor().clone();
    warm_up(&env, "vm-vrouter", ip_ovs).await;
    hyp.start_ping("vm-vrouter", ip_ovs, Duration::from_millis(10), None)
        .expect("ping");

    env.live.stop_agent("compute-2").await.expect("stop");
    tokio::time::sleep(StdDuration::from_secs(1)).await;
    let down = wait(StdDuration::from_secs(10), || async {
        let v = env.get("/switchyard/v1/nodes/compute-2").await;
        v["node"]["connected"] == false && v["node"]["applied"].is_null()
    })
    .await;
    assert!(down, "the controller sees compute-2's agent gone");
    // A VM appears on another vRouter while compute-2's agent is away.
    let (_, mac4, ip4) = env.vm(&net, "vm-4", "compute-4", "normal").await;
    let v2 = env
        .live
        .agent("compute-2")
        .expect("agent")
        .lock()
        .expect("agent")
        .version();

    env.live.start_agent("compute-2").expect("start");
    env.wait_converged().await;
    let caught_up = env
        .live
        .agent("compute-2")
        .expect("agent")
        .lock()
        .expect("agent")
        .version();
    assert!(caught_up > v2, "compute-2 moved from {v2} to {caught_up}");
    assert!(env.macs_on("compute-2").await.contains(&mac4));
    let r = hyp.stop_ping("vm-vrouter").expect("guest").expect("stream");
    let lost: Vec<u16> = r
        .lost
        .iter()
        .copied()
        .filter(|s| usize::from(*s) + 1 < r.sent)
        .collect();
    assert!(
        lost.is_empty(),
        "forwarding went on without the agent: {r:?}"
    );
    assert!(
        r.sent >= 100,
        "the stream ran while the agent was away: {r:?}"
    );
    warm_up(&env, "vm-vrouter", ip4).await;
    let r = env.ping("vm-vrouter", ip4, 10).await;
    assert_eq!(r["answered"], 10, "the change made while away works: {r}");
    env.live.shutdown().await;
}
