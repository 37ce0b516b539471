//! Mechanism drivers: each looks at the port, the host's live agents and the
//! segments offered at its level, and either binds one (vif_type + vif_details),
//! continues the binding one level down with other segments, or declines.
//!
//! Drivers are pure: they read the [`BindContext`] and return a [`Decision`]; the
//! binding loop in [`crate::binding`] owns levels, retries and dynamic segments.
//! Adding a backend is adding a driver to [`build`], not editing the loop.

use serde_json::{Map, Value, json};
use switchyard_model::{
    AGENT_TYPE_OVS, AGENT_TYPE_SRIOV, AGENT_TYPE_VROUTER, Agent, NetworkType, Segment,
};

pub const KNOWN_DRIVERS: [&str; 5] = [
    "vrouter",
    "fabric",
    "openvswitch",
    "sriovnicswitch",
    "gateway",
];

pub const VNIC_NORMAL: &str = "normal";
pub const VNIC_DIRECT: &str = "direct";
pub const VNIC_MACVTAP: &str = "macvtap";

/// Every `binding:vnic_type` value neutron-lib accepts.
pub const VNIC_TYPES: [&str; 11] = [
    "normal",
    "direct",
    "macvtap",
    "baremetal",
    "direct-physical",
    "virtio-forwarder",
    "smart-nic",
    "vdpa",
    "accelerator-direct",
    "accelerator-direct-physical",
    "remote-managed",
];

/// What a driver sees while binding one level.
pub trait BindContext {
    fn host(&self) -> &str;
    fn vnic_type(&self) -> &str;
    fn profile(&self) -> &Map<String, Value>;
    fn level(&self) -> u32;
    fn segments_to_bind(&self) -> &[Segment];
    /// Agents of a type on the binding host, with their liveness.
    fn host_agents(&self, agent_type: &str) -> Vec<(&Agent, bool)>;
    /// The port's `device_owner` (router ports bind differently from VM ports).
    fn device_owner(&self) -> &str;
    /// Finds or allocates the network's dynamic segment on `physnet` (Neutron's
    /// `allocate_dynamic_segment`); `None` when no VLAN is free.
    fn allocate_dynamic_vlan(&mut self, physnet: &str) -> Option<Segment>;
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// `set_binding`: this level binds `segment_id` and binding is complete.
    Bind {
        segment_id: String,
        vif_type: String,
        vif_details: Map<String, Value>,
    },
    /// `continue_binding`: this level binds `segment_id`, the next level binds one of `next`.
    Continue {
        segment_id: String,
        next: Vec<Segment>,
    },
}

pub trait MechanismDriver: Send + Sync {
    fn name(&self) -> &'static str;
    /// `l2` drivers can bind ports without fixed IPs.
    fn connectivity(&self) -> &'static str {
        "l2"
    }
    fn bind_port(&self, ctx: &mut dyn BindContext) -> Option<Decision>;
}

/// Builds the configured drivers in `mechanism_drivers` order.
pub fn build(names: &[String]) -> Vec<Box<dyn MechanismDriver>> {
    names
        .iter()
        .filter_map(|n| -> Option<Box<dyn MechanismDriver>> {
            match n.as_str() {
                "vrouter" => Some(Box::new(VrouterDriver)),
                "fabric" => Some(Box::new(FabricDriver)),
                "openvswitch" => Some(Box::new(OpenvswitchDriver)),
                "sriovnicswitch" => Some(Box::new(SriovDriver)),
                "gateway" => Some(Box::new(GatewayDriver)),
                _ => None,
            }
        })
        .collect()
}

fn conf<'a>(a: &'a Agent, key: &str) -> Option<&'a Value> {
    a.configurations.get(key)
}

/// physnet names of an agent's `bridge_mappings` / `device_mappings`.
fn mapped_physnets(a: &Agent, key: &str) -> Vec<String> {
    conf(a, key)
        .and_then(Value::as_object)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

fn has_switchdev(profile: &Map<String, Value>) -> bool {
    profile
        .get("capabilities")
        .and_then(Value::as_array)
        .is_some_and(|c| c.iter().any(|v| v == "switchdev"))
}

/// The gateway node (the vMX role): binds the ports of the routers placed on
/// it — a router interface on the network's VXLAN segment (the gateway is a
/// VTEP), a router gateway port on whatever segment the external network
/// has (its external side is the node's own configuration). VM ports are
/// never bound to a gateway: it hosts no VMs.
pub struct GatewayDriver;

impl MechanismDriver for GatewayDriver {
    fn name(&self) -> &'static str {
        "gateway"
    }

    fn connectivity(&self) -> &'static str {
        "l3"
    }

    fn bind_port(&self, ctx: &mut dyn BindContext) -> Option<Decision> {
        use switchyard_model::{AGENT_TYPE_GATEWAY, OWNER_ROUTER_GATEWAY, OWNER_ROUTER_INTERFACE};
        let owner = ctx.device_owner().to_string();
        if ctx.vnic_type() != VNIC_NORMAL
            || (owner != OWNER_ROUTER_INTERFACE && owner != OWNER_ROUTER_GATEWAY)
        {
            return None;
        }
        let alive = ctx
            .host_agents(AGENT_TYPE_GATEWAY)
            .into_iter()
            .any(|(_, alive)| alive);
        if !alive {
            return None;
        }
        let segs = ctx.segments_to_bind();
        let seg = if owner == OWNER_ROUTER_INTERFACE {
            segs.iter().find(|s| s.network_type == NetworkType::Vxlan)?
        } else {
            segs.first()?
        };
        let mut d = Map::new();
        d.insert("port_filter".into(), json!(false));
        d.insert("connectivity".into(), json!("l3"));
        Some(Decision::Bind {
            segment_id: seg.id.clone(),
            vif_type: "other".into(),
            vif_details: d,
        })
    }
}

/// Tungsten-Fabric-style vRouter: binds VXLAN segments on hosts with a live vRouter agent.
pub struct VrouterDriver;

impl MechanismDriver for VrouterDriver {
    fn name(&self) -> &'static str {
        "vrouter"
    }

    fn bind_port(&self, ctx: &mut dyn BindContext) -> Option<Decision> {
        if ctx.vnic_type() != VNIC_NORMAL {
            return None;
        }
        let alive = ctx
            .host_agents(AGENT_TYPE_VROUTER)
            .into_iter()
            .any(|(_, alive)| alive);
        if !alive {
            return None;
        }
        let seg = ctx
            .segments_to_bind()
            .iter()
            .find(|s| s.network_type == NetworkType::Vxlan)?;
        let mut d = Map::new();
        d.insert("port_filter".into(), json!(true));
        d.insert("connectivity".into(), json!("l2"));
        Some(Decision::Bind {
            segment_id: seg.id.clone(),
            vif_type: "vrouter".into(),
            vif_details: d,
        })
    }
}

/// The physical fabric (leaf switches + gateway as an EVPN L2 gateway): for a host
/// reached over a VLAN physnet, binds the network's VXLAN segment and continues
/// with a dynamic VLAN segment on that physnet, which the gateway stitches to the VNI.
pub struct FabricDriver;

impl MechanismDriver for FabricDriver {
    fn name(&self) -> &'static str {
        "fabric"
    }

    fn bind_port(&self, ctx: &mut dyn BindContext) -> Option<Decision> {
        if ctx.level() != 0 {
            return None;
        }
        let seg = ctx
            .segments_to_bind()
            .iter()
            .find(|s| s.network_type == NetworkType::Vxlan)?
            .clone();
        // physnets the host reaches: from its live L2 agents' mappings.
        let mut physnets: Vec<String> = Vec::new();
        for (agent_type, key) in [
            (AGENT_TYPE_OVS, "bridge_mappings"),
            (AGENT_TYPE_SRIOV, "device_mappings"),
        ] {
            for (a, alive) in ctx.host_agents(agent_type) {
                if alive {
                    physnets.extend(mapped_physnets(a, key));
                }
            }
        }
        physnets.sort();
        physnets.dedup();
        let next: Vec<Segment> = physnets
            .iter()
            .filter_map(|p| ctx.allocate_dynamic_vlan(p))
            .collect();
        if next.is_empty() {
            return None;
        }
        Some(Decision::Continue {
            segment_id: seg.id,
            next,
        })
    }
}

/// Neutron's `SimpleAgentMechanismDriverBase.check_segment_for_agent`.
fn segment_ok_for_agent(seg: &Segment, allowed: &[NetworkType], physnets: &[String]) -> bool {
    if !allowed.contains(&seg.network_type) {
        return false;
    }
    match seg.network_type {
        NetworkType::Flat | NetworkType::Vlan => seg
            .physical_network
            .as_ref()
            .is_some_and(|p| physnets.contains(p)),
        _ => true,
    }
}

pub struct OpenvswitchDriver;

impl MechanismDriver for OpenvswitchDriver {
    fn name(&self) -> &'static str {
        "openvswitch"
    }

    fn bind_port(&self, ctx: &mut dyn BindContext) -> Option<Decision> {
        let vnic = ctx.vnic_type();
        let ok_vnic = vnic == VNIC_NORMAL || (vnic == VNIC_DIRECT && has_switchdev(ctx.profile()));
        if !ok_vnic {
            return None;
        }
        for (agent, alive) in ctx.host_agents(AGENT_TYPE_OVS) {
            if !alive {
                // Neutron: "Refusing to bind port … to dead agent".
                continue;
            }
            let mut allowed = vec![NetworkType::Local, NetworkType::Flat, NetworkType::Vlan];
            if let Some(t) = conf(agent, "tunnel_types").and_then(Value::as_array) {
                allowed.extend(
                    t.iter()
                        .filter_map(Value::as_str)
                        .filter_map(NetworkType::parse),
                );
            }
            let physnets = mapped_physnets(agent, "bridge_mappings");
            for seg in ctx.segments_to_bind() {
                if !segment_ok_for_agent(seg, &allowed, &physnets) {
                    continue;
                }
                let mut d = Map::new();
                d.insert("connectivity".into(), json!("l2"));
                // An agent whose firewall is `noop` filters nothing.
                let filters =
                    conf(agent, "firewall_driver").and_then(Value::as_str) != Some("noop");
                d.insert("port_filter".into(), json!(filters));
                d.insert("ovs_hybrid_plug".into(), json!(false));
                let dp = conf(agent, "datapath_type")
                    .and_then(Value::as_str)
                    .unwrap_or("system");
                d.insert("datapath_type".into(), json!(dp));
                let br = conf(agent, "integration_bridge")
                    .and_then(Value::as_str)
                    .unwrap_or("br-int");
                d.insert("bridge_name".into(), json!(br));
                return Some(Decision::Bind {
                    segment_id: seg.id.clone(),
                    vif_type: "ovs".into(),
                    vif_details: d,
                });
            }
        }
        None
    }
}

pub struct SriovDriver;

impl MechanismDriver for SriovDriver {
    fn name(&self) -> &'static str {
        "sriovnicswitch"
    }

    fn bind_port(&self, ctx: &mut dyn BindContext) -> Option<Decision> {
        let vnic = ctx.vnic_type();
        if vnic != VNIC_DIRECT && vnic != VNIC_MACVTAP {
            return None;
        }
        // `direct` with switchdev is OVS hardware offload, left to the OVS driver.
        if vnic == VNIC_DIRECT && has_switchdev(ctx.profile()) {
            return None;
        }
        for (agent, alive) in ctx.host_agents(AGENT_TYPE_SRIOV) {
            if !alive {
                continue;
            }
            let physnets = mapped_physnets(agent, "device_mappings");
            for seg in ctx.segments_to_bind() {
                if !segment_ok_for_agent(seg, &[NetworkType::Flat, NetworkType::Vlan], &physnets) {
                    continue;
                }
                let vlan = match seg.network_type {
                    NetworkType::Vlan => seg.segmentation_id.unwrap_or(0),
                    _ => 0,
                };
                let mut d = Map::new();
                d.insert("connectivity".into(), json!("l2"));
                d.insert("port_filter".into(), json!(false));
                d.insert("vlan".into(), json!(vlan.to_string()));
                d.insert("physical_network".into(), json!(seg.physical_network));
                return Some(Decision::Bind {
                    segment_id: seg.id.clone(),
                    vif_type: "hw_veb".into(),
                    vif_details: d,
                });
            }
        }
        None
    }
}
