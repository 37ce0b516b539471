//! `/v2.0/segments` (the `segment` extension): add a static segment to a network,
//! rename it, delete it when nothing uses it. Dynamic segments are listed too.

use serde_json::{Map, Value};
use switchyard_model::attrs;
use switchyard_model::{Kind, NetworkType, NeutronError, Result, State};

use super::networks::put_segment;
use super::{Body, DESCRIPTION_MAX, NAME_MAX, network_not_found, require_admin, segment_not_found};
use crate::types::SegmentSpec;
use crate::{Ctx, Ml2};

pub fn create(ml2: &Ml2, st: &mut State, ctx: &Ctx, body: &Map<String, Value>) -> Result<String> {
    require_admin(ctx, "create_segment")?;
    attrs::check_body(attrs::SEGMENT, body, true)?;
    let b = Body(body);
    let network_id = attrs::to_uuid("network_id", b.required("network_id")?)?;
    if !st.networks.contains_key(&network_id) {
        return Err(network_not_found(&network_id));
    }
    let nt = attrs::to_string("network_type", b.required("network_type")?, Some(255))?;
    let network_type = NetworkType::parse(&nt).ok_or_else(|| {
        NeutronError::invalid_input(format!("network_type value '{nt}' not supported"))
    })?;
    let physical_network = match b.raw("physical_network") {
        None | Some(Value::Null) => None,
        Some(v) => Some(attrs::to_string("physical_network", v, Some(64))?),
    };
    let segmentation_id = match b.raw("segmentation_id") {
        None | Some(Value::Null) => None,
        Some(v) => Some(attrs::to_int("segmentation_id", v, 0, i64::from(u32::MAX))? as u32),
    };
    let spec = SegmentSpec {
        network_type,
        physical_network,
        segmentation_id,
    };
    let d = ml2.types.driver_or_400(spec.network_type)?;
    d.validate_provider_segment(&ml2.settings, &spec)?;
    let spec = d.reserve_provider_segment(&ml2.settings, st, &spec)?;
    let index = st
        .network_segments(&network_id)
        .iter()
        .filter(|s| !s.is_dynamic)
        .map(|s| s.segment_index + 1)
        .max()
        .unwrap_or(0);
    let name = b
        .string_or_null("name", Some(NAME_MAX))?
        .filter(|n| !n.is_empty());
    let id = put_segment(st, ctx, &network_id, index, spec, name);
    if let Some(desc) = b.string_or_null("description", Some(DESCRIPTION_MAX))?
        && let Some(mut s) = st.segments.get(&id).cloned()
    {
        s.std.description = desc;
        st.put_segment(s);
    }
    // A network's MTU follows its smallest segment.
    super::bump_network(st, &network_id, ctx.now);
    Ok(id)
}

pub fn update(st: &mut State, ctx: &Ctx, id: &str, body: &Map<String, Value>) -> Result<()> {
    require_admin(ctx, "update_segment")?;
    attrs::check_body(attrs::SEGMENT, body, false)?;
    let b = Body(body);
    let mut s = st
        .segments
        .get(id)
        .cloned()
        .ok_or_else(|| segment_not_found(id))?;
    if let Some(n) = b.string_or_null("name", Some(NAME_MAX))? {
        s.name = Some(n);
    }
    if let Some(d) = b.string_or_null("description", Some(DESCRIPTION_MAX))? {
        s.std.description = d;
    }
    s.std.bump(ctx.now);
    st.put_segment(s);
    Ok(())
}

pub fn delete(st: &mut State, ctx: &Ctx, id: &str) -> Result<()> {
    require_admin(ctx, "delete_segment")?;
    let s = st
        .segments
        .get(id)
        .cloned()
        .ok_or_else(|| segment_not_found(id))?;
    let in_use = |reason: String| {
        NeutronError::conflict(
            "SegmentInUse",
            format!("Segment '{id}' cannot be deleted: {reason}."),
        )
    };
    let subnets: Vec<String> = st
        .network_subnets(&s.network_id)
        .iter()
        .filter(|sub| sub.segment_id.as_deref() == Some(id))
        .map(|sub| sub.id.clone())
        .collect();
    if !subnets.is_empty() {
        return Err(in_use(format!(
            "The segment is still associated with subnet(s) {}",
            subnets.join(", ")
        )));
    }
    let bound = st
        .network_port_ids(&s.network_id)
        .filter_map(|pid| st.ports.get(pid))
        .filter(|p| {
            p.bindings
                .iter()
                .any(|b| b.levels.iter().any(|l| l.segment_id == id))
        })
        .count();
    if bound > 0 {
        return Err(in_use(format!(
            "The segment is still bound with {bound} port(s)"
        )));
    }
    st.remove(Kind::Segment, id);
    super::bump_network(st, &s.network_id, ctx.now);
    Ok(())
}
