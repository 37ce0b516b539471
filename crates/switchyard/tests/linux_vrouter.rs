//! Linux mode, vRouter nodes: two `switchyard agent` processes, each in its
//! own network namespace (a node), move real packets between two guest
//! namespaces (real kernel stacks) over VXLAN on a real underlay veth.
//!
//! The controller runs in this process; the agents reach it over a
//! management namespace (a listener opened inside it), the test over
//! loopback. The test plays the hypervisor: it creates each VM's TAP in its
//! node (named `tap` + the port id's first 11 characters, as Nova does),
//! waits for the port to be `ACTIVE` (the agent attached the device), then
//! moves the TAP's netdev into the guest namespace with the port's MAC and
//! address. Needs root; every namespace, device and process it made is
//! removed when it ends, passed or failed.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use switchyard_api::nodeauth::{NodeCredentials, enroll_in_file};
use switchyard_ml2::Ml2Config;
use switchyard_proto::Role;
use switchyard_store::Durability;

fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// Runs `ip ARGS`, panicking with its stderr on failure.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `ip netns exec NS ip ARGS`.
fn ip_in(ns: &str, args: &[&str]) {
    let mut all = vec!["netns", "exec", ns, "ip"];
    all.extend_from_slice(args);
    ip(&all);
}

/// Namespaces and processes this test made; removed on drop.
struct Lab {
    prefix: String,
    namespaces: Vec<String>,
    children: Vec<Child>,
}

impl Lab {
    fn new() -> Self {
        Lab {
            prefix: format!("syv{}", std::process::id() % 100_000),
            namespaces: Vec::new(),
            children: Vec::new(),
        }
    }

    fn ns(&mut self, name: &str) -> String {
        let full = format!("{}-{name}", self.prefix);
        ip(&["netns", "add", &full]);
        ip_in(&full, &["link", "set", "lo", "up"]);
        self.namespaces.push(full.clone());
        full
    }

    /// A veth pair between namespaces `a` and `b`, addressed and up.
    fn wire(&self, a: (&str, &str, Option<&str>), b: (&str, &str, Option<&str>)) {
        ip(&[
            "link", "add", a.1, "netns", a.0, "type", "veth", "peer", "name", b.1, "netns", b.0,
        ]);
        for (ns, dev, addr) in [a, b] {
            if let Some(addr) = addr {
                ip_in(ns, &["addr", "add", addr, "dev", dev]);
            }
            ip_in(ns, &["link", "set", dev, "up"]);
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// A listener opened inside network namespace `ns` (the calling thread
/// enters it, binds, and the socket stays there).
fn listen_in(ns: &str, addr: &str) -> std::net::TcpListener {
    let path = format!("/run/netns/{ns}");
    let addr: SocketAddr = addr.parse().expect("addr");
    std::thread::spawn(move || {
        let f = std::fs::File::open(&path).expect("netns");
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let l = std::net::TcpListener::bind(addr).expect("bind in netns");
        l.set_nonblocking(true).expect("nonblocking");
        l
    })
    .join()
    .expect("listener thread")
}

async fn get(http: &reqwest::Client, url: &str) -> Value {
    http.get(url)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json")
}

async fn post(http: &reqwest::Client, url: &str, body: Value) -> Value {
    let r = http.post(url).json(&body).send().await.expect("post");
    assert!(r.status().is_success(), "POST {url}: {}", r.status());
    r.json().await.expect("json")
}

async fn until(what: &str, secs: u64, mut f: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

fn agent(
    lab: &mut Lab,
    ns: &str,
    host: &str,
    vtep: &str,
    controller: &str,
    token: &Path,
    log: &Path,
) {
    let child = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            env!("CARGO_BIN_EXE_switchyard"),
            "agent",
        ])
        .args(["--host", host, "--role", "vrouter", "--tunneling-ip", vtep])
        .args(["--controller", controller])
        .arg("--token-file")
        .arg(token)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log"))
        .spawn()
        .expect("spawn agent");
    lab.children.push(child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vrouter_nodes_move_real_packets_between_kernel_guests() {
    if !is_root() {
        eprintln!("SKIPPED: Linux-mode tests need root (network namespaces, TAP devices)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut lab = Lab::new();
    let mgmt = lab.ns("mgmt");
    let c2 = lab.ns("c2");
    let c4 = lab.ns("c4");
    let g1 = lab.ns("g1");
    let g2 = lab.ns("g2");
    // Management: a bridge in the management namespace, a leg to each node.
    ip_in(&mgmt, &["link", "add", "br0", "type", "bridge"]);
    ip_in(&mgmt, &["addr", "add", "10.255.0.1/24", "dev", "br0"]);
    ip_in(&mgmt, &["link", "set", "br0", "up"]);
    for (ns, addr, leg) in [
        (&c2, "10.255.0.12/24", "m-c2"),
        (&c4, "10.255.0.14/24", "m-c4"),
    ] {
        lab.wire((ns, "mgmt0", Some(addr)), (&mgmt, leg, None));
        ip_in(&mgmt, &["link", "set", leg, "master", "br0"]);
    }
    // The underlay between the two vRouter nodes.
    lab.wire(
        (&c2, "eth0", Some("192.0.2.12/24")),
        (&c4, "eth0", Some("192.0.2.14/24")),
    );

    // The controller: API on loopback for the test, southbound in the
    // management namespace for the agents.
    let creds = dir.path().join("nodes.toml");
    let mut app = switchyard_api::open_app(
        &dir.path().join("switchyard.db"),
        Durability::Process,
        &Ml2Config::default(),
        "admin",
    )
    .expect("app");
    app.shared.credentials = Arc::new(NodeCredentials::with_file(&creds));
    let api = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", api.local_addr().expect("addr"));
    let south =
        tokio::net::TcpListener::from_std(listen_in(&mgmt, "10.255.0.1:9696")).expect("listener");
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    for l in [api, south] {
        let (app, mut stop) = (app.clone(), stop.clone());
        tokio::spawn(async move {
            let _ = switchyard_api::serve(l, app, async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await;
        });
    }
    drop(stop);

    // Two enrolled vRouter nodes, each agent a process in its namespace.
    for (ns, host, vtep) in [
        (&c2, "compute-2", "192.0.2.12"),
        (&c4, "compute-4", "192.0.2.14"),
    ] {
        let token = dir.path().join(format!("{host}.token"));
        let t = enroll_in_file(&creds, host, Role::Vrouter, "test").expect("enroll");
        std::fs::write(&token, t).expect("token");
        let log = dir.path().join(format!("{host}.log"));
        agent(
            &mut lab,
            ns,
            host,
            vtep,
            "http://10.255.0.1:9696",
            &token,
            &log,
        );
    }
    let http = reqwest::Client::new();
    until("both nodes converge", 30, async || {
        let n = get(&http, &format!("{base}/switchyard/v1/nodes")).await;
        n["nodes"]
            .as_array()
            .is_some_and(|a| a.len() == 2 && a.iter().all(|n| n["state"] == "converged"))
    })
    .await;

    // A network, and a port on each node.
    let net = post(
        &http,
        &format!("{base}/v2.0/networks"),
        json!({"network": {"name": "linux-net"}}),
    )
    .await;
    let net = net["network"]["id"].as_str().expect("id").to_string();
    post(
        &http,
        &format!("{base}/v2.0/subnets"),
        json!({"subnet": {"network_id": net, "ip_version": 4, "cidr": "10.90.0.0/24"}}),
    )
    .await;
    let mut guests = Vec::new();
    for (node_ns, guest_ns, host) in [(&c2, &g1, "compute-2"), (&c4, &g2, "compute-4")] {
        let p = post(
            &http,
            &format!("{base}/v2.0/ports"),
            json!({"port": {"network_id": net, "binding:host_id": host, "device_owner": "compute:nova"}}),
        )
        .await;
        let port = p["port"]["id"].as_str().expect("id").to_string();
        assert_eq!(p["port"]["binding:vif_type"], "vrouter");
        let mac = p["port"]["mac_address"].as_str().expect("mac").to_string();
        let addr = p["port"]["fixed_ips"][0]["ip_address"]
            .as_str()
            .expect("ip")
            .to_string();
        // os-vif's part: the VM's TAP on the node, named after the port.
        let tap = switchyard_agent::linux::tap_name(&port);
        ip_in(node_ns, &["tuntap", "add", "dev", &tap, "mode", "tap"]);
        let status_url = format!("{base}/v2.0/ports/{port}");
        until(
            "the agent attaches the device (port ACTIVE)",
            30,
            async || get(&http, &status_url).await["port"]["status"] == "ACTIVE",
        )
        .await;
        // The guest: a kernel stack behind the TAP's netdev.
        ip_in(node_ns, &["link", "set", &tap, "netns", guest_ns]);
        ip_in(guest_ns, &["link", "set", &tap, "address", &mac]);
        ip_in(
            guest_ns,
            &["addr", "add", &format!("{addr}/24"), "dev", &tap],
        );
        ip_in(guest_ns, &["link", "set", &tap, "up"]);
        guests.push((guest_ns.to_string(), addr));
    }

    // Real pings, both ways, through the vRouters and VXLAN on the underlay,
    // watched on the underlay by tcpdump.
    let cap = dir.path().join("underlay.txt");
    let mut tcpdump = Command::new("ip")
        .args([
            "netns", "exec", &c4, "tcpdump", "-l", "-nn", "-i", "eth0", "-c", "8", "udp", "port",
            "4789",
        ])
        .stdout(std::fs::File::create(&cap).expect("capture"))
        .stderr(Stdio::null())
        .spawn()
        .expect("tcpdump");
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (from, to) in [(0usize, 1usize), (1, 0)] {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &guests[from].0,
                "ping",
                "-c",
                "5",
                "-i",
                "0.2",
                "-W",
                "2",
            ])
            .arg(&guests[to].1)
            .output()
            .expect("ping");
        assert!(
            out.status.success(),
            "ping {} -> {}: {}{}",
            guests[from].1,
            guests[to].1,
            String::from_utf8_lossy(&out.stdout),
            std::fs::read_to_string(dir.path().join("compute-2.log")).unwrap_or_default()
        );
    }
    let _ = tcpdump.kill();
    let _ = tcpdump.wait();
    let seen = std::fs::read_to_string(&cap).unwrap_or_default();
    // tcpdump prints the outer packet, then the inner one on the next line.
    let lines: Vec<&str> = seen.lines().collect();
    let vxlan_icmp = lines.windows(2).any(|w| {
        w[0].contains("192.0.2.12.4789 > 192.0.2.14.4789: VXLAN")
            && w[0].contains("vni")
            && w[1].contains("ICMP echo request")
    });
    assert!(
        vxlan_icmp,
        "no VXLAN-encapsulated ICMP on the underlay:\n{seen}"
    );
    // The frames crossed the underlay as VXLAN: the node's pipeline
    // encapsulated them (its counters, asked of the agent).
    let n = get(&http, &format!("{base}/switchyard/v1/nodes/compute-2")).await;
    let tx = n["node"]["applied"]["counters"]["tx"].as_u64().unwrap_or(0);
    assert!(tx >= 10, "{n}");
    let _ = stop_tx.send(true);
}
