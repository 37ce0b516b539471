//! A learning forwarding database: (VLAN, MAC) → port, with ageing. Shared by
//! the OVS bridge and the fabric switch.

use std::collections::HashMap;

use crate::frames::Mac;
use crate::{Duration, Instant, PortNo};

/// Default MAC ageing, as Open vSwitch and most switches use.
pub const DEFAULT_AGEING: Duration = Duration::from_secs(300);

#[derive(Debug)]
pub struct Fdb {
    ageing: Duration,
    entries: HashMap<(u16, Mac), (PortNo, Instant)>,
}

impl Default for Fdb {
    fn default() -> Self {
        Fdb::new(DEFAULT_AGEING)
    }
}

impl Fdb {
    pub fn new(ageing: Duration) -> Self {
        Fdb {
            ageing,
            entries: HashMap::new(),
        }
    }

    /// Records that `mac` on `vlan` was seen on `port` at `now` (a move wins).
    pub fn learn(&mut self, vlan: u16, mac: Mac, port: PortNo, now: Instant) {
        if crate::frames::is_bum(&mac) {
            return;
        }
        self.entries.insert((vlan, mac), (port, now));
    }

    /// Where `mac` on `vlan` lives, if learned and not aged out.
    pub fn lookup(&self, vlan: u16, mac: &Mac, now: Instant) -> Option<PortNo> {
        self.entries
            .get(&(vlan, *mac))
            .filter(|(_, seen)| now - *seen < self.ageing)
            .map(|(p, _)| *p)
    }

    /// Forgets everything learned on a port (when it is removed).
    pub fn flush_port(&mut self, port: PortNo) {
        self.entries.retain(|_, (p, _)| *p != port);
    }

    /// Drops aged-out entries; returns when the next one expires.
    pub fn expire(&mut self, now: Instant) -> Option<Instant> {
        let ageing = self.ageing;
        self.entries.retain(|_, (_, seen)| now - *seen < ageing);
        self.entries.values().map(|(_, seen)| *seen + ageing).min()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// (vlan, mac, port) of every live entry, sorted, for introspection.
    pub fn entries(&self) -> Vec<(u16, Mac, PortNo)> {
        let mut v: Vec<(u16, Mac, PortNo)> = self
            .entries
            .iter()
            .map(|((v, m), (p, _))| (*v, *m, *p))
            .collect();
        v.sort_by_key(|(v, m, p)| (*v, m.0, *p));
        v
    }
}
