//! The Neutron core operations. Each takes `(&Ml2, &mut State, &Ctx, body)` and
//! returns the id of what it wrote; rendering is the caller's job.

pub mod agents;
pub mod bindings;
pub mod floatingips;
pub mod networks;
pub mod policy;
pub mod ports;
pub mod routers;
pub mod secgroups;
pub mod segments;
pub mod subnets;
pub mod tags;

pub use policy::*;

use serde_json::{Map, Value};
use switchyard_model::attrs;
use switchyard_model::{NeutronError, Result, State};

use crate::Ctx;

/// Typed access to a request body that `attrs::check_body` already vetted.
pub struct Body<'a>(pub &'a Map<String, Value>);

impl<'a> Body<'a> {
    pub fn has(&self, k: &str) -> bool {
        self.0.contains_key(k)
    }
    pub fn raw(&self, k: &str) -> Option<&'a Value> {
        self.0.get(k)
    }
    pub fn string(&self, k: &str, max: Option<usize>) -> Result<Option<String>> {
        self.0
            .get(k)
            .map(|v| attrs::to_string(k, v, max))
            .transpose()
    }
    /// A string that may also be given as null (treated as empty, as Neutron's
    /// `convert_none_to_empty_string` does for e.g. `description`).
    pub fn string_or_null(&self, k: &str, max: Option<usize>) -> Result<Option<String>> {
        match self.0.get(k) {
            None => Ok(None),
            Some(Value::Null) => Ok(Some(String::new())),
            Some(v) => attrs::to_string(k, v, max).map(Some),
        }
    }
    /// `tags` in a POST body (empty when absent).
    pub fn tags(&self) -> Result<Vec<String>> {
        self.0
            .get("tags")
            .map(|v| attrs::to_tags("tags", v))
            .transpose()
            .map(Option::unwrap_or_default)
    }
    pub fn bool(&self, k: &str) -> Result<Option<bool>> {
        self.0.get(k).map(|v| attrs::to_bool(k, v)).transpose()
    }
    pub fn required(&self, k: &str) -> Result<&'a Value> {
        self.0.get(k).ok_or_else(|| {
            NeutronError::http_bad_request(format!(
                "Failed to parse request. Required attribute '{k}' not specified"
            ))
        })
    }
}

pub const NAME_MAX: usize = 255;
pub const DESCRIPTION_MAX: usize = 255;

/// The owning project of a new resource: the caller's, or the one an admin names.
pub fn owner_project(ctx: &Ctx, b: &Body<'_>) -> Result<String> {
    let t = b.string("tenant_id", Some(255))?;
    let p = b.string("project_id", Some(255))?;
    if let (Some(t), Some(p)) = (&t, &p)
        && t != p
    {
        return Err(NeutronError::http_bad_request(
            "'project_id' and 'tenant_id' do not match",
        ));
    }
    let chosen = p.or(t).unwrap_or_else(|| ctx.project_id.clone());
    if chosen != ctx.project_id && !ctx.is_admin {
        return Err(NeutronError::http_bad_request(
            "Specifying 'project_id' other than the authenticated project in request is not allowed for the current user.",
        ));
    }
    Ok(chosen)
}

/// Neutron's policy failure (403).
pub fn policy_denied(rule: &str) -> NeutronError {
    NeutronError::new(
        403,
        "PolicyNotAuthorized",
        format!("({rule}) is disallowed by policy"),
    )
}

pub fn require_admin(ctx: &Ctx, rule: &str) -> Result<()> {
    if ctx.is_admin {
        Ok(())
    } else {
        Err(policy_denied(rule))
    }
}

pub fn network_not_found(id: &str) -> NeutronError {
    NeutronError::not_found(
        "NetworkNotFound",
        format!("Network {id} could not be found."),
    )
}
pub fn subnet_not_found(id: &str) -> NeutronError {
    NeutronError::not_found("SubnetNotFound", format!("Subnet {id} could not be found."))
}
pub fn port_not_found(id: &str) -> NeutronError {
    NeutronError::not_found("PortNotFound", format!("Port {id} could not be found."))
}
pub fn segment_not_found(id: &str) -> NeutronError {
    NeutronError::not_found(
        "SegmentNotFound",
        format!("Segment {id} could not be found."),
    )
}
pub fn agent_not_found(id: &str) -> NeutronError {
    NeutronError::not_found("AgentNotFound", format!("Agent {id} could not be found."))
}

/// Router ports get no SLAAC addresses (Neutron's `is_router_owner` rule).
pub fn is_router_owner(owner: &str) -> bool {
    owner.starts_with("network:router_interface") || owner == "network:router_gateway"
}

/// Bumps a network's revision (a subnet change revises its network, as in Neutron).
pub fn bump_network(st: &mut State, network_id: &str, now: switchyard_model::Timestamp) {
    if let Some(mut n) = st.networks.get(network_id).cloned() {
        n.std.bump(now);
        st.put_network(n);
    }
}
