//! IPAM: default allocation pools, address validity in a subnet, allocation of
//! free addresses, and EUI-64 addresses for SLAAC subnets.
//!
//! An address is taken exactly when a port record holds it ([`State`] indexes
//! them), and all writes happen under the single state owner, so one address is
//! never handed out twice, whatever the concurrency of requests. The next-fit
//! cursor is only a hint that keeps allocation cheap on large subnets.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Mutex;

use ipnet::IpNet;
use switchyard_model::{IpRange, Mac, State, Subnet};

pub fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u32::from(a) as u128,
        IpAddr::V6(a) => u128::from(a),
    }
}

pub fn from_u128(v: u128, v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(v))
    } else {
        IpAddr::V4(Ipv4Addr::from(v as u32))
    }
}

/// First and last address usable by ports (Neutron's `generate_pools` bounds):
/// IPv4 excludes network and broadcast unless the prefix is /31 or /32; IPv6
/// excludes the subnet-router anycast (network) address.
pub fn usable_bounds(cidr: &IpNet) -> (u128, u128) {
    let net = to_u128(cidr.network());
    let last = to_u128(cidr.broadcast());
    match cidr {
        IpNet::V4(n) if n.prefix_len() >= 31 => (net, last),
        IpNet::V4(_) => (net + 1, last - 1),
        IpNet::V6(n) if n.prefix_len() == 128 => (net, last),
        IpNet::V6(_) => (net + 1, last),
    }
}

/// The pools Neutron makes when none are given: the usable range minus the gateway.
pub fn default_pools(cidr: &IpNet, gateway: Option<IpAddr>) -> Vec<IpRange> {
    let v6 = matches!(cidr, IpNet::V6(_));
    let (lo, hi) = usable_bounds(cidr);
    let mut out = Vec::new();
    let mut push = |a: u128, b: u128| {
        if a <= b {
            out.push(IpRange {
                start: from_u128(a, v6),
                end: from_u128(b, v6),
            });
        }
    };
    match gateway.map(to_u128) {
        Some(g) if g >= lo && g <= hi => {
            if g > lo {
                push(lo, g - 1);
            }
            if g < hi {
                push(g + 1, hi);
            }
        }
        _ => push(lo, hi),
    }
    out
}

/// Whether a port may hold `ip` on this subnet (Neutron's `check_subnet_ip`).
pub fn valid_for_subnet(subnet: &Subnet, ip: IpAddr) -> bool {
    if !subnet.cidr.contains(&ip) {
        return false;
    }
    let (lo, hi) = usable_bounds(&subnet.cidr);
    let v = to_u128(ip);
    v >= lo && v <= hi
}

/// Modified EUI-64 interface address for SLAAC.
pub fn eui64(prefix: &IpNet, mac: &Mac) -> Option<IpAddr> {
    let IpNet::V6(p) = prefix else { return None };
    if p.prefix_len() > 64 {
        return None;
    }
    let m = mac.0;
    let iid: u64 = u64::from_be_bytes([m[0] ^ 0x02, m[1], m[2], 0xff, 0xfe, m[3], m[4], m[5]]);
    let net = u128::from(p.network());
    Some(IpAddr::V6(Ipv6Addr::from(net | iid as u128)))
}

/// Next-fit allocation over a subnet's pools.
#[derive(Debug, Default)]
pub struct Allocator {
    cursor: Mutex<HashMap<String, u128>>,
}

impl Allocator {
    /// A free address of the subnet's pools that is not in `exclude` (addresses
    /// the current request already took), or `None` when they are exhausted.
    pub fn allocate(
        &self,
        st: &State,
        subnet: &Subnet,
        exclude: &HashSet<IpAddr>,
    ) -> Option<IpAddr> {
        let hint = self
            .cursor
            .lock()
            .ok()
            .and_then(|c| c.get(&subnet.id).copied());
        let found = Self::scan(st, subnet, hint, exclude)
            .or_else(|| hint.and_then(|_| Self::scan(st, subnet, None, exclude)));
        if let (Some(ip), Ok(mut c)) = (found, self.cursor.lock()) {
            c.insert(subnet.id.clone(), to_u128(ip).saturating_add(1));
        }
        found
    }

    /// First address at or after `from` (or each pool's start) that is neither
    /// held nor excluded. Walks the held addresses in order alongside the
    /// candidate, so it costs O(held + excluded), never O(pool size).
    fn scan(
        st: &State,
        subnet: &Subnet,
        from: Option<u128>,
        exclude: &HashSet<IpAddr>,
    ) -> Option<IpAddr> {
        let v6 = subnet.ip_version == 6;
        let taken = st.subnet_ips(&subnet.id);
        for pool in &subnet.allocation_pools {
            let (lo, hi) = (to_u128(pool.start), to_u128(pool.end));
            let mut c = match from {
                Some(f) if f > hi => continue,
                Some(f) => f.max(lo),
                None => lo,
            };
            let (start, end) = (from_u128(c, v6), from_u128(hi, v6));
            let mut held = taken
                .into_iter()
                .flat_map(move |t| t.range(start..=end))
                .map(|(k, _)| to_u128(*k))
                .peekable();
            loop {
                while held.next_if(|h| *h < c).is_some() {}
                let is_held = held.peek() == Some(&c);
                if !is_held && !exclude.contains(&from_u128(c, v6)) {
                    return Some(from_u128(c, v6));
                }
                if c >= hi {
                    break;
                }
                c += 1;
            }
        }
        None
    }

    /// Forgets a subnet's cursor (when the subnet is deleted).
    pub fn forget(&self, subnet_id: &str) {
        if let Ok(mut c) = self.cursor.lock() {
            c.remove(subnet_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().expect("test cidr")
    }

    #[test]
    fn default_pools_follow_neutron() {
        let p = default_pools(&net("10.0.0.0/24"), Some("10.0.0.1".parse().expect("ip")));
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].start.to_string(), "10.0.0.2");
        assert_eq!(p[0].end.to_string(), "10.0.0.254");
        let p = default_pools(&net("10.0.0.0/24"), Some("10.0.0.100".parse().expect("ip")));
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].end.to_string(), "10.0.0.99");
        assert_eq!(p[1].start.to_string(), "10.0.0.101");
        let p = default_pools(
            &net("2001:db8::/64"),
            Some("2001:db8::".parse().expect("ip")),
        );
        assert_eq!(p[0].start.to_string(), "2001:db8::1");
        assert_eq!(p[0].end.to_string(), "2001:db8::ffff:ffff:ffff:ffff");
        let p = default_pools(&net("10.0.0.0/31"), None);
        assert_eq!(p[0].start.to_string(), "10.0.0.0");
        assert_eq!(p[0].end.to_string(), "10.0.0.1");
    }

    fn subnet(cidr: &str, pools: &[(&str, &str)]) -> Subnet {
        let now = chrono::DateTime::from_timestamp(0, 0).expect("epoch");
        let cidr = net(cidr);
        Subnet {
            id: "s".into(),
            network_id: "n".into(),
            name: String::new(),
            ip_version: if cidr.addr().is_ipv4() { 4 } else { 6 },
            cidr,
            gateway_ip: None,
            allocation_pools: pools
                .iter()
                .map(|(a, b)| IpRange {
                    start: a.parse().expect("ip"),
                    end: b.parse().expect("ip"),
                })
                .collect(),
            host_routes: vec![],
            dns_nameservers: vec![],
            enable_dhcp: true,
            ipv6_ra_mode: None,
            ipv6_address_mode: None,
            segment_id: None,
            order: 0,
            std: switchyard_model::StdAttrs::new(String::new(), String::new(), vec![], now),
        }
    }

    #[test]
    fn allocation_skips_excluded_walks_pools_and_wraps() {
        let st = State::new();
        let s = subnet(
            "10.0.0.0/24",
            &[("10.0.0.10", "10.0.0.11"), ("10.0.0.20", "10.0.0.20")],
        );
        let a = Allocator::default();
        let mut ex = HashSet::new();
        let mut got = Vec::new();
        while let Some(ip) = a.allocate(&st, &s, &ex) {
            assert!(ex.insert(ip), "{ip} twice");
            got.push(ip.to_string());
        }
        assert_eq!(got, vec!["10.0.0.10", "10.0.0.11", "10.0.0.20"]);
        // The cursor is past the end now; a freed address is found by wrapping.
        ex.remove(&"10.0.0.11".parse::<IpAddr>().expect("ip"));
        assert_eq!(
            a.allocate(&st, &s, &ex).map(|i| i.to_string()).as_deref(),
            Some("10.0.0.11")
        );
    }

    #[test]
    fn pool_ending_at_the_top_of_the_address_space_does_not_overflow() {
        let st = State::new();
        let s = subnet(
            "ffff:ffff:ffff:ffff::/64",
            &[(
                "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe",
                "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            )],
        );
        let a = Allocator::default();
        let mut ex = HashSet::new();
        for _ in 0..2 {
            let ip = a.allocate(&st, &s, &ex).expect("free address");
            ex.insert(ip);
        }
        assert_eq!(a.allocate(&st, &s, &ex), None);
    }

    #[test]
    fn eui64_matches_rfc4291() {
        let mac: Mac = "fa:16:3e:12:34:56".parse().expect("mac");
        let ip = eui64(&net("2001:db8::/64"), &mac).expect("eui64");
        assert_eq!(ip.to_string(), "2001:db8::f816:3eff:fe12:3456");
    }
}
