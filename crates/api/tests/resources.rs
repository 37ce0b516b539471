//! CRUD of every resource over real HTTP, and every error status the API promises.

mod common;

use common::{Server, id};
use reqwest::Method;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_index_and_extensions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    let r = s.get("/").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["versions"][0]["id"], "v2.0");
    assert_eq!(r.body["versions"][0]["status"], "CURRENT");
    assert!(
        r.body["versions"][0]["links"][0]["href"]
            .as_str()
            .expect("href")
            .ends_with("/v2.0/")
    );
    assert_eq!(s.post("/", json!({})).await.status, 405);
    let r = s.get("/v2.0/").await;
    let names: Vec<&str> = r.body["resources"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|x| x["collection"].as_str())
        .collect();
    assert_eq!(names, vec!["networks", "subnets", "ports"]);
    let r = s.get("/v2.0/extensions").await;
    let aliases: Vec<&str> = r.body["extensions"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|x| x["alias"].as_str())
        .collect();
    for a in [
        "binding",
        "binding-extended",
        "provider",
        "multi-provider",
        "segment",
        "external-net",
        "revision-if-match",
        "standard-attr-tag",
        "agent",
        "router",
        "ext-gw-mode",
        "extraroute",
        "fip-port-details",
    ] {
        assert!(aliases.contains(&a), "missing extension {a}");
    }
    for absent in ["qos", "dns-integration", "dvr", "l3-ha"] {
        assert!(
            !aliases.contains(&absent),
            "{absent} is not implemented and must not be listed"
        );
    }
    assert_eq!(
        s.get("/v2.0/extensions/binding-extended").await.body["extension"]["alias"],
        "binding-extended"
    );
    assert_eq!(s.get("/v2.0/extensions/qos").await.status, 404);
    assert_eq!(s.get("/v2.0/nothing").await.status, 404);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_crud_and_provider_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    let n = s.network("demo-net").await;
    assert_eq!(n["provider:network_type"], "vxlan");
    assert_eq!(n["provider:segmentation_id"], 1000);
    assert_eq!(n["mtu"], 1450);
    assert_eq!(n["status"], "ACTIVE");
    assert_eq!(n["project_id"], "proj-a");
    assert_eq!(n["tenant_id"], "proj-a");
    assert_eq!(n["revision_number"], 0);
    assert_eq!(n["shared"], false);
    assert_eq!(n["router:external"], false);
    let nid = id(&n);

    let r = s
        .put(
            &format!("/v2.0/networks/{nid}"),
            json!({"network": {"name": "renamed", "mtu": 1400}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["network"]["name"], "renamed");
    assert_eq!(r.body["network"]["mtu"], 1400);
    assert_eq!(r.body["network"]["revision_number"], 1);
    let r = s
        .put(
            &format!("/v2.0/networks/{nid}"),
            json!({"network": {"mtu": 9000}}),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.message(),
        "Invalid input for operation: Requested MTU is too big, maximum is 1450."
    );

    // Provider VLAN and flat networks; a taken VLAN is 409 VlanIdInUse.
    let v = s
        .create("networks", "network", json!({"name": "v", "provider:network_type": "vlan", "provider:physical_network": "physnet1", "provider:segmentation_id": 150}))
        .await;
    assert_eq!(v["provider:segmentation_id"], 150);
    assert_eq!(v["mtu"], 1500);
    let r = s
        .post("/v2.0/networks", json!({"network": {"provider:network_type": "vlan", "provider:physical_network": "physnet1", "provider:segmentation_id": 150}}))
        .await;
    assert_eq!((r.status, r.error_type()), (409, "VlanIdInUse"));
    assert_eq!(
        r.message(),
        "Unable to create the network. The VLAN 150 on physical network physnet1 is in use."
    );
    let f = s
        .create(
            "networks",
            "network",
            json!({"provider:network_type": "flat", "provider:physical_network": "public"}),
        )
        .await;
    assert_eq!(f["provider:network_type"], "flat");
    let r = s.post("/v2.0/networks", json!({"network": {"provider:network_type": "flat", "provider:physical_network": "public"}})).await;
    assert_eq!((r.status, r.error_type()), (409, "FlatNetworkInUse"));
    let r = s.post("/v2.0/networks", json!({"network": {"provider:network_type": "vxlan", "provider:segmentation_id": 1000}})).await;
    assert_eq!((r.status, r.error_type()), (409, "TunnelIdInUse"));
    let r = s.post("/v2.0/networks", json!({"network": {"provider:network_type": "vlan", "provider:physical_network": "physnet9"}})).await;
    assert_eq!((r.status, r.error_type()), (400, "InvalidInput"));
    let r = s.post("/v2.0/networks", json!({"network": {"provider:network_type": "vlan", "provider:physical_network": "physnet1", "provider:segmentation_id": 5000}})).await;
    assert_eq!(r.status, 400);
    let r = s
        .post(
            "/v2.0/networks",
            json!({"network": {"provider:network_type": "geneve"}}),
        )
        .await;
    assert_eq!(r.status, 400);

    // Multi-segment networks show `segments`, not provider:*.
    let m = s
        .create("networks", "network", json!({"segments": [
            {"provider:network_type": "vxlan", "provider:segmentation_id": 7000},
            {"provider:network_type": "vlan", "provider:physical_network": "physnet1", "provider:segmentation_id": 160}]}))
        .await;
    assert!(m.get("provider:network_type").is_none());
    assert_eq!(m["segments"].as_array().expect("segments").len(), 2);
    let segs = s
        .get(&format!("/v2.0/segments?network_id={}", id(&m)))
        .await;
    assert_eq!(segs.body["segments"].as_array().expect("list").len(), 2);

    assert_eq!(s.delete(&format!("/v2.0/networks/{nid}")).await.status, 204);
    let r = s.get(&format!("/v2.0/networks/{nid}")).await;
    assert_eq!((r.status, r.error_type()), (404, "NetworkNotFound"));
    assert_eq!(r.message(), format!("Network {nid} could not be found."));
    assert_eq!(s.delete(&format!("/v2.0/networks/{nid}")).await.status, 404);
    // The VNI was released: the next project network reuses it.
    assert_eq!(s.network("again").await["provider:segmentation_id"], 1000);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn project_networks_exhaust_with_503() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = switchyard_ml2::Ml2Config {
        vni_ranges: vec!["10:11".into()],
        ..Default::default()
    };
    let s = Server::start_with(dir.path(), cfg).await;
    s.network("a").await;
    s.network("b").await;
    let r = s
        .post("/v2.0/networks", json!({"network": {"name": "c"}}))
        .await;
    assert_eq!((r.status, r.error_type()), (503, "NoNetworkAvailable"));
    assert_eq!(
        r.message(),
        "Unable to create the network. No project network is available for allocation."
    );
    // Nothing was half-created.
    assert_eq!(
        s.get("/v2.0/networks").await.body["networks"]
            .as_array()
            .expect("list")
            .len(),
        2
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subnet_crud_and_validation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    let n = s.network("net").await;
    let sub = s.subnet(&n, "50.50.50.0/24").await;
    assert_eq!(sub["gateway_ip"], "50.50.50.1");
    assert_eq!(
        sub["allocation_pools"],
        json!([{"start": "50.50.50.2", "end": "50.50.50.254"}])
    );
    assert_eq!(sub["enable_dhcp"], true);
    let net = s.get(&format!("/v2.0/networks/{}", id(&n))).await.body["network"].clone();
    assert_eq!(net["subnets"], json!([id(&sub)]));
    assert_eq!(net["revision_number"], 1, "a subnet revises its network");

    let cases = [
        (
            json!({"cidr": "50.50.50.0/25", "ip_version": 4}),
            400,
            "InvalidInput",
        ),
        (
            json!({"cidr": "not-a-cidr", "ip_version": 4}),
            400,
            "HTTPBadRequest",
        ),
        (
            json!({"cidr": "10.0.0.0/24", "ip_version": 6}),
            400,
            "InvalidInput",
        ),
        (
            json!({"cidr": "10.0.0.0/24", "ip_version": 5}),
            400,
            "HTTPBadRequest",
        ),
        (json!({"cidr": "10.0.0.0/24"}), 400, "HTTPBadRequest"),
        (
            json!({"cidr": "10.0.0.0/24", "ip_version": 4, "gateway_ip": "10.0.0.0"}),
            400,
            "InvalidInput",
        ),
        (
            json!({"cidr": "10.0.0.0/24", "ip_version": 4, "allocation_pools": [{"start": "10.0.0.10", "end": "10.0.1.5"}]}),
            400,
            "OutOfBoundsAllocationPool",
        ),
        (
            json!({"cidr": "10.0.0.0/24", "ip_version": 4, "allocation_pools": [{"start": "10.0.0.10", "end": "10.0.0.20"}, {"start": "10.0.0.15", "end": "10.0.0.30"}]}),
            409,
            "OverlappingAllocationPools",
        ),
        (
            json!({"cidr": "10.0.0.0/24", "ip_version": 4, "allocation_pools": [{"start": "10.0.0.1", "end": "10.0.0.20"}]}),
            409,
            "GatewayConflictWithAllocationPools",
        ),
        (
            json!({"cidr": "10.0.0.0/24", "ip_version": 4, "dns_nameservers": ["8.8.8.8", "bogus"]}),
            400,
            "HTTPBadRequest",
        ),
        (
            json!({"cidr": "10.0.0.0/24", "ip_version": 4, "colour": "blue"}),
            400,
            "HTTPBadRequest",
        ),
        (
            json!({"cidr": "10.0.0.0/31", "ip_version": 4}),
            400,
            "InvalidInput",
        ),
    ];
    for (body, status, kind) in cases {
        let mut b = body.clone();
        b["network_id"] = n["id"].clone();
        let r = s.post("/v2.0/subnets", json!({ "subnet": b })).await;
        assert_eq!(
            (r.status, r.error_type()),
            (status, kind),
            "{body} -> {}",
            r.body
        );
    }
    let r = s
        .post(
            "/v2.0/subnets",
            json!({"subnet": {"network_id": n["id"], "cidr": "50.50.50.128/25", "ip_version": 4}}),
        )
        .await;
    assert!(
        r.message().contains("overlaps with another subnet"),
        "{}",
        r.body
    );

    // Host bits are dropped; gateway null gives the whole range to the pool.
    let g = s
        .create("subnets", "subnet", json!({"network_id": n["id"], "cidr": "10.9.0.7/29", "ip_version": 4, "gateway_ip": null, "host_routes": [{"destination": "0.0.0.0/0", "nexthop": "10.9.0.1"}], "dns_nameservers": ["10.9.0.2"]}))
        .await;
    assert_eq!(g["cidr"], "10.9.0.0/29");
    assert_eq!(g["gateway_ip"], json!(null));
    assert_eq!(
        g["allocation_pools"],
        json!([{"start": "10.9.0.1", "end": "10.9.0.6"}])
    );
    assert_eq!(g["host_routes"][0]["nexthop"], "10.9.0.1");

    // IPv6: gateway is the subnet-router anycast address; SLAAC needs /64.
    let v6 = s.create("subnets", "subnet", json!({"network_id": n["id"], "cidr": "2001:db8::/64", "ip_version": 6, "ipv6_address_mode": "slaac", "ipv6_ra_mode": "slaac"})).await;
    assert_eq!(v6["gateway_ip"], "2001:db8::");
    let r = s.post("/v2.0/subnets", json!({"subnet": {"network_id": n["id"], "cidr": "2001:db9::/80", "ip_version": 6, "ipv6_address_mode": "slaac"}})).await;
    assert_eq!(r.status, 400);

    let sid = id(&sub);
    let r = s
        .put(
            &format!("/v2.0/subnets/{sid}"),
            json!({"subnet": {"name": "s1", "dns_nameservers": ["1.1.1.1"]}}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["subnet"]["dns_nameservers"], json!(["1.1.1.1"]));
    let r = s
        .put(
            &format!("/v2.0/subnets/{sid}"),
            json!({"subnet": {"cidr": "50.50.0.0/16"}}),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.message(), "Cannot update read-only attribute cidr");

    // A subnet with an allocated address is in use.
    let p = s.port(&n, json!({})).await;
    let r = s.delete(&format!("/v2.0/subnets/{sid}")).await;
    assert_eq!((r.status, r.error_type()), (409, "SubnetInUse"));
    s.delete(&format!("/v2.0/ports/{}", id(&p))).await;
    assert_eq!(s.delete(&format!("/v2.0/subnets/{sid}")).await.status, 204);
    assert_eq!(
        s.get(&format!("/v2.0/subnets/{sid}")).await.error_type(),
        "SubnetNotFound"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_crud_addresses_and_conflicts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    let n = s.network("net").await;
    let sub = s.subnet(&n, "10.0.0.0/29").await; // pool 10.0.0.2 - 10.0.0.6
    let p = s
        .port(
            &n,
            json!({"name": "p1", "device_id": "vm-1", "device_owner": "compute:nova"}),
        )
        .await;
    assert!(
        p["mac_address"]
            .as_str()
            .expect("mac")
            .starts_with("fa:16:3e:")
    );
    assert_eq!(
        p["fixed_ips"],
        json!([{"subnet_id": id(&sub), "ip_address": "10.0.0.2"}])
    );
    assert_eq!(p["status"], "DOWN");
    assert_eq!(p["binding:vif_type"], "unbound");
    assert_eq!(p["binding:vnic_type"], "normal");
    assert_eq!(p["port_security_enabled"], true);

    // Requested address and MAC; conflicts are 409 with Neutron's types.
    let q = s
        .port(
            &n,
            json!({"fixed_ips": [{"ip_address": "10.0.0.5"}], "mac_address": "FA:16:3E:00:00:05"}),
        )
        .await;
    assert_eq!(q["mac_address"], "fa:16:3e:00:00:05");
    assert_eq!(q["fixed_ips"][0]["ip_address"], "10.0.0.5");
    let r = s
        .post(
            "/v2.0/ports",
            json!({"port": {"network_id": n["id"], "fixed_ips": [{"ip_address": "10.0.0.5"}]}}),
        )
        .await;
    assert_eq!((r.status, r.error_type()), (409, "IpAddressInUse"));
    let r = s
        .post(
            "/v2.0/ports",
            json!({"port": {"network_id": n["id"], "mac_address": "fa:16:3e:00:00:05"}}),
        )
        .await;
    assert_eq!((r.status, r.error_type()), (409, "MacAddressInUse"));
    let r = s
        .post(
            "/v2.0/ports",
            json!({"port": {"network_id": n["id"], "fixed_ips": [{"ip_address": "10.0.1.5"}]}}),
        )
        .await;
    assert_eq!((r.status, r.error_type()), (400, "InvalidIpForNetwork"));
    let r = s.post("/v2.0/ports", json!({"port": {"network_id": n["id"], "fixed_ips": [{"subnet_id": id(&sub), "ip_address": "10.0.0.7"}]}})).await;
    assert_eq!((r.status, r.error_type()), (400, "InvalidIpForSubnet"));
    let r = s
        .post(
            "/v2.0/ports",
            json!({"port": {"network_id": n["id"], "fixed_ips": [{"ip_address": "10.0.0.300"}]}}),
        )
        .await;
    assert_eq!(r.status, 400);
    let r = s
        .post(
            "/v2.0/ports",
            json!({"port": {"network_id": n["id"], "mac_address": "zz:16:3e:00:00:05"}}),
        )
        .await;
    assert_eq!(r.status, 400);
    let r = s
        .post(
            "/v2.0/ports",
            json!({"port": {"network_id": "00000000-0000-0000-0000-000000000000"}}),
        )
        .await;
    assert_eq!((r.status, r.error_type()), (404, "NetworkNotFound"));

    // Exhaust the pool: 10.0.0.3, .4, .6 remain.
    for _ in 0..3 {
        s.port(&n, json!({})).await;
    }
    let r = s
        .post("/v2.0/ports", json!({"port": {"network_id": n["id"]}}))
        .await;
    assert_eq!(
        (r.status, r.error_type()),
        (409, "IpAddressGenerationFailure")
    );
    assert_eq!(
        r.message(),
        format!("No more IP addresses available on network {}.", id(&n))
    );

    // Update: fixed_ips replaced, address pairs, port security rules.
    let pid = id(&p);
    let r = s
        .put(
            &format!("/v2.0/ports/{pid}"),
            json!({"port": {"fixed_ips": [], "name": "p1b"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["port"]["fixed_ips"], json!([]));
    let r = s
        .put(
            &format!("/v2.0/ports/{pid}"),
            json!({"port": {"fixed_ips": [{"ip_address": "10.0.0.2"}]}}),
        )
        .await;
    assert_eq!(r.body["port"]["fixed_ips"][0]["ip_address"], "10.0.0.2");
    let r = s
        .put(
            &format!("/v2.0/ports/{pid}"),
            json!({"port": {"allowed_address_pairs": [{"ip_address": "10.0.0.100/32"}]}}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body["port"]["allowed_address_pairs"][0]["mac_address"],
        p["mac_address"]
    );
    let r = s
        .put(
            &format!("/v2.0/ports/{pid}"),
            json!({"port": {"port_security_enabled": false}}),
        )
        .await;
    assert_eq!(
        (r.status, r.error_type()),
        (409, "AddressPairAndPortSecurityRequired")
    );
    let r = s
        .put(
            &format!("/v2.0/ports/{pid}"),
            json!({"port": {"status": "ACTIVE"}}),
        )
        .await;
    assert_eq!(r.status, 400);
    let r = s
        .put(
            &format!("/v2.0/ports/{pid}"),
            json!({"port": {"network_id": n["id"]}}),
        )
        .await;
    assert_eq!(r.message(), "Cannot update read-only attribute network_id");

    // A network with ports is in use; deleting the ports frees it.
    let r = s.delete(&format!("/v2.0/networks/{}", id(&n))).await;
    assert_eq!((r.status, r.error_type()), (409, "NetworkInUse"));
    let ports = s
        .get(&format!("/v2.0/ports?network_id={}", id(&n)))
        .await
        .body["ports"]
        .clone();
    for port in ports.as_array().expect("list") {
        assert_eq!(
            s.delete(&format!("/v2.0/ports/{}", id(port))).await.status,
            204
        );
    }
    assert_eq!(
        s.delete(&format!("/v2.0/networks/{}", id(&n))).await.status,
        204
    );
    assert_eq!(
        s.get(&format!("/v2.0/ports/{pid}")).await.error_type(),
        "PortNotFound"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_neutron_400s() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    let raw = |body: &'static str| {
        let http = s.http.clone();
        let url = format!("{}/v2.0/networks", s.base);
        async move {
            let r = http
                .post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .expect("sent");
            let status = r.status().as_u16();
            let v: serde_json::Value = r.json().await.expect("json error body");
            (
                status,
                v["NeutronError"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        }
    };
    assert_eq!(
        raw("{not json").await,
        (400, "Body contains invalid data".into())
    );
    assert_eq!(
        raw("[1,2]").await,
        (400, "Body contains invalid data".into())
    );
    assert_eq!(
        raw("{}").await,
        (400, "Unable to find 'network' in request body".into())
    );
    assert_eq!(
        raw("{\"network\": 3}").await,
        (400, "Object 'network' contains invalid data".into())
    );
    assert_eq!(raw("{\"network\": {\"name\": 3}}").await.0, 400);
    assert_eq!(
        raw("{\"network\": {\"admin_state_up\": \"maybe\"}}")
            .await
            .0,
        400
    );
    assert_eq!(
        raw("{\"network\": {\"id\": \"x\"}}").await,
        (400, "Attribute 'id' not allowed in POST".into())
    );
    assert_eq!(
        raw("{\"network\": {\"bogus\": 1}}").await,
        (400, "Unrecognized attribute(s) 'bogus'".into())
    );
    assert_eq!(
        raw("{\"networks\": []}").await,
        (400, "Resources required".into())
    );
    let huge = format!("{{\"network\": {{\"name\": \"{}\"}}}}", "x".repeat(300));
    let r = s
        .http
        .post(format!("{}/v2.0/networks", s.base))
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status().as_u16(), 400);
    // Wrong method on a member, and a body on DELETE.
    let n = s.network("x").await;
    assert_eq!(
        s.post(&format!("/v2.0/networks/{}", id(&n)), json!({}))
            .await
            .status,
        405
    );
    let r = s
        .req(
            Method::DELETE,
            &format!("/v2.0/networks/{}", id(&n)),
            Some(json!({"a": 1})),
            &[],
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        s.get(&format!("/v2.0/networks/{}", id(&n))).await.status,
        200
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_create_is_all_or_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    let n = s.network("net").await;
    s.subnet(&n, "10.0.0.0/24").await;
    let r = s
        .post(
            "/v2.0/ports",
            json!({"ports": [
            {"network_id": n["id"], "name": "a", "tags": ["x"]},
            {"network_id": n["id"], "name": "b"}]}),
        )
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(r.body["ports"].as_array().expect("list").len(), 2);
    assert_eq!(r.body["ports"][0]["tags"], json!(["x"]));
    let r = s
        .post(
            "/v2.0/ports",
            json!({"ports": [
            {"network_id": n["id"], "name": "c", "fixed_ips": [{"ip_address": "10.0.0.50"}]},
            {"network_id": n["id"], "name": "d", "fixed_ips": [{"ip_address": "10.0.0.50"}]}]}),
        )
        .await;
    assert_eq!((r.status, r.error_type()), (409, "IpAddressInUse"));
    let names: Vec<String> = s.get("/v2.0/ports").await.body["ports"]
        .as_array()
        .expect("list")
        .iter()
        .map(|p| p["name"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        names.len(),
        2,
        "the failed bulk request left nothing behind: {names:?}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_api_and_liveness() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    let a = s
        .report(
            "compute-1",
            "Open vSwitch agent",
            json!({"bridge_mappings": {"physnet1": "br-phys"}, "tunneling_ip": "192.0.2.11"}),
        )
        .await;
    assert_eq!(a["alive"], true);
    assert_eq!(a["binary"], "switchyard-ovs-agent");
    let aid = id(&a);
    // Upsert by (agent_type, host).
    let again = s
        .report(
            "compute-1",
            "Open vSwitch agent",
            json!({"bridge_mappings": {"physnet1": "br-phys"}}),
        )
        .await;
    assert_eq!(id(&again), aid);
    let list = s
        .get("/v2.0/agents?agent_type=Open%20vSwitch%20agent&alive=true")
        .await;
    assert_eq!(list.body["agents"].as_array().expect("list").len(), 1);
    s.clock.advance(76);
    let r = s.get(&format!("/v2.0/agents/{aid}")).await;
    assert_eq!(r.body["agent"]["alive"], false);
    assert_eq!(
        s.get("/v2.0/agents?alive=true").await.body["agents"],
        json!([])
    );
    let r = s
        .put(
            &format!("/v2.0/agents/{aid}"),
            json!({"agent": {"admin_state_up": false, "description": "maintenance"}}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["agent"]["admin_state_up"], false);
    assert_eq!(r.body["agent"]["description"], "maintenance");
    let r = s
        .put(
            &format!("/v2.0/agents/{aid}"),
            json!({"agent": {"host": "other"}}),
        )
        .await;
    assert_eq!(r.message(), "Cannot update read-only attribute host");
    assert_eq!(
        s.post("/v2.0/agents", json!({"agent": {}})).await.status,
        405
    );
    // The report API speaks for enrolled nodes only: no credential is 401,
    // another host's or role's is 403, a bad body with a good one is 400.
    let r = s
        .post(
            "/switchyard/v1/agents/report",
            json!({"agent": {"host": "h"}}),
        )
        .await;
    assert_eq!((r.status, r.error_type()), (401, "HTTPUnauthorized"));
    let auth = format!(
        "Bearer {}",
        s.token("compute-1", switchyard_proto::Role::Ovs)
    );
    for (body, status) in [
        (
            json!({"agent": {"host": "h", "agent_type": "Open vSwitch agent"}}),
            403,
        ),
        (
            json!({"agent": {"host": "compute-1", "agent_type": "Gateway agent"}}),
            403,
        ),
        (
            json!({"agent": {"host": "compute-1", "agent_type": "Open vSwitch agent", "configurations": 7}}),
            400,
        ),
    ] {
        let r = s
            .req(
                Method::POST,
                "/switchyard/v1/agents/report",
                Some(body.clone()),
                &[("authorization", &auth)],
            )
            .await;
        assert_eq!(r.status, status, "{body}: {}", r.body);
    }
    let r = s
        .req(
            Method::POST,
            "/switchyard/v1/agents/report",
            Some(json!({"agent": {"host": "compute-1", "agent_type": "Open vSwitch agent"}})),
            &[(
                "authorization",
                "Bearer 0000000000000000000000000000000000000000000000000000000000000000",
            )],
        )
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(s.delete(&format!("/v2.0/agents/{aid}")).await.status, 204);
    let r = s.get(&format!("/v2.0/agents/{aid}")).await;
    assert_eq!((r.status, r.error_type()), (404, "AgentNotFound"));
    // Non-admin callers may not see agents.
    let r = s
        .req(Method::GET, "/v2.0/agents", None, &[("x-roles", "member")])
        .await;
    assert_eq!(r.status, 403);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_api() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    let n = s.network("net").await;
    let seg = s
        .create("segments", "segment", json!({"network_id": n["id"], "network_type": "vlan", "physical_network": "physnet1", "segmentation_id": 120, "name": "rack1"}))
        .await;
    assert_eq!(seg["segmentation_id"], 120);
    assert_eq!(seg["name"], "rack1");
    let r = s.post("/v2.0/segments", json!({"segment": {"network_id": n["id"], "network_type": "vlan", "physical_network": "physnet1", "segmentation_id": 120}})).await;
    assert_eq!((r.status, r.error_type()), (409, "VlanIdInUse"));
    let segid = id(&seg);
    let r = s
        .put(
            &format!("/v2.0/segments/{segid}"),
            json!({"segment": {"name": "rack-1"}}),
        )
        .await;
    assert_eq!(r.body["segment"]["name"], "rack-1");
    let sub = s.create("subnets", "subnet", json!({"network_id": n["id"], "cidr": "10.1.0.0/24", "ip_version": 4, "segment_id": segid})).await;
    let r = s.delete(&format!("/v2.0/segments/{segid}")).await;
    assert_eq!((r.status, r.error_type()), (409, "SegmentInUse"));
    s.delete(&format!("/v2.0/subnets/{}", id(&sub))).await;
    assert_eq!(
        s.delete(&format!("/v2.0/segments/{segid}")).await.status,
        204
    );
    assert_eq!(
        s.get(&format!("/v2.0/segments/{segid}")).await.error_type(),
        "SegmentNotFound"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn addresses_come_from_the_first_subnet_in_creation_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    let n = s.network("two-subnets").await;
    // Same clock second: creation order, not the random ids, must decide.
    let first = s.subnet(&n, "10.20.0.0/24").await;
    let second = s.subnet(&n, "10.10.0.0/24").await;
    for _ in 0..8 {
        let p = s.port(&n, json!({})).await;
        assert_eq!(p["fixed_ips"].as_array().expect("ips").len(), 1);
        assert_eq!(p["fixed_ips"][0]["subnet_id"], first["id"]);
    }
    let net = s.get(&format!("/v2.0/networks/{}", id(&n))).await.body["network"].clone();
    assert_eq!(net["subnets"], json!([id(&first), id(&second)]));
    s.stop().await;
}
