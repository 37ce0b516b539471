//! `switchyard lab up` as a new user runs it: the banner says where the API
//! is, every API asks for a token from the lab's identity (the default), the
//! printed recipe (network, subnet, ports on two backends, guests, ping)
//! works against it with the admin's token, `node show` and `verify` find
//! their credentials in the written clouds.yaml (`OS_CLOUD`), and SIGINT
//! stops it cleanly.

mod common;

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

/// Kills the lab if the test ends before it stopped it (a failed assertion
/// must not leave a `lab up` running).
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn lab_up_serves_the_printed_recipe_and_stops_on_sigint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clouds = dir.path().join("clouds.yaml");
    let mut guard = Running(
        Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["lab", "up", "--bind", "127.0.0.1:0", "--clouds-yaml"])
            .arg(&clouds)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn"),
    );
    let child = &mut guard.0;
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

    // Without a token: keystonemiddleware's 401. With the admin's (its
    // password from the written clouds.yaml, as the recipe logs in): the API.
    let anon = reqwest::blocking::Client::new();
    let r = anon
        .get(format!("{base}/v2.0/networks"))
        .send()
        .expect("get");
    assert_eq!(r.status().as_u16(), 401);
    assert!(
        banner.contains("T=$(curl -si $U/identity/v3/auth/tokens"),
        "{banner}"
    );
    assert!(banner.contains("$C -XPOST $U/v2.0/subnets"), "{banner}");
    let password = common::lab_admin_password(&clouds);
    let r = anon
        .post(format!("{base}/identity/v3/auth/tokens"))
        .json(&common::password_auth("admin", &password, "admin"))
        .send()
        .expect("login");
    assert_eq!(r.status().as_u16(), 201);
    let token = r
        .headers()
        .get("x-subject-token")
        .expect("X-Subject-Token")
        .clone();
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("x-auth-token", token);
    let c = reqwest::blocking::Client::builder()
        .default_headers(headers)
        .build()
        .expect("client");
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
        .env("OS_CLIENT_CONFIG_FILE", &clouds)
        .env("OS_CLOUD", "switchyard")
        .args(["node", "show", "compute-2", "--url", &base])
        .output()
        .expect("node show");
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(show.status.success(), "{text}");
    assert!(text.contains("vrouter") && text.contains(&ips[1]), "{text}");
    assert!(text.contains("bridge"), "{text}");
    // A reader that goes away (`node show … | head -1`) ends the command
    // quietly: no panic on the closed pipe.
    let mut cut = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .env("OS_CLIENT_CONFIG_FILE", &clouds)
        .env("OS_CLOUD", "switchyard")
        .args(["node", "show", "compute-2", "--url", &base])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("node show");
    drop(cut.stdout.take());
    let cut = cut.wait_with_output().expect("node show");
    let err = String::from_utf8_lossy(&cut.stderr);
    assert!(cut.status.success() && !err.contains("panicked"), "{err}");
    let list = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .env("OS_CLIENT_CONFIG_FILE", &clouds)
        .env("OS_CLOUD", "switchyard")
        .args(["node", "list", "--url", &base])
        .output()
        .expect("node list");
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(list.status.success(), "{text}");
    for host in [
        "compute-1",
        "compute-2",
        "compute-3",
        "compute-4",
        "gateway",
    ] {
        assert!(text.contains(host), "{host}: {text}");
    }

    // The cloud entry also says where the lab is: no --url needed.
    let list = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .env("OS_CLIENT_CONFIG_FILE", &clouds)
        .env("OS_CLOUD", "switchyard")
        .env_remove("SWITCHYARD_URL")
        .args(["node", "list"])
        .output()
        .expect("node list");
    assert!(
        list.status.success() && String::from_utf8_lossy(&list.stdout).contains("compute-2"),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );

    // Without credentials a client command says what to give.
    let list = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .env_remove("OS_CLOUD")
        .env_remove("OS_TOKEN")
        .env_remove("OS_AUTH_URL")
        .args(["node", "list", "--url", &base])
        .output()
        .expect("node list");
    let err = String::from_utf8_lossy(&list.stderr);
    assert!(!list.status.success());
    assert!(err.contains("401") && err.contains("--os-cloud"), "{err}");
    let v = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .env_remove("OS_CLOUD")
        .env_remove("OS_TOKEN")
        .env_remove("OS_AUTH_URL")
        .args(["verify", "--url", &base])
        .output()
        .expect("verify");
    let err = String::from_utf8_lossy(&v.stderr);
    assert!(!v.status.success());
    assert!(err.contains("401") && err.contains("--os-cloud"), "{err}");

    // What is not built (QoS) answers Neutron's 404 and is not advertised;
    // security groups and quotas are served.
    let r = c
        .get(format!("{base}/v2.0/qos/policies"))
        .send()
        .expect("get");
    assert_eq!(r.status().as_u16(), 404);
    let groups = call(
        &c,
        reqwest::Method::GET,
        &format!("{base}/v2.0/security-groups"),
        None,
    );
    assert_eq!(groups["security_groups"][0]["name"], "default", "{groups}");
    let q = call(
        &c,
        reqwest::Method::GET,
        &format!("{base}/v2.0/quotas/admin"),
        None,
    );
    assert_eq!(q["quota"]["port"], 500, "{q}");
    let ext = call(
        &c,
        reqwest::Method::GET,
        &format!("{base}/v2.0/extensions"),
        None,
    );
    let aliases: Vec<&str> = ext["extensions"]
        .as_array()
        .expect("extensions")
        .iter()
        .filter_map(|e| e["alias"].as_str())
        .collect();
    assert!(!aliases.contains(&"qos"), "{aliases:?}");
    assert!(aliases.contains(&"security-group"), "{aliases:?}");
    assert!(aliases.contains(&"quotas"), "{aliases:?}");

    // The compute API recipe: boot on OVS, live-migrate to a vRouter node.
    let s = post(
        "/compute/v2.1/servers",
        json!({"server": {"name": "vm1", "networks": [{"uuid": net}], "availability_zone": "nova:compute-1"}}),
    );
    let sid = s["server"]["id"].as_str().expect("id").to_string();
    let wait = |want_host: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let v = call(
                &c,
                reqwest::Method::GET,
                &format!("{base}/compute/v2.1/servers/{sid}"),
                None,
            );
            if v["server"]["status"] == "ACTIVE" && v["server"]["OS-EXT-SRV-ATTR:host"] == want_host
            {
                return v;
            }
            assert!(Instant::now() < deadline, "{v}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait("compute-1");
    let r = c
        .post(format!("{base}/compute/v2.1/servers/{sid}/action"))
        .header("OpenStack-API-Version", "compute 2.74")
        .json(&json!({"os-migrateLive": {"host": "compute-4", "block_migration": "auto"}}))
        .send()
        .expect("migrate");
    let st = r.status().as_u16();
    assert_eq!(st, 202, "{}", r.text().unwrap_or_default());
    wait("compute-4");

    // verify: every guest reaches every other; exit 0, JSON on request.
    let v = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .env("OS_CLIENT_CONFIG_FILE", &clouds)
        .env("OS_CLOUD", "switchyard")
        .args(["verify", "--url", &base, "--json"])
        .output()
        .expect("verify");
    let out_text = String::from_utf8_lossy(&v.stdout);
    assert!(
        v.status.success(),
        "{out_text} {}",
        String::from_utf8_lossy(&v.stderr)
    );
    let m: Value = serde_json::from_str(&out_text).expect("verify json");
    assert_eq!(m["ok"], true, "{m}");
    // By default a path needs every one of its 5 pings answered.
    assert_eq!(m["min_replies"], 5, "{m}");
    for p in m["pairs"].as_array().expect("pairs") {
        assert_eq!((&p["sent"], &p["answered"]), (&json!(5), &json!(5)), "{p}");
        assert!(p["rtt_ms"].is_number(), "{p}");
    }
    assert_eq!(
        m["pairs"].as_array().map(Vec::len),
        Some(6),
        "3 guests, no router: {m}"
    );
    let vm1 = m["pairs"]
        .as_array()
        .expect("pairs")
        .iter()
        .find(|p| p["from"] == "vm1")
        .expect("vm1 probes");
    assert_eq!(vm1["from_backend"], "vrouter");
    // A port set administratively down is a failed path and a non-zero exit.
    let port = call(
        &c,
        reqwest::Method::GET,
        &format!("{base}/v2.0/ports?device_id={sid}"),
        None,
    );
    let pid = port["ports"][0]["id"].as_str().expect("port").to_string();
    call(
        &c,
        reqwest::Method::PUT,
        &format!("{base}/v2.0/ports/{pid}"),
        Some(json!({"port": {"admin_state_up": false}})),
    );
    std::thread::sleep(Duration::from_millis(500));
    let v = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .env("OS_CLIENT_CONFIG_FILE", &clouds)
        .env("OS_CLOUD", "switchyard")
        .args(["verify", "--url", &base])
        .output()
        .expect("verify");
    let table = String::from_utf8_lossy(&v.stdout);
    assert!(!v.status.success(), "{table}");
    assert!(
        table.contains("FAIL") && table.contains("vm1 (vrouter)"),
        "{table}"
    );
    assert!(
        table.contains("an open path needs 5 of 5 replies"),
        "{table}"
    );
    // Asking for a single reply does not make a dead path ok.
    let v = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .env("OS_CLIENT_CONFIG_FILE", &clouds)
        .env("OS_CLOUD", "switchyard")
        .args(["verify", "--url", &base, "--min-replies", "1", "--json"])
        .output()
        .expect("verify");
    let m: Value = serde_json::from_slice(&v.stdout).expect("verify json");
    assert!(!v.status.success(), "{m}");
    assert_eq!((&m["ok"], &m["min_replies"]), (&json!(false), &json!(1)));
    let vm1_paths: Vec<&Value> = m["pairs"]
        .as_array()
        .expect("pairs")
        .iter()
        .filter(|p| p["from"] == "vm1" || p["to"] == "vm1")
        .collect();
    assert!(!vm1_paths.is_empty(), "{m}");
    for p in vm1_paths {
        assert_eq!(
            (&p["ok"], &p["answered"]),
            (&json!(false), &json!(0)),
            "{p}"
        );
    }
    assert!(
        String::from_utf8_lossy(&v.stderr).contains("expected paths failed"),
        "{}",
        String::from_utf8_lossy(&v.stderr)
    );

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

/// `switchyard demo --json` on its own fresh lab: one object with the
/// issue's shape, ok, exit 0.
#[test]
fn demo_json_reports_the_reference_scenario() {
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["demo", "--json"])
        .env("RUST_LOG", "warn")
        .output()
        .expect("demo");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_str(&text).expect("one JSON object");
    assert_eq!(r["ok"], true);
    let vms: Vec<(&str, &str)> = r["vms"]
        .as_array()
        .expect("vms")
        .iter()
        .map(|v| {
            (
                v["name"].as_str().unwrap_or(""),
                v["vif_type"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        vms,
        vec![
            ("vm-ovs", "ovs"),
            ("vm-vrouter", "vrouter"),
            ("vm-sriov", "hw_veb")
        ]
    );
    for v in r["vms"].as_array().expect("vms") {
        for k in ["host", "ip", "mac"] {
            assert!(v[k].as_str().is_some_and(|s| !s.is_empty()), "{v}");
        }
    }
    // The verdict is every fact of the scenario, each named and checked.
    let facts = r["facts"].as_array().expect("facts");
    for f in facts {
        assert_eq!(f["ok"], true, "{f}");
    }
    let names: Vec<&str> = facts.iter().filter_map(|f| f["name"].as_str()).collect();
    for n in [
        "migration requested to compute-4",
        "server on compute-4 after",
        "vif_type ovs before",
        "vif_type vrouter after",
        "port ACTIVE on compute-4",
        "migration completed",
        "at most 5 pings lost",
        "matrix after: all 16 paths ok",
    ] {
        assert!(names.contains(&n), "{n}: {names:?}");
    }
    let m = &r["migration"];
    assert_eq!(
        (
            &m["migration_status"],
            &m["port_status_after"],
            &m["port_host_after"]
        ),
        (&json!("completed"), &json!("ACTIVE"), &json!("compute-4"))
    );
    for k in [
        "vm",
        "from_host",
        "to_host",
        "ip_before",
        "ip_after",
        "mac_before",
        "mac_after",
        "vif_type_before",
        "vif_type_after",
    ] {
        assert!(m[k].is_string(), "{k}: {m}");
    }
    assert_eq!(
        (m["from_host"].as_str(), m["to_host"].as_str()),
        (Some("compute-1"), Some("compute-4"))
    );
    assert_eq!(m["vif_type_after"], "vrouter");
    assert_eq!(m["interval_ms"], 10);
    for k in ["lost_pings", "outage_ms"] {
        assert!(m[k].is_u64(), "{k}: {m}");
    }
    for (k, n) in [("matrix_before", 9), ("matrix_after", 16)] {
        assert_eq!(r[k]["ok"], true);
        let pairs = r[k]["pairs"].as_array().expect("pairs");
        assert_eq!(pairs.len(), n, "{k}");
        for p in pairs {
            for f in ["from", "to", "from_backend", "to_backend"] {
                assert!(p[f].is_string(), "{f}: {p}");
            }
            assert!(
                p["ok"].is_boolean() && (p["rtt_ms"].is_number() || p["rtt_ms"].is_null()),
                "{p}"
            );
        }
        assert!(
            pairs
                .iter()
                .any(|p| p["to"] == "internet" && p["to_backend"] == "internet")
        );
    }
}

/// `--min-replies` must be a number of the 5 pings a path gets; anything
/// else is refused before any lab is contacted.
#[test]
fn verify_refuses_a_min_replies_no_path_can_meet() {
    for bad in ["0", "6", "100", "all"] {
        let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            // Nothing listens on the discard port: a request would fail differently.
            .args([
                "verify",
                "--url",
                "http://127.0.0.1:9",
                "--min-replies",
                bad,
            ])
            .output()
            .expect("verify");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}: {err}");
        assert!(
            err.contains("--min-replies") && err.contains("from 1 to 5"),
            "{bad}: {err}"
        );
        assert!(!err.contains("verifying the lab"), "{bad}: {err}");
    }
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

/// One lab per database: a second `lab up` on a database in use is refused
/// (and changes nothing); started again once the first stopped, the lab
/// keeps the passwords of the clouds.yaml it wrote, so copies still work.
#[test]
fn a_database_serves_one_lab_and_keeps_its_credentials() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = format!("sqlite://{}", dir.path().join("lab.db").display());
    let clouds = dir.path().join("clouds.yaml");
    let up = || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args([
                "lab",
                "up",
                "--bind",
                "127.0.0.1:0",
                "--db",
                &db,
                "--clouds-yaml",
            ])
            .arg(&clouds)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut banner = String::new();
        loop {
            let mut line = String::new();
            assert!(out.read_line(&mut line).expect("read") > 0, "{banner}");
            banner.push_str(&line);
            if line.contains("Ctrl-C stops the lab") {
                break;
            }
        }
        Running(child)
    };
    let first = up();
    let passwords = || {
        std::fs::read_to_string(&clouds)
            .expect("clouds.yaml")
            .lines()
            .filter(|l| l.contains("password:"))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let before = passwords();
    assert_eq!(before.len(), 2);
    let second = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args([
            "lab",
            "up",
            "--bind",
            "127.0.0.1:0",
            "--db",
            &db,
            "--clouds-yaml",
        ])
        .arg(dir.path().join("other.yaml"))
        .output()
        .expect("second lab");
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success());
    assert!(err.contains("in use by another switchyard"), "{err}");
    assert!(!dir.path().join("other.yaml").exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("lab.db"))
            .expect("db")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the database holds password hashes");
    }
    drop(first);
    let _again = up();
    assert_eq!(passwords(), before, "the same passwords");
}

#[test]
fn bench_console_times_the_pages_it_names() {
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args([
            "bench",
            "console",
            "--ports",
            "300",
            "--servers",
            "3",
            "--loads",
            "2",
            "--json",
        ])
        .stderr(Stdio::null())
        .output()
        .expect("bench console runs");
    assert!(out.status.success(), "{out:?}");
    let r: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(
        (r["ports"].as_u64(), r["servers"].as_u64()),
        (Some(300), Some(3))
    );
    for page in ["instances", "ports_first", "ports_middle", "topology"] {
        let (p50, max) = (r[page]["p50_ms"].as_f64(), r[page]["max_ms"].as_f64());
        assert!(p50.is_some_and(|p| p > 0.0) && p50 <= max, "{page}: {r}");
    }
    // Nothing to time without servers: refused before a lab starts.
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["bench", "console", "--servers", "0"])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--servers and --loads must be positive"),
        "{out:?}"
    );
}
