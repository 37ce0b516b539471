//! The OVS bridge in emulated mode: VLAN-tagged access ports for VMs
//! (`vif_type=ovs`), one trunk uplink to the physnet, MAC learning with ageing,
//! flooding within a VLAN, and port security on access ports. (On Linux the OVS
//! agent drives a real Open vSwitch instead; this pipeline is its stand-in.)

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::fdb::Fdb;
use crate::frames;
use crate::secgroup::{Direction, Firewall, PortFilter, Verdict};
use crate::spoof::PortSecurity;
use crate::wire::vlan;
use crate::{Counters, DropReason, Input, Instant, Output, Pipeline, PortNo};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessPort {
    pub port: PortNo,
    pub vlan: u16,
    pub security: PortSecurity,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Update {
    Trunk {
        port: PortNo,
    },
    Access(AccessPort),
    RemoveAccess {
        port: PortNo,
    },
    /// An access port's security-group filter (`None`: not filtered), as
    /// Neutron's `openvswitch` firewall driver applies it with conntrack.
    Filter {
        port: PortNo,
        filter: Option<PortFilter>,
    },
    /// A remote security group's members' addresses, shared by every
    /// filter naming the group (`None`: no set held, the group's rules
    /// admit no one). Established connections stay whatever it says.
    GroupMembers {
        group: String,
        addrs: Option<Vec<(std::net::IpAddr, u8)>>,
    },
}

#[derive(Debug)]
pub struct OvsBridge {
    version: u64,
    trunk: Option<PortNo>,
    access: HashMap<PortNo, AccessPort>,
    fdb: Fdb,
    firewall: Firewall<PortNo>,
    counters: Counters,
}

impl Default for OvsBridge {
    fn default() -> Self {
        OvsBridge {
            version: 0,
            trunk: None,
            access: HashMap::new(),
            fdb: Fdb::default(),
            firewall: Firewall::new(crate::vrouter::CONNECTIONS),
            counters: Counters::default(),
        }
    }
}

impl OvsBridge {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `port`'s traffic is filtered (introspection).
    pub fn filtered(&self, port: PortNo) -> bool {
        self.firewall.filters(port)
    }

    /// The member set held for remote group `group` (introspection).
    pub fn group_members(&self, group: &str) -> Option<&crate::secgroup::MemberSet> {
        self.firewall.group(group)
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn apply(&mut self, version: u64, updates: &[Update]) {
        for u in updates {
            match u {
                Update::Trunk { port } => self.trunk = Some(*port),
                Update::Access(a) => {
                    self.fdb.flush_port(a.port);
                    self.access.insert(a.port, a.clone());
                }
                Update::RemoveAccess { port } => {
                    self.access.remove(port);
                    self.fdb.flush_port(*port);
                }
                Update::Filter { port, filter } => match filter {
                    Some(f) => self.firewall.set(*port, f.clone()),
                    None => self.firewall.unset(*port),
                },
                Update::GroupMembers { group, addrs } => match addrs {
                    Some(a) => self.firewall.set_group(group, a),
                    None => self.firewall.unset_group(group),
                },
            }
        }
        self.version = version;
    }

    /// Forgets what was learned about `mac` (the controller withdrew it).
    pub fn forget_mac(&mut self, mac: &crate::frames::Mac) {
        self.fdb.flush_mac(mac);
    }

    pub fn fdb(&self) -> &Fdb {
        &self.fdb
    }

    /// The trunk uplink, once configured.
    pub fn trunk(&self) -> Option<PortNo> {
        self.trunk
    }

    /// The access ports, by port, for introspection.
    pub fn access_ports(&self) -> Vec<&AccessPort> {
        let mut v: Vec<&AccessPort> = self.access.values().collect();
        v.sort_by_key(|a| a.port);
        v
    }

    /// The access port on a port, if any.
    pub fn access_port(&self, port: PortNo) -> Option<&AccessPort> {
        self.access.get(&port)
    }

    fn ports_on_vlan(&self, vlan: u16, except: PortNo) -> Vec<PortNo> {
        let mut v: Vec<PortNo> = self
            .access
            .values()
            .filter(|a| a.vlan == vlan && a.port != except)
            .map(|a| a.port)
            .collect();
        v.sort_unstable();
        v
    }

    fn send(&mut self, out: &mut Vec<Output>, port: PortNo, data: Vec<u8>) {
        self.counters.tx += 1;
        out.push(Output::Frame { port, data });
    }

    /// Sends untagged `data` to access port `port` if its filter lets it in.
    fn deliver(&mut self, now: Instant, out: &mut Vec<Output>, port: PortNo, data: Vec<u8>) {
        let v = self
            .firewall
            .check_frame(port, Direction::Ingress, &data, now, &mut self.counters);
        if v == Verdict::Pass {
            self.send(out, port, data);
        }
    }

    fn on_access(&mut self, now: Instant, a: AccessPort, frame: &[u8], out: &mut Vec<Output>) {
        if let Err(why) = a.security.check(frame) {
            self.counters.drop(why);
            return;
        }
        let egress =
            self.firewall
                .check_frame(a.port, Direction::Egress, frame, now, &mut self.counters);
        if egress == Verdict::Drop {
            return;
        }
        let Some((dst, src)) = frames::macs(frame) else {
            self.counters.drop(DropReason::Malformed);
            return;
        };
        if !self.fdb.learn(a.vlan, src, a.port, now) {
            self.counters.not_learned += 1;
        }
        let known = (!frames::is_bum(&dst))
            .then(|| self.fdb.lookup(a.vlan, &dst, now))
            .flatten();
        let tagged = || vlan::push_tag(frame, a.vlan).ok();
        match known {
            Some(p) if Some(p) == self.trunk => {
                if let Some(t) = tagged() {
                    self.send(out, p, t);
                }
            }
            Some(p) if p != a.port => self.deliver(now, out, p, frame.to_vec()),
            Some(_) => {}
            None => {
                for p in self.ports_on_vlan(a.vlan, a.port) {
                    self.deliver(now, out, p, frame.to_vec());
                }
                if let (Some(t), Some(trunk)) = (tagged(), self.trunk) {
                    self.send(out, trunk, t);
                }
            }
        }
    }

    fn on_trunk(&mut self, now: Instant, trunk: PortNo, frame: &[u8], out: &mut Vec<Output>) {
        let vid = match vlan::vlan_of(frame) {
            Ok(Some(v)) => v,
            Ok(None) => {
                self.counters.drop(DropReason::UnknownVlan);
                return;
            }
            Err(_) => {
                self.counters.drop(DropReason::Malformed);
                return;
            }
        };
        let Ok(inner) = vlan::pop_tag(frame) else {
            self.counters.drop(DropReason::Malformed);
            return;
        };
        let Some((dst, src)) = frames::macs(&inner) else {
            self.counters.drop(DropReason::Malformed);
            return;
        };
        if !self.access.values().any(|a| a.vlan == vid) {
            self.counters.drop(DropReason::UnknownVlan);
            return;
        }
        if !self.fdb.learn(vid, src, trunk, now) {
            self.counters.not_learned += 1;
        }
        let known = (!frames::is_bum(&dst))
            .then(|| self.fdb.lookup(vid, &dst, now))
            .flatten();
        match known {
            Some(p) if p != trunk && self.access.get(&p).is_some_and(|a| a.vlan == vid) => {
                self.deliver(now, out, p, inner)
            }
            Some(_) => {}
            None => {
                for p in self.ports_on_vlan(vid, trunk) {
                    self.deliver(now, out, p, inner.clone());
                }
            }
        }
    }
}

impl Pipeline for OvsBridge {
    fn process(&mut self, now: Instant, input: Input<'_>, out: &mut Vec<Output>) {
        self.counters.rx += 1;
        match input {
            Input::Frame { port, data } if Some(port) == self.trunk => {
                self.on_trunk(now, port, data, out)
            }
            Input::Frame { port, data } => match self.access.get(&port).cloned() {
                Some(a) => match frames::from_access_port(data) {
                    Ok(f) => self.on_access(now, a, &f, out),
                    Err(why) => self.counters.drop(why),
                },
                None => self.counters.drop(DropReason::UnknownPort),
            },
            Input::Underlay { .. } => self.counters.drop(DropReason::UnknownPort),
        }
    }

    fn poll(&mut self, now: Instant, _out: &mut Vec<Output>) -> Option<Instant> {
        let fdb = self.fdb.expire(now);
        let ct = self.firewall.expire(now);
        match (fdb, ct) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn counters(&self) -> &Counters {
        &self.counters
    }
}
