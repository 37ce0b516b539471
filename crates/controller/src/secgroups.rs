//! Security groups as nodes run them: each filtered port's rules (`sg/`),
//! and, once per node, the member addresses of every remote group those
//! rules name (`sgm/{group}`), as Neutron's ipsets and OVN's address sets
//! share them.
//!
//! Sharing is the point. A project's `default` group admits its own
//! members, so with filters carrying member addresses, N members meant N
//! filters of N addresses each, and every VM boot rewrote N filters. Now a
//! filter names the group, and a membership change renders the group's set
//! once and rewrites that one item on the nodes that reference it; no
//! filter changes.
//!
//! [`GroupSets`] is the bookkeeping: per group, how many filters on each
//! node name it (a node holds `sgm/{group}` exactly while that is above
//! zero), and the set as last rendered. It decides what to write; the
//! compiler writes it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use switchyard_model::{RuleDirection, SecurityGroupRule, State, ip_protocol_number};
use switchyard_proto::{FilterRule, Item};

/// The key of group `group`'s member set on a node.
pub fn members_key(group: &str) -> String {
    format!("sgm/{group}")
}

/// A rule as a node's filter runs it: a remote prefix as itself, a remote
/// group by name (its members come in the group's `sgm/` item) with an
/// empty prefix list beside it, which an older agent reads as "no one".
pub fn filter_rule(r: &SecurityGroupRule) -> FilterRule {
    let (remote, remote_group) = match (&r.remote_ip_prefix, &r.remote_group_id) {
        (Some(p), _) => (Some(vec![(p.addr(), p.prefix_len())]), None),
        (None, Some(g)) => (Some(Vec::new()), Some(g.clone())),
        (None, None) => (None, None),
    };
    let port = |p: Option<u32>| p.and_then(|x| u16::try_from(x).ok());
    FilterRule {
        ingress: r.direction == RuleDirection::Ingress,
        ipv6: r.ethertype == "IPv6",
        protocol: r.protocol.as_deref().and_then(ip_protocol_number),
        port_min: port(r.port_range_min),
        port_max: port(r.port_range_max),
        remote,
        remote_group,
    }
}

/// The remote groups a filter item names.
pub fn remote_groups(item: &Item) -> BTreeSet<&str> {
    match item {
        Item::PortFilter { rules, .. } => rules
            .iter()
            .filter_map(|r| r.remote_group.as_deref())
            .collect(),
        _ => BTreeSet::new(),
    }
}

/// Group `group`'s members' addresses: their fixed IPs (/32, /128) and
/// allowed-address-pair prefixes, sorted, without duplicates.
pub fn member_addrs(st: &State, group: &str) -> Vec<(IpAddr, u8)> {
    let mut v = Vec::new();
    for m in st.group_ports(group) {
        let Some(p) = st.ports.get(&m) else {
            continue;
        };
        for ip in &p.fixed_ips {
            let len = if ip.ip_address.is_ipv4() { 32 } else { 128 };
            v.push((ip.ip_address, len));
        }
        for pair in &p.allowed_address_pairs {
            // An address or a CIDR, validated when the port was written.
            let net = pair.ip_address.parse::<ipnet::IpNet>().ok().or_else(|| {
                pair.ip_address
                    .parse::<IpAddr>()
                    .ok()
                    .map(ipnet::IpNet::from)
            });
            if let Some(n) = net {
                v.push((n.addr(), n.prefix_len()));
            }
        }
    }
    v.sort();
    v.dedup();
    v
}

/// One write the compiler makes on a node: `Some` puts the item under the
/// key, `None` removes the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub host: String,
    pub key: String,
    pub item: Option<Item>,
}

/// Which nodes hold which groups' member sets, and the sets.
#[derive(Debug, Default)]
pub struct GroupSets {
    /// Group → node → filters on the node naming the group (never zero).
    refs: HashMap<String, BTreeMap<String, usize>>,
    /// Each referenced group's members as last rendered (the item its
    /// nodes hold).
    sets: HashMap<String, Item>,
}

impl GroupSets {
    /// A filter moved from `old` (node, item) to `new`: the nodes that gain
    /// a group get its set, those whose last filter naming it went lose it.
    pub fn refilter(
        &mut self,
        st: &State,
        old: Option<(&str, &Item)>,
        new: Option<(&str, &Item)>,
        out: &mut Vec<Write>,
    ) {
        fn groups<'a>(f: Option<(&'a str, &'a Item)>) -> (&'a str, BTreeSet<&'a str>) {
            f.map(|(h, i)| (h, remote_groups(i))).unwrap_or_default()
        }
        let (old_host, old_groups) = groups(old);
        let (new_host, new_groups) = groups(new);
        for g in &new_groups {
            if old_host != new_host || !old_groups.contains(g) {
                self.add(st, new_host, g, out);
            }
        }
        for g in &old_groups {
            if old_host != new_host || !new_groups.contains(g) {
                self.remove(old_host, g, out);
            }
        }
    }

    fn add(&mut self, st: &State, host: &str, group: &str, out: &mut Vec<Write>) {
        let hosts = self.refs.entry(group.to_string()).or_default();
        let c = hosts.entry(host.to_string()).or_default();
        *c += 1;
        if *c > 1 {
            return;
        }
        let set = self
            .sets
            .entry(group.to_string())
            .or_insert_with(|| Item::GroupMembers {
                group_id: group.to_string(),
                addrs: member_addrs(st, group),
            });
        out.push(Write {
            host: host.to_string(),
            key: members_key(group),
            item: Some(set.clone()),
        });
    }

    fn remove(&mut self, host: &str, group: &str, out: &mut Vec<Write>) {
        let Some(hosts) = self.refs.get_mut(group) else {
            return;
        };
        let Some(c) = hosts.get_mut(host) else {
            return;
        };
        *c -= 1;
        if *c > 0 {
            return;
        }
        hosts.remove(host);
        if hosts.is_empty() {
            self.refs.remove(group);
            self.sets.remove(group);
        }
        out.push(Write {
            host: host.to_string(),
            key: members_key(group),
            item: None,
        });
    }

    /// `groups`' members may have changed (a port joined or left, or its
    /// addresses changed): each referenced one is rendered again and, if
    /// it changed, written to the nodes that hold it, and only there.
    pub fn refresh<'a>(
        &mut self,
        st: &State,
        groups: impl IntoIterator<Item = &'a String>,
        out: &mut Vec<Write>,
    ) {
        for g in groups {
            let Some(hosts) = self.refs.get(g) else {
                continue;
            };
            let set = Item::GroupMembers {
                group_id: g.clone(),
                addrs: member_addrs(st, g),
            };
            if self.sets.get(g) == Some(&set) {
                continue;
            }
            for h in hosts.keys() {
                out.push(Write {
                    host: h.clone(),
                    key: members_key(g),
                    item: Some(set.clone()),
                });
            }
            self.sets.insert(g.clone(), set);
        }
    }

    /// Every group some node holds.
    pub fn referenced(&self) -> Vec<String> {
        let mut v: Vec<String> = self.refs.keys().cloned().collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(groups: &[&str]) -> Item {
        Item::PortFilter {
            port_id: "p".into(),
            rules: groups
                .iter()
                .map(|g| FilterRule {
                    ingress: true,
                    ipv6: false,
                    protocol: None,
                    port_min: None,
                    port_max: None,
                    remote: None,
                    remote_group: Some(g.to_string()),
                })
                .collect(),
        }
    }

    fn keys(out: &[Write]) -> Vec<(String, String, bool)> {
        out.iter()
            .map(|w| (w.host.clone(), w.key.clone(), w.item.is_some()))
            .collect()
    }

    fn w(host: &str, key: &str, put: bool) -> (String, String, bool) {
        (host.into(), key.into(), put)
    }

    /// A node gets a group's set with its first filter naming it and loses
    /// it with its last; a filter moving nodes moves its references.
    #[test]
    fn sets_are_reference_counted_per_node() {
        let st = State::new();
        let mut s = GroupSets::default();
        let mut out = Vec::new();
        let ab = filter(&["a", "b", "a"]);
        let a = filter(&["a"]);
        s.refilter(&st, None, Some(("n1", &ab)), &mut out);
        assert_eq!(
            keys(&out),
            vec![w("n1", "sgm/a", true), w("n1", "sgm/b", true)]
        );
        out.clear();
        s.refilter(&st, None, Some(("n1", &a)), &mut out);
        assert!(out.is_empty(), "n1 holds a already");
        s.refilter(&st, Some(("n1", &ab)), Some(("n1", &a)), &mut out);
        assert_eq!(keys(&out), vec![w("n1", "sgm/b", false)]);
        out.clear();
        s.refilter(&st, Some(("n1", &a)), Some(("n2", &a)), &mut out);
        assert_eq!(keys(&out), vec![w("n2", "sgm/a", true)], "n1 has another");
        out.clear();
        s.refilter(&st, Some(("n1", &a)), None, &mut out);
        assert_eq!(keys(&out), vec![w("n1", "sgm/a", false)]);
        assert_eq!(s.referenced(), vec!["a".to_string()]);
        out.clear();
        s.refilter(&st, Some(("n2", &a)), None, &mut out);
        assert_eq!(keys(&out), vec![w("n2", "sgm/a", false)]);
        assert!(s.referenced().is_empty() && s.sets.is_empty());
        // Unchanged members write nothing; unreferenced groups are skipped.
        out.clear();
        s.refresh(&st, &["a".to_string()], &mut out);
        assert!(out.is_empty());
    }
}
