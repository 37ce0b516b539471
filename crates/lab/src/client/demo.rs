//! The reference scenario of DESIGN.md through the public APIs
//! (`switchyard demo`): `demo-net` (50.50.50.0/24) behind a router to
//! `public`; `vm-ovs`, `vm-vrouter` and `vm-sriov` (a `direct` port) booted
//! through the compute API on compute-1/2/3; the connectivity matrix;
//! `vm-migrate` booted on compute-1 (OVS) and live-migrated to compute-4
//! (vRouter) under a 10 ms ping stream from `vm-vrouter`; the matrix again.

use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};

use super::migration::{MigrationResult, migrate_under_stream};
use super::verify::{self, Matrix};
use super::{ClientError, LabClient};

const BOOT_LIMIT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Serialize)]
pub struct Vm {
    pub name: String,
    pub host: String,
    pub vif_type: String,
    pub ip: String,
    pub mac: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub ok: bool,
    pub vms: Vec<Vm>,
    pub matrix_before: Matrix,
    pub migration: MigrationResult,
    pub matrix_after: Matrix,
}

/// A VM's first NIC (the first address the compute API lists), as Neutron
/// shows its port.
pub async fn vm(c: &LabClient, server: &Value) -> Result<Vm, ClientError> {
    let id = server["id"].as_str().unwrap_or_default();
    let ports = c.get(&format!("/v2.0/ports?device_id={id}")).await?;
    let first = server["addresses"]
        .as_object()
        .and_then(|m| m.values().next())
        .and_then(|a| a[0]["addr"].as_str())
        .unwrap_or_default();
    let all = ports["ports"].as_array().cloned().unwrap_or_default();
    let p = all
        .iter()
        .find(|p| p["fixed_ips"][0]["ip_address"] == first)
        .or(all.first())
        .cloned()
        .unwrap_or(Value::Null);
    Ok(Vm {
        name: server["name"].as_str().unwrap_or_default().to_string(),
        host: server["OS-EXT-SRV-ATTR:host"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        vif_type: p["binding:vif_type"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        ip: p["fixed_ips"][0]["ip_address"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        mac: p["mac_address"].as_str().unwrap_or_default().to_string(),
    })
}

/// Creates `demo-net` with its subnet and router (gateway on `public`);
/// returns the network id.
pub async fn network(c: &LabClient) -> Result<String, ClientError> {
    let n = c
        .post("/v2.0/networks", &json!({"network": {"name": "demo-net"}}))
        .await?;
    let net = n["network"]["id"].as_str().unwrap_or_default().to_string();
    let s = c
        .post(
            "/v2.0/subnets",
            &json!({"subnet": {"network_id": net, "name": "demo-subnet", "ip_version": 4,
                "cidr": "50.50.50.0/24", "gateway_ip": "50.50.50.1"}}),
        )
        .await?;
    let subnet = s["subnet"]["id"].as_str().unwrap_or_default().to_string();
    let nets = c.get("/v2.0/networks?name=public").await?;
    let public = nets["networks"][0]["id"]
        .as_str()
        .ok_or_else(|| ClientError::Scenario("the lab has no 'public' network".into()))?
        .to_string();
    let r = c
        .post(
            "/v2.0/routers",
            &json!({"router": {"name": "demo-router",
                "external_gateway_info": {"network_id": public}}}),
        )
        .await?;
    let router = r["router"]["id"].as_str().unwrap_or_default().to_string();
    c.put(
        &format!("/v2.0/routers/{router}/add_router_interface"),
        &json!({"subnet_id": subnet}),
    )
    .await?;
    Ok(net)
}

/// Runs the scenario; `say` gets each step as a line of text.
pub async fn run(c: &LabClient, say: &(dyn Fn(&str) + Sync)) -> Result<Report, ClientError> {
    say("1. network demo-net 50.50.50.0/24, router demo-router with its gateway on public");
    let net = network(c).await?;
    // vm-sriov's port is a VF: binding:vnic_type=direct, made before the boot.
    let p = c
        .post(
            "/v2.0/ports",
            &json!({"port": {"network_id": net, "name": "vm-sriov-port", "binding:vnic_type": "direct"}}),
        )
        .await?;
    let sriov_port = p["port"]["id"].as_str().unwrap_or_default().to_string();
    let mut vms = Vec::new();
    for (name, host, nets) in [
        ("vm-ovs", "compute-1", json!([{"uuid": net}])),
        ("vm-vrouter", "compute-2", json!([{"uuid": net}])),
        ("vm-sriov", "compute-3", json!([{"port": sriov_port}])),
    ] {
        let s = c.boot(name, nets, host, BOOT_LIMIT).await?;
        let v = vm(c, &s).await?;
        say(&format!(
            "   {:<11} ACTIVE on {:<10} vif_type={:<8} {} {}",
            v.name, v.host, v.vif_type, v.ip, v.mac
        ));
        vms.push(v);
    }
    say("2. connectivity matrix");
    let matrix_before = verify::run(c, Some("demo-net"), verify::PROBE_COUNT).await?;
    for l in verify::table(&matrix_before).lines() {
        say(&format!("   {l}"));
    }
    say(
        "3. vm-migrate on compute-1 (OVS), live-migrated to compute-4 (vRouter) under a 10 ms ping stream from vm-vrouter",
    );
    let s = c
        .boot(
            "vm-migrate",
            json!([{"uuid": net}]),
            "compute-1",
            BOOT_LIMIT,
        )
        .await?;
    let id = s["id"].as_str().unwrap_or_default().to_string();
    let migration = migrate_under_stream(c, &id, "vm-vrouter", "compute-4", 10).await?;
    let m = &migration;
    say(&format!(
        "   host      {} -> {}\n   ip        {} -> {}\n   mac       {} -> {}\n   vif_type  {} -> {}\n   lost {} of {} pings at {} ms, outage {} ms; the migration took {} ms (request to ACTIVE)",
        m.from_host,
        m.to_host,
        m.ip_before,
        m.ip_after,
        m.mac_before,
        m.mac_after,
        m.vif_type_before,
        m.vif_type_after,
        m.lost_pings,
        m.sent,
        m.interval_ms,
        m.outage_ms,
        m.migration_ms
    ));
    say("4. connectivity matrix again");
    let matrix_after = verify::run(c, Some("demo-net"), verify::PROBE_COUNT).await?;
    for l in verify::table(&matrix_after).lines() {
        say(&format!("   {l}"));
    }
    let expected_vif = [
        ("vm-ovs", "ovs"),
        ("vm-vrouter", "vrouter"),
        ("vm-sriov", "hw_veb"),
    ];
    let vifs_ok = expected_vif
        .iter()
        .all(|(n, t)| vms.iter().any(|v| v.name == *n && v.vif_type == *t));
    let ok = vifs_ok
        && matrix_before.ok
        && matrix_after.ok
        && m.ok()
        && matrix_after.pairs.iter().any(|p| p.from == "vm-migrate")
        && matrix_after.pairs.iter().any(|p| p.to == "vm-migrate");
    say(if ok { "ok" } else { "FAILED" });
    Ok(Report {
        ok,
        vms,
        matrix_before,
        migration,
        matrix_after,
    })
}
