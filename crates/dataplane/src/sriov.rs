//! An SR-IOV NIC: a physical function on the physnet trunk and virtual functions
//! handed to VMs (`vif_type=hw_veb`). The agent sets each VF's MAC and VLAN; the
//! NIC's embedded switch tags on the way out, untags on the way in, hairpins
//! between VFs on the same VLAN, and drops frames whose source MAC is not the
//! VF's (spoof check). No host switch is in the path.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::frames::{self, Mac};
use crate::wire::vlan;
use crate::{Counters, DropReason, Input, Instant, Output, Pipeline, PortNo};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vf {
    /// The VF's port (its index on the PF).
    pub port: PortNo,
    #[serde(with = "crate::frames::mac_serde")]
    pub mac: Mac,
    pub vlan: u16,
    pub spoof_check: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Update {
    /// The PF's uplink to the physnet.
    Uplink {
        port: PortNo,
    },
    Vf(Vf),
    RemoveVf {
        port: PortNo,
    },
}

#[derive(Debug, Default)]
pub struct SriovNic {
    version: u64,
    uplink: Option<PortNo>,
    vfs: BTreeMap<PortNo, Vf>,
    counters: Counters,
}

impl SriovNic {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn apply(&mut self, version: u64, updates: &[Update]) {
        for u in updates {
            match u {
                Update::Uplink { port } => self.uplink = Some(*port),
                Update::Vf(v) => {
                    self.vfs.insert(v.port, v.clone());
                }
                Update::RemoveVf { port } => {
                    self.vfs.remove(port);
                }
            }
        }
        self.version = version;
    }

    pub fn vfs(&self) -> impl Iterator<Item = &Vf> {
        self.vfs.values()
    }

    /// The VF on a port, if any.
    pub fn vf(&self, port: PortNo) -> Option<&Vf> {
        self.vfs.get(&port)
    }

    /// The PF's uplink, once configured.
    pub fn uplink(&self) -> Option<PortNo> {
        self.uplink
    }

    fn send(&mut self, out: &mut Vec<Output>, port: PortNo, data: Vec<u8>) {
        self.counters.tx += 1;
        out.push(Output::Frame { port, data });
    }

    fn on_vf(&mut self, vf: Vf, frame: &[u8], out: &mut Vec<Output>) {
        let Some((dst, src)) = frames::macs(frame) else {
            return self.counters.drop(DropReason::Malformed);
        };
        if vf.spoof_check && src != vf.mac {
            return self.counters.drop(DropReason::SpoofedMac);
        }
        let peers: Vec<PortNo> = self
            .vfs
            .values()
            .filter(|o| {
                o.port != vf.port && o.vlan == vf.vlan && (frames::is_bum(&dst) || o.mac == dst)
            })
            .map(|o| o.port)
            .collect();
        let hairpin_only = !frames::is_bum(&dst) && !peers.is_empty();
        for p in peers {
            self.send(out, p, frame.to_vec());
        }
        if hairpin_only {
            return;
        }
        match (self.uplink, vlan::push_tag(frame, vf.vlan)) {
            (Some(up), Ok(t)) => self.send(out, up, t),
            _ => self.counters.drop(DropReason::NoRoute),
        }
    }

    fn on_uplink(&mut self, frame: &[u8], out: &mut Vec<Output>) {
        let vid = match vlan::vlan_of(frame) {
            Ok(Some(v)) => v,
            Ok(None) => return self.counters.drop(DropReason::UnknownVlan),
            Err(_) => return self.counters.drop(DropReason::Malformed),
        };
        let Ok(inner) = vlan::pop_tag(frame) else {
            return self.counters.drop(DropReason::Malformed);
        };
        let Some((dst, _)) = frames::macs(&inner) else {
            return self.counters.drop(DropReason::Malformed);
        };
        let targets: Vec<PortNo> = self
            .vfs
            .values()
            .filter(|v| v.vlan == vid && (frames::is_bum(&dst) || v.mac == dst))
            .map(|v| v.port)
            .collect();
        if targets.is_empty() {
            // The embedded switch does not flood unknown unicast to VFs.
            let why = if self.vfs.values().any(|v| v.vlan == vid) {
                DropReason::UnknownUnicast
            } else {
                DropReason::UnknownVlan
            };
            return self.counters.drop(why);
        }
        for p in targets {
            self.send(out, p, inner.clone());
        }
    }
}

impl Pipeline for SriovNic {
    fn process(&mut self, _now: Instant, input: Input<'_>, out: &mut Vec<Output>) {
        self.counters.rx += 1;
        match input {
            Input::Frame { port, data } if Some(port) == self.uplink => self.on_uplink(data, out),
            Input::Frame { port, data } => match self.vfs.get(&port).cloned() {
                Some(vf) => match frames::from_access_port(data) {
                    Ok(f) => self.on_vf(vf, &f, out),
                    Err(why) => self.counters.drop(why),
                },
                None => self.counters.drop(DropReason::UnknownPort),
            },
            Input::Underlay { .. } => self.counters.drop(DropReason::UnknownPort),
        }
    }

    fn counters(&self) -> &Counters {
        &self.counters
    }
}
