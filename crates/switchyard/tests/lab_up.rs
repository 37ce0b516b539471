//! `switchyard lab up` as a new user runs it: the banner says where the API
//! is, the printed recipe (network, subnet, ports on two backends, guests,
//! ping) works against it, `node show` prints the applied tables, and SIGINT
//! stops it cleanly.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

fn call(
    c: &reqwest::blocking::Client,
    m: reqwest::Method,
    url: &str,
    body: Option<Value>,
) -> Value {
    let mut r = c.request(m, url);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().expect("request");
    let status = resp.status();
    let v: Value = resp.json().expect("json");
    assert!(status.is_success(), "{url}: {status} {v}");
    v
}

#[test]
fn lab_up_serves_the_printed_recipe_and_stops_on_sigint() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["lab", "up", "--bind", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut banner = String::new();
    loop {
        let mut line = String::new();
        assert!(
            out.read_line(&mut line).expect("read") > 0,
            "banner ended: {banner}"
        );
        banner.push_str(&line);
        if line.contains("Ctrl-C stops the lab") {
            break;
        }
    }
    assert!(banner.contains("connected and in sync"), "{banner}");
    let base = banner
        .lines()
        .find(|l| l.contains("Neutron API"))
        .and_then(|l| l.split_whitespace().find(|w| w.starts_with("http://")))
        .expect("API URL")
        .trim_end_matches("/v2.0/")
        .to_string();

    let c = reqwest::blocking::Client::new();
    let post = |path: &str, body: Value| {
        call(
            &c,
            reqwest::Method::POST,
            &format!("{base}{path}"),
            Some(body),
        )
    };
    let net = post("/v2.0/networks", json!({"network": {"name": "demo-net"}}))["network"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    post(
        "/v2.0/subnets",
        json!({"subnet": {"network_id": net, "ip_version": 4, "cidr": "10.0.0.0/24"}}),
    );
    let mut ips = Vec::new();
    for (name, host) in [("vm-ovs", "compute-1"), ("vm-vrouter", "compute-2")] {
        let p = post(
            "/v2.0/ports",
            json!({"port": {"network_id": net, "binding:host_id": host, "device_owner": "compute:nova"}}),
        );
        let id = p["port"]["id"].as_str().expect("id").to_string();
        ips.push(
            p["port"]["fixed_ips"][0]["ip_address"]
                .as_str()
                .expect("ip")
                .to_string(),
        );
        post(
            "/switchyard/v1/lab/guests",
            json!({"guest": {"name": name, "port_id": id}}),
        );
    }
    // The first exchange also teaches the responder the requester's MAC.
    let deadline = Instant::now() + Duration::from_secs(30);
    let answered = loop {
        let r = post(
            "/switchyard/v1/lab/guests/vm-ovs/ping",
            json!({"ping": {"target": ips[1], "count": 5, "interval_ms": 10}}),
        );
        if r["ping"]["answered"] == 5 || Instant::now() > deadline {
            break r["ping"]["answered"].clone();
        }
    };
    assert_eq!(answered, 5);

    let show = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["node", "show", "compute-2", "--url", &base])
        .output()
        .expect("node show");
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(show.status.success(), "{text}");
    assert!(text.contains("vrouter") && text.contains(&ips[1]), "{text}");
    assert!(text.contains("bridge"), "{text}");

    let ok = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(ok.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "lab did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut out, &mut rest);
    assert!(rest.contains("switchyard lab: stopped"), "{rest}");
}

#[test]
fn lab_up_refuses_a_bad_topology_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[[nodes]]\nname = \"x\"\nrole = \"router\"\n").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["lab", "up", "--bind", "127.0.0.1:0", "--topology"])
        .arg(&file)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml"), "{err}");
}
