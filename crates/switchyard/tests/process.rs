//! The real `switchyard server` process: committed state survives `kill -9`,
//! SIGTERM stops it gracefully, bad configuration is refused with a clear error.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

struct Proc {
    child: Child,
    base: String,
}

fn start(data: &Path) -> Proc {
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["server", "--bind", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn switchyard");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("banner");
    // "switchyard: Neutron API on http://127.0.0.1:PORT/v2.0/ (database ...)"
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in banner {line:?}"));
    let base = url.trim_end_matches("/v2.0/").to_string();
    Proc { child, base }
}

fn call(
    client: &reqwest::blocking::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut r = client.request(method, url);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().expect("request");
    let status = resp.status().as_u16();
    let text = resp.text().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[test]
fn committed_writes_survive_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let client = reqwest::blocking::Client::new();
    let mut p = start(dir.path());
    let (st, net) = call(
        &client,
        reqwest::Method::POST,
        &format!("{}/v2.0/networks", p.base),
        Some(json!({"network": {"name": "durable"}})),
    );
    assert_eq!(st, 201);
    let net_id = net["network"]["id"].as_str().expect("id").to_string();
    call(
        &client,
        reqwest::Method::POST,
        &format!("{}/v2.0/subnets", p.base),
        Some(json!({"subnet": {"network_id": net_id, "cidr": "10.0.0.0/24", "ip_version": 4}})),
    );
    let mut ports = Vec::new();
    for i in 0..50 {
        let (st, port) = call(
            &client,
            reqwest::Method::POST,
            &format!("{}/v2.0/ports", p.base),
            Some(json!({"port": {"network_id": net_id, "name": format!("p{i}")}})),
        );
        assert_eq!(st, 201);
        ports.push(port["port"].clone());
    }
    p.child.kill().expect("SIGKILL");
    p.child.wait().expect("reaped");

    let mut p = start(dir.path());
    let (_, listed) = call(
        &client,
        reqwest::Method::GET,
        &format!(
            "{}/v2.0/ports?network_id={net_id}&sort_key=name&sort_dir=asc",
            p.base
        ),
        None,
    );
    let listed = listed["ports"].as_array().expect("ports").clone();
    assert_eq!(listed.len(), 50);
    for port in &ports {
        let again = listed
            .iter()
            .find(|x| x["id"] == port["id"])
            .expect("port survived");
        assert_eq!(again, port);
    }
    let (st, _) = call(
        &client,
        reqwest::Method::POST,
        &format!("{}/v2.0/ports", p.base),
        Some(json!({"port": {"network_id": net_id}})),
    );
    assert_eq!(st, 201);
    p.child.kill().expect("SIGKILL");
    p.child.wait().expect("reaped");
}

#[test]
fn sigterm_stops_gracefully() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut p = start(dir.path());
    let client = reqwest::blocking::Client::new();
    let (st, _) = call(&client, reqwest::Method::GET, &format!("{}/", p.base), None);
    assert_eq!(st, 200);
    let pid = p.child.id().to_string();
    let ok = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(ok.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = p.child.try_wait().expect("wait") {
            assert!(status.success(), "graceful exit, got {status}");
            break;
        }
        assert!(Instant::now() < deadline, "server did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn bad_configuration_is_refused_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("bad.toml");
    std::fs::write(
        &cfg,
        "[ml2]\nnetwork_vlan_ranges = [\"physnet1:300:200\"]\n",
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["server", "--bind", "127.0.0.1:0", "--config"])
        .arg(&cfg)
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("VLAN range 'physnet1:300:200'") || err.contains("300:200"),
        "{err}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["server", "--bind", "127.0.0.1:0", "--db", "postgres://db/x"])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("PostgreSQL is not supported yet"));
}
