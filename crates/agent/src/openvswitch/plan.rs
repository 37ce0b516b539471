//! What Open vSwitch should hold for a node's state (sans-io): given the
//! node's interface items and the interfaces OVSDB reports, the VLAN tag of
//! each VM port on `br-int`, the OpenFlow tables of `br-int` and of each
//! physnet bridge, and which ports are up. As Neutron's OVS agent does it:
//!
//! * every network (physnet, VLAN) gets a **local VLAN** on `br-int`,
//!   allocated here and kept while a port uses it; VM ports are access ports
//!   of it (`Port.tag`), or of the dead VLAN 4095 while administratively down;
//! * `br-int` and each physnet bridge are joined by a patch pair
//!   (`int-BR` / `phy-BR`); frames from the physnet bridge have their
//!   segmentation VLAN rewritten to the local one, frames towards it the
//!   other way, and anything else arriving over the patch is dropped;
//! * a VM port with port security may send only from its MAC and addresses
//!   (its allowed address pairs too), plus DHCP requests; everything else
//!   from it is dropped;
//! * a VM port with security groups (`sg/` items) is filtered with
//!   connection tracking ([`super::firewall`]).
//!
//! A VM port is found by `external_ids:iface-id` = its Neutron port id, as
//! os-vif sets it, and is up once OVS gave it an OpenFlow port number.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use switchyard_proto::{Attachment, FilterRule, Item, Items, Pair};

use super::firewall::{self, Filtered};

/// The VLAN Neutron's OVS agent parks administratively down ports on.
pub const DEAD_VLAN: u16 = 4095;

/// One row of OVSDB's Interface table, as the agent sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Iface {
    pub name: String,
    /// The OpenFlow port number; -1 or absent until OVS attached it.
    pub ofport: i64,
    pub iface_id: Option<String>,
}

/// Local VLANs of networks on `br-int`: (physnet, segmentation VLAN) → local VLAN.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lvids(pub BTreeMap<(String, u16), u16>);

impl Lvids {
    fn get_or_alloc(&mut self, key: &(String, u16)) -> Option<u16> {
        if let Some(v) = self.0.get(key) {
            return Some(*v);
        }
        let used: BTreeSet<u16> = self.0.values().copied().collect();
        let free = (1..DEAD_VLAN).find(|v| !used.contains(v))?;
        self.0.insert(key.clone(), free);
        Some(free)
    }
}

/// What OVS should hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// VM port (OVSDB port name) → its tag and the network it is on.
    pub tags: BTreeMap<String, (u16, Option<(String, u16)>)>,
    /// Bridge → its OpenFlow table, one `ovs-ofctl` flow per line.
    pub flows: BTreeMap<String, Vec<String>>,
    /// Neutron ports whose device is on `br-int` with an OpenFlow port.
    pub up: BTreeSet<String>,
}

/// The patch port names of physnet bridge `br`: (on br-int, on br).
pub fn patch_names(br: &str) -> (String, String) {
    let cut = |p: &str| format!("{p}{br}").chars().take(15).collect::<String>();
    (cut("int-"), cut("phy-"))
}

struct VmPort<'a> {
    port_id: &'a str,
    mac: &'a str,
    ips: &'a [Ipv4Addr],
    pairs: &'a [Pair],
    port_security: bool,
    admin_up: bool,
    physnet: &'a str,
    vlan: u16,
}

/// Port `id`'s security-group rules, when it has a filter.
fn filter_rules<'a>(items: &'a Items, id: &str) -> Option<&'a [FilterRule]> {
    match items.get(&format!("sg/{id}")).map(|v| &**v) {
        Some(Item::PortFilter { rules, .. }) => Some(rules),
        _ => None,
    }
}

fn vm_ports(items: &Items) -> Vec<VmPort<'_>> {
    items
        .iter()
        .filter(|(k, _)| k.starts_with("iface/"))
        .filter_map(|(_, v)| match &**v {
            Item::Interface {
                port_id,
                mac,
                ips,
                pairs,
                port_security,
                admin_up,
                attachment: Attachment::Ovs { vlan, physnet },
                ..
            } => Some(VmPort {
                port_id,
                mac,
                ips,
                pairs,
                port_security: *port_security,
                admin_up: *admin_up,
                physnet,
                vlan: *vlan,
            }),
            _ => None,
        })
        .collect()
}

/// Plans OVS for `items`, given OVSDB's `ifaces`, the physnet → bridge
/// `mappings` and the local VLANs allocated so far (updated: new networks
/// get one, networks no port uses any more give theirs back).
pub fn plan(
    items: &Items,
    ifaces: &[Iface],
    mappings: &BTreeMap<String, String>,
    lvids: &mut Lvids,
) -> Plan {
    let by_id: BTreeMap<&str, &Iface> = ifaces
        .iter()
        .filter_map(|i| i.iface_id.as_deref().map(|id| (id, i)))
        .collect();
    let ports = vm_ports(items);
    let used: BTreeSet<(String, u16)> = ports
        .iter()
        .filter(|p| mappings.contains_key(p.physnet))
        .map(|p| (p.physnet.to_string(), p.vlan))
        .collect();
    lvids.0.retain(|k, _| used.contains(k));
    let mut out = Plan::default();
    let mut int = vec!["priority=0,actions=NORMAL".to_string()];
    for (br, phys_flows) in mappings
        .values()
        .map(|b| (b, vec!["priority=0,actions=NORMAL".to_string()]))
    {
        out.flows.insert(br.clone(), phys_flows);
    }
    for key in &used {
        let Some(lvid) = lvids.get_or_alloc(key) else {
            continue;
        };
        let Some(br) = mappings.get(&key.0) else {
            continue;
        };
        let (int_patch, phy_patch) = patch_names(br);
        let seg = key.1;
        int.push(format!(
            "priority=3,in_port=\"{int_patch}\",dl_vlan={seg},actions=mod_vlan_vid:{lvid},NORMAL"
        ));
        if let Some(f) = out.flows.get_mut(br) {
            f.push(format!(
                "priority=4,in_port=\"{phy_patch}\",dl_vlan={lvid},actions=mod_vlan_vid:{seg},NORMAL"
            ));
        }
    }
    // Once any port here is filtered, every VM port's IP traffic goes by
    // the firewall's forwarding table, so that it reaches a filtered port
    // only through that port's ingress rules.
    let filtering = ports
        .iter()
        .any(|p| p.port_security && p.admin_up && filter_rules(items, p.port_id).is_some());
    let mut segments = BTreeMap::new();
    for (key, lvid) in &lvids.0 {
        if let Some(br) = mappings.get(&key.0) {
            segments.insert(*lvid, (patch_names(br).0, key.1));
        }
    }
    let mut filtered: Vec<Filtered<'_>> = Vec::new();
    for br in mappings.values() {
        let (int_patch, phy_patch) = patch_names(br);
        int.push(format!("priority=2,in_port=\"{int_patch}\",actions=drop"));
        if let Some(f) = out.flows.get_mut(br) {
            f.push(format!("priority=2,in_port=\"{phy_patch}\",actions=drop"));
        }
    }
    for p in &ports {
        let Some(iface) = by_id.get(p.port_id) else {
            continue;
        };
        let lvid = lvids.0.get(&(p.physnet.to_string(), p.vlan)).copied();
        let tag = match (p.admin_up, lvid) {
            (true, Some(l)) => l,
            _ => DEAD_VLAN,
        };
        out.tags.insert(
            iface.name.clone(),
            (tag, Some((p.physnet.to_string(), p.vlan))),
        );
        if iface.ofport <= 0 {
            continue;
        }
        let of = iface.ofport;
        if p.admin_up && lvid.is_some() {
            out.up.insert(p.port_id.to_string());
        }
        let rules = filter_rules(items, p.port_id).filter(|_| p.port_security);
        let ip_action = match (filtering, lvid) {
            (true, Some(l)) => firewall::from_port(l, rules.is_some()),
            _ => "NORMAL".to_string(),
        };
        if let (Some(rules), Some(l), true) = (rules, lvid, p.admin_up) {
            filtered.push(Filtered {
                mac: p.mac,
                ofport: of,
                lvid: l,
                rules,
            });
        }
        if !p.port_security && p.admin_up {
            if filtering {
                for l3 in ["ip", "ipv6"] {
                    int.push(format!("priority=5,in_port={of},{l3},actions={ip_action}"));
                }
            }
            continue;
        }
        if p.admin_up {
            let mut allowed: Vec<(String, String)> = p
                .ips
                .iter()
                .map(|ip| (p.mac.to_string(), ip.to_string()))
                .collect();
            allowed.extend(
                p.pairs
                    .iter()
                    .map(|a| (a.mac.clone(), format!("{}/{}", a.ip, a.prefix_len))),
            );
            for (mac, ip) in allowed {
                int.push(format!(
                    "priority=10,in_port={of},dl_src={mac},arp,arp_spa={ip},arp_sha={mac},actions=NORMAL"
                ));
                int.push(format!(
                    "priority=10,in_port={of},dl_src={mac},ip,nw_src={ip},actions={ip_action}"
                ));
            }
            int.push(format!(
                "priority=10,in_port={of},dl_src={},udp,nw_src=0.0.0.0,tp_src=68,tp_dst=67,actions=NORMAL",
                p.mac
            ));
        }
        int.push(format!("priority=9,in_port={of},actions=drop"));
    }
    int.extend(firewall::flows(
        &filtered,
        &firewall::member_sets(items),
        &segments,
    ));
    int.sort();
    int.dedup();
    for f in out.flows.values_mut() {
        f.sort();
    }
    out.flows.insert("br-int".to_string(), int);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_proto::Attachment;

    fn iface_item(id: &str, mac: &str, ip: &str, vlan: u16, security: bool, up: bool) -> Item {
        Item::Interface {
            port_id: id.into(),
            mac: mac.into(),
            ips: vec![ip.parse().expect("ip")],
            pairs: vec![],
            port_security: security,
            admin_up: up,
            attachment: Attachment::Ovs {
                vlan,
                physnet: "physnet1".into(),
            },
            lease: None,
        }
    }

    fn arcs(m: &BTreeMap<String, Item>) -> Items {
        m.iter()
            .map(|(k, v)| (k.clone(), std::sync::Arc::new(v.clone())))
            .collect()
    }

    fn mappings() -> BTreeMap<String, String> {
        BTreeMap::from([("physnet1".to_string(), "br-phys".to_string())])
    }

    #[test]
    fn networks_get_local_vlans_translated_on_the_patch() {
        let mut items = BTreeMap::new();
        items.insert(
            "iface/p1".into(),
            iface_item("p1", "fa:16:3e:00:00:01", "10.0.0.3", 100, true, true),
        );
        items.insert(
            "iface/p2".into(),
            iface_item("p2", "fa:16:3e:00:00:02", "10.1.0.3", 120, false, true),
        );
        let ifaces = vec![
            Iface {
                name: "tapp1".into(),
                ofport: 5,
                iface_id: Some("p1".into()),
            },
            Iface {
                name: "tapp2".into(),
                ofport: -1,
                iface_id: Some("p2".into()),
            },
            Iface {
                name: "tapzz".into(),
                ofport: 7,
                iface_id: Some("unknown".into()),
            },
        ];
        let mut lvids = Lvids::default();
        let plan = plan(&arcs(&items), &ifaces, &mappings(), &mut lvids);
        assert_eq!(lvids.0.len(), 2);
        let l1 = lvids.0[&("physnet1".to_string(), 100)];
        let l2 = lvids.0[&("physnet1".to_string(), 120)];
        assert_ne!(l1, l2);
        assert_eq!(plan.tags["tapp1"].0, l1);
        assert_eq!(plan.tags["tapp2"].0, l2);
        assert!(!plan.tags.contains_key("tapzz"));
        // Only the port OVS attached is up.
        assert_eq!(plan.up, BTreeSet::from(["p1".to_string()]));
        let int = &plan.flows["br-int"];
        assert!(int.contains(&format!(
            "priority=3,in_port=\"int-br-phys\",dl_vlan=100,actions=mod_vlan_vid:{l1},NORMAL"
        )));
        assert!(int.contains(&"priority=2,in_port=\"int-br-phys\",actions=drop".to_string()));
        assert!(
            int.contains(
                &"priority=10,in_port=5,dl_src=fa:16:3e:00:00:01,ip,nw_src=10.0.0.3,actions=NORMAL"
                    .to_string()
            )
        );
        assert!(int.contains(&"priority=9,in_port=5,actions=drop".to_string()));
        let phys = &plan.flows["br-phys"];
        assert!(phys.contains(&format!(
            "priority=4,in_port=\"phy-br-phys\",dl_vlan={l1},actions=mod_vlan_vid:100,NORMAL"
        )));
        // Stable: planning again keeps the same local VLANs.
        let again = super::plan(&arcs(&items), &ifaces, &mappings(), &mut lvids);
        assert_eq!(again, plan);
        // A network no port uses any more gives its local VLAN back.
        items.remove("iface/p2");
        super::plan(&arcs(&items), &ifaces, &mappings(), &mut lvids);
        assert_eq!(lvids.0.len(), 1);
    }

    /// A port with a filter (`sg/`) sends its IP traffic through the
    /// tracker and its egress rules; the others on the node go by the
    /// forwarding table, so they reach it only through its ingress rules,
    /// whose remote group is expanded from the node's `sgm/` item.
    #[test]
    fn a_filtered_port_goes_through_the_tracker_and_its_neighbours_too() {
        let mut items = BTreeMap::new();
        items.insert(
            "iface/p1".into(),
            iface_item("p1", "fa:16:3e:00:00:01", "10.0.0.3", 100, true, true),
        );
        items.insert(
            "iface/p2".into(),
            iface_item("p2", "fa:16:3e:00:00:02", "10.0.0.4", 100, false, true),
        );
        let ifaces = vec![
            Iface {
                name: "tapp1".into(),
                ofport: 5,
                iface_id: Some("p1".into()),
            },
            Iface {
                name: "tapp2".into(),
                ofport: 6,
                iface_id: Some("p2".into()),
            },
        ];
        let bare = plan(&arcs(&items), &ifaces, &mappings(), &mut Lvids::default());
        assert!(!bare.flows["br-int"].iter().any(|f| f.contains("ct(")));
        items.insert(
            "sg/p1".into(),
            Item::PortFilter {
                port_id: "p1".into(),
                rules: vec![switchyard_proto::FilterRule {
                    ingress: true,
                    ipv6: false,
                    protocol: None,
                    port_min: None,
                    port_max: None,
                    remote: Some(Vec::new()),
                    remote_group: Some("g".into()),
                }]
                .into(),
            },
        );
        items.insert(
            "sgm/g".into(),
            Item::GroupMembers {
                group_id: "g".into(),
                addrs: vec![("10.0.0.4".parse().expect("ip"), 32)],
            },
        );
        let mut lvids = Lvids::default();
        let filtered = plan(&arcs(&items), &ifaces, &mappings(), &mut lvids);
        let l = lvids.0[&("physnet1".to_string(), 100)];
        let int = &filtered.flows["br-int"];
        let has = |f: String| assert!(int.contains(&f), "{f} missing from {int:#?}");
        has(format!(
            "priority=10,in_port=5,dl_src=fa:16:3e:00:00:01,ip,nw_src=10.0.0.3,actions=load:{l}->NXM_NX_REG6[],ct(table=1,zone={l})"
        ));
        has(format!(
            "priority=5,in_port=6,ip,actions=load:{l}->NXM_NX_REG6[],resubmit(,3)"
        ));
        has(format!(
            "table=4,priority=50,ct_state=+new+trk,reg6={l},dl_dst=fa:16:3e:00:00:01,ip,nw_src=10.0.0.4/32,actions=ct(commit,zone={l}),output:5"
        ));
        // ARP and DHCP requests still leave without the tracker.
        assert!(
            int.iter()
                .any(|f| f.contains("in_port=5,dl_src=fa:16:3e:00:00:01,arp")
                    && f.ends_with("actions=NORMAL"))
        );
        // Without the port's filter, the node is back to plain switching.
        items.remove("sg/p1");
        assert_eq!(
            plan(&arcs(&items), &ifaces, &mappings(), &mut Lvids::default()),
            bare
        );
    }

    #[test]
    fn a_down_port_is_parked_on_the_dead_vlan_and_drops_everything() {
        let mut items = BTreeMap::new();
        items.insert(
            "iface/p1".into(),
            iface_item("p1", "fa:16:3e:00:00:01", "10.0.0.3", 100, true, false),
        );
        let ifaces = vec![Iface {
            name: "tapp1".into(),
            ofport: 5,
            iface_id: Some("p1".into()),
        }];
        let plan = plan(&arcs(&items), &ifaces, &mappings(), &mut Lvids::default());
        assert_eq!(plan.tags["tapp1"].0, DEAD_VLAN);
        assert!(plan.up.is_empty());
        let int = &plan.flows["br-int"];
        assert!(int.contains(&"priority=9,in_port=5,actions=drop".to_string()));
        assert!(!int.iter().any(|f| f.contains("in_port=5,dl_src")));
    }
}
