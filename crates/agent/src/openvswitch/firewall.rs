//! Security groups as OpenFlow on `br-int` with Open vSwitch's connection
//! tracker (sans-io): the flows of Neutron's `openvswitch` firewall driver,
//! reduced to what a node here needs. `ct()` works in the userspace datapath
//! these nodes run.
//!
//! * every VM port's IP traffic is tagged with its network's local VLAN in
//!   `reg6`, which is also the conntrack zone of that network;
//! * a filtered port's own traffic goes through the tracker and then
//!   [`EGRESS`]: established and related packets pass, invalid ones drop,
//!   new ones pass only when an egress rule allows them (and are committed);
//! * what passes goes to [`FORWARD`]: a packet for a filtered port on this
//!   node goes through the tracker and [`INGRESS`], with that port's ingress
//!   rules, and is output to it; anything else is switched as before
//!   (`NORMAL`);
//! * a packet from the physnet for a filtered port takes the same way in,
//!   its VLAN stripped first;
//! * DHCP replies and IPv6 neighbour and router discovery always reach a
//!   port; DHCP requests and ARP always leave it (as in Neutron).
//!
//! Remote groups are expanded to their member addresses on this node (one
//! flow each). Port ranges become bitmask matches. Rules for protocols whose
//! ports Open vSwitch cannot match (DCCP, UDP-Lite) with a port range admit
//! nothing here: a rule is never widened.

use std::collections::BTreeMap;
use std::net::IpAddr;

use switchyard_dataplane::DropReason;
use switchyard_proto::{FilterRule, Item, Items};

/// A filtered port's outgoing traffic after the tracker.
pub const EGRESS: u8 = 1;
/// Where allowed traffic goes next: a local filtered port, or `NORMAL`.
pub const FORWARD: u8 = 3;
/// A filtered port's incoming traffic after the tracker.
pub const INGRESS: u8 = 4;

/// One filtered VM port on this node.
pub struct Filtered<'a> {
    pub mac: &'a str,
    /// Its OpenFlow port number.
    pub ofport: i64,
    /// Its network's local VLAN: the `reg6` value and the conntrack zone.
    pub lvid: u16,
    pub rules: &'a [FilterRule],
}

/// The member addresses of each remote group this node's filters name
/// (`sgm/` items).
pub fn member_sets(items: &Items) -> BTreeMap<&str, &[(IpAddr, u8)]> {
    items
        .range("sgm/".to_string()..)
        .take_while(|(k, _)| k.starts_with("sgm/"))
        .filter_map(|(_, v)| match &**v {
            Item::GroupMembers { group_id, addrs } => Some((group_id.as_str(), addrs.as_slice())),
            _ => None,
        })
        .collect()
}

/// The action that hands a VM port's allowed traffic on: through the tracker
/// and its egress rules when it is filtered, else straight to [`FORWARD`].
pub fn from_port(lvid: u16, filtered: bool) -> String {
    if filtered {
        format!("load:{lvid}->NXM_NX_REG6[],ct(table={EGRESS},zone={lvid})")
    } else {
        format!("load:{lvid}->NXM_NX_REG6[],resubmit(,{FORWARD})")
    }
}

/// What the firewall's drop flows counted, from `ovs-ofctl dump-flows`
/// of `br-int`: invalid packets (`ct_state=+inv`) and new connections no
/// rule admitted (the tables' default drops).
pub fn drop_counts(dump: &str) -> BTreeMap<DropReason, u64> {
    let mut out = BTreeMap::new();
    for line in dump.lines() {
        let field = |k: &str| {
            line.split([',', ' '])
                .find_map(|f| f.trim().strip_prefix(k))
                .and_then(|v| v.parse::<u64>().ok())
        };
        let (Some(table), Some(n)) = (field("table="), field("n_packets=")) else {
            continue;
        };
        if !line.trim_end().ends_with("actions=drop")
            || !(table == u64::from(EGRESS) || table == u64::from(INGRESS))
        {
            continue;
        }
        let why = if line.contains("ct_state=+inv+trk") {
            DropReason::SgInvalid
        } else if field("priority=") == Some(0) {
            DropReason::SgNoRule
        } else {
            continue;
        };
        *out.entry(why).or_default() += n;
    }
    out
}

/// `[lo, hi]` as value/mask pairs for a 16-bit field (the fewest that cover
/// exactly the range).
pub fn port_masks(lo: u16, hi: u16) -> Vec<(u16, u16)> {
    let mut out = Vec::new();
    let (mut lo, hi) = (u32::from(lo), u32::from(hi));
    while lo <= hi {
        // The largest aligned block starting at `lo` that fits in the range.
        let mut size = if lo == 0 {
            1 << 16
        } else {
            lo & lo.wrapping_neg()
        };
        while lo + size - 1 > hi {
            size >>= 1;
        }
        let mask = (0x1_0000 - size) as u16;
        out.push((lo as u16, mask));
        lo += size;
    }
    out
}

/// The flows of every filtered port, plus the tables' defaults; `segments`
/// maps a local VLAN to (the patch port on `br-int`, the physnet VLAN) for
/// traffic arriving from the physnet.
pub fn flows(
    ports: &[Filtered<'_>],
    groups: &BTreeMap<&str, &[(IpAddr, u8)]>,
    segments: &BTreeMap<u16, (String, u16)>,
) -> Vec<String> {
    let mut out = Vec::new();
    if ports.is_empty() {
        return out;
    }
    for t in [EGRESS, INGRESS] {
        out.push(format!(
            "table={t},priority=100,ct_state=+inv+trk,actions=drop"
        ));
        out.push(format!("table={t},priority=0,actions=drop"));
    }
    out.push(format!(
        "table={EGRESS},priority=90,ct_state=+est+trk,actions=resubmit(,{FORWARD})"
    ));
    out.push(format!(
        "table={EGRESS},priority=90,ct_state=+rel+trk,actions=resubmit(,{FORWARD})"
    ));
    out.push(format!("table={FORWARD},priority=0,actions=NORMAL"));
    for p in ports {
        let (of, mac, lvid) = (p.ofport, p.mac, p.lvid);
        let to_vm = format!("reg6={lvid},dl_dst={mac}");
        for l3 in ["ip", "ipv6"] {
            out.push(format!(
                "table={FORWARD},priority=10,{to_vm},{l3},actions=ct(table={INGRESS},zone={lvid})"
            ));
            if let Some((patch, seg)) = segments.get(&lvid) {
                out.push(format!(
                    "priority=4,in_port=\"{patch}\",dl_vlan={seg},dl_dst={mac},{l3},actions=strip_vlan,load:{lvid}->NXM_NX_REG6[],ct(table={INGRESS},zone={lvid})"
                ));
            }
        }
        for t in ["+est+trk", "+rel+trk"] {
            out.push(format!(
                "table={INGRESS},priority=90,ct_state={t},{to_vm},actions=output:{of}"
            ));
        }
        // Always in: DHCP replies, neighbour and router discovery.
        out.push(format!(
            "table={INGRESS},priority=95,{to_vm},udp,tp_src=67,tp_dst=68,actions=output:{of}"
        ));
        for t in [134, 135, 136] {
            out.push(format!(
                "table={INGRESS},priority=95,{to_vm},icmp6,icmp_type={t},actions=output:{of}"
            ));
        }
        for r in p.rules {
            let (table, base, action) = if r.ingress {
                (
                    INGRESS,
                    to_vm.clone(),
                    format!("ct(commit,zone={lvid}),output:{of}"),
                )
            } else {
                (
                    EGRESS,
                    format!("in_port={of}"),
                    format!("ct(commit,zone={lvid}),resubmit(,{FORWARD})"),
                )
            };
            for m in rule_matches(r, groups) {
                out.push(format!(
                    "table={table},priority=50,ct_state=+new+trk,{base},{m},actions={action}"
                ));
            }
        }
    }
    out
}

/// The match fields of one rule, one string per flow (none: the rule admits
/// nothing on this node).
fn rule_matches(r: &FilterRule, groups: &BTreeMap<&str, &[(IpAddr, u8)]>) -> Vec<String> {
    let v6 = r.ipv6;
    let proto = match (r.protocol, v6) {
        (None, false) => "ip".to_string(),
        (None, true) => "ipv6".to_string(),
        (Some(6), false) => "tcp".into(),
        (Some(6), true) => "tcp6".into(),
        (Some(17), false) => "udp".into(),
        (Some(17), true) => "udp6".into(),
        (Some(132), false) => "sctp".into(),
        (Some(132), true) => "sctp6".into(),
        (Some(1), false) => "icmp".into(),
        (Some(58), true) => "icmp6".into(),
        (Some(n), false) => format!("ip,nw_proto={n}"),
        (Some(n), true) => format!("ipv6,nw_proto={n}"),
    };
    let l4: Vec<String> = match (r.protocol, r.port_min, r.port_max) {
        (_, None, None) => vec![String::new()],
        (Some(6 | 17 | 132), lo, hi) => {
            let lo = lo.unwrap_or(1);
            let hi = hi.unwrap_or(lo);
            port_masks(lo, hi)
                .into_iter()
                .map(|(v, m)| {
                    if m == 0xffff {
                        format!(",tp_dst={v}")
                    } else {
                        format!(",tp_dst=0x{v:04x}/0x{m:04x}")
                    }
                })
                .collect()
        }
        (Some(1 | 58), t, c) => {
            let mut s = String::new();
            if let Some(t) = t {
                s.push_str(&format!(",icmp_type={t}"));
            }
            if let Some(c) = c {
                s.push_str(&format!(",icmp_code={c}"));
            }
            vec![s]
        }
        // Ports of a protocol OpenFlow cannot match: admit nothing.
        _ => return Vec::new(),
    };
    let field = match (r.ingress, v6) {
        (true, false) => "nw_src",
        (false, false) => "nw_dst",
        (true, true) => "ipv6_src",
        (false, true) => "ipv6_dst",
    };
    let remotes: Vec<String> = match (&r.remote_group, &r.remote) {
        (Some(g), _) => groups
            .get(g.as_str())
            .copied()
            .unwrap_or_default()
            .iter()
            .filter(|(a, _)| a.is_ipv6() == v6)
            .map(|(a, len)| format!(",{field}={a}/{len}"))
            .collect(),
        (None, None) => vec![String::new()],
        (None, Some(prefixes)) => prefixes
            .iter()
            .filter(|(a, _)| a.is_ipv6() == v6)
            .map(|(a, len)| format!(",{field}={a}/{len}"))
            .collect(),
    };
    let mut out = Vec::new();
    for a in &remotes {
        for p in &l4 {
            out.push(format!("{proto}{p}{a}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn covers(masks: &[(u16, u16)], x: u16) -> bool {
        masks.iter().any(|(v, m)| x & m == *v)
    }

    #[test]
    fn drop_flows_counters_become_drop_reasons() {
        let dump = "OFPST_FLOW reply (OF1.3) (xid=0x2):
 cookie=0x0, duration=3.1s, table=0, n_packets=9, n_bytes=694, priority=9,in_port=5 actions=drop
 cookie=0x0, duration=3.1s, table=1, n_packets=1, n_bytes=60, priority=100,ct_state=+inv+trk actions=drop
 cookie=0x0, duration=3.1s, table=1, n_packets=4, n_bytes=300, priority=0 actions=drop
 cookie=0x0, duration=3.1s, table=4, n_packets=2, n_bytes=148, priority=100,ct_state=+inv+trk actions=drop
 cookie=0x0, duration=3.1s, table=4, n_packets=7, n_bytes=500, priority=0 actions=drop
 cookie=0x0, duration=3.1s, table=4, n_packets=3, n_bytes=98, priority=90,ct_state=+est+trk,reg6=0x3,dl_dst=fa:16:3e:00:00:01 actions=output:5
";
        let c = drop_counts(dump);
        assert_eq!(c.get(&DropReason::SgInvalid), Some(&3));
        assert_eq!(c.get(&DropReason::SgNoRule), Some(&11));
        assert_eq!(c.len(), 2);
        assert!(drop_counts("garbage\n table=x n_packets=y").is_empty());
    }

    #[test]
    fn port_ranges_become_exact_masks() {
        assert_eq!(port_masks(22, 22), vec![(22, 0xffff)]);
        assert_eq!(port_masks(0, 65535), vec![(0, 0)]);
        for (lo, hi) in [
            (1, 1023),
            (1000, 1999),
            (8080, 8090),
            (0, 7),
            (65000, 65535),
        ] {
            let m = port_masks(lo, hi);
            for x in 0..=u16::MAX {
                assert_eq!(covers(&m, x), (lo..=hi).contains(&x), "{lo}-{hi} at {x}");
            }
        }
        // At most two blocks per bit of the range: a rule stays a handful of flows.
        assert!(port_masks(1, 65534).len() <= 32);
    }

    fn rule(ingress: bool, protocol: Option<u8>, ports: (Option<u16>, Option<u16>)) -> FilterRule {
        FilterRule {
            ingress,
            ipv6: false,
            protocol,
            port_min: ports.0,
            port_max: ports.1,
            remote: None,
            remote_group: None,
        }
    }

    #[test]
    fn rules_become_committing_flows_in_their_direction() {
        let mut ssh = rule(true, Some(6), (Some(22), Some(22)));
        ssh.remote = Some(vec![("203.0.113.0".parse().expect("ip"), 24)]);
        let mut peers = rule(true, None, (None, None));
        peers.remote = Some(Vec::new());
        peers.remote_group = Some("g".into());
        let rules = vec![
            ssh,
            peers,
            rule(false, None, (None, None)),
            rule(true, Some(1), (Some(8), None)),
            rule(true, Some(33), (Some(5), Some(6))),
        ];
        let members = [
            ("10.0.0.4".parse().expect("ip"), 32),
            ("fd00::4".parse().expect("ip"), 128),
        ];
        let groups = BTreeMap::from([("g", &members[..])]);
        let segs = BTreeMap::from([(3u16, ("int-br-phys".to_string(), 100u16))]);
        let f = flows(
            &[Filtered {
                mac: "fa:16:3e:00:00:01",
                ofport: 5,
                lvid: 3,
                rules: &rules,
            }],
            &groups,
            &segs,
        );
        let has = |s: &str| f.iter().any(|x| x == s);
        let to_vm = "reg6=3,dl_dst=fa:16:3e:00:00:01";
        assert!(
            has(&format!(
                "table=4,priority=50,ct_state=+new+trk,{to_vm},tcp,tp_dst=22,nw_src=203.0.113.0/24,actions=ct(commit,zone=3),output:5"
            )),
            "{f:#?}"
        );
        assert!(
            has(&format!(
                "table=4,priority=50,ct_state=+new+trk,{to_vm},ip,nw_src=10.0.0.4/32,actions=ct(commit,zone=3),output:5"
            )),
            "{f:#?}"
        );
        assert!(has(
            "table=1,priority=50,ct_state=+new+trk,in_port=5,ip,actions=ct(commit,zone=3),resubmit(,3)"
        ));
        assert!(has(&format!(
            "table=4,priority=50,ct_state=+new+trk,{to_vm},icmp,icmp_type=8,actions=ct(commit,zone=3),output:5"
        )));
        // DCCP ports cannot be matched: that rule admits nothing.
        assert!(!f.iter().any(|x| x.contains("nw_proto=33")));
        // The IPv6 member is not used by an IPv4 rule.
        assert!(!f.iter().any(|x| x.contains("fd00::4")));
        assert!(has(
            "priority=4,in_port=\"int-br-phys\",dl_vlan=100,dl_dst=fa:16:3e:00:00:01,ip,actions=strip_vlan,load:3->NXM_NX_REG6[],ct(table=4,zone=3)"
        ));
        assert!(has("table=4,priority=100,ct_state=+inv+trk,actions=drop"));
        assert!(has(&format!(
            "table=4,priority=90,ct_state=+est+trk,{to_vm},actions=output:5"
        )));
        assert!(flows(&[], &groups, &segs).is_empty());
    }
}
