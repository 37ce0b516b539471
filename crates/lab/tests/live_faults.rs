//! Faults and hostile clients against a running lab, each under a 10 ms
//! ping stream between VMs on different backends:
//!
//! * a gateway node dies (datapath and agent): the network's VLAN side and
//!   the routers it carried move to the other gateway within
//!   `agent_down_time` plus a compile, traffic resumes, and when the dead
//!   gateway boots again it takes its networks back without duplicates;
//! * an agent record is deleted (with its agent connected: nothing is lost;
//!   with its agent stopped: the node comes back whole when it registers);
//! * rogue southbound clients (no credential, another node's credential,
//!   the wrong role, an ack of a version never sent, a fake gateway through
//!   the report API) change nothing and cost the real node nothing;
//! * a node that refuses its state is `failed`, retried with backoff, and
//!   recovers when its state becomes acceptable;
//! * status tells the truth: a silent agent's node is not connected, ports
//!   without a guest after a lab restart are `DOWN`, router ports are
//!   `ACTIVE` on the gateway that runs them.

mod common;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use switchyard_lab::client::LabClient;
use switchyard_lab::client::migration::warm;
use switchyard_lab::live::failover::{
    self, SECOND_GATEWAY, converged, routed_network, router_host, tail_answered, vlan_gateway,
};
use switchyard_lab::live::{LiveLab, Options, PingReport};
use switchyard_lab::topology::{REFERENCE, Topology};
use switchyard_proto::{FromAgent, Role, ToAgent};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Agents die 3 s after their last heartbeat (heartbeats every second), so
/// failover shows in seconds rather than Neutron's default 75.
const DOWN_S: u64 = 3;

async fn lab(extra: &str) -> (LiveLab, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = Options::reference(dir.path().join("switchyard.db")).expect("reference");
    opts.topology = Topology::from_toml(&format!("{REFERENCE}\n{extra}")).expect("topology");
    opts.ml2.agent_down_time = DOWN_S;
    opts.heartbeat = Duration::from_secs(1);
    let live = LiveLab::start(opts).await.expect("lab");
    (live, dir)
}

async fn eventually(what: &str, secs: u64, mut f: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for: {what}");
}

async fn node(c: &LabClient, host: &str) -> Value {
    c.get(&format!("/switchyard/v1/nodes/{host}"))
        .await
        .expect("node")["node"]
        .clone()
}

struct Vm {
    name: String,
    ip: String,
    port: String,
}

async fn boot(c: &LabClient, name: &str, net: &str, host: &str) -> Vm {
    let s = c
        .boot(name, json!([{"uuid": net}]), host, Duration::from_secs(60))
        .await
        .expect("boot");
    let v = switchyard_lab::client::demo::vm(c, &s).await.expect("vm");
    let p = c
        .get(&format!(
            "/v2.0/ports?device_id={}",
            s["id"].as_str().unwrap_or_default()
        ))
        .await
        .expect("ports");
    Vm {
        name: v.name,
        ip: v.ip,
        port: p["ports"][0]["id"].as_str().unwrap_or_default().to_string(),
    }
}

fn stream(live: &LiveLab, from: &str, to: &str) {
    failover::stream(live, from, to).expect("stream");
}

fn stop(live: &LiveLab, from: &str) -> PingReport {
    failover::stop(live, from).expect("a stream ran")
}

const HOSTS: [&str; 5] = [
    "compute-1",
    "compute-2",
    "compute-3",
    "compute-4",
    "gateway",
];

/// The reference lab, converged, with a network and a VM on the OVS node
/// that reaches a VM on a vRouter node.
async fn two_vms(cidr: &str) -> (LiveLab, tempfile::TempDir, LabClient, Vm, Vm) {
    let (live, dir) = lab("").await;
    let c = LabClient::new(&live.url());
    eventually("every node converges", 30, async || {
        converged(&c, &HOSTS).await.expect("nodes")
    })
    .await;
    let net = common::network(&c, "net", cidr).await;
    let ovs = boot(&c, "vm-ovs", &net, "compute-1").await;
    let vr = boot(&c, "vm-vr", &net, "compute-2").await;
    warm(&c, &ovs.name, &vr.ip).await.expect("warm");
    (live, dir, c, ovs, vr)
}

async fn port_status(c: &LabClient, port: &str) -> String {
    c.get(&format!("/v2.0/ports/{port}")).await.expect("port")["port"]["status"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

const HOSTS2: [&str; 6] = [
    "compute-1",
    "compute-2",
    "compute-3",
    "compute-4",
    "gateway",
    "gateway-2",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_gateway_hands_its_networks_and_routers_to_the_live_one() {
    let (mut live, _dir) = lab(SECOND_GATEWAY).await;
    let c = LabClient::new(&live.url());
    eventually("every node converges", 30, async || {
        converged(&c, &HOSTS2).await.expect("nodes")
    })
    .await;
    let (net, router, vni) = routed_network(&c, "gw-net", "10.70.0.0/24")
        .await
        .expect("network");
    let ovs = boot(&c, "vm-ovs", &net, "compute-1").await;
    let vr = boot(&c, "vm-vr", &net, "compute-2").await;
    let out = boot(&c, "vm-out", &net, "compute-4").await;
    warm(&c, &ovs.name, &vr.ip)
        .await
        .expect("warm ovs -> vrouter");
    warm(&c, &out.name, "198.51.100.1")
        .await
        .expect("warm internet");

    // Router ports run on the router's gateway: ACTIVE.
    let rports = c
        .get(&format!("/v2.0/ports?device_id={router}"))
        .await
        .expect("router ports");
    for p in rports["ports"].as_array().expect("list") {
        let id = p["id"].as_str().expect("id");
        eventually("router ports ACTIVE", 10, async || {
            port_status(&c, id).await == "ACTIVE"
        })
        .await;
    }

    let bridging = vlan_gateway(&c, vni)
        .await
        .expect("nodes")
        .expect("one gateway bridges the VLAN");
    let other = if bridging == "gateway" {
        "gateway-2"
    } else {
        "gateway"
    };
    let routed_on = router_host(&c, &router).await.expect("router");
    eprintln!("VLAN side on {bridging}, router on {routed_on}");

    // The bridging gateway dies under both streams.
    stream(&live, &ovs.name, &vr.ip);
    stream(&live, &out.name, "198.51.100.1");
    tokio::time::sleep(Duration::from_millis(500)).await;
    live.crash_node(&bridging).await.expect("crash");
    eventually("the VLAN side moves to the live gateway", 30, async || {
        vlan_gateway(&c, vni).await.expect("nodes").as_deref() == Some(other)
    })
    .await;
    if routed_on == bridging {
        eventually("the router moves to the live gateway", 30, async || {
            router_host(&c, &router).await.expect("router") == other
        })
        .await;
    }
    // Give traffic time to show it resumed.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let l2 = stop(&live, &ovs.name);
    let l3 = stop(&live, &out.name);
    eprintln!(
        "gateway {bridging} died: OVS->vRouter lost {} of {} (outage {} ms); internet lost {} of {} (outage {} ms)",
        l2.lost.len(),
        l2.sent,
        l2.outage_ms,
        l3.lost.len(),
        l3.sent,
        l3.outage_ms
    );
    assert!(tail_answered(&l2, 100), "OVS <-> vRouter resumed: {l2:?}");
    assert!(tail_answered(&l3, 100), "the internet path resumed: {l3:?}");
    assert_eq!(l2.duplicates, 0);
    let n = node(&c, &bridging).await;
    assert_eq!(
        (n["state"].as_str(), n["connected"].as_bool()),
        (Some("down"), Some(false)),
        "{n}"
    );
    // The router's ports follow it.
    for p in rports["ports"].as_array().expect("list") {
        let id = p["id"].as_str().expect("id");
        eventually("router ports ACTIVE on the live gateway", 10, async || {
            port_status(&c, id).await == "ACTIVE"
        })
        .await;
    }

    // It boots again: the network goes back to it (rendezvous hashing), the
    // router stays where it was moved; no duplicate frame on the way.
    stream(&live, &ovs.name, &vr.ip);
    live.restart_node(&bridging).expect("restart");
    eventually(
        "the restarted gateway bridges its network again",
        30,
        async || {
            vlan_gateway(&c, vni).await.expect("nodes").as_deref() == Some(bridging.as_str())
                && converged(&c, &HOSTS2).await.expect("nodes")
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let back = stop(&live, &ovs.name);
    eprintln!(
        "gateway {bridging} back: OVS->vRouter lost {} of {} (outage {} ms), {} duplicates",
        back.lost.len(),
        back.sent,
        back.outage_ms,
        back.duplicates
    );
    assert!(tail_answered(&back, 100), "{back:?}");
    assert_eq!(back.duplicates, 0, "one gateway bridges at a time");
    assert_eq!(
        router_host(&c, &router).await.expect("router"),
        other,
        "no flapping back"
    );

    // The router's gateway (now the other one) dies: the router moves back.
    stream(&live, &out.name, "198.51.100.1");
    tokio::time::sleep(Duration::from_millis(500)).await;
    live.crash_node(other).await.expect("crash");
    eventually("the router moves off the dead gateway", 30, async || {
        router_host(&c, &router).await.expect("router") == bridging
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let l3 = stop(&live, &out.name);
    eprintln!(
        "gateway {other} (router) died: internet lost {} of {} (outage {} ms)",
        l3.lost.len(),
        l3.sent,
        l3.outage_ms
    );
    assert!(tail_answered(&l3, 100), "{l3:?}");
    live.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_agent_record_loses_nothing_and_brings_everything_back() {
    let (mut live, _dir, c, ovs, vr) = two_vms("10.71.0.0/24").await;
    let hosts = HOSTS;
    let gateway_items = node(&c, "gateway").await["items"].clone();
    let agent_id = |c: LabClient| async move {
        c.get("/v2.0/agents?host=compute-2").await.expect("agents")["agents"][0]["id"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };

    // Its agent is connected: the record is back at once (as the agent's
    // next report would bring it), and the node's state is never torn down.
    stream(&live, &ovs.name, &vr.ip);
    let before = agent_id(c.clone()).await;
    let r = c
        .call(
            reqwest::Method::DELETE,
            &format!("/v2.0/agents/{before}"),
            None,
        )
        .await
        .expect("delete");
    assert_eq!(r.0, 204);
    let after = agent_id(c.clone()).await;
    assert!(
        !after.is_empty() && after != before,
        "re-registered: {after}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let r = stop(&live, &ovs.name);
    eprintln!(
        "record deleted, agent connected: lost {} of {}",
        r.lost.len(),
        r.sent
    );
    assert!(r.lost.is_empty(), "{r:?}");
    assert_eq!(node(&c, "gateway").await["items"], gateway_items);

    // Its agent is stopped, then the record is deleted: the node's state
    // goes; the agent comes back and registers: everything is back, the same
    // as before, and traffic flows again.
    stream(&live, &ovs.name, &vr.ip);
    live.stop_agent("compute-2").await.expect("stop agent");
    let id = agent_id(c.clone()).await;
    let r = c
        .call(reqwest::Method::DELETE, &format!("/v2.0/agents/{id}"), None)
        .await
        .expect("delete");
    assert_eq!(r.0, 204);
    eventually("the gateway drops compute-2's MACs", 10, async || {
        node(&c, "gateway").await["items"] != gateway_items
    })
    .await;
    live.start_agent("compute-2").expect("start agent");
    eventually("everything is back", 30, async || {
        node(&c, "gateway").await["items"] == gateway_items
            && converged(&c, &hosts).await.expect("nodes")
    })
    .await;
    eventually("the port is ACTIVE again", 10, async || {
        port_status(&c, &vr.port).await == "ACTIVE"
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let r = stop(&live, &ovs.name);
    eprintln!(
        "record deleted, agent stopped then back: lost {} of {} (outage {} ms)",
        r.lost.len(),
        r.sent,
        r.outage_ms
    );
    assert!(tail_answered(&r, 100), "{r:?}");
    live.shutdown().await;
}

/// A raw southbound client.
async fn connect(
    url: &str,
    token: Option<&str>,
) -> Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    tokio_tungstenite::tungstenite::Error,
> {
    let mut req = format!(
        "{}/switchyard/v1/southbound",
        url.replacen("http://", "ws://", 1)
    )
    .into_client_request()?;
    if let Some(t) = token {
        req.headers_mut().insert(
            "authorization",
            format!("Bearer {t}").parse().expect("header"),
        );
    }
    tokio_tungstenite::connect_async(req)
        .await
        .map(|(ws, _)| ws)
}

async fn say(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    m: &FromAgent,
) {
    ws.send(Message::text(serde_json::to_string(m).expect("json")))
        .await
        .expect("send");
}

/// The next controller message, skipping nothing; None when closed.
async fn hear(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> Option<ToAgent> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return serde_json::from_str(&t).ok(),
            Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) | Err(_) => return None,
            Ok(Some(Ok(_))) => continue,
        }
    }
}

fn hello(host: &str, role: Role) -> FromAgent {
    FromAgent::Hello {
        host: host.to_string(),
        role,
        configurations: serde_json::Map::new(),
        version: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rogue_southbound_clients_change_nothing() {
    let (live, _dir, c, ovs, vr) = two_vms("10.72.0.0/24").await;
    let hosts = HOSTS;
    let agents_before = c.get("/v2.0/agents").await.expect("agents")["agents"]
        .as_array()
        .map(Vec::len);
    stream(&live, &ovs.name, &vr.ip);
    let url = live.url();

    // No credential, or a made-up one: refused before any session.
    for token in [None, Some("0".repeat(64))] {
        match connect(&url, token.as_deref()).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 401),
            other => panic!("expected a 401, got {:?}", other.map(|_| "a session")),
        }
    }
    // compute-1's credential saying it is compute-2: refused, saying why.
    let t1 = live.node_token("compute-1").expect("token");
    let mut ws = connect(&url, Some(&t1)).await.expect("upgrade");
    say(&mut ws, &hello("compute-2", Role::Vrouter)).await;
    match hear(&mut ws).await {
        Some(ToAgent::Refused { reason }) => {
            assert!(
                reason.contains("compute-1") && reason.contains("compute-2"),
                "{reason}"
            )
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(hear(&mut ws).await.is_none(), "and the session ends");
    // compute-2's credential with the wrong role: refused with the fix.
    let t2 = live.node_token("compute-2").expect("token");
    let mut ws = connect(&url, Some(&t2)).await.expect("upgrade");
    say(&mut ws, &hello("compute-2", Role::Ovs)).await;
    match hear(&mut ws).await {
        Some(ToAgent::Refused { reason }) => {
            assert!(reason.contains("--role vrouter"), "{reason}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // A session with compute-2's own credential (and configuration) that
    // acks a version never sent is closed; the real agent's session comes
    // back and the node converges.
    let mut ws = connect(&url, Some(&t2)).await.expect("upgrade");
    let mut conf = serde_json::Map::new();
    conf.insert("tunneling_ip".into(), json!("192.0.2.12"));
    say(
        &mut ws,
        &FromAgent::Hello {
            host: "compute-2".into(),
            role: Role::Vrouter,
            configurations: conf,
            version: 0,
        },
    )
    .await;
    assert!(matches!(
        hear(&mut ws).await,
        Some(ToAgent::Snapshot { .. })
    ));
    say(
        &mut ws,
        &FromAgent::Ack {
            version: 1_000_000_000_000_000,
        },
    )
    .await;
    match hear(&mut ws).await {
        Some(ToAgent::Refused { reason }) => assert!(
            reason.contains("never") || reason.contains("latest version sent"),
            "{reason}"
        ),
        other => panic!("expected a refusal, got {other:?}"),
    }
    eventually(
        "compute-2 converges again with its real agent",
        30,
        async || converged(&c, &hosts).await.expect("nodes"),
    )
    .await;
    // The report API: no credential 401, a fake gateway through a compute
    // node's credential 403; no agent was added.
    let r = c
        .call(
            reqwest::Method::POST,
            "/switchyard/v1/agents/report",
            Some(
                &json!({"agent": {"host": "a-gw", "agent_type": "Gateway agent",
                "configurations": {"tunneling_ip": "192.0.2.99"}}}),
            ),
        )
        .await
        .expect("report");
    assert_eq!(r.0, 401);
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{url}/switchyard/v1/agents/report"))
        .bearer_auth(&t1)
        .json(
            &json!({"agent": {"host": "a-gw", "agent_type": "Gateway agent",
            "configurations": {"tunneling_ip": "192.0.2.99"}}}),
        )
        .send()
        .await
        .expect("report");
    assert_eq!(r.status().as_u16(), 403);
    assert_eq!(
        c.get("/v2.0/agents").await.expect("agents")["agents"]
            .as_array()
            .map(Vec::len),
        agents_before
    );
    let r = stop(&live, &ovs.name);
    eprintln!("rogue clients: lost {} of {}", r.lost.len(), r.sent);
    assert!(r.lost.is_empty(), "the real nodes lost nothing: {r:?}");
    live.shutdown().await;
}

const SMALL_NIC: &str = r#"
[[nodes]]
name = "compute-6"
role = "sriov"
trunk_port = 1
physnet = "physnet1"
vfs = 1

[[links]]
a = "compute-6:1"
b = "fabric:6"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_refuses_its_state_is_failed_and_backs_off() {
    let (live, _dir) = lab(SMALL_NIC).await;
    let c = LabClient::new(&live.url());
    eventually("compute-6 converges", 30, async || {
        converged(&c, &["compute-6"]).await.expect("nodes")
    })
    .await;
    let net = common::network(&c, "vf-net", "10.73.0.0/24").await;
    let port = |c: LabClient, net: String| async move {
        c.post(
            "/v2.0/ports",
            &json!({"port": {"network_id": net, "binding:host_id": "compute-6",
                "binding:vnic_type": "direct", "device_owner": "compute:nova"}}),
        )
        .await
        .expect("port")["port"]["id"]
            .as_str()
            .expect("id")
            .to_string()
    };
    port(c.clone(), net.clone()).await;
    // A second VF on a NIC with one: the node cannot run its state.
    let second = port(c.clone(), net.clone()).await;
    eventually("compute-6 is failed with the reason", 10, async || {
        let n = node(&c, "compute-6").await;
        n["state"] == "failed"
            && n["failed"]["reason"]
                .as_str()
                .is_some_and(|r| r.contains("no free port"))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let n = node(&c, "compute-6").await;
    let attempts = n["failed"]["attempts"].as_u64().expect("attempts");
    eprintln!(
        "after ~4 s failed: {attempts} snapshots refused, {}",
        n["failed"]
    );
    // 1 s, 2 s, 4 s… apart: a handful, not a storm.
    assert!((1..=4).contains(&attempts), "{n}");
    assert_eq!(n["converged"], false);
    // The state becomes acceptable: the next retry takes it.
    c.delete(&format!("/v2.0/ports/{second}"))
        .await
        .expect("delete");
    eventually("compute-6 recovers", 70, async || {
        let n = node(&c, "compute-6").await;
        n["state"] == "converged" && n["failed"].is_null()
    })
    .await;
    live.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_tells_the_truth() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("switchyard.db");
    let options = || {
        let mut o = Options::reference(db.clone()).expect("reference");
        o.ml2.agent_down_time = DOWN_S;
        o.heartbeat = Duration::from_secs(1);
        o
    };
    let live = LiveLab::start(options()).await.expect("lab");
    let c = LabClient::new(&live.url());
    let hosts = [
        "compute-1",
        "compute-2",
        "compute-3",
        "compute-4",
        "gateway",
    ];
    eventually("every node converges", 30, async || {
        converged(&c, &hosts).await.expect("nodes")
    })
    .await;
    let net = common::network(&c, "truth", "10.74.0.0/24").await;
    let vm = boot(&c, "vm", &net, "compute-2").await;
    assert_eq!(port_status(&c, &vm.port).await, "ACTIVE");
    // A port bound to a host with no guest behind it stays DOWN.
    let bare = c
        .post(
            "/v2.0/ports",
            &json!({"port": {"network_id": net, "binding:host_id": "compute-4",
                "device_owner": "compute:nova"}}),
        )
        .await
        .expect("port")["port"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(port_status(&c, &bare).await, "DOWN");

    // An agent that stops talking but keeps its socket (SIGSTOP): after
    // agent_down_time it is not alive, its session is closed, its node is
    // neither connected nor converged.
    let token = live
        .app()
        .expect("controller")
        .shared
        .credentials
        .enroll("compute-9", Role::Vrouter);
    let mut ws = connect(&live.url(), Some(&token)).await.expect("upgrade");
    let mut conf = serde_json::Map::new();
    conf.insert("tunneling_ip".into(), json!("192.0.2.19"));
    say(
        &mut ws,
        &FromAgent::Hello {
            host: "compute-9".into(),
            role: Role::Vrouter,
            configurations: conf,
            version: 0,
        },
    )
    .await;
    match hear(&mut ws).await {
        Some(ToAgent::Snapshot { version, .. }) => say(&mut ws, &FromAgent::Ack { version }).await,
        other => panic!("expected a snapshot, got {other:?}"),
    }
    eventually("compute-9 converges", 10, async || {
        converged(&c, &["compute-9"]).await.expect("nodes")
    })
    .await;
    // Silent from now on, socket open.
    eventually("the silent node is down and disconnected", 20, async || {
        let n = node(&c, "compute-9").await;
        n["state"] == "down" && n["connected"] == false && n["converged"] == false
    })
    .await;
    let mut closed = false;
    for _ in 0..100 {
        if hear(&mut ws).await.is_none() {
            closed = true;
            break;
        }
    }
    assert!(closed, "its session was closed");
    let a = c.get("/v2.0/agents?host=compute-9").await.expect("agents");
    assert_eq!(a["agents"][0]["alive"], false);

    // The lab restarts (its guests are gone): the ports they had are DOWN
    // once the agents have reported what they run.
    live.shutdown().await;
    let live = LiveLab::start(options()).await.expect("lab again");
    let c = LabClient::new(&live.url());
    eventually("every node converges after the restart", 30, async || {
        converged(&c, &hosts).await.expect("nodes")
    })
    .await;
    eventually("a port without its guest is DOWN", 10, async || {
        port_status(&c, &vm.port).await == "DOWN"
    })
    .await;
    assert_eq!(port_status(&c, &bare).await, "DOWN");
    live.shutdown().await;
}
