//! Neutron's floating IPs (`router`, `fip-port-details`): an address on an
//! external network, held by a `network:floatingip` port owned by no project,
//! associated with one fixed IPv4 address of a port and realised by the router
//! that joins that port's subnet to the external network. Error types, codes
//! and messages follow Neutron's `l3_db`.

use std::net::IpAddr;

use serde_json::{Map, Value, json};
use switchyard_model::attrs;
use switchyard_model::{
    FloatingIp, Kind, NeutronError, OWNER_FLOATINGIP, Result, State, StdAttrs, new_id,
};

use super::routers::service_ctx;
use super::{Body, DESCRIPTION_MAX, owner_project, policy_denied, ports};
use crate::{Ctx, Ml2};

pub fn floatingip_not_found(id: &str) -> NeutronError {
    NeutronError::not_found(
        "FloatingIPNotFound",
        format!("Floating IP {id} could not be found"),
    )
}

fn bad_fip(msg: impl std::fmt::Display) -> NeutronError {
    NeutronError::bad_request("BadRequest", format!("Bad floatingip request: {msg}."))
}

pub fn floatingip_visible(ctx: &Ctx, f: &FloatingIp) -> bool {
    ctx.is_admin || f.std.project_id == ctx.project_id
}

fn visible_fip<'s>(ctx: &Ctx, st: &'s State, id: &str) -> Result<&'s FloatingIp> {
    st.floatingips
        .get(id)
        .filter(|f| floatingip_visible(ctx, f))
        .ok_or_else(|| floatingip_not_found(id))
}

/// The router that realises an association: one with an interface on the
/// fixed IP's subnet and its gateway on the floating network, preferring the
/// one holding the subnet's gateway address.
fn router_for(st: &State, floating_net: &str, subnet_id: &str) -> Option<String> {
    let gw_ip = st.subnets.get(subnet_id).and_then(|s| s.gateway_ip);
    let mut candidates: Vec<(bool, String)> = st
        .routers
        .values()
        .filter(|r| {
            r.gateway
                .as_ref()
                .is_some_and(|g| g.network_id == floating_net)
        })
        .filter_map(|r| {
            let iface = st
                .router_interfaces(&r.id)
                .into_iter()
                .flat_map(|p| p.fixed_ips.iter())
                .find(|f| f.subnet_id == subnet_id)?;
            Some((Some(iface.ip_address) != gw_ip, r.id.clone()))
        })
        .collect();
    candidates.sort();
    candidates.into_iter().next().map(|(_, id)| id)
}

/// Checks and applies an association of `fip` with `port_id` (and an
/// optional fixed IP), as Neutron's `_check_and_get_fip_assoc`.
fn associate(
    st: &State,
    ctx: &Ctx,
    fip: &mut FloatingIp,
    port_id: &str,
    fixed: Option<IpAddr>,
) -> Result<()> {
    let p = super::visible_port(ctx, st, port_id)?;
    if !ctx.is_admin && p.std.project_id != ctx.project_id {
        return Err(bad_fip(format!(
            "Cannot process floating IP association with Port {port_id}, since that port is owned by a different tenant"
        )));
    }
    if p.device_owner == "network:dhcp"
        || p.device_owner.starts_with("network:router")
        || p.device_owner == OWNER_FLOATINGIP
    {
        // Neutron's message carries its format string uninterpolated.
        return Err(bad_fip(
            "Port %(id)s is unable to be assigned a floating IP",
        ));
    }
    let v4: Vec<(&str, IpAddr)> = p
        .fixed_ips
        .iter()
        .filter(|f| f.ip_address.is_ipv4())
        .map(|f| (f.subnet_id.as_str(), f.ip_address))
        .collect();
    let (subnet_id, ip) = match fixed {
        Some(ip) if !ip.is_ipv4() => {
            return Err(bad_fip(format!(
                "Cannot process floating IP association with {ip}, since that is not an IPv4 address"
            )));
        }
        Some(ip) => *v4
            .iter()
            .find(|(_, a)| *a == ip)
            .ok_or_else(|| bad_fip(format!("Port {port_id} does not have fixed ip {ip}")))?,
        None => match v4.as_slice() {
            [] => {
                return Err(bad_fip(format!(
                    "Cannot add floating IP to port {port_id} that has no fixed IPv4 addresses"
                )));
            }
            [one] => *one,
            _ => {
                return Err(bad_fip(format!(
                    "Port {port_id} has multiple fixed IPv4 addresses.  Must provide a specific IPv4 address when assigning a floating IP"
                )));
            }
        },
    };
    let router = router_for(st, &fip.floating_network_id, subnet_id).ok_or_else(|| {
        NeutronError::not_found(
            "ExternalGatewayForFloatingIPNotFound",
            format!(
                "External network {} is not reachable from subnet {subnet_id}.  Therefore, cannot associate Port {port_id} with a Floating IP.",
                fip.floating_network_id
            ),
        )
    })?;
    if st.port_floatingips(port_id).into_iter().any(|o| {
        o.id != fip.id
            && o.floating_network_id == fip.floating_network_id
            && o.fixed_ip_address == Some(ip)
    }) {
        return Err(NeutronError::conflict(
            "FloatingIPPortAlreadyAssociated",
            format!(
                "Cannot associate floating IP {} ({}) with port {port_id} using fixed IP {ip}, as that fixed IP already has a floating IP on external network {}.",
                fip.floating_ip_address, fip.id, fip.floating_network_id
            ),
        ));
    }
    fip.port_id = Some(port_id.to_string());
    fip.fixed_ip_address = Some(ip);
    fip.router_id = Some(router);
    Ok(())
}

fn disassociate(fip: &mut FloatingIp) {
    fip.port_id = None;
    fip.fixed_ip_address = None;
    fip.router_id = None;
}

fn fixed_ip_of(b: &Body<'_>) -> Result<Option<IpAddr>> {
    match b.raw("fixed_ip_address") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => attrs::to_ip("fixed_ip_address", v).map(Some),
    }
}

pub fn create(ml2: &Ml2, st: &mut State, ctx: &Ctx, body: &Map<String, Value>) -> Result<String> {
    attrs::check_body(attrs::FLOATINGIP, body, true)?;
    let b = Body(body);
    let net_id = attrs::to_uuid("floating_network_id", b.required("floating_network_id")?)?;
    let project_id = owner_project(ctx, &b)?;
    let net = super::visible_network(ctx, st, &net_id)?;
    if !net.external {
        return Err(bad_fip(format!(
            "Network {net_id} is not a valid external network"
        )));
    }
    if !st
        .network_subnets(&net_id)
        .iter()
        .any(|s| s.ip_version == 4)
    {
        return Err(bad_fip(format!(
            "Network {net_id} does not contain any IPv4 subnet"
        )));
    }
    let address = match b.raw("floating_ip_address") {
        None | Some(Value::Null) => None,
        Some(v) => {
            if !ctx.is_admin {
                return Err(policy_denied("create_floatingip:floating_ip_address"));
            }
            Some(attrs::to_ip("floating_ip_address", v)?)
        }
    };
    let subnet = b
        .raw("subnet_id")
        .filter(|v| !v.is_null())
        .map(|v| attrs::to_uuid("subnet_id", v))
        .transpose()?;
    let port_id = b
        .raw("port_id")
        .filter(|v| !v.is_null())
        .map(|v| attrs::to_uuid("port_id", v))
        .transpose()?;
    let fixed = fixed_ip_of(&b)?;
    if fixed.is_some() && port_id.is_none() {
        return Err(bad_fip(
            "fixed_ip_address cannot be specified without a port_id",
        ));
    }
    let id = new_id();
    let mut want = Map::new();
    if let Some(s) = &subnet {
        want.insert("subnet_id".into(), json!(s));
    }
    if let Some(a) = address {
        want.insert("ip_address".into(), json!(a.to_string()));
    }
    let mut pb = json!({
        "network_id": net_id,
        "tenant_id": "",
        "device_id": id,
        "device_owner": OWNER_FLOATINGIP,
        "name": "",
    });
    if let Some(o) = pb.as_object_mut() {
        let fixed_ips = if want.is_empty() {
            // One IPv4 address: the first IPv4 subnet with room.
            let v4: Vec<Value> = st
                .network_subnets(&net_id)
                .iter()
                .filter(|s| s.ip_version == 4)
                .map(|s| json!({"subnet_id": s.id}))
                .take(1)
                .collect();
            Value::Array(v4)
        } else {
            json!([Value::Object(want)])
        };
        o.insert("fixed_ips".into(), fixed_ips);
    }
    let pb = pb.as_object().cloned().unwrap_or_default();
    let fport = ports::create(ml2, st, &service_ctx(ctx), &pb)?;
    let addr = st
        .ports
        .get(&fport)
        .and_then(|p| p.fixed_ips.iter().find(|f| f.ip_address.is_ipv4()))
        .map(|f| f.ip_address)
        .ok_or_else(|| {
            NeutronError::bad_request(
                "ExternalIpAddressExhausted",
                format!("Unable to find any IP address on external network {net_id}."),
            )
        })?;
    let tags = b.tags()?;
    let mut fip = FloatingIp {
        id: id.clone(),
        floating_network_id: net_id,
        floating_ip_address: addr,
        floating_port_id: fport,
        port_id: None,
        fixed_ip_address: None,
        router_id: None,
        std: StdAttrs::new(
            project_id,
            b.string_or_null("description", Some(DESCRIPTION_MAX))?
                .unwrap_or_default(),
            tags,
            ctx.now,
        ),
    };
    if let Some(p) = port_id {
        associate(st, ctx, &mut fip, &p, fixed)?;
    }
    st.put_floatingip(fip);
    Ok(id)
}

pub fn update(st: &mut State, ctx: &Ctx, id: &str, body: &Map<String, Value>) -> Result<()> {
    attrs::check_body(attrs::FLOATINGIP, body, false)?;
    let b = Body(body);
    let mut fip = visible_fip(ctx, st, id)?.clone();
    let before = fip.clone();
    let fixed = fixed_ip_of(&b)?;
    match b.raw("port_id") {
        // Omitting port_id keeps the association (Neutron bug #1610045).
        None => {
            if fixed.is_some() {
                return Err(bad_fip(
                    "fixed_ip_address cannot be specified without a port_id",
                ));
            }
        }
        Some(Value::Null) => {
            if fixed.is_some() {
                return Err(bad_fip(
                    "fixed_ip_address cannot be specified without a port_id",
                ));
            }
            disassociate(&mut fip);
        }
        Some(v) => {
            let p = attrs::to_uuid("port_id", v)?;
            associate(st, ctx, &mut fip, &p, fixed)?;
        }
    }
    if let Some(d) = b.string_or_null("description", Some(DESCRIPTION_MAX))? {
        fip.std.description = d;
    }
    if fip != before {
        fip.std.bump(ctx.now);
        st.put_floatingip(fip);
    }
    Ok(())
}

pub fn delete(st: &mut State, ctx: &Ctx, id: &str) -> Result<()> {
    let fip = visible_fip(ctx, st, id)?.clone();
    st.remove(Kind::FloatingIp, id);
    st.remove(Kind::Port, &fip.floating_port_id);
    Ok(())
}

/// A port is going away: its floating IPs lose their association (Neutron's
/// `disassociate_floatingips`).
pub fn port_deleted(st: &mut State, port_id: &str, now: switchyard_model::Timestamp) {
    let ids: Vec<String> = st
        .port_floatingips(port_id)
        .iter()
        .map(|f| f.id.clone())
        .collect();
    for id in ids {
        if let Some(mut f) = st.floatingips.get(&id).cloned() {
            disassociate(&mut f);
            f.std.bump(now);
            st.put_floatingip(f);
        }
    }
}

/// The external network is being deleted: its unassociated floating IPs go
/// with it (Neutron's `delete_disassociated_floatingips`).
pub fn network_deleted(st: &mut State, network_id: &str) {
    let ids: Vec<(String, String)> = st
        .floatingips
        .values()
        .filter(|f| f.floating_network_id == network_id && f.port_id.is_none())
        .map(|f| (f.id.clone(), f.floating_port_id.clone()))
        .collect();
    for (id, port) in ids {
        st.remove(Kind::FloatingIp, &id);
        st.remove(Kind::Port, &port);
    }
}
