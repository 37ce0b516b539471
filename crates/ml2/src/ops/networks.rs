//! Networks with their static segments (`provider:*` or multi-provider `segments`).

use serde_json::{Map, Value};
use switchyard_model::attrs::{self, to_int};
use switchyard_model::{
    Kind, Network, NetworkType, NeutronError, Result, Segment, State, StdAttrs, new_id,
};

use super::{Body, DESCRIPTION_MAX, NAME_MAX, owned_network, owner_project, require_admin};
use crate::types::SegmentSpec;
use crate::{Ctx, Ml2};

/// Device owners whose ports Neutron deletes together with their network.
pub const AUTO_DELETE_OWNERS: [&str; 3] = [
    "network:dhcp",
    "network:distributed",
    "network:floatingip_agent_gateway",
];

const PROVIDER_KEYS: [&str; 3] = [
    "provider:network_type",
    "provider:physical_network",
    "provider:segmentation_id",
];

/// Parses one provider segment from a map holding `provider:*` keys.
fn parse_spec(m: &Map<String, Value>) -> Result<Option<SegmentSpec>> {
    let given = PROVIDER_KEYS
        .iter()
        .any(|k| m.get(*k).is_some_and(|v| !v.is_null()));
    if !given {
        return Ok(None);
    }
    let nt = match m.get("provider:network_type") {
        None | Some(Value::Null) => {
            return Err(NeutronError::invalid_input("network_type required"));
        }
        Some(v) => {
            let s = attrs::to_string("provider:network_type", v, Some(255))?;
            NetworkType::parse(&s).ok_or_else(|| {
                NeutronError::invalid_input(format!("network_type value '{s}' not supported"))
            })?
        }
    };
    let physnet = match m.get("provider:physical_network") {
        None | Some(Value::Null) => None,
        Some(v) => Some(attrs::to_string("provider:physical_network", v, Some(64))?),
    };
    let segmentation_id = match m.get("provider:segmentation_id") {
        None | Some(Value::Null) => None,
        Some(v) => Some(to_int("provider:segmentation_id", v, 0, u32::MAX as i64)? as u32),
    };
    Ok(Some(SegmentSpec {
        network_type: nt,
        physical_network: physnet.filter(|p| !p.is_empty()),
        segmentation_id,
    }))
}

/// The requested static segments: from `provider:*`, from `segments`, or none.
fn requested_segments(b: &Body<'_>) -> Result<Vec<SegmentSpec>> {
    let single = parse_spec(b.0)?;
    let multi = match b.raw("segments") {
        None | Some(Value::Null) => None,
        Some(v) => {
            let list = attrs::to_list("segments", v)?;
            let mut out = Vec::new();
            for item in list {
                let m = attrs::to_object("segments", item)?;
                if let Some(k) = m.keys().find(|k| !PROVIDER_KEYS.contains(&k.as_str())) {
                    return Err(NeutronError::http_bad_request(format!(
                        "Unrecognized attribute(s) '{k}'"
                    )));
                }
                match parse_spec(m)? {
                    Some(s) => out.push(s),
                    None => return Err(NeutronError::invalid_input("network_type required")),
                }
            }
            for (i, s) in out.iter().enumerate() {
                if out[..i].contains(s) {
                    return Err(NeutronError::invalid_input(
                        "Duplicate segment entry in request",
                    ));
                }
            }
            Some(out)
        }
    };
    match (single, multi) {
        (Some(_), Some(_)) => Err(NeutronError::invalid_input(
            "Segments and provider values cannot both be set",
        )),
        (Some(s), None) => Ok(vec![s]),
        (None, Some(m)) => Ok(m),
        (None, None) => Ok(Vec::new()),
    }
}

/// Validates and reserves the segments, writing segment records into the state.
fn create_segments(
    ml2: &Ml2,
    st: &mut State,
    ctx: &Ctx,
    net_id: &str,
    specs: Vec<SegmentSpec>,
) -> Result<Vec<SegmentSpec>> {
    let specs = if specs.is_empty() {
        vec![ml2.types.allocate_project_segment(&ml2.settings, st)?]
    } else {
        let mut out = Vec::new();
        for s in specs {
            let d = ml2.types.driver_or_400(s.network_type)?;
            d.validate_provider_segment(&ml2.settings, &s)?;
            out.push(d.reserve_provider_segment(&ml2.settings, st, &s)?);
            // Reserve now so a later segment of the same request sees it taken.
            put_segment(
                st,
                ctx,
                net_id,
                out.len() as u32 - 1,
                out[out.len() - 1].clone(),
                None,
            );
        }
        return Ok(out);
    };
    for (i, s) in specs.iter().enumerate() {
        put_segment(st, ctx, net_id, i as u32, s.clone(), None);
    }
    Ok(specs)
}

pub(crate) fn put_segment(
    st: &mut State,
    ctx: &Ctx,
    net_id: &str,
    index: u32,
    s: SegmentSpec,
    name: Option<String>,
) -> String {
    let id = new_id();
    st.put_segment(Segment {
        id: id.clone(),
        network_id: net_id.to_string(),
        name,
        network_type: s.network_type,
        physical_network: s.physical_network,
        segmentation_id: s.segmentation_id,
        is_dynamic: false,
        segment_index: index,
        std: StdAttrs::new(String::new(), String::new(), Vec::new(), ctx.now),
    });
    id
}

fn check_mtu(b: &Body<'_>, max: u32) -> Result<Option<u32>> {
    match b.raw("mtu") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => {
            let m = to_int("mtu", v, 68, i64::from(u32::MAX))? as u32;
            if m > max {
                return Err(NeutronError::invalid_input(format!(
                    "Requested MTU is too big, maximum is {max}"
                )));
            }
            Ok(Some(m))
        }
    }
}

pub fn create(ml2: &Ml2, st: &mut State, ctx: &Ctx, body: &Map<String, Value>) -> Result<String> {
    attrs::check_body(attrs::NETWORK, body, true)?;
    let b = Body(body);
    let project_id = owner_project(ctx, &b)?;
    let specs = requested_segments(&b)?;
    if !specs.is_empty() {
        require_admin(ctx, "create_network:provider:network_type")?;
    }
    let external = b.bool("router:external")?.unwrap_or(false);
    if external {
        require_admin(ctx, "create_network:router:external")?;
    }
    let shared = b.bool("shared")?.unwrap_or(false);
    if shared {
        require_admin(ctx, "create_network:shared")?;
    }
    let id = new_id();
    let specs = create_segments(ml2, st, ctx, &id, specs)?;
    let max_mtu = ml2.types.network_mtu(&ml2.settings, &specs);
    let mtu = check_mtu(&b, max_mtu)?.unwrap_or(max_mtu);
    // As Neutron's network BEFORE_CREATE callback: the project's default
    // security group exists before its first network.
    super::secgroups::ensure_default(st, ctx, &project_id);
    let net = Network {
        id: id.clone(),
        name: b
            .string_or_null("name", Some(NAME_MAX))?
            .unwrap_or_default(),
        admin_state_up: b.bool("admin_state_up")?.unwrap_or(true),
        shared,
        external,
        mtu,
        port_security_enabled: b.bool("port_security_enabled")?.unwrap_or(true),
        std: StdAttrs::new(
            project_id,
            b.string_or_null("description", Some(DESCRIPTION_MAX))?
                .unwrap_or_default(),
            Vec::new(),
            ctx.now,
        ),
    };
    st.put_network(net);
    Ok(id)
}

pub fn update(
    ml2: &Ml2,
    st: &mut State,
    ctx: &Ctx,
    id: &str,
    body: &Map<String, Value>,
) -> Result<()> {
    attrs::check_body(attrs::NETWORK, body, false)?;
    let b = Body(body);
    let mut n = owned_network(ctx, st, id)?.clone();
    if let Some(v) = b.string_or_null("name", Some(NAME_MAX))? {
        n.name = v;
    }
    if let Some(v) = b.string_or_null("description", Some(DESCRIPTION_MAX))? {
        n.std.description = v;
    }
    if let Some(v) = b.bool("admin_state_up")? {
        n.admin_state_up = v;
    }
    if let Some(v) = b.bool("shared")? {
        require_admin(ctx, "update_network:shared")?;
        n.shared = v;
    }
    if let Some(v) = b.bool("router:external")? {
        require_admin(ctx, "update_network:router:external")?;
        if n.external
            && !v
            && st
                .routers
                .values()
                .any(|r| r.gateway.as_ref().is_some_and(|g| g.network_id == n.id))
        {
            return Err(NeutronError::conflict(
                "ExternalNetworkInUse",
                format!(
                    "External network {id} cannot be updated to be made non-external, since it has existing gateway ports."
                ),
            ));
        }
        n.external = v;
    }
    if let Some(v) = b.bool("port_security_enabled")? {
        n.port_security_enabled = v;
    }
    let specs: Vec<SegmentSpec> = st
        .network_segments(id)
        .into_iter()
        .filter(|s| !s.is_dynamic)
        .map(crate::types::spec_of)
        .collect();
    let max = ml2.types.network_mtu(&ml2.settings, &specs);
    if let Some(m) = check_mtu(&b, max)? {
        n.mtu = m;
    }
    n.std.bump(ctx.now);
    st.put_network(n);
    Ok(())
}

pub fn delete(ml2: &Ml2, st: &mut State, ctx: &Ctx, id: &str) -> Result<()> {
    owned_network(ctx, st, id)?;
    // Unassociated floating IPs of an external network go with it.
    super::floatingips::network_deleted(st, id);
    let port_ids: Vec<String> = st.network_port_ids(id).cloned().collect();
    let mut in_use = Vec::new();
    for pid in &port_ids {
        if let Some(p) = st.ports.get(pid)
            && !AUTO_DELETE_OWNERS.contains(&p.device_owner.as_str())
        {
            in_use.push(pid.clone());
        }
    }
    if !in_use.is_empty() {
        return Err(NeutronError::conflict(
            "NetworkInUse",
            format!(
                "Unable to complete operation on network {id}. There are one or more ports still in use on the network, id for these ports is: {}.",
                in_use.join(",")
            ),
        ));
    }
    for pid in port_ids {
        st.remove(Kind::Port, &pid);
    }
    let subnet_ids: Vec<String> = st
        .network_subnets(id)
        .iter()
        .map(|s| s.id.clone())
        .collect();
    for sid in subnet_ids {
        ml2.ipam.forget(&sid);
        st.remove(Kind::Subnet, &sid);
    }
    let seg_ids: Vec<String> = st
        .network_segments(id)
        .iter()
        .map(|s| s.id.clone())
        .collect();
    for sid in seg_ids {
        st.remove(Kind::Segment, &sid);
    }
    st.remove(Kind::Network, id);
    Ok(())
}
