//! The agents table: heartbeats reported by node agents (upserted by agent type
//! and host, as Neutron's `report_state`), and the admin's `/v2.0/agents` edits.

use serde_json::{Map, Value};
use switchyard_model::attrs;
use switchyard_model::{Agent, Kind, NeutronError, Result, State, new_id};

use super::{Body, agent_not_found, require_admin};
use crate::Ctx;

/// Fields an agent may send in a state report.
const REPORT_KEYS: [&str; 7] = [
    "host",
    "agent_type",
    "binary",
    "topic",
    "configurations",
    "availability_zone",
    "start_flag",
];

/// Upserts an agent from its heartbeat; returns the agent id.
pub fn report_state(st: &mut State, ctx: &Ctx, body: &Map<String, Value>) -> Result<String> {
    require_admin(ctx, "report_state")?;
    if let Some(k) = body.keys().find(|k| !REPORT_KEYS.contains(&k.as_str())) {
        return Err(NeutronError::http_bad_request(format!(
            "Unrecognized attribute(s) '{k}'"
        )));
    }
    let b = Body(body);
    let host = attrs::to_string("host", b.required("host")?, Some(255))?;
    let agent_type = attrs::to_string("agent_type", b.required("agent_type")?, Some(255))?;
    if host.is_empty() || agent_type.is_empty() {
        return Err(NeutronError::invalid_input(
            "host and agent_type must not be empty",
        ));
    }
    let binary = b.string("binary", Some(255))?;
    let topic = b.string("topic", Some(255))?;
    let configurations = match b.raw("configurations") {
        None | Some(Value::Null) => None,
        Some(v) => Some(attrs::to_object("configurations", v)?.clone()),
    };
    let az = match b.raw("availability_zone") {
        None => None,
        Some(v) => Some(attrs::to_opt_string("availability_zone", v, Some(255))?),
    };
    let start_flag = b.bool("start_flag")?.unwrap_or(false);
    let agent = match st.agent_by_type_host(&agent_type, &host).cloned() {
        Some(mut a) => {
            a.heartbeat_timestamp = ctx.now;
            if start_flag {
                a.started_at = ctx.now;
            }
            if let Some(c) = configurations {
                a.configurations = c;
            }
            if let Some(bn) = binary {
                a.binary = bn;
            }
            if let Some(t) = topic {
                a.topic = t;
            }
            if let Some(z) = az {
                a.availability_zone = z;
            }
            a
        }
        None => Agent {
            id: new_id(),
            binary: binary.unwrap_or_else(|| default_binary(&agent_type).into()),
            topic: topic.unwrap_or_else(|| "N/A".into()),
            agent_type,
            host,
            admin_state_up: true,
            availability_zone: az.flatten(),
            description: None,
            heartbeat_timestamp: ctx.now,
            started_at: ctx.now,
            created_at: ctx.now,
            resources_synced: None,
            configurations: configurations.unwrap_or_default(),
        },
    };
    let id = agent.id.clone();
    st.put_agent(agent);
    Ok(id)
}

fn default_binary(agent_type: &str) -> &'static str {
    match agent_type {
        switchyard_model::AGENT_TYPE_OVS => "switchyard-ovs-agent",
        switchyard_model::AGENT_TYPE_SRIOV => "switchyard-sriov-agent",
        switchyard_model::AGENT_TYPE_VROUTER => "switchyard-vrouter-agent",
        switchyard_model::AGENT_TYPE_GATEWAY => "switchyard-gateway-agent",
        _ => "switchyard-agent",
    }
}

pub fn get<'s>(st: &'s State, ctx: &Ctx, id: &str) -> Result<&'s Agent> {
    require_admin(ctx, "get_agent")?;
    st.agents.get(id).ok_or_else(|| agent_not_found(id))
}

pub fn update(st: &mut State, ctx: &Ctx, id: &str, body: &Map<String, Value>) -> Result<()> {
    require_admin(ctx, "update_agent")?;
    attrs::check_body(attrs::AGENT, body, false)?;
    let b = Body(body);
    let mut a = st
        .agents
        .get(id)
        .cloned()
        .ok_or_else(|| agent_not_found(id))?;
    if let Some(v) = b.bool("admin_state_up")? {
        a.admin_state_up = v;
    }
    if let Some(v) = b.raw("description") {
        a.description = attrs::to_opt_string("description", v, Some(255))?;
    }
    st.put_agent(a);
    Ok(())
}

pub fn delete(st: &mut State, ctx: &Ctx, id: &str) -> Result<()> {
    require_admin(ctx, "delete_agent")?;
    if st.remove(Kind::Agent, id).is_none() {
        return Err(agent_not_found(id));
    }
    Ok(())
}
