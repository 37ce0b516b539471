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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dest {
    Local(PortNo),
    Remote(Ipv4Addr),
}

#[derive(Debug, Default)]
struct Vrf {
    flood: Vec<Ipv4Addr>,
    local: BTreeSet<PortNo>,
    bridge: HashMap<Mac, Dest>,
    arp: HashMap<Ipv4Addr, Mac>,
    /// IPs each remote MAC announced, to withdraw them with it.
    remote_ips: HashMap<Mac, Vec<Ipv4Addr>>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("interface on port {0} names VNI {1}, which has no network")]
    NoNetwork(PortNo, u32),
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
    counters: Counters,
}

impl Vrouter {
    pub fn new(mac: Mac) -> Self {
        Vrouter {
            mac,
            version: 0,
            ifaces: HashMap::new(),
            vrfs: HashMap::new(),
            counters: Counters::default(),
        }
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    /// Applies one version of updates. All or nothing: a bad update leaves the
    /// previous configuration in place.
    pub fn apply(&mut self, version: u64, updates: &[Update]) -> Result<(), ConfigError> {
        if version <= self.version && version != 0 {
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
                Update::Interface(i) if !vnis.contains(&i.vni) => {
                    return Err(ConfigError::NoNetwork(i.port, i.vni));
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
                    v.bridge.insert(i.security.mac, Dest::Local(i.port));
                    for ip in &i.security.ips {
                        v.arp.insert(*ip, i.security.mac);
                    }
                }
                self.ifaces.insert(i.port, i.clone());
            }
            Update::RemoveInterface { port } => self.remove_interface(*port),
            Update::Remote(r) => {
                let v = self.vrfs.entry(r.vni).or_default();
                // A MAC that moved here from a local port stays local until that
                // port is removed: local interfaces win over remote routes.
                if !matches!(v.bridge.get(&r.mac), Some(Dest::Local(_))) {
                    v.bridge.insert(r.mac, Dest::Remote(r.vtep));
                }
                if let Some(old) = v.remote_ips.insert(r.mac, r.ips.clone()) {
                    for ip in old {
                        if v.arp.get(&ip) == Some(&r.mac) {
                            v.arp.remove(&ip);
                        }
                    }
                }
                for ip in &r.ips {
                    v.arp.insert(*ip, r.mac);
                }
            }
            Update::RemoveRemote { vni, mac } => {
                if let Some(v) = self.vrfs.get_mut(vni) {
                    if matches!(v.bridge.get(mac), Some(Dest::Remote(_))) {
                        v.bridge.remove(mac);
                    }
                    for ip in v.remote_ips.remove(mac).unwrap_or_default() {
                        if v.arp.get(&ip) == Some(mac) {
                            v.arp.remove(&ip);
                        }
                    }
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
            if v.bridge.get(&old.security.mac) == Some(&Dest::Local(port)) {
                v.bridge.remove(&old.security.mac);
            }
            for ip in &old.security.ips {
                if v.arp.get(ip) == Some(&old.security.mac) {
                    v.arp.remove(ip);
                }
            }
        }
    }

    /// The VRF's bridge table, for introspection: MAC → "port N" / "vtep A.B.C.D".
    pub fn bridge_table(&self, vni: u32) -> Vec<(Mac, String)> {
        let mut v: Vec<(Mac, String)> = self
            .vrfs
            .get(&vni)
            .map(|v| {
                v.bridge
                    .iter()
                    .map(|(m, d)| {
                        let to = match d {
                            Dest::Local(p) => format!("port {p}"),
                            Dest::Remote(t) => format!("vtep {t}"),
                        };
                        (*m, to)
                    })
                    .collect()
            })
            .unwrap_or_default();
        v.sort_by_key(|(m, _)| m.0);
        v
    }

    fn tx(&mut self, out: &mut Vec<Output>, o: Output) {
        self.counters.tx += 1;
        out.push(o);
    }

    fn on_local(&mut self, port: PortNo, frame: &[u8], out: &mut Vec<Output>) {
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
                && let Some(mac) = vrf.arp.get(&target_protocol_addr)
            {
                let reply = frames::arp(
                    ArpOperation::Reply,
                    source_hardware_addr,
                    *mac,
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
                self.tx(
                    out,
                    Output::Frame {
                        port: p,
                        data: frame.to_vec(),
                    },
                );
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
        match vrf.bridge.get(&dst).copied() {
            Some(Dest::Local(p)) if p != port => self.tx(
                out,
                Output::Frame {
                    port: p,
                    data: frame.to_vec(),
                },
            ),
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

    fn on_underlay(&mut self, data: &[u8], out: &mut Vec<Output>) {
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
                self.tx(
                    out,
                    Output::Frame {
                        port: p,
                        data: inner.to_vec(),
                    },
                );
            }
            return;
        }
        match vrf.bridge.get(&dst).copied() {
            Some(Dest::Local(p)) => self.tx(
                out,
                Output::Frame {
                    port: p,
                    data: inner.to_vec(),
                },
            ),
            _ => self.counters.drop(DropReason::UnknownUnicast),
        }
    }
}

impl Pipeline for Vrouter {
    fn process(&mut self, _now: Instant, input: Input<'_>, out: &mut Vec<Output>) {
        self.counters.rx += 1;
        match input {
            Input::Frame { port, data } => self.on_local(port, data, out),
            Input::Underlay { data, .. } => self.on_underlay(data, out),
        }
    }

    fn counters(&self) -> &Counters {
        &self.counters
    }
}
