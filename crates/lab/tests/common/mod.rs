//! Helpers shared by the live compute tests.

#![allow(dead_code)]

use serde_json::json;
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
