//! The vRouter: a Tungsten-Fabric-style virtual router on a compute node.
//!
//! One VRF per network, keyed by VNI, holds a bridge table (MAC → local port or
//! remote VTEP), an IP → MAC table for proxy ARP and the VTEP flood list.
//! Local interfaces are VM ports with port security and a DHCP lease that the
//! vRouter answers itself. Remote entries (the EVPN type-2 equivalent) and flood
//! lists come from the controller; the vRouter does not learn from the data plane.

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use smoltcp::wire::{ArpOperation, ArpPacket, ArpRepr, EthernetFrame, EthernetProtocol};

use crate::dhcp::{self, Lease};
use crate::frames::{self, Mac};
use crate::secgroup::{Direction, Firewall, PortFilter, Verdict};
use crate::spoof::PortSecurity;
use crate::wire::vxlan;
use crate::{Counters, DropReason, Input, Instant, Output, Pipeline, PortNo};

/// A VM interface plugged into the vRouter (`vif_type=vrouter`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub port: PortNo,
    pub vni: u32,
    pub security: PortSecurity,
    pub dhcp: Option<Lease>,
}

/// A MAC (with its IPs) behind another VTEP: the EVPN type-2 route equivalent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteMac {
    pub vni: u32,
    #[serde(with = "crate::frames::mac_serde")]
    pub mac: Mac,
    pub ips: Vec<Ipv4Addr>,
    pub vtep: Ipv4Addr,
}

/// Configuration changes, applied in order under one version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Update {
    /// Creates or replaces a network (VRF) and its VTEP flood list.
    Network {
        vni: u32,
        flood: Vec<Ipv4Addr>,
    },
    RemoveNetwork {
        vni: u32,
    },
    Interface(Interface),
    RemoveInterface {
        port: PortNo,
    },
    Remote(RemoteMac),
    RemoveRemote {
        vni: u32,
        #[serde(with = "crate::frames::mac_serde")]
        mac: Mac,
    },
    /// Filters an interface's traffic by its security groups (`None`: not
    /// filtered, e.g. port security off); its tracked connections stay
    /// while it is filtered.
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

/// Connections tracked for all of a vRouter's filtered interfaces.
pub const CONNECTIONS: usize = 262_144;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dest {
    Local(PortNo),
    Remote(Ipv4Addr),
}

/// One network's tables. Local interfaces and remote routes are kept apart and
/// combined at lookup (local first), so a MAC moving in or out of this node is
/// right whatever order the controller's updates come in.
#[derive(Debug, Default)]
struct Vrf {
    flood: Vec<Ipv4Addr>,
    local: BTreeSet<PortNo>,
    local_macs: HashMap<Mac, PortNo>,
    local_arp: HashMap<Ipv4Addr, Mac>,
    remotes: HashMap<Mac, RemoteMac>,
    remote_arp: HashMap<Ipv4Addr, Mac>,
}

impl Vrf {
    fn bridge(&self, mac: &Mac) -> Option<Dest> {
        self.local_macs
            .get(mac)
            .map(|p| Dest::Local(*p))
            .or_else(|| self.remotes.get(mac).map(|r| Dest::Remote(r.vtep)))
    }

    fn arp(&self, ip: &Ipv4Addr) -> Option<Mac> {
        self.local_arp
            .get(ip)
            .or_else(|| self.remote_arp.get(ip))
            .copied()
    }

    fn add_remote(&mut self, r: &RemoteMac) {
        self.remove_remote(&r.mac);
        for ip in &r.ips {
            self.remote_arp.insert(*ip, r.mac);
        }
        self.remotes.insert(r.mac, r.clone());
    }

    fn remove_remote(&mut self, mac: &Mac) {
        if let Some(old) = self.remotes.remove(mac) {
            for ip in old.ips {
                if self.remote_arp.get(&ip) == Some(mac) {
                    self.remote_arp.remove(&ip);
                }
            }
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("an update names VNI {0}, which has no network")]
    NoNetwork(u32),
    #[error("version {got} is not newer than the applied version {have}")]
    StaleVersion { have: u64, got: u64 },
}

#[derive(Debug)]
pub struct Vrouter {
    /// The vRouter's own MAC, source of its DHCP answers.
    mac: Mac,
    version: u64,
    ifaces: HashMap<PortNo, Interface>,
    vrfs: HashMap<u32, Vrf>,
    firewall: Firewall<PortNo>,
    counters: Counters,
}

impl Vrouter {
    pub fn new(mac: Mac) -> Self {
        Vrouter {
            mac,
            version: 0,
            ifaces: HashMap::new(),
            vrfs: HashMap::new(),
            firewall: Firewall::new(CONNECTIONS),
            counters: Counters::default(),
        }
    }

    /// Whether `port`'s traffic is filtered, and how many connections are
    /// tracked (introspection).
    pub fn filtered(&self, port: PortNo) -> bool {
        self.firewall.filters(port)
    }

    /// The member set held for remote group `group` (introspection).
    pub fn group_members(&self, group: &str) -> Option<&crate::secgroup::MemberSet> {
        self.firewall.group(group)
    }

    pub fn connections(&self) -> usize {
        self.firewall.connections()
    }

    /// The verdict on a frame at `port` going `dir` (non-IP frames are not
    /// the filter's: anti-spoofing and proxy ARP have them).
    fn filter(&mut self, port: PortNo, dir: Direction, frame: &[u8], now: Instant) -> Verdict {
        self.firewall
            .check_frame(port, dir, frame, now, &mut self.counters)
    }

    /// Sends `frame` to local `port` if its filter lets it in.
    fn deliver(&mut self, out: &mut Vec<Output>, port: PortNo, frame: &[u8], now: Instant) {
        if self.filter(port, Direction::Ingress, frame, now) == Verdict::Pass {
            self.tx(
                out,
                Output::Frame {
                    port,
                    data: frame.to_vec(),
                },
            );
        }
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    /// Applies one version of updates. All or nothing: a bad update leaves the
    /// previous configuration in place. Versions must increase.
    pub fn apply(&mut self, version: u64, updates: &[Update]) -> Result<(), ConfigError> {
        if version <= self.version {
            return Err(ConfigError::StaleVersion {
                have: self.version,
                got: version,
            });
        }
        // Validate first against the networks as they will be.
        let mut vnis: BTreeSet<u32> = self.vrfs.keys().copied().collect();
        for u in updates {
            match u {
                Update::Network { vni, .. } => {
                    vnis.insert(*vni);
                }
                Update::RemoveNetwork { vni } => {
                    vnis.remove(vni);
                }
                Update::Interface(Interface { vni, .. })
                | Update::Remote(RemoteMac { vni, .. })
                    if !vnis.contains(vni) =>
                {
                    return Err(ConfigError::NoNetwork(*vni));
                }
                _ => {}
            }
        }
        for u in updates {
            self.apply_one(u);
        }
        self.version = version;
        Ok(())
    }

    fn apply_one(&mut self, u: &Update) {
        match u {
            Update::Network { vni, flood } => {
                self.vrfs.entry(*vni).or_default().flood = flood.clone();
            }
            Update::RemoveNetwork { vni } => {
                self.vrfs.remove(vni);
                self.ifaces.retain(|_, i| i.vni != *vni);
            }
            Update::Interface(i) => {
                self.remove_interface(i.port);
                if let Some(v) = self.vrfs.get_mut(&i.vni) {
                    v.local.insert(i.port);
                    v.local_macs.insert(i.security.mac, i.port);
                    for ip in &i.security.ips {
                        v.local_arp.insert(*ip, i.security.mac);
                    }
                }
                self.ifaces.insert(i.port, i.clone());
            }
            // The filter is its own update: an interface taken down and
            // up again keeps it.
            Update::RemoveInterface { port } => self.remove_interface(*port),
            Update::Filter { port, filter } => match filter {
                Some(f) => self.firewall.set(*port, f.clone()),
                None => self.firewall.unset(*port),
            },
            Update::GroupMembers { group, addrs } => match addrs {
                Some(a) => self.firewall.set_group(group, a),
                None => self.firewall.unset_group(group),
            },
            Update::Remote(r) => {
                if let Some(v) = self.vrfs.get_mut(&r.vni) {
                    v.add_remote(r);
                }
            }
            Update::RemoveRemote { vni, mac } => {
                if let Some(v) = self.vrfs.get_mut(vni) {
                    v.remove_remote(mac);
                }
            }
        }
    }

    fn remove_interface(&mut self, port: PortNo) {
        let Some(old) = self.ifaces.remove(&port) else {
            return;
        };
        if let Some(v) = self.vrfs.get_mut(&old.vni) {
            v.local.remove(&port);
            if v.local_macs.get(&old.security.mac) == Some(&port) {
                v.local_macs.remove(&old.security.mac);
            }
            for ip in &old.security.ips {
                if v.local_arp.get(ip) == Some(&old.security.mac) {
                    v.local_arp.remove(ip);
                }
            }
        }
    }

    /// The VRF's bridge table, for introspection: MAC → "port N" / "vtep A.B.C.D".
    pub fn bridge_table(&self, vni: u32) -> Vec<(Mac, String)> {
        let Some(v) = self.vrfs.get(&vni) else {
            return Vec::new();
        };
        let macs: BTreeSet<[u8; 6]> = v
            .local_macs
            .keys()
            .chain(v.remotes.keys())
            .map(|m| m.0)
            .collect();
        macs.into_iter()
            .filter_map(|m| {
                let mac = smoltcp::wire::EthernetAddress(m);
                let to = match v.bridge(&mac)? {
                    Dest::Local(p) => format!("port {p}"),
                    Dest::Remote(t) => format!("vtep {t}"),
                };
                Some((mac, to))
            })
            .collect()
    }

    /// The interfaces plugged in, by port, for introspection.
    pub fn interfaces(&self) -> Vec<&Interface> {
        let mut v: Vec<&Interface> = self.ifaces.values().collect();
        v.sort_by_key(|i| i.port);
        v
    }

    /// The interface on a port, if any.
    pub fn interface(&self, port: PortNo) -> Option<&Interface> {
        self.ifaces.get(&port)
    }

    /// The VNIs of the networks (VRFs) present, sorted.
    pub fn vnis(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.vrfs.keys().copied().collect();
        v.sort_unstable();
        v
    }

    /// A network's VTEP flood list, if the network is present.
    pub fn flood_list(&self, vni: u32) -> Option<&[Ipv4Addr]> {
        self.vrfs.get(&vni).map(|v| v.flood.as_slice())
    }

    /// The VRF's IP → MAC table (what proxy ARP answers), sorted by IP: local
    /// interfaces' addresses first, then remote MACs' addresses.
    pub fn arp_table(&self, vni: u32) -> Vec<(Ipv4Addr, Mac)> {
        let Some(v) = self.vrfs.get(&vni) else {
            return Vec::new();
        };
        let ips: BTreeSet<Ipv4Addr> = v
            .local_arp
            .keys()
            .chain(v.remote_arp.keys())
            .copied()
            .collect();
        ips.into_iter()
            .filter_map(|ip| v.arp(&ip).map(|m| (ip, m)))
            .collect()
    }

    fn tx(&mut self, out: &mut Vec<Output>, o: Output) {
        self.counters.tx += 1;
        out.push(o);
    }

    fn on_local(&mut self, now: Instant, port: PortNo, frame: &[u8], out: &mut Vec<Output>) {
        let Some(iface) = self.ifaces.get(&port) else {
            self.counters.drop(DropReason::UnknownPort);
            return;
        };
        if let Err(why) = iface.security.check(frame) {
            self.counters.drop(why);
            return;
        }
        let vni = iface.vni;
        if let Some(lease) = &iface.dhcp {
            match dhcp::respond(frame, self.mac, lease) {
                dhcp::Verdict::NotDhcp => {}
                dhcp::Verdict::Reply(r) => {
                    self.tx(out, Output::Frame { port, data: r });
                    return;
                }
                dhcp::Verdict::Malformed => {
                    self.counters.drop(DropReason::Malformed);
                    return;
                }
                dhcp::Verdict::Ignored => return,
            }
        }
        if self.filter(port, Direction::Egress, frame, now) == Verdict::Drop {
            return;
        }
        let Ok(eth) = EthernetFrame::new_checked(frame) else {
            self.counters.drop(DropReason::Malformed);
            return;
        };
        let Some(vrf) = self.vrfs.get(&vni) else {
            self.counters.drop(DropReason::UnknownVni);
            return;
        };
        // Proxy ARP: answer requests for addresses the VRF knows, never flood them.
        if eth.ethertype() == EthernetProtocol::Arp {
            let Ok(repr) = ArpPacket::new_checked(eth.payload()).and_then(|p| ArpRepr::parse(&p))
            else {
                self.counters.drop(DropReason::Malformed);
                return;
            };
            if let ArpRepr::EthernetIpv4 {
                operation: ArpOperation::Request,
                source_hardware_addr,
                source_protocol_addr,
                target_protocol_addr,
                ..
            } = repr
                && target_protocol_addr != source_protocol_addr
                && let Some(mac) = vrf.arp(&target_protocol_addr)
            {
                let reply = frames::arp(
                    ArpOperation::Reply,
                    source_hardware_addr,
                    mac,
                    target_protocol_addr,
                    source_hardware_addr,
                    source_protocol_addr,
                );
                self.tx(out, Output::Frame { port, data: reply });
                return;
            }
        }
        let dst = eth.dst_addr();
        if frames::is_bum(&dst) {
            let locals: Vec<PortNo> = vrf.local.iter().copied().filter(|p| *p != port).collect();
            let vteps = vrf.flood.clone();
            for p in locals {
                self.deliver(out, p, frame, now);
            }
            if !vteps.is_empty() {
                let encap = vxlan::encap(vni, frame);
                for t in vteps {
                    self.tx(
                        out,
                        Output::Underlay {
                            dst: t,
                            data: encap.clone(),
                        },
                    );
                }
            }
            return;
        }
        match vrf.bridge(&dst) {
            Some(Dest::Local(p)) if p != port => self.deliver(out, p, frame, now),
            Some(Dest::Local(_)) => {}
            Some(Dest::Remote(t)) => self.tx(
                out,
                Output::Underlay {
                    dst: t,
                    data: vxlan::encap(vni, frame),
                },
            ),
            None => self.counters.drop(DropReason::UnknownUnicast),
        }
    }

    fn on_underlay(&mut self, now: Instant, data: &[u8], out: &mut Vec<Output>) {
        let Ok(pkt) = vxlan::Packet::new_checked(data) else {
            self.counters.drop(DropReason::Malformed);
            return;
        };
        let Some(vrf) = self.vrfs.get(&pkt.vni()) else {
            self.counters.drop(DropReason::UnknownVni);
            return;
        };
        let inner = pkt.payload();
        let Some((dst, _src)) = frames::macs(inner) else {
            self.counters.drop(DropReason::Malformed);
            return;
        };
        if frames::is_bum(&dst) {
            // Split horizon: what came from the overlay goes to local ports only.
            let locals: Vec<PortNo> = vrf.local.iter().copied().collect();
            for p in locals {
                self.deliver(out, p, inner, now);
            }
            return;
        }
        match vrf.bridge(&dst) {
            Some(Dest::Local(p)) => self.deliver(out, p, inner, now),
            _ => self.counters.drop(DropReason::UnknownUnicast),
        }
    }
}

impl Pipeline for Vrouter {
    fn process(&mut self, now: Instant, input: Input<'_>, out: &mut Vec<Output>) {
        self.counters.rx += 1;
        match input {
            Input::Frame { port, data } => self.on_local(now, port, data, out),
            Input::Underlay { data, .. } => self.on_underlay(now, data, out),
        }
    }

    fn poll(&mut self, now: Instant, _out: &mut Vec<Output>) -> Option<Instant> {
        self.firewall.expire(now)
    }

    fn counters(&self) -> &Counters {
        &self.counters
    }
}
