//! A real server on an ephemeral loopback port, a virtual clock and a small client.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use reqwest::Method;
use serde_json::{Value, json};
use switchyard_api::Clock;
use switchyard_ml2::Ml2Config;
use switchyard_model::Timestamp;
use switchyard_proto::Role;
use switchyard_store::Durability;

/// The role of a host of the reference lab (and the extra hosts tests add).
pub fn lab_role(host: &str) -> Role {
    match host {
        "compute-1" | "compute-6" => Role::Ovs,
        "compute-3" | "compute-5" => Role::Sriov,
        h if h.starts_with("gateway") => Role::Gateway,
        _ => Role::Vrouter,
    }
}

/// A clock the test moves by hand.
#[derive(Debug)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn at(secs: i64) -> Self {
        ManualClock(AtomicI64::new(secs))
    }

    pub fn advance(&self, secs: i64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        chrono::DateTime::from_timestamp(self.0.load(Ordering::SeqCst), 0).expect("valid time")
    }
}

pub struct Server {
    pub base: String,
    pub clock: Arc<ManualClock>,
    pub db: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    pub http: reqwest::Client,
}

pub struct Resp {
    pub status: u16,
    pub body: Value,
}

impl Resp {
    /// The NeutronError type of an error response.
    pub fn error_type(&self) -> &str {
        self.body["NeutronError"]["type"]
            .as_str()
            .unwrap_or("<none>")
    }
    pub fn message(&self) -> &str {
        self.body["NeutronError"]["message"]
            .as_str()
            .unwrap_or("<none>")
    }
}

impl Server {
    pub async fn start(dir: &Path) -> Server {
        Self::start_with(dir, Ml2Config::default()).await
    }

    pub async fn start_with(dir: &Path, cfg: Ml2Config) -> Server {
        let clock = Arc::new(ManualClock(AtomicI64::new(1_800_000_000)));
        Self::start_full(dir, cfg, clock).await
    }

    pub async fn start_full(dir: &Path, cfg: Ml2Config, clock: Arc<ManualClock>) -> Server {
        Self::start_on(dir, cfg, clock, "127.0.0.1:0").await
    }

    /// As `start_full`, listening on a given address (to restart where agents reconnect).
    pub async fn start_on(
        dir: &Path,
        cfg: Ml2Config,
        clock: Arc<ManualClock>,
        bind: &str,
    ) -> Server {
        Self::start_notifying(dir, cfg, clock, bind, None).await
    }

    /// As `start_on`, telling Nova at `nova` of port changes.
    pub async fn start_notifying(
        dir: &Path,
        cfg: Ml2Config,
        clock: Arc<ManualClock>,
        bind: &str,
        nova: Option<switchyard_api::nova::NovaTarget>,
    ) -> Server {
        let db = dir.join("test.db");
        let app = switchyard_api::open_app_with_clock(
            &db,
            Durability::Process,
            &cfg,
            "proj-a",
            clock.clone(),
        )
        .expect("app opens");
        let mut app = app;
        // Node credentials in the test's directory, so a restarted server
        // knows the same nodes.
        app.shared.credentials = Arc::new(switchyard_api::nodeauth::NodeCredentials::with_file(
            &dir.join("nodes.toml"),
        ));
        if let Some(t) = nova {
            let _ = app
                .shared
                .notifier
                .set(switchyard_api::nova::Notifier::start(t));
        }
        Self::serve_app(db, app, clock, bind).await
    }

    /// As `start_on` with the default configuration, but the first full
    /// compile waits until the returned handle starts it.
    pub async fn start_deferred(
        dir: &Path,
        clock: Arc<ManualClock>,
        bind: &str,
    ) -> (Server, switchyard_api::core::FirstCompile) {
        let db = dir.join("test.db");
        let store = switchyard_store::SqliteStore::open(&db, Durability::Process).expect("store");
        let ml2 = switchyard_ml2::Ml2::new(&Ml2Config::default()).expect("ml2");
        let core = switchyard_api::Core::open(ml2, store, clock.now()).expect("core");
        let creds = switchyard_api::nodeauth::NodeCredentials::with_file(&dir.join("nodes.toml"));
        let (shared, first) = switchyard_api::Shared::deferred(core, clock.clone(), creds);
        let app = switchyard_api::App {
            shared,
            default_project: "proj-a".into(),
            identity: None,
            keystone: None,
        };
        let s = Self::serve_app(db, app, clock, bind).await;
        (s, first.expect("a first compile"))
    }

    async fn serve_app(
        db: PathBuf,
        app: switchyard_api::App,
        clock: Arc<ManualClock>,
        bind: &str,
    ) -> Server {
        let listener = tokio::net::TcpListener::bind(bind).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            switchyard_api::serve(listener, app, async {
                let _ = rx.await;
            })
            .await
            .expect("server runs");
        });
        Server {
            base: format!("http://{addr}"),
            clock,
            db,
            stop: Some(tx),
            task: Some(task),
            http: reqwest::Client::new(),
        }
    }

    /// Graceful stop; the database stays for a restart.
    pub async fn stop(mut self) -> Arc<ManualClock> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.expect("server task");
        }
        self.clock.clone()
    }

    pub async fn req(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut r = self.http.request(method, format!("{}{path}", self.base));
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.expect("request sent");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Resp { status, body }
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.req(Method::GET, path, None, &[]).await
    }
    pub async fn post(&self, path: &str, body: Value) -> Resp {
        self.req(Method::POST, path, Some(body), &[]).await
    }
    pub async fn put(&self, path: &str, body: Value) -> Resp {
        self.req(Method::PUT, path, Some(body), &[]).await
    }
    pub async fn delete(&self, path: &str) -> Resp {
        self.req(Method::DELETE, path, None, &[]).await
    }

    /// Creates a resource and returns its body, asserting 201.
    pub async fn create(&self, collection: &str, singular: &str, attrs: Value) -> Value {
        let r = self
            .post(&format!("/v2.0/{collection}"), json!({ singular: attrs }))
            .await;
        assert_eq!(r.status, 201, "create {singular}: {}", r.body);
        r.body[singular].clone()
    }

    pub async fn network(&self, name: &str) -> Value {
        self.create("networks", "network", json!({ "name": name }))
            .await
    }

    pub async fn subnet(&self, net: &Value, cidr: &str) -> Value {
        let v = if cidr.contains(':') { 6 } else { 4 };
        self.create(
            "subnets",
            "subnet",
            json!({"network_id": net["id"], "cidr": cidr, "ip_version": v}),
        )
        .await
    }

    pub async fn port(&self, net: &Value, extra: Value) -> Value {
        let mut attrs = json!({ "network_id": net["id"] });
        if let (Some(a), Some(e)) = (attrs.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                a.insert(k.clone(), v.clone());
            }
        }
        self.create("ports", "port", attrs).await
    }

    /// `host`'s credential as a `role` node: enrolled in the test's
    /// credentials file on first use, the same token after (a restart too).
    pub fn token(&self, host: &str, role: Role) -> String {
        let dir = self.db.parent().expect("test dir");
        let tokens = dir.join("test-tokens.json");
        let mut map: std::collections::BTreeMap<String, (String, String)> =
            std::fs::read_to_string(&tokens)
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or_default();
        if let Some((r, t)) = map.get(host)
            && r == role.name()
        {
            return t.clone();
        }
        let t =
            switchyard_api::nodeauth::enroll_in_file(&dir.join("nodes.toml"), host, role, "test")
                .expect("enroll");
        map.insert(host.to_string(), (role.name().to_string(), t.clone()));
        std::fs::write(&tokens, serde_json::to_string(&map).expect("json")).expect("write tokens");
        t
    }

    /// A report through the internal agent API, with the host's credential.
    pub async fn report(&self, host: &str, agent_type: &str, configurations: Value) -> Value {
        let role = Role::from_agent_type(agent_type).expect("a known agent type");
        let auth = format!("Bearer {}", self.token(host, role));
        let r = self
            .req(
                Method::POST,
                "/switchyard/v1/agents/report",
                Some(json!({"agent": {"host": host, "agent_type": agent_type, "configurations": configurations}})),
                &[("authorization", &auth)],
            )
            .await;
        assert_eq!(r.status, 200, "report: {}", r.body);
        r.body["agent"].clone()
    }

    /// The reference lab's compute agents.
    pub async fn lab_agents(&self) {
        self.report(
            "compute-1",
            "Open vSwitch agent",
            json!({"bridge_mappings": {"physnet1": "br-phys"}}),
        )
        .await;
        self.report(
            "compute-2",
            "vRouter agent",
            json!({"tunneling_ip": "192.0.2.12"}),
        )
        .await;
        self.report(
            "compute-3",
            "NIC Switch agent",
            json!({"device_mappings": {"physnet1": ["eth1"]}}),
        )
        .await;
        self.report(
            "compute-4",
            "vRouter agent",
            json!({"tunneling_ip": "192.0.2.14"}),
        )
        .await;
    }
}

pub fn id(v: &Value) -> String {
    v["id"].as_str().expect("id").to_string()
}
