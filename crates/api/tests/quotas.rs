//! Neutron's quotas: defaults from `[quotas]`, an admin's overrides (stored,
//! surviving a restart), `details` with usage, policy (a member sees only its
//! own project's, changes none), and enforcement on create — single and bulk
//! — with `409 OverQuota` and nothing made.

mod common;

use common::Server;
use reqwest::Method;
use serde_json::{Value, json};
use switchyard_ml2::Ml2Config;

const B: [(&str, &str); 2] = [("x-project-id", "proj-b"), ("x-roles", "member")];

async fn as_b(s: &Server, m: Method, path: &str, body: Option<Value>) -> common::Resp {
    s.req(m, path, body, &B).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_show_update_reset_and_policy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    let defaults = json!({"floatingip": 50, "network": 100, "port": 500, "router": 10,
        "security_group": 10, "security_group_rule": 100, "subnet": 100});
    let r = s.get("/v2.0/quotas/proj-b").await;
    assert_eq!((r.status, &r.body["quota"]), (200, &defaults));
    assert_eq!(
        s.get("/v2.0/quotas/proj-b/default").await.body["quota"],
        defaults
    );
    assert_eq!(s.get("/v2.0/quotas").await.body, json!({"quotas": []}));

    let r = s
        .put(
            "/v2.0/quotas/proj-b",
            json!({"quota": {"network": 2, "port": "7"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["quota"]["network"], 2);
    assert_eq!(r.body["quota"]["port"], 7);
    assert_eq!(r.body["quota"]["router"], 10);
    let all = s.get("/v2.0/quotas").await.body;
    assert_eq!(all["quotas"].as_array().map(Vec::len), Some(1), "{all}");
    assert_eq!(all["quotas"][0]["project_id"], "proj-b");
    assert_eq!(all["quotas"][0]["tenant_id"], "proj-b");
    assert_eq!(all["quotas"][0]["network"], 2);

    // Bad values and bodies: 400, nothing changed.
    for bad in [
        json!({"quota": {"network": -2}}),
        json!({"quota": {"network": "many"}}),
        json!({"quota": {"network": 1.5}}),
        json!({"quota": {"network": 4_294_967_296_i64}}),
        json!({"quota": {"security_group": "five"}}),
        json!({"quota": {"network": 5, "bogus": 1}}),
        json!({"quotas": {"network": 5}}),
        json!({"quota": 5}),
    ] {
        let r = s.put("/v2.0/quotas/proj-b", bad.clone()).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
        assert!(r.body["NeutronError"]["message"].is_string(), "{}", r.body);
    }
    assert_eq!(
        s.get("/v2.0/quotas/proj-b").await.body["quota"]["network"],
        2
    );

    // A member sees its own project's quota, no other's, and changes none.
    let r = as_b(&s, Method::GET, "/v2.0/quotas/proj-b", None).await;
    assert_eq!((r.status, &r.body["quota"]["network"]), (200, &json!(2)));
    let r = as_b(&s, Method::GET, "/v2.0/quotas/tenant", None).await;
    assert_eq!(r.body, json!({"tenant": {"tenant_id": "proj-b"}}));
    for (m, path, body) in [
        (Method::GET, "/v2.0/quotas/proj-a", None),
        (Method::GET, "/v2.0/quotas/proj-a/details", None),
        (Method::GET, "/v2.0/quotas", None),
        (
            Method::PUT,
            "/v2.0/quotas/proj-b",
            Some(json!({"quota": {"network": 50}})),
        ),
        (Method::DELETE, "/v2.0/quotas/proj-b", None),
    ] {
        let r = as_b(&s, m.clone(), path, body).await;
        assert_eq!(
            (r.status, r.error_type()),
            (403, "PolicyNotAuthorized"),
            "{m} {path}: {}",
            r.body
        );
    }
    let r = s.post("/v2.0/quotas", json!({"quota": {}})).await;
    assert_eq!(r.status, 405);

    // Reset: the defaults again, and the project is no longer listed.
    let r = s.delete("/v2.0/quotas/proj-b").await;
    assert_eq!(r.status, 204);
    assert_eq!(s.get("/v2.0/quotas/proj-b").await.body["quota"], defaults);
    assert_eq!(s.get("/v2.0/quotas").await.body, json!({"quotas": []}));
    // Setting a limit back to its default stores nothing.
    s.put("/v2.0/quotas/proj-b", json!({"quota": {"router": 10}}))
        .await;
    assert_eq!(s.get("/v2.0/quotas").await.body, json!({"quotas": []}));
    let ext = s.get("/v2.0/extensions").await.body;
    for alias in ["quotas", "quota_details"] {
        assert!(
            ext["extensions"]
                .as_array()
                .is_some_and(|e| e.iter().any(|x| x["alias"] == alias)),
            "{alias}"
        );
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_beyond_a_quota_are_refused_and_make_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    s.put(
        "/v2.0/quotas/proj-b",
        json!({"quota": {"network": 1, "port": 2}}),
    )
    .await;
    let r = as_b(
        &s,
        Method::POST,
        "/v2.0/networks",
        Some(json!({"network": {"name": "b1"}})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let net = r.body["network"]["id"].as_str().expect("id").to_string();
    let r = as_b(
        &s,
        Method::POST,
        "/v2.0/networks",
        Some(json!({"network": {"name": "b2"}})),
    )
    .await;
    assert_eq!((r.status, r.error_type()), (409, "OverQuota"), "{}", r.body);
    assert_eq!(
        r.body["NeutronError"]["message"],
        "Quota exceeded for resources: ['network']."
    );
    // Another project's own quota is its own.
    let r = s
        .post("/v2.0/networks", json!({"network": {"name": "a1"}}))
        .await;
    assert_eq!(r.status, 201);

    // A bulk create that would cross the limit makes none of its ports.
    let r = as_b(
        &s,
        Method::POST,
        "/v2.0/ports",
        Some(json!({"ports": [
            {"network_id": net}, {"network_id": net}, {"network_id": net}
        ]})),
    )
    .await;
    assert_eq!((r.status, r.error_type()), (409, "OverQuota"), "{}", r.body);
    let d = as_b(&s, Method::GET, "/v2.0/quotas/proj-b/details", None).await;
    assert_eq!(
        d.body["quota"]["port"],
        json!({"limit": 2, "used": 0, "reserved": 0}),
        "{}",
        d.body
    );
    assert_eq!(d.body["quota"]["network"]["used"], 1);
    let r = as_b(
        &s,
        Method::POST,
        "/v2.0/ports",
        Some(json!({"ports": [{"network_id": net}, {"network_id": net}]})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = as_b(
        &s,
        Method::POST,
        "/v2.0/ports",
        Some(json!({"port": {"network_id": net}})),
    )
    .await;
    assert_eq!((r.status, r.error_type()), (409, "OverQuota"));
    // An admin creating for proj-b is held to proj-b's quota too.
    let r = s
        .post(
            "/v2.0/ports",
            json!({"port": {"network_id": net, "project_id": "proj-b"}}),
        )
        .await;
    assert_eq!((r.status, r.error_type()), (409, "OverQuota"));
    // Raising the limit lets it through; deleting frees a place.
    s.put("/v2.0/quotas/proj-b", json!({"quota": {"port": -1}}))
        .await;
    let r = as_b(
        &s,
        Method::POST,
        "/v2.0/ports",
        Some(json!({"port": {"network_id": net}})),
    )
    .await;
    assert_eq!(r.status, 201);
    let d = s.get("/v2.0/quotas/proj-b/details").await;
    assert_eq!(
        d.body["quota"]["port"],
        json!({"limit": -1, "used": 3, "reserved": 0})
    );
    s.stop().await;
}

/// `check_limit` (what `openstack quota set` sends) refuses a limit below
/// what the project uses, naming the resources; `force` or no flag sets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_limit_refuses_a_limit_below_usage() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    for n in ["b1", "b2"] {
        let r = as_b(
            &s,
            Method::POST,
            "/v2.0/networks",
            Some(json!({"network": {"name": n}})),
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.body);
    }
    // The default security group and its four rules count too.
    let r = s
        .put(
            "/v2.0/quotas/proj-b",
            json!({"quota": {"network": 1, "security_group_rule": 3, "port": 9, "check_limit": true}}),
        )
        .await;
    assert_eq!(
        (r.status, r.error_type()),
        (409, "InvalidQuotaValue"),
        "{}",
        r.body
    );
    assert_eq!(
        r.message(),
        "Change would make usage less than 0 for the following resources: ['network', 'security_group_rule']."
    );
    let q = s.get("/v2.0/quotas/proj-b").await;
    assert_eq!(q.body["quota"]["port"], 500, "nothing set: {}", q.body);
    let r = s
        .put(
            "/v2.0/quotas/proj-b",
            json!({"quota": {"network": 2, "check_limit": true}}),
        )
        .await;
    assert_eq!(
        (r.status, &r.body["quota"]["network"]),
        (200, &json!(2)),
        "{}",
        r.body
    );
    for flags in [
        json!({"check_limit": true, "force": true}),
        json!({"force": true}),
        json!({}),
    ] {
        let mut q = json!({"network": 1});
        if let (Some(o), Some(f)) = (q.as_object_mut(), flags.as_object()) {
            o.extend(f.clone());
        }
        let r = s.put("/v2.0/quotas/proj-b", json!({ "quota": q })).await;
        assert_eq!(
            (r.status, &r.body["quota"]["network"]),
            (200, &json!(1)),
            "{flags}: {}",
            r.body
        );
        assert!(
            r.body["quota"].get("force").is_none() && r.body["quota"].get("check_limit").is_none()
        );
    }
    let r = s
        .put(
            "/v2.0/quotas/proj-b",
            json!({"quota": {"check_limit": "maybe"}}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_defaults_come_from_the_config_and_overrides_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = Ml2Config::default();
    cfg.quotas.quota_router = 1;
    let s = Server::start_with(dir.path(), cfg.clone()).await;
    assert_eq!(
        s.get("/v2.0/quotas/proj-a").await.body["quota"]["router"],
        1
    );
    s.put("/v2.0/quotas/proj-x", json!({"quota": {"subnet": 3}}))
        .await;
    let r = s
        .post("/v2.0/routers", json!({"router": {"name": "r1"}}))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = s
        .post("/v2.0/routers", json!({"router": {"name": "r2"}}))
        .await;
    assert_eq!((r.status, r.error_type()), (409, "OverQuota"));
    s.stop().await;
    let s = Server::start_with(dir.path(), cfg).await;
    assert_eq!(
        s.get("/v2.0/quotas/proj-x").await.body["quota"]["subnet"],
        3
    );
    assert_eq!(
        s.get("/v2.0/quotas/proj-a/details").await.body["quota"]["router"],
        json!({"limit": 1, "used": 1, "reserved": 0})
    );
    s.stop().await;
}
