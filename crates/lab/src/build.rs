//! Building a [`Lab`] from a [`Topology`]: one node per entry with its pipeline
//! wired to its trunk or uplink, and the links between them. Forwarding state
//! (networks, ports, routes) is applied afterwards, by tests or by agents.

use std::net::Ipv4Addr;

use switchyard_dataplane::fabric::{self, FabricSwitch};
use switchyard_dataplane::gateway::{self, External, Gateway};
use switchyard_dataplane::ovs::{self, OvsBridge};
use switchyard_dataplane::sriov::{self, SriovNic};
use switchyard_dataplane::vrouter::Vrouter;

use crate::internet::Internet;
use crate::lab::{Element, Lab, LabError, node_mac};
use crate::topology::{Role, Topology, parse_end, parse_prefix};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BuildError {
    #[error(transparent)]
    Lab(#[from] LabError),
    #[error("node {0}: {1}")]
    Node(String, String),
}

/// The first VF's port number on an SR-IOV node (VF n is `VF_BASE + n`).
pub const VF_BASE: u32 = 100;

/// Builds the lab's nodes and links.
pub fn build(t: &Topology) -> Result<Lab, BuildError> {
    build_with(t, |_, _| None)
}

/// As [`build`], letting `custom` supply a node's element (an agent, say).
pub fn build_with(
    t: &Topology,
    mut custom: impl FnMut(&crate::topology::NodeSpec, usize) -> Option<Element>,
) -> Result<Lab, BuildError> {
    t.check()
        .map_err(|e| BuildError::Node("topology".into(), e.to_string()))?;
    let mut lab = Lab::new();
    for (i, n) in t.nodes.iter().enumerate() {
        let bad = |m: &str| BuildError::Node(n.name.clone(), m.to_string());
        if let Some(e) = custom(n, i) {
            lab.add_node(&n.name, e, n.underlay)?;
            continue;
        }
        let element = match n.role {
            Role::Vrouter => Element::Vrouter(Vrouter::new(node_mac(i))),
            Role::Ovs => {
                let mut b = OvsBridge::new();
                let port = n.trunk_port.ok_or_else(|| bad("trunk_port"))?;
                b.apply(0, &[ovs::Update::Trunk { port }]);
                Element::Ovs(b)
            }
            Role::Sriov => {
                let mut s = SriovNic::new();
                let port = n.trunk_port.ok_or_else(|| bad("trunk_port"))?;
                s.apply(0, &[sriov::Update::Uplink { port }]);
                Element::Sriov(s)
            }
            Role::Fabric => {
                let mut f = FabricSwitch::new();
                let name = format!("{}:", n.name);
                let trunks: Vec<fabric::Update> = t
                    .links
                    .iter()
                    .flat_map(|l| [&l.a, &l.b])
                    .filter(|e| e.starts_with(&name))
                    .filter_map(|e| parse_end(e))
                    .map(|(_, port)| fabric::Update::Trunk { port, vlans: None })
                    .collect();
                f.apply(&trunks);
                Element::Fabric(f)
            }
            Role::Internet => {
                let ip: Ipv4Addr = n.external_ip.ok_or_else(|| bad("external_ip"))?;
                let hosts = n
                    .hosts
                    .as_deref()
                    .and_then(parse_prefix)
                    .ok_or_else(|| bad("hosts"))?;
                let mut inet = Internet::new(node_mac(i), ip, hosts);
                inet.port = n.external_port.unwrap_or(1);
                Element::Internet(inet)
            }
            Role::Gateway => {
                let trunk = n.trunk_port.ok_or_else(|| bad("trunk_port"))?;
                let vtep = n.underlay.ok_or_else(|| bad("underlay"))?;
                let mut g = Gateway::new(trunk, vtep, node_mac(i));
                let ext = External {
                    port: n.external_port.ok_or_else(|| bad("external_port"))?,
                    ip: n.external_ip.ok_or_else(|| bad("external_ip"))?,
                    prefix_len: n.external_prefix_len.unwrap_or(24),
                    mac: node_mac(i),
                    next_hop: n.next_hop.ok_or_else(|| bad("next_hop"))?,
                };
                g.apply(1, &[gateway::Update::External(ext)])
                    .map_err(|e| bad(&e.to_string()))?;
                Element::Gateway(Box::new(g))
            }
        };
        lab.add_node(&n.name, element, n.underlay)?;
    }
    for l in &t.links {
        let (Some((a, pa)), Some((b, pb))) = (parse_end(&l.a), parse_end(&l.b)) else {
            return Err(BuildError::Node(l.a.clone(), "bad link".into()));
        };
        lab.link(a, pa, b, pb)?;
    }
    Ok(lab)
}
