//! Clients of a running lab's public APIs (Neutron, compute, the lab's guest
//! API) over HTTP: what `switchyard verify`, `switchyard demo` and
//! `switchyard bench migration` run. They only use what any API client can,
//! so they work the same against `switchyard lab up` as in-process.

pub mod demo;
pub mod migration;
pub mod verify;

use std::time::Duration;

use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{method} {path}: {message}")]
    Http {
        method: String,
        path: String,
        message: String,
    },
    #[error("{method} {path}: HTTP {status}: {message}")]
    Api {
        method: String,
        path: String,
        status: u16,
        message: String,
    },
    #[error("{0}")]
    Scenario(String),
}

/// The error message inside a Neutron (`NeutronError.message`) or Nova
/// (`{fault: {message}}`) error body.
fn error_message(v: &Value) -> Option<String> {
    if let Some(m) = v["NeutronError"]["message"].as_str() {
        return Some(m.to_string());
    }
    v.as_object()?
        .values()
        .find_map(|f| f["message"].as_str().map(str::to_string))
}

/// A client of one lab, at `http://HOST:PORT`.
#[derive(Clone)]
pub struct LabClient {
    http: reqwest::Client,
    url: String,
    /// A Keystone token sent with every call (a lab with identity).
    token: Option<String>,
}

const TIMEOUT: Duration = Duration::from_secs(120);

impl LabClient {
    pub fn new(url: &str) -> Self {
        LabClient {
            http: reqwest::Client::builder()
                .timeout(TIMEOUT)
                .build()
                .unwrap_or_default(),
            url: url.trim_end_matches('/').to_string(),
            token: None,
        }
    }

    /// The same client, sending `token` as `X-Auth-Token`.
    pub fn with_token(mut self, token: String) -> Self {
        self.token = Some(token);
        self
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// One call; any status is returned with the body (JSON or null).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), ClientError> {
        let mut r = self
            .http
            .request(method.clone(), format!("{}{path}", self.url));
        if path.starts_with("/compute/") {
            r = r.header("OpenStack-API-Version", "compute 2.74");
        }
        if let Some(t) = &self.token {
            r = r.header("X-Auth-Token", t);
        }
        if let Some(b) = body {
            r = r.json(b);
        }
        let http_err = |e: reqwest::Error| ClientError::Http {
            method: method.to_string(),
            path: path.to_string(),
            message: e.to_string(),
        };
        let resp = r.send().await.map_err(http_err)?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(http_err)?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// A call that must succeed (2xx); its body.
    pub async fn ok(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let (status, v) = self.call(method.clone(), path, body).await?;
        if (200..300).contains(&status) {
            return Ok(v);
        }
        Err(ClientError::Api {
            method: method.to_string(),
            path: path.to_string(),
            status,
            message: error_message(&v).unwrap_or_else(|| v.to_string()),
        })
    }

    pub async fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.ok(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        self.ok(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        self.ok(reqwest::Method::PUT, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Result<Value, ClientError> {
        self.ok(reqwest::Method::DELETE, path, None).await
    }

    /// A floating IP on network `public` for `port`: (its id, its address).
    pub async fn floating_ip(
        &self,
        public: &str,
        port: &str,
    ) -> Result<(String, String), ClientError> {
        let f = self
            .post(
                "/v2.0/floatingips",
                &serde_json::json!({"floatingip": {"floating_network_id": public, "port_id": port}}),
            )
            .await?;
        let s = |k: &str| f["floatingip"][k].as_str().unwrap_or_default().to_string();
        Ok((s("id"), s("floating_ip_address")))
    }

    /// Adds an ingress rule to the first security group of `port` (its
    /// project's `default` unless it was given others), as an operator
    /// opens a VM to the outside: `rule` holds protocol, ports and remote
    /// (nothing: everything from anywhere). Returns the rule's id.
    pub async fn allow_ingress(
        &self,
        port: &str,
        rule: serde_json::Value,
    ) -> Result<String, ClientError> {
        let p = self.get(&format!("/v2.0/ports/{port}")).await?;
        let group = p["port"]["security_groups"][0]
            .as_str()
            .ok_or_else(|| ClientError::Scenario(format!("port {port} is in no security group")))?
            .to_string();
        let mut body = serde_json::json!({"security_group_id": group, "direction": "ingress"});
        if let (Some(b), Some(r)) = (body.as_object_mut(), rule.as_object()) {
            b.extend(r.clone());
        }
        let r = self
            .post(
                "/v2.0/security-group-rules",
                &serde_json::json!({ "security_group_rule": body }),
            )
            .await?;
        Ok(r["security_group_rule"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    /// Makes guest `name` listen on TCP `port` (the lab's guest API).
    pub async fn listen(&self, name: &str, port: u16) -> Result<Value, ClientError> {
        self.put(
            &format!("/switchyard/v1/lab/guests/{name}/listen"),
            &serde_json::json!({"listen": {"port": port}}),
        )
        .await
    }

    /// One TCP connection attempt from guest `from`: its `result`
    /// (`established`, `refused` or `timed_out`).
    pub async fn tcp_connect(
        &self,
        from: &str,
        target: &str,
        port: u16,
        timeout_ms: u64,
    ) -> Result<String, ClientError> {
        let r = self
            .post(
                &format!("/switchyard/v1/lab/guests/{from}/connect"),
                &serde_json::json!({"connect": {"target": target, "port": port, "timeout_ms": timeout_ms}}),
            )
            .await?;
        r["connect"]["result"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| ClientError::Scenario(format!("connect answered without a result: {r}")))
    }

    /// A router `name` with its gateway on the lab's `public` network and an
    /// interface on `subnet`: (the public network's id, the router's id).
    pub async fn router_to_public(
        &self,
        name: &str,
        subnet: &str,
    ) -> Result<(String, String), ClientError> {
        let nets = self.get("/v2.0/networks?name=public").await?;
        let public = nets["networks"][0]["id"]
            .as_str()
            .ok_or_else(|| ClientError::Scenario("the lab has no network 'public'".into()))?
            .to_string();
        let r = self
            .post(
                "/v2.0/routers",
                &serde_json::json!({"router": {"name": name, "external_gateway_info": {"network_id": public}}}),
            )
            .await?;
        let router = r["router"]["id"].as_str().unwrap_or_default().to_string();
        self.put(
            &format!("/v2.0/routers/{router}/add_router_interface"),
            &serde_json::json!({"subnet_id": subnet}),
        )
        .await?;
        Ok((public, router))
    }

    /// Polls a server until `done` holds for it, or `limit` passes.
    pub async fn wait_server(
        &self,
        id: &str,
        limit: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Result<Value, ClientError> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let s = self.get(&format!("/compute/v2.1/servers/{id}")).await?;
            let s = s["server"].clone();
            if done(&s) {
                return Ok(s);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ClientError::Scenario(format!(
                    "server {id} still {} after {} s",
                    s["status"],
                    limit.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Boots a server on `host` and waits for ACTIVE; ERROR is an error
    /// with the server's fault.
    pub async fn boot(
        &self,
        name: &str,
        networks: Value,
        host: &str,
        limit: Duration,
    ) -> Result<Value, ClientError> {
        let body = serde_json::json!({"server": {
            "name": name, "networks": networks, "availability_zone": format!("nova:{host}")}});
        let r = self.post("/compute/v2.1/servers", &body).await?;
        let id = r["server"]["id"]
            .as_str()
            .ok_or_else(|| ClientError::Scenario("POST /servers answered without an id".into()))?
            .to_string();
        let s = self
            .wait_server(&id, limit, |s| s["status"] != "BUILD")
            .await?;
        if s["status"] != "ACTIVE" {
            return Err(ClientError::Scenario(format!(
                "server {name} went {}: {}",
                s["status"],
                s["fault"]["message"]
                    .as_str()
                    .unwrap_or("no fault recorded")
            )));
        }
        Ok(s)
    }
}

/// The backend name of a `binding:vif_type`.
pub fn backend_of(vif_type: &str) -> String {
    match vif_type {
        "ovs" => "ovs".into(),
        "vrouter" => "vrouter".into(),
        "hw_veb" | "hostdev_physical" => "sriov".into(),
        other => other.to_string(),
    }
}
