//! `switchyard lab up --linux` as a user runs it: the reference topology on
//! this machine's kernel (namespaces, agent processes, real Open vSwitch),
//! guests on an OVS, a vRouter and an SR-IOV node booted through the lab API
//! with their DHCP leases from switchyard, `switchyard verify` green on every
//! path including the internet; then `kill -9` of the lab and `switchyard
//! lab down` leave no namespace and no process behind. Needs root.

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
            "--bind",
            "127.0.0.1:0",
            "--prefix",
            &prefix,
            "--state-dir",
        ])
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
                let u = u.trim().trim_end_matches("/v2.0/").to_string();
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

    // The reference network with a router to public, and a VM per backend.
    let http = reqwest::Client::new();
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
        .args(["verify", "--json", "--url", &url])
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
