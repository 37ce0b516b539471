//! The fabric switch: a VLAN-aware learning L2 switch joining the physnet trunks
//! of OVS and SR-IOV computes and the gateway. Every port is a trunk; untagged
//! frames are not carried.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::fdb::Fdb;
use crate::frames;
use crate::wire::vlan;
use crate::{Counters, DropReason, Input, Instant, Output, Pipeline, PortNo};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Update {
    /// A trunk port; `vlans: None` carries every VLAN.
    Trunk {
        port: PortNo,
        vlans: Option<BTreeSet<u16>>,
    },
    RemoveTrunk {
        port: PortNo,
    },
}

#[derive(Debug, Default)]
pub struct FabricSwitch {
    trunks: BTreeMap<PortNo, Option<BTreeSet<u16>>>,
    fdb: Fdb,
    counters: Counters,
}

impl FabricSwitch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn apply(&mut self, updates: &[Update]) {
        for u in updates {
            match u {
                Update::Trunk { port, vlans } => {
                    // What was learned on the port may sit on VLANs it no longer carries.
                    self.fdb.flush_port(*port);
                    self.trunks.insert(*port, vlans.clone());
                }
                Update::RemoveTrunk { port } => {
                    self.trunks.remove(port);
                    self.fdb.flush_port(*port);
                }
            }
        }
    }

    fn carries(&self, port: PortNo, vid: u16) -> bool {
        self.trunks
            .get(&port)
            .is_some_and(|v| v.as_ref().is_none_or(|s| s.contains(&vid)))
    }

    pub fn fdb(&self) -> &Fdb {
        &self.fdb
    }
}

impl Pipeline for FabricSwitch {
    fn process(&mut self, now: Instant, input: Input<'_>, out: &mut Vec<Output>) {
        self.counters.rx += 1;
        let Input::Frame { port, data } = input else {
            self.counters.drop(DropReason::UnknownPort);
            return;
        };
        if !self.trunks.contains_key(&port) {
            return self.counters.drop(DropReason::UnknownPort);
        }
        let vid = match vlan::vlan_of(data) {
            Ok(Some(v)) => v,
            Ok(None) => return self.counters.drop(DropReason::UnknownVlan),
            Err(_) => return self.counters.drop(DropReason::Malformed),
        };
        if !self.carries(port, vid) {
            return self.counters.drop(DropReason::UnknownVlan);
        }
        let Some((dst, src)) = frames::macs(data) else {
            return self.counters.drop(DropReason::Malformed);
        };
        if !self.fdb.learn(vid, src, port, now) {
            self.counters.not_learned += 1;
        }
        let known = (!frames::is_bum(&dst))
            .then(|| self.fdb.lookup(vid, &dst, now))
            .flatten();
        let targets: Vec<PortNo> = match known {
            Some(p) if p == port => Vec::new(),
            Some(p) => vec![p],
            None => self
                .trunks
                .keys()
                .copied()
                .filter(|p| *p != port && self.carries(*p, vid))
                .collect(),
        };
        for p in targets {
            self.counters.tx += 1;
            out.push(Output::Frame {
                port: p,
                data: data.to_vec(),
            });
        }
    }

    fn poll(&mut self, now: Instant, _out: &mut Vec<Output>) -> Option<Instant> {
        self.fdb.expire(now)
    }

    fn counters(&self) -> &Counters {
        &self.counters
    }
}
