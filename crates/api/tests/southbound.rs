//! The southbound over a real WebSocket: an agent registers with its hello,
//! receives its snapshot and the deltas of API changes, reports port status,
//! keeps its state while the controller is away and resyncs when it returns.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Server, id};
use serde_json::json;
use switchyard_agent::client::{self, Event, Options};
use switchyard_agent::{Dataplane, NodeAgent, PortRange};
use switchyard_dataplane::frames::mac_serde::parse_mac;
use switchyard_dataplane::vrouter::Vrouter;
use switchyard_proto::{FromAgent, Role};

struct Running {
    events: tokio::sync::mpsc::Sender<Event>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

fn start_agent(s: &Server, agent: Arc<Mutex<NodeAgent>>) -> Running {
    let base = &s.base;
    let (host, role) = {
        let a = agent.lock().expect("agent");
        (a.host.clone(), a.role)
    };
    let token = s.token(&host, role);
    let url = format!(
        "{}/switchyard/v1/southbound",
        base.replacen("http://", "ws://", 1)
    );
    let (events, rx) = tokio::sync::mpsc::channel(16);
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let mut conf = serde_json::Map::new();
    conf.insert("tunneling_ip".into(), json!("192.0.2.12"));
    let opts = Options {
        url,
        configurations: conf,
        heartbeat: Duration::from_millis(500),
        token,
        applied: None,
    };
    let task = tokio::spawn(client::run(agent.clone(), opts, rx, stop_rx));
    Running { events, stop, task }
}

/// compute-2's vRouter agent, in this process.
fn compute_2() -> Arc<Mutex<NodeAgent>> {
    let vr = Vrouter::new(parse_mac("02:00:00:00:00:02").expect("mac"));
    Arc::new(Mutex::new(NodeAgent::new(
        "compute-2",
        Role::Vrouter,
        Dataplane::Vrouter(vr),
        PortRange {
            first: 1,
            count: 64,
        },
    )))
}

async fn port_status_now(s: &Server, pid: &str) -> String {
    s.get(&format!("/v2.0/ports/{pid}")).await.body["port"]["status"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_follows_the_api_and_survives_a_controller_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    let agent = compute_2();
    let run = start_agent(&s, agent.clone());

    // The hello registered the agent.
    for _ in 0..100 {
        let r = s.get("/v2.0/agents?host=compute-2").await;
        if r.body["agents"].as_array().is_some_and(|a| a.len() == 1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let agents = s.get("/v2.0/agents?host=compute-2").await.body["agents"].clone();
    assert_eq!(agents[0]["agent_type"], "vRouter agent");
    assert_eq!(agents[0]["configurations"]["tunneling_ip"], "192.0.2.12");

    // An API change reaches the node as a delta.
    let n = s.network("demo-net").await;
    s.subnet(&n, "50.50.50.0/24").await;
    let p = s
        .port(
            &n,
            json!({"binding:host_id": "compute-2", "device_owner": "compute:nova"}),
        )
        .await;
    assert_eq!(p["binding:vif_type"], "vrouter");
    let pid = id(&p);
    let key = format!("iface/{pid}");
    eventually("the interface reaches the agent", || {
        agent.lock().expect("agent").items().contains_key(&key)
    })
    .await;
    assert!(agent.lock().expect("agent").port_of(&pid).is_some());

    // The controller sees the node converge.
    let mut node = serde_json::Value::Null;
    for _ in 0..100 {
        node = s.get("/switchyard/v1/nodes/compute-2").await.body["node"].clone();
        if node["converged"] == true {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(node["converged"], true, "{node}");
    assert_eq!(node["connected"], true);
    assert!(node["items"].get(&key).is_some(), "{node}");
    assert_eq!(s.get("/switchyard/v1/nodes/compute-9").await.status, 404);

    // Once the node has applied the version with the interface and the
    // VM's device is plugged, the agent reports it up and the port goes ACTIVE.
    assert_eq!(port_status_now(&s, &pid).await, "DOWN", "no device yet");
    agent.lock().expect("agent").set_device(&pid, true);
    run.events.send(Event::Changed).await.expect("event");
    let port_status = |s: &Server, pid: String| {
        let url = format!("{}/v2.0/ports/{pid}", s.base);
        let http = s.http.clone();
        async move {
            let v: serde_json::Value = http
                .get(url)
                .send()
                .await
                .expect("get")
                .json()
                .await
                .expect("json");
            v["port"]["status"].as_str().unwrap_or_default().to_string()
        }
    };
    let mut status = String::new();
    for _ in 0..100 {
        status = port_status(&s, pid.clone()).await;
        if status == "ACTIVE" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, "ACTIVE");
    // A device-down report from the agent takes it DOWN.
    run.events
        .send(Event::Send(FromAgent::PortStatus {
            port_id: pid.clone(),
            up: false,
        }))
        .await
        .expect("event");
    for _ in 0..100 {
        status = port_status(&s, pid.clone()).await;
        if status == "DOWN" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, "DOWN");

    // The controller goes away: the node keeps its state (headless).
    let addr = s.base.trim_start_matches("http://").to_string();
    let clock = s.stop().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let items_before = agent.lock().expect("agent").items().clone();
    assert!(items_before.contains_key(&key));
    let port_before = agent.lock().expect("agent").port_of(&pid);

    // It comes back on the same address and database; the agent reconnects and
    // resyncs to the same state, keeping the interface on its port.
    let s = Server::start_on(dir.path(), Default::default(), clock, &addr).await;
    let mut node = serde_json::Value::Null;
    for _ in 0..200 {
        node = s.get("/switchyard/v1/nodes/compute-2").await.body["node"].clone();
        if node["connected"] == true && node["converged"] == true {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        (node["connected"].clone(), node["converged"].clone()),
        (json!(true), json!(true)),
        "{node}"
    );
    assert_eq!(agent.lock().expect("agent").items(), &items_before);
    assert_eq!(agent.lock().expect("agent").port_of(&pid), port_before);

    // And it follows changes again.
    let q = s
        .port(
            &n,
            json!({"binding:host_id": "compute-2", "device_owner": "compute:nova"}),
        )
        .await;
    let qkey = format!("iface/{}", id(&q));
    eventually("a new interface after the restart", || {
        agent.lock().expect("agent").items().contains_key(&qkey)
    })
    .await;

    let _ = run.stop.send(true);
    let _ = run.task.await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn southbound_heartbeats_drive_liveness_and_binding() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    let agent = compute_2();
    let run = start_agent(&s, agent);
    let alive = |s: &Server| {
        let url = format!("{}/v2.0/agents?host=compute-2", s.base);
        let http = s.http.clone();
        async move {
            let v: serde_json::Value = http
                .get(url)
                .send()
                .await
                .expect("get")
                .json()
                .await
                .expect("json");
            v["agents"][0]["alive"].clone()
        }
    };
    let mut a = serde_json::Value::Null;
    for _ in 0..100 {
        a = alive(&s).await;
        if a == true {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(a, json!(true));
    let n = s.network("n").await;
    s.subnet(&n, "10.0.0.0/24").await;

    // The agent is stopped: no more heartbeats; 76 s later it is dead and
    // nothing binds to its host.
    let _ = run.stop.send(true);
    let _ = run.task.await;
    s.clock.advance(76);
    assert_eq!(alive(&s).await, json!(false));
    let p = s
        .port(
            &n,
            json!({"binding:host_id": "compute-2", "device_owner": "compute:nova"}),
        )
        .await;
    assert_eq!(p["binding:vif_type"], "binding_failed");

    // It comes back: its hello is a heartbeat, and the failed binding is retried
    // on the next update of the port.
    let agent = compute_2();
    let run = start_agent(&s, agent.clone());
    for _ in 0..100 {
        a = alive(&s).await;
        if a == true {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(a, json!(true));
    let r = s
        .put(
            &format!("/v2.0/ports/{}", id(&p)),
            json!({"port": {"name": "retry"}}),
        )
        .await;
    assert_eq!(r.body["port"]["binding:vif_type"], "vrouter");
    let key = format!("iface/{}", id(&p));
    eventually("the rebound port reaches the agent", || {
        agent.lock().expect("agent").items().contains_key(&key)
    })
    .await;
    let _ = run.stop.send(true);
    let _ = run.task.await;
    s.stop().await;
}

/// Revoking a node's credential ends its live session at its next heartbeat,
/// and its agent is refused from then on; enrolling it again lets it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_node_is_cut_off_and_enrolling_it_again_lets_it_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    let run = start_agent(&s, compute_2());
    let state = |s: &Server| {
        let url = format!("{}/switchyard/v1/nodes/compute-2", s.base);
        let http = s.http.clone();
        async move {
            let v: serde_json::Value = http
                .get(url)
                .send()
                .await
                .expect("get")
                .json()
                .await
                .expect("json");
            v["node"]["state"].as_str().unwrap_or_default().to_string()
        }
    };
    let mut st = String::new();
    for _ in 0..100 {
        st = state(&s).await;
        if st == "converged" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(st, "converged");
    assert!(
        switchyard_api::nodeauth::revoke_in_file(&dir.path().join("nodes.toml"), "compute-2")
            .expect("revoke")
    );
    for _ in 0..100 {
        st = state(&s).await;
        if st == "disconnected" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        st, "disconnected",
        "the session ended at the next heartbeat"
    );
    // And it stays out (its reconnections are refused).
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(state(&s).await, "disconnected");
    let _ = run.stop.send(true);
    let _ = run.task.await;
    // Enrolled again (a new token): back.
    std::fs::remove_file(dir.path().join("test-tokens.json")).expect("forget the old token");
    let run = start_agent(&s, compute_2());
    for _ in 0..100 {
        st = state(&s).await;
        if st == "converged" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(st, "converged");
    let _ = run.stop.send(true);
    let _ = run.task.await;
    s.stop().await;
}

/// The items `host`'s node should run, as the controller has them.
async fn desired(s: &Server, host: &str) -> serde_json::Value {
    s.get(&format!("/switchyard/v1/nodes/{host}")).await.body["node"]["items"].clone()
}

fn vtep_of(items: &serde_json::Value, mac: &str) -> Option<String> {
    items
        .as_object()?
        .values()
        .find(|i| i["kind"] == "remote_mac" && i["mac"] == mac)
        .and_then(|i| i["vtep"].as_str().map(str::to_string))
}

/// A controller that was away longer than agent_down_time does not take
/// every gateway for dead the moment it starts: for agent_down_time it
/// judges agents as of when it stopped, so networks stay where they were;
/// after that, an agent that never reported is dead and its networks move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_controller_gives_agents_time_to_report() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    s.lab_agents().await;
    s.report(
        "gateway",
        "Gateway agent",
        json!({"tunneling_ip": "192.0.2.1"}),
    )
    .await;
    let n = s.network("n").await;
    s.subnet(&n, "10.0.0.0/24").await;
    let ovs = s
        .port(
            &n,
            json!({"binding:host_id": "compute-1", "device_owner": "compute:nova"}),
        )
        .await;
    s.port(
        &n,
        json!({"binding:host_id": "compute-2", "device_owner": "compute:nova"}),
    )
    .await;
    let mac = ovs["mac_address"].as_str().expect("mac").to_string();
    assert_eq!(
        vtep_of(&desired(&s, "compute-2").await, &mac).as_deref(),
        Some("192.0.2.1"),
        "the vRouter reaches the OVS port through the gateway"
    );
    // Away for 200 s, more than agent_down_time (75 s).
    let addr = s.base.trim_start_matches("http://").to_string();
    let clock = s.stop().await;
    clock.advance(200);
    let s = Server::start_on(dir.path(), Default::default(), clock, &addr).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        vtep_of(&desired(&s, "compute-2").await, &mac).as_deref(),
        Some("192.0.2.1"),
        "still there right after the restart"
    );
    // No report within agent_down_time of the restart: the gateway is dead,
    // and with no other gateway the VLAN side is unreachable.
    s.clock.advance(76);
    let mut gone = false;
    for _ in 0..50 {
        if vtep_of(&desired(&s, "compute-2").await, &mac).is_none() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "the dead gateway no longer carries the network");
    s.stop().await;
}

/// A restarted controller compiles in the background: the node's agent,
/// reconnecting at once, is sent nothing until the compile has caught up
/// (an empty snapshot would wipe what it runs), and then gets what was
/// written meanwhile too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_controller_sends_nothing_before_it_has_compiled() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    let agent = compute_2();
    let run = start_agent(&s, agent.clone());
    let n = s.network("n").await;
    s.subnet(&n, "10.0.0.0/24").await;
    let bound = json!({"binding:host_id": "compute-2", "device_owner": "compute:nova"});
    let before = format!("iface/{}", id(&s.port(&n, bound.clone()).await));
    eventually("the port reaches the agent", || {
        agent.lock().expect("agent").items().contains_key(&before)
    })
    .await;

    let addr = s.base.trim_start_matches("http://").to_string();
    let clock = s.stop().await;
    let (s, first) = Server::start_deferred(dir.path(), clock, &addr).await;
    let mut compiling = false;
    for _ in 0..100 {
        let node = s.get("/switchyard/v1/nodes/compute-2").await.body["node"].clone();
        if node["state"] == "compiling" {
            compiling = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(compiling, "the node waits for the compile");
    // The API takes writes meanwhile.
    let during = format!("iface/{}", id(&s.port(&n, bound).await));
    tokio::time::sleep(Duration::from_millis(700)).await;
    {
        let a = agent.lock().expect("agent");
        assert!(
            a.items().contains_key(&before) && !a.items().contains_key(&during),
            "nothing was sent: the agent runs what it ran"
        );
    }
    first.start();
    eventually("the port made while compiling reaches the agent", || {
        let a = agent.lock().expect("agent");
        a.items().contains_key(&during) && a.items().contains_key(&before)
    })
    .await;
    let _ = run.stop.send(true);
    let _ = run.task.await;
    s.stop().await;
}
