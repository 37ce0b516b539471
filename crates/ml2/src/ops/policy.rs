//! Neutron's default policy, in one place: who may see a resource, who may
//! change it, and which attributes only an admin or the network's owner may set.
//! A caller who cannot see a resource gets 404; one who can see it but may not
//! change it gets 403 `PolicyNotAuthorized`.

use serde_json::{Map, Value};
use switchyard_model::{Network, Port, Result, State, Subnet};

use super::{network_not_found, policy_denied, port_not_found, subnet_not_found};
use crate::Ctx;

/// Admin, or the project that owns the network.
pub fn network_owner(ctx: &Ctx, n: &Network) -> bool {
    ctx.is_admin || n.std.project_id == ctx.project_id
}

fn owns_network_of(ctx: &Ctx, st: &State, network_id: &str) -> bool {
    ctx.is_admin
        || st
            .networks
            .get(network_id)
            .is_some_and(|n| n.std.project_id == ctx.project_id)
}

/// Read visibility: admins see everything; others see their own resources and
/// shared or external networks with their subnets.
pub fn network_visible(ctx: &Ctx, n: &Network) -> bool {
    network_owner(ctx, n) || n.shared || n.external
}

pub fn subnet_visible(ctx: &Ctx, st: &State, s: &Subnet) -> bool {
    ctx.is_admin
        || s.std.project_id == ctx.project_id
        || st
            .networks
            .get(&s.network_id)
            .is_some_and(|n| network_visible(ctx, n))
}

pub fn port_visible(ctx: &Ctx, st: &State, p: &Port) -> bool {
    ctx.is_admin
        || ctx.is_service
        || p.std.project_id == ctx.project_id
        || owns_network_of(ctx, st, &p.network_id)
}

/// A network the caller may see, or 404.
pub fn visible_network<'s>(ctx: &Ctx, st: &'s State, id: &str) -> Result<&'s Network> {
    st.networks
        .get(id)
        .filter(|n| network_visible(ctx, n))
        .ok_or_else(|| network_not_found(id))
}

/// A network the caller may change (owner or admin): 404 if unseen, else 403.
pub fn owned_network<'s>(ctx: &Ctx, st: &'s State, id: &str) -> Result<&'s Network> {
    let n = visible_network(ctx, st, id)?;
    if !network_owner(ctx, n) {
        return Err(policy_denied("rule:update_network"));
    }
    Ok(n)
}

pub fn visible_subnet<'s>(ctx: &Ctx, st: &'s State, id: &str) -> Result<&'s Subnet> {
    st.subnets
        .get(id)
        .filter(|s| subnet_visible(ctx, st, s))
        .ok_or_else(|| subnet_not_found(id))
}

/// A subnet the caller may change: admin or the owner of its network.
pub fn owned_subnet<'s>(ctx: &Ctx, st: &'s State, id: &str) -> Result<&'s Subnet> {
    let s = visible_subnet(ctx, st, id)?;
    if !owns_network_of(ctx, st, &s.network_id) {
        return Err(policy_denied("rule:update_subnet"));
    }
    Ok(s)
}

pub fn visible_port<'s>(ctx: &Ctx, st: &'s State, id: &str) -> Result<&'s Port> {
    st.ports
        .get(id)
        .filter(|p| port_visible(ctx, st, p))
        .ok_or_else(|| port_not_found(id))
}

/// Port attributes only an admin or the network's owner may set: they decide
/// addresses and anti-spoofing on a network someone else runs.
const NETWORK_OWNER_PORT_ATTRS: [&str; 3] = [
    "mac_address",
    "port_security_enabled",
    "allowed_address_pairs",
];

/// Checks a port request body against the per-attribute policy.
pub fn check_port_attrs(
    ctx: &Ctx,
    net: &Network,
    body: &Map<String, Value>,
    action: &str,
) -> Result<()> {
    if ctx.is_admin {
        return Ok(());
    }
    // Binding a port to a host (and the host's profile) is for Nova: admin
    // or the service role (`rule:admin_only or rule:service_api`).
    if !ctx.is_service {
        for k in ["binding:host_id", "binding:profile"] {
            if body.contains_key(k) {
                return Err(policy_denied(&format!("rule:{action}:{k}")));
            }
        }
    }
    if network_owner(ctx, net) {
        return Ok(());
    }
    for k in NETWORK_OWNER_PORT_ATTRS {
        if body.contains_key(k) {
            return Err(policy_denied(&format!("rule:{action}:{k}")));
        }
    }
    let specific_ip = body
        .get("fixed_ips")
        .and_then(Value::as_array)
        .is_some_and(|l| l.iter().any(|f| f.get("ip_address").is_some()));
    if specific_ip {
        return Err(policy_denied(&format!(
            "rule:{action}:fixed_ips:ip_address"
        )));
    }
    let network_device = body
        .get("device_owner")
        .and_then(Value::as_str)
        .is_some_and(|o| o.starts_with("network:"));
    if network_device {
        return Err(policy_denied(&format!("rule:{action}:device_owner")));
    }
    Ok(())
}

/// Binding attributes only an admin or the service role reads.
pub const BINDING_ATTRS: [&str; 4] = [
    "binding:host_id",
    "binding:profile",
    "binding:vif_type",
    "binding:vif_details",
];

/// Attributes only an admin reads (Neutron's admin-only attributes).
pub const ADMIN_ONLY_ATTRS: [&str; 4] = [
    "provider:network_type",
    "provider:physical_network",
    "provider:segmentation_id",
    "segments",
];

/// Whether the caller reads a port's [`BINDING_ATTRS`] (admins and services).
pub fn reads_binding_details(ctx: &Ctx) -> bool {
    ctx.is_admin || ctx.is_service
}

/// Removes what the caller may not read from a rendered resource.
pub fn redact(ctx: &Ctx, mut v: Value) -> Value {
    if !ctx.is_admin
        && let Some(o) = v.as_object_mut()
    {
        // shift_remove: the other attributes keep their order.
        for k in ADMIN_ONLY_ATTRS {
            o.shift_remove(k);
        }
        if !reads_binding_details(ctx) {
            for k in BINDING_ATTRS {
                o.shift_remove(k);
            }
        }
    }
    v
}

/// Tags may be changed by an admin or the resource's owner (for subnets and
/// ports, the network's owner too).
pub fn may_write_tags(
    ctx: &Ctx,
    st: &State,
    owner_project: &str,
    network_id: Option<&str>,
) -> bool {
    ctx.is_admin
        || owner_project == ctx.project_id
        || network_id.is_some_and(|n| owns_network_of(ctx, st, n))
}
