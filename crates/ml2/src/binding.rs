//! The hierarchical binding loop (Neutron's `MechanismManager._bind_port_level`).
//!
//! Level 0 offers the network's static segments to the drivers in configured
//! order; a driver that continues the binding makes the loop recurse with the
//! segments it names; a failed lower level is popped and the next driver tried.
//! Dynamic segments allocated along a failed path are released afterwards by
//! [`release_unused_dynamic_segments`], so a binding never leaks VLANs.

use std::collections::HashSet;

use serde_json::{Map, Value, json};
use switchyard_model::{
    Agent, BindingLevel, NetworkType, Port, Segment, State, StdAttrs, Timestamp,
    VIF_TYPE_BINDING_FAILED, new_id,
};

use crate::Ml2;
use crate::mech::{BindContext, Decision};

pub const MAX_BINDING_LEVELS: u32 = 10;

/// Result of binding a port to a host.
#[derive(Debug, Clone, PartialEq)]
pub struct BindOutcome {
    pub vif_type: String,
    pub vif_details: Map<String, Value>,
    pub levels: Vec<BindingLevel>,
}

impl BindOutcome {
    pub fn failed() -> Self {
        BindOutcome {
            vif_type: VIF_TYPE_BINDING_FAILED.into(),
            vif_details: Map::new(),
            levels: Vec::new(),
        }
    }

    pub fn is_bound(&self) -> bool {
        self.vif_type != VIF_TYPE_BINDING_FAILED
    }
}

/// What is being bound.
pub struct BindRequest<'a> {
    pub port: &'a Port,
    pub host: &'a str,
    pub vnic_type: &'a str,
    pub profile: &'a Map<String, Value>,
    pub now: Timestamp,
}

struct Ctx<'a, 'b> {
    ml2: &'a Ml2,
    st: &'a mut State,
    req: &'a BindRequest<'b>,
    level: u32,
    segments: Vec<Segment>,
}

impl BindContext for Ctx<'_, '_> {
    fn host(&self) -> &str {
        self.req.host
    }
    fn vnic_type(&self) -> &str {
        self.req.vnic_type
    }
    fn device_owner(&self) -> &str {
        &self.req.port.device_owner
    }
    fn profile(&self) -> &Map<String, Value> {
        self.req.profile
    }
    fn level(&self) -> u32 {
        self.level
    }
    fn segments_to_bind(&self) -> &[Segment] {
        &self.segments
    }
    fn host_agents(&self, agent_type: &str) -> Vec<(&Agent, bool)> {
        let down = self.ml2.settings.agent_down_time;
        self.st
            .agent_by_type_host(agent_type, self.req.host)
            .filter(|a| a.admin_state_up)
            .map(|a| (a, a.is_alive(self.req.now, down)))
            .into_iter()
            .collect()
    }
    fn allocate_dynamic_vlan(&mut self, physnet: &str) -> Option<Segment> {
        allocate_dynamic_segment(
            self.ml2,
            self.st,
            &self.req.port.network_id,
            NetworkType::Vlan,
            physnet,
            self.req.now,
        )
    }
}

/// Neutron's `allocate_dynamic_segment`: the network's existing dynamic segment
/// of that type on that physnet, or a new one from the project ranges.
pub fn allocate_dynamic_segment(
    ml2: &Ml2,
    st: &mut State,
    network_id: &str,
    network_type: NetworkType,
    physnet: &str,
    now: Timestamp,
) -> Option<Segment> {
    if let Some(s) = st.network_segments(network_id).into_iter().find(|s| {
        s.is_dynamic
            && s.network_type == network_type
            && s.physical_network.as_deref() == Some(physnet)
    }) {
        return Some(s.clone());
    }
    let spec = ml2
        .types
        .driver(network_type)?
        .allocate_on_physnet(&ml2.settings, st, physnet)?;
    let seg = Segment {
        id: new_id(),
        network_id: network_id.to_string(),
        name: None,
        network_type: spec.network_type,
        physical_network: spec.physical_network,
        segmentation_id: spec.segmentation_id,
        is_dynamic: true,
        segment_index: 0,
        std: StdAttrs::new(String::new(), String::new(), Vec::new(), now),
    };
    st.put_segment(seg.clone());
    Some(seg)
}

/// Runs the binding loop for one (port, host). Dynamic segments it allocates are
/// written to `st`; the caller releases unused ones once the port is stored.
pub fn bind_port(ml2: &Ml2, st: &mut State, req: &BindRequest<'_>) -> BindOutcome {
    if req.host.is_empty() {
        return BindOutcome::failed();
    }
    let statics: Vec<Segment> = st
        .network_segments(&req.port.network_id)
        .into_iter()
        .filter(|s| !s.is_dynamic)
        .cloned()
        .collect();
    let mut levels = Vec::new();
    match bind_level(ml2, st, req, 0, statics, &mut levels) {
        Some((vif_type, mut vif_details)) => {
            let bound: Map<String, Value> = levels
                .iter()
                .map(|l: &BindingLevel| (l.level.to_string(), json!(l.driver)))
                .collect();
            vif_details.insert("bound_drivers".into(), Value::Object(bound));
            BindOutcome {
                vif_type,
                vif_details,
                levels,
            }
        }
        None => BindOutcome::failed(),
    }
}

fn bind_level(
    ml2: &Ml2,
    st: &mut State,
    req: &BindRequest<'_>,
    level: u32,
    segments: Vec<Segment>,
    levels: &mut Vec<BindingLevel>,
) -> Option<(String, Map<String, Value>)> {
    if level >= MAX_BINDING_LEVELS || segments.is_empty() {
        return None;
    }
    for driver in &ml2.mech {
        // Binding-loop guard: a driver may not bind again, lower down, a segment it
        // already bound at a higher level.
        let seg_ids: HashSet<&str> = segments.iter().map(|s| s.id.as_str()).collect();
        if levels
            .iter()
            .any(|l| l.driver == driver.name() && seg_ids.contains(l.segment_id.as_str()))
        {
            continue;
        }
        if req.port.fixed_ips.is_empty() && driver.connectivity() != "l2" {
            continue;
        }
        let decision = {
            let mut ctx = Ctx {
                ml2,
                st,
                req,
                level,
                segments: segments.clone(),
            };
            driver.bind_port(&mut ctx)
        };
        match decision {
            None => continue,
            Some(Decision::Bind {
                segment_id,
                vif_type,
                vif_details,
            }) => {
                levels.push(BindingLevel {
                    level,
                    driver: driver.name().into(),
                    segment_id,
                });
                return Some((vif_type, vif_details));
            }
            Some(Decision::Continue { segment_id, next }) => {
                levels.push(BindingLevel {
                    level,
                    driver: driver.name().into(),
                    segment_id,
                });
                if let Some(done) = bind_level(ml2, st, req, level + 1, next, levels) {
                    return Some(done);
                }
                levels.pop();
            }
        }
    }
    None
}

/// Deletes the dynamic segments of a network that no binding level references.
pub fn release_unused_dynamic_segments(st: &mut State, network_id: &str) {
    let unused: Vec<String> = st
        .network_segments(network_id)
        .into_iter()
        .filter(|s| s.is_dynamic && !st.segment_in_use(&s.id))
        .map(|s| s.id.clone())
        .collect();
    for id in unused {
        st.remove(switchyard_model::Kind::Segment, &id);
    }
}
