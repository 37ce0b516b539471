//! Untrusted input: random bodies, attribute values and query strings never make
//! the server fail with a 5xx, and every error is a NeutronError body.

mod common;

use std::sync::OnceLock;

use common::Server;
use proptest::prelude::*;
use reqwest::Method;
use serde_json::{Map, Value, json};

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,12}".prop_map(Value::String),
        prop_oneof![
            Just("10.0.0.5"),
            Just("10.0.0.0/24"),
            Just("2001:db8::/64"),
            Just("fa:16:3e:00:00:01"),
            Just("vxlan"),
            Just("vlan"),
            Just("flat"),
            Just("physnet1"),
            Just("direct"),
            Just("compute-1"),
            Just("00000000-0000-0000-0000-000000000000"),
            Just("true"),
            Just(""),
        ]
        .prop_map(|s| Value::String(s.to_string())),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(attr_name(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<String, Value>>())),
        ]
    })
}

fn attr_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("name"),
        Just("network_id"),
        Just("cidr"),
        Just("ip_version"),
        Just("gateway_ip"),
        Just("allocation_pools"),
        Just("start"),
        Just("end"),
        Just("host_routes"),
        Just("destination"),
        Just("nexthop"),
        Just("dns_nameservers"),
        Just("enable_dhcp"),
        Just("fixed_ips"),
        Just("subnet_id"),
        Just("ip_address"),
        Just("mac_address"),
        Just("allowed_address_pairs"),
        Just("binding:host_id"),
        Just("binding:vnic_type"),
        Just("binding:profile"),
        Just("provider:network_type"),
        Just("provider:physical_network"),
        Just("provider:segmentation_id"),
        Just("segments"),
        Just("mtu"),
        Just("shared"),
        Just("router:external"),
        Just("admin_state_up"),
        Just("port_security_enabled"),
        Just("tags"),
        Just("project_id"),
        Just("tenant_id"),
        Just("description"),
        Just("device_owner"),
        Just("ipv6_address_mode"),
        Just("ipv6_ra_mode"),
        Just("segment_id"),
        Just("network_type"),
        Just("physical_network"),
        Just("segmentation_id"),
        Just("host"),
        Just("vnic_type"),
        Just("profile"),
        Just("unknown"),
    ]
    .prop_map(str::to_string)
}

struct Shared {
    rt: tokio::runtime::Runtime,
    server: Server,
    _dir: tempfile::TempDir,
    network_id: String,
    port_id: String,
}

/// One server for all cases: state accumulates, which is the point.
fn shared() -> &'static Shared {
    static S: OnceLock<Shared> = OnceLock::new();
    S.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("tempdir");
        let (server, network_id, port_id) = rt.block_on(async {
            let s = Server::start(dir.path()).await;
            s.lab_agents().await;
            let n = s.network("fuzz").await;
            s.subnet(&n, "10.0.0.0/24").await;
            let p = s
                .port(
                    &n,
                    json!({"device_owner": "compute:nova", "binding:host_id": "compute-1"}),
                )
                .await;
            (s, common::id(&n), common::id(&p))
        });
        Shared {
            rt,
            server,
            _dir: dir,
            network_id,
            port_id,
        }
    })
}

fn check(status: u16, body: &Value, what: &str) -> Result<(), TestCaseError> {
    prop_assert!(
        status < 500
            || (status == 500 && body["NeutronError"]["type"] == "PortBindingError")
            || status == 501,
        "{what} -> {status} {body}"
    );
    if status >= 400 {
        prop_assert!(
            body["NeutronError"]["type"].is_string(),
            "{what} -> {status} without NeutronError: {body}"
        );
        prop_assert!(body["NeutronError"]["message"].is_string());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 160, ..ProptestConfig::default() })]

    #[test]
    fn random_bodies_never_fail_the_server(
        target in 0usize..6,
        mut attrs in prop::collection::btree_map(attr_name(), json_value(), 0..6),
        wrap in any::<bool>(),
    ) {
        let sh = shared();
        let s = &sh.server;
        // Often point at real parents so validation gets deep.
        if attrs.contains_key("network_id") && wrap {
            attrs.insert("network_id".into(), json!(sh.network_id));
        }
        let attrs: Map<String, Value> = attrs.into_iter().collect();
        let (method, path, key) = match target {
            0 => (Method::POST, "/v2.0/networks".to_string(), "network"),
            1 => (Method::POST, "/v2.0/subnets".to_string(), "subnet"),
            2 => (Method::POST, "/v2.0/ports".to_string(), "port"),
            3 => (Method::PUT, format!("/v2.0/ports/{}", sh.port_id), "port"),
            4 => (Method::POST, format!("/v2.0/ports/{}/bindings", sh.port_id), "binding"),
            _ => (Method::POST, "/v2.0/segments".to_string(), "segment"),
        };
        let body = json!({ key: Value::Object(attrs) });
        let r = sh.rt.block_on(s.req(method.clone(), &path, Some(body.clone()), &[]));
        check(r.status, &r.body, &format!("{method} {path} {body}"))?;
    }

    #[test]
    fn random_query_strings_never_fail_the_server(
        coll in prop_oneof![Just("networks"), Just("subnets"), Just("ports"), Just("segments"), Just("agents")],
        params in prop::collection::vec((prop_oneof![
            attr_name(), Just("limit".to_string()), Just("marker".to_string()), Just("sort_key".to_string()),
            Just("sort_dir".to_string()), Just("fields".to_string()), Just("page_reverse".to_string()),
            Just("tags-any".to_string()), Just("not-tags".to_string()),
        ], ".{0,10}"), 0..5),
    ) {
        let sh = shared();
        let q: String = form_urlencoded::Serializer::new(String::new()).extend_pairs(params.iter()).finish();
        let path = format!("/v2.0/{coll}?{q}");
        let r = sh.rt.block_on(sh.server.get(&path));
        check(r.status, &r.body, &path)?;
    }

    #[test]
    fn raw_bytes_are_rejected_cleanly(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let sh = shared();
        let url = format!("{}/v2.0/networks", sh.server.base);
        let (status, body) = sh.rt.block_on(async {
            let r = sh.server.http.post(url).body(bytes.clone()).send().await.expect("sent");
            let st = r.status().as_u16();
            (st, r.json::<Value>().await.unwrap_or(Value::Null))
        });
        check(status, &body, "raw bytes")?;
        prop_assert_eq!(status, 400);
    }
}

#[test]
fn server_still_consistent_after_fuzzing() {
    let sh = shared();
    let r = sh
        .rt
        .block_on(sh.server.get(&format!("/v2.0/ports/{}", sh.port_id)));
    assert_eq!(r.status, 200);
    // Addresses stay unique whatever was attempted.
    let ports = sh.rt.block_on(sh.server.get("/v2.0/ports")).body["ports"].clone();
    let mut seen = std::collections::HashSet::new();
    for p in ports.as_array().expect("list") {
        for ip in p["fixed_ips"].as_array().expect("ips") {
            assert!(
                seen.insert((ip["subnet_id"].to_string(), ip["ip_address"].to_string())),
                "duplicate address {ip}"
            );
        }
    }
}
