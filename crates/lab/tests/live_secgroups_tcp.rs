//! Security groups acting on TCP in the emulated lab, through the guests'
//! TCP routes: targets on an OVS node and on a vRouter node in a group
//! that opens TCP/22 to one client's address. That client connects, another
//! is dropped (timed out, not refused), ping stays shut, and a port the rules
//! open but nothing listens on answers with a RST (refused). Deleting the
//! rule stops new connections while a stream opened before it keeps
//! delivering lines: established connections carry on.

mod common;

use std::time::Duration;

use common::{group, id, network, port_in};
use serde_json::{Value, json};
use switchyard_lab::client::LabClient;
use switchyard_lab::live::{LiveLab, Options};

/// Connection attempts `from` → `to`:`port` until one ends `want`, or a
/// few seconds pass (a rule change takes a moment to reach the nodes); the
/// last result.
async fn connects(c: &LabClient, from: &str, to: &str, port: u16, want: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let r = c.tcp_connect(from, to, port, 400).await.expect("connect");
        if r == want || tokio::time::Instant::now() > deadline {
            return r;
        }
    }
}

/// Pings answered out of 3 (a rule admitting only TCP keeps them out).
async fn pings(c: &LabClient, from: &str, to: &str) -> u64 {
    let r = c
        .post(
            &format!("/switchyard/v1/lab/guests/{from}/ping"),
            &json!({"ping": {"target": to, "count": 3, "interval_ms": 20}}),
        )
        .await
        .expect("ping");
    r["ping"]["answered"].as_u64().unwrap_or(u64::MAX)
}

/// Lines `from`'s TCP stream got to its target's listener.
async fn received(c: &LabClient, from: &str) -> u64 {
    let s = c
        .get(&format!("/switchyard/v1/lab/guests/{from}/tcp-stream"))
        .await
        .expect("stream");
    s["tcp_stream"]["received"].as_u64().unwrap_or(0)
}

/// Waits until `from`'s stream got at least `n` lines through; the count.
async fn received_at_least(c: &LabClient, from: &str, n: u64) -> u64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let got = received(c, from).await;
        if got >= n || tokio::time::Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A rule of group `sg` admitting TCP `ports` from `prefix`; its id.
async fn allow(c: &LabClient, sg: &str, ports: (u16, u16), prefix: &str) -> String {
    let r = c
        .post(
            "/v2.0/security-group-rules",
            &json!({"security_group_rule": {"security_group_id": sg, "direction": "ingress",
                "protocol": "tcp", "port_range_min": ports.0, "port_range_max": ports.1,
                "remote_ip_prefix": prefix}}),
        )
        .await
        .expect("rule");
    id(&r["security_group_rule"])
}

/// The status and error type of a lab call (`null`: no body).
async fn refusal(c: &LabClient, method: reqwest::Method, path: &str, body: Value) -> (u16, String) {
    let body = (!body.is_null()).then_some(&body);
    let (s, v) = c.call(method, path, body).await.expect("call");
    (
        s,
        v["NeutronError"]["type"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_admit_drop_and_keep_tcp_connections_on_ovs_and_vrouter_nodes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let live = LiveLab::start(Options::reference(dir.path().join("sw.db")).expect("reference"))
        .await
        .expect("lab");
    let c = LabClient::new(&live.url());
    let net = network(&c, "tcp-net", "10.72.0.0/24").await;
    let ssh_id = group(&c, "ssh").await;
    let port = |groups: Option<Value>| port_in(&c, &net, groups);
    // Clients a (vRouter) and b (OVS) in the default group; the targets
    // only in "ssh", which starts with its egress rules and nothing in.
    let pa = port(None).await;
    let pb = port(None).await;
    let po = port(Some(json!([ssh_id]))).await;
    let pv = port(Some(json!([ssh_id]))).await;
    let limit = Duration::from_secs(60);
    for (name, p, host) in [
        ("a", &pa, "compute-2"),
        ("b", &pb, "compute-1"),
        ("t-ovs", &po, "compute-1"),
        ("t-vr", &pv, "compute-4"),
    ] {
        c.boot(name, json!([{"port": id(p)}]), host, limit)
            .await
            .unwrap_or_else(|e| panic!("boot {name}: {e}"));
    }
    let ip = |p: &Value| {
        p["fixed_ips"][0]["ip_address"]
            .as_str()
            .expect("ip")
            .to_string()
    };
    let a = ip(&pa);
    for t in ["t-ovs", "t-vr"] {
        c.listen(t, 22).await.expect("listen");
    }

    // The routes check what they are given.
    let lab = "/switchyard/v1/lab/guests";
    for (method, path, body, want) in [
        (
            reqwest::Method::PUT,
            format!("{lab}/t-ovs/listen"),
            json!({"listen": {"port": 22}}),
            (409, "ListenerExists"),
        ),
        (
            reqwest::Method::PUT,
            format!("{lab}/t-ovs/listen"),
            json!({"listen": {"port": 0}}),
            (400, "InvalidInput"),
        ),
        (
            reqwest::Method::PUT,
            format!("{lab}/t-ovs/listen"),
            json!({"port": 22}),
            (400, "HTTPBadRequest"),
        ),
        (
            reqwest::Method::DELETE,
            format!("{lab}/t-ovs/listen"),
            json!({"listen": {"port": 23}}),
            (404, "ListenerNotFound"),
        ),
        (
            reqwest::Method::POST,
            format!("{lab}/nobody/connect"),
            json!({"connect": {"target": a, "port": 22}}),
            (404, "GuestNotFound"),
        ),
        (
            reqwest::Method::POST,
            format!("{lab}/b/connect"),
            json!({"connect": {"target": a, "port": 70000}}),
            (400, "InvalidInput"),
        ),
        (
            reqwest::Method::POST,
            format!("{lab}/b/connect"),
            json!({"connect": {"target": "10.72.0.0.1", "port": 22}}),
            (400, "InvalidInput"),
        ),
        (
            reqwest::Method::POST,
            format!("{lab}/b/connect"),
            json!({"connect": {"target": a, "port": 22, "timeout_ms": 0}}),
            (400, "InvalidInput"),
        ),
        (
            reqwest::Method::GET,
            format!("{lab}/b/tcp-stream"),
            Value::Null,
            (404, "TcpStreamNotFound"),
        ),
    ] {
        let got = refusal(&c, method.clone(), &path, body).await;
        assert_eq!((got.0, got.1.as_str()), want, "{method} {path}");
    }

    for (t, pt) in [("t-ovs", &po), ("t-vr", &pv)] {
        let target = ip(pt);
        // Nothing is let in yet (the last target's rules are gone, though
        // maybe not yet from this node): a's SYN is dropped.
        assert_eq!(
            connects(&c, "a", &target, 22, "timed_out").await,
            "timed_out",
            "a -> {t}:22 before any rule"
        );
        // TCP/22 from a's address; and 8000-8099, where nothing listens.
        let ssh_rule = allow(&c, &ssh_id, (22, 22), &format!("{a}/32")).await;
        let high_rule = allow(&c, &ssh_id, (8000, 8099), &format!("{a}/32")).await;
        assert_eq!(
            connects(&c, "a", &target, 22, "established").await,
            "established",
            "a -> {t}:22, inside the prefix"
        );
        assert_eq!(
            connects(&c, "a", &target, 8022, "refused").await,
            "refused",
            "a -> {t}:8022: admitted, nothing listens, its RST comes back"
        );
        assert_eq!(
            c.tcp_connect("b", &target, 22, 400).await.expect("connect"),
            "timed_out",
            "b -> {t}:22: outside the prefix, dropped (not refused)"
        );
        assert_eq!(
            c.tcp_connect("b", &target, 8022, 400)
                .await
                .expect("connect"),
            "timed_out",
            "b -> {t}:8022: outside the prefix"
        );
        assert_eq!(
            pings(&c, "a", &target).await,
            0,
            "a -> {t}: only TCP is open"
        );
        // The listener saw a's connections and nothing of b's.
        let l = c.get(&format!("{lab}/{t}/listen")).await.expect("listener");
        let conns = l["listen"]["connections"].as_array().expect("list");
        assert!(!conns.is_empty(), "{l}");
        assert!(conns.iter().all(|x| x["remote"] == a.as_str()), "{l}");

        // A stream opened while the rule stands.
        let s = c
            .put(
                &format!("{lab}/a/tcp-stream"),
                &json!({"tcp_stream": {"target": target, "port": 22, "interval_ms": 20}}),
            )
            .await
            .expect("tcp stream");
        assert_eq!(s["tcp_stream"]["port"], 22, "{s}");
        let (status, kind) = refusal(
            &c,
            reqwest::Method::PUT,
            &format!("{lab}/a/tcp-stream"),
            json!({"tcp_stream": {"target": target, "port": 22}}),
        )
        .await;
        assert_eq!((status, kind.as_str()), (409, "TcpStreamExists"));
        assert!(
            received_at_least(&c, "a", 5).await >= 5,
            "a's stream reaches {t}"
        );
        // The rule goes: new connections are dropped ...
        c.delete(&format!("/v2.0/security-group-rules/{ssh_rule}"))
            .await
            .expect("delete rule");
        assert_eq!(
            connects(&c, "a", &target, 22, "timed_out").await,
            "timed_out",
            "a -> {t}:22 after the rule is gone"
        );
        // ... while the established stream keeps delivering its lines.
        let before = received(&c, "a").await;
        assert!(
            received_at_least(&c, "a", before + 10).await >= before + 10,
            "a's stream to {t} carries on after the rule is gone (from {before} lines)"
        );
        let end = c
            .delete(&format!("{lab}/a/tcp-stream"))
            .await
            .expect("stop stream")["tcp_stream"]
            .clone();
        assert_eq!(end["established"], true, "{end}");
        let (sent, got) = (
            end["sent"].as_u64().unwrap_or(0),
            end["received"].as_u64().unwrap_or(0),
        );
        assert!(got >= before + 10 && got <= sent, "{end}");
        c.delete(&format!("/v2.0/security-group-rules/{high_rule}"))
            .await
            .expect("delete rule");
    }
    // Without a body, DELETE stops every port; then there is nothing to stop.
    let stopped = c
        .delete(&format!("{lab}/t-ovs/listen"))
        .await
        .expect("unlisten");
    assert_eq!(stopped["listen"]["stopped"], json!([22]), "{stopped}");
    let (status, kind) = refusal(
        &c,
        reqwest::Method::DELETE,
        &format!("{lab}/t-ovs/listen"),
        Value::Null,
    )
    .await;
    assert_eq!((status, kind.as_str()), (404, "ListenerNotFound"));
    drop(live);
}
