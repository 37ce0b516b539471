//! Helpers shared by the live lab tests.

#![allow(dead_code)]

use serde_json::{Value, json};
use switchyard_lab::client::LabClient;

/// A network with one IPv4 subnet; its id.
pub async fn network(c: &LabClient, name: &str, cidr: &str) -> String {
    let n = c
        .post("/v2.0/networks", &json!({"network": {"name": name}}))
        .await
        .expect("network");
    let id = n["network"]["id"].as_str().expect("id").to_string();
    c.post(
        "/v2.0/subnets",
        &json!({"subnet": {"network_id": id, "ip_version": 4, "cidr": cidr}}),
    )
    .await
    .expect("subnet");
    id
}

/// A port's bindings as (host, status).
pub async fn bindings(c: &LabClient, port: &str) -> Vec<(String, String)> {
    let b = c
        .get(&format!("/v2.0/ports/{port}/bindings"))
        .await
        .expect("bindings");
    b["bindings"]
        .as_array()
        .expect("list")
        .iter()
        .map(|b| {
            (
                b["host"].as_str().unwrap_or_default().to_string(),
                b["status"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// A resource's `id`.
pub fn id(v: &Value) -> String {
    v["id"].as_str().expect("id").to_string()
}

/// A security group named `name`; its id.
pub async fn group(c: &LabClient, name: &str) -> String {
    let g = c
        .post(
            "/v2.0/security-groups",
            &json!({"security_group": {"name": name}}),
        )
        .await
        .expect("group");
    id(&g["security_group"])
}

/// A port on `net`, in `groups` when given (else the project's default
/// group, as Neutron does when they are omitted).
pub async fn port_in(c: &LabClient, net: &str, groups: Option<Value>) -> Value {
    let mut body = json!({"network_id": net});
    if let Some(g) = groups {
        body["security_groups"] = g;
    }
    c.post("/v2.0/ports", &json!({ "port": body }))
        .await
        .expect("port")["port"]
        .clone()
}
