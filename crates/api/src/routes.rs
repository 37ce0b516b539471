//! Request routing and the handlers of every Neutron resource. Handlers parse,
//! call one ML2 operation inside a [`Shared::write`] transaction, and render.

use axum::Extension;
use axum::body::Bytes;
use axum::extract::State as AxState;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use serde_json::{Map, Value, json};
use switchyard_ml2::ops::{
    self, agents, bindings, floatingips, networks, ports, routers, secgroups, segments, subnets,
    tags,
};
use switchyard_ml2::{Ctx, Ml2};
use switchyard_model::attrs::{self, Attr};
use switchyard_model::{Kind, NeutronError, Result, State, render};

use crate::core::Shared;
use crate::http::{self, Caller};
use crate::meta;
use crate::query::{ListParams, Query, select_fields};
use crate::server::LinkBase;

/// Everything a handler needs.
#[derive(Clone)]
pub struct App {
    pub shared: Shared,
    pub default_project: String,
    /// The embedded identity: when set, every API but version discovery
    /// and the node agents' needs a Keystone token (`switchyard_identity`).
    pub identity: Option<switchyard_identity::Identity>,
    /// An external Keystone that checks tokens instead (`auth_strategy =
    /// "keystone"`); ignored when `identity` is set.
    pub keystone: Option<std::sync::Arc<switchyard_identity::remote::RemoteValidator>>,
}

/// One Neutron collection.
#[derive(Debug, Clone, Copy)]
struct Res {
    kind: Kind,
    singular: &'static str,
    collection: &'static str,
    attrs: &'static [Attr],
    creatable: bool,
    tagged: bool,
}

const RESOURCES: [Res; 9] = [
    Res {
        kind: Kind::Network,
        singular: "network",
        collection: "networks",
        attrs: attrs::NETWORK,
        creatable: true,
        tagged: true,
    },
    Res {
        kind: Kind::Subnet,
        singular: "subnet",
        collection: "subnets",
        attrs: attrs::SUBNET,
        creatable: true,
        tagged: true,
    },
    Res {
        kind: Kind::Port,
        singular: "port",
        collection: "ports",
        attrs: attrs::PORT,
        creatable: true,
        tagged: true,
    },
    Res {
        kind: Kind::Segment,
        singular: "segment",
        collection: "segments",
        attrs: attrs::SEGMENT,
        creatable: true,
        tagged: false,
    },
    Res {
        kind: Kind::Agent,
        singular: "agent",
        collection: "agents",
        attrs: attrs::AGENT,
        creatable: false,
        tagged: false,
    },
    Res {
        kind: Kind::Router,
        singular: "router",
        collection: "routers",
        attrs: attrs::ROUTER,
        creatable: true,
        tagged: true,
    },
    Res {
        kind: Kind::FloatingIp,
        singular: "floatingip",
        collection: "floatingips",
        attrs: attrs::FLOATINGIP,
        creatable: true,
        tagged: true,
    },
    Res {
        kind: Kind::SecurityGroup,
        singular: "security_group",
        collection: "security-groups",
        attrs: attrs::SECURITY_GROUP,
        creatable: true,
        tagged: true,
    },
    Res {
        kind: Kind::SecurityGroupRule,
        singular: "security_group_rule",
        collection: "security-group-rules",
        attrs: attrs::SECURITY_GROUP_RULE,
        creatable: true,
        tagged: false,
    },
];

impl Res {
    /// The collection's key in bodies: the URL's name, with `_` for `-`.
    fn key(&self) -> &'static str {
        match self.kind {
            Kind::SecurityGroup => "security_groups",
            Kind::SecurityGroupRule => "security_group_rules",
            _ => self.collection,
        }
    }
}

pub(crate) struct Req {
    pub(crate) method: Method,
    uri: Uri,
    headers: HeaderMap,
    pub(crate) body: Bytes,
    caller: Caller,
    base: String,
    /// The client's address, for the refusal log.
    peer: String,
}

impl Req {
    pub(crate) fn ctx(&self, app: &App) -> Ctx {
        Ctx {
            project_id: self.caller.project_id.clone(),
            is_admin: self.caller.is_admin,
            is_service: self.caller.is_service,
            now: app.shared.clock.now(),
        }
    }
    fn query(&self) -> Query {
        Query::parse(self.uri.query())
    }
    /// `path` under the server's public URL ([`base_url`]).
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

/// Where links point: the configured `network_link_prefix`, else the address
/// the client connected to (both set by [`crate::server`]). Never the `Host`
/// or `X-Forwarded-*` headers, which any client can forge.
fn base_url(link: Option<&LinkBase>) -> String {
    link.map_or_else(|| "http://localhost:9696".to_string(), |l| l.0.to_string())
}

/// How long `GET /switchyard/v1/nodes/{host}` waits for the agent's answer.
const INTROSPECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// The single entry point: every request comes through here.
pub async fn dispatch(
    AxState(app): AxState<App>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    link: Option<Extension<LinkBase>>,
    body: Bytes,
) -> Response {
    let caller = match http::caller(&headers, &app.default_project) {
        Ok(c) => c,
        Err(e) => return http::error(&e),
    };
    let base = base_url(link.as_ref().map(|Extension(l)| l));
    let req = Req {
        method,
        uri,
        headers,
        body,
        caller,
        base,
        peer: crate::southbound::peer_of(peer),
    };
    // Creating one resource joins the next group commit, awaited here.
    if let Some(prepared) = queued_create(&app, &req) {
        return respond(match prepared {
            Ok((ctx, op, singular)) => app
                .shared
                .submit(ctx, op)
                .await
                .map(|v| http::json(201, json!({ singular: v }))),
            Err(e) => Err(e),
        });
    }
    // The state lock and SQLite commit are blocking work: keep them off the reactor.
    let app2 = app.clone();
    match tokio::task::spawn_blocking(move || route(&app2, &req)).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "handler panicked");
            http::error(&NeutronError::internal())
        }
    }
}

/// The request path's segments, decoded.
fn segments(req: &Req) -> Vec<String> {
    let path = req.uri.path().trim_end_matches('/');
    // Old clients address `/v2.0/networks.json`.
    let path = path.strip_suffix(".json").unwrap_or(path);
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect()
}

/// A single resource's creation (`POST /v2.0/{collection}` with one
/// resource in the body), made ready for [`Shared::submit`]; `None` for
/// anything else, which [`route`] handles (bulk creation included: all or
/// none of it is one operation there).
fn queued_create(
    app: &App,
    req: &Req,
) -> Option<Result<(Ctx, crate::group_commit::Op, &'static str)>> {
    if req.method != Method::POST || !req.caller.can_write {
        return None;
    }
    let segs = segments(req);
    let ["v2.0", coll] = [segs.first()?.as_str(), segs.get(1)?.as_str()] else {
        return None;
    };
    let res = RESOURCES
        .iter()
        .find(|r| r.collection == coll && r.creatable)
        .filter(|_| segs.len() == 2)?;
    let body = match http::json_body(&req.body) {
        Ok(b) => b,
        Err(e) => return Some(Err(e)),
    };
    if body.contains_key(res.key()) {
        return None;
    }
    let one = match http::resource_body(&body, res.singular) {
        Ok(one) => one.clone(),
        Err(e) => return Some(Err(e)),
    };
    Some(Ok((req.ctx(app), create_op(res.kind, one), res.singular)))
}

/// Creating one resource of `kind` from its body (quota-checked), and
/// rendering it once committed: what a group commit runs, and a single
/// creation that reaches [`create`].
fn create_op(kind: Kind, one: Map<String, Value>) -> crate::group_commit::Op {
    Box::new(move |ml2, st, ctx| {
        let id = create_one(ml2, st, ctx, kind, &one)?;
        crate::quotas::check_created(ml2, st, kind, std::slice::from_ref(&id))?;
        let ctx = ctx.clone();
        Ok(Box::new(move |ml2: &Ml2, st: &State| {
            render_one(ml2, st, &ctx, kind, &id)
        }))
    })
}

/// The response for a handler's outcome.
fn respond(result: Result<Response>) -> Response {
    match result {
        Ok(r) => r,
        Err(e) if e.status == 405 => http::method_not_allowed(),
        Err(e) => http::error(&e),
    }
}

fn route(app: &App, req: &Req) -> Response {
    let segs = segments(req);
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let m = &req.method;
    let result: Result<Response> = match segs.as_slice() {
        [] if m == Method::GET => Ok(http::json(200, meta::versions(&req.base))),
        [] => return http::method_not_allowed(),
        ["v2.0"] if m == Method::GET => Ok(http::json(200, meta::index(&req.base))),
        ["v2.0", "extensions"] if m == Method::GET => Ok(http::json(200, meta::extensions())),
        ["v2.0", "extensions", alias] if m == Method::GET => meta::extension(alias)
            .map(|e| http::json(200, json!({ "extension": e })))
            .ok_or_else(|| {
                NeutronError::not_found(
                    "HTTPNotFound",
                    format!("Extension with alias {alias} does not exist"),
                )
            }),
        ["v2.0", coll, rest @ ..]
            if !req.caller.can_write && *m != Method::GET && *m != Method::HEAD =>
        {
            Err(read_only(coll, rest, m))
        }
        ["v2.0", "quotas", rest @ ..] => crate::quotas::route(app, req, rest),
        ["v2.0", coll, rest @ ..] => match RESOURCES.iter().find(|r| r.collection == *coll) {
            Some(res) => resource(app, req, res, rest),
            None => Err(NeutronError::no_route()),
        },
        ["switchyard", "v1", rest @ ..] => internal(app, req, rest),
        _ => Err(NeutronError::no_route()),
    };
    respond(result)
}

/// A `reader` asking to change something: Neutron's policy refusal, named
/// as its rules are (`create_network`, `update_port`, `add_router_interface`).
fn read_only(coll: &str, rest: &[&str], m: &Method) -> NeutronError {
    let singular = RESOURCES.iter().find(|r| r.collection == coll).map_or_else(
        || coll.trim_end_matches('s').to_string(),
        |r| r.singular.to_string(),
    );
    let action = match (rest, m) {
        ([_, action], &Method::PUT) => action.to_string(),
        (_, &Method::POST) => format!("create_{singular}"),
        (_, &Method::DELETE) => format!("delete_{singular}"),
        _ => format!("update_{singular}"),
    };
    NeutronError::new(
        403,
        "PolicyNotAuthorized",
        format!("rule:{action} is disallowed by policy"),
    )
}

fn percent_decode(s: &str) -> String {
    form_urlencoded::parse(format!("x={s}").replace('+', "%2B").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| s.to_string())
}

fn not_allowed() -> NeutronError {
    NeutronError::new(405, "HTTPMethodNotAllowed", "Method not allowed")
}

fn no_body(req: &Req) -> Result<()> {
    if req.body.iter().all(u8::is_ascii_whitespace) {
        Ok(())
    } else {
        Err(NeutronError::http_bad_request(
            "Request body is not supported in DELETE.",
        ))
    }
}

fn resource(app: &App, req: &Req, res: &Res, rest: &[&str]) -> Result<Response> {
    let m = &req.method;
    match rest {
        [] if m == Method::GET => list(app, req, res),
        [] if m == Method::POST && res.creatable => create(app, req, res),
        [] => Err(not_allowed()),
        [id] if m == Method::GET => show(app, req, res, id),
        [id] if m == Method::PUT => update(app, req, res, id),
        [id] if m == Method::DELETE => delete(app, req, res, id),
        [_] => Err(not_allowed()),
        [id, "tags", tail @ ..] if res.tagged => tag_route(app, req, res, id, tail),
        [id, "bindings", tail @ ..] if res.kind == Kind::Port => binding_route(app, req, id, tail),
        [
            id,
            action @ ("add_router_interface" | "remove_router_interface"),
        ] if res.kind == Kind::Router => router_interface(app, req, id, action),
        [id, action @ ("add_extraroutes" | "remove_extraroutes")] if res.kind == Kind::Router => {
            extraroutes(app, req, id, action)
        }
        [id, "l3-agents"] if res.kind == Kind::Router => router_agents(app, req, id),
        [id, "l3-routers", ..] if res.kind == Kind::Agent => agent_routers(app, req, id),
        _ => Err(NeutronError::no_route()),
    }
}

// ---- rendering -------------------------------------------------------------

fn render_record(ml2: &Ml2, st: &State, ctx: &Ctx, kind: Kind, id: &str) -> Option<Value> {
    let down = ml2.settings.agent_down_time;
    match kind {
        Kind::Network => st
            .networks
            .get(id)
            .filter(|n| ops::network_visible(ctx, n))
            .map(|n| ops::redact(ctx, render::network(st, n))),
        Kind::Subnet => st
            .subnets
            .get(id)
            .filter(|s| ops::subnet_visible(ctx, st, s))
            .map(render::subnet),
        Kind::Port => st
            .ports
            .get(id)
            .filter(|p| ops::port_visible(ctx, st, p))
            .map(|p| ops::redact(ctx, render::port(p))),
        Kind::Segment => st
            .segments
            .get(id)
            .filter(|_| ctx.is_admin)
            .map(render::segment),
        Kind::Agent => st
            .agents
            .get(id)
            .filter(|_| ctx.is_admin)
            .map(|a| render::agent(a, ctx.now, down)),
        Kind::Router => st
            .routers
            .get(id)
            .filter(|r| routers::router_visible(ctx, r))
            .map(|r| render::router(st, r)),
        Kind::FloatingIp => st
            .floatingips
            .get(id)
            .filter(|f| floatingips::floatingip_visible(ctx, f))
            .map(|f| render::floatingip(st, f)),
        Kind::SecurityGroup => st
            .security_groups
            .get(id)
            .filter(|g| secgroups::group_visible(ctx, g))
            .map(|g| render::security_group(st, g)),
        Kind::SecurityGroupRule => st
            .security_group_rules
            .get(id)
            .filter(|r| secgroups::rule_visible(ctx, st, r))
            .map(|r| render::security_group_rule(st, r)),
        // Quotas have their own handlers (`crate::quotas`).
        Kind::Quota => None,
    }
}

fn not_found(kind: Kind, id: &str) -> NeutronError {
    match kind {
        Kind::Network => ops::network_not_found(id),
        Kind::Subnet => ops::subnet_not_found(id),
        Kind::Port => ops::port_not_found(id),
        Kind::Segment => ops::segment_not_found(id),
        Kind::Agent => ops::agent_not_found(id),
        Kind::Router => routers::router_not_found(id),
        Kind::FloatingIp => floatingips::floatingip_not_found(id),
        Kind::SecurityGroup => secgroups::group_not_found(id),
        Kind::SecurityGroupRule => secgroups::rule_not_found(id),
        Kind::Quota => NeutronError::no_route(),
    }
}

fn render_one(ml2: &Ml2, st: &State, ctx: &Ctx, kind: Kind, id: &str) -> Result<Value> {
    render_record(ml2, st, ctx, kind, id).ok_or_else(|| not_found(kind, id))
}

fn all_ids(st: &State, kind: Kind) -> Vec<&String> {
    match kind {
        Kind::Network => st.networks.keys().collect(),
        Kind::Subnet => st.subnets.keys().collect(),
        Kind::Port => st.ports.keys().collect(),
        Kind::Segment => st.segments.keys().collect(),
        Kind::Agent => st.agents.keys().collect(),
        Kind::Router => st.routers.keys().collect(),
        Kind::FloatingIp => st.floatingips.keys().collect(),
        Kind::Quota => st.quotas.keys().collect(),
        Kind::SecurityGroup => st.security_groups.keys().collect(),
        Kind::SecurityGroupRule => st.security_group_rules.keys().collect(),
    }
}

/// The stored id equal to `id`, if `kind` has one.
fn id_in<'s>(st: &'s State, kind: Kind, id: &str) -> Option<&'s String> {
    match kind {
        Kind::Network => st.networks.get_key_value(id).map(|(k, _)| k),
        Kind::Subnet => st.subnets.get_key_value(id).map(|(k, _)| k),
        Kind::Port => st.ports.get_key_value(id).map(|(k, _)| k),
        Kind::Segment => st.segments.get_key_value(id).map(|(k, _)| k),
        Kind::Agent => st.agents.get_key_value(id).map(|(k, _)| k),
        Kind::Router => st.routers.get_key_value(id).map(|(k, _)| k),
        Kind::FloatingIp => st.floatingips.get_key_value(id).map(|(k, _)| k),
        Kind::Quota => st.quotas.get_key_value(id).map(|(k, _)| k),
        Kind::SecurityGroup => st.security_groups.get_key_value(id).map(|(k, _)| k),
        Kind::SecurityGroupRule => st.security_group_rules.get_key_value(id).map(|(k, _)| k),
    }
}

/// The ids worth rendering for a list: the ids asked for, or from an index
/// when the query filters on the network or (ports) a device, from after the
/// marker on a plain id-ordered page, else all. The filters are still checked
/// on each rendered candidate.
fn candidate_ids<'s>(st: &'s State, kind: Kind, p: &ListParams) -> Vec<&'s String> {
    if let Some(wanted) = p.eq_values("id") {
        let mut ids: Vec<&String> = wanted.iter().filter_map(|w| id_in(st, kind, w)).collect();
        ids.sort();
        ids.dedup();
        return ids;
    }
    // An empty device_id is not indexed (unbound ports have it).
    if kind == Kind::Port
        && let Some(devices) = p.eq_values("device_id")
        && devices.iter().all(|d| !d.is_empty())
    {
        let mut ids: Vec<&String> = devices
            .iter()
            .flat_map(|d| st.device_ports(d))
            .map(|p| &p.id)
            .collect();
        ids.sort();
        ids.dedup();
        return ids;
    }
    if let Some(nets) = p.eq_values("network_id") {
        let mut ids: Vec<&String> = match kind {
            Kind::Port => nets.iter().flat_map(|n| st.network_port_ids(n)).collect(),
            Kind::Subnet => nets
                .iter()
                .flat_map(|n| st.network_subnets(n))
                .map(|s| &s.id)
                .collect(),
            _ => return all_ids(st, kind),
        };
        ids.sort();
        ids.dedup();
        return ids;
    }
    if p.is_plain_id_scan()
        && p.limit.is_some()
        && let Some(m) = &p.marker
        && st.get(kind, m).is_some()
    {
        return all_ids(st, kind).into_iter().filter(|id| *id > m).collect();
    }
    all_ids(st, kind)
}

fn list(app: &App, req: &Req, res: &Res) -> Result<Response> {
    let q = req.query();
    let p = ListParams::parse(&q, res.attrs)?;
    let ctx = req.ctx(app);
    if matches!(res.kind, Kind::Agent | Kind::Segment) {
        ops::require_admin(&ctx, &format!("get_{}", res.singular))?;
    }
    if matches!(res.kind, Kind::SecurityGroup | Kind::SecurityGroupRule) {
        ensure_default_group(app, &ctx, &p)?;
    }
    // The attributes candidate_ids answers exactly for ports.
    if res.kind == Kind::Port && p.is_plain_page(&["id", "device_id", "network_id"]) {
        return list_ports_plain(app, req, &q, &p, &ctx);
    }
    let (items, marker) = app.shared.read(|ml2, st| {
        let mut items = Vec::new();
        for id in candidate_ids(st, res.kind, &p) {
            if let Some(v) = render_record(ml2, st, &ctx, res.kind, id)
                && p.matches(&v)?
            {
                items.push(v);
                // Default order, no filters: the table is already in page order.
                if p.is_plain_id_scan() && p.limit.is_some_and(|l| items.len() >= l) {
                    break;
                }
            }
        }
        let marker = match (&p.marker, p.limit) {
            (Some(m), Some(_)) => match render_record(ml2, st, &ctx, res.kind, m) {
                Some(v) => Some(v),
                // An unknown marker is a 404, never a silent restart at page one.
                None => return Err(not_found(res.kind, m)),
            },
            _ => None,
        };
        Ok((items, marker))
    })?;
    let page = p.page(items, marker.as_ref());
    let links = p.links(&q, &req.url(req.uri.path()), &page, "id");
    let page: Vec<Value> = page
        .into_iter()
        .map(|v| select_fields(v, &p.fields))
        .collect();
    let mut out = Map::new();
    out.insert(res.key().into(), Value::Array(page));
    if let Some(l) = links {
        out.insert(format!("{}_links", res.key()), Value::Array(l));
    }
    Ok(http::json(200, Value::Object(out)))
}

/// About how long one port's JSON is (one fixed IP, a few binding details).
const PORT_JSON_BYTES: usize = 768;

/// A plain page of ports (no fields, id order, no filter or one that the
/// candidates answer exactly) written straight from the records into the
/// response, with no JSON value per port: the same bytes [`list`] would
/// send, at a fraction of the time.
fn list_ports_plain(
    app: &App,
    req: &Req,
    q: &crate::query::Query,
    p: &ListParams,
    ctx: &Ctx,
) -> Result<Response> {
    let details = ops::reads_binding_details(ctx);
    let (mut body, ends, count) = app.shared.read(|_, st| {
        if let (Some(m), Some(_)) = (&p.marker, p.limit)
            && !st
                .ports
                .get(m)
                .is_some_and(|x| ops::port_visible(ctx, st, x))
        {
            // An unknown marker is a 404, never a silent restart at page one.
            return Err(not_found(Kind::Port, m));
        }
        let ids = candidate_ids(st, Kind::Port, p);
        // About a port's size each, so the body is allocated once: growing
        // a large buffer by doubling took fresh, zeroed pages every time.
        // (Capped: a member's candidates are every port, most not theirs.)
        let want = ids.len().min(p.limit.unwrap_or(usize::MAX)).min(16_384);
        let mut body = Vec::with_capacity(64 + want.saturating_mul(PORT_JSON_BYTES));
        body.extend_from_slice(b"{\"ports\":[");
        let (mut first, mut last, mut count) = (None, None, 0usize);
        let after = p.limit.and(p.marker.as_ref());
        for id in ids {
            if p.limit.is_some_and(|l| count >= l) {
                break;
            }
            if after.is_some_and(|m| id <= m) {
                continue;
            }
            let Some(port) = st.ports.get(id).filter(|x| ops::port_visible(ctx, st, x)) else {
                continue;
            };
            if count > 0 {
                body.push(b',');
            }
            serde_json::to_writer(&mut body, &render::PortView::of(port, details))
                .map_err(|_| NeutronError::internal())?;
            first.get_or_insert(id.as_str());
            last = Some(id.as_str());
            count += 1;
        }
        body.push(b']');
        let ends = first.zip(last).map(|(f, l)| (f.to_string(), l.to_string()));
        Ok((body, ends, count))
    })?;
    let ends_ref = ends.as_ref().map(|(f, l)| (f.as_str(), l.as_str()));
    if let Some(links) = p.links_between(q, &req.url(req.uri.path()), ends_ref, count) {
        body.extend_from_slice(b",\"ports_links\":");
        serde_json::to_writer(&mut body, &links).map_err(|_| NeutronError::internal())?;
    }
    body.push(b'}');
    Ok(http::json_bytes(200, body))
}

/// Listing groups or rules makes the project's default group first, as
/// Neutron does: the project named by a `project_id` (or `tenant_id`)
/// filter, else the caller's (another project's only for an admin).
fn ensure_default_group(app: &App, ctx: &Ctx, p: &ListParams) -> Result<()> {
    let project = p
        .eq_values("project_id")
        .or_else(|| p.eq_values("tenant_id"))
        .and_then(|v| v.first())
        .cloned()
        .unwrap_or_else(|| ctx.project_id.clone());
    if project != ctx.project_id && !ctx.is_admin && !ctx.is_service {
        return Ok(());
    }
    let exists = app
        .shared
        .read(|_, st| Ok(st.default_security_group(&project).is_some()))?;
    if !exists {
        // The compute service listing a server's project makes its default
        // group as an admin would.
        let owner = Ctx {
            is_admin: true,
            ..ctx.clone()
        };
        app.shared.write(
            &owner,
            |_, st, ctx| {
                secgroups::ensure_default(st, ctx, &project);
                Ok(())
            },
            |_, _, ()| Ok(()),
        )?;
    }
    Ok(())
}

fn show(app: &App, req: &Req, res: &Res, id: &str) -> Result<Response> {
    let ctx = req.ctx(app);
    let fields = req.query().fields();
    let v = app
        .shared
        .read(|ml2, st| render_one(ml2, st, &ctx, res.kind, id))?;
    Ok(http::json(
        200,
        json!({ res.singular: select_fields(v, &fields) }),
    ))
}

fn create_one(
    ml2: &Ml2,
    st: &mut State,
    ctx: &Ctx,
    kind: Kind,
    body: &Map<String, Value>,
) -> Result<String> {
    match kind {
        Kind::Network => networks::create(ml2, st, ctx, body),
        Kind::Subnet => subnets::create(st, ctx, body),
        Kind::Port => ports::create(ml2, st, ctx, body),
        Kind::Segment => segments::create(ml2, st, ctx, body),
        Kind::Agent | Kind::Quota => Err(not_allowed()),
        Kind::SecurityGroup => secgroups::create_group(st, ctx, body),
        Kind::SecurityGroupRule => secgroups::create_rule(st, ctx, body),
        Kind::Router => routers::create(ml2, st, ctx, body),
        Kind::FloatingIp => floatingips::create(ml2, st, ctx, body),
    }
}

fn create(app: &App, req: &Req, res: &Res) -> Result<Response> {
    let body = http::json_body(&req.body)?;
    let ctx = req.ctx(app);
    let kind = res.kind;
    // Bulk: `{"networks": [...]}` creates all or none.
    if let Some(list) = body.get(res.key()) {
        if body.contains_key(res.singular) {
            return Err(NeutronError::http_bad_request("Body contains invalid data"));
        }
        let Some(items) = list.as_array() else {
            return Err(NeutronError::http_bad_request("Body contains invalid data"));
        };
        if items.is_empty() {
            return Err(NeutronError::http_bad_request("Resources required"));
        }
        let mut bodies = Vec::new();
        for it in items {
            let Some(m) = it.as_object() else {
                return Err(NeutronError::http_bad_request(format!(
                    "Object '{}' contains invalid data",
                    res.singular
                )));
            };
            bodies.push(m.clone());
        }
        let out = app.shared.write(
            &ctx,
            |ml2, st, ctx| {
                let ids = if kind == Kind::SecurityGroupRule {
                    secgroups::create_rules_bulk(st, ctx, &bodies)?
                } else {
                    bodies
                        .iter()
                        .map(|b| create_one(ml2, st, ctx, kind, b))
                        .collect::<Result<Vec<_>>>()?
                };
                crate::quotas::check_created(ml2, st, kind, &ids)?;
                Ok(ids)
            },
            |ml2, st, ids| {
                ids.iter()
                    .map(|id| render_one(ml2, st, &ctx, kind, id))
                    .collect::<Result<Vec<_>>>()
            },
        )?;
        return Ok(http::json(201, json!({ res.key(): out })));
    }
    // A single creation is normally queued (`queued_create`); this is the
    // same operation, committed alone.
    let op = create_op(kind, http::resource_body(&body, res.singular)?.clone());
    let v = app
        .shared
        .write(&ctx, op, |ml2, st, render| render(ml2, st))?;
    Ok(http::json(201, json!({ res.singular: v })))
}

fn current_revision(st: &State, kind: Kind, id: &str) -> Option<u64> {
    match kind {
        Kind::Network => st.networks.get(id).map(|x| x.std.revision_number),
        Kind::Subnet => st.subnets.get(id).map(|x| x.std.revision_number),
        Kind::Port => st.ports.get(id).map(|x| x.std.revision_number),
        Kind::Segment => st.segments.get(id).map(|x| x.std.revision_number),
        Kind::Router => st.routers.get(id).map(|x| x.std.revision_number),
        Kind::FloatingIp => st.floatingips.get(id).map(|x| x.std.revision_number),
        Kind::SecurityGroup => st.security_groups.get(id).map(|x| x.std.revision_number),
        Kind::SecurityGroupRule => st
            .security_group_rules
            .get(id)
            .map(|x| x.std.revision_number),
        Kind::Agent | Kind::Quota => None,
    }
}

/// The `If-Match` constraint, checked inside the write transaction.
fn check_if_match(expected: Option<u64>, st: &State, kind: Kind, id: &str) -> Result<()> {
    if expected.is_none() {
        return Ok(());
    }
    if kind == Kind::Agent {
        return Err(NeutronError::bad_request(
            "BadRequest",
            "Bad agent request: Revision matching not supported for this resource.",
        ));
    }
    match current_revision(st, kind, id) {
        Some(cur) => http::check_revision(expected, cur),
        None => Err(not_found(kind, id)),
    }
}

fn update(app: &App, req: &Req, res: &Res, id: &str) -> Result<Response> {
    let body = http::json_body(&req.body)?;
    if body.get(res.key()).is_some() {
        return Err(NeutronError::http_bad_request(
            "Bulk operation not supported",
        ));
    }
    let one = http::resource_body(&body, res.singular)?;
    let expected = http::if_match(&req.headers)?;
    let ctx = req.ctx(app);
    let kind = res.kind;
    let v = app.shared.write(
        &ctx,
        |ml2, st, ctx| {
            // Existence (and visibility) first, so an unknown id is a 404, not a 412.
            render_one(ml2, st, ctx, kind, id)?;
            check_if_match(expected, st, kind, id)?;
            match kind {
                Kind::Network => networks::update(ml2, st, ctx, id, one),
                Kind::Subnet => subnets::update(st, ctx, id, one),
                Kind::Port => ports::update(ml2, st, ctx, id, one),
                Kind::Segment => segments::update(st, ctx, id, one),
                Kind::Agent => agents::update(st, ctx, id, one),
                Kind::Router => routers::update(ml2, st, ctx, id, one),
                Kind::FloatingIp => floatingips::update(st, ctx, id, one),
                Kind::SecurityGroup => secgroups::update_group(st, ctx, id, one),
                Kind::SecurityGroupRule => secgroups::update_rule(st, ctx, id, one),
                Kind::Quota => Err(not_allowed()),
            }
        },
        |ml2, st, ()| render_one(ml2, st, &ctx, kind, id),
    )?;
    Ok(http::json(200, json!({ res.singular: v })))
}

fn delete(app: &App, req: &Req, res: &Res, id: &str) -> Result<Response> {
    no_body(req)?;
    let expected = http::if_match(&req.headers)?;
    let ctx = req.ctx(app);
    let kind = res.kind;
    let live = if kind == Kind::Agent {
        app.shared
            .read(|_, st| Ok(st.agents.get(id).map(|a| a.host.clone())))?
            .filter(|h| app.shared.agent_alive(h))
            .and_then(|h| app.shared.live_session(&h))
    } else {
        None
    };
    app.shared.write(
        &ctx,
        |ml2, st, ctx| {
            render_one(ml2, st, ctx, kind, id)?;
            check_if_match(expected, st, kind, id)?;
            match kind {
                Kind::Network => networks::delete(ml2, st, ctx, id),
                Kind::Subnet => subnets::delete(ml2, st, ctx, id),
                Kind::Port => ports::delete(st, ctx, id),
                Kind::Segment => segments::delete(st, ctx, id),
                Kind::Agent => {
                    let gone = st.agents.get(id).cloned();
                    agents::delete(st, ctx, id)?;
                    // The node's agent is connected and alive: it registers
                    // again at once, as its next report would (Neutron's
                    // agents re-create their record with each report), so
                    // the node's forwarding state is not torn down.
                    if let Some(a) = gone
                        && let Some((role, conf)) = live
                            .as_ref()
                            .filter(|(r, _)| r.agent_type() == a.agent_type)
                    {
                        let mut body = serde_json::Map::new();
                        body.insert("host".into(), json!(a.host));
                        body.insert("agent_type".into(), json!(role.agent_type()));
                        body.insert("configurations".into(), Value::Object(conf.clone()));
                        agents::report_state(st, ctx, &body)?;
                    }
                    Ok(())
                }
                Kind::Router => routers::delete(ml2, st, ctx, id),
                Kind::FloatingIp => floatingips::delete(st, ctx, id),
                Kind::SecurityGroup => secgroups::delete_group(st, ctx, id),
                Kind::SecurityGroupRule => secgroups::delete_rule(st, ctx, id),
                Kind::Quota => Err(not_allowed()),
            }
        },
        |_, _, ()| Ok(()),
    )?;
    Ok(http::empty(204))
}

// ---- router interfaces -----------------------------------------------------

/// `PUT /v2.0/routers/{id}/add_router_interface` and `…/remove_router_interface`,
/// with the unwrapped `{"subnet_id"}` / `{"port_id"}` body; answered unwrapped.
fn router_interface(app: &App, req: &Req, id: &str, action: &str) -> Result<Response> {
    if req.method != Method::PUT {
        return Err(not_allowed());
    }
    let body = http::json_body(&req.body)?;
    let ctx = req.ctx(app);
    let adding = action == "add_router_interface";
    let v = app.shared.write(
        &ctx,
        |ml2, st, ctx| {
            if adding {
                routers::add_interface(ml2, st, ctx, id, &body)
            } else {
                routers::remove_interface(ml2, st, ctx, id, &body)
            }
        },
        |_, _, v| Ok(v),
    )?;
    Ok(http::json(200, v))
}

/// `PUT /v2.0/routers/{id}/add_extraroutes` and `…/remove_extraroutes`
/// (`extraroute-atomic`): `{"router": {"routes": [...]}}` in, the router out.
fn extraroutes(app: &App, req: &Req, id: &str, action: &str) -> Result<Response> {
    if req.method != Method::PUT {
        return Err(not_allowed());
    }
    let body = http::json_body(&req.body)?;
    let ctx = req.ctx(app);
    let adding = action == "add_extraroutes";
    let v = app.shared.write(
        &ctx,
        |_, st, ctx| routers::change_extraroutes(st, ctx, id, &body, adding),
        |ml2, st, ()| render_one(ml2, st, &ctx, Kind::Router, id),
    )?;
    Ok(http::json(200, json!({ "router": v })))
}

/// `GET /v2.0/routers/{id}/l3-agents` (`l3_agent_scheduler`): the gateway
/// agent the router is placed on.
fn router_agents(app: &App, req: &Req, id: &str) -> Result<Response> {
    if req.method != Method::GET {
        return Err(not_allowed());
    }
    let ctx = req.ctx(app);
    ops::require_admin(&ctx, "get_l3-agents")?;
    let v = app.shared.read(|ml2, st| {
        let r = routers::visible_router(&ctx, st, id)?;
        let down = ml2.settings.agent_down_time;
        let agents: Vec<Value> = st
            .agent_by_type_host(switchyard_model::AGENT_TYPE_GATEWAY, &r.host)
            .map(|a| {
                let mut v = render::agent(a, ctx.now, down);
                if let Some(o) = v.as_object_mut() {
                    o.insert("ha_state".into(), Value::Null);
                }
                v
            })
            .into_iter()
            .collect();
        Ok(json!({ "agents": agents }))
    })?;
    Ok(http::json(200, v))
}

/// `GET /v2.0/agents/{id}/l3-routers`: the routers a gateway agent hosts.
/// Moving routers by hand (POST/DELETE) is not supported yet.
fn agent_routers(app: &App, req: &Req, id: &str) -> Result<Response> {
    let ctx = req.ctx(app);
    ops::require_admin(&ctx, "get_l3-routers")?;
    if req.method != Method::GET {
        return Err(NeutronError::not_implemented(
            "Moving routers between gateway nodes by hand is not supported yet: routers are placed when created.",
        ));
    }
    let v = app.shared.read(|_, st| {
        let a = st.agents.get(id).ok_or_else(|| ops::agent_not_found(id))?;
        if a.agent_type != switchyard_model::AGENT_TYPE_GATEWAY {
            return Err(NeutronError::not_found(
                "InvalidL3Agent",
                format!("Agent {id} is not a L3 Agent or has been disabled"),
            ));
        }
        let list: Vec<Value> = st
            .routers
            .values()
            .filter(|r| r.host == a.host)
            .map(|r| render::router(st, r))
            .collect();
        Ok(json!({ "routers": list }))
    })?;
    Ok(http::json(200, v))
}

// ---- tags ------------------------------------------------------------------

fn tag_route(app: &App, req: &Req, res: &Res, id: &str, tail: &[&str]) -> Result<Response> {
    let ctx = req.ctx(app);
    let kind = res.kind;
    let m = &req.method;
    match tail {
        [] if m == Method::GET => {
            let t = app.shared.read(|_, st| tags::list(st, &ctx, kind, id))?;
            Ok(http::json(200, json!({ "tags": t })))
        }
        [] if m == Method::PUT => {
            let body = http::json_body(&req.body)?;
            let expected = http::if_match(&req.headers)?;
            let t = app.shared.write(
                &ctx,
                |_, st, ctx| {
                    check_if_match(expected, st, kind, id)
                        .or_else(|e| if e.status == 404 { Ok(()) } else { Err(e) })?;
                    tags::replace(st, ctx, kind, id, &body)
                },
                |_, _, t| Ok(t),
            )?;
            Ok(http::json(200, json!({ "tags": t })))
        }
        [] if m == Method::DELETE => {
            no_body(req)?;
            app.shared.write(
                &ctx,
                |_, st, ctx| tags::clear(st, ctx, kind, id),
                |_, _, ()| Ok(()),
            )?;
            Ok(http::empty(204))
        }
        [tag] if m == Method::GET => {
            app.shared
                .read(|_, st| tags::has(st, &ctx, kind, id, tag))?;
            Ok(http::empty(204))
        }
        [tag] if m == Method::PUT => {
            app.shared.write(
                &ctx,
                |_, st, ctx| tags::add(st, ctx, kind, id, tag),
                |_, _, ()| Ok(()),
            )?;
            Ok(http::empty(201))
        }
        [tag] if m == Method::DELETE => {
            no_body(req)?;
            app.shared.write(
                &ctx,
                |_, st, ctx| tags::remove(st, ctx, kind, id, tag),
                |_, _, ()| Ok(()),
            )?;
            Ok(http::empty(204))
        }
        [] | [_] => Err(not_allowed()),
        _ => Err(NeutronError::no_route()),
    }
}

// ---- bindings ----------------------------------------------------------------

fn binding_route(app: &App, req: &Req, port_id: &str, tail: &[&str]) -> Result<Response> {
    let ctx = req.ctx(app);
    let m = &req.method;
    let render_binding = |st: &State, host: &str| -> Result<Value> {
        let (p, b) = bindings::get(st, &ctx, port_id, host)?;
        Ok(render::binding(p, b))
    };
    match tail {
        [] if m == Method::GET => {
            let q = req.query();
            let params = ListParams::parse(&q, attrs::BINDING)?;
            let items = app.shared.read(|_, st| {
                let p = bindings::port_for_bindings(st, &ctx, port_id)?;
                let mut out = Vec::new();
                for b in &p.bindings {
                    let v = render::binding(p, b);
                    if params.matches(&v)? {
                        out.push(v);
                    }
                }
                Ok(out)
            })?;
            let page = params.page(items, None);
            let page: Vec<Value> = page
                .into_iter()
                .map(|v| select_fields(v, &params.fields))
                .collect();
            Ok(http::json(200, json!({ "bindings": page })))
        }
        [] if m == Method::POST => {
            let body = http::json_body(&req.body)?;
            let one = http::resource_body(&body, "binding")?;
            let v = app.shared.write(
                &ctx,
                |ml2, st, ctx| bindings::create(ml2, st, ctx, port_id, one),
                |_, st, host| render_binding(st, &host),
            )?;
            Ok(http::json(201, json!({ "binding": v })))
        }
        [host] if m == Method::GET => {
            let fields = req.query().fields();
            let v = app.shared.read(|_, st| render_binding(st, host))?;
            Ok(http::json(
                200,
                json!({ "binding": select_fields(v, &fields) }),
            ))
        }
        [host] if m == Method::DELETE => {
            no_body(req)?;
            app.shared.write(
                &ctx,
                |_, st, ctx| bindings::delete(st, ctx, port_id, host),
                |_, _, ()| Ok(()),
            )?;
            Ok(http::empty(204))
        }
        [_host] if m == Method::PUT => Err(NeutronError::not_implemented(
            "Updating a port binding in place is not supported; delete it and create it again.",
        )),
        [host, "activate"] if m == Method::PUT => {
            let v = app.shared.write(
                &ctx,
                |_, st, ctx| bindings::activate(st, ctx, port_id, host),
                |_, st, ()| render_binding(st, host),
            )?;
            Ok(http::json(200, json!({ "binding": v })))
        }
        [] | [_] | [_, "activate"] => Err(not_allowed()),
        _ => Err(NeutronError::no_route()),
    }
}

// ---- internal agent API --------------------------------------------------------

/// A port's bindings with their levels (ML2's `ml2_port_binding_levels`:
/// the driver that bound each level and its segment's type, physical
/// network and VLAN/VNI), and who applied the active one: the node whose
/// agent reported the port's device up makes it `ACTIVE`.
fn port_binding_json(st: &switchyard_model::State, p: &switchyard_model::Port) -> Value {
    let binding = |b: &switchyard_model::PortBinding| {
        let levels = binding_levels(st, b);
        json!({
            "host": b.host,
            "status": b.status.as_str(),
            "vnic_type": b.vnic_type,
            "vif_type": b.vif_type,
            "vif_details": b.vif_details,
            "levels": levels,
        })
    };
    let active = p.active_binding();
    let up = p.status == switchyard_model::PortStatus::Active;
    json!({
        "port_id": p.id,
        "status": p.status.as_str(),
        "host": active.host,
        "applied_by": (up && !active.host.is_empty()).then(|| active.host.clone()),
        "bindings": p.bindings.iter().map(binding).collect::<Vec<_>>(),
    })
}

/// A binding's levels, each with its segment's type, physical network and
/// VLAN/VNI (`null`s for a segment since deleted).
fn binding_levels(st: &switchyard_model::State, b: &switchyard_model::PortBinding) -> Vec<Value> {
    b.levels
        .iter()
        .map(|l| {
            let seg = st.segments.get(&l.segment_id);
            json!({
                "level": l.level,
                "driver": l.driver,
                "segment_id": l.segment_id,
                "network_type": seg.map(|s| s.network_type.as_str()),
                "physical_network": seg.and_then(|s| s.physical_network.clone()),
                "segmentation_id": seg.and_then(|s| s.segmentation_id),
            })
        })
        .collect()
}

/// A node's convergence: the desired version, what was sent and acked, and
/// (with `items`) the desired state itself.
fn node_json(
    app: &App,
    host: &str,
    status: Option<&crate::core::NodeStatus>,
    items: bool,
) -> Value {
    let compiled = app.shared.snapshot(host);
    let compiling = compiled.is_none();
    let (desired, state) = compiled.unwrap_or_default();
    let st = status.cloned().unwrap_or_default();
    // Connected means a session is open *and* its agent heartbeats: a
    // stopped agent whose socket lingers is not connected.
    let alive = app.shared.agent_alive(host);
    let connected = st.connected && alive;
    let converged = !compiling && connected && st.failed.is_none() && st.acked == desired;
    let phase = if !alive {
        "down"
    } else if compiling {
        // The controller restarted and has not compiled the model yet
        // (the node's session, if it opened, waits for it).
        "compiling"
    } else if !st.connected {
        "disconnected"
    } else if st.failed.is_some() {
        "failed"
    } else if converged {
        "converged"
    } else {
        "syncing"
    };
    let mut v = json!({
        "host": host,
        "state": phase,
        "alive": alive,
        "desired_version": desired,
        "sent_version": st.sent,
        "acked_version": st.acked,
        "acked_at": st.acked_at,
        "connected": connected,
        "converged": converged,
        "failed": st.failed,
        "last_error": st.last_error,
        "item_count": state.len(),
    });
    if items && let Some(o) = v.as_object_mut() {
        o.insert(
            "items".into(),
            serde_json::to_value(&state).unwrap_or(Value::Null),
        );
    }
    v
}

/// The node a request to the internal agent API speaks for (its bearer
/// credential), refused with 401 (logged once a minute per client).
fn node_caller(app: &App, req: &Req) -> Result<crate::nodeauth::Enrolled> {
    app.shared
        .credentials
        .authenticate(crate::southbound::bearer(&req.headers))
        .map_err(|e| {
            app.shared.refusals.refused(
                &format!("agent API from {}: {e}", req.peer),
                "agent API: refused a client without a valid node credential",
            );
            crate::southbound::unauthenticated(&e)
        })
}

/// 403: a node credential used for another host or role.
fn not_this_node(
    app: &App,
    req: &Req,
    who: &crate::nodeauth::Enrolled,
    what: String,
) -> NeutronError {
    app.shared.refusals.refused(
        &format!("agent API from {} as {}: {what}", req.peer, who.host),
        "agent API: refused a node speaking for another",
    );
    NeutronError::new(
        403,
        "HTTPForbidden",
        format!(
            "The credential of {} ({} node) cannot {what}.",
            who.host,
            who.role.name()
        ),
    )
}

fn internal(app: &App, req: &Req, rest: &[&str]) -> Result<Response> {
    let ctx = req.ctx(app);
    let m = &req.method;
    // The controller's views of its nodes are an administrator's.
    if matches!(rest, ["nodes", ..]) && !ctx.is_admin {
        return Err(NeutronError::new(
            403,
            "PolicyNotAuthorized",
            "This is an administrator's API.",
        ));
    }
    match rest {
        ["agents", "report"] if m == Method::POST => {
            let who = node_caller(app, req)?;
            let body = http::json_body(&req.body)?;
            let one = http::resource_body(&body, "agent")?;
            let host = one.get("host").and_then(Value::as_str).unwrap_or_default();
            let agent_type = one
                .get("agent_type")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if host != who.host || agent_type != who.role.agent_type() {
                return Err(not_this_node(
                    app,
                    req,
                    &who,
                    format!("report a '{agent_type}' on host '{host}'"),
                ));
            }
            let v = app.shared.write(
                &ctx,
                |_, st, ctx| agents::report_state(st, ctx, one),
                |ml2, st, id| render_one(ml2, st, &ctx, Kind::Agent, &id),
            )?;
            if v["agent_type"] == switchyard_model::AGENT_TYPE_GATEWAY {
                app.shared.schedule_unplaced_routers(&ctx);
            }
            Ok(http::json(200, json!({ "agent": v })))
        }
        ["ports", id, "device"] if m == Method::PUT => {
            let who = node_caller(app, req)?;
            let body = http::json_body(&req.body)?;
            let one = http::resource_body(&body, "device")?;
            if let Some(k) = one.keys().find(|k| *k != "host" && *k != "status") {
                return Err(NeutronError::http_bad_request(format!(
                    "Unrecognized attribute(s) '{k}'"
                )));
            }
            let host =
                attrs::to_string("host", one.get("host").unwrap_or(&Value::Null), Some(255))?;
            if host != who.host {
                return Err(not_this_node(
                    app,
                    req,
                    &who,
                    format!("report devices of host '{host}'"),
                ));
            }
            let up = match one.get("status").and_then(Value::as_str) {
                Some("up") => true,
                Some("down") => false,
                _ => return Err(attrs::invalid("status", "status must be 'up' or 'down'")),
            };
            let v = app.shared.write(
                &ctx,
                |_, st, ctx| ports::set_device_status(st, ctx, id, &host, up),
                |ml2, st, ()| render_one(ml2, st, &ctx, Kind::Port, id),
            )?;
            Ok(http::json(200, json!({ "port": v })))
        }
        ["nodes"] if m == Method::GET => {
            ops::require_admin(&ctx, "get_node")?;
            let status = app
                .shared
                .nodes
                .lock()
                .map(|g| g.clone())
                .unwrap_or_default();
            let hosts: std::collections::BTreeSet<String> = app
                .shared
                .read(|_, st| Ok(st.agents.values().map(|a| a.host.clone()).collect()))?;
            let list: Vec<Value> = hosts
                .iter()
                .chain(status.keys().filter(|h| !hosts.contains(*h)))
                .map(|h| node_json(app, h, status.get(h), false))
                .collect();
            Ok(http::json(200, json!({ "nodes": list })))
        }
        ["nodes", host] if m == Method::GET => {
            ops::require_admin(&ctx, "get_node")?;
            let status = app
                .shared
                .nodes
                .lock()
                .ok()
                .and_then(|g| g.get(*host).cloned());
            let known = app
                .shared
                .read(|_, st| Ok(st.agents.values().any(|a| a.host == *host)))?;
            if !known && status.is_none() {
                return Err(NeutronError::not_found(
                    "NodeNotFound",
                    format!("Node {host} could not be found."),
                ));
            }
            let mut node = node_json(app, host, status.as_ref(), true);
            // What the node runs, asked of its agent now (TF's introspect).
            let (applied, error) = match app.shared.introspect(host, INTROSPECT_TIMEOUT) {
                Ok(s) => (serde_json::to_value(s).unwrap_or(Value::Null), Value::Null),
                Err(e) => (Value::Null, Value::String(e)),
            };
            if let Some(o) = node.as_object_mut() {
                o.insert("applied".into(), applied);
                o.insert("applied_error".into(), error);
            }
            Ok(http::json(200, json!({ "node": node })))
        }
        ["bindings"] if m == Method::GET => {
            ops::require_admin(&ctx, "get_port_binding_levels")?;
            if let Some(q) = req.uri.query().filter(|q| !q.is_empty()) {
                return Err(NeutronError::http_bad_request(format!(
                    "This list takes no query parameters: '{q}'"
                )));
            }
            let list = app.shared.read(|_, st| {
                Ok(st
                    .ports
                    .values()
                    .filter(|p| !p.active_binding().host.is_empty())
                    .map(|p| {
                        let b = p.active_binding();
                        json!({
                            "port_id": p.id,
                            "device_id": p.device_id,
                            "device_owner": p.device_owner,
                            "network_id": p.network_id,
                            "status": p.status.as_str(),
                            "host": b.host,
                            "vif_type": b.vif_type,
                            "levels": binding_levels(st, b),
                        })
                    })
                    .collect::<Vec<_>>())
            })?;
            Ok(http::json(200, json!({ "bindings": list })))
        }
        ["ports", id, "binding"] if m == Method::GET => {
            ops::require_admin(&ctx, "get_port_binding_levels")?;
            let (mut v, host) = app.shared.read(|_, st| {
                let p = st.ports.get(*id).ok_or_else(|| {
                    NeutronError::not_found(
                        "PortNotFound",
                        format!("Port {id} could not be found."),
                    )
                })?;
                Ok((port_binding_json(st, p), p.active_binding().host.clone()))
            })?;
            // The node that runs the binding, and how far it has got.
            if !host.is_empty() {
                let status = app
                    .shared
                    .nodes
                    .lock()
                    .ok()
                    .and_then(|g| g.get(&host).cloned());
                v["node"] = node_json(app, &host, status.as_ref(), false);
            }
            Ok(http::json(200, json!({ "binding": v })))
        }
        ["agents", "report"]
        | ["ports", _, "device"]
        | ["ports", _, "binding"]
        | ["bindings"]
        | ["nodes"]
        | ["nodes", _] => Err(not_allowed()),
        _ => Err(NeutronError::no_route()),
    }
}
