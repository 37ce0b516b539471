//! The compute API's HTTP face, under `/compute` beside the Neutron API:
//!
//! * `GET /compute/`, `GET /compute/v2.1/` — version discovery;
//! * `GET|POST /compute/v2.1/servers`, `GET /compute/v2.1/servers/detail`,
//!   `GET|DELETE /compute/v2.1/servers/{id}`;
//! * `POST /compute/v2.1/servers/{id}/action` with `os-migrateLive`;
//! * `GET /compute/v2.1/servers/{id}/migrations`, `GET /compute/v2.1/os-migrations`;
//! * `GET /compute/v2.1/os-hypervisors[/detail|/{id}]`.
//!
//! Microversions 2.1 to [`MAX_VERSION`] are accepted through
//! `OpenStack-API-Version: compute X.Y` (or `X-OpenStack-Nova-API-Version`)
//! and echoed back; request bodies are checked against the schema of the
//! requested version. Errors use Nova's fault bodies
//! (`{"itemNotFound": {"code": 404, "message": …}}`).

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

use super::catalog;
use super::{BootRequest, Compute, ComputeError, NetRequest, views};

/// Highest microversion served: `host` on boot (2.74), UUID hypervisor ids
/// (2.53), `block_migration: "auto"` without `disk_over_commit` (2.25).
pub const MAX_VERSION: (u32, u32) = (2, 74);
const MIN_VERSION: (u32, u32) = (2, 1);

#[derive(Clone)]
struct Ctx {
    compute: Compute,
    project: String,
}

pub fn router(compute: Compute, project: &str) -> Router {
    let ctx = Ctx {
        compute,
        project: project.to_string(),
    };
    Router::new()
        .route("/compute", get(versions))
        .route("/compute/", get(versions))
        .route("/compute/v2.1", get(version))
        .route("/compute/v2.1/", get(version))
        .route("/compute/v2.1/servers", get(list).post(create))
        .route("/compute/v2.1/servers/detail", get(list_detail))
        .route("/compute/v2.1/servers/{id}", get(show).delete(delete))
        .route("/compute/v2.1/servers/{id}/action", post(action))
        .route(
            "/compute/v2.1/servers/{id}/migrations",
            get(server_migrations),
        )
        .route("/compute/v2.1/os-migrations", get(migrations))
        .route(
            "/switchyard/v1/lab/servers/{id}/destinations",
            get(destinations),
        )
        .route(
            "/compute/v2.1/servers/{id}/os-instance-actions",
            get(instance_actions),
        )
        .route(
            "/compute/v2.1/servers/{id}/os-instance-actions/{req}",
            get(instance_action),
        )
        .route(
            "/compute/v2.1/os-server-external-events",
            post(external_events),
        )
        .route("/compute/v2.1/os-hypervisors", get(hypervisors))
        .route(
            "/compute/v2.1/os-hypervisors/detail",
            get(hypervisors_detail),
        )
        .route("/compute/v2.1/os-hypervisors/{id}", get(hypervisor))
        .route(
            "/compute/v2.1/os-hypervisors/{id}/search",
            get(hypervisor_search),
        )
        .route(
            "/compute/v2.1/os-hypervisors/statistics",
            get(hypervisor_statistics),
        )
        .route("/compute/v2.1/flavors", get(flavors).post(create_flavor))
        .route("/compute/v2.1/flavors/detail", get(flavors_detail))
        .route(
            "/compute/v2.1/flavors/{id}",
            get(show_flavor).delete(delete_flavor),
        )
        .route("/compute/v2.1/os-availability-zone", get(zones))
        .route(
            "/compute/v2.1/os-availability-zone/detail",
            get(zones_detail),
        )
        .route("/compute/v2.1/os-aggregates", get(aggregates))
        .route(
            "/compute/v2.1/os-hypervisors/{id}/uptime",
            get(hypervisor_uptime),
        )
        .route(
            "/compute/v2.1/os-quota-sets/{project}",
            get(quota_show).put(quota_update),
        )
        .route(
            "/compute/v2.1/os-quota-sets/{project}/defaults",
            get(quota_defaults),
        )
        .route(
            "/compute/v2.1/os-quota-sets/{project}/detail",
            get(quota_detail),
        )
        .route("/compute/v2.1/limits", get(limits))
        .route("/image", get(image_versions))
        .route("/image/", get(image_versions))
        .route("/image/versions", get(image_versions))
        .route("/image/v2/images", get(images))
        .route("/image/v2/images/{id}", get(show_image))
        .route("/compute/v2.1/{*rest}", axum::routing::any(unknown))
        .method_not_allowed_fallback(bad_method)
        .layer(axum::middleware::from_fn_with_state(ctx.clone(), policy))
        .layer(axum::middleware::from_fn(link_base))
        .with_state(ctx)
}

/// The header [`base`] reads: set here from the server's [`LinkBase`]
/// (`network_link_prefix`, or the address the client connected to), after
/// removing any a client sent.
const LINK_BASE: &str = "x-switchyard-link-base";

async fn link_base(mut req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    req.headers_mut().remove(LINK_BASE);
    let link = req
        .extensions()
        .get::<switchyard_api::LinkBase>()
        .and_then(|l| HeaderValue::from_str(&l.0).ok());
    if let Some(v) = link {
        req.headers_mut().insert(LINK_BASE, v);
    }
    next.run(req).await
}

/// Who calls: the project and whether it is an admin. Without `X-Roles`
/// (noauth) the caller is admin; with the embedded identity the token's
/// roles arrive here.
fn caller(h: &HeaderMap, default: &str) -> (String, bool) {
    (
        caller_project(h, default),
        switchyard_api::http::is_admin(h),
    )
}

/// Nova's default policy for what is not a project's own: hypervisors and
/// the migrations list are an admin's; another project's server is not
/// found (`404`, as Nova answers).
async fn policy(
    State(c): State<Ctx>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let compute = &c.compute;
    let (project, admin) = caller(req.headers(), &c.project);
    if admin {
        return next.run(req).await;
    }
    let path = req.uri().path().trim_end_matches('/').to_string();
    let rest = path.strip_prefix("/compute/v2.1/").unwrap_or("");
    let segs: Vec<&str> = rest.split('/').collect();
    match segs.as_slice() {
        ["os-hypervisors", ..] => {
            return fault(
                403,
                "Policy doesn't allow os_compute_api:os-hypervisors:list to be performed.",
            )
            .into_response();
        }
        ["os-migrations"] => {
            return fault(
                403,
                "Policy doesn't allow os_compute_api:os-migrations:index to be performed.",
            )
            .into_response();
        }
        ["os-aggregates", ..] | ["os-availability-zone", "detail"] => {
            return fault(
                403,
                "Policy doesn't allow os_compute_api:os-hypervisors:list to be performed.",
            )
            .into_response();
        }
        ["flavors", ..] if req.method() != axum::http::Method::GET => {
            return fault(
                403,
                "Policy doesn't allow os_compute_api:os-flavor-manage:create to be performed.",
            )
            .into_response();
        }
        ["os-server-external-events"] => {
            return fault(
                403,
                "Policy doesn't allow os_compute_api:os-server-external-events:create to be performed.",
            )
            .into_response();
        }
        ["servers", id, ..]
            if *id != "detail" && compute.server(id).is_ok_and(|s| s.project_id != project) =>
        {
            return fault(404, &format!("Instance {id} could not be found.")).into_response();
        }
        _ => {}
    }
    next.run(req).await
}

/// An error answer: Nova's fault body for a status.
#[derive(Debug)]
struct Fault {
    code: u16,
    message: String,
}

fn fault(code: u16, message: &str) -> Fault {
    Fault {
        code,
        message: message.to_string(),
    }
}

impl IntoResponse for Fault {
    fn into_response(self) -> Response {
        fault_response(self.code, &self.message)
    }
}

fn fault_response(code: u16, message: &str) -> Response {
    let kind = match code {
        400 => "badRequest",
        403 => "forbidden",
        404 => "itemNotFound",
        405 => "badMethod",
        409 => "conflictingRequest",
        501 => "notImplemented",
        _ => "computeFault",
    };
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        json!({ kind: {"code": code, "message": message} }).to_string(),
    )
        .into_response()
}

fn error(e: &ComputeError) -> Fault {
    fault(e.code(), &e.to_string())
}

fn reply(code: StatusCode, v: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

fn version_string((a, b): (u32, u32)) -> String {
    format!("{a}.{b}")
}

/// The microversion a request asks for.
fn requested_version(h: &HeaderMap) -> Result<(u32, u32), Fault> {
    let parse = |s: &str| -> Result<(u32, u32), Fault> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("latest") {
            return Ok(MAX_VERSION);
        }
        let bad = || {
            fault(
                400,
                &format!(
                    "API Version String {s} is of invalid format. Must be of format MajorNum.MinorNum."
                ),
            )
        };
        let (a, b) = s.split_once('.').ok_or_else(bad)?;
        let v = (
            a.parse::<u32>().map_err(|_| bad())?,
            b.parse::<u32>().map_err(|_| bad())?,
        );
        if v < MIN_VERSION || v > MAX_VERSION {
            return Err(fault(
                406,
                &format!(
                    "Version {} is not supported by the API. Minimum is {} and maximum is {}.",
                    version_string(v),
                    version_string(MIN_VERSION),
                    version_string(MAX_VERSION)
                ),
            ));
        }
        Ok(v)
    };
    if let Some(v) = h.get("openstack-api-version") {
        let s = v
            .to_str()
            .map_err(|_| fault(400, "OpenStack-API-Version is not valid text"))?;
        // "compute 2.60" possibly among other services, comma-separated.
        for part in s.split(',') {
            let mut w = part.split_whitespace();
            if w.next()
                .is_some_and(|svc| svc.eq_ignore_ascii_case("compute"))
                && let Some(ver) = w.next()
            {
                return parse(ver);
            }
        }
    }
    if let Some(v) = h.get("x-openstack-nova-api-version") {
        let s = v
            .to_str()
            .map_err(|_| fault(400, "X-OpenStack-Nova-API-Version is not valid text"))?;
        return parse(s);
    }
    Ok(MIN_VERSION)
}

/// Adds the microversion headers Nova sends with every versioned response.
fn versioned(mut r: Response, v: (u32, u32)) -> Response {
    let hs = r.headers_mut();
    if let Ok(x) = HeaderValue::from_str(&format!("compute {}", version_string(v))) {
        hs.insert("openstack-api-version", x);
    }
    if let Ok(x) = HeaderValue::from_str(&version_string(v)) {
        hs.insert("x-openstack-nova-api-version", x);
    }
    hs.insert(
        header::VARY,
        HeaderValue::from_static("OpenStack-API-Version, X-OpenStack-Nova-API-Version"),
    );
    r
}

/// The base URL for links: the server's public URL (as Neutron's links),
/// never the client's `Host` header, which anyone can forge.
fn base(h: &HeaderMap) -> String {
    let root = h
        .get(LINK_BASE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("http://localhost:9696");
    format!("{}/compute/v2.1", root.trim_end_matches('/'))
}

fn version_doc(h: &HeaderMap) -> Value {
    json!({
        "id": "v2.1",
        "status": "CURRENT",
        "version": version_string(MAX_VERSION),
        "min_version": version_string(MIN_VERSION),
        "updated": "2013-07-23T11:33:21Z",
        "links": [{"rel": "self", "href": format!("{}/", base(h))},
                  {"rel": "describedby", "type": "text/html", "href": "https://docs.openstack.org/"}],
        "media-types": [{"base": "application/json",
                         "type": "application/vnd.openstack.compute+json;version=2.1"}],
    })
}

/// A known path with a method it does not take: Nova's 405.
async fn bad_method() -> Response {
    fault(
        405,
        "The method specified is not allowed for this resource.",
    )
    .into_response()
}

/// Anything else under the compute API: Nova's 404.
async fn unknown() -> Response {
    fault(404, "The resource could not be found.").into_response()
}

async fn versions(h: HeaderMap) -> Response {
    reply(StatusCode::OK, &json!({"versions": [version_doc(&h)]}))
}

async fn version(h: HeaderMap) -> Response {
    reply(StatusCode::OK, &json!({"version": version_doc(&h)}))
}

/// Runs `f` at the request's microversion, with Nova's headers.
async fn at_version<F, Fut>(h: &HeaderMap, f: F) -> Response
where
    F: FnOnce((u32, u32)) -> Fut,
    Fut: std::future::Future<Output = Response>,
{
    match requested_version(h) {
        Ok(v) => versioned(f(v).await, v),
        Err(r) => r.into_response(),
    }
}

/// Every server status Nova knows (a filter on another is 400 from 2.38).
const NOVA_STATUSES: &[&str] = &[
    "ACTIVE",
    "BUILD",
    "DELETED",
    "ERROR",
    "HARD_REBOOT",
    "MIGRATING",
    "PASSWORD",
    "PAUSED",
    "REBOOT",
    "REBUILD",
    "RESCUE",
    "RESIZE",
    "REVERT_RESIZE",
    "SHELVED",
    "SHELVED_OFFLOADED",
    "SHUTOFF",
    "SOFT_DELETED",
    "SUSPENDED",
    "UNKNOWN",
    "VERIFY_RESIZE",
];

/// `?host=`, `?name=` (a regular expression in Nova; a substring here) and
/// `?status=` filters.
fn filtered(
    c: &Compute,
    q: &[(String, String)],
    (project, admin): (String, bool),
) -> Result<Vec<super::Server>, Fault> {
    let mut v = c.servers();
    // Nova: a project's own servers; an admin's `all_tenants` lists all.
    let all = q
        .iter()
        .any(|(k, v)| k == "all_tenants" && !matches!(v.as_str(), "0" | "false" | "False"));
    if all && !admin {
        return Err(fault(
            403,
            "Policy doesn't allow os_compute_api:servers:index:get_all_tenants to be performed.",
        ));
    }
    if !all {
        v.retain(|s| s.project_id == project);
    }
    for (k, val) in q {
        match k.as_str() {
            "host" | "node" => v.retain(|s| s.host.as_deref() == Some(val.as_str())),
            "name" => v.retain(|s| s.name.contains(val.as_str())),
            "status" => {
                if !NOVA_STATUSES.iter().any(|x| x.eq_ignore_ascii_case(val)) {
                    return Err(fault(400, "Invalid status value"));
                }
                v.retain(|s| s.status.as_str().eq_ignore_ascii_case(val));
            }
            "all_tenants" | "limit" | "marker" | "deleted" => {}
            other => {
                return Err(fault(400, &format!("Invalid filter field: {other}.")));
            }
        }
    }
    Ok(v)
}

async fn list(
    State(c): State<Ctx>,
    h: HeaderMap,
    Query(q): Query<Vec<(String, String)>>,
) -> Response {
    list_as(&c, &h, &q, false).await
}

async fn list_detail(
    State(c): State<Ctx>,
    h: HeaderMap,
    Query(q): Query<Vec<(String, String)>>,
) -> Response {
    list_as(&c, &h, &q, true).await
}

/// Detailed views of `servers` with their security groups.
async fn details(
    c: &Ctx,
    h: &HeaderMap,
    servers: &[super::Server],
) -> Result<Vec<Value>, Response> {
    let ids: Vec<(&str, &str)> = servers
        .iter()
        .map(|s| (s.id.as_str(), s.project_id.as_str()))
        .collect();
    let groups = c
        .compute
        .security_group_names(&ids)
        .await
        .map_err(|e| error(&e).into_response())?;
    let b = base(h);
    let admin = caller(h, &c.project).1;
    Ok(servers
        .iter()
        .map(|s| {
            let v = views::with_security_groups(views::server_detail(&b, s), groups.get(&s.id));
            views::for_caller(v, admin)
        })
        .collect())
}

/// Nova's `max_limit`: a list answers at most this many servers a page.
const MAX_LIMIT: usize = 1000;

/// One page of `v` (newest first) as Nova pages it: after the server
/// `marker` names, also one deleted since or one the filters leave out
/// (`400 marker [X] not found` for one never seen), at most `limit` (capped
/// at [`MAX_LIMIT`], which also applies without one), and, when the page is
/// full, `servers_links` with the next page's link: the request's own
/// parameters with the page's last server as the marker.
fn page(
    c: &Compute,
    mut v: Vec<super::Server>,
    q: &[(String, String)],
    next_base: &str,
) -> Result<(Vec<super::Server>, Option<Value>), Fault> {
    let arg = |k: &str| {
        q.iter()
            .rev()
            .find(|(x, _)| x == k)
            .map(|(_, v)| v.as_str())
    };
    let limit = match arg("limit") {
        None => MAX_LIMIT,
        Some(l) => l
            .parse::<usize>()
            .map_err(|_| fault(400, "Invalid input for query parameters limit."))?
            .min(MAX_LIMIT),
    };
    if let Some(m) = arg("marker") {
        let at = c
            .list_position(m)
            .ok_or_else(|| fault(400, &format!("marker [{m}] not found")))?;
        v.retain(|s| s.seq < at);
    }
    v.truncate(limit);
    let next = match v.last() {
        Some(last) if limit > 0 && v.len() == limit => {
            let mut query = form_urlencoded::Serializer::new(String::new());
            for (k, val) in q.iter().filter(|(k, _)| k != "marker") {
                query.append_pair(k, val);
            }
            query.append_pair("marker", &last.id);
            Some(json!([{"rel": "next", "href": format!("{next_base}?{}", query.finish())}]))
        }
        _ => None,
    };
    Ok((v, next))
}

/// `GET /servers` and `/servers/detail`: the filtered servers in one view,
/// a page at a time.
async fn list_as(c: &Ctx, h: &HeaderMap, q: &[(String, String)], detailed: bool) -> Response {
    at_version(h, |_| async {
        let b = base(h);
        let path = if detailed {
            "servers/detail"
        } else {
            "servers"
        };
        let listed = filtered(&c.compute, q, caller(h, &c.project))
            .and_then(|v| page(&c.compute, v, q, &format!("{b}/{path}")));
        let (v, next) = match listed {
            Ok(x) => x,
            Err(r) => return r.into_response(),
        };
        let servers = if detailed {
            match details(c, h, &v).await {
                Ok(servers) => servers,
                Err(r) => return r,
            }
        } else {
            let admin = caller(h, &c.project).1;
            v.iter()
                .map(|s| views::for_caller(views::server_brief(&b, s), admin))
                .collect()
        };
        let mut body = json!({ "servers": servers });
        if let Some(n) = next {
            body["servers_links"] = n;
        }
        reply(StatusCode::OK, &body)
    })
    .await
}

async fn show(State(c): State<Ctx>, h: HeaderMap, Path(id): Path<String>) -> Response {
    at_version(&h, |_| async {
        match c.compute.server(&id) {
            Ok(s) => match details(&c, &h, std::slice::from_ref(&s)).await {
                Ok(mut v) => reply(StatusCode::OK, &json!({"server": v.pop()})),
                Err(r) => r,
            },
            Err(e) => error(&e).into_response(),
        }
    })
    .await
}

async fn delete(State(c): State<Ctx>, h: HeaderMap, Path(id): Path<String>) -> Response {
    at_version(&h, |_| async {
        match c.compute.delete(&id).await {
            Ok(()) => StatusCode::NO_CONTENT.into_response(),
            Err(e) => error(&e).into_response(),
        }
    })
    .await
}

/// The JSON object body, with Nova's messages for what is not one.
fn body_object(body: &Bytes) -> Result<Map<String, Value>, Fault> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(fault(400, "The request body must be a JSON object.")),
        Err(_) => Err(fault(400, "Malformed request body")),
    }
}

fn invalid(field: &str, value: &Value, why: &str) -> Fault {
    fault(
        400,
        &format!("Invalid input for field/attribute {field}. Value: {value}. {why}"),
    )
}

fn only(obj: &Map<String, Value>, field: &str, allowed: &[&str]) -> Result<(), Fault> {
    let extra: Vec<String> = obj
        .keys()
        .filter(|k| !allowed.contains(&k.as_str()))
        .map(|k| format!("'{k}'"))
        .collect();
    if extra.is_empty() {
        return Ok(());
    }
    let verb = if extra.len() == 1 { "was" } else { "were" };
    Err(invalid(
        field,
        &Value::Object(obj.clone()),
        &format!(
            "Additional properties are not allowed ({} {verb} unexpected)",
            extra.join(", ")
        ),
    ))
}

fn parse_networks(v: Option<&Value>, version: (u32, u32)) -> Result<Vec<NetRequest>, Fault> {
    let Some(v) = v else {
        return if version >= (2, 37) {
            Err(invalid(
                "server",
                &Value::Null,
                "'networks' is a required property",
            ))
        } else {
            Err(fault(
                400,
                "Automatic network allocation is not supported: give 'networks' (uuid or port) explicitly.",
            ))
        };
    };
    match v {
        Value::String(s) if s == "none" => Ok(Vec::new()),
        Value::String(s) if s == "auto" => Err(fault(
            400,
            "Automatic network allocation ('auto') is not supported: give 'networks' (uuid or port) explicitly.",
        )),
        Value::Array(a) if !a.is_empty() => a
            .iter()
            .map(|n| {
                let Value::Object(o) = n else {
                    return Err(invalid("networks", n, "is not of type 'object'"));
                };
                only(o, "networks", &["uuid", "port", "fixed_ip", "tag"])?;
                let s = |k: &str| -> Result<Option<String>, Fault> {
                    match o.get(k) {
                        None | Some(Value::Null) => Ok(None),
                        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
                        Some(x) => Err(invalid(k, x, "is not a valid value")),
                    }
                };
                match (s("uuid")?, s("port")?) {
                    (_, Some(p)) => Ok(NetRequest::Port(p)),
                    (Some(id), None) => Ok(NetRequest::Network {
                        id,
                        fixed_ip: s("fixed_ip")?,
                    }),
                    (None, None) => Err(fault(
                        400,
                        "Bad networks format: network uuid is not in proper format ()",
                    )),
                }
            })
            .collect(),
        other => Err(invalid(
            "networks",
            other,
            "is not valid under any of the given schemas",
        )),
    }
}

async fn create(State(c): State<Ctx>, h: HeaderMap, body: Bytes) -> Response {
    let (c, hr, body) = (&c, &h, &body);
    at_version(&h, |v| async move {
        create_inner(c, hr, body, v)
            .await
            .unwrap_or_else(IntoResponse::into_response)
    })
    .await
}

async fn create_inner(
    c: &Ctx,
    h: &HeaderMap,
    body: &Bytes,
    version: (u32, u32),
) -> Result<Response, Fault> {
    let mut b = body_object(body)?;
    let Some(Value::Object(s)) = b.remove("server") else {
        return Err(invalid(
            "root",
            &Value::Object(b),
            "'server' is a required property",
        ));
    };
    let mut allowed = vec![
        "name",
        "imageRef",
        "flavorRef",
        "networks",
        "availability_zone",
        "min_count",
        "max_count",
        "block_device_mapping_v2",
        "security_groups",
    ];
    if version >= (2, 74) {
        allowed.extend(["host", "hypervisor_hostname"]);
    }
    only(&s, "server", &allowed)?;
    let name = match s.get("name") {
        Some(Value::String(n)) if !n.trim().is_empty() && n.len() <= 255 => n.clone(),
        Some(x) => return Err(invalid("name", x, "is not a valid server name")),
        None => {
            return Err(invalid(
                "server",
                &Value::Object(s.clone()),
                "'name' is a required property",
            ));
        }
    };
    for k in ["min_count", "max_count"] {
        if let Some(x) = s.get(k)
            && x.as_u64() != Some(1)
            && x.as_str() != Some("1")
        {
            return Err(fault(
                400,
                &format!("{k} other than 1 is not supported: boot servers one at a time."),
            ));
        }
    }
    // The CLI states the image boot as a block device mapping; that one
    // (the image to local disk) is what every boot here is. Volumes need a
    // block storage service there is none of.
    if let Some(bdm) = s.get("block_device_mapping_v2") {
        let image = s
            .get("imageRef")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let only_image = bdm.as_array().is_some_and(|l| {
            l.len() == 1
                && l[0]["source_type"] == "image"
                && l[0]["destination_type"] == "local"
                && l[0]["uuid"].as_str() == Some(image)
        });
        if !only_image {
            return Err(fault(
                400,
                "Block device mappings other than the image to local disk are not supported: there is no block storage service.",
            ));
        }
    }
    let networks = parse_networks(s.get("networks"), version)?;
    let security_groups = parse_security_groups(s.get("security_groups"))?;
    let mut host = None;
    match s.get("availability_zone") {
        None | Some(Value::Null) => {}
        Some(Value::String(az)) => {
            let mut parts = az.splitn(3, ':');
            let zone = parts.next().unwrap_or_default();
            if zone != "nova" && !zone.is_empty() {
                return Err(fault(
                    400,
                    &format!("The requested availability zone is not available: {zone}"),
                ));
            }
            host = parts.next().filter(|h| !h.is_empty()).map(str::to_string);
        }
        Some(x) => return Err(invalid("availability_zone", x, "is not of type 'string'")),
    }
    for k in ["host", "hypervisor_hostname"] {
        match s.get(k) {
            None | Some(Value::Null) => {}
            Some(Value::String(x)) if !x.is_empty() => {
                if host.as_ref().is_some_and(|h| h != x) {
                    return Err(fault(
                        400,
                        "The host named in availability_zone and in host/hypervisor_hostname differ.",
                    ));
                }
                host = Some(x.clone());
            }
            Some(x) => return Err(invalid(k, x, "is not a valid host name")),
        }
    }
    let id = c
        .compute
        .boot(BootRequest {
            name,
            project_id: caller_project(h, &c.project),
            user_id: caller_user(h),
            networks,
            host,
            flavor: ref_of(&s, "flavorRef")?,
            image: ref_of(&s, "imageRef")?,
            security_groups,
        })
        .await
        .map_err(|e| error(&e))?;
    let b = base(h);
    let mut r = reply(
        StatusCode::ACCEPTED,
        &json!({"server": {
            "id": id,
            "links": [{"rel": "self", "href": format!("{b}/servers/{id}")},
                      {"rel": "bookmark", "href": format!("{b}/servers/{id}")}],
            "OS-DCF:diskConfig": "MANUAL",
        }}),
    );
    if let Ok(loc) = HeaderValue::from_str(&format!("{b}/servers/{id}")) {
        r.headers_mut().insert(header::LOCATION, loc);
    }
    Ok(r)
}

/// `security_groups`: `[{"name": NAME_OR_ID}, …]`, as Nova's schema has it.
fn parse_security_groups(v: Option<&Value>) -> Result<Vec<String>, Fault> {
    let Some(v) = v else {
        return Ok(Vec::new());
    };
    let Some(items) = v.as_array() else {
        return Err(invalid("security_groups", v, "is not of type 'array'"));
    };
    let mut out = Vec::new();
    for it in items {
        let Some(o) = it.as_object() else {
            return Err(invalid("security_groups", it, "is not of type 'object'"));
        };
        only(o, "security_groups", &["name"])?;
        match o.get("name") {
            Some(Value::String(n)) if !n.trim().is_empty() && n.len() <= 255 => out.push(n.clone()),
            Some(x) => return Err(invalid("name", x, "is not a valid security group name")),
            None => {
                return Err(invalid(
                    "security_groups",
                    it,
                    "'name' is a required property",
                ));
            }
        }
    }
    Ok(out)
}

/// `flavorRef` / `imageRef`: a string (an id or a link) or absent.
fn ref_of(s: &Map<String, Value>, key: &str) -> Result<Option<String>, Fault> {
    match s.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(r)) if r.len() <= 255 => Ok(Some(r.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(x) => Err(invalid(key, x, "is not a valid reference")),
    }
}

/// The caller's user (set from the token by the identity check; `admin`
/// under noauth, as Nova's noauth middleware has it).
fn caller_user(h: &HeaderMap) -> String {
    h.get("x-user-id")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|u| !u.is_empty() && u.len() <= 255)
        .unwrap_or("admin")
        .to_string()
}

pub(crate) fn caller_project(h: &HeaderMap, default: &str) -> String {
    h.get("x-project-id")
        .or_else(|| h.get("x-tenant-id"))
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|p| !p.is_empty() && p.len() <= 255)
        .unwrap_or(default)
        .to_string()
}

/// Server actions Nova has that this service does not.
const UNSUPPORTED_ACTIONS: &[&str] = &[
    "reboot",
    "os-start",
    "os-stop",
    "migrate",
    "resize",
    "confirmResize",
    "revertResize",
    "rebuild",
    "pause",
    "unpause",
    "suspend",
    "resume",
    "shelve",
    "unshelve",
    "evacuate",
    "lock",
    "unlock",
    "rescue",
    "unrescue",
    "createImage",
    "addSecurityGroup",
    "removeSecurityGroup",
    "os-getConsoleOutput",
    "forceDelete",
    "restore",
    "os-resetState",
    "changePassword",
    "trigger_crash_dump",
];

async fn action(
    State(c): State<Ctx>,
    h: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let (c, id, body) = (&c, &id, &body);
    let admin = caller(&h, &c.project).1;
    let user = caller_user(&h);
    let user = &user;
    at_version(&h, |v| async move {
        action_inner(c, id, body, v, admin, user)
            .await
            .unwrap_or_else(IntoResponse::into_response)
    })
    .await
}

async fn action_inner(
    c: &Ctx,
    id: &str,
    body: &Bytes,
    version: (u32, u32),
    admin: bool,
    user: &str,
) -> Result<Response, Fault> {
    let b = body_object(body)?;
    // Unknown servers are 404 whatever the action.
    c.compute.server(id).map_err(|e| error(&e))?;
    let Some((name, args)) = b.iter().next() else {
        return Err(fault(400, "Malformed request body"));
    };
    if name != "os-migrateLive" {
        if UNSUPPORTED_ACTIONS.contains(&name.as_str()) {
            return Err(fault(
                501,
                &format!(
                    "Action {name} is not implemented by this compute service; os-migrateLive is."
                ),
            ));
        }
        return Err(fault(400, &format!("There is no such action: {name}")));
    }
    if !admin {
        return Err(fault(
            403,
            "Policy doesn't allow os_compute_api:os-migrate-server:migrate_live to be performed.",
        ));
    }
    let Value::Object(m) = args else {
        return Err(invalid("os-migrateLive", args, "is not of type 'object'"));
    };
    let mut allowed = vec!["host", "block_migration"];
    if version < (2, 25) {
        allowed.push("disk_over_commit");
    }
    if ((2, 30)..(2, 68)).contains(&version) {
        allowed.push("force");
    }
    only(m, "os-migrateLive", &allowed)?;
    let required: &[&str] = if version < (2, 25) {
        &["block_migration", "disk_over_commit", "host"]
    } else {
        &["block_migration", "host"]
    };
    for k in required {
        if !m.contains_key(*k) {
            return Err(invalid(
                "os-migrateLive",
                args,
                &format!("'{k}' is a required property"),
            ));
        }
    }
    match m.get("block_migration") {
        Some(Value::Bool(_)) => {}
        Some(Value::String(s)) if version >= (2, 25) && s == "auto" => {}
        Some(x) => {
            return Err(invalid(
                "block_migration",
                x,
                "is not valid under any of the given schemas",
            ));
        }
        None => {}
    }
    let host = match m.get("host") {
        None | Some(Value::Null) => None,
        Some(Value::String(h)) if !h.is_empty() && h.len() <= 255 => Some(h.clone()),
        Some(x) => return Err(invalid("host", x, "is not a valid host name")),
    };
    c.compute
        .live_migrate(id, host.as_deref(), user)
        .await
        .map_err(|e| error(&e))?;
    Ok(StatusCode::ACCEPTED.into_response())
}

async fn server_migrations(State(c): State<Ctx>, h: HeaderMap, Path(id): Path<String>) -> Response {
    at_version(&h, |_| async {
        if let Err(e) = c.compute.server(&id) {
            return error(&e).into_response();
        }
        let b = base(&h);
        // In-progress migrations only, as Nova lists them here.
        let v: Vec<Value> = c
            .compute
            .migrations()
            .iter()
            .filter(|m| m.instance_uuid == id && matches!(m.status, "preparing" | "running"))
            .map(|m| views::migration(&b, m))
            .collect();
        reply(StatusCode::OK, &json!({ "migrations": v }))
    })
    .await
}

/// `GET /switchyard/v1/lab/servers/{id}/destinations`: every host, and
/// whether it would take the server in a live migration or why not (the
/// console's host picker). Admin-only, as live migration is in Nova; errors
/// in the networking API's shape, as the other `/switchyard/v1` paths.
async fn destinations(State(c): State<Ctx>, h: HeaderMap, Path(id): Path<String>) -> Response {
    use switchyard_model::NeutronError;
    if !caller(&h, &c.project).1 {
        return switchyard_api::http::error(&NeutronError::new(
            403,
            "PolicyNotAuthorized",
            "Policy doesn't allow os_compute_api:os-migrate-server:migrate_live to be performed.",
        ));
    }
    match c.compute.destinations(&id).await {
        Ok(list) => {
            let v: Vec<Value> = list
                .iter()
                .map(|d| {
                    json!({
                        "host": d.host,
                        "backend": d.backend,
                        "instances": d.instances,
                        "capacity": d.capacity,
                        "fits": d.reason.is_none(),
                        "reason": d.reason,
                    })
                })
                .collect();
            reply(StatusCode::OK, &json!({ "destinations": v }))
        }
        Err(e) => switchyard_api::http::error(&NeutronError::new(
            e.code(),
            if e.code() == 404 {
                "InstanceNotFound"
            } else {
                "ComputeError"
            },
            e.to_string(),
        )),
    }
}

async fn migrations(
    State(c): State<Ctx>,
    h: HeaderMap,
    Query(q): Query<Vec<(String, String)>>,
) -> Response {
    at_version(&h, |_| async {
        let b = base(&h);
        let mut all = c.compute.migrations();
        for (k, v) in &q {
            match k.as_str() {
                "instance_uuid" => all.retain(|m| &m.instance_uuid == v),
                "status" => all.retain(|m| m.status == v),
                "source_compute" => all.retain(|m| &m.source == v),
                "migration_type" => all.retain(|_| v == "live-migration"),
                _ => {}
            }
        }
        all.reverse();
        let v: Vec<Value> = all.iter().map(|m| views::migration(&b, m)).collect();
        reply(StatusCode::OK, &json!({ "migrations": v }))
    })
    .await
}

async fn flavors(State(c): State<Ctx>, h: HeaderMap) -> Response {
    at_version(&h, |_| async {
        let b = base(&h);
        let v: Vec<Value> = c
            .compute
            .flavors()
            .iter()
            .map(|f| catalog::flavor_brief(&b, f))
            .collect();
        reply(StatusCode::OK, &json!({ "flavors": v }))
    })
    .await
}

async fn flavors_detail(State(c): State<Ctx>, h: HeaderMap) -> Response {
    at_version(&h, |_| async {
        let b = base(&h);
        let v: Vec<Value> = c
            .compute
            .flavors()
            .iter()
            .map(|f| catalog::flavor_detail(&b, f))
            .collect();
        reply(StatusCode::OK, &json!({ "flavors": v }))
    })
    .await
}

async fn show_flavor(State(c): State<Ctx>, h: HeaderMap, Path(id): Path<String>) -> Response {
    at_version(&h, |_| async {
        match c.compute.flavor(&id) {
            Ok(f) => reply(
                StatusCode::OK,
                &json!({"flavor": catalog::flavor_detail(&base(&h), &f)}),
            ),
            Err(e) => error(&e).into_response(),
        }
    })
    .await
}

async fn delete_flavor(State(c): State<Ctx>, h: HeaderMap, Path(id): Path<String>) -> Response {
    at_version(&h, |_| async {
        match c.compute.delete_flavor(&id) {
            Ok(()) => StatusCode::ACCEPTED.into_response(),
            Err(e) => error(&e).into_response(),
        }
    })
    .await
}

/// `POST /flavors` (`os-flavor-manage`): name, ram, vcpus, disk required;
/// id optional (a UUID is made); `os-flavor-access:is_public`.
async fn create_flavor(State(c): State<Ctx>, h: HeaderMap, body: Bytes) -> Response {
    let (c, hr, body) = (&c, &h, &body);
    at_version(&h, |v| async move {
        let h = hr;
        let made = (|| {
            let mut b = body_object(body)?;
            let Some(Value::Object(f)) = b.remove("flavor") else {
                return Err(invalid(
                    "root",
                    &Value::Object(b),
                    "'flavor' is a required property",
                ));
            };
            let mut allowed = vec![
                "name",
                "id",
                "ram",
                "vcpus",
                "disk",
                "OS-FLV-EXT-DATA:ephemeral",
                "swap",
                "rxtx_factor",
                "os-flavor-access:is_public",
            ];
            if v >= (2, 55) {
                allowed.push("description");
            }
            only(&f, "flavor", &allowed)?;
            let name = match f.get("name") {
                Some(Value::String(n)) if !n.trim().is_empty() && n.len() <= 255 => {
                    n.trim().to_string()
                }
                Some(x) => return Err(invalid("name", x, "is not a valid flavor name")),
                None => {
                    return Err(invalid(
                        "flavor",
                        &Value::Object(f.clone()),
                        "'name' is a required property",
                    ));
                }
            };
            let num = |k: &str, min: u64| -> Result<u32, Fault> {
                let x = f.get(k).ok_or_else(|| {
                    invalid(
                        "flavor",
                        &Value::Object(f.clone()),
                        &format!("'{k}' is a required property"),
                    )
                })?;
                x.as_u64()
                    .or_else(|| x.as_str().and_then(|s| s.parse().ok()))
                    .filter(|n| *n >= min && *n <= u64::from(i32::MAX as u32))
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| invalid(k, x, &format!("must be an integer from {min}")))
            };
            let (ram, vcpus, disk) = (num("ram", 1)?, num("vcpus", 1)?, num("disk", 0)?);
            let id = match f.get("id") {
                None | Some(Value::Null) => uuid::Uuid::new_v4().to_string(),
                Some(Value::String(i))
                    if !i.is_empty()
                        && i.len() <= 255
                        && i.chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) =>
                {
                    i.clone()
                }
                Some(x) => return Err(invalid("id", x, "is not a valid flavor id")),
            };
            let is_public = match f.get("os-flavor-access:is_public") {
                None => true,
                Some(Value::Bool(b)) => *b,
                Some(x) => {
                    return Err(invalid(
                        "os-flavor-access:is_public",
                        x,
                        "is not of type 'boolean'",
                    ));
                }
            };
            let description = f
                .get("description")
                .and_then(Value::as_str)
                .map(str::to_string);
            c.compute
                .create_flavor(catalog::Flavor {
                    id,
                    name,
                    vcpus,
                    ram,
                    disk,
                    is_public,
                    description,
                })
                .map_err(|e| error(&e))
        })();
        match made {
            Ok(f) => reply(
                StatusCode::OK,
                &json!({"flavor": catalog::flavor_detail(&base(h), &f)}),
            ),
            Err(e) => e.into_response(),
        }
    })
    .await
}

/// The host's `uptime` line (the lab's hypervisors run on this machine).
fn uptime_line() -> String {
    let up = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0) as u64;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let l: Vec<&str> = load.split_whitespace().take(3).collect();
    format!(
        " {} up {} days, {:2}:{:02},  0 users,  load average: {}",
        chrono::Utc::now().format("%H:%M:%S"),
        up / 86_400,
        up % 86_400 / 3600,
        up % 3600 / 60,
        l.join(", ")
    )
}

async fn hypervisor_uptime(State(c): State<Ctx>, h: HeaderMap, Path(id): Path<String>) -> Response {
    at_version(&h, |_| async {
        match c
            .compute
            .hosts()
            .iter()
            .find(|x| x.uuid == id || x.id.to_string() == id || x.name == id)
        {
            Some(x) => reply(
                StatusCode::OK,
                &json!({"hypervisor": {"id": x.uuid, "hypervisor_hostname": x.name, "state": "up",
                                       "status": "enabled", "uptime": uptime_line()}}),
            ),
            None => {
                fault(404, &format!("Hypervisor with ID {id} could not be found.")).into_response()
            }
        }
    })
    .await
}

/// A non-admin reads its own project's quotas only.
fn quota_reader(c: &Ctx, h: &HeaderMap, project: &str) -> Result<(), Fault> {
    let (mine, admin) = caller(h, &c.project);
    if admin || mine == project {
        Ok(())
    } else {
        Err(fault(
            403,
            "Policy doesn't allow os_compute_api:os-quota-sets:show to be performed.",
        ))
    }
}

fn quota_set(project: &str, m: std::collections::BTreeMap<String, i64>) -> Value {
    let mut v: Map<String, Value> = m.into_iter().map(|(k, x)| (k, json!(x))).collect();
    v.insert("id".into(), json!(project));
    json!({ "quota_set": v })
}

async fn quota_show(State(c): State<Ctx>, h: HeaderMap, Path(p): Path<String>) -> Response {
    at_version(&h, |_| async {
        match quota_reader(&c, &h, &p) {
            Ok(()) => reply(StatusCode::OK, &quota_set(&p, c.compute.quota(&p))),
            Err(f) => f.into_response(),
        }
    })
    .await
}

async fn quota_defaults(h: HeaderMap, Path(p): Path<String>) -> Response {
    at_version(&h, |_| async {
        let d = super::NOVA_QUOTAS
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        reply(StatusCode::OK, &quota_set(&p, d))
    })
    .await
}

async fn quota_detail(State(c): State<Ctx>, h: HeaderMap, Path(p): Path<String>) -> Response {
    at_version(&h, |_| async {
        if let Err(f) = quota_reader(&c, &h, &p) {
            return f.into_response();
        }
        let used = c.compute.quota_usage(&p);
        let mut v: Map<String, Value> = c
            .compute
            .quota(&p)
            .into_iter()
            .map(|(k, l)| {
                let u = used.get(&k).copied().unwrap_or(0);
                (k, json!({"limit": l, "in_use": u, "reserved": 0}))
            })
            .collect();
        v.insert("id".into(), json!(p));
        reply(StatusCode::OK, &json!({ "quota_set": v }))
    })
    .await
}

async fn quota_update(
    State(c): State<Ctx>,
    h: HeaderMap,
    Path(p): Path<String>,
    body: Bytes,
) -> Response {
    let (c, hr, p, body) = (&c, &h, &p, &body);
    at_version(&h, |_| async move {
        let r = (|| {
            if !caller(hr, &c.project).1 {
                return Err(fault(
                    403,
                    "Policy doesn't allow os_compute_api:os-quota-sets:update to be performed.",
                ));
            }
            let mut b = body_object(body)?;
            let Some(Value::Object(q)) = b.remove("quota_set") else {
                return Err(invalid(
                    "root",
                    &Value::Object(b),
                    "'quota_set' is a required property",
                ));
            };
            let names: Vec<&str> = super::NOVA_QUOTAS.iter().map(|(k, _)| *k).collect();
            only(&q, "quota_set", &[names.as_slice(), &["force"]].concat())?;
            let mut set = std::collections::BTreeMap::new();
            for (k, v) in &q {
                if k == "force" {
                    continue;
                }
                let n = v
                    .as_i64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                    .filter(|n| (-1..=i64::from(i32::MAX)).contains(n))
                    .ok_or_else(|| invalid(k, v, "must be an integer from -1"))?;
                set.insert(k.clone(), n);
            }
            c.compute.set_quota(p, set);
            Ok(())
        })();
        match r {
            Ok(()) => reply(StatusCode::OK, &quota_set(p, c.compute.quota(p))),
            Err(f) => f.into_response(),
        }
    })
    .await
}

/// `GET /limits`: the caller's project's absolute limits and use.
async fn limits(State(c): State<Ctx>, h: HeaderMap) -> Response {
    at_version(&h, |_| async {
        let p = caller(&h, &c.project).0;
        let q = c.compute.quota(&p);
        let u = c.compute.quota_usage(&p);
        let g =
            |m: &std::collections::BTreeMap<String, i64>, k: &str| m.get(k).copied().unwrap_or(0);
        reply(
            StatusCode::OK,
            &json!({"limits": {"rate": [], "absolute": {
                "maxTotalCores": g(&q, "cores"), "maxTotalInstances": g(&q, "instances"),
                "maxTotalRAMSize": g(&q, "ram"), "totalCoresUsed": g(&u, "cores"),
                "totalInstancesUsed": g(&u, "instances"), "totalRAMUsed": g(&u, "ram"),
            }}}),
        )
    })
    .await
}

fn action_json(id: &str, a: &super::InstanceAction) -> Value {
    json!({"action": a.action, "instance_uuid": id, "request_id": a.request_id,
           "user_id": a.user_id, "project_id": a.project_id, "start_time": a.start_time,
           "updated_at": a.start_time, "message": a.message})
}

/// `GET /servers/{id}/os-instance-actions` (`openstack server event list`):
/// newest first.
async fn instance_actions(State(c): State<Ctx>, h: HeaderMap, Path(id): Path<String>) -> Response {
    at_version(&h, |_| async {
        match c.compute.server(&id) {
            Ok(s) => {
                let v: Vec<Value> = s
                    .actions
                    .iter()
                    .rev()
                    .map(|a| action_json(&id, a))
                    .collect();
                reply(StatusCode::OK, &json!({ "instanceActions": v }))
            }
            Err(e) => error(&e).into_response(),
        }
    })
    .await
}

async fn instance_action(
    State(c): State<Ctx>,
    h: HeaderMap,
    Path((id, req)): Path<(String, String)>,
) -> Response {
    at_version(&h, |_| async {
        let s = match c.compute.server(&id) {
            Ok(s) => s,
            Err(e) => return error(&e).into_response(),
        };
        match s.actions.iter().find(|a| a.request_id == req) {
            Some(a) => {
                let mut v = action_json(&id, a);
                let result = if a.message.is_some() {
                    "Error"
                } else {
                    "Success"
                };
                v["events"] = json!([{"event": format!("compute_{}", a.action.replace('-', "_")),
                    "start_time": a.start_time, "finish_time": a.start_time, "result": result}]);
                reply(StatusCode::OK, &json!({ "instanceAction": v }))
            }
            None => fault(
                404,
                &format!("Action for request_id {req} on instance {id} not found"),
            )
            .into_response(),
        }
    })
    .await
}

async fn zones(h: HeaderMap) -> Response {
    at_version(&h, |_| async {
        reply(
            StatusCode::OK,
            &json!({"availabilityZoneInfo": [{"zoneName": "nova", "zoneState": {"available": true}, "hosts": null}]}),
        )
    })
    .await
}

async fn zones_detail(State(c): State<Ctx>, h: HeaderMap) -> Response {
    at_version(&h, |_| async {
        let hosts: Map<String, Value> = c
            .compute
            .hosts()
            .iter()
            .map(|x| {
                (x.name.clone(), json!({"nova-compute": {"available": true, "active": true, "updated_at": null}}))
            })
            .collect();
        reply(
            StatusCode::OK,
            &json!({"availabilityZoneInfo": [{"zoneName": "nova", "zoneState": {"available": true}, "hosts": hosts}]}),
        )
    })
    .await
}

/// Host aggregates: none are made (every host is in availability zone `nova`).
async fn aggregates(h: HeaderMap) -> Response {
    at_version(&h, |_| async {
        reply(StatusCode::OK, &json!({"aggregates": []}))
    })
    .await
}

/// `cpu_info` is a JSON text before microversion 2.28, an object from it.
fn cpu_info_for(mut h: Value, version: (u32, u32)) -> Value {
    if version >= (2, 28)
        && let Some(text) = h["cpu_info"].as_str()
    {
        h["cpu_info"] = serde_json::from_str(text).unwrap_or_else(|_| json!({}));
    }
    h
}

async fn hypervisor_statistics(State(c): State<Ctx>, h: HeaderMap) -> Response {
    at_version(&h, |_| async {
        let hosts = c.compute.hosts();
        let vcpus = u64::from(c.compute.capacity()) * hosts.len() as u64;
        let used: u64 = hosts
            .iter()
            .map(|x| u64::from(c.compute.usage(&x.name).0))
            .sum();
        let running = used;
        reply(
            StatusCode::OK,
            &json!({"hypervisor_statistics": {
                "count": hosts.len(), "vcpus": vcpus, "vcpus_used": used, "running_vms": running,
                "memory_mb": 0, "memory_mb_used": 0, "free_ram_mb": 0,
                "local_gb": 0, "local_gb_used": 0, "free_disk_gb": 0,
                "current_workload": 0, "disk_available_least": 0,
            }}),
        )
    })
    .await
}

fn image_base(h: &HeaderMap) -> String {
    base(h).trim_end_matches("/compute/v2.1").to_string()
}

/// Glance's version document (v2.x, as Glance lists them).
async fn image_versions(h: HeaderMap) -> Response {
    let b = image_base(&h);
    reply(
        StatusCode::OK,
        &json!({"versions": [{"id": "v2.9", "status": "CURRENT",
            "links": [{"rel": "self", "href": format!("{b}/image/v2/")}]}]}),
    )
}

async fn images(State(c): State<Ctx>, h: HeaderMap) -> Response {
    let img = catalog::image(
        &image_base(&h),
        c.compute.driver_kind(),
        &c.compute.started(),
    );
    reply(
        StatusCode::OK,
        &json!({"images": [img], "first": "/v2/images", "schema": "/v2/schemas/images"}),
    )
}

async fn show_image(State(c): State<Ctx>, h: HeaderMap, Path(id): Path<String>) -> Response {
    if id != catalog::GUEST_IMAGE_ID {
        return (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain")],
            format!("No image found with ID {id}"),
        )
            .into_response();
    }
    reply(
        StatusCode::OK,
        &catalog::image(
            &image_base(&h),
            c.compute.driver_kind(),
            &c.compute.started(),
        ),
    )
}

/// The events Nova takes (its schema's enum).
const EVENT_NAMES: &[&str] = &[
    "network-changed",
    "network-vif-plugged",
    "network-vif-unplugged",
    "network-vif-deleted",
    "volume-extended",
    "power-update",
    "accelerator-request-bound",
    "volume-reimaged",
];

/// `POST /os-server-external-events` (the networking service's
/// notifications): `200` when every event found its server, `207` when
/// some did, `404` when none did; each event answered with its `code`.
async fn external_events(State(c): State<Ctx>, h: HeaderMap, body: Bytes) -> Response {
    at_version(&h, |_| async {
        let parsed = (|| {
            let mut b = body_object(&body)?;
            only(&b, "root", &["events"])?;
            let Some(Value::Array(list)) = b.remove("events") else {
                return Err(fault(
                    400,
                    "Invalid input for field/attribute events. Value: None. None is not of type 'array'",
                ));
            };
            if list.is_empty() || list.len() > 1000 {
                return Err(fault(400, "Invalid input for field/attribute events: 1 to 1000 events"));
            }
            let mut out = Vec::with_capacity(list.len());
            for e in &list {
                let Value::Object(m) = e else {
                    return Err(invalid("events", e, "is not of type 'object'"));
                };
                only(m, "events", &["name", "server_uuid", "tag", "status"])?;
                let text = |k: &str| m.get(k).and_then(Value::as_str).map(str::to_string);
                let name = text("name").filter(|n| EVENT_NAMES.contains(&n.as_str()));
                let Some(name) = name else {
                    return Err(invalid("name", m.get("name").unwrap_or(&Value::Null), "is not one of the event names"));
                };
                let Some(server) = text("server_uuid").filter(|s| uuid::Uuid::parse_str(s).is_ok()) else {
                    return Err(invalid("server_uuid", m.get("server_uuid").unwrap_or(&Value::Null), "is not a 'uuid'"));
                };
                let status = text("status").unwrap_or_else(|| "completed".into());
                if !["completed", "failed", "in-progress"].contains(&status.as_str()) {
                    return Err(invalid("status", &json!(status), "is not one of ['failed', 'completed', 'in-progress']"));
                }
                let tag = text("tag").unwrap_or_default();
                if tag.len() > 255 {
                    return Err(invalid("tag", &json!(tag), "is too long"));
                }
                out.push(super::ExternalEvent { name, server_uuid: server, tag, status });
            }
            Ok(out)
        })();
        let events = match parsed {
            Ok(e) => e,
            Err(f) => return f.into_response(),
        };
        let codes = c.compute.external_events(events.clone());
        if codes.iter().all(|x| *x == 404) {
            return fault(404, "No instances found for any event").into_response();
        }
        let answered: Vec<Value> = events
            .iter()
            .zip(&codes)
            .map(|(e, code)| {
                json!({"name": e.name, "server_uuid": e.server_uuid, "tag": e.tag,
                       "status": e.status, "code": code})
            })
            .collect();
        let status = if codes.iter().all(|x| *x == 200) {
            StatusCode::OK
        } else {
            StatusCode::MULTI_STATUS
        };
        reply(status, &json!({ "events": answered }))
    })
    .await
}

/// The hosts `GET /os-hypervisors[/detail]` lists: all, or (2.53+) those
/// whose name contains `hypervisor_hostname_pattern` (`404` when none
/// does, as Nova answers).
fn matching_hosts<'a>(
    c: &'a Ctx,
    q: &[(String, String)],
    version: (u32, u32),
) -> Result<Vec<&'a super::Host>, (u16, String)> {
    let pattern = q
        .iter()
        .find(|(k, _)| k == "hypervisor_hostname_pattern")
        .map(|(_, v)| v.as_str());
    let hosts = c.compute.hosts().iter();
    let Some(p) = pattern else {
        return Ok(hosts.collect());
    };
    if version < (2, 53) {
        return Err((
            400,
            "Invalid input for query parameters hypervisor_hostname_pattern (2.53 or later)."
                .to_string(),
        ));
    }
    if q.iter().any(|(k, _)| k == "limit" || k == "marker") {
        return Err((
            400,
            "Paging over hypervisors with hypervisor_hostname_pattern is not supported."
                .to_string(),
        ));
    }
    let found: Vec<&super::Host> = hosts.filter(|h| h.name.contains(p)).collect();
    if found.is_empty() {
        return Err((404, format!("No hypervisor matching '{p}' could be found.")));
    }
    Ok(found)
}

async fn hypervisors(
    State(c): State<Ctx>,
    h: HeaderMap,
    Query(q): Query<Vec<(String, String)>>,
) -> Response {
    at_version(&h, |version| async move {
        match matching_hosts(&c, &q, version) {
            Ok(hosts) => {
                let v: Vec<Value> = hosts
                    .into_iter()
                    .map(|x| views::hypervisor(&c.compute, x, false))
                    .collect();
                reply(StatusCode::OK, &json!({ "hypervisors": v }))
            }
            Err((code, m)) => fault(code, &m).into_response(),
        }
    })
    .await
}

async fn hypervisors_detail(
    State(c): State<Ctx>,
    h: HeaderMap,
    Query(q): Query<Vec<(String, String)>>,
) -> Response {
    at_version(&h, |version| async move {
        match matching_hosts(&c, &q, version) {
            Ok(hosts) => {
                let v: Vec<Value> = hosts
                    .into_iter()
                    .map(|x| cpu_info_for(views::hypervisor(&c.compute, x, true), version))
                    .collect();
                reply(StatusCode::OK, &json!({ "hypervisors": v }))
            }
            Err((code, m)) => fault(code, &m).into_response(),
        }
    })
    .await
}

/// `GET /os-hypervisors/{pattern}/search` (before 2.53): the hosts whose
/// name contains the pattern, `404` when none does.
async fn hypervisor_search(State(c): State<Ctx>, h: HeaderMap, Path(p): Path<String>) -> Response {
    at_version(&h, |version| async move {
        if version >= (2, 53) {
            return fault(404, "The resource could not be found.").into_response();
        }
        let v: Vec<Value> = c
            .compute
            .hosts()
            .iter()
            .filter(|x| x.name.contains(&p))
            .map(|x| views::hypervisor(&c.compute, x, false))
            .collect();
        if v.is_empty() {
            return fault(
                404,
                &format!("No hypervisor matching '{p}' could be found."),
            )
            .into_response();
        }
        reply(StatusCode::OK, &json!({ "hypervisors": v }))
    })
    .await
}

async fn hypervisor(State(c): State<Ctx>, h: HeaderMap, Path(id): Path<String>) -> Response {
    at_version(&h, |version| async move {
        match c
            .compute
            .hosts()
            .iter()
            .find(|x| x.uuid == id || x.id.to_string() == id || x.name == id)
        {
            Some(x) => reply(
                StatusCode::OK,
                &json!({"hypervisor": cpu_info_for(views::hypervisor(&c.compute, x, true), version)}),
            ),
            None => {
                fault(404, &format!("Hypervisor with ID {id} could not be found.")).into_response()
            }
        }
    })
    .await
}
