//! Neutron's default policy for non-admin callers (noauth with `X-Roles: member`).

mod common;

use common::{Resp, Server, id};
use reqwest::Method;
use serde_json::{Value, json};

const B: [(&str, &str); 2] = [("x-project-id", "proj-b"), ("x-roles", "member")];

async fn as_b(s: &Server, m: Method, path: &str, body: Option<Value>) -> Resp {
    s.req(m, path, body, &B).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_do_not_read_admin_only_attributes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    s.lab_agents().await;
    let r = as_b(
        &s,
        Method::POST,
        "/v2.0/networks",
        Some(json!({"network": {"name": "b-net"}})),
    )
    .await;
    assert_eq!(r.status, 201);
    let net = r.body["network"].clone();
    for k in ["provider:network_type", "provider:segmentation_id"] {
        assert!(net.get(k).is_none(), "{k} leaked to a member: {net}");
    }
    as_b(
        &s,
        Method::POST,
        "/v2.0/subnets",
        Some(json!({"subnet": {"network_id": net["id"], "cidr": "10.0.0.0/24", "ip_version": 4}})),
    )
    .await;
    // A member may ask for an SR-IOV port (vnic_type) but not place it on a host.
    let r = as_b(
        &s,
        Method::POST,
        "/v2.0/ports",
        Some(json!({"port": {"network_id": net["id"], "binding:vnic_type": "direct"}})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["port"]["binding:vnic_type"], "direct");
    for k in [
        "binding:host_id",
        "binding:vif_type",
        "binding:vif_details",
        "binding:profile",
    ] {
        assert!(r.body["port"].get(k).is_none(), "{k} leaked: {}", r.body);
    }
    let port = id(&r.body["port"]);
    let r = as_b(
        &s,
        Method::PUT,
        &format!("/v2.0/ports/{port}"),
        Some(json!({"port": {"binding:host_id": "compute-3"}})),
    )
    .await;
    assert_eq!((r.status, r.error_type()), (403, "PolicyNotAuthorized"));
    // Nova (admin) binds it; the member still does not see where.
    let r = s
        .put(
            &format!("/v2.0/ports/{port}"),
            json!({"port": {"binding:host_id": "compute-3"}}),
        )
        .await;
    assert_eq!(r.body["port"]["binding:vif_type"], "hw_veb");
    let r = as_b(
        &s,
        Method::GET,
        "/v2.0/ports?binding:host_id=compute-3",
        None,
    )
    .await;
    assert_eq!(r.body["ports"], json!([]));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_networks_are_usable_but_not_ownable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    let net = s
        .create(
            "networks",
            "network",
            json!({"name": "shared", "shared": true}),
        )
        .await;
    let nid = id(&net);
    s.subnet(&net, "10.0.0.0/24").await;
    s.put(
        &format!("/v2.0/networks/{nid}/tags"),
        json!({"tags": ["owned-by-a"]}),
    )
    .await;

    // Visible, attachable...
    assert_eq!(
        as_b(&s, Method::GET, &format!("/v2.0/networks/{nid}"), None)
            .await
            .status,
        200
    );
    let r = as_b(
        &s,
        Method::POST,
        "/v2.0/ports",
        Some(json!({"port": {"network_id": nid}})),
    )
    .await;
    assert_eq!(r.status, 201);
    let mine = id(&r.body["port"]);
    // ...but addresses, MACs and anti-spoofing belong to the network's owner.
    for attrs in [
        json!({"network_id": nid, "mac_address": "fa:16:3e:00:00:99"}),
        json!({"network_id": nid, "fixed_ips": [{"ip_address": "10.0.0.50"}]}),
        json!({"network_id": nid, "port_security_enabled": false}),
        json!({"network_id": nid, "allowed_address_pairs": [{"ip_address": "0.0.0.0/0"}]}),
        json!({"network_id": nid, "device_owner": "network:dhcp"}),
    ] {
        let r = as_b(
            &s,
            Method::POST,
            "/v2.0/ports",
            Some(json!({ "port": attrs })),
        )
        .await;
        assert_eq!(
            (r.status, r.error_type()),
            (403, "PolicyNotAuthorized"),
            "{attrs}"
        );
    }
    let r = as_b(
        &s,
        Method::PUT,
        &format!("/v2.0/ports/{mine}"),
        Some(json!({"port": {"port_security_enabled": false}})),
    )
    .await;
    assert_eq!(r.status, 403);
    let r = as_b(
        &s,
        Method::POST,
        "/v2.0/subnets",
        Some(json!({"subnet": {"network_id": nid, "cidr": "10.9.0.0/24", "ip_version": 4}})),
    )
    .await;
    assert_eq!((r.status, r.error_type()), (403, "PolicyNotAuthorized"));
    let r = as_b(
        &s,
        Method::PUT,
        &format!("/v2.0/networks/{nid}"),
        Some(json!({"network": {"name": "mine"}})),
    )
    .await;
    assert_eq!(r.status, 403);
    let r = as_b(&s, Method::DELETE, &format!("/v2.0/networks/{nid}"), None).await;
    assert_eq!(r.status, 403);
    let r = as_b(
        &s,
        Method::PUT,
        &format!("/v2.0/networks/{nid}/tags/x"),
        None,
    )
    .await;
    assert_eq!(r.status, 403);
    let r = as_b(
        &s,
        Method::DELETE,
        &format!("/v2.0/networks/{nid}/tags"),
        None,
    )
    .await;
    assert_eq!(r.status, 403);
    let after = s.get(&format!("/v2.0/networks/{nid}")).await.body["network"].clone();
    assert_eq!(after["tags"], json!(["owned-by-a"]));
    assert_eq!(after["name"], "shared");
    // The member deletes its own port.
    assert_eq!(
        as_b(&s, Method::DELETE, &format!("/v2.0/ports/{mine}"), None)
            .await
            .status,
        204
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_markers_are_404_for_every_collection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    let n = s.network("n").await;
    s.subnet(&n, "10.0.0.0/24").await;
    let ghost = "00000000-0000-0000-0000-000000000000";
    for (coll, kind) in [
        ("networks", "NetworkNotFound"),
        ("subnets", "SubnetNotFound"),
        ("ports", "PortNotFound"),
        ("segments", "SegmentNotFound"),
        ("agents", "AgentNotFound"),
    ] {
        let r = s.get(&format!("/v2.0/{coll}?limit=1&marker={ghost}")).await;
        assert_eq!((r.status, r.error_type()), (404, kind), "{coll}");
    }
    s.stop().await;
}

/// Neutron's newer defaults: a `reader` reads what a member of its project
/// sees and changes nothing; each refusal names the rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_read_and_change_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    let reader = [("x-project-id", "proj-b"), ("x-roles", "reader")];
    let r = as_b(
        &s,
        Method::POST,
        "/v2.0/networks",
        Some(json!({"network": {"name": "b-net"}})),
    )
    .await;
    assert_eq!(r.status, 201);
    let net = id(&r.body["network"]);
    let r = s.req(Method::GET, "/v2.0/networks", None, &reader).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["networks"][0]["id"], net.as_str());
    for (m, path, body, rule) in [
        (
            Method::POST,
            "/v2.0/networks".to_string(),
            Some(json!({"network": {}})),
            "create_network",
        ),
        (
            Method::PUT,
            format!("/v2.0/networks/{net}"),
            Some(json!({"network": {"name": "x"}})),
            "update_network",
        ),
        (
            Method::DELETE,
            format!("/v2.0/networks/{net}"),
            None,
            "delete_network",
        ),
        (
            Method::PUT,
            "/v2.0/routers/r1/add_router_interface".to_string(),
            Some(json!({"subnet_id": "s"})),
            "add_router_interface",
        ),
        (
            Method::PUT,
            "/v2.0/quotas/proj-b".to_string(),
            Some(json!({"quota": {"port": 1}})),
            "update_quota",
        ),
    ] {
        let r = s.req(m.clone(), &path, body, &reader).await;
        assert_eq!(
            (r.status, r.error_type()),
            (403, "PolicyNotAuthorized"),
            "{m} {path}"
        );
        assert_eq!(
            r.body["NeutronError"]["message"],
            format!("rule:{rule} is disallowed by policy")
        );
    }
    // The network is untouched.
    let r = as_b(&s, Method::GET, &format!("/v2.0/networks/{net}"), None).await;
    assert_eq!(r.body["network"]["name"], "b-net");
    s.stop().await;
}

/// The `service` role (Nova's service user, Neutron's `rule:service_api`):
/// binds any project's port to a host and reads its binding, while it sees
/// no provider attributes; a member of the port's project cannot bind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_role_binds_ports_of_any_project() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    s.lab_agents().await;
    let service = [("x-project-id", "service"), ("x-roles", "service")];
    let r = as_b(
        &s,
        Method::POST,
        "/v2.0/networks",
        Some(json!({"network": {"name": "b-net"}})),
    )
    .await;
    let net = id(&r.body["network"]);
    as_b(
        &s,
        Method::POST,
        "/v2.0/subnets",
        Some(json!({"subnet": {"network_id": net, "cidr": "10.0.0.0/24", "ip_version": 4}})),
    )
    .await;
    let r = as_b(
        &s,
        Method::POST,
        "/v2.0/ports",
        Some(json!({"port": {"network_id": net}})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let port = id(&r.body["port"]);
    let bind = json!({"port": {"binding:host_id": "compute-2", "device_owner": "compute:nova",
        "device_id": "5a5a5a5a-0000-4000-8000-000000000001"}});
    let r = as_b(
        &s,
        Method::PUT,
        &format!("/v2.0/ports/{port}"),
        Some(bind.clone()),
    )
    .await;
    assert_eq!(
        (r.status, r.error_type()),
        (403, "PolicyNotAuthorized"),
        "a member does not bind"
    );
    let r = s
        .req(
            Method::PUT,
            &format!("/v2.0/ports/{port}"),
            Some(bind),
            &service,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["port"]["binding:host_id"], "compute-2");
    assert_eq!(r.body["port"]["binding:vif_type"], "vrouter");
    assert_eq!(r.body["port"]["project_id"], "proj-b", "still proj-b's");
    let r = s
        .req(
            Method::GET,
            &format!("/v2.0/ports?id={port}"),
            None,
            &service,
        )
        .await;
    assert_eq!(
        r.body["ports"][0]["binding:vif_type"], "vrouter",
        "{}",
        r.body
    );
    let r = s
        .req(
            Method::GET,
            &format!("/v2.0/networks/{net}"),
            None,
            &service,
        )
        .await;
    assert_eq!(r.status, 404, "networks stay their project's");
    // The member sees its port bound, without the binding's details.
    let r = as_b(&s, Method::GET, &format!("/v2.0/ports/{port}"), None).await;
    assert!(
        r.body["port"].get("binding:host_id").is_none(),
        "{}",
        r.body
    );
    // A service caller's profile write, as Nova's for live migration.
    let r = s
        .req(
            Method::PUT,
            &format!("/v2.0/ports/{port}"),
            Some(json!({"port": {"binding:profile": {"migrating_to": "compute-4"}}})),
            &service,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    s.stop().await;
}
