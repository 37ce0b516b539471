//! A learning forwarding database: (VLAN, MAC) → port, with ageing. Shared by
//! the OVS bridge and the fabric switch.

use std::collections::HashMap;

use crate::frames::Mac;
use crate::{Duration, Instant, PortNo};

/// Default MAC ageing, as Open vSwitch and most switches use.
pub const DEFAULT_AGEING: Duration = Duration::from_secs(300);
/// Default table size (Open vSwitch's `mac-table-size`): frames with random
/// source MACs cannot grow the table without bound.
pub const DEFAULT_CAPACITY: usize = 8192;

#[derive(Debug)]
pub struct Fdb {
    ageing: Duration,
    capacity: usize,
    entries: HashMap<(u16, Mac), (PortNo, Instant)>,
}

impl Default for Fdb {
    fn default() -> Self {
        Fdb::new(DEFAULT_AGEING, DEFAULT_CAPACITY)
    }
}

impl Fdb {
    pub fn new(ageing: Duration, capacity: usize) -> Self {
        Fdb {
            ageing,
            capacity,
            entries: HashMap::new(),
        }
    }

    /// Records that `mac` on `vlan` was seen on `port` at `now` (a move wins).
    /// Returns false when the table is full and the MAC was not learned.
    pub fn learn(&mut self, vlan: u16, mac: Mac, port: PortNo, now: Instant) -> bool {
        if crate::frames::is_bum(&mac) {
            return true;
        }
        let key = (vlan, mac);
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
            // Make room from what has aged out before refusing.
            let ageing = self.ageing;
            self.entries.retain(|_, (_, seen)| now - *seen < ageing);
            if self.entries.len() >= self.capacity {
                return false;
            }
        }
        self.entries.insert(key, (port, now));
        true
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

    /// Forgets a MAC in every VLAN (its port was deleted elsewhere).
    pub fn flush_mac(&mut self, mac: &Mac) {
        self.entries.retain(|(_, m), _| m != mac);
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

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::wire::EthernetAddress;

    #[test]
    fn the_table_is_bounded_and_ages() {
        let mut f = Fdb::new(Duration::from_secs(10), 3);
        let t0 = Instant::from_secs(0);
        for i in 0..3u8 {
            assert!(f.learn(1, EthernetAddress([2, 0, 0, 0, 0, i]), 1, t0));
        }
        // Full: a new MAC is not learned, a known one is refreshed.
        assert!(!f.learn(1, EthernetAddress([2, 0, 0, 0, 0, 9]), 1, t0));
        assert!(f.learn(1, EthernetAddress([2, 0, 0, 0, 0, 0]), 2, t0));
        assert_eq!(
            f.lookup(1, &EthernetAddress([2, 0, 0, 0, 0, 0]), t0),
            Some(2)
        );
        // Once entries age out there is room again.
        let later = Instant::from_secs(11);
        assert!(f.learn(1, EthernetAddress([2, 0, 0, 0, 0, 9]), 1, later));
        assert_eq!(f.len(), 1);
    }
}
