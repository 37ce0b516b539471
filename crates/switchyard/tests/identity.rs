//! `switchyard server` with the embedded identity (`[identity] auth_strategy
//! = "embedded"`): Keystone v3 password and token auth with Keystone's
//! shapes, the catalog, every Neutron call needing a token (401 as
//! keystonemiddleware answers), identity headers a client sends ignored,
//! projects isolated, tokens validated and revoked, and tokens surviving a
//! restart of the server.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use reqwest::Method;
use reqwest::blocking::Client;
use serde_json::{Value, json};

struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const EMBEDDED: &str = "[identity]\nauth_strategy = \"embedded\"\nadmin_password = \"adm1n-pw\"\ndemo_password = \"dem0-pw\"\n";

fn start(dir: &Path, bind: &str) -> Server {
    start_with(dir, bind, EMBEDDED)
}

/// `switchyard server` with `config` as its file, once it says where its
/// API is.
fn start_with(dir: &Path, bind: &str, config: &str) -> Server {
    let cfg = dir.join("switchyard.toml");
    std::fs::write(&cfg, config).expect("config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["server", "--bind", bind, "--config"])
        .arg(&cfg)
        .arg("--data-dir")
        .arg(dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut base = String::new();
    let embedded = config.contains("\"embedded\"");
    for _ in 0..3 {
        let mut line = String::new();
        out.read_line(&mut line).expect("banner");
        if let Some(u) = line.split_whitespace().find(|w| w.starts_with("http://"))
            && line.contains("Neutron API")
        {
            base = u.trim_end_matches("/v2.0/").to_string();
            if !embedded {
                break;
            }
        }
        if line.contains("identity (Keystone v3)") {
            assert!(line.contains("/identity/v3"), "{line}");
            break;
        }
    }
    assert!(!base.is_empty(), "no Neutron URL in the banner");
    Server { child, base }
}

fn call(
    c: &Client,
    m: Method,
    url: &str,
    token: Option<&str>,
    extra: &[(&str, &str)],
    body: Option<Value>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut r = c.request(m, url);
    if let Some(t) = token {
        r = r.header("X-Auth-Token", t);
    }
    for (k, v) in extra {
        r = r.header(*k, *v);
    }
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().expect("request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().unwrap_or_default();
    (
        status,
        headers,
        serde_json::from_str(&text).unwrap_or(Value::Null),
    )
}

fn login(c: &Client, base: &str, user: &str, pw: &str, project: &str) -> (String, Value) {
    let (s, h, v) = call(
        c,
        Method::POST,
        &format!("{base}/identity/v3/auth/tokens"),
        None,
        &[],
        Some(common::password_auth(user, pw, project)),
    );
    assert_eq!(s, 201, "{v}");
    let t = h
        .get("x-subject-token")
        .and_then(|v| v.to_str().ok())
        .expect("X-Subject-Token")
        .to_string();
    (t, v["token"].clone())
}

#[test]
fn embedded_identity_guards_the_api_and_isolates_projects() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = start(dir.path(), "127.0.0.1:0");
    let c = Client::new();
    let b = &s.base;

    // Discovery needs no token; the API does, answered as keystonemiddleware does.
    let (st, _, v) = call(&c, Method::GET, &format!("{b}/"), None, &[], None);
    assert_eq!(st, 200, "{v}");
    let (st, _, v) = call(
        &c,
        Method::GET,
        &format!("{b}/identity/v3"),
        None,
        &[],
        None,
    );
    assert_eq!((st, &v["version"]["id"]), (200, &json!("v3.14")));
    for path in ["/v2.0/networks", "/v2.0", "/switchyard/v1/nodes"] {
        let (st, h, v) = call(&c, Method::GET, &format!("{b}{path}"), None, &[], None);
        assert_eq!(st, 401, "{path}: {v}");
        assert_eq!(v["error"]["code"], 401);
        assert_eq!(v["error"]["title"], "Unauthorized");
        assert_eq!(
            h.get("www-authenticate").and_then(|x| x.to_str().ok()),
            Some(format!("Keystone uri=\"{b}/identity\"").as_str())
        );
    }
    let (st, _, _) = call(
        &c,
        Method::GET,
        &format!("{b}/v2.0/networks"),
        Some("0123abcd"),
        &[],
        None,
    );
    assert_eq!(st, 401, "a made-up token");

    // Wrong password, unknown user: the same 401.
    for (u, p) in [("admin", "nope"), ("nobody", "adm1n-pw")] {
        let (st, _, v) = call(
            &c,
            Method::POST,
            &format!("{b}/identity/v3/auth/tokens"),
            None,
            &[],
            Some(common::password_auth(u, p, "admin")),
        );
        assert_eq!(st, 401, "{u}: {v}");
        assert_eq!(
            v["error"]["message"],
            "The request you have made requires authentication."
        );
    }
    let (st, _, v) = call(
        &c,
        Method::POST,
        &format!("{b}/identity/v3/auth/tokens"),
        None,
        &[],
        Some(json!({"auth": {"identity": {"methods": ["password"]}}})),
    );
    assert_eq!((st, &v["error"]["code"]), (400, &json!(400)), "{v}");

    let (admin, at) = login(&c, b, "admin", "adm1n-pw", "admin");
    let roles: Vec<&str> = at["roles"]
        .as_array()
        .expect("roles")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    for r in ["admin", "member", "reader"] {
        assert!(roles.contains(&r), "{roles:?}");
    }
    let admin_project = at["project"]["id"].as_str().expect("project").to_string();
    assert_eq!(admin_project.len(), 32);
    let types: Vec<&str> = at["catalog"]
        .as_array()
        .expect("catalog")
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert_eq!(types, ["identity", "network"]);
    let net_url = at["catalog"][1]["endpoints"][0]["url"]
        .as_str()
        .expect("url");
    assert_eq!(net_url, b.as_str());
    let (demo, dt) = login(&c, b, "demo", "dem0-pw", "demo");
    let demo_project = dt["project"]["id"].as_str().expect("project").to_string();
    assert!(
        !dt["roles"]
            .as_array()
            .expect("roles")
            .iter()
            .any(|r| r["name"] == "admin")
    );
    // The demo user has no role on the admin project.
    let (st, _, _) = call(
        &c,
        Method::POST,
        &format!("{b}/identity/v3/auth/tokens"),
        None,
        &[],
        Some(common::password_auth("demo", "dem0-pw", "admin")),
    );
    assert_eq!(st, 401);

    // Projects come from tokens; headers a client adds are not trusted.
    let (st, _, v) = call(
        &c,
        Method::POST,
        &format!("{b}/v2.0/networks"),
        Some(&admin),
        &[],
        Some(json!({"network": {"name": "admin-net"}})),
    );
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["network"]["project_id"], admin_project.as_str());
    let spoof = [
        ("X-Project-Id", admin_project.as_str()),
        ("X-Roles", "admin"),
    ];
    let (st, _, v) = call(
        &c,
        Method::GET,
        &format!("{b}/v2.0/networks"),
        Some(&demo),
        &spoof,
        None,
    );
    assert_eq!(st, 200);
    assert_eq!(v["networks"], json!([]), "demo sees none of admin's: {v}");
    let (st, _, v) = call(
        &c,
        Method::POST,
        &format!("{b}/v2.0/networks"),
        Some(&demo),
        &spoof,
        Some(json!({"network": {"name": "demo-net"}})),
    );
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["network"]["project_id"], demo_project.as_str());
    let (_, _, v) = call(
        &c,
        Method::GET,
        &format!("{b}/v2.0/networks"),
        Some(&admin),
        &[],
        None,
    );
    assert_eq!(
        v["networks"].as_array().map(Vec::len),
        Some(2),
        "admin sees all"
    );
    let (st, _, _) = call(
        &c,
        Method::GET,
        &format!("{b}/v2.0/quotas/{admin_project}"),
        Some(&demo),
        &[],
        None,
    );
    assert_eq!(st, 403, "a member reads only its own project's quota");

    // Identity's own policy: projects are listed for admins only.
    let (st, _, v) = call(
        &c,
        Method::GET,
        &format!("{b}/identity/v3/projects"),
        Some(&demo),
        &[],
        None,
    );
    assert_eq!((st, &v["error"]["code"]), (403, &json!(403)), "{v}");
    let (st, _, v) = call(
        &c,
        Method::GET,
        &format!("{b}/identity/v3/projects"),
        Some(&admin),
        &[],
        None,
    );
    assert_eq!(st, 200);
    assert_eq!(v["projects"].as_array().map(Vec::len), Some(2), "{v}");
    let (_, _, v) = call(
        &c,
        Method::GET,
        &format!("{b}/identity/v3/auth/projects"),
        Some(&demo),
        &[],
        None,
    );
    assert_eq!(v["projects"][0]["name"], "demo");

    // A reader on the demo project, made through the identity API: it reads
    // the project's networks and changes nothing.
    let (st, _, v) = call(
        &c,
        Method::POST,
        &format!("{b}/identity/v3/users"),
        Some(&admin),
        &[],
        Some(json!({"user": {"name": "watcher", "password": "w4tch", "domain_id": "default"}})),
    );
    assert_eq!(st, 201, "{v}");
    let watcher = v["user"]["id"].as_str().expect("id").to_string();
    let (st, _, v) = call(
        &c,
        Method::PUT,
        &format!("{b}/identity/v3/projects/{demo_project}/users/{watcher}/roles/reader"),
        Some(&admin),
        &[],
        None,
    );
    assert_eq!(st, 204, "{v}");
    let (reader, rt) = login(&c, b, "watcher", "w4tch", "demo");
    let names: Vec<&str> = rt["roles"]
        .as_array()
        .expect("roles")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(names, ["reader"]);
    let (st, _, v) = call(
        &c,
        Method::GET,
        &format!("{b}/v2.0/networks"),
        Some(&reader),
        &[],
        None,
    );
    assert_eq!(
        (st, &v["networks"][0]["name"]),
        (200, &json!("demo-net")),
        "{v}"
    );
    let (st, _, v) = call(
        &c,
        Method::POST,
        &format!("{b}/v2.0/networks"),
        Some(&reader),
        &[],
        Some(json!({"network": {"name": "nope"}})),
    );
    assert_eq!(st, 403, "{v}");
    let (st, _, _) = call(
        &c,
        Method::POST,
        &format!("{b}/identity/v3/users"),
        Some(&demo),
        &[],
        Some(json!({"user": {"name": "x", "password": "y"}})),
    );
    assert_eq!(st, 403, "only admins make users");

    // Validation and revocation.
    let sub = [("X-Subject-Token", demo.as_str())];
    let (st, _, v) = call(
        &c,
        Method::GET,
        &format!("{b}/identity/v3/auth/tokens"),
        Some(&admin),
        &sub,
        None,
    );
    assert_eq!((st, &v["token"]["user"]["name"]), (200, &json!("demo")));
    let sub_admin = [("X-Subject-Token", admin.as_str())];
    let (st, _, _) = call(
        &c,
        Method::GET,
        &format!("{b}/identity/v3/auth/tokens"),
        Some(&demo),
        &sub_admin,
        None,
    );
    assert_eq!(st, 403, "a member validates only its own tokens");
    let (st, _, _) = call(
        &c,
        Method::DELETE,
        &format!("{b}/identity/v3/auth/tokens"),
        Some(&demo),
        &sub,
        None,
    );
    assert_eq!(st, 204);
    let (st, _, _) = call(
        &c,
        Method::GET,
        &format!("{b}/v2.0/networks"),
        Some(&demo),
        &[],
        None,
    );
    assert_eq!(st, 401, "a revoked token");
    let (st, _, _) = call(
        &c,
        Method::HEAD,
        &format!("{b}/identity/v3/auth/tokens"),
        Some(&admin),
        &sub,
        None,
    );
    assert_eq!(st, 404);

    // Tokens are stored: they survive a restart on the same address.
    let addr = b.trim_start_matches("http://").to_string();
    drop(s);
    let s = start(dir.path(), &addr);
    let (st, _, _) = call(
        &c,
        Method::GET,
        &format!("{}/v2.0/networks", s.base),
        Some(&admin),
        &[],
        None,
    );
    assert_eq!(st, 200, "the admin token after a restart");
}

/// A stand-in Nova: answers every request `200` and keeps (X-Auth-Token,
/// body) of each `POST …/os-server-external-events`.
fn stand_in_nova() -> (String, std::sync::mpsc::Receiver<(String, Value)>) {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/compute/v2.1", l.local_addr().expect("addr"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut r = BufReader::new(conn.try_clone().expect("clone"));
            let (mut first, mut token, mut len) = (String::new(), String::new(), 0usize);
            if r.read_line(&mut first).is_err() {
                continue;
            }
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).is_err() || h.trim().is_empty() {
                    break;
                }
                let (k, v) = h.split_once(':').unwrap_or_default();
                match k.to_ascii_lowercase().as_str() {
                    "x-auth-token" => token = v.trim().to_string(),
                    "content-length" => len = v.trim().parse().unwrap_or(0),
                    _ => {}
                }
            }
            let mut body = vec![0; len.min(1 << 20)];
            let _ = r.read_exact(&mut body);
            if first.starts_with("POST /compute/v2.1/os-server-external-events ") {
                let _ = tx.send((token, serde_json::from_slice(&body).unwrap_or(Value::Null)));
            }
            let _ = conn
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}");
        }
    });
    (url, rx)
}

/// `auth_strategy = "keystone"` against an external Keystone — a second
/// switchyard with the embedded identity, as the test suite has no real
/// Keystone: tokens checked with the service user's token and cached, a
/// Keystone outage a 503 for tokens not seen (and not for those seen),
/// projects isolated and roles applied from the token, and port events sent
/// to `[nova] url` with a token of the `[nova]` user.
#[test]
fn keystone_mode_checks_tokens_against_an_external_keystone() {
    let kdir = tempfile::tempdir().expect("tempdir");
    let k = start(kdir.path(), "127.0.0.1:0");
    let kb = k.base.clone();
    let c = Client::new();
    let (kadmin, _) = login(&c, &kb, "admin", "adm1n-pw", "admin");
    let post = |path: &str, body: Value| {
        let (st, _, v) = call(
            &c,
            Method::POST,
            &format!("{kb}/identity/v3/{path}"),
            Some(&kadmin),
            &[],
            Some(body),
        );
        assert_eq!(st, 201, "{path}: {v}");
        v
    };
    let grant = |project: &str, user: &str, role: &str| {
        let (st, _, v) = call(
            &c,
            Method::PUT,
            &format!("{kb}/identity/v3/projects/{project}/users/{user}/roles/{role}"),
            Some(&kadmin),
            &[],
            None,
        );
        assert_eq!(st, 204, "{v}");
    };
    // Service users for switchyard and Nova, a second project with a
    // member, and a reader on demo.
    let service = post("projects", json!({"project": {"name": "service"}}))["project"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let other = post("projects", json!({"project": {"name": "other"}}))["project"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let (_, _, v) = call(
        &c,
        Method::GET,
        &format!("{kb}/identity/v3/projects"),
        Some(&kadmin),
        &[],
        None,
    );
    let demo_project = v["projects"]
        .as_array()
        .expect("projects")
        .iter()
        .find(|p| p["name"] == "demo")
        .and_then(|p| p["id"].as_str())
        .expect("demo")
        .to_string();
    for (user, pw, project, role) in [
        ("neutron", "n3utron", &service, "service"),
        ("nova", "n0va", &service, "service"),
        ("alice", "al1ce", &other, "member"),
        ("rita", "r1ta", &demo_project, "reader"),
    ] {
        let u = post("users", json!({"user": {"name": user, "password": pw}}));
        grant(project, u["user"]["id"].as_str().expect("id"), role);
    }

    let (nova_url, nova_seen) = stand_in_nova();
    let config = |cache: u64, pw: &str| {
        format!(
            "[identity]\nauth_strategy = \"keystone\"\n\n[keystone_authtoken]\nauth_url = \"{kb}/identity\"\nusername = \"neutron\"\npassword = \"{pw}\"\nproject_name = \"service\"\ntoken_cache_time = {cache}\n\n[nova]\nurl = \"{nova_url}\"\npassword = \"n0va\"\nsend_events_interval = 0\n"
        )
    };
    let sdir = tempfile::tempdir().expect("tempdir");
    let s = start_with(sdir.path(), "127.0.0.1:0", &config(300, "n3utron"));
    let b = s.base.clone();

    // No token, a made-up one: 401, pointing at the Keystone.
    for token in [None, Some("0123abcd")] {
        let (st, h, v) = call(
            &c,
            Method::GET,
            &format!("{b}/v2.0/networks"),
            token,
            &[],
            None,
        );
        assert_eq!((st, &v["error"]["code"]), (401, &json!(401)), "{v}");
        assert_eq!(
            h.get("www-authenticate").and_then(|x| x.to_str().ok()),
            Some(format!("Keystone uri=\"{kb}/identity\"").as_str())
        );
    }
    let (st, _, _) = call(
        &c,
        Method::GET,
        &format!("{b}/identity/v3"),
        None,
        &[],
        None,
    );
    assert_eq!(st, 404, "no identity API of its own in keystone mode");

    // The project and roles come from the Keystone's answer, not headers.
    let (demo, _) = login(&c, &kb, "demo", "dem0-pw", "demo");
    let (alice, _) = login(&c, &kb, "alice", "al1ce", "other");
    let (rita, _) = login(&c, &kb, "rita", "r1ta", "demo");
    let (st, _, v) = call(
        &c,
        Method::POST,
        &format!("{b}/v2.0/networks"),
        Some(&demo),
        &[("X-Project-Id", other.as_str()), ("X-Roles", "admin")],
        Some(json!({"network": {"name": "demo-net"}})),
    );
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["network"]["project_id"], demo_project.as_str());
    let net = v["network"]["id"].as_str().expect("id").to_string();
    let (st, _, v) = call(
        &c,
        Method::GET,
        &format!("{b}/v2.0/networks"),
        Some(&alice),
        &[],
        None,
    );
    assert_eq!(
        (st, &v["networks"]),
        (200, &json!([])),
        "alice sees none of demo's"
    );
    let (st, _, _) = call(
        &c,
        Method::GET,
        &format!("{b}/v2.0/networks/{net}"),
        Some(&alice),
        &[],
        None,
    );
    assert_eq!(st, 404);
    let (st, _, _) = call(
        &c,
        Method::DELETE,
        &format!("{b}/v2.0/networks/{net}"),
        Some(&alice),
        &[],
        None,
    );
    assert_eq!(st, 404, "nor deletes it");
    let (st, _, v) = call(
        &c,
        Method::GET,
        &format!("{b}/v2.0/networks/{net}"),
        Some(&rita),
        &[],
        None,
    );
    assert_eq!(
        (st, &v["network"]["name"]),
        (200, &json!("demo-net")),
        "the reader reads"
    );
    let (st, _, _) = call(
        &c,
        Method::PUT,
        &format!("{b}/v2.0/networks/{net}"),
        Some(&rita),
        &[],
        Some(json!({"network": {"name": "x"}})),
    );
    assert_eq!(st, 403, "and changes nothing");
    let (st, _, v) = call(
        &c,
        Method::GET,
        &format!("{b}/v2.0/networks"),
        Some(&kadmin),
        &[],
        None,
    );
    assert_eq!(
        (st, v["networks"].as_array().map(Vec::len)),
        (200, Some(1)),
        "admin sees all"
    );

    // A server's port deleted: Nova hears of it, with the nova user's token.
    let (st, _, v) = call(
        &c,
        Method::POST,
        &format!("{b}/v2.0/subnets"),
        Some(&demo),
        &[],
        Some(json!({"subnet": {"network_id": net, "cidr": "10.7.0.0/24", "ip_version": 4}})),
    );
    assert_eq!(st, 201, "{v}");
    let server = "5a5a5a5a-0000-4000-8000-0000000000aa";
    let (st, _, v) = call(
        &c,
        Method::POST,
        &format!("{b}/v2.0/ports"),
        Some(&demo),
        &[],
        Some(
            json!({"port": {"network_id": net, "device_owner": "compute:nova", "device_id": server}}),
        ),
    );
    assert_eq!(st, 201, "{v}");
    let port = v["port"]["id"].as_str().expect("id").to_string();
    // Another project's member sees and changes none of it.
    let (st, _, v) = call(
        &c,
        Method::GET,
        &format!("{b}/v2.0/ports"),
        Some(&alice),
        &[],
        None,
    );
    assert_eq!((st, &v["ports"]), (200, &json!([])), "{v}");
    for m in [Method::GET, Method::DELETE] {
        let (st, _, _) = call(
            &c,
            m,
            &format!("{b}/v2.0/ports/{port}"),
            Some(&alice),
            &[],
            None,
        );
        assert_eq!(st, 404);
    }
    let (st, _, _) = call(
        &c,
        Method::DELETE,
        &format!("{b}/v2.0/ports/{port}"),
        Some(&demo),
        &[],
        None,
    );
    assert_eq!(st, 204);
    let (token, body) = nova_seen
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("Nova told");
    assert_eq!(
        body,
        json!({"events": [{"name": "network-vif-deleted", "server_uuid": server, "tag": port, "status": "completed"}]})
    );
    let (st, _, v) = call(
        &c,
        Method::GET,
        &format!("{kb}/identity/v3/auth/tokens"),
        Some(&kadmin),
        &[("X-Subject-Token", token.as_str())],
        None,
    );
    assert_eq!(
        (st, &v["token"]["user"]["name"]),
        (200, &json!("nova")),
        "{v}"
    );

    // Revocation: with no cache it takes effect at once; with the cache
    // (keystonemiddleware's token_cache_time) only when the entry ages out.
    let s0dir = tempfile::tempdir().expect("tempdir");
    let s0 = start_with(s0dir.path(), "127.0.0.1:0", &config(0, "n3utron"));
    let (st, _, _) = call(
        &c,
        Method::GET,
        &format!("{}/v2.0/networks", s0.base),
        Some(&demo),
        &[],
        None,
    );
    assert_eq!(st, 200);
    let (st, _, _) = call(
        &c,
        Method::DELETE,
        &format!("{kb}/identity/v3/auth/tokens"),
        Some(&demo),
        &[("X-Subject-Token", demo.as_str())],
        None,
    );
    assert_eq!(st, 204);
    let (st, _, _) = call(
        &c,
        Method::GET,
        &format!("{}/v2.0/networks", s0.base),
        Some(&demo),
        &[],
        None,
    );
    assert_eq!(st, 401, "revoked, no cache");
    let (st, _, _) = call(
        &c,
        Method::GET,
        &format!("{b}/v2.0/networks"),
        Some(&demo),
        &[],
        None,
    );
    assert_eq!(st, 200, "revoked, but validated 300 s ago at most");
    drop(s0);

    // Wrong service password: no token can be checked (503), not 401.
    let sbdir = tempfile::tempdir().expect("tempdir");
    let sb = start_with(sbdir.path(), "127.0.0.1:0", &config(300, "wrong"));
    let (st, _, v) = call(
        &c,
        Method::GET,
        &format!("{}/v2.0/networks", sb.base),
        Some(&alice),
        &[],
        None,
    );
    assert_eq!((st, &v["error"]["code"]), (503, &json!(503)), "{v}");
    drop(sb);

    // Keystone down: tokens seen recently still work, new ones cannot be
    // checked.
    let (fresh, _) = login(&c, &kb, "alice", "al1ce", "other");
    drop(k);
    let (st, _, _) = call(
        &c,
        Method::GET,
        &format!("{b}/v2.0/networks"),
        Some(&alice),
        &[],
        None,
    );
    assert_eq!(st, 200, "cached");
    let (st, _, v) = call(
        &c,
        Method::GET,
        &format!("{b}/v2.0/networks"),
        Some(&fresh),
        &[],
        None,
    );
    assert_eq!((st, &v["error"]["code"]), (503, &json!(503)), "{v}");
}
