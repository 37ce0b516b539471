//! `switchyard server` with the embedded identity (`[identity] auth_strategy
//! = "embedded"`): Keystone v3 password and token auth with Keystone's
//! shapes, the catalog, every Neutron call needing a token (401 as
//! keystonemiddleware answers), identity headers a client sends ignored,
//! projects isolated, tokens validated and revoked, and tokens surviving a
//! restart of the server.

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

fn start(dir: &Path, bind: &str) -> Server {
    let cfg = dir.join("switchyard.toml");
    std::fs::write(
        &cfg,
        "[identity]\nauth_strategy = \"embedded\"\nadmin_password = \"adm1n-pw\"\ndemo_password = \"dem0-pw\"\n",
    )
    .expect("config");
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
    for _ in 0..2 {
        let mut line = String::new();
        out.read_line(&mut line).expect("banner");
        if let Some(u) = line.split_whitespace().find(|w| w.starts_with("http://"))
            && line.contains("Neutron API")
        {
            base = u.trim_end_matches("/v2.0/").to_string();
        }
        if line.contains("identity (Keystone v3)") {
            assert!(line.contains("/identity/v3"), "{line}");
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

fn password(user: &str, pw: &str, project: &str) -> Value {
    json!({"auth": {
        "identity": {"methods": ["password"], "password": {"user": {"name": user, "domain": {"name": "Default"}, "password": pw}}},
        "scope": {"project": {"name": project, "domain": {"id": "default"}}}
    }})
}

fn login(c: &Client, base: &str, user: &str, pw: &str, project: &str) -> (String, Value) {
    let (s, h, v) = call(
        c,
        Method::POST,
        &format!("{base}/identity/v3/auth/tokens"),
        None,
        &[],
        Some(password(user, pw, project)),
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
            Some(password(u, p, "admin")),
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
        Some(password("demo", "dem0-pw", "admin")),
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
