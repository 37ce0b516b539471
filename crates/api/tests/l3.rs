//! The L3 API (routers, interfaces, gateways, extra routes, floating IPs)
//! over real HTTP, with Neutron's shapes, statuses and error types.

mod common;

use common::{Server, id};
use serde_json::{Value, json};
use switchyard_ml2::Ml2Config;

fn l3() -> Ml2Config {
    Ml2Config::default()
}

async fn count(s: &Server, coll: &str) -> usize {
    s.get(&format!("/v2.0/{coll}")).await.body[coll]
        .as_array()
        .map_or(0, Vec::len)
}

/// An external network `public` (flat) with 203.0.113.0/24, a project network
/// with a subnet, the lab's agents and a gateway agent.
async fn setup(s: &Server) -> (Value, Value, Value, Value) {
    s.lab_agents().await;
    s.report(
        "gateway",
        "Gateway agent",
        json!({"tunneling_ip": "192.0.2.1"}),
    )
    .await;
    let public = s
        .create(
            "networks",
            "network",
            json!({"name": "public", "router:external": true,
                   "provider:network_type": "flat", "provider:physical_network": "public"}),
        )
        .await;
    let pub_sub = s.subnet(&public, "203.0.113.0/24").await;
    let net = s.network("demo-net").await;
    let sub = s.subnet(&net, "10.0.0.0/24").await;
    (public, pub_sub, net, sub)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routers_interfaces_and_gateways() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start_with(dir.path(), l3()).await;
    let (public, _pub_sub, net, sub) = setup(&s).await;
    let ext = s.get("/v2.0/extensions/router").await;
    assert_eq!(ext.status, 200, "{}", ext.body);

    // extraroute: routes cannot be set on POST.
    let r = s
        .post(
            "/v2.0/routers",
            json!({"router": {"name": "r", "routes": []}}),
        )
        .await;
    assert_eq!((r.status, r.error_type()), (400, "HTTPBadRequest"));

    let router = s
        .create(
            "routers",
            "router",
            json!({"name": "r1", "external_gateway_info": {"network_id": public["id"]}}),
        )
        .await;
    let rid = id(&router);
    assert_eq!(router["status"], "ACTIVE");
    assert_eq!(router["revision_number"], 0);
    assert_eq!(router["routes"], json!([]));
    let gw = &router["external_gateway_info"];
    assert_eq!(gw["network_id"], public["id"]);
    assert_eq!(gw["enable_snat"], true);
    let gw_ip = gw["external_fixed_ips"][0]["ip_address"]
        .as_str()
        .expect("gateway address")
        .to_string();
    assert!(gw_ip.starts_with("203.0.113."), "{gw}");
    // The gateway port: owned by no project, bound to the gateway node.
    let gw_ports = s
        .get("/v2.0/ports?device_owner=network:router_gateway")
        .await;
    let gp = &gw_ports.body["ports"][0];
    assert_eq!(gp["device_id"], rid.as_str());
    assert_eq!(gp["project_id"], "");
    assert_eq!(gp["binding:host_id"], "gateway");
    assert_eq!(gp["binding:vif_type"], "other");

    // add_router_interface by subnet: the port holds the gateway IP.
    let add = |body: Value| {
        let s = &s;
        let path = format!("/v2.0/routers/{rid}/add_router_interface");
        async move { s.put(&path, body).await }
    };
    let r = add(json!({"subnet_id": sub["id"]})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["id"], rid.as_str());
    assert_eq!(r.body["subnet_id"], sub["id"]);
    assert_eq!(r.body["subnet_ids"], json!([sub["id"]]));
    assert_eq!(r.body["network_id"], net["id"]);
    assert!(r.body.get("router").is_none(), "unwrapped");
    let ifp = s
        .get(&format!(
            "/v2.0/ports/{}",
            r.body["port_id"].as_str().expect("port")
        ))
        .await
        .body["port"]
        .clone();
    assert_eq!(ifp["device_owner"], "network:router_interface");
    assert_eq!(ifp["fixed_ips"][0]["ip_address"], "10.0.0.1");
    assert_eq!(ifp["binding:host_id"], "gateway");
    assert_eq!(ifp["binding:vif_type"], "other");

    // Errors, each leaving nothing behind.
    let ports_before = count(&s, "ports").await;
    let r = add(json!({"subnet_id": sub["id"]})).await;
    assert_eq!((r.status, r.error_type()), (400, "BadRequest"));
    assert_eq!(
        r.message(),
        format!(
            "Bad router request: Router already has a port on subnet {}.",
            sub["id"].as_str().expect("id")
        )
    );
    let other = s.network("other").await;
    let overlapping = s.subnet(&other, "10.0.0.128/25").await;
    let r = add(json!({"subnet_id": overlapping["id"]})).await;
    assert_eq!((r.status, r.error_type()), (400, "BadRequest"));
    assert!(
        r.message().contains("overlaps with cidr 10.0.0.0/24"),
        "{}",
        r.message()
    );
    let nogw_net = s.network("nogw").await;
    let nogw = s
        .create(
            "subnets",
            "subnet",
            json!({"network_id": nogw_net["id"], "cidr": "10.9.0.0/24", "ip_version": 4, "gateway_ip": null}),
        )
        .await;
    let r = add(json!({"subnet_id": nogw["id"]})).await;
    assert_eq!(
        (r.status, r.message()),
        (
            400,
            "Bad router request: Subnet for router interface must have a gateway IP."
        )
    );
    let r = add(json!({})).await;
    assert_eq!(
        (r.status, r.message()),
        (
            400,
            "Bad router request: Either subnet_id or port_id must be specified."
        )
    );
    let r = add(json!({"subnet_id": sub["id"], "port_id": ifp["id"]})).await;
    assert_eq!(
        (r.status, r.message()),
        (
            400,
            "Bad router request: Cannot specify both subnet-id and port-id."
        )
    );
    let vm = s
        .port(
            &net,
            json!({"device_id": "vm-1", "device_owner": "compute:nova"}),
        )
        .await;
    let r = add(json!({"port_id": vm["id"]})).await;
    assert_eq!((r.status, r.error_type()), (409, "PortInUse"));
    let r = s
        .put(
            "/v2.0/routers/00000000-0000-0000-0000-000000000000/add_router_interface",
            json!({"subnet_id": sub["id"]}),
        )
        .await;
    assert_eq!((r.status, r.error_type()), (404, "RouterNotFound"));
    let r = add(json!({"subnet_id": "00000000-0000-0000-0000-000000000000"})).await;
    assert_eq!((r.status, r.error_type()), (404, "SubnetNotFound"));
    assert_eq!(
        count(&s, "ports").await,
        ports_before + 1,
        "only the VM port was added"
    );

    // By port: a free port becomes an interface and keeps its address.
    let free_net = s.network("by-port").await;
    let free_sub = s.subnet(&free_net, "10.1.0.0/24").await;
    let free = s.port(&free_net, json!({})).await;
    let r = add(json!({"port_id": free["id"]})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["subnet_ids"], json!([free_sub["id"]]));
    let p = s.get(&format!("/v2.0/ports/{}", id(&free))).await.body["port"].clone();
    assert_eq!(p["device_id"], rid.as_str());
    assert_eq!(p["device_owner"], "network:router_interface");

    // What a router holds cannot be deleted from under it.
    let r = s.delete(&format!("/v2.0/ports/{}", id(&ifp))).await;
    assert_eq!((r.status, r.error_type()), (409, "ServicePortInUse"));
    let r = s.delete(&format!("/v2.0/subnets/{}", id(&sub))).await;
    assert_eq!((r.status, r.error_type()), (409, "SubnetInUse"));
    let r = s.delete(&format!("/v2.0/networks/{}", id(&net))).await;
    assert_eq!((r.status, r.error_type()), (409, "NetworkInUse"));
    let r = s.delete(&format!("/v2.0/routers/{rid}")).await;
    assert_eq!((r.status, r.error_type()), (409, "RouterInUse"));
    let r = s
        .put(
            &format!("/v2.0/networks/{}", id(&public)),
            json!({"network": {"router:external": false}}),
        )
        .await;
    assert_eq!((r.status, r.error_type()), (409, "ExternalNetworkInUse"));

    // Extra routes: via a connected next hop only.
    let path = format!("/v2.0/routers/{rid}");
    let r = s
        .put(&path, json!({"router": {"routes": [{"destination": "172.16.0.0/16", "nexthop": "192.168.7.1"}]}}))
        .await;
    assert_eq!((r.status, r.error_type()), (400, "InvalidRoutes"));
    let r = s
        .put(&path, json!({"router": {"routes": [{"destination": "172.16.0.0/16", "nexthop": "10.0.0.1"}]}}))
        .await;
    assert_eq!(
        (r.status, r.error_type()),
        (400, "InvalidRoutes"),
        "the router's own address"
    );
    let r = s
        .put(&path, json!({"router": {"routes": [{"destination": "172.16.0.0/16", "nexthop": "10.0.0.254"}]}}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body["router"]["routes"],
        json!([{"destination": "172.16.0.0/16", "nexthop": "10.0.0.254"}])
    );
    let remove = |body: Value| {
        let s = &s;
        let path = format!("/v2.0/routers/{rid}/remove_router_interface");
        async move { s.put(&path, body).await }
    };
    let r = remove(json!({"subnet_id": sub["id"]})).await;
    assert_eq!(
        (r.status, r.error_type()),
        (409, "RouterInterfaceInUseByRoute")
    );
    let r = s.put(&path, json!({"router": {"routes": null}})).await;
    assert_eq!(r.body["router"]["routes"], json!([]));

    // extraroute-atomic: add merges (a route given twice or already there
    // is kept once), remove takes away what is there (an absent one is no
    // error), the result is validated like an update, the router returned.
    let add = format!("/v2.0/routers/{rid}/add_extraroutes");
    let del = format!("/v2.0/routers/{rid}/remove_extraroutes");
    let a = json!({"destination": "172.16.0.0/16", "nexthop": "10.0.0.254"});
    let b = json!({"destination": "172.17.0.0/16", "nexthop": "10.0.0.253"});
    let rev = s.get(&path).await.body["router"]["revision_number"].clone();
    let r = s.put(&add, json!({"router": {"routes": [a, a, b]}})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["router"]["id"], rid.as_str());
    assert_eq!(r.body["router"]["routes"], json!([a, b]));
    assert!(r.body["router"]["revision_number"].as_u64() > rev.as_u64());
    let r = s.put(&add, json!({"router": {"routes": [b]}})).await;
    assert_eq!(r.body["router"]["routes"], json!([a, b]));
    let r = s
        .put(&add, json!({"router": {"routes": [{"destination": "172.18.0.0/16", "nexthop": "192.168.7.1"}]}}))
        .await;
    assert_eq!((r.status, r.error_type()), (400, "InvalidRoutes"));
    for bad in [
        json!({"routes": [a]}),
        json!({"router": {}}),
        json!({"router": {"routes": [a], "name": "x"}}),
        json!({"router": {"routes": "a"}}),
        json!({"router": {"routes": [{"destination": "172.16.0.1/16", "nexthop": "10.0.0.254"}]}}),
    ] {
        let r = s.put(&add, bad.clone()).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
    }
    assert_eq!(
        s.get(&path).await.body["router"]["routes"],
        json!([a, b]),
        "refused requests change nothing"
    );
    let r = s
        .put(&del, json!({"router": {"routes": [a, {"destination": "10.99.0.0/16", "nexthop": "10.0.0.9"}]}}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["router"]["routes"], json!([b]));
    let r = s.put(&del, json!({"router": {"routes": [b]}})).await;
    assert_eq!(r.body["router"]["routes"], json!([]));
    let r = s.post(&add, json!({"router": {"routes": []}})).await;
    assert_eq!(r.status, 405);
    let r = s
        .put(
            "/v2.0/routers/00000000-0000-0000-0000-000000000000/add_extraroutes",
            json!({"router": {"routes": [a]}}),
        )
        .await;
    assert_eq!((r.status, r.error_type()), (404, "RouterNotFound"));

    // Removing: by subnet and by port; unknown ones are 404.
    let r = remove(json!({"subnet_id": other["id"]})).await;
    assert_eq!((r.status, r.error_type()), (404, "SubnetNotFound"));
    let r = remove(json!({"subnet_id": overlapping["id"]})).await;
    assert_eq!(
        (r.status, r.error_type()),
        (404, "RouterInterfaceNotFoundForSubnet")
    );
    let r = remove(json!({"port_id": vm["id"]})).await;
    assert_eq!((r.status, r.error_type()), (404, "RouterInterfaceNotFound"));
    let r = remove(json!({"subnet_id": sub["id"]})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        s.get(&format!("/v2.0/ports/{}", id(&ifp))).await.status,
        404
    );
    let r = remove(json!({"port_id": free["id"]})).await;
    assert_eq!(r.status, 200, "{}", r.body);

    // Clearing the gateway removes its port; then the router goes.
    let r = s
        .put(&path, json!({"router": {"external_gateway_info": {}}}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["router"]["external_gateway_info"], Value::Null);
    assert_eq!(
        s.get("/v2.0/ports?device_owner=network:router_gateway")
            .await
            .body["ports"],
        json!([])
    );
    assert_eq!(s.delete(&path).await.status, 204);
    assert_eq!(s.get(&path).await.status, 404);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floating_ips_associate_through_a_router() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start_with(dir.path(), l3()).await;
    let (public, _pub_sub, net, sub) = setup(&s).await;
    let vm = s
        .port(&net, json!({"binding:host_id": "compute-2", "device_id": "vm", "device_owner": "compute:nova"}))
        .await;
    let fip = s
        .create(
            "floatingips",
            "floatingip",
            json!({"floating_network_id": public["id"]}),
        )
        .await;
    let fid = id(&fip);
    assert_eq!(fip["status"], "DOWN");
    assert_eq!(fip["port_id"], Value::Null);
    assert_eq!(fip["port_details"], Value::Null);
    assert!(
        fip["floating_ip_address"]
            .as_str()
            .expect("addr")
            .starts_with("203.0.113.")
    );
    let path = format!("/v2.0/floatingips/{fid}");

    // No router joins the subnet to `public` yet.
    let r = s
        .put(&path, json!({"floatingip": {"port_id": vm["id"]}}))
        .await;
    assert_eq!(
        (r.status, r.error_type()),
        (404, "ExternalGatewayForFloatingIPNotFound")
    );

    let router = s
        .create(
            "routers",
            "router",
            json!({"name": "r", "external_gateway_info": {"network_id": public["id"]}}),
        )
        .await;
    let rid = id(&router);
    let r = s
        .put(
            &format!("/v2.0/routers/{rid}/add_router_interface"),
            json!({"subnet_id": sub["id"]}),
        )
        .await;
    assert_eq!(r.status, 200);
    let r = s
        .put(&path, json!({"floatingip": {"port_id": vm["id"]}}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let f = &r.body["floatingip"];
    assert_eq!(f["router_id"], rid.as_str());
    assert_eq!(f["fixed_ip_address"], vm["fixed_ips"][0]["ip_address"]);
    assert_eq!(f["status"], "ACTIVE");
    assert_eq!(f["port_details"]["mac_address"], vm["mac_address"]);
    assert_eq!(f["port_details"]["device_owner"], "compute:nova");
    // The associated fixed IP cannot be taken from the port.
    let r = s
        .put(
            &format!("/v2.0/ports/{}", id(&vm)),
            json!({"port": {"fixed_ips": [{"subnet_id": sub["id"], "ip_address": "10.0.0.99"}]}}),
        )
        .await;
    assert_eq!(
        (r.status, r.error_type()),
        (400, "BadRequest"),
        "{}",
        r.body
    );
    // A PUT without port_id keeps the association.
    let r = s
        .put(&path, json!({"floatingip": {"description": "web"}}))
        .await;
    assert_eq!(r.body["floatingip"]["port_id"], vm["id"]);

    // One floating IP per fixed IP and external network.
    let second = s
        .create(
            "floatingips",
            "floatingip",
            json!({"floating_network_id": public["id"]}),
        )
        .await;
    let r = s
        .put(
            &format!("/v2.0/floatingips/{}", id(&second)),
            json!({"floatingip": {"port_id": vm["id"]}}),
        )
        .await;
    assert_eq!(
        (r.status, r.error_type()),
        (409, "FloatingIPPortAlreadyAssociated")
    );
    let r = s
        .put(
            &path,
            json!({"floatingip": {"port_id": vm["id"], "fixed_ip_address": "10.0.0.200"}}),
        )
        .await;
    assert_eq!((r.status, r.error_type()), (400, "BadRequest"));
    // Floating IPs come from external networks only.
    let r = s
        .post(
            "/v2.0/floatingips",
            json!({"floatingip": {"floating_network_id": net["id"]}}),
        )
        .await;
    assert_eq!((r.status, r.error_type()), (400, "BadRequest"));
    // What the association needs stays.
    let r = s
        .put(
            &format!("/v2.0/routers/{rid}/remove_router_interface"),
            json!({"subnet_id": sub["id"]}),
        )
        .await;
    assert_eq!(
        (r.status, r.error_type()),
        (409, "RouterInterfaceInUseByFloatingIP")
    );
    let r = s
        .put(
            &format!("/v2.0/routers/{rid}"),
            json!({"router": {"external_gateway_info": null}}),
        )
        .await;
    assert_eq!(
        (r.status, r.error_type()),
        (409, "RouterExternalGatewayInUseByFloatingIp")
    );
    let r = s
        .delete(&format!(
            "/v2.0/ports/{}",
            fip["floating_port_id"].as_str().unwrap_or("x")
        ))
        .await;
    assert_eq!(r.status, 404, "floating_port_id is not exposed");
    let fport = s
        .get("/v2.0/ports?device_owner=network:floatingip")
        .await
        .body["ports"][0]
        .clone();
    let r = s.delete(&format!("/v2.0/ports/{}", id(&fport))).await;
    assert_eq!((r.status, r.error_type()), (409, "ServicePortInUse"));

    // Disassociate; deleting the VM port also disassociates.
    let r = s.put(&path, json!({"floatingip": {"port_id": null}})).await;
    assert_eq!(r.body["floatingip"]["status"], "DOWN");
    assert_eq!(r.body["floatingip"]["router_id"], Value::Null);
    let r = s
        .put(
            &format!("/v2.0/floatingips/{}", id(&second)),
            json!({"floatingip": {"port_id": vm["id"]}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        s.delete(&format!("/v2.0/ports/{}", id(&vm))).await.status,
        204
    );
    let f2 = s
        .get(&format!("/v2.0/floatingips/{}", id(&second)))
        .await
        .body["floatingip"]
        .clone();
    assert_eq!(
        (f2["port_id"].clone(), f2["status"].clone()),
        (Value::Null, json!("DOWN"))
    );

    // Deleting a floating IP releases its address and port.
    assert_eq!(s.delete(&path).await.status, 204);
    assert_eq!(s.get(&path).await.status, 404);
    assert_eq!(
        s.get("/v2.0/ports?device_owner=network:floatingip")
            .await
            .body["ports"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l3_extensions_are_listed_once_when_enabled() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start_with(dir.path(), l3()).await;
    let ext = s.get("/v2.0/extensions").await.body["extensions"].clone();
    let aliases: Vec<&str> = ext
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|e| e["alias"].as_str())
        .collect();
    for a in [
        "router",
        "ext-gw-mode",
        "extraroute",
        "extraroute-atomic",
        "fip-port-details",
        "external-net",
    ] {
        assert_eq!(
            aliases.iter().filter(|x| **x == a).count(),
            1,
            "{a}: {aliases:?}"
        );
    }
    let mut sorted = aliases.clone();
    sorted.sort_unstable();
    assert_eq!(aliases, sorted);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_gateway_cannot_realise_is_refused_with_501() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start_with(dir.path(), l3()).await;
    let (public, _, net, sub) = setup(&s).await;
    let router = s
        .create(
            "routers",
            "router",
            json!({"external_gateway_info": {"network_id": public["id"]}}),
        )
        .await;
    let rid = id(&router);
    let v6 = s.subnet(&net, "2001:db8::/64").await;
    let r = s
        .put(
            &format!("/v2.0/routers/{rid}/add_router_interface"),
            json!({"subnet_id": v6["id"]}),
        )
        .await;
    assert_eq!(
        (r.status, r.error_type()),
        (501, "NotImplementedError"),
        "{}",
        r.body
    );
    assert_eq!(
        s.get("/v2.0/ports?device_owner=network:router_interface")
            .await
            .body["ports"],
        json!([]),
        "nothing half-made"
    );
    let r = s
        .put(
            &format!("/v2.0/routers/{rid}/add_router_interface"),
            json!({"subnet_id": sub["id"]}),
        )
        .await;
    assert_eq!(r.status, 200);
    // A next hop on the external subnet is valid for Neutron but not realisable here.
    let r = s
        .put(
            &format!("/v2.0/routers/{rid}"),
            json!({"router": {"routes": [{"destination": "192.168.50.0/24", "nexthop": "203.0.113.77"}]}}),
        )
        .await;
    assert_eq!(
        (r.status, r.error_type()),
        (501, "NotImplementedError"),
        "{}",
        r.body
    );
    assert_eq!(
        s.get(&format!("/v2.0/routers/{rid}")).await.body["router"]["routes"],
        json!([])
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routers_spread_over_gateway_nodes_and_report_where() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start_with(dir.path(), l3()).await;
    setup(&s).await;
    let gw2 = s
        .report(
            "gateway-2",
            "Gateway agent",
            json!({"tunneling_ip": "192.0.2.2"}),
        )
        .await;
    let mut hosts = Vec::new();
    for name in ["a", "b", "c", "d"] {
        let r = s.create("routers", "router", json!({ "name": name })).await;
        let ag = s.get(&format!("/v2.0/routers/{}/l3-agents", id(&r))).await;
        assert_eq!(ag.status, 200, "{}", ag.body);
        let list = ag.body["agents"].as_array().expect("agents").clone();
        assert_eq!(list.len(), 1, "{list:?}");
        assert_eq!(list[0]["agent_type"], "Gateway agent");
        assert_eq!(list[0]["alive"], true);
        hosts.push(list[0]["host"].as_str().expect("host").to_string());
    }
    hosts.sort();
    assert_eq!(
        hosts,
        ["gateway", "gateway", "gateway-2", "gateway-2"],
        "least loaded first"
    );
    let hosted = s
        .get(&format!("/v2.0/agents/{}/l3-routers", id(&gw2)))
        .await;
    assert_eq!(hosted.body["routers"].as_array().map(Vec::len), Some(2));
    let ovs = s.get("/v2.0/agents?host=compute-1").await.body["agents"][0].clone();
    let r = s
        .get(&format!("/v2.0/agents/{}/l3-routers", id(&ovs)))
        .await;
    assert_eq!((r.status, r.error_type()), (404, "InvalidL3Agent"));
    let r = s
        .post(
            &format!("/v2.0/agents/{}/l3-routers", id(&gw2)),
            json!({"router_id": "x"}),
        )
        .await;
    assert_eq!(r.status, 501);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_made_before_any_gateway_node_is_placed_when_one_reports() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start_with(dir.path(), l3()).await;
    s.lab_agents().await;
    let net = s.network("n").await;
    let sub = s.subnet(&net, "10.70.0.0/24").await;
    let r = s
        .create("routers", "router", json!({"name": "early"}))
        .await;
    let rid = id(&r);
    let info = s
        .put(
            &format!("/v2.0/routers/{rid}/add_router_interface"),
            json!({"subnet_id": sub["id"]}),
        )
        .await;
    assert_eq!(info.status, 200, "{}", info.body);
    let port = format!(
        "/v2.0/ports/{}",
        info.body["port_id"].as_str().expect("port")
    );
    assert_eq!(
        s.get(&port).await.body["port"]["binding:vif_type"],
        "unbound",
        "no gateway node to bind to yet"
    );
    assert_eq!(
        s.get(&format!("/v2.0/routers/{rid}/l3-agents")).await.body["agents"],
        json!([])
    );
    s.report(
        "gateway",
        "Gateway agent",
        json!({"tunneling_ip": "192.0.2.1"}),
    )
    .await;
    let p = s.get(&port).await.body["port"].clone();
    assert_eq!(
        (p["binding:host_id"].clone(), p["binding:vif_type"].clone()),
        (json!("gateway"), json!("other"))
    );
    let ag = s.get(&format!("/v2.0/routers/{rid}/l3-agents")).await;
    assert_eq!(ag.body["agents"][0]["host"], "gateway");
    s.stop().await;
}
