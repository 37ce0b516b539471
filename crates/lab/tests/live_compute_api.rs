//! The compute API's contract over HTTP: version discovery and microversion
//! headers, Nova's fault bodies and codes for bad requests, unknown servers
//! and hosts, invalid states and unsupported actions; boot failures end in
//! `ERROR` with a fault and leave nothing in the network; delete releases
//! ports (deleting those Nova made, unbinding those it was given);
//! hypervisors and the scheduler.

use std::time::Duration;

use serde_json::{Value, json};
use switchyard_lab::client::LabClient;
use switchyard_lab::live::{LiveLab, Options};

const V: &str = "/compute/v2.1";

async fn call(c: &LabClient, m: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
    c.call(m, path, body.as_ref()).await.expect("http")
}

/// A network (`attrs`) with an IPv4 subnet `cidr`; its id.
async fn network(c: &LabClient, attrs: Value, cidr: &str) -> String {
    let n = c
        .post("/v2.0/networks", &json!({ "network": attrs }))
        .await
        .expect("network");
    let id = n["network"]["id"].as_str().expect("id").to_string();
    c.post(
        "/v2.0/subnets",
        &json!({"subnet": {"network_id": id, "ip_version": 4, "cidr": cidr}}),
    )
    .await
    .expect("subnet");
    id
}

fn fault<'a>(v: &'a Value, kind: &str, code: u16) -> &'a str {
    assert_eq!(v[kind]["code"], code, "{v}");
    v[kind]["message"].as_str().expect("message")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compute_api_contract() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = Options::reference(dir.path().join("switchyard.db")).expect("reference");
    opts.compute.vif_plugging_timeout = Duration::from_secs(5);
    let live = LiveLab::start(opts).await.expect("lab");
    let c = LabClient::new(&live.url());
    let http = reqwest::Client::new();
    use reqwest::Method as M;

    // Discovery, and the microversion echoed back.
    let (s, v) = call(&c, M::GET, "/compute/v2.1/", None).await;
    assert_eq!(s, 200);
    assert_eq!(v["version"]["id"], "v2.1");
    assert_eq!(v["version"]["min_version"], "2.1");
    assert_eq!(v["version"]["version"], "2.74");
    assert_eq!(
        v["version"]["links"][0]["href"],
        format!("{}/compute/v2.1/", live.url())
    );
    // Links are built on the server's own URL: a forged Host (or the
    // header that carries the URL inside) changes nothing.
    let r = http
        .get(format!("{}/compute/v2.1/", live.url()))
        .header("Host", "evil.example")
        .header("X-Switchyard-Link-Base", "http://evil.example")
        .send()
        .await
        .expect("get");
    let v: Value = r.json().await.expect("json");
    assert_eq!(
        v["version"]["links"][0]["href"],
        format!("{}/compute/v2.1/", live.url())
    );
    let (s, v) = call(&c, M::GET, "/compute/", None).await;
    assert_eq!((s, v["versions"][0]["id"].as_str()), (200, Some("v2.1")));
    let r = http
        .get(format!("{}{V}/servers", live.url()))
        .header("OpenStack-API-Version", "compute 2.60")
        .send()
        .await
        .expect("get");
    assert_eq!(r.headers()["openstack-api-version"], "compute 2.60");
    assert_eq!(r.headers()["x-openstack-nova-api-version"], "2.60");
    let r = http
        .get(format!("{}{V}/servers", live.url()))
        .header("X-OpenStack-Nova-API-Version", "2.99")
        .send()
        .await
        .expect("get");
    assert_eq!(r.status().as_u16(), 406);
    let v: Value = r.json().await.expect("json");
    assert_eq!(
        fault(&v, "computeFault", 406),
        "Version 2.99 is not supported by the API. Minimum is 2.1 and maximum is 2.74."
    );

    // What this API does not have is Nova's 404, not Neutron's.
    let (s, v) = call(&c, M::GET, &format!("{V}/os-keypairs"), None).await;
    assert_eq!(s, 404);
    assert_eq!(
        fault(&v, "itemNotFound", 404),
        "The resource could not be found."
    );

    // Networks and a port to work with.
    let n = c
        .post("/v2.0/networks", &json!({"network": {"name": "api-net"}}))
        .await
        .expect("net");
    let net = n["network"]["id"].as_str().expect("id").to_string();
    c.post(
        "/v2.0/subnets",
        &json!({"subnet": {"network_id": net, "ip_version": 4, "cidr": "10.64.0.0/24"}}),
    )
    .await
    .expect("subnet");

    // Bad boots, refused before anything is made.
    let servers = format!("{V}/servers");
    for (body, kind, code, text) in [
        (
            json!("x"),
            "badRequest",
            400,
            "The request body must be a JSON object.",
        ),
        (
            json!({"server": {"networks": [{"uuid": net}]}}),
            "badRequest",
            400,
            "'name' is a required property",
        ),
        (
            json!({"server": {"name": "a", "networks": [{"uuid": net}], "key_name": "k"}}),
            "badRequest",
            400,
            "Additional properties are not allowed ('key_name' was unexpected)",
        ),
        (
            json!({"server": {"name": "a"}}),
            "badRequest",
            400,
            "'networks' is a required property",
        ),
        (
            json!({"server": {"name": "a", "networks": "auto"}}),
            "badRequest",
            400,
            "('auto') is not supported",
        ),
        (
            json!({"server": {"name": "a", "networks": [{"uuid": "0b4ab4b6-0000-4000-8000-000000000000"}]}}),
            "badRequest",
            400,
            "Network 0b4ab4b6-0000-4000-8000-000000000000 could not be found.",
        ),
        (
            json!({"server": {"name": "a", "networks": [{"uuid": net}], "availability_zone": "nova:compute-9"}}),
            "badRequest",
            400,
            "Compute host compute-9 could not be found.",
        ),
        (
            json!({"server": {"name": "a", "networks": [{"uuid": net}], "availability_zone": "other"}}),
            "badRequest",
            400,
            "The requested availability zone is not available: other",
        ),
        (
            json!({"server": {"name": "a", "networks": [{"uuid": net}], "max_count": 3}}),
            "badRequest",
            400,
            "max_count other than 1 is not supported",
        ),
    ] {
        let (s, v) = call(&c, M::POST, &servers, Some(body.clone())).await;
        assert_eq!(s, code, "{body} -> {v}");
        assert!(fault(&v, kind, code).contains(text), "{body} -> {v}");
    }
    let (s, v) = call(&c, M::GET, "/v2.0/ports", None).await;
    assert_eq!(
        (s, v["ports"].as_array().map(Vec::len)),
        (200, Some(0)),
        "nothing made: {v}"
    );

    // A port Nova is given, and one it makes; the scheduler picks hosts
    // that can plug them (a direct port goes to the SR-IOV node).
    let p = c
        .post(
            "/v2.0/ports",
            &json!({"port": {"network_id": net, "name": "given"}}),
        )
        .await
        .expect("port");
    let given = p["port"]["id"].as_str().expect("id").to_string();
    let (s, v) = call(
        &c,
        M::POST,
        &servers,
        Some(json!({"server": {"name": "a", "networks": [{"port": given}], "imageRef": switchyard_lab::live::compute::catalog::GUEST_IMAGE_ID, "flavorRef": "1"}})),
    )
    .await;
    assert_eq!(s, 202, "{v}");
    // Lab guests have no password to give (Nova omits it likewise when
    // instance passwords are off).
    assert!(v["server"].get("adminPass").is_none(), "{v}");
    let a = v["server"]["id"].as_str().expect("id").to_string();
    let a_srv = c
        .wait_server(&a, Duration::from_secs(30), |s| s["status"] != "BUILD")
        .await
        .expect("a");
    assert_eq!(a_srv["status"], "ACTIVE", "{a_srv}");
    let a_host = a_srv["OS-EXT-SRV-ATTR:host"]
        .as_str()
        .expect("host")
        .to_string();
    assert!(
        ["compute-1", "compute-2", "compute-4"].contains(&a_host.as_str()),
        "{a_host}"
    );
    let port = c.get(&format!("/v2.0/ports/{given}")).await.expect("port");
    assert_eq!(port["port"]["device_id"], a.as_str());
    assert_eq!(port["port"]["device_owner"], "compute:nova");
    assert_eq!(port["port"]["status"], "ACTIVE");
    assert_eq!(
        a_srv["addresses"]["api-net"][0]["OS-EXT-IPS-MAC:mac_addr"],
        port["port"]["mac_address"]
    );
    let p = c
        .post(
            "/v2.0/ports",
            &json!({"port": {"network_id": net, "binding:vnic_type": "direct"}}),
        )
        .await
        .expect("direct");
    let direct = p["port"]["id"].as_str().expect("id").to_string();
    let (_, v) = call(
        &c,
        M::POST,
        &servers,
        Some(json!({"server": {"name": "d", "networks": [{"port": direct}]}})),
    )
    .await;
    let d = v["server"]["id"].as_str().expect("id").to_string();
    let d_srv = c
        .wait_server(&d, Duration::from_secs(30), |s| s["status"] != "BUILD")
        .await
        .expect("d");
    assert_eq!(
        (
            d_srv["status"].as_str(),
            d_srv["OS-EXT-SRV-ATTR:host"].as_str()
        ),
        (Some("ACTIVE"), Some("compute-3"))
    );

    // A port a lab guest runs on (booted through the lab's guest API, no
    // device_id) is in use too, and is left exactly as it was.
    let p = c
        .post(
            "/v2.0/ports",
            &json!({"port": {"network_id": net, "binding:host_id": "compute-2", "device_owner": "compute:nova"}}),
        )
        .await
        .expect("port");
    let busy = p["port"]["id"].as_str().expect("id").to_string();
    c.post(
        "/switchyard/v1/lab/guests",
        &json!({"guest": {"name": "hand-made", "port_id": busy}}),
    )
    .await
    .expect("guest");
    let (s, v) = call(
        &c,
        M::POST,
        &servers,
        Some(json!({"server": {"name": "b", "networks": [{"port": busy}]}})),
    )
    .await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(
        fault(&v, "conflictingRequest", 409),
        format!("Port {busy} is still in use.")
    );
    let after = c.get(&format!("/v2.0/ports/{busy}")).await.expect("port");
    assert_eq!(after["port"]["binding:host_id"], "compute-2");
    assert_eq!(after["port"]["device_owner"], "compute:nova");
    c.delete("/switchyard/v1/lab/guests/hand-made")
        .await
        .expect("unplug");

    // A given port already in use.
    let (s, v) = call(
        &c,
        M::POST,
        &servers,
        Some(json!({"server": {"name": "b", "networks": [{"port": given}]}})),
    )
    .await;
    assert_eq!(s, 409);
    assert_eq!(
        fault(&v, "conflictingRequest", 409),
        format!("Port {given} is still in use.")
    );

    // Forced onto a host that cannot bind it: ERROR with Nova's fault, and
    // the port it made is gone.
    let (s, v) = call(
        &c,
        M::POST,
        &servers,
        Some(json!({"server": {"name": "e", "networks": [{"uuid": net}], "availability_zone": "nova:compute-3"}})),
    )
    .await;
    assert_eq!(s, 202, "{v}");
    let e = v["server"]["id"].as_str().expect("id").to_string();
    let e_srv = c
        .wait_server(&e, Duration::from_secs(30), |s| s["status"] != "BUILD")
        .await
        .expect("e");
    assert_eq!(e_srv["status"], "ERROR");
    assert_eq!(e_srv["fault"]["code"], 500);
    assert!(
        e_srv["fault"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("Binding failed for port")),
        "{e_srv}"
    );
    let ports = c
        .get(&format!("/v2.0/ports?device_id={e}"))
        .await
        .expect("ports");
    assert_eq!(ports["ports"].as_array().map(Vec::len), Some(0), "{ports}");

    // Lists, filters, hypervisors.
    let l = c
        .get(&format!("{V}/servers?host=compute-3"))
        .await
        .expect("list");
    let ids: Vec<&str> = l["servers"]
        .as_array()
        .expect("l")
        .iter()
        .filter_map(|s| s["id"].as_str())
        .collect();
    assert_eq!(ids, vec![d.as_str()], "a failed build is on no host");
    assert!(e_srv["OS-EXT-SRV-ATTR:host"].is_null(), "{e_srv}");
    let l = c
        .get(&format!("{V}/servers/detail?status=ERROR"))
        .await
        .expect("list");
    assert_eq!(l["servers"].as_array().map(Vec::len), Some(1));
    let (s, v) = call(&c, M::GET, &format!("{V}/servers?flavor=x"), None).await;
    assert_eq!(s, 400, "{v}");
    // Paged as Nova pages: `limit`, `marker`, a next link on a full page.
    let all: Vec<String> = c.get(&format!("{V}/servers")).await.expect("all")["servers"]
        .as_array()
        .expect("servers")
        .iter()
        .filter_map(|s| s["id"].as_str().map(str::to_string))
        .collect();
    assert!(all.len() >= 3, "{all:?}");
    let mut seen = Vec::new();
    let mut next = format!("{V}/servers/detail?limit=2");
    loop {
        let p = c.get(&next).await.expect("page");
        let page = p["servers"].as_array().expect("servers");
        assert!(page.len() <= 2, "{p}");
        seen.extend(
            page.iter()
                .filter_map(|s| s["id"].as_str().map(str::to_string)),
        );
        match p["servers_links"][0]["href"].as_str() {
            Some(href) => {
                assert_eq!(p["servers_links"][0]["rel"], "next", "{p}");
                assert_eq!(page.len(), 2, "only a full page links on: {p}");
                next = href
                    .split_once("/compute/v2.1")
                    .map(|(_, rest)| format!("{V}{rest}"))
                    .expect("a link under the compute API");
            }
            None => break,
        }
    }
    assert_eq!(seen, all, "the pages, in turn, are the list");
    // A page's marker deleted since: the next page still follows it.
    let gone = c
        .boot(
            "gone",
            json!([{"uuid": net}]),
            "compute-1",
            Duration::from_secs(30),
        )
        .await
        .expect("gone");
    let gone = gone["id"].as_str().expect("id").to_string();
    c.delete(&format!("{V}/servers/{gone}"))
        .await
        .expect("delete");
    let after: Vec<String> = c
        .get(&format!("{V}/servers?marker={gone}"))
        .await
        .expect("after a deleted marker")["servers"]
        .as_array()
        .expect("servers")
        .iter()
        .filter_map(|s| s["id"].as_str().map(str::to_string))
        .collect();
    assert_eq!(after, all, "everything older than the deleted marker");
    let (s, v) = call(&c, M::GET, &format!("{V}/servers?marker=nope"), None).await;
    assert_eq!(
        (s, fault(&v, "badRequest", 400)),
        (400, "marker [nope] not found")
    );
    let (s, v) = call(&c, M::GET, &format!("{V}/servers?limit=-1"), None).await;
    assert_eq!(
        (s, fault(&v, "badRequest", 400)),
        (400, "Invalid input for query parameters limit.")
    );
    let (s, v) = call(&c, M::GET, &format!("{V}/servers?status=FOO"), None).await;
    assert_eq!(
        (s, fault(&v, "badRequest", 400)),
        (400, "Invalid status value")
    );
    let (s, v) = call(
        &c,
        M::PUT,
        &format!("{V}/servers/{d}"),
        Some(json!({"server": {}})),
    )
    .await;
    assert_eq!(s, 405, "{v}");
    fault(&v, "badMethod", 405);
    let h = c
        .get(&format!("{V}/os-hypervisors/detail"))
        .await
        .expect("hyp");
    let hyps = h["hypervisors"].as_array().expect("h");
    let names: Vec<&str> = hyps
        .iter()
        .filter_map(|h| h["hypervisor_hostname"].as_str())
        .collect();
    assert_eq!(
        names,
        vec!["compute-1", "compute-2", "compute-3", "compute-4"]
    );
    let c3 = &hyps[2];
    assert_eq!(c3["switchyard:backend"], "sriov");
    assert_eq!(c3["switchyard:vfs"], json!({"total": 8, "used": 1}));
    assert_eq!(
        c3["running_vms"], 1,
        "the ERROR server is not running: {c3}"
    );
    let one = c
        .get(&format!(
            "{V}/os-hypervisors/{}",
            c3["id"].as_str().expect("id")
        ))
        .await
        .expect("one");
    assert_eq!(one["hypervisor"]["hypervisor_hostname"], "compute-3");

    // Migration requests Nova refuses.
    let act = format!("{V}/servers/{a}/action");
    let other = if a_host == "compute-2" {
        "compute-4"
    } else {
        "compute-2"
    };
    for (body, code, kind, text) in [
        (
            json!({"os-migrateLive": {"host": "compute-9", "block_migration": "auto"}}),
            400,
            "badRequest",
            "Compute host compute-9 could not be found.".to_string(),
        ),
        (
            json!({"os-migrateLive": {"host": a_host, "block_migration": "auto"}}),
            400,
            "badRequest",
            format!("Unable to migrate instance ({a}) to current host ({a_host})."),
        ),
        (
            json!({"os-migrateLive": {"host": other}}),
            400,
            "badRequest",
            "'block_migration' is a required property".to_string(),
        ),
        (
            json!({"os-migrateLive": {"host": other, "block_migration": "auto", "disk_over_commit": false}}),
            400,
            "badRequest",
            "Additional properties are not allowed ('disk_over_commit' was unexpected)".to_string(),
        ),
        (
            json!({"os-migrateLive": {"host": other, "block_migration": "sometimes"}}),
            400,
            "badRequest",
            "Invalid input for field/attribute block_migration.".to_string(),
        ),
        (
            json!({"reboot": {"type": "SOFT"}}),
            501,
            "notImplemented",
            "Action reboot is not implemented".to_string(),
        ),
        (
            json!({"frobnicate": {}}),
            400,
            "badRequest",
            "There is no such action: frobnicate".to_string(),
        ),
    ] {
        let (s, v) = call(&c, M::POST, &act, Some(body.clone())).await;
        assert_eq!(s, code, "{body} -> {v}");
        assert!(fault(&v, kind, code).contains(&text), "{body} -> {v}");
    }
    let (s, v) = call(
        &c,
        M::POST,
        &format!("{V}/servers/{e}/action"),
        Some(json!({"os-migrateLive": {"host": "compute-1", "block_migration": "auto"}})),
    )
    .await;
    assert_eq!(s, 409);
    assert_eq!(
        fault(&v, "conflictingRequest", 409),
        format!("Cannot 'os-migrateLive' instance {e} while it is in vm_state error")
    );
    // At 2.24 the older body is the valid one.
    let r = http
        .post(format!("{}{act}", live.url()))
        .header("X-OpenStack-Nova-API-Version", "2.24")
        .json(&json!({"os-migrateLive": {"host": other, "block_migration": "auto", "disk_over_commit": false}}))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 400, "'auto' needs 2.25");
    let r = http
        .post(format!("{}{act}", live.url()))
        .header("X-OpenStack-Nova-API-Version", "2.24")
        .json(&json!({"os-migrateLive": {"host": other, "block_migration": false, "disk_over_commit": false}}))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 202);
    let moved = c
        .wait_server(&a, Duration::from_secs(30), |s| s["status"] == "ACTIVE")
        .await
        .expect("moved");
    assert_eq!(moved["OS-EXT-SRV-ATTR:host"], other);

    // Unknown servers.
    let ghost = "5a5a5a5a-0000-4000-8000-000000000000";
    for (m, path) in [
        (M::GET, format!("{V}/servers/{ghost}")),
        (M::DELETE, format!("{V}/servers/{ghost}")),
        (M::POST, format!("{V}/servers/{ghost}/action")),
    ] {
        let body = (m == M::POST)
            .then(|| json!({"os-migrateLive": {"host": null, "block_migration": "auto"}}));
        let (s, v) = call(&c, m, &path, body).await;
        assert_eq!(s, 404, "{path}");
        assert_eq!(
            fault(&v, "itemNotFound", 404),
            format!("Instance {ghost} could not be found.")
        );
    }

    // Delete: the given port stays, unbound and free; the made one goes.
    for id in [&a, &d, &e] {
        let (s, _) = call(&c, M::DELETE, &format!("{V}/servers/{id}"), None).await;
        assert_eq!(s, 204);
    }
    let (s, _) = call(&c, M::GET, &format!("{V}/servers/{a}"), None).await;
    assert_eq!(s, 404);
    let port = c
        .get(&format!("/v2.0/ports/{given}"))
        .await
        .expect("given port");
    assert_eq!(port["port"]["device_id"], "");
    assert_eq!(port["port"]["binding:host_id"], "");
    assert!(
        live.hypervisor().guests().is_empty(),
        "{:?}",
        live.hypervisor().guests()
    );
    live.shutdown().await;
}

/// Nova's default policy for a project member (`X-Roles: member`, as the
/// embedded identity hands it on): its own servers only, another project's
/// are not found, and hypervisors, the migrations list, live migration and
/// the lab API are an administrator's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_see_their_own_servers_and_no_admin_api() {
    let dir = tempfile::tempdir().expect("tempdir");
    let live = LiveLab::start(Options::reference(dir.path().join("switchyard.db")).expect("o"))
        .await
        .expect("lab");
    let c = LabClient::new(&live.url());
    let http = reqwest::Client::new();
    let net = network(&c, json!({"name": "p", "shared": true}), "10.72.0.0/24").await;
    let admin_vm = c
        .boot(
            "admin-vm",
            json!([{"uuid": net}]),
            "compute-2",
            Duration::from_secs(30),
        )
        .await
        .expect("boot");
    let admin_id = admin_vm["id"].as_str().expect("id").to_string();
    let member = |m: reqwest::Method, path: &str| {
        http.request(m, format!("{}{path}", live.url()))
            .header("X-Project-Id", "proj-m")
            .header("X-User-Id", "user-m")
            .header("X-Roles", "member,reader")
            .header("OpenStack-API-Version", "compute 2.30")
    };
    let r = member(reqwest::Method::GET, &format!("{V}/servers"))
        .send()
        .await
        .expect("list");
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["servers"], json!([]), "{v}");
    let r = member(reqwest::Method::GET, &format!("{V}/servers?all_tenants=1"))
        .send()
        .await
        .expect("list all");
    assert_eq!(r.status(), 403);
    for (m, path, want) in [
        (reqwest::Method::GET, format!("{V}/servers/{admin_id}"), 404),
        (
            reqwest::Method::DELETE,
            format!("{V}/servers/{admin_id}"),
            404,
        ),
        (reqwest::Method::GET, format!("{V}/os-hypervisors"), 403),
        (reqwest::Method::GET, format!("{V}/os-migrations"), 403),
        (
            reqwest::Method::GET,
            "/switchyard/v1/lab/guests".to_string(),
            403,
        ),
        (
            reqwest::Method::GET,
            "/switchyard/v1/nodes".to_string(),
            403,
        ),
    ] {
        let r = member(m.clone(), &path).send().await.expect("call");
        assert_eq!(r.status().as_u16(), want, "{m} {path}");
    }
    // The member's own server: listed, shown, but not live-migrated.
    let r = member(reqwest::Method::POST, &format!("{V}/servers"))
        .json(&json!({"server": {"name": "m-vm", "networks": [{"uuid": net}], "availability_zone": "nova:compute-2"}}))
        .send()
        .await
        .expect("boot");
    assert_eq!(r.status(), 202);
    let v: Value = r.json().await.expect("json");
    let mine = v["server"]["id"].as_str().expect("id").to_string();
    let r = member(reqwest::Method::GET, &format!("{V}/servers"))
        .send()
        .await
        .expect("list");
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["servers"].as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(v["servers"][0]["id"], mine.as_str());
    // The server and its create action name the user who booted it.
    let r = member(reqwest::Method::GET, &format!("{V}/servers/{mine}"))
        .send()
        .await
        .expect("show");
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["server"]["user_id"], "user-m", "{v}");
    // Where it runs is an admin's to see (Nova's extended attributes).
    for k in [
        "OS-EXT-SRV-ATTR:host",
        "OS-EXT-SRV-ATTR:instance_name",
        "host_status",
    ] {
        assert!(v["server"].get(k).is_none(), "{k}: {v}");
    }
    let (_, v) = call(
        &c,
        reqwest::Method::GET,
        &format!("{V}/servers/{mine}"),
        None,
    )
    .await;
    assert_eq!(v["server"]["OS-EXT-SRV-ATTR:host"], "compute-2", "{v}");
    let r = member(
        reqwest::Method::GET,
        &format!("{V}/servers/{mine}/os-instance-actions"),
    )
    .send()
    .await
    .expect("actions");
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["instanceActions"][0]["user_id"], "user-m", "{v}");
    let r = member(reqwest::Method::POST, &format!("{V}/servers/{mine}/action"))
        .json(&json!({"os-migrateLive": {"host": "compute-4", "block_migration": "auto"}}))
        .send()
        .await
        .expect("migrate");
    assert_eq!(r.status(), 403);
    // The admin lists its own project's servers, and all with all_tenants.
    let (_, v) = call(&c, reqwest::Method::GET, &format!("{V}/servers"), None).await;
    assert_eq!(v["servers"].as_array().map(Vec::len), Some(1), "{v}");
    let (_, v) = call(
        &c,
        reqwest::Method::GET,
        &format!("{V}/servers?all_tenants=1"),
        None,
    )
    .await;
    assert_eq!(v["servers"].as_array().map(Vec::len), Some(2), "{v}");
    live.shutdown().await;
}

/// `os-server-external-events`: the networking service's events recorded
/// for servers this service has (`200`), `207` when some are unknown,
/// `404` when none are, Nova's schema refusals, admins only; and boots
/// wait for `network-vif-plugged` (the lab's controller sends it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_events_are_taken_as_nova_takes_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let live = LiveLab::start(Options::reference(dir.path().join("switchyard.db")).expect("o"))
        .await
        .expect("lab");
    let c = LabClient::new(&live.url());
    let net = c
        .post("/v2.0/networks", &json!({"network": {"name": "e"}}))
        .await
        .expect("network");
    let net = net["network"]["id"].as_str().expect("id").to_string();
    c.post(
        "/v2.0/subnets",
        &json!({"subnet": {"network_id": net, "ip_version": 4, "cidr": "10.74.0.0/24"}}),
    )
    .await
    .expect("subnet");
    // The boot completes: its port's network-vif-plugged arrived.
    let s = c
        .boot(
            "ev",
            json!([{"uuid": net}]),
            "compute-2",
            Duration::from_secs(30),
        )
        .await
        .expect("boot");
    let id = s["id"].as_str().expect("id").to_string();
    let unknown = "5a5a5a5a-0000-4000-8000-000000000009";
    let path = format!("{V}/os-server-external-events");
    let ev = |server: &str| json!({"name": "network-changed", "server_uuid": server, "tag": "p1"});
    let (st, v) = call(
        &c,
        reqwest::Method::POST,
        &path,
        Some(json!({"events": [ev(&id)]})),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["events"][0]["code"], 200);
    assert_eq!(v["events"][0]["status"], "completed");
    let (st, v) = call(
        &c,
        reqwest::Method::POST,
        &path,
        Some(json!({"events": [ev(&id), ev(unknown)]})),
    )
    .await;
    assert_eq!(st, 207, "{v}");
    assert_eq!(v["events"][1]["code"], 404);
    let (st, v) = call(
        &c,
        reqwest::Method::POST,
        &path,
        Some(json!({"events": [ev(unknown)]})),
    )
    .await;
    assert_eq!(st, 404, "{v}");
    for bad in [
        json!({"events": []}),
        json!({"events": [{"name": "network-exploded", "server_uuid": id}]}),
        json!({"events": [{"name": "network-changed", "server_uuid": "nope"}]}),
        json!({"events": [{"name": "network-changed", "server_uuid": id, "status": "done"}]}),
        json!({"events": [{"name": "network-changed", "server_uuid": id, "extra": 1}]}),
        json!({"event": []}),
    ] {
        let (st, v) = call(&c, reqwest::Method::POST, &path, Some(bad.clone())).await;
        assert_eq!(st, 400, "{bad}: {v}");
    }
    let r = reqwest::Client::new()
        .post(format!("{}{path}", live.url()))
        .header("X-Roles", "member")
        .json(&json!({"events": [ev(&id)]}))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 403);

    // A floating IP on the server's port: the controller sends
    // network-changed and the server's addresses gain it; taken away, they
    // lose it.
    let subnet = c
        .get(&format!("/v2.0/subnets?network_id={net}"))
        .await
        .expect("subnets")["subnets"][0]["id"]
        .as_str()
        .expect("subnet")
        .to_string();
    let (public, _router) = c.router_to_public("r", &subnet).await.expect("router");
    let port = c
        .get(&format!("/v2.0/ports?device_id={id}"))
        .await
        .expect("ports")["ports"][0]["id"]
        .as_str()
        .expect("port")
        .to_string();
    let (fid, fip) = c.floating_ip(&public, &port).await.expect("fip");
    let addresses = || async {
        let v = c.get(&format!("{V}/servers/{id}")).await.expect("server");
        v["server"]["addresses"]["e"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let shown = loop {
        let a = addresses().await;
        if a.len() == 2 || tokio::time::Instant::now() > deadline {
            break a;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(shown.len(), 2, "{shown:?}");
    assert_eq!(shown[0]["OS-EXT-IPS:type"], "fixed");
    assert_eq!(shown[1]["OS-EXT-IPS:type"], "floating");
    assert_eq!(shown[1]["addr"], fip.as_str());
    assert_eq!(
        shown[1]["OS-EXT-IPS-MAC:mac_addr"],
        shown[0]["OS-EXT-IPS-MAC:mac_addr"]
    );
    c.put(
        &format!("/v2.0/floatingips/{fid}"),
        &json!({"floatingip": {"port_id": null}}),
    )
    .await
    .expect("disassociate");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let shown = loop {
        let a = addresses().await;
        if a.len() == 1 || tokio::time::Instant::now() > deadline {
            break a;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(shown.len(), 1, "{shown:?}");
    assert_eq!(shown[0]["OS-EXT-IPS:type"], "fixed");
    live.shutdown().await;
}

/// What `openstack server create --flavor … --image …` needs: Nova's
/// flavors (list, detail, show; create and delete for admins), the guest
/// image through a Glance v2 subset, both checked on boot and shown on the
/// server; availability zones, aggregates and hypervisor statistics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flavors_images_and_zones() {
    use switchyard_lab::live::compute::catalog::GUEST_IMAGE_ID;
    let dir = tempfile::tempdir().expect("tempdir");
    let live = LiveLab::start(Options::reference(dir.path().join("switchyard.db")).expect("o"))
        .await
        .expect("lab");
    let c = LabClient::new(&live.url());
    use reqwest::Method as M;
    let (s, v) = call(&c, M::GET, &format!("{V}/flavors"), None).await;
    assert_eq!(s, 200);
    let names: Vec<&str> = v["flavors"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|f| f["name"].as_str())
        .collect();
    assert_eq!(
        names,
        ["m1.tiny", "m1.small", "m1.medium", "m1.large", "m1.xlarge"]
    );
    let (_, v) = call(&c, M::GET, &format!("{V}/flavors/1"), None).await;
    assert_eq!(
        (&v["flavor"]["ram"], &v["flavor"]["vcpus"]),
        (&json!(512), &json!(1))
    );
    let (s, v) = call(
        &c,
        M::POST,
        &format!("{V}/flavors"),
        Some(json!({"flavor": {"name": "lab.small", "ram": 128, "vcpus": 1, "disk": 0, "id": "lab1"}})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let (s, _) = call(
        &c,
        M::POST,
        &format!("{V}/flavors"),
        Some(json!({"flavor": {"name": "lab.small", "ram": 128, "vcpus": 1, "disk": 0}})),
    )
    .await;
    assert_eq!(s, 409, "a name taken");
    for bad in [
        json!({"flavor": {"name": "x", "ram": 0, "vcpus": 1, "disk": 0}}),
        json!({"flavor": {"name": "x", "vcpus": 1, "disk": 0}}),
        json!({"flavor": {"name": "x", "ram": 1, "vcpus": 1, "disk": 0, "colour": "red"}}),
    ] {
        let (s, v) = call(&c, M::POST, &format!("{V}/flavors"), Some(bad.clone())).await;
        assert_eq!(s, 400, "{bad}: {v}");
    }
    let (s, v) = call(&c, M::GET, "/image/v2/images", None).await;
    assert_eq!(s, 200);
    assert_eq!(v["images"][0]["id"], GUEST_IMAGE_ID);
    assert_eq!(v["images"][0]["status"], "active");
    let (s, _) = call(
        &c,
        M::GET,
        "/image/v2/images/5a5a5a5a-0000-4000-8000-000000000009",
        None,
    )
    .await;
    assert_eq!(s, 404);

    let net = network(&c, json!({"name": "f"}), "10.75.0.0/24").await;
    let boot = |flavor: &str, image: &str| {
        json!({"server": {"name": "fv", "networks": [{"uuid": net}], "flavorRef": flavor,
                          "imageRef": image, "availability_zone": "nova:compute-2"}})
    };
    let (s, v) = call(
        &c,
        M::POST,
        &format!("{V}/servers"),
        Some(boot("99", GUEST_IMAGE_ID)),
    )
    .await;
    assert_eq!(s, 400);
    assert_eq!(
        fault(&v, "badRequest", 400),
        "Flavor 99 could not be found."
    );
    let (s, v) = call(
        &c,
        M::POST,
        &format!("{V}/servers"),
        Some(boot("lab1", "5a5a5a5a-0000-4000-8000-000000000009")),
    )
    .await;
    assert_eq!(s, 400);
    assert!(fault(&v, "badRequest", 400).starts_with("Image 5a5a5a5a"));
    let (s, v) = call(
        &c,
        M::POST,
        &format!("{V}/servers"),
        Some(boot("lab1", GUEST_IMAGE_ID)),
    )
    .await;
    assert_eq!(s, 202, "{v}");
    let id = v["server"]["id"].as_str().expect("id").to_string();
    let (_, v) = call(&c, M::GET, &format!("{V}/servers/{id}"), None).await;
    assert_eq!(v["server"]["flavor"]["original_name"], "lab.small");
    assert_eq!(v["server"]["flavor"]["ram"], 128);
    assert_eq!(v["server"]["image"]["id"], GUEST_IMAGE_ID);

    // Nova's quotas: instances, cores and RAM counted from flavors, enforced.
    let (s, v) = call(
        &c,
        M::PUT,
        &format!("{V}/os-quota-sets/admin"),
        Some(json!({"quota_set": {"instances": 1}})),
    )
    .await;
    assert_eq!((s, &v["quota_set"]["instances"]), (200, &json!(1)), "{v}");
    let (s, v) = call(
        &c,
        M::POST,
        &format!("{V}/servers"),
        Some(boot("1", GUEST_IMAGE_ID)),
    )
    .await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(
        fault(&v, "forbidden", 403),
        "Quota exceeded for instances: Requested 1, but already used 1 of 1 instances"
    );
    let (_, v) = call(&c, M::GET, &format!("{V}/os-quota-sets/admin/detail"), None).await;
    assert_eq!(
        v["quota_set"]["ram"],
        json!({"limit": 51200, "in_use": 128, "reserved": 0})
    );
    let (_, v) = call(&c, M::GET, &format!("{V}/limits"), None).await;
    assert_eq!(v["limits"]["absolute"]["totalInstancesUsed"], 1);
    assert_eq!(v["limits"]["absolute"]["maxTotalInstances"], 1);
    let (s, _) = call(
        &c,
        M::PUT,
        &format!("{V}/os-quota-sets/admin"),
        Some(json!({"quota_set": {"instances": -2}})),
    )
    .await;
    assert_eq!(s, 400);
    let (_, v) = call(
        &c,
        M::GET,
        &format!("{V}/os-hypervisors/compute-4/uptime"),
        None,
    )
    .await;
    assert!(
        v["hypervisor"]["uptime"]
            .as_str()
            .is_some_and(|u| u.contains(" up ")),
        "{v}"
    );

    let (_, v) = call(&c, M::GET, &format!("{V}/os-availability-zone"), None).await;
    assert_eq!(v["availabilityZoneInfo"][0]["zoneName"], "nova");
    let (_, v) = call(
        &c,
        M::GET,
        &format!("{V}/os-availability-zone/detail"),
        None,
    )
    .await;
    assert!(
        v["availabilityZoneInfo"][0]["hosts"]["compute-4"].is_object(),
        "{v}"
    );
    let (_, v) = call(&c, M::GET, &format!("{V}/os-aggregates"), None).await;
    assert_eq!(v, json!({"aggregates": []}));
    let (_, v) = call(&c, M::GET, &format!("{V}/os-hypervisors/statistics"), None).await;
    assert_eq!(v["hypervisor_statistics"]["count"], 4, "{v}");
    // `hypervisor list --matching`: a name pattern (2.53+), or the older
    // search path; no match is Nova's 404.
    for path in ["os-hypervisors", "os-hypervisors/detail"] {
        let (s, v) = call(
            &c,
            M::GET,
            &format!("{V}/{path}?hypervisor_hostname_pattern=pute-4"),
            None,
        )
        .await;
        assert_eq!(s, 200, "{v}");
        let names: Vec<&str> = v["hypervisors"]
            .as_array()
            .expect("list")
            .iter()
            .filter_map(|h| h["hypervisor_hostname"].as_str())
            .collect();
        assert_eq!(names, ["compute-4"], "{path}");
    }
    let (s, v) = call(
        &c,
        M::GET,
        &format!("{V}/os-hypervisors?hypervisor_hostname_pattern=nope"),
        None,
    )
    .await;
    assert_eq!(
        fault(&v, "itemNotFound", 404),
        "No hypervisor matching 'nope' could be found."
    );
    assert_eq!(s, 404);
    let (s, _) = call(
        &c,
        M::GET,
        &format!("{V}/os-hypervisors?hypervisor_hostname_pattern=c&limit=1"),
        None,
    )
    .await;
    assert_eq!(s, 400);
    let old = |path: String| {
        reqwest::Client::new()
            .get(format!("{}{V}/{path}", live.url()))
            .header("OpenStack-API-Version", "compute 2.1")
            .send()
    };
    let r = old("os-hypervisors/compute/search".into())
        .await
        .expect("search");
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["hypervisors"].as_array().map(Vec::len), Some(4), "{v}");
    let r = old("os-hypervisors/nope/search".into())
        .await
        .expect("search");
    assert_eq!(r.status(), 404);
    let (s, _) = call(&c, M::DELETE, &format!("{V}/flavors/lab1"), None).await;
    assert_eq!(s, 202);
    let (s, _) = call(&c, M::GET, &format!("{V}/flavors/lab1"), None).await;
    assert_eq!(s, 404);
    let r = reqwest::Client::new()
        .post(format!("{}{V}/flavors", live.url()))
        .header("X-Roles", "member")
        .json(&json!({"flavor": {"name": "m", "ram": 1, "vcpus": 1, "disk": 0}}))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 403);
    live.shutdown().await;
}

/// Servers outlive the lab: a lab restarted on the same database knows its
/// servers (ids, names, hosts, addresses, flavors) and the flavors an admin
/// made or deleted, and resumes them — plugged again on their hosts, ACTIVE,
/// reaching each other — as Nova's compute service does at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_survive_a_restart_of_the_lab() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("switchyard.db");
    let live = LiveLab::start(Options::reference(db.clone()).expect("o"))
        .await
        .expect("lab");
    let c = LabClient::new(&live.url());
    let net = network(&c, json!({"name": "keep"}), "10.75.0.0/24").await;
    let mut before = Vec::new();
    for (name, host) in [("k-ovs", "compute-1"), ("k-vrouter", "compute-2")] {
        let s = c
            .boot(name, json!([{"uuid": net}]), host, Duration::from_secs(30))
            .await
            .expect("boot");
        before.push(s);
    }
    c.post(
        &format!("{V}/flavors"),
        &json!({"flavor": {"name": "k.big", "ram": 4096, "vcpus": 2, "disk": 10, "id": "k1"}}),
    )
    .await
    .expect("flavor");
    let (st, _) = call(&c, reqwest::Method::DELETE, &format!("{V}/flavors/1"), None).await;
    assert_eq!(st, 202);
    live.shutdown().await;

    let live = LiveLab::start(Options::reference(db).expect("o"))
        .await
        .expect("lab again");
    let hosts = live.hosts();
    for _ in 0..300 {
        if live.app().is_some_and(|a| {
            let n = a.shared.nodes.lock().expect("nodes");
            hosts.iter().all(|h| n.get(h).is_some_and(|x| x.connected))
        }) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let c = LabClient::new(&live.url());
    // Known before they are resumed.
    let v = c.get(&format!("{V}/servers")).await.expect("servers");
    assert_eq!(v["servers"].as_array().map(Vec::len), Some(2), "{v}");
    assert_eq!(live.compute().resume().await, 2);
    for b in &before {
        let id = b["id"].as_str().expect("id");
        let v = c.get(&format!("{V}/servers/{id}")).await.expect("server");
        let s = &v["server"];
        assert_eq!(s["status"], "ACTIVE", "{s}");
        assert_eq!(s["OS-EXT-STS:task_state"], Value::Null, "{s}");
        assert_eq!(s["name"], b["name"]);
        assert_eq!(s["OS-EXT-SRV-ATTR:host"], b["OS-EXT-SRV-ATTR:host"]);
        assert_eq!(s["addresses"], b["addresses"], "same IPs and MACs");
        let p = c
            .get(&format!("/v2.0/ports?device_id={id}"))
            .await
            .expect("ports");
        assert_eq!(p["ports"][0]["status"], "ACTIVE", "{p}");
    }
    let m = switchyard_lab::client::verify::run(&c, Some("keep"), 5)
        .await
        .expect("verify");
    assert!(m.ok && m.pairs.len() == 2, "{m:?}");
    let f = c.get(&format!("{V}/flavors")).await.expect("flavors");
    let names: Vec<&str> = f["flavors"]
        .as_array()
        .expect("flavors")
        .iter()
        .filter_map(|x| x["name"].as_str())
        .collect();
    assert!(
        names.contains(&"k.big") && !names.contains(&"m1.tiny"),
        "{names:?}"
    );
    // A new server after the restart gets a place after the kept ones.
    c.boot(
        "k-new",
        json!([{"uuid": net}]),
        "compute-4",
        Duration::from_secs(30),
    )
    .await
    .expect("boot after restart");
    let v = c.get(&format!("{V}/servers")).await.expect("servers");
    assert_eq!(v["servers"].as_array().map(Vec::len), Some(3), "{v}");
    live.shutdown().await;
}
