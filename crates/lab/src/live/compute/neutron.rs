//! The Neutron calls the compute service makes, over real HTTP to the
//! controller's API, as Nova's `network/neutron.py` makes them: create or
//! claim a port with `binding:host_id`, read it back, and the
//! `binding-extended` calls of live migration (create an INACTIVE binding on
//! the destination, activate it, delete the source binding).
//!
//! Going through the API rather than into the controller in-process keeps the
//! compute service honest: it sees exactly what a real Nova would, errors
//! included.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde_json::{Map, Value, json};

/// A Neutron error as the compute service reports it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct NeutronFailure {
    /// HTTP status (0 when the API could not be reached).
    pub status: u16,
    /// Neutron's error `type` (e.g. `PortNotFound`).
    pub kind: String,
    pub message: String,
}

impl NeutronFailure {
    fn unreachable(e: &reqwest::Error) -> Self {
        NeutronFailure {
            status: 0,
            kind: "Unreachable".into(),
            message: format!("the networking API could not be reached: {e}"),
        }
    }
}

pub type Result<T> = std::result::Result<T, NeutronFailure>;

/// How long one networking API call may take before the compute service
/// gives up on it.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct Neutron {
    http: reqwest::Client,
    /// `http://HOST:PORT/v2.0`
    base: String,
    /// Its service user's token, when the API asks for one.
    token: Option<switchyard_identity::ServiceToken>,
}

impl Neutron {
    /// A client of the API at `url` (`http://HOST:PORT`).
    pub fn new(url: &str, token: Option<switchyard_identity::ServiceToken>) -> Self {
        let http = reqwest::Client::builder()
            .timeout(CALL_TIMEOUT)
            .build()
            .unwrap_or_default();
        Neutron {
            http,
            base: format!("{}/v2.0", url.trim_end_matches('/')),
            token,
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Option<Value>> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            // Nova talks to Neutron with a service token; this API is noauth
            // and takes the roles from this header.
            .header("X-Roles", "admin,service");
        if let Some(t) = &self.token {
            let s = t.clone();
            let token = tokio::task::spawn_blocking(move || s.token(chrono::Utc::now()))
                .await
                .map_err(|e| NeutronFailure {
                    status: 0,
                    kind: "Unauthorized".into(),
                    message: format!("the service token: {e}"),
                })?
                .map_err(|e| NeutronFailure {
                    status: 401,
                    kind: "Unauthorized".into(),
                    message: format!("the compute service's own authentication failed: {e}"),
                })?;
            req = req.header("X-Auth-Token", token);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| NeutronFailure::unreachable(&e))?;
        let status = resp.status().as_u16();
        let text = resp
            .text()
            .await
            .map_err(|e| NeutronFailure::unreachable(&e))?;
        if (200..300).contains(&status) {
            return Ok(serde_json::from_str(&text).ok());
        }
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let e = &v["NeutronError"];
        Err(NeutronFailure {
            status,
            kind: e["type"].as_str().unwrap_or("HTTPError").to_string(),
            message: e["message"]
                .as_str()
                .map_or_else(|| format!("HTTP {status}"), str::to_string),
        })
    }

    fn member(v: Option<Value>, key: &str) -> Result<Map<String, Value>> {
        match v {
            Some(Value::Object(mut m)) => match m.remove(key) {
                Some(Value::Object(o)) => Ok(o),
                _ => Err(NeutronFailure {
                    status: 500,
                    kind: "BadResponse".into(),
                    message: format!("the networking API answered without '{key}'"),
                }),
            },
            _ => Err(NeutronFailure {
                status: 500,
                kind: "BadResponse".into(),
                message: "the networking API answered with no JSON body".into(),
            }),
        }
    }

    pub async fn show_port(&self, id: &str) -> Result<Map<String, Value>> {
        let v = self
            .call(reqwest::Method::GET, &format!("/ports/{id}"), None)
            .await?;
        Self::member(v, "port")
    }

    /// The addresses of the floating IPs on port `id`.
    pub async fn floating_ips_of(&self, id: &str) -> Result<Vec<String>> {
        let v = self
            .call(
                reqwest::Method::GET,
                &format!("/floatingips?port_id={id}&fields=floating_ip_address"),
                None,
            )
            .await?;
        Ok(v.as_ref()
            .and_then(|v| v["floatingips"].as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|f| f["floating_ip_address"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }

    pub async fn show_network(&self, id: &str) -> Result<Map<String, Value>> {
        let v = self
            .call(reqwest::Method::GET, &format!("/networks/{id}"), None)
            .await?;
        Self::member(v, "network")
    }

    /// Whether `host` has a networking agent that Neutron considers alive.
    pub async fn agent_alive(&self, host: &str) -> Result<bool> {
        let v = self
            .call(reqwest::Method::GET, &format!("/agents?host={host}"), None)
            .await?;
        Ok(v.as_ref()
            .and_then(|v| v["agents"].as_array())
            .is_some_and(|a| a.iter().any(|x| x["alive"] == true)))
    }

    /// Project `project`'s security groups as (id, name).
    pub async fn security_groups_of(&self, project: &str) -> Result<Vec<(String, String)>> {
        let q: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("project_id", project)
            .append_pair("fields", "id")
            .append_pair("fields", "name")
            .finish();
        let v = self
            .call(reqwest::Method::GET, &format!("/security-groups?{q}"), None)
            .await?;
        Ok(v.as_ref()
            .and_then(|v| v["security_groups"].as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|g| {
                        Some((
                            g["id"].as_str()?.to_string(),
                            g["name"].as_str()?.to_string(),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The names of the security groups on each server's ports, keyed by
    /// server (device) id: one name per group per port, in port order, as
    /// Nova's server views list them. Servers with no group are absent.
    pub async fn security_group_names_by_device(
        &self,
        devices: &[(&str, &str)],
    ) -> Result<HashMap<String, Vec<String>>> {
        let mut out: HashMap<String, Vec<String>> = HashMap::new();
        // Groups are looked up in each server's project, as Nova asks with
        // the user's token: the service's own project gets no default group.
        let mut by_project: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (device, project) in devices {
            by_project.entry(project).or_default().push(device);
        }
        for (project, devices) in by_project {
            self.group_names_in(project, &devices, &mut out).await?;
        }
        Ok(out)
    }

    /// [`Neutron::security_group_names_by_device`] for servers of `project`.
    async fn group_names_in(
        &self,
        project: &str,
        devices: &[&str],
        out: &mut HashMap<String, Vec<String>>,
    ) -> Result<()> {
        // A bounded query string per call.
        for chunk in devices.chunks(100) {
            let mut pairs: Vec<(&str, &str)> = chunk.iter().map(|d| ("device_id", *d)).collect();
            pairs.extend([("fields", "device_id"), ("fields", "security_groups")]);
            let v = self
                .call(
                    reqwest::Method::GET,
                    &format!("/ports?{}", query(&pairs)),
                    None,
                )
                .await?;
            let ports: Vec<(String, Vec<String>)> = v
                .as_ref()
                .and_then(|v| v["ports"].as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|p| {
                            let groups = p["security_groups"]
                                .as_array()?
                                .iter()
                                .filter_map(|g| g.as_str().map(str::to_string))
                                .collect();
                            Some((p["device_id"].as_str()?.to_string(), groups))
                        })
                        .collect()
                })
                .unwrap_or_default();
            let mut ids: Vec<&str> = ports
                .iter()
                .flat_map(|(_, g)| g.iter().map(String::as_str))
                .collect();
            ids.sort_unstable();
            ids.dedup();
            let mut names: HashMap<String, String> = HashMap::new();
            for ids in ids.chunks(100) {
                let mut pairs: Vec<(&str, &str)> = ids.iter().map(|i| ("id", *i)).collect();
                pairs.extend([
                    ("project_id", project),
                    ("fields", "id"),
                    ("fields", "name"),
                ]);
                let path = format!("/security-groups?{}", query(&pairs));
                let v = self.call(reqwest::Method::GET, &path, None).await?;
                for g in v
                    .as_ref()
                    .and_then(|v| v["security_groups"].as_array())
                    .into_iter()
                    .flatten()
                {
                    if let (Some(id), Some(name)) = (g["id"].as_str(), g["name"].as_str()) {
                        names.insert(id.to_string(), name.to_string());
                    }
                }
            }
            for (device, groups) in ports {
                // A group gone meanwhile is left out, as Nova leaves out one
                // it cannot see.
                let named: Vec<String> = groups
                    .iter()
                    .filter_map(|g| names.get(g).cloned())
                    .collect();
                if !named.is_empty() {
                    out.entry(device).or_default().extend(named);
                }
            }
        }
        Ok(())
    }

    pub async fn create_port(&self, port: Value) -> Result<Map<String, Value>> {
        let v = self
            .call(
                reqwest::Method::POST,
                "/ports",
                Some(json!({ "port": port })),
            )
            .await?;
        Self::member(v, "port")
    }

    pub async fn update_port(&self, id: &str, port: Value) -> Result<Map<String, Value>> {
        let v = self
            .call(
                reqwest::Method::PUT,
                &format!("/ports/{id}"),
                Some(json!({ "port": port })),
            )
            .await?;
        Self::member(v, "port")
    }

    pub async fn delete_port(&self, id: &str) -> Result<()> {
        match self
            .call(reqwest::Method::DELETE, &format!("/ports/{id}"), None)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.status == 404 => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `POST /ports/{id}/bindings`: the binding on `host` (INACTIVE while
    /// another is active), with the host's real `vif_type`.
    pub async fn create_binding(
        &self,
        port_id: &str,
        host: &str,
        vnic_type: &str,
        profile: &Value,
    ) -> Result<Map<String, Value>> {
        let v = self
            .call(
                reqwest::Method::POST,
                &format!("/ports/{port_id}/bindings"),
                Some(
                    json!({"binding": {"host": host, "vnic_type": vnic_type, "profile": profile}}),
                ),
            )
            .await?;
        Self::member(v, "binding")
    }

    pub async fn activate_binding(&self, port_id: &str, host: &str) -> Result<()> {
        self.call(
            reqwest::Method::PUT,
            &format!("/ports/{port_id}/bindings/{host}/activate"),
            None,
        )
        .await
        .map(|_| ())
    }

    /// Deletes a binding; one already gone is not an error (Nova ignores 404).
    pub async fn delete_binding(&self, port_id: &str, host: &str) -> Result<()> {
        match self
            .call(
                reqwest::Method::DELETE,
                &format!("/ports/{port_id}/bindings/{host}"),
                None,
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.status == 404 => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// A query string of `pairs`, form-encoded.
fn query(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}
