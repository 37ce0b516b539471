//! Security groups and their rules through the API, against Neutron's
//! documented behaviour: the default group made on first use, rule
//! validation in Neutron's order with its error types and messages, the
//! `security_groups` attribute of ports and its interplay with port security,
//! in-use deletion, project isolation, quotas and the extension list.

mod common;

use common::{Server, id};
use reqwest::Method;
use serde_json::{Value, json};

const B: [(&str, &str); 2] = [("x-project-id", "proj-b"), ("x-roles", "member")];
const B_READER: [(&str, &str); 2] = [("x-project-id", "proj-b"), ("x-roles", "reader")];

async fn as_b(s: &Server, m: Method, path: &str, body: Option<Value>) -> common::Resp {
    s.req(m, path, body, &B).await
}

/// Project B's POST of `{singular: body}` to `collection`.
async fn b_creates(s: &Server, collection: &str, singular: &str, body: Value) -> common::Resp {
    as_b(
        s,
        Method::POST,
        &format!("/v2.0/{collection}"),
        Some(json!({ singular: body })),
    )
    .await
}

async fn group(s: &Server, name: &str) -> Value {
    s.create("security-groups", "security_group", json!({ "name": name }))
        .await
}

async fn rule(s: &Server, body: Value) -> common::Resp {
    s.post(
        "/v2.0/security-group-rules",
        json!({ "security_group_rule": body }),
    )
    .await
}

fn rules_of(g: &Value) -> Vec<Value> {
    g["security_group_rules"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_group_is_made_on_first_use_with_neutrons_rules() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    let r = as_b(&s, Method::GET, "/v2.0/security-groups", None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let groups = r.body["security_groups"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(groups.len(), 1, "{}", r.body);
    let d = &groups[0];
    assert_eq!(d["name"], "default");
    assert_eq!(d["description"], "Default security group");
    assert_eq!(d["project_id"], "proj-b");
    assert!(
        d.get("stateful").is_none() && d.get("shared").is_none(),
        "{d}"
    );
    let rules = rules_of(d);
    assert_eq!(rules.len(), 4, "{d}");
    for r in &rules {
        assert_eq!(r["belongs_to_default_sg"], true);
        assert_eq!(r["protocol"], Value::Null);
        assert_eq!(r["remote_ip_prefix"], Value::Null);
        match r["direction"].as_str() {
            Some("ingress") => assert_eq!(r["remote_group_id"], d["id"]),
            Some("egress") => assert_eq!(r["remote_group_id"], Value::Null),
            other => panic!("direction {other:?}"),
        }
    }
    let mut eth: Vec<&str> = rules
        .iter()
        .filter_map(|r| r["ethertype"].as_str())
        .collect();
    eth.sort_unstable();
    assert_eq!(eth, ["IPv4", "IPv4", "IPv6", "IPv6"]);
    // Made once: a second list, the rules' list and a network find it.
    let again = as_b(&s, Method::GET, "/v2.0/security-groups", None).await;
    assert_eq!(
        again.body["security_groups"].as_array().map(Vec::len),
        Some(1)
    );
    let r = as_b(&s, Method::GET, "/v2.0/security-group-rules", None).await;
    assert_eq!(
        r.body["security_group_rules"].as_array().map(Vec::len),
        Some(4)
    );
    // A member listing another project's groups makes nothing there.
    let r = as_b(
        &s,
        Method::GET,
        "/v2.0/security-groups?project_id=proj-c",
        None,
    )
    .await;
    assert_eq!(r.body["security_groups"], json!([]));
    // An admin's does (Neutron ensures it for the filtered project).
    let r = s.get("/v2.0/security-groups?project_id=proj-c").await;
    assert_eq!(r.body["security_groups"][0]["project_id"], "proj-c");

    // Its name is reserved, it cannot be renamed, and only an admin removes it.
    let did = id(d);
    let path = format!("/v2.0/security-groups/{did}");
    let r = as_b(
        &s,
        Method::PUT,
        &path,
        Some(json!({"security_group": {"name": "x"}})),
    )
    .await;
    assert_eq!(
        (r.status, r.error_type()),
        (409, "SecurityGroupCannotUpdateDefault")
    );
    assert_eq!(r.message(), "Updating default security group not allowed.");
    let r = as_b(
        &s,
        Method::PUT,
        &path,
        Some(json!({"security_group": {"description": "ours"}})),
    )
    .await;
    assert_eq!(
        (r.status, &r.body["security_group"]["description"]),
        (200, &json!("ours"))
    );
    for name in ["default", "DEFAULT"] {
        let r = b_creates(
            &s,
            "security-groups",
            "security_group",
            json!({"name": name}),
        )
        .await;
        assert_eq!(
            (r.status, r.error_type()),
            (409, "SecurityGroupDefaultAlreadyExists")
        );
        assert_eq!(r.message(), "Default security group already exists.");
    }
    let r = as_b(&s, Method::DELETE, &path, None).await;
    assert_eq!(
        (r.status, r.error_type()),
        (409, "SecurityGroupCannotRemoveDefault")
    );
    assert_eq!(
        r.message(),
        "Insufficient rights for removing default security group."
    );
    assert_eq!(s.delete(&path).await.status, 204);
    // The next use makes a new one.
    let r = as_b(&s, Method::GET, "/v2.0/security-groups", None).await;
    let groups = r.body["security_groups"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(groups.len(), 1);
    assert_ne!(groups[0]["id"], d["id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_start_with_egress_rules_and_rules_are_validated_in_neutrons_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    let g = group(&s, "web").await;
    let gid = id(&g);
    let rules = rules_of(&g);
    assert_eq!(rules.len(), 2, "{g}");
    assert!(
        rules
            .iter()
            .all(|r| r["direction"] == "egress" && r["belongs_to_default_sg"] == false)
    );

    // Accepted, and stored the way Neutron stores them.
    let r = rule(
        &s,
        json!({"security_group_id": gid, "direction": "ingress", "protocol": 6,
        "port_range_min": "22", "port_range_max": 22, "remote_ip_prefix": "10.1.2.3"}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let ssh = r.body["security_group_rule"].clone();
    assert_eq!(ssh["protocol"], "6");
    assert_eq!(ssh["ethertype"], "IPv4");
    assert_eq!(
        (&ssh["port_range_min"], &ssh["port_range_max"]),
        (&json!(22), &json!(22))
    );
    assert_eq!(ssh["remote_ip_prefix"], "10.1.2.3/32");
    assert_eq!(ssh["normalized_cidr"], "10.1.2.3/32");
    assert_eq!(ssh["belongs_to_default_sg"], false);
    assert!(ssh.get("tags").is_none(), "{ssh}");
    let r = rule(
        &s,
        json!({"security_group_id": gid, "direction": "ingress", "protocol": "UDP",
        "port_range_min": 1, "port_range_max": 65535, "remote_ip_prefix": "10.0.0.5/24"}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let udp = &r.body["security_group_rule"];
    assert_eq!(udp["protocol"], "udp");
    assert_eq!(
        (&udp["port_range_min"], &udp["port_range_max"]),
        (&Value::Null, &Value::Null)
    );
    assert_eq!(udp["remote_ip_prefix"], "10.0.0.5/24");
    assert_eq!(udp["normalized_cidr"], "10.0.0.0/24");
    let r = rule(
        &s,
        json!({"security_group_id": gid, "direction": "ingress",
        "ethertype": "ipv6", "protocol": "icmp", "port_range_min": 128}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["security_group_rule"]["protocol"], "ipv6-icmp");
    assert_eq!(r.body["security_group_rule"]["ethertype"], "IPv6");
    let r = rule(
        &s,
        json!({"security_group_id": gid, "direction": "ingress", "protocol": "any",
        "remote_group_id": gid}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["security_group_rule"]["protocol"], Value::Null);

    // Refused: type, status and message as Neutron gives them.
    let base = |extra: Value| {
        let mut b = json!({"security_group_id": gid, "direction": "ingress"});
        if let (Some(o), Some(e)) = (b.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        b
    };
    let protos = "(None, 'any', 'ah', 'dccp', 'egp', 'esp', 'gre', 'hopopt', 'icmp', 'igmp', 'ip', 'ipip', 'ipv6-encap', 'ipv6-frag', 'ipv6-icmp', 'icmpv6', 'ipv6-nonxt', 'ipv6-opts', 'ipv6-route', 'ospf', 'pgm', 'rsvp', 'sctp', 'tcp', 'udp', 'udplite', 'vrrp')";
    let cases: Vec<(Value, u16, &str, String)> = vec![
        (json!({"security_group_id": gid}), 400, "HTTPBadRequest",
            "Failed to parse request. Required attribute 'direction' not specified".into()),
        (base(json!({"direction": "sideways"})), 400, "HTTPBadRequest",
            "Invalid input for direction. Reason: sideways is not in valid_values.".into()),
        (base(json!({"protocol": "bogus"})), 400, "SecurityGroupRuleInvalidProtocol",
            format!("Security group rule protocol bogus not supported. Only protocol values {protos} and integer representations [0 to 255] are supported.")),
        (base(json!({"protocol": 256})), 400, "SecurityGroupRuleInvalidProtocol",
            format!("Security group rule protocol 256 not supported. Only protocol values {protos} and integer representations [0 to 255] are supported.")),
        (base(json!({"protocol": "tcp", "port_range_min": 70000})), 400,
            "SecurityGroupInvalidPortValue", "Invalid value for port 70000".into()),
        (base(json!({"ethertype": "IPv5"})), 400, "SecurityGroupRuleInvalidEtherType",
            "Security group rule for ethertype 'IPv5' not supported. Allowed values are ['IPv4', 'IPv6'].".into()),
        (base(json!({"remote_ip_prefix": "10.0.0.300/8"})), 400, "InvalidCIDR",
            "Invalid CIDR 10.0.0.300/8 given as IP prefix.".into()),
        (base(json!({"port_range_min": 22, "port_range_max": 22})), 400,
            "SecurityGroupProtocolRequiredWithPorts",
            "Must also specify protocol if port range is given.".into()),
        (base(json!({"protocol": "tcp", "port_range_min": 0, "port_range_max": 22})), 400,
            "SecurityGroupInvalidPortValue", "Invalid value for port 0".into()),
        (base(json!({"protocol": "tcp", "port_range_min": 80, "port_range_max": 22})), 400,
            "SecurityGroupInvalidPortRange",
            "For TCP/UDP protocols, port_range_min must be <= port_range_max".into()),
        (base(json!({"protocol": "udp", "port_range_min": 80})), 400,
            "SecurityGroupInvalidPortRange",
            "For TCP/UDP protocols, port_range_min must be <= port_range_max".into()),
        (base(json!({"protocol": "icmp", "port_range_min": 256})), 400,
            "SecurityGroupInvalidIcmpValue",
            "Invalid value for ICMP type (port_range_min) 256. It must be 0 to 255.".into()),
        (base(json!({"protocol": "icmp", "port_range_max": 0})), 400,
            "SecurityGroupMissingIcmpType",
            "ICMP code (port-range-max) 0 is provided but ICMP type (port-range-min) is missing.".into()),
        (base(json!({"protocol": "gre", "port_range_min": 1, "port_range_max": 2})), 400,
            "SecurityGroupInvalidProtocolForPort",
            "Ports cannot be specified for protocol 47. Ports are only supported for DCCP, SCTP, TCP, UDP, UDPLITE.".into()),
        (base(json!({"ethertype": "IPv6", "remote_ip_prefix": "10.0.0.0/8"})), 400,
            "SecurityGroupRuleParameterConflict",
            "Conflicting value ethertype IPv6 for CIDR 10.0.0.0/8".into()),
        (base(json!({"protocol": "ipv6-icmp"})), 400,
            "SecurityGroupEthertypeConflictWithProtocol",
            "Invalid ethertype IPv4 for protocol ipv6-icmp.".into()),
        (base(json!({"remote_ip_prefix": "10.0.0.0/8", "remote_group_id": gid})), 400,
            "SecurityGroupMultipleRemoteEntites",
            "Only one of remote_ip_prefix or remote_group_id or remote_address_group_id may be provided.".into()),
        (base(json!({"remote_group_id": "0b5c0b8e-0000-4000-8000-000000000000"})), 404,
            "SecurityGroupNotFound",
            "Security group 0b5c0b8e-0000-4000-8000-000000000000 does not exist".into()),
        (json!({"security_group_id": "0b5c0b8e-0000-4000-8000-000000000001", "direction": "egress"}),
            404, "SecurityGroupNotFound",
            "Security group 0b5c0b8e-0000-4000-8000-000000000001 does not exist".into()),
        (base(json!({"protocol": "tcp", "port_range_min": 22, "port_range_max": 22,
            "remote_ip_prefix": "10.1.2.3/32", "description": "again"})), 409,
            "SecurityGroupRuleExists",
            format!("Security group rule already exists. Rule id is {}.", id(&ssh))),
        (base(json!({"stateful": false})), 400, "HTTPBadRequest",
            "Unrecognized attribute(s) 'stateful'".into()),
    ];
    for (body, status, kind, message) in cases {
        let r = rule(&s, body.clone()).await;
        assert_eq!(
            (r.status, r.error_type()),
            (status, kind),
            "{body}: {}",
            r.body
        );
        assert_eq!(r.message(), message, "{body}");
    }
    // Egress to anywhere exists already: "0.0.0.0/0" is the same as none.
    let r = rule(
        &s,
        json!({"security_group_id": gid, "direction": "egress",
        "remote_ip_prefix": "0.0.0.0/0"}),
    )
    .await;
    assert_eq!(
        (r.status, r.error_type()),
        (409, "SecurityGroupRuleExists"),
        "{}",
        r.body
    );

    // Bulk: all or none.
    let before = s.get(&format!("/v2.0/security-groups/{gid}")).await.body;
    let n = rules_of(&before["security_group"]).len();
    let two = json!({"security_group_id": gid, "direction": "ingress", "protocol": "tcp",
        "port_range_min": 80, "port_range_max": 80});
    let r = s
        .post(
            "/v2.0/security-group-rules",
            json!({"security_group_rules": [two, two]}),
        )
        .await;
    assert_eq!(
        (r.status, r.error_type()),
        (409, "DuplicateSecurityGroupRuleInPost")
    );
    assert_eq!(r.message(), "Duplicate Security Group Rule in POST.");
    let other = group(&s, "other").await;
    let r = s
        .post(
            "/v2.0/security-group-rules",
            json!({"security_group_rules": [two, {"security_group_id": other["id"], "direction": "ingress"}]}),
        )
        .await;
    assert_eq!(
        (r.status, r.error_type()),
        (400, "SecurityGroupNotSingleGroupRules")
    );
    let after = s.get(&format!("/v2.0/security-groups/{gid}")).await.body;
    assert_eq!(rules_of(&after["security_group"]).len(), n, "nothing made");
    let r = s
        .post(
            "/v2.0/security-group-rules",
            json!({"security_group_rules": [two, {"security_group_id": gid, "direction": "ingress", "protocol": 6, "port_range_min": 443, "port_range_max": 443}]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(
        r.body["security_group_rules"].as_array().map(Vec::len),
        Some(2)
    );

    // Rules are immutable; they go away with DELETE, and change their group's revision.
    let rpath = format!("/v2.0/security-group-rules/{}", id(&ssh));
    let r = s
        .put(&rpath, json!({"security_group_rule": {"protocol": "udp"}}))
        .await;
    assert_eq!(
        (r.status, r.message()),
        (400, "Cannot update read-only attribute protocol")
    );
    let rev = s.get(&format!("/v2.0/security-groups/{gid}")).await.body["security_group"]
        ["revision_number"]
        .clone();
    assert_eq!(s.delete(&rpath).await.status, 204);
    let r = s.get(&rpath).await;
    assert_eq!(
        (r.status, r.error_type()),
        (404, "SecurityGroupRuleNotFound")
    );
    assert_eq!(
        r.message(),
        format!("Security group rule {} does not exist", id(&ssh))
    );
    let g2 = s.get(&format!("/v2.0/security-groups/{gid}")).await.body;
    assert!(g2["security_group"]["revision_number"].as_u64() > rev.as_u64());

    // Filters on rules.
    let r = s
        .get(&format!(
            "/v2.0/security-group-rules?security_group_id={gid}&direction=ingress&protocol=tcp"
        ))
        .await;
    // Protocols filter as stored: "6" is not "tcp".
    let found = r.body["security_group_rules"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(found.len(), 1, "{}", r.body);
    assert_eq!(found[0]["port_range_min"], 80);
    let r = s
        .get(&format!(
            "/v2.0/security-group-rules?security_group_id={gid}&port_range_min=443"
        ))
        .await;
    assert_eq!(
        r.body["security_group_rules"].as_array().map(Vec::len),
        Some(1),
        "{}",
        r.body
    );

    // Deleting a group takes the rules of other groups that name it.
    let r = rule(
        &s,
        json!({"security_group_id": other["id"], "direction": "ingress",
        "remote_group_id": gid}),
    )
    .await;
    let by_remote = id(&r.body["security_group_rule"]);
    assert_eq!(
        s.delete(&format!("/v2.0/security-groups/{gid}"))
            .await
            .status,
        204
    );
    assert_eq!(
        s.get(&format!("/v2.0/security-group-rules/{by_remote}"))
            .await
            .status,
        404
    );
    let r = s.get(&format!("/v2.0/security-groups/{gid}")).await;
    assert_eq!((r.status, r.error_type()), (404, "SecurityGroupNotFound"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ports_get_the_default_group_and_port_security_conflicts_are_neutrons() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    let net = s.network("n").await;
    s.subnet(&net, "10.9.0.0/24").await;
    let default =
        s.get("/v2.0/security-groups?name=default").await.body["security_groups"][0].clone();
    let did = id(&default);
    let web = group(&s, "web").await;
    let wid = id(&web);

    let p = s.port(&net, json!({})).await;
    assert_eq!(p["security_groups"], json!([did]));
    assert_eq!(p["port_security_enabled"], true);
    let none = s.port(&net, json!({"security_groups": []})).await;
    assert_eq!(none["security_groups"], json!([]));
    let null = s.port(&net, json!({"security_groups": null})).await;
    assert_eq!(null["security_groups"], json!([]));
    let both = s.port(&net, json!({"security_groups": [wid, did]})).await;
    assert_eq!(both["security_groups"], json!([wid, did]));
    // The router's and DHCP's ports are trusted: no groups, no port security.
    let dhcp = s.port(&net, json!({"device_owner": "network:dhcp"})).await;
    assert_eq!(
        (&dhcp["security_groups"], &dhcp["port_security_enabled"]),
        (&json!([]), &json!(false))
    );
    let open = s.port(&net, json!({"port_security_enabled": false})).await;
    assert_eq!(open["security_groups"], json!([]));

    let nid = id(&net);
    for (body, status, kind, message) in [
        (json!({"network_id": nid, "port_security_enabled": false, "security_groups": [wid]}), 400,
            "PortSecurityAndIPRequiredForSecurityGroups",
            "Port security must be enabled and port must have an IP address in order to use security groups.".to_string()),
        (json!({"network_id": nid, "security_groups": "x"}), 400, "HTTPBadRequest",
            "Invalid input for security_groups. Reason: 'x' is not a list.".to_string()),
        (json!({"network_id": nid, "security_groups": ["nope"]}), 400, "HTTPBadRequest",
            "Invalid input for security_groups. Reason: 'nope' is not a valid UUID.".to_string()),
        (json!({"network_id": nid, "security_groups": [wid, wid]}), 400, "HTTPBadRequest",
            format!("Invalid input for security_groups. Reason: Duplicate items in the list: '{wid}'.")),
        (json!({"network_id": nid, "security_groups": ["0b5c0b8e-0000-4000-8000-000000000002"]}),
            404, "SecurityGroupNotFound",
            "Security group 0b5c0b8e-0000-4000-8000-000000000002 does not exist".to_string()),
        (json!({"network_id": nid, "port_security_enabled": false,
            "allowed_address_pairs": [{"ip_address": "10.9.0.200"}]}), 409,
            "AddressPairAndPortSecurityRequired",
            "Port Security must be enabled in order to have allowed address pairs on a port.".to_string()),
    ] {
        let r = s.post("/v2.0/ports", json!({"port": body.clone()})).await;
        assert_eq!((r.status, r.error_type()), (status, kind), "{body}: {}", r.body);
        assert_eq!(r.message(), message, "{body}");
    }

    // Port security off needs the groups gone in the same request.
    let path = format!("/v2.0/ports/{}", id(&p));
    let r = s
        .put(&path, json!({"port": {"port_security_enabled": false}}))
        .await;
    assert_eq!(
        (r.status, r.error_type()),
        (409, "PortSecurityPortHasSecurityGroup")
    );
    assert_eq!(
        r.message(),
        "Port has security group associated. Cannot disable port security or IP address until security group is removed."
    );
    let r = s
        .put(
            &path,
            json!({"port": {"port_security_enabled": false, "security_groups": [wid]}}),
        )
        .await;
    assert_eq!(
        (r.status, r.error_type()),
        (400, "PortSecurityAndIPRequiredForSecurityGroups")
    );
    let r = s
        .put(
            &path,
            json!({"port": {"port_security_enabled": false, "security_groups": []}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["port"]["security_groups"], json!([]));
    // Turning it back on does not bring the default group back.
    let r = s
        .put(&path, json!({"port": {"port_security_enabled": true}}))
        .await;
    assert_eq!(
        (r.status, &r.body["port"]["security_groups"]),
        (200, &json!([]))
    );
    let r = s
        .put(&path, json!({"port": {"security_groups": [wid]}}))
        .await;
    assert_eq!(
        (r.status, &r.body["port"]["security_groups"]),
        (200, &json!([wid]))
    );

    // Filter ports by group.
    let r = s.get(&format!("/v2.0/ports?security_groups={wid}")).await;
    let mut ids: Vec<String> = r.body["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(id)
        .collect();
    ids.sort();
    let mut want = vec![id(&p), id(&both)];
    want.sort();
    assert_eq!(ids, want, "{}", r.body);

    // A group with members cannot go; without them it can.
    let gpath = format!("/v2.0/security-groups/{wid}");
    let r = s.delete(&gpath).await;
    assert_eq!((r.status, r.error_type()), (409, "SecurityGroupInUse"));
    assert_eq!(r.message(), format!("Security Group {wid} in use."));
    assert_eq!(s.delete(&path).await.status, 204);
    assert_eq!(
        s.put(
            &format!("/v2.0/ports/{}", id(&both)),
            json!({"port": {"security_groups": [did]}})
        )
        .await
        .status,
        200
    );
    assert_eq!(s.delete(&gpath).await.status, 204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projects_see_and_use_only_their_own_groups() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    let a = group(&s, "admin-only").await;
    let aid = id(&a);
    let path = format!("/v2.0/security-groups/{aid}");
    for (m, body) in [
        (Method::GET, None),
        (
            Method::PUT,
            Some(json!({"security_group": {"description": "mine"}})),
        ),
        (Method::DELETE, None),
    ] {
        let r = as_b(&s, m.clone(), &path, body).await;
        assert_eq!(
            (r.status, r.error_type()),
            (404, "SecurityGroupNotFound"),
            "{m}"
        );
    }
    let r = b_creates(
        &s,
        "security-group-rules",
        "security_group_rule",
        json!({"security_group_id": aid, "direction": "ingress"}),
    )
    .await;
    assert_eq!((r.status, r.error_type()), (404, "SecurityGroupNotFound"));
    let r = as_b(&s, Method::GET, "/v2.0/security-group-rules", None).await;
    let theirs = r.body["security_group_rules"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        theirs.iter().all(|r| r["project_id"] == "proj-b"),
        "{}",
        r.body
    );
    let rid = id(&rules_of(&a)[0]);
    let r = as_b(
        &s,
        Method::GET,
        &format!("/v2.0/security-group-rules/{rid}"),
        None,
    )
    .await;
    assert_eq!(
        (r.status, r.error_type()),
        (404, "SecurityGroupRuleNotFound")
    );

    // B's port cannot join A's group; B's own group works.
    let net = as_b(
        &s,
        Method::POST,
        "/v2.0/networks",
        Some(json!({"network": {"name": "b"}})),
    )
    .await;
    assert_eq!(net.status, 201, "{}", net.body);
    let nid = id(&net.body["network"]);
    let r = as_b(
        &s,
        Method::POST,
        "/v2.0/ports",
        Some(json!({"port": {"network_id": nid, "security_groups": [aid]}})),
    )
    .await;
    assert_eq!((r.status, r.error_type()), (404, "SecurityGroupNotFound"));
    let r = b_creates(
        &s,
        "security-groups",
        "security_group",
        json!({"name": "b-web"}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["security_group"]["project_id"], "proj-b");

    // A reader reads and changes nothing.
    let r = s
        .req(Method::GET, "/v2.0/security-groups", None, &B_READER)
        .await;
    assert_eq!(
        r.body["security_groups"].as_array().map(Vec::len),
        Some(2),
        "{}",
        r.body
    );
    let r = s
        .req(
            Method::POST,
            "/v2.0/security-groups",
            Some(json!({"security_group": {"name": "no"}})),
            &B_READER,
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_count_groups_and_rules_the_default_group_included() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    let r = as_b(&s, Method::GET, "/v2.0/quotas/proj-b/details", None).await;
    assert_eq!(r.body["quota"]["security_group"]["limit"], 10, "{}", r.body);
    assert_eq!(r.body["quota"]["security_group_rule"]["limit"], 100);
    // The default group and its 4 rules count: 9 more groups fit.
    for i in 0..9 {
        let r = b_creates(
            &s,
            "security-groups",
            "security_group",
            json!({"name": format!("g{i}")}),
        )
        .await;
        assert_eq!(r.status, 201, "group {i}: {}", r.body);
    }
    let r = b_creates(
        &s,
        "security-groups",
        "security_group",
        json!({"name": "g9"}),
    )
    .await;
    assert_eq!((r.status, r.error_type()), (409, "OverQuota"));
    assert_eq!(
        r.message(),
        "Quota exceeded for resources: ['security_group']."
    );
    let r = as_b(&s, Method::GET, "/v2.0/quotas/proj-b/details", None).await;
    assert_eq!(r.body["quota"]["security_group"]["used"], 10);
    assert_eq!(r.body["quota"]["security_group_rule"]["used"], 4 + 9 * 2);

    // Rules: the new group's egress rules count too.
    let r = s
        .put(
            "/v2.0/quotas/proj-b",
            json!({"quota": {"security_group": 20, "security_group_rule": 23}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = b_creates(
        &s,
        "security-groups",
        "security_group",
        json!({"name": "g9"}),
    )
    .await;
    assert_eq!((r.status, r.error_type()), (409, "OverQuota"));
    assert_eq!(
        r.message(),
        "Quota exceeded for resources: ['security_group_rule']."
    );
    let g0 = as_b(&s, Method::GET, "/v2.0/security-groups?name=g0", None)
        .await
        .body["security_groups"][0]["id"]
        .clone();
    let r = b_creates(
        &s,
        "security-group-rules",
        "security_group_rule",
        json!({"security_group_id": g0, "direction": "ingress", "protocol": "tcp"}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = b_creates(
        &s,
        "security-group-rules",
        "security_group_rule",
        json!({"security_group_id": g0, "direction": "ingress", "protocol": "udp"}),
    )
    .await;
    assert_eq!((r.status, r.error_type()), (409, "OverQuota"));
    assert_eq!(
        r.message(),
        "Quota exceeded for resources: ['security_group_rule']."
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_extension_list_names_what_is_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    let r = s.get("/v2.0/extensions").await;
    let aliases: Vec<&str> = r.body["extensions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["alias"].as_str())
        .collect();
    for a in [
        "security-group",
        "port-security",
        "port-security-groups-filtering",
        "security-groups-normalized-cidr",
        "security-groups-rules-belongs-to-default-sg",
    ] {
        assert!(aliases.contains(&a), "{a} missing: {aliases:?}");
    }
    for a in [
        "stateful-security-group",
        "rbac-security-groups",
        "security-groups-shared-filtering",
        "security-groups-remote-address-group",
    ] {
        assert!(!aliases.contains(&a), "{a} listed but not served");
    }
    let r = s
        .post(
            "/v2.0/security-groups",
            json!({"security_group": {"name": "x", "stateful": false}}),
        )
        .await;
    assert_eq!(
        (r.status, r.message()),
        (400, "Unrecognized attribute(s) 'stateful'")
    );
    let r = s.get("/v2.0/extensions/security-group").await;
    assert_eq!(r.body["extension"]["alias"], "security-group", "{}", r.body);
}
