//! `binding-extended`: several bindings of one port, one ACTIVE and the others
//! INACTIVE, for Nova's live-migration flow (create on the destination, activate,
//! delete the source).

use serde_json::{Map, Value};
use switchyard_model::attrs;
use switchyard_model::{BindingStatus, NeutronError, Port, PortBinding, PortStatus, Result, State};

use super::{Body, port_not_found, require_admin};
use crate::binding::{self, BindRequest};
use crate::{Ctx, Ml2};

fn not_found(port_id: &str, host: &str) -> NeutronError {
    NeutronError::not_found(
        "PortBindingNotFound",
        format!("Binding for port {port_id} for host {host} could not be found."),
    )
}

fn binding_error(port_id: &str, host: &str) -> NeutronError {
    NeutronError::new(
        500,
        "PortBindingError",
        format!("Binding for port {port_id} on host {host} could not be created or updated."),
    )
}

/// The port, if it supports multiple bindings (compute or shared-filesystem ports).
pub fn port_for_bindings<'s>(st: &'s State, ctx: &Ctx, port_id: &str) -> Result<&'s Port> {
    require_admin(ctx, "get_port_binding")?;
    let p = st
        .ports
        .get(port_id)
        .ok_or_else(|| port_not_found(port_id))?;
    if !p.device_owner.starts_with("compute:") && !p.device_owner.starts_with("manila:") {
        return Err(NeutronError::bad_request(
            "BadRequest",
            format!(
                "Bad port request: Invalid port {port_id}. Operation only valid on compute and shared filesystem ports."
            ),
        ));
    }
    Ok(p)
}

pub fn get<'s>(
    st: &'s State,
    ctx: &Ctx,
    port_id: &str,
    host: &str,
) -> Result<(&'s Port, &'s PortBinding)> {
    let p = port_for_bindings(st, ctx, port_id)?;
    let b = p
        .binding_for(host)
        .ok_or_else(|| not_found(port_id, host))?;
    Ok((p, b))
}

/// `POST /v2.0/ports/{id}/bindings`.
pub fn create(
    ml2: &Ml2,
    st: &mut State,
    ctx: &Ctx,
    port_id: &str,
    body: &Map<String, Value>,
) -> Result<String> {
    require_admin(ctx, "create_port_binding")?;
    attrs::check_body(attrs::BINDING, body, true)?;
    let b = Body(body);
    let host = attrs::to_string("host", b.required("host")?, Some(255))?;
    if host.is_empty() {
        return Err(attrs::invalid("host", "'' is not a valid host name"));
    }
    let mut port = port_for_bindings(st, ctx, port_id)?.clone();
    if port.binding_for(&host).is_some() {
        return Err(NeutronError::conflict(
            "PortBindingAlreadyExists",
            format!("Binding for port {port_id} on host {host} already exists."),
        ));
    }
    let has_active = port
        .bindings
        .iter()
        .any(|x| x.status == BindingStatus::Active);
    let vnic_type = match b.raw("vnic_type") {
        Some(v) => super::ports::parse_vnic_as("vnic_type", v)?,
        None => port.active_binding().vnic_type.clone(),
    };
    let vnic_type = if vnic_type.is_empty() {
        "normal".to_string()
    } else {
        vnic_type
    };
    let profile = match b.raw("profile") {
        None | Some(Value::Null) => Map::new(),
        Some(v) => attrs::to_object("profile", v)?.clone(),
    };
    super::ports::check_profile_len(&profile)?;
    let outcome = binding::bind_port(
        ml2,
        st,
        &BindRequest {
            port: &port,
            host: &host,
            vnic_type: &vnic_type,
            profile: &profile,
            now: ctx.now,
        },
    );
    if !outcome.is_bound() {
        return Err(binding_error(port_id, &host));
    }
    port.bindings.push(PortBinding {
        host: host.clone(),
        vnic_type,
        profile,
        vif_type: outcome.vif_type,
        vif_details: outcome.vif_details.into(),
        status: if has_active {
            BindingStatus::Inactive
        } else {
            BindingStatus::Active
        },
        levels: outcome.levels,
    });
    if !has_active {
        port.status = PortStatus::Down;
    }
    port.std.bump(ctx.now);
    let net = port.network_id.clone();
    st.put_port(port);
    binding::release_unused_dynamic_segments(st, &net);
    Ok(host)
}

/// `PUT /v2.0/ports/{id}/bindings/{host}/activate`.
pub fn activate(st: &mut State, ctx: &Ctx, port_id: &str, host: &str) -> Result<()> {
    require_admin(ctx, "activate")?;
    let mut port = port_for_bindings(st, ctx, port_id)?.clone();
    if port.active_binding_mut().is_some() && port.active_binding().host == host {
        return Err(NeutronError::conflict(
            "PortBindingAlreadyActive",
            format!("Binding for port {port_id} on host {host} is already active."),
        ));
    }
    if !port
        .bindings
        .iter()
        .any(|x| x.host == host && x.status == BindingStatus::Inactive)
    {
        return Err(not_found(port_id, host));
    }
    // The host-less placeholder a port is created with cannot be addressed by
    // the API once inactive; activation replaces it.
    port.bindings
        .retain(|x| !(x.host.is_empty() && x.status == BindingStatus::Active));
    for x in port.bindings.iter_mut() {
        if x.host == host {
            x.status = BindingStatus::Active;
        } else if x.status == BindingStatus::Active {
            // The source binding stays (INACTIVE, cleared) until Nova deletes it.
            x.status = BindingStatus::Inactive;
            x.vif_type = switchyard_model::VIF_TYPE_UNBOUND.into();
            x.vif_details = Default::default();
            x.levels.clear();
        }
    }
    port.status = PortStatus::Down;
    port.std.bump(ctx.now);
    let net = port.network_id.clone();
    st.put_port(port);
    binding::release_unused_dynamic_segments(st, &net);
    Ok(())
}

/// `DELETE /v2.0/ports/{id}/bindings/{host}` (the ACTIVE binding may be deleted too).
pub fn delete(st: &mut State, ctx: &Ctx, port_id: &str, host: &str) -> Result<()> {
    require_admin(ctx, "delete_port_binding")?;
    let mut port = port_for_bindings(st, ctx, port_id)?.clone();
    let before = port.bindings.len();
    port.bindings.retain(|x| x.host != host);
    if port.bindings.len() == before {
        return Err(not_found(port_id, host));
    }
    if !port
        .bindings
        .iter()
        .any(|x| x.status == BindingStatus::Active)
    {
        port.status = PortStatus::Down;
    }
    port.std.bump(ctx.now);
    let net = port.network_id.clone();
    st.put_port(port);
    binding::release_unused_dynamic_segments(st, &net);
    Ok(())
}
