//! The agent's introspection: a [`NodeState`] read from what the node runs.
//!
//! Interfaces come from the pipeline (vRouter interfaces, OVS access ports,
//! SR-IOV VFs) joined with the agent's port map for their Neutron ids; a port
//! the agent holds a local port for but whose interface the pipeline lacks is
//! listed as `DOWN`. Network tables (flood lists, bridge and ARP tables) and
//! counters are the pipeline's own. Nothing here changes any state.

use std::collections::{BTreeMap, BTreeSet};

use switchyard_dataplane::frames::Mac;
use switchyard_dataplane::{Counters, Pipeline, PortNo};
use switchyard_proto::introspect::{STATUS_ACTIVE, STATUS_DOWN};
use switchyard_proto::{
    ArpEntry, Attachment, BridgeEntry, CounterState, InterfaceState, Item, NetworkTables,
    NodeState, RouterState,
};

use crate::{Dataplane, NodeAgent};

/// A MAC as the southbound writes it: lowercase `aa:bb:cc:dd:ee:ff`.
fn mac_string(m: &Mac) -> String {
    switchyard_dataplane::frames::mac_serde::format_mac(m)
}

fn bridge_entries(table: Vec<(Mac, String)>) -> Vec<BridgeEntry> {
    table
        .into_iter()
        .map(|(m, points_to)| BridgeEntry {
            mac: mac_string(&m),
            points_to,
        })
        .collect()
}

fn arp_entries(table: Vec<(std::net::Ipv4Addr, Mac)>) -> Vec<ArpEntry> {
    table
        .into_iter()
        .map(|(ip, m)| ArpEntry {
            ip,
            mac: mac_string(&m),
        })
        .collect()
}

fn counter_state(c: &Counters) -> CounterState {
    CounterState {
        rx: c.rx,
        tx: c.tx,
        not_learned: c.not_learned,
        drops: c
            .drops
            .iter()
            .map(|(why, n)| {
                // The dataplane's serde name (snake_case) is the stable one.
                let name = match serde_json::to_value(why) {
                    Ok(serde_json::Value::String(s)) => s,
                    _ => format!("{why:?}"),
                };
                (name, *n)
            })
            .collect(),
    }
}

fn vif_type(a: &Attachment) -> &'static str {
    match a {
        Attachment::Vrouter { .. } => "vrouter",
        Attachment::Ovs { .. } => "ovs",
        Attachment::HwVeb { .. } => "hw_veb",
        Attachment::Router { .. } => "other",
    }
}

impl NodeAgent {
    /// What this node runs: its interfaces, per-network tables and counters.
    pub fn introspect(&self) -> NodeState {
        NodeState {
            host: self.host.clone(),
            role: self.role,
            version: self.version,
            interfaces: self.interface_states(),
            networks: self.network_tables(),
            counters: {
                let mut c = self.pipeline_counters().clone();
                for (why, n) in &self.datapath_drops {
                    *c.drops.entry(*why).or_default() += n;
                }
                counter_state(&c)
            },
            routers: self.router_states(),
            nat_connections: match &self.dataplane {
                Dataplane::Gateway(g) => Some(g.nat_connections()),
                _ => None,
            },
        }
    }

    /// The routers this node runs, from the router items it applied (the
    /// gateway accepted them all-or-nothing with their version).
    fn router_states(&self) -> Vec<RouterState> {
        fn of<'a>(by: &'a mut BTreeMap<String, RouterState>, r: &str) -> &'a mut RouterState {
            by.entry(r.to_string()).or_insert_with(|| RouterState {
                router: r.to_string(),
                interfaces: Vec::new(),
                snat: None,
                floating_ips: Vec::new(),
                routes: Vec::new(),
            })
        }
        let mut by: BTreeMap<String, RouterState> = BTreeMap::new();
        for (k, item) in &self.items {
            match &**item {
                Item::RouterInterface {
                    router,
                    vni,
                    ip,
                    prefix_len,
                    mac,
                } => {
                    let id = k.strip_prefix("rif/").unwrap_or(k);
                    of(&mut by, router)
                        .interfaces
                        .push(format!("{id} {ip}/{prefix_len} vni {vni} {mac}"));
                }
                Item::Snat {
                    router,
                    external_ip,
                    ..
                } => of(&mut by, router).snat = Some(*external_ip),
                Item::FloatingIp {
                    router,
                    external_ip,
                    internal_ip,
                    ..
                } => of(&mut by, router)
                    .floating_ips
                    .push(format!("{external_ip} -> {internal_ip}")),
                Item::Route {
                    router,
                    destination,
                    prefix_len,
                    nexthop,
                } => of(&mut by, router)
                    .routes
                    .push(format!("{destination}/{prefix_len} via {nexthop}")),
                _ => {}
            }
        }
        by.into_values().collect()
    }

    fn pipeline_counters(&self) -> &Counters {
        match &self.dataplane {
            Dataplane::Vrouter(p) => p.counters(),
            Dataplane::Ovs(p) => p.counters(),
            Dataplane::Sriov(p) => p.counters(),
            Dataplane::Gateway(p) => p.counters(),
        }
    }

    /// The desired interface item of a Neutron port (as last applied).
    fn iface_item(&self, port_id: &str) -> Option<&Item> {
        self.items.get(&format!("iface/{port_id}")).map(|v| &**v)
    }

    fn interface_states(&self) -> Vec<InterfaceState> {
        let ids: BTreeMap<PortNo, &str> =
            self.ports.iter().map(|(id, p)| (*p, id.as_str())).collect();
        let id_of = |p: PortNo| ids.get(&p).copied().unwrap_or_default().to_string();
        let mut out: Vec<InterfaceState> = Vec::new();
        match &self.dataplane {
            Dataplane::Vrouter(v) => {
                for i in v.interfaces() {
                    out.push(InterfaceState {
                        port_id: id_of(i.port),
                        local_port: i.port,
                        mac: mac_string(&i.security.mac),
                        ips: i.security.ips.clone(),
                        vif_type: "vrouter".into(),
                        vlan: None,
                        vni: Some(i.vni),
                        status: STATUS_ACTIVE.into(),
                        port_security: i.security.enabled,
                        plugged: false,
                    });
                }
            }
            Dataplane::Ovs(o) => {
                for a in o.access_ports() {
                    out.push(InterfaceState {
                        port_id: id_of(a.port),
                        local_port: a.port,
                        mac: mac_string(&a.security.mac),
                        ips: a.security.ips.clone(),
                        vif_type: "ovs".into(),
                        vlan: Some(a.vlan),
                        vni: None,
                        status: STATUS_ACTIVE.into(),
                        port_security: a.security.enabled,
                        plugged: false,
                    });
                }
            }
            Dataplane::Sriov(s) => {
                for vf in s.vfs() {
                    let port_id = id_of(vf.port);
                    // A VF knows no IPs; they are the applied item's.
                    let ips = match self.iface_item(&port_id) {
                        Some(Item::Interface { ips, .. }) => ips.clone(),
                        _ => Vec::new(),
                    };
                    out.push(InterfaceState {
                        port_id,
                        local_port: vf.port,
                        mac: mac_string(&vf.mac),
                        ips,
                        vif_type: "hw_veb".into(),
                        vlan: Some(vf.vlan),
                        vni: None,
                        status: STATUS_ACTIVE.into(),
                        port_security: vf.spoof_check,
                        plugged: false,
                    });
                }
            }
            Dataplane::Gateway(_) => {}
        }
        // Ports the agent holds a local port for that the pipeline lacks.
        let present: BTreeSet<PortNo> = out.iter().map(|i| i.local_port).collect();
        for (id, port) in &self.ports {
            if present.contains(port) {
                continue;
            }
            if let Some(Item::Interface {
                mac,
                ips,
                port_security,
                attachment,
                ..
            }) = self.iface_item(id)
            {
                let (vlan, vni) = match attachment {
                    Attachment::Vrouter { vni } => (None, Some(*vni)),
                    Attachment::Ovs { vlan, .. } | Attachment::HwVeb { vlan, .. } => {
                        (Some(*vlan), None)
                    }
                    Attachment::Router { vni, .. } => (None, Some(*vni)),
                };
                out.push(InterfaceState {
                    port_id: id.clone(),
                    local_port: *port,
                    mac: mac.to_ascii_lowercase(),
                    ips: ips.clone(),
                    vif_type: vif_type(attachment).into(),
                    vlan,
                    vni,
                    status: STATUS_DOWN.into(),
                    port_security: *port_security,
                    plugged: false,
                });
            }
        }
        for i in &mut out {
            i.plugged = !i.port_id.is_empty() && self.plugged.contains(&i.port_id);
        }
        out.sort_by_key(|i| i.local_port);
        out
    }

    fn network_tables(&self) -> Vec<NetworkTables> {
        match &self.dataplane {
            Dataplane::Vrouter(v) => v
                .vnis()
                .into_iter()
                .map(|vni| NetworkTables {
                    vni: Some(vni),
                    vlan: None,
                    flood: v.flood_list(vni).unwrap_or_default().to_vec(),
                    bridge: bridge_entries(v.bridge_table(vni)),
                    arp: arp_entries(v.arp_table(vni)),
                })
                .collect(),
            Dataplane::Ovs(o) => {
                let learned = o.fdb().entries();
                let vlans: BTreeSet<u16> = o
                    .access_ports()
                    .iter()
                    .map(|a| a.vlan)
                    .chain(learned.iter().map(|(vlan, _, _)| *vlan))
                    .collect();
                let trunk = o.trunk();
                vlans
                    .into_iter()
                    .map(|vlan| NetworkTables {
                        vni: None,
                        vlan: Some(vlan),
                        flood: Vec::new(),
                        bridge: learned
                            .iter()
                            .filter(|(v, _, _)| *v == vlan)
                            .map(|(_, m, p)| BridgeEntry {
                                mac: mac_string(m),
                                points_to: if Some(*p) == trunk {
                                    format!("trunk port {p}")
                                } else {
                                    format!("port {p}")
                                },
                            })
                            .collect(),
                        arp: Vec::new(),
                    })
                    .collect()
            }
            Dataplane::Sriov(s) => {
                // The embedded switch's MAC table is its VFs' MACs.
                let mut by_vlan: BTreeMap<u16, Vec<(Mac, PortNo)>> = BTreeMap::new();
                for vf in s.vfs() {
                    by_vlan.entry(vf.vlan).or_default().push((vf.mac, vf.port));
                }
                by_vlan
                    .into_iter()
                    .map(|(vlan, mut vfs)| {
                        vfs.sort_by_key(|(m, p)| (m.0, *p));
                        NetworkTables {
                            vni: None,
                            vlan: Some(vlan),
                            flood: Vec::new(),
                            bridge: vfs
                                .into_iter()
                                .map(|(m, p)| BridgeEntry {
                                    mac: mac_string(&m),
                                    points_to: format!("port {p}"),
                                })
                                .collect(),
                            arp: Vec::new(),
                        }
                    })
                    .collect()
            }
            Dataplane::Gateway(g) => g
                .bridge_domains()
                .into_iter()
                .map(|(vni, vlan, flood)| NetworkTables {
                    vni: Some(vni),
                    vlan: Some(vlan),
                    flood: flood.to_vec(),
                    bridge: bridge_entries(g.bridge_table(vni)),
                    arp: arp_entries(g.arp_table(vni)),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_are_lowercase_with_colons() {
        let m = smoltcp::wire::EthernetAddress([0xfa, 0x16, 0x3e, 0x0a, 0xbc, 0x01]);
        assert_eq!(mac_string(&m), "fa:16:3e:0a:bc:01");
    }

    #[test]
    fn drop_reasons_are_snake_case() {
        let mut c = Counters::default();
        c.drop(switchyard_dataplane::DropReason::UnknownPort);
        c.drop(switchyard_dataplane::DropReason::UnknownPort);
        c.drop(switchyard_dataplane::DropReason::SpoofedMac);
        let s = counter_state(&c);
        assert_eq!(s.drops.get("unknown_port"), Some(&2));
        assert_eq!(s.drops.get("spoofed_mac"), Some(&1));
        assert_eq!(s.drops.len(), 2);
    }
}
