//! Neutron's L3 routers (`router`, `ext-gw-mode`, `extraroute`): create,
//! update (name, state, external gateway, extra routes), delete, and
//! `add_router_interface` / `remove_router_interface`.
//!
//! As in Neutron, a router's interfaces are ports (`device_owner`
//! `network:router_interface`, `device_id` the router) holding the subnet's
//! gateway IP, and its gateway is a `network:router_gateway` port on an
//! external network owned by no project. Router ports are bound to the
//! gateway node the router is scheduled on, through the `gateway` mechanism
//! driver. Error types, codes and messages follow Neutron's `l3_db`.

use std::net::IpAddr;

use serde_json::{Map, Value, json};
use switchyard_model::attrs;
use switchyard_model::{
    AGENT_TYPE_GATEWAY, GatewayInfo, Kind, NeutronError, OWNER_ROUTER_GATEWAY,
    OWNER_ROUTER_INTERFACE, Port, Result, Route, Router, State, StdAttrs, Subnet, new_id,
};

use super::{
    Body, DESCRIPTION_MAX, NAME_MAX, owner_project, policy_denied, port_not_found, ports,
    subnet_not_found,
};
use crate::{Ctx, Ml2};

/// Neutron's default `max_routes`.
pub const MAX_ROUTES: usize = 30;

pub fn router_not_found(id: &str) -> NeutronError {
    NeutronError::not_found("RouterNotFound", format!("Router {id} could not be found"))
}

fn bad_router(msg: impl std::fmt::Display) -> NeutronError {
    NeutronError::bad_request("BadRequest", format!("Bad router request: {msg}."))
}

/// Neutron routes IPv6 too; the gateway node routes IPv4 only, so an IPv6
/// interface would be accepted and never realised.
fn ipv6_unsupported() -> NeutronError {
    NeutronError::not_implemented(
        "IPv6 router interfaces are not supported yet: the gateway routes IPv4 only.",
    )
}

pub fn router_visible(ctx: &Ctx, r: &Router) -> bool {
    ctx.is_admin || r.std.project_id == ctx.project_id
}

/// A router the caller may see and change (owner or admin), or 404.
pub fn visible_router<'s>(ctx: &Ctx, st: &'s State, id: &str) -> Result<&'s Router> {
    st.routers
        .get(id)
        .filter(|r| router_visible(ctx, r))
        .ok_or_else(|| router_not_found(id))
}

/// Server-side writes (router and floating-IP ports) run with an admin
/// context owned by no project, as Neutron's elevated context does.
pub(crate) fn service_ctx(ctx: &Ctx) -> Ctx {
    Ctx::admin("", ctx.now)
}

/// The gateway node a new router goes to: the live, enabled gateway agent's
/// host with the fewest routers (ties by name); "" when there is none.
pub fn schedule(ml2: &Ml2, st: &State, now: switchyard_model::Timestamp) -> String {
    let down = ml2.settings.agent_down_time;
    let mut hosts: Vec<(usize, &str)> = st
        .agents
        .values()
        .filter(|a| a.agent_type == AGENT_TYPE_GATEWAY && a.admin_state_up && a.is_alive(now, down))
        .map(|a| {
            let load = st.routers.values().filter(|r| r.host == a.host).count();
            (load, a.host.as_str())
        })
        .collect();
    hosts.sort();
    hosts
        .first()
        .map(|(_, h)| h.to_string())
        .unwrap_or_default()
}

/// Places routers that have no gateway node yet (none was alive when they
/// were created) and binds their ports there: what Neutron's
/// `router_auto_schedule` does when an L3 agent reports. Run after a report.
pub fn schedule_unplaced(ml2: &Ml2, st: &mut State, ctx: &Ctx) -> Result<()> {
    let unplaced: Vec<String> = st
        .routers
        .values()
        .filter(|r| r.host.is_empty())
        .map(|r| r.id.clone())
        .collect();
    for rid in unplaced {
        if !place(ml2, st, ctx, &rid)? {
            return Ok(());
        }
    }
    Ok(())
}

/// Whether `host` has a gateway agent that is alive now.
fn gateway_alive(ml2: &Ml2, st: &State, host: &str, now: switchyard_model::Timestamp) -> bool {
    st.agent_by_type_host(AGENT_TYPE_GATEWAY, host)
        .is_some_and(|a| a.is_alive(now, ml2.settings.agent_down_time))
}

/// Routers whose gateway node's agent is dead (or gone), and routers not
/// placed yet, while some gateway is alive: what the failover pass moves.
pub fn stranded(ml2: &Ml2, st: &State, now: switchyard_model::Timestamp) -> Vec<String> {
    if schedule(ml2, st, now).is_empty() {
        return Vec::new();
    }
    st.routers
        .values()
        .filter(|r| r.host.is_empty() || !gateway_alive(ml2, st, &r.host, now))
        .map(|r| r.id.clone())
        .collect()
}

/// Neutron's `allow_automatic_l3agent_failover`: moves every router whose
/// gateway node's agent is dead to the least-loaded live gateway, rebinding
/// its ports there, and places unplaced ones. A router whose gateway comes
/// back stays where it was moved (no flapping). Returns the routers moved.
pub fn reschedule_stranded(ml2: &Ml2, st: &mut State, ctx: &Ctx) -> Result<Vec<String>> {
    let mut moved = Vec::new();
    for rid in stranded(ml2, st, ctx.now) {
        if !place(ml2, st, ctx, &rid)? {
            break;
        }
        moved.push(rid);
    }
    Ok(moved)
}

/// Puts router `rid` on the gateway [`schedule`] picks (its current, dead
/// node excluded by liveness) and binds its ports there; false when no
/// gateway is alive.
fn place(ml2: &Ml2, st: &mut State, ctx: &Ctx, rid: &str) -> Result<bool> {
    let host = schedule(ml2, st, ctx.now);
    if host.is_empty() {
        return Ok(false);
    }
    if let Some(mut r) = st.routers.get(rid).cloned() {
        r.host = host.clone();
        r.std.bump(ctx.now);
        st.put_router(r);
    }
    let ports: Vec<String> = st
        .device_ports(rid)
        .iter()
        .filter(|p| {
            p.device_owner == OWNER_ROUTER_INTERFACE || p.device_owner == OWNER_ROUTER_GATEWAY
        })
        .map(|p| p.id.clone())
        .collect();
    let body = json!({ "binding:host_id": host });
    let body = body.as_object().cloned().unwrap_or_default();
    for pid in ports {
        ports::update(ml2, st, &service_ctx(ctx), &pid, &body)?;
    }
    Ok(true)
}

fn parse_route(v: &Value) -> Result<Route> {
    let bad = |why: String| attrs::invalid("routes", why);
    let shape = || {
        bad(format!(
            "Invalid data format for hostroute: '{}'",
            attrs::show(v)
        ))
    };
    let m = v.as_object().ok_or_else(shape)?;
    if m.len() != 2 || !m.contains_key("destination") || !m.contains_key("nexthop") {
        return Err(shape());
    }
    let dest_text = m
        .get("destination")
        .and_then(Value::as_str)
        .ok_or_else(shape)?;
    let dest = attrs::parse_cidr(dest_text).ok_or_else(shape)?;
    if dest.trunc() != dest {
        return Err(bad(format!(
            "'{dest}' isn't a recognized IP subnet cidr, '{}' is recommended",
            dest.trunc()
        )));
    }
    let nexthop = attrs::to_ip("routes", m.get("nexthop").unwrap_or(&Value::Null))?;
    if dest.addr().is_ipv4() != nexthop.is_ipv4() {
        return Err(bad(format!(
            "Invalid data format for hostroute: '{}' (destination and nexthop differ in IP version)",
            attrs::show(v)
        )));
    }
    Ok(Route {
        destination: dest,
        nexthop,
    })
}

fn parse_routes(v: &Value) -> Result<Vec<Route>> {
    if v.is_null() {
        return Ok(Vec::new());
    }
    let list = attrs::to_list("routes", v)?;
    let mut out: Vec<Route> = Vec::with_capacity(list.len().min(MAX_ROUTES + 1));
    let mut seen = std::collections::HashSet::new();
    for r in list {
        let r = parse_route(r)?;
        if !seen.insert((r.destination, r.nexthop)) {
            return Err(attrs::invalid(
                "routes",
                format!(
                    "Duplicate hostroute '{}'",
                    json!({"destination": r.destination.to_string(), "nexthop": r.nexthop.to_string()})
                ),
            ));
        }
        out.push(r);
    }
    Ok(out)
}

/// Every subnet a router is connected to: its interfaces' and, through the
/// gateway, every subnet of the external network.
fn connected_subnets<'s>(st: &'s State, r: &Router) -> Vec<&'s Subnet> {
    let mut out: Vec<&Subnet> = Vec::new();
    for p in st.router_interfaces(&r.id) {
        for ip in &p.fixed_ips {
            if let Some(s) = st.subnets.get(&ip.subnet_id) {
                out.push(s);
            }
        }
    }
    if let Some(g) = &r.gateway {
        out.extend(st.network_subnets(&g.network_id));
    }
    out
}

/// Every address a router's ports hold.
fn router_ips(st: &State, r: &Router) -> Vec<IpAddr> {
    st.device_ports(&r.id)
        .into_iter()
        .filter(|p| {
            p.device_owner == OWNER_ROUTER_INTERFACE || p.device_owner == OWNER_ROUTER_GATEWAY
        })
        .flat_map(|p| p.fixed_ips.iter().map(|f| f.ip_address))
        .collect()
}

fn check_routes(st: &State, r: &Router, routes: &[Route]) -> Result<()> {
    if routes.len() > MAX_ROUTES {
        return Err(NeutronError::bad_request(
            "RoutesExhausted",
            format!(
                "Unable to complete operation for {}. The number of routes exceeds the maximum {MAX_ROUTES}.",
                r.id
            ),
        ));
    }
    let subnets = connected_subnets(st, r);
    let own = router_ips(st, r);
    let iface_subnets: Vec<&Subnet> = st
        .router_interfaces(&r.id)
        .into_iter()
        .flat_map(|p| p.fixed_ips.iter())
        .filter_map(|f| st.subnets.get(&f.subnet_id))
        .collect();
    for rt in routes {
        let show =
            json!([{"destination": rt.destination.to_string(), "nexthop": rt.nexthop.to_string()}]);
        if !subnets.iter().any(|s| s.cidr.contains(&rt.nexthop)) {
            return Err(NeutronError::bad_request(
                "InvalidRoutes",
                format!(
                    "Invalid format for routes: {show}, the nexthop is not connected with router"
                ),
            ));
        }
        if own.contains(&rt.nexthop) {
            return Err(NeutronError::bad_request(
                "InvalidRoutes",
                format!("Invalid format for routes: {show}, the nexthop is used by router"),
            ));
        }
        // Valid for Neutron, but the gateway node could not realise them.
        if !rt.nexthop.is_ipv4() {
            return Err(NeutronError::not_implemented(
                "IPv6 extra routes are not supported yet: the gateway routes IPv4 only.",
            ));
        }
        if !iface_subnets.iter().any(|s| s.cidr.contains(&rt.nexthop)) {
            return Err(NeutronError::not_implemented(format!(
                "Extra routes via the external network are not supported yet: next hop {} is not on one of the router's interface subnets.",
                rt.nexthop
            )));
        }
    }
    Ok(())
}

/// Neutron's `_check_for_dup_router_subnets`: a subnet joins a router once,
/// and never overlapping another of the router's subnets (the gateway's
/// external subnets included).
fn check_new_subnets(st: &State, r: &Router, new: &[&Subnet]) -> Result<()> {
    let existing = connected_subnets(st, r);
    for n in new {
        for e in &existing {
            if e.id == n.id {
                return Err(bad_router(format!(
                    "Router already has a port on subnet {}",
                    n.id
                )));
            }
            if e.cidr.contains(&n.cidr.network()) || n.cidr.contains(&e.cidr.network()) {
                return Err(bad_router(format!(
                    "Cidr {} of subnet {} overlaps with cidr {} of subnet {}",
                    n.cidr, n.id, e.cidr, e.id
                )));
            }
        }
    }
    Ok(())
}

/// A requested gateway: (external network, SNAT if given, addresses if given).
type GatewayRequest = (String, Option<bool>, Option<Value>);

fn parse_gateway(ctx: &Ctx, v: &Value, rule: &str) -> Result<Option<GatewayRequest>> {
    let m = match v {
        Value::Null => return Ok(None),
        Value::Object(m) if m.is_empty() => return Ok(None),
        Value::Object(m) => m,
        other => {
            return Err(attrs::invalid(
                "external_gateway_info",
                format!("'{}' is not a dictionary", attrs::show(other)),
            ));
        }
    };
    if let Some(k) = m
        .keys()
        .find(|k| !["network_id", "enable_snat", "external_fixed_ips"].contains(&k.as_str()))
    {
        return Err(attrs::invalid(
            "external_gateway_info",
            format!("Unexpected keys supplied: {k}"),
        ));
    }
    let net = attrs::to_uuid(
        "external_gateway_info",
        m.get("network_id").ok_or_else(|| {
            attrs::invalid("external_gateway_info", "Validation of dictionary's keys failed. Expected keys: {'network_id'} Provided keys: set()")
        })?,
    )?;
    let snat = m
        .get("enable_snat")
        .map(|v| attrs::to_bool("enable_snat", v))
        .transpose()?;
    if snat.is_some() && !ctx.is_admin {
        return Err(policy_denied(&format!(
            "{rule}:external_gateway_info:enable_snat"
        )));
    }
    let ips = m
        .get("external_fixed_ips")
        .filter(|v| !v.is_null())
        .cloned();
    if ips.is_some() && !ctx.is_admin {
        return Err(policy_denied(&format!(
            "{rule}:external_gateway_info:external_fixed_ips"
        )));
    }
    Ok(Some((net, snat, ips)))
}

/// Sets, changes or clears a router's external gateway.
fn set_gateway(
    ml2: &Ml2,
    st: &mut State,
    ctx: &Ctx,
    router_id: &str,
    v: &Value,
    rule: &str,
) -> Result<()> {
    let want = parse_gateway(ctx, v, rule)?;
    let mut r = st
        .routers
        .get(router_id)
        .cloned()
        .ok_or_else(|| router_not_found(router_id))?;
    // Same network: only SNAT mode and/or the addresses change.
    if let (Some((net, snat, ips)), Some(cur)) = (&want, &r.gateway)
        && *net == cur.network_id
    {
        let mut g = cur.clone();
        if let Some(s) = snat {
            g.enable_snat = *s;
        }
        if let Some(ips) = ips {
            let body = json!({"fixed_ips": ips});
            let body = body.as_object().cloned().unwrap_or_default();
            ports::update(ml2, st, &service_ctx(ctx), &g.port_id, &body)?;
        }
        r.gateway = Some(g);
        r.std.bump(ctx.now);
        st.put_router(r);
        return Ok(());
    }
    if let Some(cur) = r.gateway.take() {
        if st
            .floatingips
            .values()
            .any(|f| f.router_id.as_deref() == Some(router_id))
        {
            return Err(NeutronError::conflict(
                "RouterExternalGatewayInUseByFloatingIp",
                format!(
                    "Gateway cannot be updated for router {router_id}, since a gateway to external network {} is required by one or more floating IPs.",
                    cur.network_id
                ),
            ));
        }
        st.remove(Kind::Port, &cur.port_id);
    }
    if let Some((net, snat, ips)) = want {
        let n = st
            .networks
            .get(&net)
            .ok_or_else(|| super::network_not_found(&net))?;
        if !n.external {
            return Err(bad_router(format!(
                "Network {net} is not an external network"
            )));
        }
        let ext: Vec<&Subnet> = st.network_subnets(&net);
        check_new_subnets(st, &r, &ext)?;
        if let Some(Value::Array(list)) = &ips {
            for ip in list
                .iter()
                .filter_map(|i| i.get("ip_address"))
                .filter_map(Value::as_str)
            {
                if ext
                    .iter()
                    .any(|s| s.gateway_ip.map(|g| g.to_string()).as_deref() == Some(ip))
                {
                    return Err(bad_router(format!(
                        "External IP {ip} is the same as the gateway IP"
                    )));
                }
            }
        }
        let mut body = json!({
            "network_id": net,
            "tenant_id": "",
            "device_id": r.id,
            "device_owner": OWNER_ROUTER_GATEWAY,
            "name": "",
            "binding:host_id": r.host,
        });
        if let (Some(ips), Some(o)) = (ips, body.as_object_mut()) {
            o.insert("fixed_ips".into(), ips);
        }
        let body = body.as_object().cloned().unwrap_or_default();
        let port_id = ports::create(ml2, st, &service_ctx(ctx), &body)?;
        r.gateway = Some(GatewayInfo {
            network_id: net,
            enable_snat: snat.unwrap_or(true),
            port_id,
        });
    }
    // Extra routes must stay reachable through what is left.
    check_routes(st, &r, &r.routes)?;
    r.std.bump(ctx.now);
    st.put_router(r);
    Ok(())
}

pub fn create(ml2: &Ml2, st: &mut State, ctx: &Ctx, body: &Map<String, Value>) -> Result<String> {
    attrs::check_body(attrs::ROUTER, body, true)?;
    let b = Body(body);
    let project_id = owner_project(ctx, &b)?;
    let tags = b.tags()?;
    let id = new_id();
    let r = Router {
        id: id.clone(),
        name: b
            .string_or_null("name", Some(NAME_MAX))?
            .unwrap_or_default(),
        admin_state_up: b.bool("admin_state_up")?.unwrap_or(true),
        gateway: None,
        routes: Vec::new(),
        host: schedule(ml2, st, ctx.now),
        std: StdAttrs::new(
            project_id,
            b.string_or_null("description", Some(DESCRIPTION_MAX))?
                .unwrap_or_default(),
            tags,
            ctx.now,
        ),
    };
    st.put_router(r);
    if let Some(v) = b.raw("external_gateway_info") {
        set_gateway(ml2, st, ctx, &id, v, "create_router")?;
        // A new router starts at revision 0 whatever its gateway did.
        if let Some(mut r) = st.routers.get(&id).cloned() {
            r.std.revision_number = 0;
            st.put_router(r);
        }
    }
    Ok(id)
}

pub fn update(
    ml2: &Ml2,
    st: &mut State,
    ctx: &Ctx,
    id: &str,
    body: &Map<String, Value>,
) -> Result<()> {
    attrs::check_body(attrs::ROUTER, body, false)?;
    let b = Body(body);
    visible_router(ctx, st, id)?;
    if let Some(v) = b.raw("external_gateway_info") {
        set_gateway(ml2, st, ctx, id, v, "update_router")?;
    }
    let mut r = st
        .routers
        .get(id)
        .cloned()
        .ok_or_else(|| router_not_found(id))?;
    let before = r.clone();
    if let Some(n) = b.string_or_null("name", Some(NAME_MAX))? {
        r.name = n;
    }
    if let Some(a) = b.bool("admin_state_up")? {
        r.admin_state_up = a;
    }
    if let Some(d) = b.string_or_null("description", Some(DESCRIPTION_MAX))? {
        r.std.description = d;
    }
    if let Some(v) = b.raw("routes") {
        let routes = parse_routes(v)?;
        check_routes(st, &r, &routes)?;
        r.routes = routes;
    }
    if r != before {
        r.std.bump(ctx.now);
        st.put_router(r);
    }
    Ok(())
}

/// `extraroute-atomic`: adds `routes` to router `id`'s extra routes (a
/// route already there, or given twice, is kept once) or removes them (one
/// that is not there is no error), as Neutron's `add_extraroutes` and
/// `remove_extraroutes` do; the resulting set is validated as an update's.
pub fn change_extraroutes(
    st: &mut State,
    ctx: &Ctx,
    id: &str,
    body: &Map<String, Value>,
    adding: bool,
) -> Result<()> {
    let b = match body.get("router") {
        Some(Value::Object(m)) => m,
        _ => {
            return Err(NeutronError::http_bad_request(
                "Unable to find 'router' in request body",
            ));
        }
    };
    if let Some(k) = b.keys().find(|k| k.as_str() != "routes") {
        return Err(NeutronError::http_bad_request(format!(
            "Unrecognized attribute(s) '{k}'"
        )));
    }
    let list = attrs::to_list(
        "routes",
        b.get("routes").ok_or_else(|| {
            NeutronError::http_bad_request(
                "Failed to parse request. Required attribute 'routes' not specified",
            )
        })?,
    )?;
    let given = list.iter().map(parse_route).collect::<Result<Vec<_>>>()?;
    let mut r = visible_router(ctx, st, id)?.clone();
    let before = r.routes.clone();
    if adding {
        for g in given {
            if !r.routes.contains(&g) {
                r.routes.push(g);
            }
        }
    } else {
        r.routes.retain(|x| !given.contains(x));
    }
    check_routes(st, &r, &r.routes)?;
    if r.routes != before {
        r.std.bump(ctx.now);
        st.put_router(r);
    }
    Ok(())
}

pub fn delete(ml2: &Ml2, st: &mut State, ctx: &Ctx, id: &str) -> Result<()> {
    visible_router(ctx, st, id)?;
    let attached: Vec<String> = st
        .router_interfaces(id)
        .iter()
        .map(|p| p.id.clone())
        .collect();
    if !attached.is_empty() {
        return Err(NeutronError::conflict(
            "RouterInUse",
            format!(
                "Router {id} has ports still attached: {}",
                attached.join(", ")
            ),
        ));
    }
    set_gateway(ml2, st, ctx, id, &Value::Null, "delete_router")?;
    st.remove(Kind::Router, id);
    Ok(())
}

/// What `add_router_interface` / `remove_router_interface` answer.
fn interface_info(router_id: &str, p: &Port, subnet_id: &str, subnet_ids: Vec<String>) -> Value {
    json!({
        "id": router_id,
        "tenant_id": p.std.project_id,
        "project_id": p.std.project_id,
        "port_id": p.id,
        "network_id": p.network_id,
        "subnet_id": subnet_id,
        "subnet_ids": subnet_ids,
    })
}

/// The unwrapped `{"subnet_id"}` / `{"port_id"}` body of the interface actions.
fn interface_target(
    body: &Map<String, Value>,
    adding: bool,
) -> Result<(Option<String>, Option<String>)> {
    let subnet = body
        .get("subnet_id")
        .map(|v| attrs::to_uuid("subnet_id", v))
        .transpose()?;
    let port = body
        .get("port_id")
        .map(|v| attrs::to_uuid("port_id", v))
        .transpose()?;
    match (&subnet, &port) {
        (None, None) => Err(bad_router("Either subnet_id or port_id must be specified")),
        (Some(_), Some(_)) if adding => {
            Err(bad_router("Cannot specify both subnet-id and port-id"))
        }
        _ => Ok((subnet, port)),
    }
}

pub fn add_interface(
    ml2: &Ml2,
    st: &mut State,
    ctx: &Ctx,
    router_id: &str,
    body: &Map<String, Value>,
) -> Result<Value> {
    let r = visible_router(ctx, st, router_id)?.clone();
    let (subnet_id, port_id) = interface_target(body, true)?;
    if let Some(pid) = port_id {
        let p = super::visible_port(ctx, st, &pid)?.clone();
        if !p.device_id.is_empty() {
            return Err(NeutronError::conflict(
                "PortInUse",
                format!(
                    "Unable to complete operation on port {pid} for network {}. Port already has an attached device {}.",
                    p.network_id, p.device_id
                ),
            ));
        }
        if p.fixed_ips.is_empty() {
            return Err(bad_router("Router port must have at least one fixed IP"));
        }
        if p.fixed_ips.iter().any(|f| f.ip_address.is_ipv6()) {
            return Err(ipv6_unsupported());
        }
        let v4: Vec<&str> = p
            .fixed_ips
            .iter()
            .filter(|f| f.ip_address.is_ipv4())
            .map(|f| f.subnet_id.as_str())
            .collect();
        if v4.len() > 1 {
            return Err(bad_router(
                "Cannot have multiple IPv4 subnets on router port",
            ));
        }
        let subs: Vec<&Subnet> = p
            .fixed_ips
            .iter()
            .filter_map(|f| st.subnets.get(&f.subnet_id))
            .collect();
        check_new_subnets(st, &r, &subs)?;
        let subnet_ids: Vec<String> = p.fixed_ips.iter().map(|f| f.subnet_id.clone()).collect();
        let body = json!({
            "device_id": r.id,
            "device_owner": OWNER_ROUTER_INTERFACE,
            "binding:host_id": r.host,
        });
        let body = body.as_object().cloned().unwrap_or_default();
        ports::update(ml2, st, &service_ctx(ctx), &pid, &body)?;
        let p = st.ports.get(&pid).ok_or_else(|| port_not_found(&pid))?;
        let last = subnet_ids.last().cloned().unwrap_or_default();
        return Ok(interface_info(router_id, p, &last, subnet_ids));
    }
    let sid = subnet_id.unwrap_or_default();
    let s = super::visible_subnet(ctx, st, &sid)?.clone();
    let Some(gw) = s.gateway_ip else {
        return Err(bad_router(
            "Subnet for router interface must have a gateway IP",
        ));
    };
    if s.ip_version == 6 {
        return Err(ipv6_unsupported());
    }
    let shared = st.networks.get(&s.network_id).is_some_and(|n| n.shared);
    if !ctx.is_admin && s.std.project_id != ctx.project_id && !shared {
        return Err(bad_router(format!(
            "Cannot add interface to router because subnet {sid} is not owned by project making the request"
        )));
    }
    check_new_subnets(st, &r, &[&s])?;
    let body = json!({
        "network_id": s.network_id,
        "tenant_id": r.std.project_id,
        "fixed_ips": [{"subnet_id": sid, "ip_address": gw.to_string()}],
        "device_id": r.id,
        "device_owner": OWNER_ROUTER_INTERFACE,
        "name": "",
        "binding:host_id": r.host,
    });
    let body = body.as_object().cloned().unwrap_or_default();
    let pid = ports::create(ml2, st, &service_ctx(ctx), &body)?;
    let p = st.ports.get(&pid).ok_or_else(|| port_not_found(&pid))?;
    Ok(interface_info(router_id, p, &sid, vec![sid.clone()]))
}

pub fn remove_interface(
    ml2: &Ml2,
    st: &mut State,
    ctx: &Ctx,
    router_id: &str,
    body: &Map<String, Value>,
) -> Result<Value> {
    let r = visible_router(ctx, st, router_id)?.clone();
    let (subnet_id, port_id) = interface_target(body, false)?;
    let port = match &port_id {
        Some(pid) => {
            let p = st
                .ports
                .get(pid)
                .filter(|p| p.device_id == r.id && p.device_owner == OWNER_ROUTER_INTERFACE)
                .ok_or_else(|| {
                    NeutronError::not_found(
                        "RouterInterfaceNotFound",
                        format!("Router {router_id} does not have an interface with id {pid}"),
                    )
                })?;
            if let Some(sid) = &subnet_id
                && !p.fixed_ips.iter().any(|f| f.subnet_id == *sid)
            {
                return Err(NeutronError::bad_request(
                    "SubnetMismatchForPort",
                    format!("Subnet on port {pid} does not match the requested subnet {sid}."),
                ));
            }
            p.clone()
        }
        None => {
            let sid = subnet_id.clone().unwrap_or_default();
            if !st.subnets.contains_key(&sid) {
                return Err(subnet_not_found(&sid));
            }
            st.router_interfaces(router_id)
                .into_iter()
                .find(|p| p.fixed_ips.iter().any(|f| f.subnet_id == sid))
                .cloned()
                .ok_or_else(|| {
                    NeutronError::not_found(
                        "RouterInterfaceNotFoundForSubnet",
                        format!("Router {router_id} has no interface on subnet {sid}"),
                    )
                })?
        }
    };
    // The subnets leaving the router: all of the port's, or just the one named.
    let leaving: Vec<String> = match (&port_id, &subnet_id) {
        (None, Some(s)) => vec![s.clone()],
        _ => port.fixed_ips.iter().map(|f| f.subnet_id.clone()).collect(),
    };
    for sid in &leaving {
        let Some(s) = st.subnets.get(sid) else {
            continue;
        };
        let fip_needs = st.floatingips.values().any(|f| {
            f.router_id.as_deref() == Some(router_id)
                && f.fixed_ip_address.is_some_and(|ip| s.cidr.contains(&ip))
        });
        if fip_needs {
            return Err(NeutronError::conflict(
                "RouterInterfaceInUseByFloatingIP",
                format!(
                    "Router interface for subnet {sid} on router {router_id} cannot be deleted, as it is required by one or more floating IPs."
                ),
            ));
        }
        if r.routes.iter().any(|rt| s.cidr.contains(&rt.nexthop)) {
            return Err(NeutronError::conflict(
                "RouterInterfaceInUseByRoute",
                format!(
                    "Router interface for subnet {sid} on router {router_id} cannot be deleted, as it is required by one or more routes."
                ),
            ));
        }
    }
    let info = interface_info(
        router_id,
        &port,
        leaving.first().map(String::as_str).unwrap_or(""),
        leaving.clone(),
    );
    if leaving.len() == port.fixed_ips.len() {
        st.remove(Kind::Port, &port.id);
        crate::binding::release_unused_dynamic_segments(st, &port.network_id);
    } else {
        let keep: Vec<Value> = port
            .fixed_ips
            .iter()
            .filter(|f| !leaving.contains(&f.subnet_id))
            .map(|f| json!({"subnet_id": f.subnet_id, "ip_address": f.ip_address.to_string()}))
            .collect();
        let body = json!({ "fixed_ips": keep });
        let body = body.as_object().cloned().unwrap_or_default();
        ports::update(ml2, st, &service_ctx(ctx), &port.id, &body)?;
    }
    Ok(info)
}

/// Whether a port belongs to a router or floating IP that still exists:
/// such ports cannot be deleted through the port API.
pub fn service_port_owner(st: &State, p: &Port) -> bool {
    match p.device_owner.as_str() {
        OWNER_ROUTER_INTERFACE | OWNER_ROUTER_GATEWAY => st.routers.contains_key(&p.device_id),
        switchyard_model::OWNER_FLOATINGIP => st.floatingips.contains_key(&p.device_id),
        _ => false,
    }
}
