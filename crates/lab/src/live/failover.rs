//! Failover in a running lab (`switchyard bench failover`, and the helpers
//! `crates/lab/tests/live_faults.rs` shares): a topology with a second
//! gateway, the questions an operator asks of it over the public APIs (which
//! gateway bridges a network, where a router is, whether the nodes are in
//! sync), and the measured scenario: the gateway bridging a network dies
//! under ping streams and boots again, and the controller restarts.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::client::migration::warm;
use crate::client::{ClientError, LabClient};
use crate::live::{LiveError, LiveLab, Options, PingReport};
use crate::topology::{REFERENCE, Topology};

/// A second gateway (`gateway-2`, VTEP 192.0.2.2, external 203.0.113.3)
/// on the fabric, with its own upstream router to the same internet.
pub const SECOND_GATEWAY: &str = r#"
[[nodes]]
name = "gateway-2"
role = "gateway"
underlay = "192.0.2.2"
trunk_port = 1
physnet = "physnet1"
external_port = 2
external_ip = "203.0.113.3"
external_prefix_len = 24
next_hop = "203.0.113.1"

[[nodes]]
name = "internet-2"
role = "internet"
external_port = 1
external_ip = "203.0.113.1"
external_prefix_len = 24
hosts = "198.51.100.0/24"

[[links]]
a = "gateway-2:1"
b = "fabric:11"

[[links]]
a = "gateway-2:2"
b = "internet-2:1"
"#;

/// The reference lab plus [`SECOND_GATEWAY`].
pub fn two_gateways() -> Result<Topology, LiveError> {
    Topology::from_toml(&format!("{REFERENCE}\n{SECOND_GATEWAY}"))
        .map_err(|e| LiveError::Topology(e.to_string()))
}

/// The gateway whose desired state bridges network `vni` to its VLAN.
pub async fn vlan_gateway(c: &LabClient, vni: u64) -> Result<Option<String>, ClientError> {
    let nodes = c.get("/switchyard/v1/nodes").await?;
    for n in nodes["nodes"].as_array().into_iter().flatten() {
        let host = n["host"].as_str().unwrap_or_default();
        let node = c.get(&format!("/switchyard/v1/nodes/{host}")).await?;
        if let Some(Value::Object(bd)) = node["node"]["items"].get(format!("bd/{vni}"))
            && bd
                .get("vlan")
                .and_then(Value::as_u64)
                .is_some_and(|v| v != 0)
        {
            return Ok(Some(host.to_string()));
        }
    }
    Ok(None)
}

/// The gateway node router `id` is placed on (its L3 agent's host).
pub async fn router_host(c: &LabClient, id: &str) -> Result<String, ClientError> {
    let a = c.get(&format!("/v2.0/routers/{id}/l3-agents")).await?;
    Ok(a["agents"][0]["host"]
        .as_str()
        .unwrap_or_default()
        .to_string())
}

/// Whether every node in `hosts` is connected and has applied its state.
pub async fn converged(c: &LabClient, hosts: &[&str]) -> Result<bool, ClientError> {
    let n = c.get("/switchyard/v1/nodes").await?;
    let nodes = n["nodes"].as_array().cloned().unwrap_or_default();
    Ok(hosts.iter().all(|h| {
        nodes
            .iter()
            .any(|x| x["host"] == *h && x["state"] == "converged")
    }))
}

/// A network with a subnet and a router to `public`: (network, router, VNI).
pub async fn routed_network(
    c: &LabClient,
    name: &str,
    cidr: &str,
) -> Result<(String, String, u64), ClientError> {
    let n = c
        .post("/v2.0/networks", &json!({"network": {"name": name}}))
        .await?;
    let net = n["network"]["id"].as_str().unwrap_or_default().to_string();
    let vni = n["network"]["provider:segmentation_id"]
        .as_u64()
        .unwrap_or_default();
    let s = c
        .post(
            "/v2.0/subnets",
            &json!({"subnet": {"network_id": net, "ip_version": 4, "cidr": cidr}}),
        )
        .await?;
    let sub = s["subnet"]["id"].as_str().unwrap_or_default().to_string();
    let (_, router) = c.router_to_public(&format!("{name}-router"), &sub).await?;
    Ok((net, router, vni))
}

/// Whether the last `n` requests of a stream were all answered.
pub fn tail_answered(r: &PingReport, n: usize) -> bool {
    let first = r.sent.saturating_sub(n);
    r.sent > n && !r.lost.iter().any(|s| usize::from(*s) >= first)
}

/// Polls `f` every 100 ms until it holds or `limit` passes.
pub async fn until<F: AsyncFnMut() -> Result<bool, ClientError>>(
    what: &str,
    limit: Duration,
    mut f: F,
) -> Result<(), ClientError> {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if f().await? {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(ClientError::Scenario(format!(
        "timed out waiting for {what}"
    )))
}

/// One measured round of the failover benchmark.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Round {
    /// The gateway that died (the one bridging the network's VLAN).
    pub gateway: String,
    /// OVS VM → vRouter VM while it died: outage and lost pings (10 ms).
    pub l2_outage_ms: u64,
    pub l2_lost: usize,
    /// A vRouter VM → the internet through the router (on the dead gateway
    /// or not: 0 when the router was elsewhere).
    pub internet_outage_ms: u64,
    pub internet_lost: usize,
    /// While the gateway booted again and took its network back.
    pub back_lost: usize,
    pub back_duplicates: u64,
    /// Controller restart: from the new controller's start to every node
    /// converged, and the pings lost meanwhile (the data plane keeps going).
    pub restart_converge_ms: u64,
    pub restart_lost: usize,
}

/// Starts a 10 ms ping stream from guest `from` to `to`.
pub fn stream(live: &LiveLab, from: &str, to: &str) -> Result<(), ClientError> {
    let to = to
        .parse()
        .map_err(|_| ClientError::Scenario(format!("bad address {to}")))?;
    live.hypervisor()
        .start_ping(from, to, smoltcp::time::Duration::from_millis(10), None)
        .map_err(|e| ClientError::Scenario(e.to_string()))
}

/// Stops guest `from`'s stream and reports it.
pub fn stop(live: &LiveLab, from: &str) -> Result<PingReport, ClientError> {
    live.hypervisor()
        .stop_ping(from)
        .map_err(|e| ClientError::Scenario(e.to_string()))?
        .ok_or_else(|| ClientError::Scenario(format!("no stream ran from {from}")))
}

const HOSTS: [&str; 6] = [
    "compute-1",
    "compute-2",
    "compute-3",
    "compute-4",
    "gateway",
    "gateway-2",
];

/// `runs` rounds on a fresh two-gateway lab whose agents die
/// `agent_down_time` s after their last heartbeat (heartbeats every second).
pub async fn bench(
    db: std::path::PathBuf,
    runs: usize,
    agent_down_time: u64,
    say: &(dyn Fn(&str) + Sync),
) -> Result<Vec<Round>, ClientError> {
    let scenario = |e: LiveError| ClientError::Scenario(e.to_string());
    let mut opts = Options::reference(db).map_err(scenario)?;
    opts.topology = two_gateways().map_err(scenario)?;
    opts.ml2.agent_down_time = agent_down_time;
    opts.heartbeat = Duration::from_secs(1);
    let mut live = LiveLab::start(opts).await.map_err(scenario)?;
    let result = rounds(&mut live, runs, agent_down_time, say).await;
    live.shutdown().await;
    result
}

async fn rounds(
    live: &mut LiveLab,
    runs: usize,
    agent_down_time: u64,
    say: &(dyn Fn(&str) + Sync),
) -> Result<Vec<Round>, ClientError> {
    let scenario = |e: LiveError| ClientError::Scenario(e.to_string());
    let c = LabClient::new(&live.url());
    let limit = Duration::from_secs(60);
    until("every node to converge", limit, async || {
        converged(&c, &HOSTS).await
    })
    .await?;
    let (net, _router, vni) = routed_network(&c, "failover", "10.78.0.0/24").await?;
    let ip = |s: &Value| {
        s["addresses"]
            .as_object()
            .and_then(|m| m.values().next())
            .and_then(|a| a[0]["addr"].as_str())
            .unwrap_or_default()
            .to_string()
    };
    c.boot("fo-ovs", json!([{"uuid": net}]), "compute-1", limit)
        .await?;
    let vr = c
        .boot("fo-vr", json!([{"uuid": net}]), "compute-2", limit)
        .await?;
    c.boot("fo-out", json!([{"uuid": net}]), "compute-4", limit)
        .await?;
    let vr_ip = ip(&vr);
    let internet = "198.51.100.1";
    let down = Duration::from_secs(agent_down_time);
    let mut out = Vec::with_capacity(runs);
    for i in 0..runs {
        warm(&c, "fo-ovs", &vr_ip).await?;
        warm(&c, "fo-out", internet).await?;
        let gw = vlan_gateway(&c, vni)
            .await?
            .ok_or_else(|| ClientError::Scenario("no gateway bridges the network".into()))?;
        let other = if gw == "gateway" {
            "gateway-2"
        } else {
            "gateway"
        };
        // The bridging gateway dies.
        stream(live, "fo-ovs", &vr_ip)?;
        stream(live, "fo-out", internet)?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        live.crash_node(&gw).await.map_err(scenario)?;
        until("the VLAN side to move", down + limit, async || {
            Ok(vlan_gateway(&c, vni).await?.as_deref() == Some(other))
        })
        .await?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let l2 = stop(live, "fo-ovs")?;
        let l3 = stop(live, "fo-out")?;
        if !tail_answered(&l2, 100) || !tail_answered(&l3, 100) {
            return Err(ClientError::Scenario(format!(
                "run {}: traffic did not resume after {gw} died: {l2:?} {l3:?}",
                i + 1
            )));
        }
        // It boots again and takes its network back.
        stream(live, "fo-ovs", &vr_ip)?;
        live.restart_node(&gw).map_err(scenario)?;
        until("the gateway to take its network back", limit, async || {
            Ok(vlan_gateway(&c, vni).await?.as_deref() == Some(gw.as_str())
                && converged(&c, &HOSTS).await?)
        })
        .await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let back = stop(live, "fo-ovs")?;
        // The controller restarts under the stream.
        warm(&c, "fo-ovs", &vr_ip).await?;
        stream(live, "fo-ovs", &vr_ip)?;
        live.stop_controller().await;
        let t = Instant::now();
        live.start_controller().await.map_err(scenario)?;
        until(
            "every node to converge after the restart",
            limit,
            async || Ok(converged(&c, &HOSTS).await.unwrap_or(false)),
        )
        .await?;
        let restart_converge_ms = u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let restart = stop(live, "fo-ovs")?;
        let r = Round {
            gateway: gw.clone(),
            l2_outage_ms: l2.outage_ms,
            l2_lost: l2.lost.len(),
            internet_outage_ms: l3.outage_ms,
            internet_lost: l3.lost.len(),
            back_lost: back.lost.len(),
            back_duplicates: back.duplicates,
            restart_converge_ms,
            restart_lost: restart.lost.len(),
        };
        say(&format!(
            "run {:>2}: {} died: OVS->vRouter outage {} ms ({} lost), internet outage {} ms ({} lost); back: {} lost, {} duplicates; controller restart: converged in {} ms, {} lost",
            i + 1,
            r.gateway,
            r.l2_outage_ms,
            r.l2_lost,
            r.internet_outage_ms,
            r.internet_lost,
            r.back_lost,
            r.back_duplicates,
            r.restart_converge_ms,
            r.restart_lost
        ));
        out.push(r);
    }
    Ok(out)
}
