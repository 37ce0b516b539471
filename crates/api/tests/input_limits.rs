//! Neutron's size limits and strict parsing of untrusted values: no error echoes
//! a huge value, `binding:profile` is capped at 4095 characters of JSON, a port
//! takes at most 5 fixed IPs, a subnet a bounded number of allocation pools,
//! IPv4 addresses and CIDRs with leading zeros are refused, booleans in query
//! strings are strict, and oversized or malformed requests get Neutron bodies.

mod common;

use common::{Server, id};
use reqwest::Method;
use serde_json::{Value, json};

async fn lab(dir: &std::path::Path) -> (Server, Value, Value) {
    let s = Server::start(dir).await;
    s.lab_agents().await;
    let net = s.network("limits").await;
    let sub = s.subnet(&net, "10.0.0.0/16").await;
    (s, net, sub)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_invalid_values_are_not_echoed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    let huge = "x".repeat(1_000_000);
    let r = s
        .post("/v2.0/networks", json!({"network": {"name": huge}}))
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.error_type(), "HTTPBadRequest");
    let quoted = format!("'{}...'", "x".repeat(255));
    assert_eq!(
        r.message(),
        format!("Invalid input for name. Reason: {quoted} exceeds maximum length of 255.")
    );
    assert!(
        r.body.to_string().len() < 1024,
        "{} bytes",
        r.body.to_string().len()
    );

    // A huge value of the wrong type is not echoed either.
    let list: Vec<u32> = (0..200_000).collect();
    let r = s
        .post("/v2.0/networks", json!({"network": {"name": list}}))
        .await;
    assert_eq!(r.status, 400);
    assert!(
        r.message().contains("...' is not a valid string"),
        "{}",
        r.message()
    );
    assert!(r.body.to_string().len() < 1024);

    // Nor a huge filter name, limit or unknown attribute.
    let key = "k".repeat(20_000);
    for path in [
        format!("/v2.0/networks?{key}=1"),
        format!("/v2.0/networks?limit={key}"),
        format!("/v2.0/networks?sort_key={key}&sort_dir=asc"),
    ] {
        let r = s.get(&path).await;
        assert_eq!(r.status, 400, "{path}");
        assert!(r.body.to_string().len() < 2048, "{}", r.body);
    }
    let mut body = serde_json::Map::new();
    body.insert(key.clone(), json!(1));
    let r = s
        .post("/v2.0/networks", json!({ "network": Value::Object(body) }))
        .await;
    assert_eq!(r.status, 400);
    assert!(r.body.to_string().len() < 2048, "{}", r.body);
}

/// The length of `{"k": "<n chars>"}` as Python's `json.dumps` writes it.
fn profile_with_len(total: usize) -> Value {
    json!({ "k": "a".repeat(total - 9) })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binding_profile_is_capped_at_4095_characters() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (s, net, _) = lab(dir.path()).await;
    let too_large = "Invalid input for operation: binding:profile value too large.";

    let ok = s
        .post(
            "/v2.0/ports",
            json!({"port": {"network_id": net["id"], "device_owner": "compute:nova", "binding:profile": profile_with_len(4095)}}),
        )
        .await;
    assert_eq!(ok.status, 201, "{}", ok.body);
    let port = id(&ok.body["port"]);

    let r = s
        .post(
            "/v2.0/ports",
            json!({"port": {"network_id": net["id"], "binding:profile": profile_with_len(4096)}}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.error_type(), "InvalidInput");
    assert_eq!(r.message(), too_large);

    // Measured as Neutron does, on ASCII-escaped JSON: 700 'é' are 4200 characters.
    let r = s
        .put(
            &format!("/v2.0/ports/{port}"),
            json!({"port": {"binding:profile": {"k": "é".repeat(700)}}}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.message(), too_large);

    let r = s
        .post(
            &format!("/v2.0/ports/{port}/bindings"),
            json!({"binding": {"host": "compute-2", "profile": profile_with_len(5000)}}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.message(), too_large);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_takes_at_most_five_fixed_ips() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (s, net, sub) = lab(dir.path()).await;
    let ips =
        |n: usize| -> Vec<Value> { (0..n).map(|_| json!({"subnet_id": sub["id"]})).collect() };
    let too_many = "Invalid input for operation: Exceeded maximum amount of fixed ips per port..";

    let ok = s
        .post(
            "/v2.0/ports",
            json!({"port": {"network_id": net["id"], "fixed_ips": ips(5)}}),
        )
        .await;
    assert_eq!(ok.status, 201, "{}", ok.body);
    assert_eq!(
        ok.body["port"]["fixed_ips"].as_array().map(Vec::len),
        Some(5)
    );

    for n in [6, 200] {
        let r = s
            .post(
                "/v2.0/ports",
                json!({"port": {"network_id": net["id"], "fixed_ips": ips(n)}}),
            )
            .await;
        assert_eq!(r.status, 400, "{n}: {}", r.body);
        assert_eq!(r.error_type(), "InvalidInput");
        assert_eq!(r.message(), too_many);
    }
    let r = s
        .put(
            &format!("/v2.0/ports/{}", id(&ok.body["port"])),
            json!({"port": {"fixed_ips": ips(6)}}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.message(), too_many);
    // Nothing was allocated by the refused requests.
    let ports = s.get("/v2.0/ports").await.body["ports"].clone();
    let used: usize = ports
        .as_array()
        .expect("ports")
        .iter()
        .map(|p| p["fixed_ips"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(used, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocation_pools_are_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    let net = s.network("pools").await;
    let pools = |n: u32| -> Vec<Value> {
        (0..n)
            .map(|i| {
                let a = format!("10.1.{}.{}", 1 + i / 200, 1 + i % 200);
                json!({"start": a, "end": a})
            })
            .collect()
    };
    let subnet = |n: u32| json!({"subnet": {"network_id": net["id"], "ip_version": 4, "cidr": "10.1.0.0/16", "gateway_ip": "10.1.255.254", "allocation_pools": pools(n)}});
    for n in [101, 10_000] {
        let r = s.post("/v2.0/subnets", subnet(n)).await;
        assert_eq!(r.status, 400, "{n}: {}", r.body);
        assert_eq!(r.error_type(), "InvalidInput");
        assert_eq!(
            r.message(),
            "Invalid input for operation: The number of allocation pools exceeds the limit 100."
        );
    }
    let r = s.post("/v2.0/subnets", subnet(100)).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = s
        .put(
            &format!("/v2.0/subnets/{}", id(&r.body["subnet"])),
            json!({"subnet": {"allocation_pools": pools(101)}}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leading_zeros_are_refused_in_cidrs_and_addresses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    s.lab_agents().await;
    let net = s.network("zeros").await;
    let subnet = |extra: Value| {
        let mut b = json!({"network_id": net["id"], "ip_version": 4, "cidr": "10.0.0.0/24"});
        if let (Some(o), Some(e)) = (b.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        json!({ "subnet": b })
    };
    let cases = [
        (
            json!({"cidr": "010.000.000.000/24"}),
            "Invalid input for cidr. Reason: '010.000.000.000/24' is not a valid IP subnet.",
        ),
        (
            json!({"cidr": "10.0.0.0/024"}),
            "Invalid input for cidr. Reason: '10.0.0.0/024' is not a valid IP subnet.",
        ),
        (
            json!({"gateway_ip": "10.0.0.01"}),
            "Invalid input for gateway_ip. Reason: '10.0.0.01' is not an accepted IP address, '10.0.0.1' is recommended.",
        ),
        (
            json!({"allocation_pools": [{"start": "10.0.0.010", "end": "10.0.0.20"}]}),
            "Invalid input for allocation_pools. Reason: '10.0.0.010' is not an accepted IP address, '10.0.0.10' is recommended.",
        ),
        (
            json!({"dns_nameservers": ["08.8.8.8"]}),
            "Invalid input for dns_nameservers. Reason: '08.8.8.8' is not a valid nameserver. '08.8.8.8' is not an accepted IP address, '8.8.8.8' is recommended.",
        ),
        (
            json!({"host_routes": [{"destination": "010.0.0.0/8", "nexthop": "10.0.0.2"}]}),
            "Invalid input for host_routes. Reason: '010.0.0.0/8' is not a valid CIDR.",
        ),
        (
            json!({"host_routes": [{"destination": "192.168.0.0/16", "nexthop": "10.0.0.02"}]}),
            "Invalid input for host_routes. Reason: '10.0.0.02' is not an accepted IP address, '10.0.0.2' is recommended.",
        ),
    ];
    for (extra, message) in cases {
        let r = s.post("/v2.0/subnets", subnet(extra.clone())).await;
        assert_eq!(r.status, 400, "{extra}: {}", r.body);
        assert_eq!(r.message(), message, "{extra}");
    }
    let sub = s.post("/v2.0/subnets", subnet(json!({}))).await;
    assert_eq!(sub.status, 201);
    let r = s
        .post(
            "/v2.0/ports",
            json!({"port": {"network_id": net["id"], "fixed_ips": [{"ip_address": "010.0.0.5"}]}}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(
        r.message(),
        "Invalid input for fixed_ips. Reason: '010.0.0.5' is not an accepted IP address, '10.0.0.5' is recommended."
    );
    let r = s
        .post(
            "/v2.0/ports",
            json!({"port": {"network_id": net["id"], "allowed_address_pairs": [{"ip_address": "010.0.0.0/24"}]}}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    // Canonical forms still work.
    let r = s
        .post(
            "/v2.0/ports",
            json!({"port": {"network_id": net["id"], "fixed_ips": [{"ip_address": "10.0.0.5"}],
                "allowed_address_pairs": [{"ip_address": "10.0.0.0/24"}, {"ip_address": "10.9.0.1"}]}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn booleans_in_query_strings_are_strict() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    for q in [
        "page_reverse=maybe",
        "limit=1&page_reverse=maybe",
        "shared=maybe",
    ] {
        let r = s.get(&format!("/v2.0/networks?{q}")).await;
        assert_eq!(r.status, 400, "{q}: {}", r.body);
        assert_eq!(r.error_type(), "InvalidInput");
        assert_eq!(
            r.message(),
            "Invalid input for operation: 'maybe' cannot be converted to boolean."
        );
    }
    for q in [
        "page_reverse=False",
        "page_reverse=true&limit=1",
        "shared=0",
    ] {
        let r = s.get(&format!("/v2.0/networks?{q}")).await;
        assert_eq!(r.status, 200, "{q}: {}", r.body);
    }
    let r = s.get("/v2.0/networks?mtu=big").await;
    assert_eq!(r.status, 400, "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_malformed_requests_get_neutron_bodies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    let neutron = |status: u16, r: &common::Resp, kind: &str| {
        assert_eq!(r.status, status, "{}", r.body);
        assert_eq!(r.error_type(), kind, "{}", r.body);
        assert!(r.body["NeutronError"]["message"].is_string(), "{}", r.body);
        assert_eq!(r.body["NeutronError"]["detail"], "");
    };
    // 413: a body over the limit.
    let big = json!({"network": {"name": "x".repeat(switchyard_api::MAX_BODY + 10)}});
    let r = s.req(Method::POST, "/v2.0/networks", Some(big), &[]).await;
    neutron(413, &r, "HTTPRequestEntityTooLarge");
    // 431: headers over the limit.
    let long = "v".repeat(40 * 1024);
    let r = s
        .req(Method::GET, "/v2.0/networks", None, &[("x-long", &long)])
        .await;
    neutron(431, &r, "HTTPRequestHeaderFieldsTooLarge");
    // The southbound endpoint without a WebSocket handshake: axum's rejection.
    let r = s.get("/switchyard/v1/southbound").await;
    assert!(r.status >= 400, "{}", r.body);
    assert!(r.body["NeutronError"]["type"].is_string(), "{}", r.body);
    // Non-UTF-8 and badly percent-encoded paths and queries stay Neutron-shaped.
    for path in [
        "/v2.0/networks/%FF%FE",
        "/v2.0/networks?name=%FF",
        "/v2.0/networks/%zz",
    ] {
        let r = s.get(path).await;
        assert!(
            r.status == 200 || r.body["NeutronError"]["type"].is_string(),
            "{path}: {}",
            r.body
        );
    }
}
