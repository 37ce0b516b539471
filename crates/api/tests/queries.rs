//! Filters, fields, sorting, pagination, If-Match and tags, as Neutron does them.

mod common;

use common::{Server, id};
use reqwest::Method;
use serde_json::{Value, json};

fn names(v: &Value, coll: &str) -> Vec<String> {
    v[coll]
        .as_array()
        .expect("collection")
        .iter()
        .map(|x| x["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_fields_and_sorting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    for (name, shared) in [("b", false), ("a", true), ("c", false)] {
        s.create(
            "networks",
            "network",
            json!({"name": name, "shared": shared}),
        )
        .await;
    }
    let r = s
        .get("/v2.0/networks?name=a&name=c&sort_key=name&sort_dir=asc")
        .await;
    assert_eq!(names(&r.body, "networks"), vec!["a", "c"]);
    let r = s.get("/v2.0/networks?name=a&name=c&shared=false").await;
    assert_eq!(names(&r.body, "networks"), vec!["c"]);
    let r = s.get("/v2.0/networks?sort_key=name&sort_dir=desc").await;
    assert_eq!(names(&r.body, "networks"), vec!["c", "b", "a"]);
    let r = s
        .get("/v2.0/networks?shared=True&fields=name&fields=shared")
        .await;
    assert_eq!(r.body["networks"], json!([{"name": "a", "shared": true}]));
    let r = s.get("/v2.0/networks?unknown=1").await;
    assert_eq!(
        (r.status, r.message()),
        (400, "['unknown'] is invalid attribute for filtering")
    );
    let r = s.get("/v2.0/networks?sort_key=name").await;
    assert_eq!(r.status, 400);
    let r = s.get("/v2.0/networks?sort_key=bogus&sort_dir=asc").await;
    assert_eq!(r.message(), "['bogus'] is invalid attribute for sort_keys");
    let r = s.get("/v2.0/networks?shared=perhaps").await;
    assert_eq!((r.status, r.error_type()), (400, "InvalidInput"));

    // Empty-string filtering and the fixed_ips filter on ports.
    let n = s.network("ports").await;
    let sub = s.subnet(&n, "10.0.0.0/24").await;
    s.port(&n, json!({"name": "vm", "device_id": "vm-1"})).await;
    s.port(&n, json!({"name": "free"})).await;
    let r = s
        .get(&format!("/v2.0/ports?network_id={}&device_id=", id(&n)))
        .await;
    assert_eq!(names(&r.body, "ports"), vec!["free"]);
    let r = s.get("/v2.0/ports?fixed_ips=ip_address%3D10.0.0.2").await;
    assert_eq!(names(&r.body, "ports"), vec!["vm"]);
    let r = s
        .get(&format!(
            "/v2.0/ports?fixed_ips=subnet_id%3D{}&fixed_ips=ip_address%3D10.0.0.3",
            id(&sub)
        ))
        .await;
    assert_eq!(names(&r.body, "ports"), vec!["free"]);
    let r = s
        .get("/v2.0/ports?fixed_ips=ip_address_substr%3D0.0.3")
        .await;
    assert_eq!(names(&r.body, "ports"), vec!["free"]);

    // Lists by device and by id come from indexes: the same answers as a
    // scan, through a device change, several values and unknown ones.
    let vm2 = s
        .port(&n, json!({"name": "vm2", "device_id": "vm-2"}))
        .await;
    let by = |q: &str| {
        let q = q.to_string();
        let s = &s;
        async move { names(&s.get(&format!("/v2.0/ports?{q}")).await.body, "ports") }
    };
    assert_eq!(by("device_id=vm-1").await, vec!["vm"]);
    assert_eq!(
        by("device_id=vm-1&device_id=vm-2&device_id=nope&sort_key=name&sort_dir=asc").await,
        vec!["vm", "vm2"]
    );
    assert_eq!(by("device_id=vm-2&name=vm").await, Vec::<String>::new());
    let r = s
        .put(
            &format!("/v2.0/ports/{}", id(&vm2)),
            json!({"port": {"device_id": "vm-1"}}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(by("device_id=vm-2").await, Vec::<String>::new());
    assert_eq!(
        by("device_id=vm-1&sort_key=name&sort_dir=asc").await,
        vec!["vm", "vm2"]
    );
    assert_eq!(
        by(&format!("id={}&id=nope&id={}", id(&vm2), id(&vm2))).await,
        vec!["vm2"]
    );
    assert_eq!(by("id=nope").await, Vec::<String>::new());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagination_follows_links_forward_and_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    for i in 0..7 {
        s.network(&format!("n{i}")).await;
    }
    let mut seen: Vec<String> = Vec::new();
    let mut url = "/v2.0/networks?limit=3&sort_key=name&sort_dir=asc".to_string();
    let mut pages = 0;
    loop {
        let r = s.get(&url).await;
        assert_eq!(r.status, 200, "{}", r.body);
        pages += 1;
        let page = names(&r.body, "networks");
        seen.extend(page.clone());
        let links = r.body["networks_links"].as_array().expect("links").clone();
        let next = links.iter().find(|l| l["rel"] == "next");
        match next {
            Some(l) => {
                let href = l["href"].as_str().expect("href");
                url = href.strip_prefix(&s.base).expect("same server").to_string();
            }
            None => break,
        }
        assert!(pages < 10, "pagination must terminate");
    }
    assert_eq!(seen, (0..7).map(|i| format!("n{i}")).collect::<Vec<_>>());
    assert_eq!(pages, 3);

    // page_reverse from the end gives the previous page in ascending order.
    let all = s.get("/v2.0/networks?sort_key=name&sort_dir=asc").await;
    let n5 = id(&all.body["networks"][5]);
    let r = s
        .get(&format!(
            "/v2.0/networks?limit=2&sort_key=name&sort_dir=asc&marker={n5}&page_reverse=True"
        ))
        .await;
    assert_eq!(names(&r.body, "networks"), vec!["n3", "n4"]);
    let r = s.get("/v2.0/networks?limit=abc").await;
    assert_eq!((r.status, r.error_type()), (400, "BadRequest"));
    let r = s
        .get("/v2.0/networks?limit=2&marker=00000000-0000-0000-0000-000000000000")
        .await;
    assert_eq!((r.status, r.error_type()), (404, "NetworkNotFound"));
    let r = s.get("/v2.0/networks?limit=0").await;
    assert_eq!(r.body["networks"].as_array().expect("list").len(), 7);
    assert!(r.body.get("networks_links").is_none());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_match_revision_constraint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    let n = s.network("n").await;
    let path = format!("/v2.0/networks/{}", id(&n));
    let body = json!({"network": {"name": "n2"}});
    let r = s
        .req(
            Method::PUT,
            &path,
            Some(body.clone()),
            &[("if-match", "revision_number=0")],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["network"]["revision_number"], 1);
    let r = s
        .req(
            Method::PUT,
            &path,
            Some(body.clone()),
            &[("if-match", "revision_number=0")],
        )
        .await;
    assert_eq!(
        (r.status, r.error_type()),
        (412, "RevisionNumberConstraintFailed")
    );
    assert_eq!(r.message(), "Constrained to 0, but current revision is 1");
    let r = s
        .req(
            Method::PUT,
            &path,
            Some(body.clone()),
            &[("if-match", "revision_number=abc")],
        )
        .await;
    assert_eq!(r.status, 400);
    let r = s
        .req(
            Method::DELETE,
            &path,
            None,
            &[("if-match", "revision_number=7")],
        )
        .await;
    assert_eq!(r.status, 412);
    assert_eq!(
        s.get(&path).await.status,
        200,
        "a failed constraint deletes nothing"
    );
    let r = s
        .req(
            Method::DELETE,
            &path,
            None,
            &[("if-match", "revision_number=1")],
        )
        .await;
    assert_eq!(r.status, 204);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_subresource_and_filters() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    let a = s.network("a").await;
    let b = s.network("b").await;
    let pa = format!("/v2.0/networks/{}/tags", id(&a));
    let r = s.put(&pa, json!({"tags": ["red", "blue"]})).await;
    assert_eq!(
        (r.status, r.body.clone()),
        (200, json!({"tags": ["red", "blue"]}))
    );
    assert_eq!(
        s.req(Method::PUT, &format!("{pa}/green"), None, &[])
            .await
            .status,
        201
    );
    assert_eq!(
        s.req(
            Method::PUT,
            &format!("/v2.0/networks/{}/tags/red", id(&b)),
            None,
            &[]
        )
        .await
        .status,
        201
    );
    assert_eq!(s.get(&format!("{pa}/green")).await.status, 204);
    assert_eq!(
        s.get(&format!("{pa}/black")).await.error_type(),
        "TagNotFound"
    );
    let r = s.get(&pa).await;
    assert_eq!(r.body["tags"], json!(["red", "blue", "green"]));
    let net = s.get(&format!("/v2.0/networks/{}", id(&a))).await.body["network"].clone();
    assert_eq!(net["revision_number"], 2, "tag changes revise the resource");
    assert_eq!(
        names(
            &s.get("/v2.0/networks?tags=red,blue").await.body,
            "networks"
        ),
        vec!["a"]
    );
    let mut any = names(&s.get("/v2.0/networks?tags-any=red").await.body, "networks");
    any.sort();
    assert_eq!(any, vec!["a", "b"]);
    assert_eq!(
        names(
            &s.get("/v2.0/networks?not-tags=blue").await.body,
            "networks"
        ),
        vec!["b"]
    );
    assert_eq!(
        names(
            &s.get("/v2.0/networks?not-tags-any=green,red").await.body,
            "networks"
        ),
        Vec::<String>::new()
    );
    assert_eq!(s.delete(&format!("{pa}/green")).await.status, 204);
    assert_eq!(s.delete(&format!("{pa}/green")).await.status, 404);
    assert_eq!(s.delete(&pa).await.status, 204);
    assert_eq!(s.get(&pa).await.body["tags"], json!([]));
    let r = s.put(&pa, json!({"tags": ["x", "x"]})).await;
    assert_eq!(r.status, 400);
    let r = s
        .put(
            &pa,
            json!({"tags": (0..51).map(|i| i.to_string()).collect::<Vec<_>>()}),
        )
        .await;
    assert_eq!(r.status, 400);
    let r = s.put(&pa, json!({"labels": []})).await;
    assert_eq!(r.status, 400);
    let r = s
        .get("/v2.0/networks/00000000-0000-0000-0000-000000000000/tags")
        .await;
    assert_eq!((r.status, r.error_type()), (404, "TagResourceNotFound"));
    // Networks do not take tags on POST; ports do (tag-ports-during-bulk-creation).
    let r = s
        .post("/v2.0/networks", json!({"network": {"tags": ["t"]}}))
        .await;
    assert_eq!(r.message(), "Attribute 'tags' not allowed in POST");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projects_are_recorded_and_isolated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    let member = [("x-project-id", "proj-b"), ("x-roles", "member")];
    let r = s
        .req(
            Method::POST,
            "/v2.0/networks",
            Some(json!({"network": {"name": "mine"}})),
            &member,
        )
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(r.body["network"]["project_id"], "proj-b");
    let theirs = s.network("admins").await;
    assert_eq!(theirs["project_id"], "proj-a");
    let r = s.req(Method::GET, "/v2.0/networks", None, &member).await;
    assert_eq!(names(&r.body, "networks"), vec!["mine"]);
    let r = s
        .req(
            Method::GET,
            &format!("/v2.0/networks/{}", id(&theirs)),
            None,
            &member,
        )
        .await;
    assert_eq!(r.status, 404);
    let r = s
        .req(
            Method::POST,
            "/v2.0/networks",
            Some(json!({"network": {"provider:network_type": "vxlan"}})),
            &member,
        )
        .await;
    assert_eq!(r.status, 403);
    let r = s
        .req(
            Method::POST,
            "/v2.0/networks",
            Some(json!({"network": {"project_id": "proj-c"}})),
            &member,
        )
        .await;
    assert_eq!(r.status, 400);
    // An admin may create for another project.
    let r = s
        .post(
            "/v2.0/networks",
            json!({"network": {"tenant_id": "proj-c"}}),
        )
        .await;
    assert_eq!(r.body["network"]["project_id"], "proj-c");
    s.stop().await;
}

/// A plain port list (no filter, no fields) is written straight from the
/// records; it must be exactly what the general path renders — bound ports
/// with binding details, tags, pairs, several addresses — for an admin and
/// for a member (who does not see binding details), pages and links too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_port_list_is_the_general_list() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    s.lab_agents().await;
    let n = s
        .create(
            "networks",
            "network",
            json!({"name": "plain", "shared": true}),
        )
        .await;
    s.subnet(&n, "10.9.0.0/24").await;
    s.subnet(&n, "fd00:9::/64").await;
    s.port(
        &n,
        json!({"binding:host_id": "compute-1", "device_owner": "compute:nova",
               "device_id": "vm-1", "name": "bound", "description": "d \"quoted\" é"}),
    )
    .await;
    let tagged = s
        .port(
            &n,
            json!({"allowed_address_pairs": [{"ip_address": "10.9.0.0/28"}],
                   "binding:vnic_type": "direct", "binding:profile": {"k": [1, 2]}}),
        )
        .await;
    let r = s
        .put(
            &format!(
                "/v2.0/ports/{}/tags/blue",
                tagged["id"].as_str().expect("id")
            ),
            json!(null),
        )
        .await;
    assert!(r.status < 300, "{}", r.body);
    let member = [("x-project-id", "proj-b"), ("x-roles", "member")];
    for _ in 0..3 {
        let r = s
            .req(
                Method::POST,
                "/v2.0/ports",
                Some(json!({"port": {"network_id": n["id"], "name": "theirs"}})),
                &member,
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
    }
    for _ in 0..3 {
        s.port(&n, json!({})).await;
    }
    // `admin_state_up=true` holds for every port: the general path.
    for (who, headers) in [("admin", &[][..]), ("member", &member[..])] {
        let plain = s.req(Method::GET, "/v2.0/ports", None, headers).await;
        let general = s
            .req(
                Method::GET,
                "/v2.0/ports?admin_state_up=true",
                None,
                headers,
            )
            .await;
        assert_eq!(plain.status, 200);
        assert!(!plain.body["ports"].as_array().expect("ports").is_empty());
        assert_eq!(plain.body, general.body, "{who}");
        let all = plain.body["ports"].as_array().expect("ports");
        let marker = all[0]["id"].as_str().expect("id");
        let page = |q: String| {
            let s = &s;
            async move { s.req(Method::GET, &q, None, headers).await.body }
        };
        let a = page(format!("/v2.0/ports?limit=2&marker={marker}")).await;
        let b = page(format!(
            "/v2.0/ports?limit=2&marker={marker}&admin_state_up=true"
        ))
        .await;
        assert_eq!(a["ports"], b["ports"], "{who}");
        assert_eq!(a["ports"].as_array().map(Vec::len), Some(2), "{who}: {a}");
        let hrefs = |v: &Value| {
            v["ports_links"]
                .as_array()
                .expect("links")
                .iter()
                .map(|l| {
                    l["href"]
                        .as_str()
                        .unwrap_or_default()
                        .replace("&admin_state_up=true", "")
                        .replace("admin_state_up=true&", "")
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(hrefs(&a), hrefs(&b), "{who}");
        let gone = page("/v2.0/ports?limit=2&marker=no-such-port".into()).await;
        assert_eq!(gone["NeutronError"]["type"], "PortNotFound", "{gone}");
        // One filter an index answers exactly takes the same path: the
        // same answer as with a second filter, which needs the general one.
        let net = n["id"].as_str().expect("id");
        let one = all[1]["id"].as_str().expect("id");
        for q in [
            format!("network_id={net}"),
            "device_id=vm-1".to_string(),
            format!("id={one}&id={marker}"),
            format!("network_id={net}&limit=2&marker={marker}"),
            "device_id=nope".to_string(),
        ] {
            let fast = page(format!("/v2.0/ports?{q}")).await;
            let general = page(format!("/v2.0/ports?{q}&admin_state_up=true")).await;
            assert_eq!(fast["ports"], general["ports"], "{who} {q}");
            assert!(fast["ports"].is_array(), "{who} {q}: {fast}");
        }
    }
    s.stop().await;
}
