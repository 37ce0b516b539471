//! Type drivers: validate provider segments, reserve segmentation ids, allocate
//! project and dynamic segments (Neutron's `type_flat`, `type_vlan`, `type_vxlan`).
//!
//! Allocation state is not kept here: a segmentation id is taken exactly when a
//! [`Segment`] record holding it exists, and [`State`] indexes those, so rolling
//! back a transaction also releases what it allocated.

use switchyard_model::{NetworkType, NeutronError, Result, SegKey, Segment, State};

use crate::config::{MAX_VLAN, MAX_VNI, Settings, VXLAN_OVERHEAD};

/// The provider attributes of one segment as requested or as allocated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentSpec {
    pub network_type: NetworkType,
    pub physical_network: Option<String>,
    pub segmentation_id: Option<u32>,
}

pub trait TypeDriver: Send + Sync {
    fn network_type(&self) -> NetworkType;
    /// Checks a provider segment as given by the user.
    fn validate_provider_segment(&self, s: &Settings, seg: &SegmentSpec) -> Result<()>;
    /// Takes the exact id asked for, or picks a free one when only the type (and
    /// physnet) is given. The caller creates the segment record that holds it.
    fn reserve_provider_segment(
        &self,
        s: &Settings,
        st: &State,
        seg: &SegmentSpec,
    ) -> Result<SegmentSpec>;
    /// A free segment from the project ranges, or `None` when exhausted.
    fn allocate_project_segment(&self, s: &Settings, st: &State) -> Option<SegmentSpec>;
    /// A free segment on a given physnet, for dynamic segments.
    fn allocate_on_physnet(&self, s: &Settings, st: &State, physnet: &str) -> Option<SegmentSpec> {
        let _ = (s, st, physnet);
        None
    }
    fn mtu(&self, s: &Settings) -> u32;
}

/// `NoNetworkAvailable` (a ResourceExhausted, so 503).
pub fn no_network_available() -> NeutronError {
    NeutronError::new(
        503,
        "NoNetworkAvailable",
        "Unable to create the network. No project network is available for allocation.",
    )
}

fn bad(msg: String) -> NeutronError {
    NeutronError::invalid_input(msg)
}

pub struct FlatDriver;

impl TypeDriver for FlatDriver {
    fn network_type(&self) -> NetworkType {
        NetworkType::Flat
    }

    fn validate_provider_segment(&self, s: &Settings, seg: &SegmentSpec) -> Result<()> {
        let Some(p) = seg.physical_network.as_deref() else {
            return Err(bad(
                "physical_network required for flat provider network".into()
            ));
        };
        if let Some(allowed) = &s.flat_networks
            && !allowed.iter().any(|a| a == p)
        {
            return Err(bad(format!(
                "physical_network '{p}' unknown for flat provider network"
            )));
        }
        if seg.segmentation_id.is_some() {
            return Err(bad(
                "segmentation_id prohibited for flat provider network".into()
            ));
        }
        Ok(())
    }

    fn reserve_provider_segment(
        &self,
        _s: &Settings,
        st: &State,
        seg: &SegmentSpec,
    ) -> Result<SegmentSpec> {
        let p = seg.physical_network.as_deref().unwrap_or_default();
        if st.segment_holder(SegKey::Flat(p)).is_some() {
            return Err(NeutronError::conflict(
                "FlatNetworkInUse",
                format!("Unable to create the flat network. Physical network {p} is in use."),
            ));
        }
        Ok(seg.clone())
    }

    fn allocate_project_segment(&self, _s: &Settings, _st: &State) -> Option<SegmentSpec> {
        // Flat networks are provider-only, as in Neutron.
        None
    }

    fn mtu(&self, s: &Settings) -> u32 {
        s.global_physnet_mtu
    }
}

pub struct VlanDriver;

impl VlanDriver {
    fn first_free(st: &State, physnet: &str, ranges: &[(u32, u32)]) -> Option<u32> {
        ranges.iter().find_map(|&(lo, hi)| {
            (lo..=hi).find(|v| st.segment_holder(SegKey::Vlan(physnet, *v)).is_none())
        })
    }
}

impl TypeDriver for VlanDriver {
    fn network_type(&self) -> NetworkType {
        NetworkType::Vlan
    }

    fn validate_provider_segment(&self, s: &Settings, seg: &SegmentSpec) -> Result<()> {
        match seg.physical_network.as_deref() {
            Some(p) => {
                if !s.vlan_ranges.contains_key(p) {
                    return Err(bad(format!(
                        "physical_network '{p}' unknown for VLAN provider network"
                    )));
                }
            }
            None => {
                if seg.segmentation_id.is_some() {
                    return Err(bad(
                        "segmentation_id requires physical_network for VLAN provider network"
                            .into(),
                    ));
                }
            }
        }
        if let Some(v) = seg.segmentation_id
            && !(1..=MAX_VLAN).contains(&v)
        {
            return Err(bad(format!(
                "segmentation_id out of range (1 through {MAX_VLAN})"
            )));
        }
        Ok(())
    }

    fn reserve_provider_segment(
        &self,
        s: &Settings,
        st: &State,
        seg: &SegmentSpec,
    ) -> Result<SegmentSpec> {
        match (seg.physical_network.as_deref(), seg.segmentation_id) {
            (Some(p), Some(v)) => {
                if st.segment_holder(SegKey::Vlan(p, v)).is_some() {
                    return Err(NeutronError::conflict(
                        "VlanIdInUse",
                        format!(
                            "Unable to create the network. The VLAN {v} on physical network {p} is in use."
                        ),
                    ));
                }
                Ok(seg.clone())
            }
            (Some(p), None) => {
                let ranges = s.vlan_ranges.get(p).cloned().unwrap_or_default();
                let v = Self::first_free(st, p, &ranges).ok_or_else(no_network_available)?;
                Ok(SegmentSpec {
                    segmentation_id: Some(v),
                    ..seg.clone()
                })
            }
            (None, _) => self
                .allocate_project_segment(s, st)
                .ok_or_else(no_network_available),
        }
    }

    fn allocate_project_segment(&self, s: &Settings, st: &State) -> Option<SegmentSpec> {
        s.vlan_ranges.iter().find_map(|(p, ranges)| {
            Self::first_free(st, p, ranges).map(|v| SegmentSpec {
                network_type: NetworkType::Vlan,
                physical_network: Some(p.clone()),
                segmentation_id: Some(v),
            })
        })
    }

    fn allocate_on_physnet(&self, s: &Settings, st: &State, physnet: &str) -> Option<SegmentSpec> {
        let ranges = s.vlan_ranges.get(physnet)?;
        Self::first_free(st, physnet, ranges).map(|v| SegmentSpec {
            network_type: NetworkType::Vlan,
            physical_network: Some(physnet.to_string()),
            segmentation_id: Some(v),
        })
    }

    fn mtu(&self, s: &Settings) -> u32 {
        s.global_physnet_mtu
    }
}

pub struct VxlanDriver;

impl TypeDriver for VxlanDriver {
    fn network_type(&self) -> NetworkType {
        NetworkType::Vxlan
    }

    fn validate_provider_segment(&self, _s: &Settings, seg: &SegmentSpec) -> Result<()> {
        if seg.physical_network.is_some() {
            return Err(bad(
                "provider:physical_network specified for vxlan network".into()
            ));
        }
        if let Some(v) = seg.segmentation_id
            && !(1..=MAX_VNI).contains(&v)
        {
            return Err(bad(format!(
                "segmentation_id out of range (1 through {MAX_VNI})"
            )));
        }
        Ok(())
    }

    fn reserve_provider_segment(
        &self,
        s: &Settings,
        st: &State,
        seg: &SegmentSpec,
    ) -> Result<SegmentSpec> {
        match seg.segmentation_id {
            Some(v) => {
                if st
                    .segment_holder(SegKey::Tunnel(NetworkType::Vxlan, v))
                    .is_some()
                {
                    return Err(NeutronError::conflict(
                        "TunnelIdInUse",
                        format!("Unable to create the network. The tunnel ID {v} is in use."),
                    ));
                }
                Ok(seg.clone())
            }
            None => self
                .allocate_project_segment(s, st)
                .ok_or_else(no_network_available),
        }
    }

    fn allocate_project_segment(&self, s: &Settings, st: &State) -> Option<SegmentSpec> {
        s.vni_ranges.iter().find_map(|&(lo, hi)| {
            (lo..=hi)
                .find(|v| {
                    st.segment_holder(SegKey::Tunnel(NetworkType::Vxlan, *v))
                        .is_none()
                })
                .map(|v| SegmentSpec {
                    network_type: NetworkType::Vxlan,
                    physical_network: None,
                    segmentation_id: Some(v),
                })
        })
    }

    fn mtu(&self, s: &Settings) -> u32 {
        s.global_physnet_mtu.saturating_sub(VXLAN_OVERHEAD)
    }
}

/// The configured type drivers, looked up by network type.
pub struct TypeManager {
    drivers: Vec<Box<dyn TypeDriver>>,
}

impl TypeManager {
    pub fn new(s: &Settings) -> Self {
        let drivers = s
            .type_drivers
            .iter()
            .filter_map(|t| -> Option<Box<dyn TypeDriver>> {
                match t {
                    NetworkType::Flat => Some(Box::new(FlatDriver)),
                    NetworkType::Vlan => Some(Box::new(VlanDriver)),
                    NetworkType::Vxlan => Some(Box::new(VxlanDriver)),
                    _ => None,
                }
            })
            .collect();
        TypeManager { drivers }
    }

    pub fn driver(&self, t: NetworkType) -> Option<&dyn TypeDriver> {
        self.drivers
            .iter()
            .find(|d| d.network_type() == t)
            .map(|d| d.as_ref())
    }

    pub fn driver_or_400(&self, t: NetworkType) -> Result<&dyn TypeDriver> {
        self.driver(t).ok_or_else(|| {
            NeutronError::invalid_input(format!("network_type value '{t}' not supported"))
        })
    }

    /// MTU of a network from its static segments: the smallest of them.
    pub fn network_mtu(&self, s: &Settings, segs: &[SegmentSpec]) -> u32 {
        segs.iter()
            .filter_map(|g| self.driver(g.network_type).map(|d| d.mtu(s)))
            .min()
            .unwrap_or(s.global_physnet_mtu)
    }

    /// A project segment from the first type in `project_network_types` that has one free.
    pub fn allocate_project_segment(&self, s: &Settings, st: &State) -> Result<SegmentSpec> {
        s.project_network_types
            .iter()
            .filter_map(|t| self.driver(*t))
            .find_map(|d| d.allocate_project_segment(s, st))
            .ok_or_else(no_network_available)
    }
}

/// The provider spec of a stored segment.
pub fn spec_of(s: &Segment) -> SegmentSpec {
    SegmentSpec {
        network_type: s.network_type,
        physical_network: s.physical_network.clone(),
        segmentation_id: s.segmentation_id,
    }
}
