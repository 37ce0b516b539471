//! What the compiler needs to know about a port and a node, read from the model.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use switchyard_model::{Agent, NetworkType, Port, PortBinding, State};
use switchyard_proto::{Attachment, Lease, Pair, Role};

/// DHCP lease time the controller hands out (Neutron's default `dhcp_lease_duration`).
pub const LEASE_SECS: u32 = 86_400;

/// Which side of the fabric a bound port sits on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Side {
    /// On a vRouter, in the network's VRF.
    Overlay,
    /// On a VLAN of a physnet (OVS or SR-IOV), stitched to the VNI by the gateway.
    Vlan { physnet: String, vlan: u16 },
}

/// A bound port, as the data plane needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortFacts {
    pub port_id: String,
    pub host: String,
    pub mac: String,
    pub ips: Vec<Ipv4Addr>,
    pub pairs: Vec<Pair>,
    pub port_security: bool,
    pub admin_up: bool,
    /// The network's VXLAN segment, if it has one.
    pub vni: Option<u32>,
    pub side: Side,
    pub attachment: Attachment,
    pub lease: Option<Lease>,
}

/// A node, from its agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFacts {
    pub host: String,
    pub role: Role,
    pub vtep: Option<Ipv4Addr>,
}

pub fn node_facts(a: &Agent) -> Option<NodeFacts> {
    let role = Role::from_agent_type(&a.agent_type)?;
    let vtep = a
        .configurations
        .get("tunneling_ip")
        .and_then(|v| v.as_str())
        .and_then(|s| s.parse().ok());
    Some(NodeFacts {
        host: a.host.clone(),
        role,
        vtep,
    })
}

/// Whether `b` is in `a`'s /`len` prefix.
pub fn same_prefix(a: Ipv4Addr, b: Ipv4Addr, len: u8) -> bool {
    let mask = if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len.min(32)))
    };
    u32::from(a) & mask == u32::from(b) & mask
}

pub fn v4_of(ip: &IpAddr) -> Option<Ipv4Addr> {
    v4(ip)
}

fn v4(ip: &IpAddr) -> Option<Ipv4Addr> {
    match ip {
        IpAddr::V4(a) => Some(*a),
        IpAddr::V6(_) => None,
    }
}

/// The facts of a port whose ACTIVE binding succeeded; `None` for anything the
/// data plane has nothing to do with (unbound, failed, unknown segments).
pub fn port_facts(st: &State, p: &Port) -> Option<PortFacts> {
    binding_facts(st, p, p.active_binding())
}

/// The facts of a port as one of its bindings (active or not) would place it.
pub fn binding_facts(st: &State, p: &Port, b: &PortBinding) -> Option<PortFacts> {
    if b.host.is_empty() || !b.is_bound() {
        return None;
    }
    let seg = |level: u32| {
        b.levels
            .iter()
            .find(|l| l.level == level)
            .and_then(|l| st.segments.get(&l.segment_id))
    };
    let top = seg(0)?;
    let vni = st
        .network_segments(&p.network_id)
        .into_iter()
        .find(|s| !s.is_dynamic && s.network_type == NetworkType::Vxlan)
        .and_then(|s| s.segmentation_id);
    // The VLAN a VLAN-side port sits on: the level that bound a VLAN segment.
    let vlan_seg = b
        .levels
        .iter()
        .filter_map(|l| st.segments.get(&l.segment_id))
        .find(|s| s.network_type == NetworkType::Vlan);
    let (side, attachment) = match b.vif_type.as_str() {
        "vrouter" => (
            Side::Overlay,
            Attachment::Vrouter {
                vni: top.segmentation_id?,
            },
        ),
        "ovs" | "hw_veb" => {
            let s = vlan_seg?;
            let physnet = s.physical_network.clone()?;
            let vlan = u16::try_from(s.segmentation_id?).ok()?;
            let att = if b.vif_type == "ovs" {
                Attachment::Ovs {
                    vlan,
                    physnet: physnet.clone(),
                }
            } else {
                Attachment::HwVeb {
                    vlan,
                    physnet: physnet.clone(),
                }
            };
            (Side::Vlan { physnet, vlan }, att)
        }
        // A router interface on the gateway node the router is placed on.
        "other" if p.device_owner == switchyard_model::OWNER_ROUTER_INTERFACE => {
            let prefix_len = p
                .fixed_ips
                .iter()
                .find(|f| f.ip_address.is_ipv4())
                .and_then(|f| st.subnets.get(&f.subnet_id))
                .map(|s| s.cidr.prefix_len())?;
            (
                Side::Overlay,
                Attachment::Router {
                    vni: top.segmentation_id?,
                    router: p.device_id.clone(),
                    prefix_len,
                },
            )
        }
        _ => return None,
    };
    let ips: Vec<Ipv4Addr> = p
        .fixed_ips
        .iter()
        .filter_map(|f| v4(&f.ip_address))
        .collect();
    let lease = lease_for(st, p);
    let pairs = p
        .allowed_address_pairs
        .iter()
        .filter_map(|a| {
            let (ip, len) = match a.ip_address.parse::<IpNet>() {
                Ok(IpNet::V4(n)) => (n.network(), n.prefix_len()),
                Ok(IpNet::V6(_)) => return None,
                Err(_) => (a.ip_address.parse().ok()?, 32),
            };
            Some(Pair {
                ip,
                prefix_len: len,
                mac: a.mac_address.to_string(),
            })
        })
        .collect();
    Some(PortFacts {
        port_id: p.id.clone(),
        host: b.host.clone(),
        mac: p.mac_address.to_string(),
        ips,
        pairs,
        port_security: p.port_security_enabled,
        admin_up: p.admin_state_up,
        vni,
        side,
        attachment,
        lease,
    })
}

/// The DHCP answer for a port's first IPv4 address on a DHCP-enabled subnet.
fn lease_for(st: &State, p: &Port) -> Option<Lease> {
    let (subnet, ip) = p.fixed_ips.iter().find_map(|f| {
        let s = st.subnets.get(&f.subnet_id)?;
        (s.enable_dhcp && s.ip_version == 4).then_some((s, v4(&f.ip_address)?))
    })?;
    let mtu = st.networks.get(&p.network_id).map_or(1500, |n| n.mtu);
    let router = subnet.gateway_ip.as_ref().and_then(v4);
    let server = router.or_else(|| subnet.allocation_pools.first().and_then(|r| v4(&r.start)))?;
    Some(Lease {
        ip,
        prefix_len: subnet.cidr.prefix_len(),
        router,
        dns: subnet.dns_nameservers.iter().filter_map(v4).collect(),
        routes: subnet
            .host_routes
            .iter()
            .filter_map(|r| match (r.destination, v4(&r.nexthop)) {
                (IpNet::V4(d), Some(n)) => Some((d.network(), d.prefix_len(), n)),
                _ => None,
            })
            .collect(),
        mtu: u16::try_from(mtu).unwrap_or(u16::MAX),
        lease_secs: LEASE_SECS,
        server,
    })
}
