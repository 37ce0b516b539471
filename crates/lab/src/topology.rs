//! Topology files: which nodes exist, their roles and addresses, and which
//! ports are linked. The default is the reference lab of DESIGN.md.
//!
//! ```toml
//! [[nodes]]
//! name = "compute-2"
//! role = "vrouter"          # ovs | sriov | vrouter | fabric | gateway | internet
//! underlay = "192.0.2.12"
//!
//! [[links]]
//! a = "compute-1:1"
//! b = "fabric:1"
//! ```

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use switchyard_dataplane::PortNo;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Ovs,
    Sriov,
    Vrouter,
    Fabric,
    Gateway,
    Internet,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    pub name: String,
    pub role: Role,
    /// VTEP address (vrouter, gateway).
    #[serde(default)]
    pub underlay: Option<Ipv4Addr>,
    /// Port of the physnet trunk (ovs, sriov uplink, gateway).
    #[serde(default)]
    pub trunk_port: Option<PortNo>,
    /// Physical network the trunk carries.
    #[serde(default)]
    pub physnet: Option<String>,
    /// External port and address (gateway), or own address (internet).
    #[serde(default)]
    pub external_port: Option<PortNo>,
    #[serde(default)]
    pub external_ip: Option<Ipv4Addr>,
    #[serde(default)]
    pub external_prefix_len: Option<u8>,
    /// Upstream next hop (gateway).
    #[serde(default)]
    pub next_hop: Option<Ipv4Addr>,
    /// Hosts behind the internet node, "A.B.C.D/N".
    #[serde(default)]
    pub hosts: Option<String>,
    /// Number of VFs (sriov).
    #[serde(default)]
    pub vfs: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkSpec {
    pub a: String,
    pub b: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    pub nodes: Vec<NodeSpec>,
    #[serde(default)]
    pub links: Vec<LinkSpec>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TopologyError {
    #[error("topology file: {0}")]
    Parse(String),
    #[error("node name '{0}' is used twice")]
    DuplicateNode(String),
    #[error("link end '{0}' must be NODE:PORT with a known node")]
    BadEnd(String),
    #[error("port {0} is linked twice")]
    PortTwice(String),
    #[error("node '{0}' ({1:?}) needs '{2}'")]
    Missing(String, Role, &'static str),
    #[error("underlay address {0} is used twice")]
    DuplicateUnderlay(Ipv4Addr),
}

/// The reference lab's fabric as a TOML document (DESIGN.md, "The reference lab").
pub const REFERENCE: &str = r#"
[[nodes]]
name = "compute-1"
role = "ovs"
trunk_port = 1
physnet = "physnet1"

[[nodes]]
name = "compute-2"
role = "vrouter"
underlay = "192.0.2.12"

[[nodes]]
name = "compute-3"
role = "sriov"
trunk_port = 1
physnet = "physnet1"
vfs = 8

[[nodes]]
name = "compute-4"
role = "vrouter"
underlay = "192.0.2.14"

[[nodes]]
name = "fabric"
role = "fabric"

[[nodes]]
name = "gateway"
role = "gateway"
underlay = "192.0.2.1"
trunk_port = 1
physnet = "physnet1"
external_port = 2
external_ip = "203.0.113.2"
external_prefix_len = 24
next_hop = "203.0.113.1"

[[nodes]]
name = "internet"
role = "internet"
external_port = 1
external_ip = "203.0.113.1"
external_prefix_len = 24
hosts = "198.51.100.0/24"

[[links]]
a = "compute-1:1"
b = "fabric:1"

[[links]]
a = "compute-3:1"
b = "fabric:3"

[[links]]
a = "gateway:1"
b = "fabric:10"

[[links]]
a = "gateway:2"
b = "internet:1"
"#;

/// Splits `NODE:PORT`.
pub fn parse_end(s: &str) -> Option<(&str, PortNo)> {
    let (n, p) = s.rsplit_once(':')?;
    Some((n, p.parse().ok()?))
}

/// `A.B.C.D/N`.
pub fn parse_prefix(s: &str) -> Option<(Ipv4Addr, u8)> {
    let (a, l) = s.split_once('/')?;
    let l: u8 = l.parse().ok()?;
    (l <= 32).then_some((a.parse().ok()?, l))
}

impl Topology {
    /// The reference lab ([`REFERENCE`], checked by a unit test).
    pub fn reference() -> Result<Self, TopologyError> {
        Self::from_toml(REFERENCE)
    }

    /// Parses and checks a topology file.
    pub fn from_toml(text: &str) -> Result<Self, TopologyError> {
        let t: Topology = toml::from_str(text).map_err(|e| TopologyError::Parse(e.to_string()))?;
        t.check()?;
        Ok(t)
    }

    pub fn check(&self) -> Result<(), TopologyError> {
        let mut names = BTreeSet::new();
        let mut underlays = BTreeSet::new();
        for n in &self.nodes {
            if !names.insert(n.name.as_str()) {
                return Err(TopologyError::DuplicateNode(n.name.clone()));
            }
            let need = |cond: bool, what: &'static str| {
                if cond {
                    Ok(())
                } else {
                    Err(TopologyError::Missing(n.name.clone(), n.role, what))
                }
            };
            match n.role {
                Role::Vrouter => need(n.underlay.is_some(), "underlay")?,
                Role::Ovs | Role::Sriov => need(n.trunk_port.is_some(), "trunk_port")?,
                Role::Gateway => {
                    need(n.underlay.is_some(), "underlay")?;
                    need(n.trunk_port.is_some(), "trunk_port")?;
                    need(n.external_port.is_some(), "external_port")?;
                    need(n.external_ip.is_some(), "external_ip")?;
                    need(n.next_hop.is_some(), "next_hop")?;
                }
                Role::Internet => {
                    need(n.external_ip.is_some(), "external_ip")?;
                    need(n.hosts.as_deref().and_then(parse_prefix).is_some(), "hosts")?;
                }
                Role::Fabric => {}
            }
            if let Some(u) = n.underlay
                && !underlays.insert(u)
            {
                return Err(TopologyError::DuplicateUnderlay(u));
            }
        }
        let mut ends = BTreeSet::new();
        for l in &self.links {
            for e in [&l.a, &l.b] {
                match parse_end(e) {
                    Some((n, _)) if names.contains(n) => {}
                    _ => return Err(TopologyError::BadEnd(e.clone())),
                }
                if !ends.insert(e.as_str()) {
                    return Err(TopologyError::PortTwice(e.clone()));
                }
            }
        }
        Ok(())
    }

    pub fn node(&self, name: &str) -> Option<&NodeSpec> {
        self.nodes.iter().find(|n| n.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_parses_and_matches_design() {
        let t = Topology::reference().expect("reference topology");
        assert_eq!(t.nodes.len(), 7);
        assert_eq!(
            t.node("compute-2").and_then(|n| n.underlay),
            Some(Ipv4Addr::new(192, 0, 2, 12))
        );
        assert_eq!(
            t.node("gateway").and_then(|n| n.external_ip),
            Some(Ipv4Addr::new(203, 0, 113, 2))
        );
    }

    #[test]
    fn bad_topologies_are_refused() {
        assert!(matches!(
            Topology::from_toml("nodes = 3"),
            Err(TopologyError::Parse(_))
        ));
        let dup = "[[nodes]]\nname='a'\nrole='fabric'\n[[nodes]]\nname='a'\nrole='fabric'\n";
        assert_eq!(
            Topology::from_toml(dup),
            Err(TopologyError::DuplicateNode("a".into()))
        );
        let bad_link = "[[nodes]]\nname='a'\nrole='fabric'\n[[links]]\na='a:1'\nb='b:1'\n";
        assert_eq!(
            Topology::from_toml(bad_link),
            Err(TopologyError::BadEnd("b:1".into()))
        );
        let twice = "[[nodes]]\nname='a'\nrole='fabric'\n[[links]]\na='a:1'\nb='a:2'\n[[links]]\na='a:1'\nb='a:3'\n";
        assert_eq!(
            Topology::from_toml(twice),
            Err(TopologyError::PortTwice("a:1".into()))
        );
        let vr = "[[nodes]]\nname='v'\nrole='vrouter'\n";
        assert!(matches!(
            Topology::from_toml(vr),
            Err(TopologyError::Missing(..))
        ));
        assert!(matches!(
            Topology::from_toml("[[nodes]]\nname='v'\nrole='router'\n"),
            Err(TopologyError::Parse(_))
        ));
    }
}
