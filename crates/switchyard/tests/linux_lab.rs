//! `switchyard lab up --linux` as a user runs it: the reference topology on
//! this machine's kernel (namespaces, agent processes, real Open vSwitch),
//! guests on an OVS, a vRouter and an SR-IOV node booted through the lab API
//! with their DHCP leases from switchyard, `switchyard verify` green on every
//! path including the internet; then `kill -9` of the lab and `switchyard
//! lab down` leave no namespace and no process behind. Needs root.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

struct Lab {
    child: Option<Child>,
    state: PathBuf,
    prefix: String,
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["lab", "down", "--prefix", &self.prefix, "--state-dir"])
            .arg(&self.state)
            .output();
    }
}

fn namespaces(prefix: &str) -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&format!("{prefix}-")))
        .map(str::to_string)
        .collect()
}

fn recorded_pids(state: &Path) -> Vec<u32> {
    std::fs::read_to_string(state.join("state.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .map(|v| {
            v["pids"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p.as_u64().and_then(|p| u32::try_from(p).ok()))
                .collect()
        })
        .unwrap_or_default()
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

/// Runs `f` on a thread inside network namespace `ns` (sockets it opens
/// belong to that namespace).
fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let file = std::fs::File::open(format!("/run/netns/{ns}")).expect("netns");
    std::thread::spawn(move || {
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
}

/// The bytes of a test stream: xorshift, so a dropped, repeated or moved
/// chunk shows at its offset.
fn stream_bytes(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Sends 8 MiB over TCP from guest namespace `from` to `ip` in `to` and
/// checks they arrive unchanged.
fn tcp_stream_intact(from: &str, to: &str, ip: std::net::Ipv4Addr) {
    use std::io::{Read, Write};
    const LEN: usize = 8 << 20;
    let listener = in_netns(to, || {
        std::net::TcpListener::bind("0.0.0.0:5301").expect("listen")
    })
    .join()
    .expect("listener");
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let mut got = Vec::with_capacity(LEN);
        s.read_to_end(&mut got).expect("read");
        got
    });
    in_netns(from, move || {
        let mut c =
            std::net::TcpStream::connect_timeout(&(ip, 5301).into(), Duration::from_secs(10))
                .expect("connect");
        c.set_write_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        c.write_all(&stream_bytes(LEN)).expect("write");
    })
    .join()
    .expect("sender");
    let got = server.join().expect("receiver");
    let want = stream_bytes(LEN);
    assert_eq!(got.len(), want.len(), "{from} -> {to}: length");
    if let Some(at) = got.iter().zip(&want).position(|(a, b)| a != b) {
        panic!("{from} -> {to}: the stream differs at byte {at}");
    }
}

async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
) -> Value {
    let mut r = http.request(method, url);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.expect("request");
    let status = resp.status();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{url}: {status} {v}");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_scenario_connectivity_on_the_kernel() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("SKIPPED: lab up --linux needs root");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = format!("syl{}", std::process::id() % 100_000);
    let mut lab = Lab {
        child: None,
        state: dir.path().join("state"),
        prefix: prefix.clone(),
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args([
            "lab",
            "up",
            "--linux",
            "--guests",
            "netns",
            "--bind",
            "127.0.0.1:0",
            "--prefix",
            &prefix,
            "--clouds-yaml",
        ])
        .arg(dir.path().join("clouds.yaml"))
        .arg("--state-dir")
        .arg(&lab.state)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.path().join("lab.log")).expect("log"))
        .spawn()
        .expect("lab up --linux");
    let stdout = child.stdout.take().expect("stdout");
    lab.child = Some(child);
    let url = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stdout).lines();
        while let Some(Ok(l)) = lines.next() {
            if let Some(u) = l.trim().strip_prefix("Neutron API") {
                let u = u
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .trim_end_matches("/v2.0/")
                    .to_string();
                // Keep draining so the lab never blocks on a full pipe.
                std::thread::spawn(move || for _ in lines {});
                return Some(u);
            }
        }
        None
    })
    .await
    .expect("reader")
    .unwrap_or_else(|| {
        panic!(
            "lab up --linux never said it was up:\n{}",
            std::fs::read_to_string(dir.path().join("lab.log")).unwrap_or_default()
        )
    });
    assert!(!namespaces(&prefix).is_empty());

    // The lab asks for tokens (its identity is on by default): the admin's,
    // with the password from the clouds.yaml it wrote.
    let r = reqwest::get(format!("{url}/v2.0/networks"))
        .await
        .expect("get");
    assert_eq!(r.status().as_u16(), 401);
    let password = common::lab_admin_password(&dir.path().join("clouds.yaml"));
    let r = reqwest::Client::new()
        .post(format!("{url}/identity/v3/auth/tokens"))
        .json(&common::password_auth("admin", &password, "admin"))
        .send()
        .await
        .expect("login");
    assert_eq!(r.status().as_u16(), 201);
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        "x-auth-token",
        r.headers().get("x-subject-token").expect("token").clone(),
    );

    // The reference network with a router to public, and a VM per backend.
    let http = reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("client");
    let u = |p: &str| format!("{url}{p}");
    let net = call(
        &http,
        reqwest::Method::POST,
        &u("/v2.0/networks"),
        Some(json!({"network": {"name": "demo-net"}})),
    )
    .await;
    let net = net["network"]["id"].as_str().expect("id").to_string();
    let sub = call(
        &http,
        reqwest::Method::POST,
        &u("/v2.0/subnets"),
        Some(json!({"subnet": {"network_id": net, "ip_version": 4, "cidr": "50.50.50.0/24"}})),
    )
    .await;
    let sub = sub["subnet"]["id"].as_str().expect("id").to_string();
    let public = call(
        &http,
        reqwest::Method::GET,
        &u("/v2.0/networks?name=public"),
        None,
    )
    .await;
    let public = public["networks"][0]["id"]
        .as_str()
        .expect("public")
        .to_string();
    let r = call(
        &http,
        reqwest::Method::POST,
        &u("/v2.0/routers"),
        Some(json!({"router": {"name": "r", "external_gateway_info": {"network_id": public}}})),
    )
    .await;
    let rid = r["router"]["id"].as_str().expect("id").to_string();
    call(
        &http,
        reqwest::Method::PUT,
        &u(&format!("/v2.0/routers/{rid}/add_router_interface")),
        Some(json!({"subnet_id": sub})),
    )
    .await;
    for (host, vnic, name, vif) in [
        ("compute-1", "normal", "vm-ovs", "ovs"),
        ("compute-2", "normal", "vm-vrouter", "vrouter"),
        ("compute-3", "direct", "vm-sriov", "hw_veb"),
    ] {
        let p = call(
            &http,
            reqwest::Method::POST,
            &u("/v2.0/ports"),
            Some(json!({"port": {"network_id": net, "binding:host_id": host,
                "binding:vnic_type": vnic, "device_owner": "compute:nova"}})),
        )
        .await;
        assert_eq!(p["port"]["binding:vif_type"], vif);
        let g = call(
            &http,
            reqwest::Method::POST,
            &u("/switchyard/v1/lab/guests"),
            Some(json!({"guest": {"name": name, "port_id": p["port"]["id"]}})),
        )
        .await;
        // The kernel's DHCP client got the address Neutron allocated.
        assert_eq!(
            g["guest"]["ip"], p["port"]["fixed_ips"][0]["ip_address"],
            "{g}"
        );
    }
    // The connectivity matrix, real pings: 6 VM pairs and 3 internet paths.
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .env("OS_CLIENT_CONFIG_FILE", dir.path().join("clouds.yaml"))
        .args([
            "verify",
            "--os-cloud",
            "switchyard",
            "--json",
            "--url",
            &url,
        ])
        .output()
        .expect("verify");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert!(
        out.status.success() && v["ok"] == true,
        "verify: {v}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(v["pairs"].as_array().map(Vec::len), Some(9), "{v}");
    assert_eq!(
        v["pairs"]
            .as_array()
            .map(|p| p.iter().filter(|x| x["to"] == "internet").count()),
        Some(3)
    );

    // The overlay MTU Neutron advertises (1450) passes whole, with DF set,
    // between every pair of guests (OVS ↔ vRouter crosses the gateway).
    let gs = call(
        &http,
        reqwest::Method::GET,
        &u("/switchyard/v1/lab/guests"),
        None,
    )
    .await;
    let gs = gs["guests"].as_array().cloned().unwrap_or_default();
    assert_eq!(gs.len(), 3, "{gs:?}");
    for a in &gs {
        for b in &gs {
            if a["name"] == b["name"] {
                continue;
            }
            let (ns, ip) = (
                a["netns"].as_str().expect("netns"),
                b["ip"].as_str().expect("ip"),
            );
            let out = Command::new("ip")
                .args(["netns", "exec", ns, "ping", "-M", "do", "-s", "1422"])
                .args(["-c", "3", "-i", "0.2", "-W", "1", ip])
                .output()
                .expect("ping");
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                text.contains(" 0% packet loss") || text.contains(" 3 received"),
                "1450-byte packets {} -> {}: {text}",
                a["name"],
                b["name"]
            );
        }
    }

    // TCP streams arrive byte for byte on every path: guests' NICs hand the
    // agents 64 KiB bursts that are cut, checksummed, carried and joined
    // again with a checksum the guest trusts, so a fault there would reach
    // the application as silently wrong data.
    for a in &gs {
        for b in &gs {
            if a["name"] == b["name"] {
                continue;
            }
            let from = a["netns"].as_str().expect("netns").to_string();
            let to = b["netns"].as_str().expect("netns").to_string();
            let ip: std::net::Ipv4Addr = b["ip"].as_str().expect("ip").parse().expect("ip");
            tokio::task::spawn_blocking(move || tcp_stream_intact(&from, &to, ip))
                .await
                .expect("stream");
        }
    }

    // kill -9: the lab leaves its namespaces and processes; lab down removes them.
    let pids = recorded_pids(&lab.state);
    assert!(!pids.is_empty());
    if let Some(mut c) = lab.child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
    assert!(!namespaces(&prefix).is_empty(), "kill -9 leaves them");
    let down = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["lab", "down", "--prefix", &prefix, "--state-dir"])
        .arg(&lab.state)
        .output()
        .expect("lab down");
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(namespaces(&prefix), Vec::<String>::new());
    let left: Vec<u32> = pids.into_iter().filter(|p| alive(*p)).collect();
    assert!(left.is_empty(), "processes left: {left:?}");
}

/// Restarts under a 10 ms ping stream between an OVS guest and a vRouter
/// guest (the path crosses the OVS node, the fabric, the gateway and VXLAN):
/// the controller (nodes forward headless: nothing lost), the OVS node's
/// agent (Open vSwitch keeps its flows: nothing lost), and the vRouter and
/// gateway agents, whose processes carry their data planes: traffic stops
/// until the new process has reattached its devices and taken its state,
/// then flows again. Every node converges again after each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_keep_or_restore_traffic() {
    use switchyard_lab::linux::{LinuxLab, Options};
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("SKIPPED: lab up --linux needs root");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = format!("syr{}", std::process::id() % 100_000);
    let mut lab = LinuxLab::start(Options {
        topology: switchyard_lab::Topology::reference().expect("topology"),
        bind: "127.0.0.1:0".into(),
        db: dir.path().join("switchyard.db"),
        ml2: switchyard_ml2::Ml2Config::default(),
        project: "admin".into(),
        binary: env!("CARGO_BIN_EXE_switchyard").into(),
        state_dir: dir.path().join("state"),
        prefix: prefix.clone(),
        http: switchyard_api::HttpOptions::default(),
        guests: switchyard_lab::linux::guests::GuestKind::Netns,
        identity: None,
    })
    .await
    .expect("lab");
    let url = lab.url();
    let http = reqwest::Client::new();
    let u = |p: &str| format!("{url}{p}");
    let net = call(
        &http,
        reqwest::Method::POST,
        &u("/v2.0/networks"),
        Some(json!({"network": {"name": "n"}})),
    )
    .await;
    let net = net["network"]["id"].as_str().expect("id").to_string();
    call(
        &http,
        reqwest::Method::POST,
        &u("/v2.0/subnets"),
        Some(json!({"subnet": {"network_id": net, "ip_version": 4, "cidr": "10.80.0.0/24"}})),
    )
    .await;
    let mut ips = Vec::new();
    for (host, name) in [("compute-1", "ovs"), ("compute-2", "vr")] {
        let p = call(
            &http,
            reqwest::Method::POST,
            &u("/v2.0/ports"),
            Some(json!({"port": {"network_id": net, "binding:host_id": host, "device_owner": "compute:nova"}})),
        )
        .await;
        let g = call(
            &http,
            reqwest::Method::POST,
            &u("/switchyard/v1/lab/guests"),
            Some(json!({"guest": {"name": name, "port_id": p["port"]["id"]}})),
        )
        .await;
        ips.push(g["guest"]["ip"].as_str().expect("leased").to_string());
    }
    let hosts = [
        "compute-1",
        "compute-2",
        "compute-3",
        "compute-4",
        "gateway",
    ];
    let converged = |url: String| async move {
        let c = switchyard_lab::client::LabClient::new(&url);
        for _ in 0..300 {
            if switchyard_lab::live::failover::converged(&c, &hosts)
                .await
                .unwrap_or(false)
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    };
    let warm = lab
        .guests
        .ping("ovs", ips[1].parse().expect("ip"), 5, 100)
        .await
        .expect("ping");
    assert_eq!(warm.answered, 5, "{warm:?}");
    for what in ["controller", "compute-1", "compute-2", "gateway"] {
        lab.guests
            .start_stream("ovs", ips[1].parse().expect("ip"), 10)
            .await
            .expect("stream");
        tokio::time::sleep(Duration::from_millis(500)).await;
        if what == "controller" {
            lab.restart_controller().await.expect("restart controller");
        } else {
            lab.restart_agent(what).expect("restart agent");
        }
        assert!(
            converged(url.clone()).await,
            "every node converges again after restarting {what}"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        let r = lab
            .guests
            .stop_stream("ovs")
            .await
            .expect("stream")
            .expect("report");
        eprintln!(
            "restart of {what}: lost {} of {} (outage {} ms)",
            r.lost.len(),
            r.sent,
            r.outage_ms
        );
        let tail_ok = r.sent > 100 && r.lost.iter().all(|s| *s + 100 <= r.sent);
        assert!(
            tail_ok,
            "traffic flows again after restarting {what}: {r:?}"
        );
        if what == "controller" || what == "compute-1" {
            assert!(r.lost.is_empty(), "nothing lost restarting {what}: {r:?}");
        }
    }
    lab.shutdown().await;
    assert!(
        namespaces(&prefix).is_empty(),
        "shutdown removed every namespace"
    );
}

/// `ip -j ARGS` inside namespace `ns`, parsed.
fn ip_json(ns: &str, args: &[&str]) -> Value {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "ip", "-j"])
        .args(args)
        .output()
        .expect("ip");
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// The ports on `br-int` of OVS node `host` of a lab in `state`.
fn br_int_ports(state: &Path, host: &str) -> Vec<String> {
    let db = state.join(format!("ovs-{host}")).join("db.sock");
    let out = Command::new("ovs-vsctl")
        .arg(format!("--db=unix:{}", db.display()))
        .args(["list-ports", "br-int"])
        .output()
        .expect("ovs-vsctl");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn has_link(ns: &str, dev: &str) -> bool {
    Command::new("ip")
        .args(["netns", "exec", ns, "ip", "link", "show", dev])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Live migration through the compute API, OVS → vRouter and back: Nova's
/// binding flow, the guest re-plugged onto the destination's device with
/// its kernel state untouched (same NIC, MAC, address and neighbour entry),
/// the source's device gone (its OVS port off `br-int`), the destination's
/// there, and the port `ACTIVE` with the destination's `vif_type`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_migration_replugs_the_guest_and_keeps_its_kernel_state() {
    use switchyard_lab::client::LabClient;
    use switchyard_lab::linux::{LinuxLab, Options};
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("SKIPPED: lab up --linux needs root");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = format!("sym{}", std::process::id() % 100_000);
    let state = dir.path().join("state");
    let lab = LinuxLab::start(Options {
        topology: switchyard_lab::Topology::reference().expect("topology"),
        bind: "127.0.0.1:0".into(),
        db: dir.path().join("switchyard.db"),
        ml2: switchyard_ml2::Ml2Config::default(),
        project: "admin".into(),
        binary: env!("CARGO_BIN_EXE_switchyard").into(),
        state_dir: state.clone(),
        prefix: prefix.clone(),
        http: switchyard_api::HttpOptions::default(),
        guests: switchyard_lab::linux::guests::GuestKind::Netns,
        identity: None,
    })
    .await
    .expect("lab");
    let c = LabClient::new(&lab.url());
    let net = c
        .post("/v2.0/networks", &json!({"network": {"name": "m"}}))
        .await
        .expect("network");
    let net = net["network"]["id"].as_str().expect("id").to_string();
    c.post(
        "/v2.0/subnets",
        &json!({"subnet": {"network_id": net, "ip_version": 4, "cidr": "10.81.0.0/24"}}),
    )
    .await
    .expect("subnet");
    let limit = Duration::from_secs(60);
    c.boot("peer", json!([{"uuid": net}]), "compute-2", limit)
        .await
        .expect("peer boots");
    let s = c
        .boot("mover", json!([{"uuid": net}]), "compute-1", limit)
        .await
        .expect("mover boots");
    let id = s["id"].as_str().expect("id").to_string();
    let port = |c: &LabClient| {
        let id = id.clone();
        let c = c.clone();
        async move {
            let p = c
                .get(&format!("/v2.0/ports?device_id={id}"))
                .await
                .expect("ports");
            p["ports"][0].clone()
        }
    };
    let p = port(&c).await;
    let port_id = p["id"].as_str().expect("port").to_string();
    let tap = format!("tap{}", &port_id[..11]);
    assert_eq!(p["binding:vif_type"], "ovs");
    assert!(br_int_ports(&state, "compute-1").contains(&tap));
    let peer = lab.guests.get("peer").expect("peer");
    let mover = lab.guests.get("mover").expect("mover");
    let peer_ip = peer.ip.clone().expect("peer leased");
    let r = lab
        .guests
        .ping("mover", peer_ip.parse().expect("ip"), 3, 100)
        .await
        .expect("ping");
    assert_eq!(r.answered, 3, "{r:?}");
    // What the guest kernel holds: its NIC and its neighbour entry for the peer.
    let nic = |ns: &str| {
        let l = ip_json(ns, &["link", "show", "eth0"]);
        (l[0]["ifindex"].clone(), l[0]["address"].clone())
    };
    let neigh = |ns: &str| {
        ip_json(ns, &["neigh", "show", "dev", "eth0"])
            .as_array()
            .into_iter()
            .flatten()
            .find(|n| n["dst"] == peer_ip.as_str())
            .map(|n| n["lladdr"].clone())
    };
    let nic_before = nic(&mover.netns);
    assert_eq!(nic_before.1, mover.mac.as_str());
    assert_eq!(neigh(&mover.netns), Some(Value::from(peer.mac.clone())));
    let addr_before = ip_json(&mover.netns, &["addr", "show", "eth0"]);

    for (dest, vif) in [("compute-4", "vrouter"), ("compute-1", "ovs")] {
        c.post(
            &format!("/compute/v2.1/servers/{id}/action"),
            &json!({"os-migrateLive": {"host": dest, "block_migration": "auto"}}),
        )
        .await
        .expect("migration accepted");
        let done = c
            .wait_server(&id, limit, |s| {
                s["status"] != "MIGRATING" && s["OS-EXT-STS:task_state"].is_null()
            })
            .await
            .expect("migration ends");
        assert_eq!(done["status"], "ACTIVE", "{done}");
        assert_eq!(done["OS-EXT-SRV-ATTR:host"], dest, "{done}");
        // The guest kernel saw nothing: same NIC, address, neighbour entry.
        assert_eq!(nic(&mover.netns), nic_before, "to {dest}");
        assert_eq!(
            neigh(&mover.netns),
            Some(Value::from(peer.mac.clone())),
            "the neighbour entry survives the move to {dest}"
        );
        assert_eq!(
            ip_json(&mover.netns, &["addr", "show", "eth0"]),
            addr_before
        );
        let p = port(&c).await;
        assert_eq!(p["binding:vif_type"], vif, "{p}");
        assert_eq!(p["binding:host_id"], dest, "{p}");
        assert_eq!(p["status"], "ACTIVE", "{p}");
        assert_eq!(
            p["binding:profile"]
                .get("migrating_to")
                .map_or(Value::Null, Clone::clone),
            Value::Null
        );
        let g = lab.guests.get("mover").expect("mover");
        assert_eq!((g.host.as_str(), g.vif_type.as_str()), (dest, vif));
        // Plugged where it runs, nothing left where it ran.
        let (c1, c4) = (format!("{prefix}-compute-1"), format!("{prefix}-compute-4"));
        if dest == "compute-4" {
            assert!(has_link(&c4, &tap), "the vRouter TAP on compute-4");
            assert!(!br_int_ports(&state, "compute-1").contains(&tap));
            assert!(!has_link(&c1, &tap), "the OVS plug left compute-1");
        } else {
            assert!(br_int_ports(&state, "compute-1").contains(&tap));
            assert!(!has_link(&c4, &tap), "the TAP left compute-4");
        }
        // And it answers from its new place.
        let r = lab
            .guests
            .ping(
                "peer",
                g.ip.clone().expect("ip").parse().expect("ip"),
                5,
                50,
            )
            .await
            .expect("ping");
        assert!(r.answered >= 4, "peer reaches the guest on {dest}: {r:?}");
    }
    // Deleting the server removes its guest and VMM namespaces.
    c.delete(&format!("/compute/v2.1/servers/{id}"))
        .await
        .expect("delete");
    for _ in 0..100 {
        if !namespaces(&prefix).contains(&mover.netns) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let left = namespaces(&prefix);
    assert!(
        !left.contains(&mover.netns) && !left.contains(&mover.vmm),
        "{left:?}"
    );
    lab.shutdown().await;
    assert!(namespaces(&prefix).is_empty());
}

/// `switchyard demo --linux`: the reference scenario of DESIGN.md on the
/// kernel, every fact checked (boots per backend, both connectivity
/// matrices including the internet, the OVS → vRouter migration keeping IP
/// and MAC with the port ACTIVE on compute-4), the real lost pings of the
/// 10 ms stream reported; nothing left behind.
#[test]
fn demo_linux_runs_the_reference_scenario() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("SKIPPED: demo --linux needs root");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = format!("syd{}", std::process::id() % 100_000);
    let _cleanup = Lab {
        child: None,
        state: dir.path().join("state"),
        prefix: prefix.clone(),
    };
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args([
            "demo",
            "--linux",
            "--json",
            "--prefix",
            &prefix,
            "--state-dir",
        ])
        .arg(dir.path().join("state"))
        .env("RUST_LOG", "warn")
        .output()
        .expect("demo --linux");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert!(
        out.status.success() && v["ok"] == true,
        "demo --linux: {v:#}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let facts = v["facts"].as_array().cloned().unwrap_or_default();
    assert!(facts.len() >= 15, "{v:#}");
    assert!(facts.iter().all(|f| f["ok"] == true), "{v:#}");
    let m = &v["migration"];
    assert_eq!(
        (&m["vif_type_before"], &m["vif_type_after"]),
        (&json!("ovs"), &json!("vrouter"))
    );
    assert_eq!(m["ip_before"], m["ip_after"]);
    assert_eq!(m["mac_before"], m["mac_after"]);
    assert_eq!(m["connectivity_after"], true);
    assert!(m["sent"].as_u64().unwrap_or(0) > 30, "{m}");
    // The VMs are QEMU's, and QEMU moved this one.
    assert!(m["qemu_downtime_ms"].is_u64(), "{m}");
    eprintln!(
        "demo --linux: lost {} of {} pings, outage {} ms, migration {} ms",
        m["lost_pings"], m["sent"], m["outage_ms"], m["migration_ms"]
    );
    assert_eq!(
        v["matrix_before"]["pairs"].as_array().map(Vec::len),
        Some(9)
    );
    assert_eq!(
        v["matrix_after"]["pairs"].as_array().map(Vec::len),
        Some(16)
    );
    assert!(
        namespaces(&prefix).is_empty(),
        "demo --linux removes its lab"
    );
}

/// `switchyard bench linux --json`: one TCP stream per path over switchyard
/// and over the kernel on the same namespaces; every path carries TCP (an
/// OVS guest's offloaded checksums once broke it) and reports its figures.
/// Only the shape is checked: throughput is the benchmark's to record.
#[test]
fn bench_linux_measures_every_path_against_the_kernel() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("SKIPPED: bench linux needs root");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = format!("syb{}", std::process::id() % 100_000);
    let _cleanup = Lab {
        child: None,
        state: dir.path().join("state"),
        prefix: prefix.clone(),
    };
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args([
            "bench",
            "linux",
            "--json",
            "--seconds",
            "1",
            "--prefix",
            &prefix,
        ])
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .env("RUST_LOG", "warn")
        .output()
        .expect("bench linux");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert!(
        out.status.success(),
        "bench linux: {v:#}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let paths = v["paths"].as_array().cloned().unwrap_or_default();
    let names: Vec<&str> = paths.iter().filter_map(|p| p["path"].as_str()).collect();
    assert_eq!(
        names,
        ["vrouter_vrouter", "ovs_vrouter", "ovs_ovs"],
        "{v:#}"
    );
    for p in &paths {
        let f = |k: &str| p[k].as_f64().unwrap_or(-1.0);
        assert!(f("switchyard_gbps") > 0.0 && f("kernel_gbps") > 0.0, "{p}");
        assert!(f("rtt_ms") > 0.0 && f("kernel_rtt_ms") > 0.0, "{p}");
        let ratio = f("switchyard_gbps") / f("kernel_gbps");
        assert!((f("ratio") - ratio).abs() < 0.01, "{p}");
        eprintln!("{p}");
    }
    assert!(
        namespaces(&prefix).is_empty(),
        "bench linux removes its lab"
    );
}
