//! Security groups on the wire in the emulated lab: what the API says is what
//! the nodes do. VMs on an OVS node and on vRouter nodes, booted through the
//! compute API: the default group lets its members talk and keeps others out;
//! a rule naming another group as remote admits that group's members, and a
//! port joining or leaving that group changes who gets in; a rule from a
//! prefix admits that prefix; deleting the rule shuts new traffic out again.

mod common;

use std::time::Duration;

use common::{group, id, network, port_in};
use serde_json::{Value, json};
use switchyard_lab::client::LabClient;
use switchyard_lab::live::{LiveLab, Options};

/// Pings `from` → `to` (a guest's first address) until `want` answers
/// come back in a run of 3, or a few seconds pass; the last count.
async fn answered(c: &LabClient, from: &str, to: &str, want: u64) -> u64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
    loop {
        let r = c
            .post(
                &format!("/switchyard/v1/lab/guests/{from}/ping"),
                &json!({"ping": {"target": to, "count": 3, "interval_ms": 20}}),
            )
            .await
            .expect("ping");
        let n = r["ping"]["answered"].as_u64().unwrap_or(0);
        if n == want || tokio::time::Instant::now() > deadline {
            return n;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_decide_who_reaches_whom_on_ovs_and_vrouter_nodes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let live = LiveLab::start(Options::reference(dir.path().join("sw.db")).expect("reference"))
        .await
        .expect("lab");
    let c = LabClient::new(&live.url());
    let net = network(&c, "sg-net", "10.71.0.0/24").await;
    let web_id = group(&c, "web").await;
    // Omitted groups: the project's default group.
    let port = |groups: Option<Value>| port_in(&c, &net, groups);
    // a (OVS) and b (vRouter) in the default group; w (vRouter) only in "web",
    // which starts with egress rules and nothing in.
    let pa = port(None).await;
    let default_id = pa["security_groups"][0]
        .as_str()
        .expect("the default group")
        .to_string();
    let pb = port(Some(json!([default_id]))).await;
    let pw = port(Some(json!([web_id]))).await;
    // Nova's `security_groups` by name: an unknown one is Nova's 400, a
    // name two groups share its 409, before anything is built.
    c.post(
        "/v2.0/security-groups",
        &json!({"security_group": {"name": "twice"}}),
    )
    .await
    .expect("group");
    c.post(
        "/v2.0/security-groups",
        &json!({"security_group": {"name": "twice"}}),
    )
    .await
    .expect("group");
    for (name, status, message) in [
        ("nope", 400, "Security group nope not found."),
        (
            "twice",
            409,
            "Multiple security groups found matching 'twice'. Use an ID to be more specific.",
        ),
    ] {
        let (s, v) = c
            .call(
                reqwest::Method::POST,
                "/compute/v2.1/servers",
                Some(&json!({"server": {"name": "x", "networks": [{"uuid": net}],
                    "security_groups": [{"name": name}]}})),
            )
            .await
            .expect("boot");
        assert_eq!(s, status, "{v}");
        assert!(v.to_string().contains(message), "{v}");
    }
    let limit = Duration::from_secs(60);
    for (name, p, host) in [
        ("a", &pa, "compute-1"),
        ("b", &pb, "compute-2"),
        ("w", &pw, "compute-4"),
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
    let (a, b, w) = (ip(&pa), ip(&pb), ip(&pw));

    // Members of the default group reach each other, across OVS and vRouter.
    assert_eq!(answered(&c, "a", &b, 3).await, 3, "a -> b, both default");
    assert_eq!(answered(&c, "b", &a, 3).await, 3, "b -> a, both default");
    // "web" lets nothing in; w is no member of default, so a keeps it out.
    assert_eq!(
        answered(&c, "a", &w, 3).await,
        0,
        "a -> w: web admits nothing"
    );
    assert_eq!(
        answered(&c, "w", &a, 3).await,
        0,
        "w -> a: w is not in default"
    );
    // `switchyard verify` knows the groups: the closed paths stay silent.
    let m = switchyard_lab::client::verify::run(&c, Some("sg-net"), 5)
        .await
        .expect("verify");
    let expect: Vec<(&str, &str, bool)> = m
        .pairs
        .iter()
        .map(|p| (p.from.as_str(), p.to.as_str(), p.expect_reply))
        .collect();
    assert_eq!(
        expect,
        [
            ("a", "b", true),
            ("a", "w", false),
            ("b", "a", true),
            ("b", "w", false),
            ("w", "a", false),
            ("w", "b", false),
        ],
        "{m:?}"
    );
    assert!(m.ok, "{}", switchyard_lab::client::verify::table(&m));
    // The same matrix run by the lab (the console's Verify page), and kept.
    let r = c
        .post(
            "/switchyard/v1/lab/verify",
            &json!({"verify": {"network": "sg-net"}}),
        )
        .await
        .expect("lab verify");
    assert_eq!(r["verify"]["ok"], true, "{r}");
    assert_eq!(
        r["verify"]["pairs"].as_array().map(Vec::len),
        Some(6),
        "{r}"
    );
    let h = c.get("/switchyard/v1/lab/verify").await.expect("history");
    assert_eq!(h["runs"].as_array().map(Vec::len), Some(1), "{h}");
    assert_eq!(h["runs"][0]["network"], "sg-net", "{h}");
    assert_eq!(h["runs"][0]["at"], r["verify"]["at"], "{h}");
    // An admin's run (made with an admin's view) is not shown to a member,
    // of another project or of the admin's own.
    for project in [None, Some("admin"), Some("another")] {
        let mut r = reqwest::Client::new()
            .get(format!("{}/switchyard/v1/lab/verify", live.url()))
            .header("X-Roles", "member");
        if let Some(p) = project {
            r = r.header("X-Project-Id", p);
        }
        let other: Value = r
            .send()
            .await
            .expect("member history")
            .json()
            .await
            .expect("json");
        assert_eq!(other["runs"], json!([]), "{project:?}: {other}");
    }
    // A member's own run is its project's to see (noauth: the header says
    // who the caller is).
    let member = |m: reqwest::Method, project: &str| {
        reqwest::Client::new()
            .request(m, format!("{}/switchyard/v1/lab/verify", live.url()))
            .header("X-Project-Id", project)
            .header("X-Roles", "member")
    };
    let r = member(reqwest::Method::POST, "another")
        .json(&json!({"verify": {"network": "sg-net"}}))
        .send()
        .await
        .expect("member run");
    assert_eq!(r.status(), 200);
    for (project, runs) in [("another", 1), ("admin", 0)] {
        let h: Value = member(reqwest::Method::GET, project)
            .send()
            .await
            .expect("history")
            .json()
            .await
            .expect("json");
        assert_eq!(
            h["runs"].as_array().map(Vec::len),
            Some(runs),
            "{project}: {h}"
        );
    }
    // Each node counts what its filters refused, by reason (`node show`).
    for host in ["compute-1", "compute-4"] {
        let n = c
            .get(&format!("/switchyard/v1/nodes/{host}"))
            .await
            .expect("node");
        let refused = n["node"]["applied"]["counters"]["drops"]["sg_no_rule"]
            .as_u64()
            .unwrap_or(0);
        assert!(refused >= 3, "{host} counts its refusals: {n}");
    }

    // web admits ICMP from the default group's members.
    let from_default = c
        .post(
            "/v2.0/security-group-rules",
            &json!({"security_group_rule": {"security_group_id": web_id, "direction": "ingress",
                "protocol": "icmp", "remote_group_id": default_id}}),
        )
        .await
        .expect("rule")["security_group_rule"]
        .clone();
    assert_eq!(
        answered(&c, "a", &w, 3).await,
        3,
        "a -> w once web admits default"
    );
    assert_eq!(answered(&c, "b", &w, 3).await, 3, "b -> w");
    // b leaves the default group (for web): no longer a member, kept out of w
    // and of a; joining default again lets it back in.
    c.put(
        &format!("/v2.0/ports/{}", id(&pb)),
        &json!({"port": {"security_groups": [web_id]}}),
    )
    .await
    .expect("leave default");
    assert_eq!(
        answered(&c, "b", &w, 0).await,
        0,
        "b left default: w keeps it out"
    );
    assert_eq!(
        answered(&c, "b", &a, 0).await,
        0,
        "b left default: a keeps it out"
    );
    c.put(
        &format!("/v2.0/ports/{}", id(&pb)),
        &json!({"port": {"security_groups": [default_id]}}),
    )
    .await
    .expect("rejoin default");
    assert_eq!(answered(&c, "b", &a, 3).await, 3, "b back in default");

    // Deleting the rule shuts new pings out again.
    c.delete(&format!("/v2.0/security-group-rules/{}", id(&from_default)))
        .await
        .expect("delete rule");
    assert_eq!(answered(&c, "a", &w, 0).await, 0, "rule gone");

    // A rule from a prefix: a's /32 only.
    c.post(
        "/v2.0/security-group-rules",
        &json!({"security_group_rule": {"security_group_id": web_id, "direction": "ingress",
            "protocol": "icmp", "remote_ip_prefix": format!("{a}/32")}}),
    )
    .await
    .expect("prefix rule");
    assert_eq!(answered(&c, "a", &w, 3).await, 3, "a's prefix is let in");
    assert_eq!(answered(&c, "b", &w, 0).await, 0, "b is outside the prefix");

    // No port security: no filter at all.
    c.put(
        &format!("/v2.0/ports/{}", id(&pw)),
        &json!({"port": {"port_security_enabled": false, "security_groups": []}}),
    )
    .await
    .expect("port security off");
    assert_eq!(answered(&c, "b", &w, 3).await, 3, "unfiltered w answers b");
    // Port security on and no group: nothing gets in, as in Neutron.
    c.put(
        &format!("/v2.0/ports/{}", id(&pw)),
        &json!({"port": {"port_security_enabled": true}}),
    )
    .await
    .expect("port security on, no groups");
    assert_eq!(
        answered(&c, "b", &w, 0).await,
        0,
        "port security without groups admits nothing"
    );
    drop(live);
}
