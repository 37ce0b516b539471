//! Which topology nodes are run by node agents, and how: the pipeline an agent
//! of the node's role drives (wired to the node's trunk, uplink or VFs), and the
//! `configurations` it reports, as a real agent would read them from its own
//! configuration file.
//!
//! The gateway's external side (its public address and upstream next hop) is
//! node configuration, not controller state, so it is applied here.

use serde_json::{Map, Value, json};
use switchyard_agent::{Dataplane, NodeAgent, pipeline_for};
use switchyard_dataplane::gateway::{self, External};
use switchyard_proto::Role;

use crate::lab::node_mac;
use crate::topology::{NodeSpec, Role as LabRole};

/// Default number of VFs on an SR-IOV node that does not say.
pub const DEFAULT_VFS: u32 = 8;

/// The agent role of a topology node; `None` for nodes without an agent
/// (the fabric switch, the internet).
pub fn agent_role(spec: &NodeSpec) -> Option<Role> {
    match spec.role {
        LabRole::Vrouter => Some(Role::Vrouter),
        LabRole::Ovs => Some(Role::Ovs),
        LabRole::Sriov => Some(Role::Sriov),
        LabRole::Gateway => Some(Role::Gateway),
        LabRole::Fabric | LabRole::Internet => None,
    }
}

/// The agent of node `index` in its topology, with an empty pipeline waiting
/// for the controller; `Ok(None)` for nodes that run no agent.
pub fn agent_for(spec: &NodeSpec, index: usize) -> Result<Option<NodeAgent>, String> {
    let Some(role) = agent_role(spec) else {
        return Ok(None);
    };
    let mac = node_mac(index);
    let (mut dp, range) = pipeline_for(
        role,
        mac,
        spec.underlay,
        spec.trunk_port.unwrap_or(0),
        spec.vfs.unwrap_or(DEFAULT_VFS),
    )?;
    if let Dataplane::Gateway(g) = &mut dp
        && let (Some(port), Some(ip), Some(next_hop)) =
            (spec.external_port, spec.external_ip, spec.next_hop)
    {
        let ext = External {
            port,
            ip,
            prefix_len: spec.external_prefix_len.unwrap_or(24),
            mac,
            next_hop,
        };
        g.apply(1, &[gateway::Update::External(ext)])
            .map_err(|e| format!("{}: external side: {e}", spec.name))?;
    }
    Ok(Some(NodeAgent::new(&spec.name, role, dp, range)))
}

/// What the node's agent reports as `configurations` (Neutron's agent shape:
/// `bridge_mappings` for OVS, `device_mappings` for SR-IOV, `tunneling_ip`
/// for vRouter and gateway nodes).
pub fn configurations(spec: &NodeSpec) -> Map<String, Value> {
    let physnet = spec.physnet.clone().unwrap_or_else(|| "physnet1".into());
    let v = match spec.role {
        LabRole::Ovs => json!({"bridge_mappings": {physnet: "br-phys"}}),
        LabRole::Sriov => json!({"device_mappings": {physnet: ["eth1"]}}),
        _ => match spec.underlay {
            Some(ip) => json!({"tunneling_ip": ip.to_string()}),
            None => json!({}),
        },
    };
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}
