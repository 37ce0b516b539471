//! The real `switchyard server` process: committed state survives `kill -9`,
//! SIGTERM stops it gracefully, bad configuration is refused with a clear error.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

struct Proc {
    child: Child,
    base: String,
}

/// A server a failed assertion left running is stopped.
impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn start(data: &Path) -> Proc {
    start_with_log(data, Stdio::null())
}

fn start_with_log(data: &Path, log: impl Into<Stdio>) -> Proc {
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["server", "--bind", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(log)
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
    // Five clients at once, so that creations share group commits; the
    // process is killed as soon as the last answer is in.
    let ports: Vec<Value> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..5)
            .map(|w| {
                let (client, base, net_id) = (&client, &p.base, &net_id);
                s.spawn(move || {
                    (0..10)
                        .map(|i| {
                            let (st, port) = call(
                                client,
                                reqwest::Method::POST,
                                &format!("{base}/v2.0/ports"),
                                Some(json!({"port": {"network_id": net_id, "name": format!("p{w}-{i}")}})),
                            );
                            assert_eq!(st, 201);
                            port["port"].clone()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("client"))
            .collect()
    });
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

/// A server started with `args`, its stderr collected line by line.
struct Logged {
    child: Child,
    base: String,
    stderr: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Drop for Logged {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Logged {
    fn start(data: &Path, args: &[&str]) -> Logged {
        let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .arg("server")
            .args(args)
            .arg("--data-dir")
            .arg(data)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn switchyard");
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let err = child.stderr.take().expect("stderr");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                sink.lock().expect("log lock").push(line);
            }
        });
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("banner");
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no URL in banner {line:?}"));
        // A wildcard bind is reached on loopback.
        let base = url
            .trim_end_matches("/v2.0/")
            .replace("0.0.0.0", "127.0.0.1");
        Logged {
            child,
            base,
            stderr,
        }
    }

    fn logged(&self, needle: &str) -> bool {
        self.stderr
            .lock()
            .expect("log lock")
            .iter()
            .any(|l| l.contains(needle))
    }

    fn wait_logged(&self, needle: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.logged(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `href` of the first pagination link, asked with a hostile `Host`.
fn first_link(base: &str) -> String {
    let client = reqwest::blocking::Client::new();
    for name in ["a", "b"] {
        let (st, _) = call(
            &client,
            reqwest::Method::POST,
            &format!("{base}/v2.0/networks"),
            Some(json!({"network": {"name": name}})),
        );
        assert_eq!(st, 201);
    }
    let r = client
        .get(format!("{base}/v2.0/networks?limit=1"))
        .header("host", "evil.example")
        .header("x-forwarded-proto", "https")
        .send()
        .expect("list");
    let body: Value = r.json().expect("json");
    body["networks_links"][0]["href"]
        .as_str()
        .expect("href")
        .to_string()
}

#[test]
fn binding_beyond_loopback_warns_and_links_never_follow_host() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = Logged::start(dir.path(), &["--bind", "0.0.0.0:0"]);
    assert!(
        p.wait_logged("without authentication (noauth)"),
        "{:?}",
        p.stderr.lock().expect("log lock")
    );
    // Bound to the wildcard, links name the address the client reached.
    let href = first_link(&p.base);
    assert!(
        href.starts_with(&format!("{}/v2.0/networks?", p.base)),
        "{href}"
    );
    p.stop();

    // On loopback there is nothing to warn about; the flag sets the public URL.
    let dir = tempfile::tempdir().expect("tempdir");
    let p = Logged::start(
        dir.path(),
        &[
            "--bind",
            "127.0.0.1:0",
            "--network-link-prefix",
            "https://neutron.example.com:9696/",
        ],
    );
    assert!(p.wait_logged("switchyard server ready"));
    assert!(!p.logged("without authentication"));
    let href = first_link(&p.base);
    assert!(
        href.starts_with("https://neutron.example.com:9696/v2.0/networks?"),
        "{href}"
    );
    p.stop();
}

#[test]
fn http_timeouts_come_from_the_config_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("http.toml");
    std::fs::write(
        &cfg,
        "public_endpoint = \"http://api.example.com\"\n[http]\nheader_timeout = 0.5\n",
    )
    .expect("write");
    let cfg = cfg.to_string_lossy().into_owned();
    let p = Logged::start(dir.path(), &["--bind", "127.0.0.1:0", "--config", &cfg]);
    let addr = p.base.trim_start_matches("http://").to_string();
    // Half a request head, then silence: the server hangs up.
    let mut s = std::net::TcpStream::connect(&addr).expect("connect");
    s.write_all(b"GET /v2.0/networks HTTP/1.1\r\nHost: x\r\n")
        .expect("write");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let started = Instant::now();
    let mut buf = [0u8; 256];
    match s.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("answered {:?}", String::from_utf8_lossy(&buf[..n])),
        // A reset is a close too; a read timeout is not.
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
    assert!(started.elapsed() >= Duration::from_millis(300));
    // Others are still served, with links on the configured URL.
    let client = reqwest::blocking::Client::new();
    let (st, body) = call(&client, reqwest::Method::GET, &format!("{}/", p.base), None);
    assert_eq!(st, 200);
    assert_eq!(
        body["versions"][0]["links"][0]["href"],
        "http://api.example.com/v2.0/"
    );
    p.stop();

    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["server", "--bind", "127.0.0.1:0", "--header-timeout", "0"])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("header_timeout must be a positive number"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Node states as `GET /switchyard/v1/nodes` gives them: host -> state.
fn node_states(client: &reqwest::blocking::Client, base: &str) -> Vec<(String, String)> {
    let (_, v) = call(
        client,
        reqwest::Method::GET,
        &format!("{base}/switchyard/v1/nodes"),
        None,
    );
    v["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| {
            (
                n["host"].as_str().unwrap_or_default().to_string(),
                n["state"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// An agent process, killed if a failed assertion leaves it running.
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn agent(base: &str, role: &str, token: &Path, log: &Path) -> Agent {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchyard"));
    cmd.args([
        "agent",
        "--host",
        "compute-2",
        "--role",
        role,
        "--controller",
        base,
        // No data plane: these agents share the test's network namespace,
        // where no underlay address exists to bind VXLAN to.
        "--io",
        "none",
    ])
    .arg("--token-file")
    .arg(token);
    if role == "vrouter" {
        cmd.args(["--tunneling-ip", "192.0.2.12"]);
    }
    Agent(
        cmd.env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).expect("log"))
            .spawn()
            .expect("spawn agent"),
    )
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

/// `switchyard node enroll` and `switchyard agent` as an operator runs them:
/// the enrolled agent converges; the same credential with another role, or a
/// made-up token, is refused with the reason and changes nothing.
#[test]
fn agents_run_as_processes_with_their_credentials() {
    let dir = tempfile::tempdir().expect("tempdir");
    let client = reqwest::blocking::Client::new();
    let mut p = start(dir.path());
    let token = dir.path().join("compute-2.token");
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args([
            "node",
            "enroll",
            "compute-2",
            "--role",
            "vrouter",
            "--data-dir",
        ])
        .arg(dir.path())
        .arg("--token-file")
        .arg(&token)
        .output()
        .expect("enroll");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["node", "enrolled", "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("enrolled");
    assert!(String::from_utf8_lossy(&listed.stdout).contains("compute-2"));

    let good_log = dir.path().join("agent.log");
    let mut good = agent(&p.base, "vrouter", &token, &good_log);
    wait_for("compute-2 to converge", || {
        node_states(&client, &p.base)
            .iter()
            .any(|(h, s)| h == "compute-2" && s == "converged")
    });
    // The same credential, started with the wrong role: refused, saying how to fix it.
    let wrong_log = dir.path().join("wrong.log");
    let mut wrong = agent(&p.base, "ovs", &token, &wrong_log);
    // A made-up credential: refused before any session.
    let fake = dir.path().join("fake.token");
    std::fs::write(&fake, "0".repeat(64)).expect("fake token");
    let fake_log = dir.path().join("fake.log");
    let mut faker = agent(&p.base, "vrouter", &fake, &fake_log);
    wait_for("both refusals to be logged", || {
        let w = std::fs::read_to_string(&wrong_log).unwrap_or_default();
        let f = std::fs::read_to_string(&fake_log).unwrap_or_default();
        w.contains("start it with --role vrouter") && f.contains("refused this node's credential")
    });
    // The real node is untouched, and still the only compute agent.
    assert!(
        node_states(&client, &p.base)
            .iter()
            .any(|(h, s)| h == "compute-2" && s == "converged")
    );
    let (_, agents) = call(
        &client,
        reqwest::Method::GET,
        &format!("{}/v2.0/agents", p.base),
        None,
    );
    let types: Vec<&str> = agents["agents"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["agent_type"].as_str())
        .collect();
    assert_eq!(types, vec!["vRouter agent"]);
    for c in [&mut good.0, &mut wrong.0, &mut faker.0, &mut p.child] {
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let _ = c.wait();
    }
}

/// A client refused a hundred times is logged once (with the count of what
/// was held back on the next line a minute later), not a hundred times.
#[test]
fn refused_clients_are_logged_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("server.log");
    let mut p = start_with_log(dir.path(), std::fs::File::create(&log).expect("log"));
    let client = reqwest::blocking::Client::new();
    for _ in 0..100 {
        let (st, body) = call(
            &client,
            reqwest::Method::POST,
            &format!("{}/switchyard/v1/agents/report", p.base),
            Some(json!({"agent": {"host": "a-gw", "agent_type": "Gateway agent"}})),
        );
        assert_eq!(st, 401);
        assert_eq!(body["NeutronError"]["type"], "HTTPUnauthorized");
    }
    let _ = Command::new("kill")
        .args(["-TERM", &p.child.id().to_string()])
        .status();
    let _ = p.child.wait();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let lines = text
        .lines()
        .filter(|l| l.contains("refused a client without a valid node credential"))
        .count();
    assert_eq!(lines, 1, "{text}");
}
