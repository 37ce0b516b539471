//! switchyard's node agent core: keeps a node's forwarding pipeline in step with
//! the controller.
//!
//! The agent receives [`ToAgent`] messages (a snapshot, then versioned deltas),
//! translates the keyed [`Item`]s into the pipeline's own typed updates, applies
//! them all-or-nothing, and answers [`FromAgent::Ack`] or [`FromAgent::Nack`].
//! A snapshot is applied as the difference from what the node already runs, so
//! a resync after a controller restart leaves unchanged state (and its traffic)
//! alone. The pipeline keeps forwarding with its last state while no controller
//! is connected. Ports named by Neutron id get local port numbers here; the
//! hypervisor plugs VMs into [`NodeAgent::port_of`].
//!
//! The core ([`NodeAgent`]) is sans-io: no sockets or clocks. The [`client`]
//! module is the edge: the controller connection, heartbeats and reconnection.

pub mod client;
mod introspect;
#[cfg(target_os = "linux")]
pub mod linux;
pub mod offload;
pub mod openvswitch;
#[cfg(target_os = "linux")]
mod sys;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use switchyard_dataplane::frames::{Mac, mac_serde::parse_mac};
use switchyard_dataplane::gateway::{self, DhcpPort, Gateway};
use switchyard_dataplane::ovs::{self, AccessPort, OvsBridge};
use switchyard_dataplane::spoof::{AllowedPair, PortSecurity};
use switchyard_dataplane::sriov::{self, SriovNic, Vf};
use switchyard_dataplane::vrouter::{self, RemoteMac, Vrouter};
use switchyard_dataplane::{Counters, Pipeline, PortNo};
use switchyard_proto::{Attachment, Delta, FromAgent, Item, Role, ToAgent};

/// The pipeline a node runs.
pub enum Dataplane {
    Vrouter(Vrouter),
    Ovs(OvsBridge),
    Sriov(SriovNic),
    Gateway(Box<Gateway>),
}

impl Dataplane {
    pub fn pipeline(&mut self) -> &mut dyn Pipeline {
        match self {
            Dataplane::Vrouter(p) => p,
            Dataplane::Ovs(p) => p,
            Dataplane::Sriov(p) => p,
            Dataplane::Gateway(p) => p.as_mut(),
        }
    }

    pub fn counters(&mut self) -> Counters {
        self.pipeline().counters().clone()
    }
}

/// One version's changes in the pipeline's own terms.
enum Updates {
    Vrouter(Vec<vrouter::Update>),
    Ovs(Vec<ovs::Update>),
    Sriov(Vec<sriov::Update>),
    Gateway(Vec<gateway::Update>),
}

/// Local port numbers the agent hands to VM interfaces.
#[derive(Debug, Clone, Copy)]
pub struct PortRange {
    pub first: PortNo,
    pub count: u32,
}

/// The first local port of VM interfaces: vRouter TAPs from 1, OVS ports from
/// 10 (below is the trunk), SR-IOV VFs from 100.
pub const VROUTER_PORTS: PortNo = 1;
pub const OVS_PORTS: PortNo = 10;
pub const SRIOV_VFS: PortNo = 100;

/// A node's pipeline for its role, with the trunk (OVS, SR-IOV uplink, gateway)
/// on `trunk`, and the port range its VM interfaces take.
pub fn pipeline_for(
    role: Role,
    mac: Mac,
    vtep: Option<Ipv4Addr>,
    trunk: PortNo,
    vfs: u32,
) -> Result<(Dataplane, PortRange), String> {
    Ok(match role {
        Role::Vrouter => (
            Dataplane::Vrouter(Vrouter::new(mac)),
            PortRange {
                first: VROUTER_PORTS,
                count: 4096,
            },
        ),
        Role::Ovs => {
            let mut b = OvsBridge::new();
            b.apply(1, &[ovs::Update::Trunk { port: trunk }]);
            (
                Dataplane::Ovs(b),
                PortRange {
                    first: OVS_PORTS,
                    count: 4096,
                },
            )
        }
        Role::Sriov => {
            let mut s = SriovNic::new();
            s.apply(1, &[sriov::Update::Uplink { port: trunk }]);
            (
                Dataplane::Sriov(s),
                PortRange {
                    first: SRIOV_VFS,
                    count: vfs,
                },
            )
        }
        Role::Gateway => {
            let vtep = vtep.ok_or("a gateway needs its VTEP address")?;
            (
                Dataplane::Gateway(Box::new(Gateway::new(trunk, vtep, mac))),
                PortRange { first: 0, count: 0 },
            )
        }
    })
}

pub struct NodeAgent {
    pub host: String,
    pub role: Role,
    version: u64,
    items: switchyard_proto::Items,
    pub dataplane: Dataplane,
    range: PortRange,
    ports: BTreeMap<String, PortNo>,
    /// Versions of the pipeline's own update sequence (independent of the controller's).
    dp_version: u64,
    /// Ports whose device is present on this node (a VM's TAP or VF
    /// plugged), as the hypervisor or the I/O driver reports it.
    plugged: std::collections::BTreeSet<String>,
    /// Ports reported up: device plugged, interface applied and
    /// administratively up (router ports: applied on this gateway).
    up: std::collections::BTreeSet<String>,
    /// Port status changes not reported yet. The session reports them.
    port_status: Vec<(String, bool)>,
    /// Whether a snapshot from the controller has been applied since start.
    synced: bool,
    /// Drops counted by a datapath outside the pipeline, by reason: Open
    /// vSwitch's firewall flows in Linux mode (read from their counters).
    pub datapath_drops: BTreeMap<switchyard_dataplane::DropReason, u64>,
}

fn mac(s: &str) -> Result<Mac, String> {
    parse_mac(s).ok_or_else(|| format!("bad MAC '{s}'"))
}

/// The `{number}/{mac}` tail of a `remote/` or `dhcp/` key.
fn number_and_mac<N: std::str::FromStr>(rest: &str) -> Result<(N, Mac), String> {
    let (n, m) = rest
        .split_once('/')
        .ok_or_else(|| format!("bad key tail '{rest}'"))?;
    Ok((
        n.parse()
            .map_err(|_| format!("bad number in key tail '{rest}'"))?,
        mac(m)?,
    ))
}

fn security(
    mac_s: &str,
    ips: &[Ipv4Addr],
    pairs: &[switchyard_proto::Pair],
    enabled: bool,
) -> Result<PortSecurity, String> {
    Ok(PortSecurity {
        enabled,
        mac: mac(mac_s)?,
        ips: ips.to_vec(),
        pairs: pairs
            .iter()
            .map(|p| {
                Ok(AllowedPair {
                    ip: p.ip,
                    prefix_len: p.prefix_len,
                    mac: mac(&p.mac)?,
                })
            })
            .collect::<Result<_, String>>()?,
    })
}

/// The pipeline update that removes a router-level gateway item.
fn remove_router_item(item: &Item) -> Option<gateway::Update> {
    match item {
        Item::RouterGateway { router, .. } => Some(gateway::Update::RemoveRouterGateway {
            router: router.clone(),
        }),
        Item::Snat { external_ip, .. } => Some(gateway::Update::RemoveSnat {
            external_ip: *external_ip,
        }),
        Item::FloatingIp { external_ip, .. } => Some(gateway::Update::RemoveFloatingIp {
            external_ip: *external_ip,
        }),
        Item::Route {
            router,
            destination,
            prefix_len,
            ..
        } => Some(gateway::Update::RemoveRoute {
            router: router.clone(),
            destination: *destination,
            prefix_len: *prefix_len,
        }),
        _ => None,
    }
}

/// The pipeline update that installs a router-level gateway item.
fn add_router_item(item: &Item) -> Option<gateway::Update> {
    match item {
        Item::RouterGateway { router, ip, .. } => Some(gateway::Update::RouterGateway {
            router: router.clone(),
            ip: *ip,
        }),
        Item::Snat {
            external_ip,
            interfaces,
            ..
        } => Some(gateway::Update::Snat(gateway::Snat {
            router_interface_ids: interfaces.clone(),
            external_ip: *external_ip,
        })),
        Item::FloatingIp {
            external_ip,
            internal_ip,
            interface,
            ..
        } => Some(gateway::Update::FloatingIp(gateway::FloatingIp {
            external_ip: *external_ip,
            internal_ip: *internal_ip,
            router_interface_id: interface.clone(),
        })),
        Item::Route {
            router,
            destination,
            prefix_len,
            nexthop,
        } => Some(gateway::Update::Route {
            router: router.clone(),
            destination: *destination,
            prefix_len: *prefix_len,
            nexthop: *nexthop,
        }),
        _ => None,
    }
}

/// Order of application within one version: containers first, contents after;
/// removals of contents before removals of containers.
fn rank(key: &str) -> u8 {
    if key.starts_with("net/") || key.starts_with("bd/") {
        0
    } else if key.starts_with("snat/") || key.starts_with("fip/") || key.starts_with("route/") {
        // A router's NAT and routes name its interfaces.
        2
    } else {
        1
    }
}

impl NodeAgent {
    pub fn new(host: &str, role: Role, dataplane: Dataplane, range: PortRange) -> Self {
        NodeAgent {
            host: host.to_string(),
            role,
            version: 0,
            items: BTreeMap::new(),
            dataplane,
            range,
            ports: BTreeMap::new(),
            dp_version: 1,
            plugged: std::collections::BTreeSet::new(),
            up: std::collections::BTreeSet::new(),
            port_status: Vec::new(),
            synced: false,
            datapath_drops: BTreeMap::new(),
        }
    }

    /// Whether this agent has applied a snapshot from the controller since
    /// it started: before, what it holds is not the node's state (a
    /// restarted OVS agent must not wipe the flows Open vSwitch still runs).
    pub fn synced(&self) -> bool {
        self.synced
    }

    /// The version of the controller's state this node runs.
    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn items(&self) -> &switchyard_proto::Items {
        &self.items
    }

    /// Port status changes to report: `(port_id, up)`. A VM port is up
    /// while its device is plugged here and this node runs its interface,
    /// administratively up (Neutron's port is then ACTIVE); a router port
    /// while this gateway runs it.
    pub fn take_port_status(&mut self) -> Vec<(String, bool)> {
        std::mem::take(&mut self.port_status)
    }

    /// Every port up now (what [`FromAgent::PortsUp`] reports after a snapshot).
    pub fn ports_up(&self) -> Vec<String> {
        self.up.iter().cloned().collect()
    }

    /// The device of `port_id` appeared (`present`) or went away on this
    /// node. Its local port number stays the port's while the device is
    /// plugged, even if the controller withdraws the interface meanwhile.
    pub fn set_device(&mut self, port_id: &str, present: bool) {
        if present {
            self.plugged.insert(port_id.to_string());
        } else {
            self.plugged.remove(port_id);
            if !self.items.contains_key(&format!("iface/{port_id}")) {
                self.ports.remove(port_id);
            }
        }
        self.refresh_status();
    }

    /// Whether the device of `port_id` is plugged here.
    pub fn is_plugged(&self, port_id: &str) -> bool {
        self.plugged.contains(port_id)
    }

    fn compute_up(&self) -> std::collections::BTreeSet<String> {
        let mut up = std::collections::BTreeSet::new();
        for (k, item) in self.items.range("iface/".to_string().."iface0".to_string()) {
            if let Item::Interface {
                port_id,
                admin_up: true,
                ..
            } = &**item
                && self.plugged.contains(port_id)
                && k.ends_with(port_id.as_str())
            {
                up.insert(port_id.clone());
            }
        }
        // Router ports are this gateway's own devices: up once it runs them.
        for k in self
            .items
            .range("rif/".to_string().."rif0".to_string())
            .map(|(k, _)| k)
        {
            if let Some(id) = k.strip_prefix("rif/") {
                up.insert(id.to_string());
            }
        }
        for item in self
            .items
            .range("gw/".to_string().."gw0".to_string())
            .map(|(_, v)| &**v)
        {
            if let Item::RouterGateway { port_id, .. } = item {
                up.insert(port_id.clone());
            }
        }
        up
    }

    /// Queues the status changes since the last report.
    fn refresh_status(&mut self) {
        let now = self.compute_up();
        for id in now.difference(&self.up) {
            self.port_status.push((id.clone(), true));
        }
        for id in self.up.difference(&now) {
            self.port_status.push((id.clone(), false));
        }
        self.up = now;
    }

    /// The local port a Neutron port is plugged into, once it has one.
    pub fn port_of(&self, port_id: &str) -> Option<PortNo> {
        self.ports.get(port_id).copied()
    }

    /// The hello an agent sends on every (re)connection.
    pub fn hello(&self, configurations: serde_json::Map<String, serde_json::Value>) -> FromAgent {
        FromAgent::Hello {
            host: self.host.clone(),
            role: self.role,
            configurations,
            version: self.version,
        }
    }

    fn alloc_port(&mut self, port_id: &str) -> Result<PortNo, String> {
        if let Some(p) = self.ports.get(port_id) {
            return Ok(*p);
        }
        let used: std::collections::BTreeSet<PortNo> = self.ports.values().copied().collect();
        let p = (self.range.first..self.range.first.saturating_add(self.range.count))
            .find(|p| !used.contains(p))
            .ok_or_else(|| {
                format!(
                    "no free port for {port_id} (all {} in use)",
                    self.range.count
                )
            })?;
        self.ports.insert(port_id.to_string(), p);
        Ok(p)
    }

    /// Handles one message from the controller.
    pub fn handle(&mut self, msg: &ToAgent) -> FromAgent {
        let (version, delta) = match msg {
            ToAgent::Introspect { id } => {
                return FromAgent::Introspection {
                    id: *id,
                    state: Box::new(self.introspect()),
                };
            }
            ToAgent::Snapshot { version, items } => {
                // Only what differs from what runs here is touched.
                let mut d = Delta {
                    version: *version,
                    ..Delta::default()
                };
                for (k, v) in items {
                    if self.items.get(k) != Some(v) {
                        d.upserts.insert(k.clone(), v.clone());
                    }
                }
                for k in self.items.keys() {
                    if !items.contains_key(k) {
                        d.removals.push(k.clone());
                    }
                }
                (*version, d)
            }
            ToAgent::Refused { reason } => {
                // The session ends on a refusal and never sends this answer;
                // it only keeps `handle` total.
                return FromAgent::Nack {
                    version: self.version,
                    error: format!("refused by the controller: {reason}"),
                };
            }
            ToAgent::Delta(d) => {
                if d.version != self.version + 1 {
                    return FromAgent::Nack {
                        version: d.version,
                        error: format!(
                            "expected version {}, got {}; send a snapshot",
                            self.version + 1,
                            d.version
                        ),
                    };
                }
                (d.version, d.clone())
            }
        };
        let snapshot = matches!(msg, ToAgent::Snapshot { .. });
        match self.apply(&delta) {
            Ok(()) => {
                self.version = version;
                self.synced |= snapshot;
                FromAgent::Ack { version }
            }
            Err(error) => FromAgent::Nack { version, error },
        }
    }

    fn apply(&mut self, d: &Delta) -> Result<(), String> {
        let mut ups: Vec<(&String, &Item)> = d.upserts.iter().map(|(k, v)| (k, &**v)).collect();
        ups.sort_by_key(|(k, _)| rank(k));
        let mut rems: Vec<&String> = d.removals.iter().collect();
        rems.sort_by_key(|k| std::cmp::Reverse(rank(k)));
        // Port numbers for new interfaces, released only once the apply succeeded.
        let before_ports = self.ports.clone();
        let result = self.apply_to_pipeline(&ups, &rems);
        match result {
            Ok(()) => {
                for k in &d.removals {
                    if let Some(id) = k.strip_prefix("iface/")
                        && !self.plugged.contains(id)
                    {
                        self.ports.remove(id);
                    }
                    self.items.remove(k);
                }
                for (k, v) in &d.upserts {
                    self.items.insert(k.clone(), v.clone());
                }
                self.refresh_status();
                // Unparsable MACs are skipped: forgetting is an optimisation
                // over ageing, never a reason to refuse a version.
                for m in d.forget.iter().filter_map(|m| parse_mac(m)) {
                    match &mut self.dataplane {
                        Dataplane::Ovs(b) => b.forget_mac(&m),
                        Dataplane::Gateway(g) => g.forget_mac(&m),
                        // vRouters and VFs learn nothing: their tables are
                        // the controller's, already updated by this version.
                        Dataplane::Vrouter(_) | Dataplane::Sriov(_) => {}
                    }
                }
                Ok(())
            }
            Err(e) => {
                self.ports = before_ports;
                Err(e)
            }
        }
    }

    fn apply_to_pipeline(
        &mut self,
        ups: &[(&String, &Item)],
        rems: &[&String],
    ) -> Result<(), String> {
        let updates = match self.role {
            Role::Vrouter => Updates::Vrouter(self.vrouter_updates(ups, rems)?),
            Role::Ovs => Updates::Ovs(self.ovs_updates(ups, rems)?),
            Role::Sriov => Updates::Sriov(self.sriov_updates(ups, rems)?),
            Role::Gateway => Updates::Gateway(self.gateway_updates(ups, rems)?),
        };
        self.dp_version += 1;
        let v = self.dp_version;
        match (&mut self.dataplane, updates) {
            (Dataplane::Vrouter(p), Updates::Vrouter(u)) => {
                p.apply(v, &u).map_err(|e| e.to_string())
            }
            (Dataplane::Gateway(p), Updates::Gateway(u)) => {
                p.apply(v, &u).map_err(|e| e.to_string())
            }
            (Dataplane::Ovs(p), Updates::Ovs(u)) => {
                p.apply(v, &u);
                Ok(())
            }
            (Dataplane::Sriov(p), Updates::Sriov(u)) => {
                p.apply(v, &u);
                Ok(())
            }
            _ => Err(format!(
                "the {:?} role does not match this node's pipeline",
                self.role
            )),
        }
    }

    fn iface_port(&mut self, key: &str) -> Option<PortNo> {
        key.strip_prefix("iface/")
            .and_then(|id| self.ports.get(id).copied())
    }

    fn vrouter_updates(
        &mut self,
        ups: &[(&String, &Item)],
        rems: &[&String],
    ) -> Result<Vec<vrouter::Update>, String> {
        let mut out = Vec::new();
        for k in rems {
            let k = k.as_str();
            if let Some(port) = self.iface_port(k) {
                // The port number may go to another port: its filter goes.
                out.push(vrouter::Update::RemoveInterface { port });
                out.push(vrouter::Update::Filter { port, filter: None });
            } else if let Some(rest) = k.strip_prefix("remote/") {
                let (vni, mac) = number_and_mac(rest)?;
                out.push(vrouter::Update::RemoveRemote { vni, mac });
            } else if let Some(vni) = k.strip_prefix("net/") {
                out.push(vrouter::Update::RemoveNetwork {
                    vni: vni.parse().map_err(|_| "bad vni")?,
                });
            } else if let Some(port) = k
                .strip_prefix("sg/")
                .and_then(|id| self.ports.get(id).copied())
            {
                out.push(vrouter::Update::Filter { port, filter: None });
            } else if let Some(group) = k.strip_prefix("sgm/") {
                out.push(vrouter::Update::GroupMembers {
                    group: group.to_string(),
                    addrs: None,
                });
            }
        }
        for (key, item) in ups {
            match item {
                Item::PortFilter { port_id, rules } => {
                    let port = self.alloc_port(port_id)?;
                    out.push(vrouter::Update::Filter {
                        port,
                        filter: Some(port_filter(rules)),
                    });
                }
                Item::GroupMembers { group_id, addrs } => {
                    out.push(vrouter::Update::GroupMembers {
                        group: members_group(key, group_id)?,
                        addrs: Some(addrs.clone()),
                    });
                }
                Item::Network { vni, flood } => out.push(vrouter::Update::Network {
                    vni: *vni,
                    flood: flood.clone(),
                }),
                Item::Interface {
                    port_id,
                    admin_up: false,
                    attachment: Attachment::Vrouter { .. },
                    ..
                } => {
                    // Down: the device stays allocated, nothing forwards.
                    let port = self.alloc_port(port_id)?;
                    out.push(vrouter::Update::RemoveInterface { port });
                }
                Item::Interface {
                    port_id,
                    mac: m,
                    ips,
                    pairs,
                    port_security,
                    attachment: Attachment::Vrouter { vni },
                    lease: l,
                    ..
                } => {
                    let port = self.alloc_port(port_id)?;
                    out.push(vrouter::Update::Interface(vrouter::Interface {
                        port,
                        vni: *vni,
                        security: security(m, ips, pairs, *port_security)?,
                        dhcp: l.clone(),
                    }));
                }
                Item::RemoteMac {
                    vni,
                    mac: m,
                    ips,
                    vtep,
                } => {
                    out.push(vrouter::Update::Remote(RemoteMac {
                        vni: *vni,
                        mac: mac(m)?,
                        ips: ips.clone(),
                        vtep: *vtep,
                    }));
                }
                other => return Err(format!("a vRouter cannot run {other:?}")),
            }
        }
        Ok(out)
    }

    fn ovs_updates(
        &mut self,
        ups: &[(&String, &Item)],
        rems: &[&String],
    ) -> Result<Vec<ovs::Update>, String> {
        let mut out = Vec::new();
        for k in rems {
            if let Some(port) = self.iface_port(k) {
                out.push(ovs::Update::RemoveAccess { port });
                out.push(ovs::Update::Filter { port, filter: None });
            } else if let Some(port) = k
                .strip_prefix("sg/")
                .and_then(|id| self.ports.get(id).copied())
            {
                out.push(ovs::Update::Filter { port, filter: None });
            } else if let Some(group) = k.strip_prefix("sgm/") {
                out.push(ovs::Update::GroupMembers {
                    group: group.to_string(),
                    addrs: None,
                });
            }
        }
        for (key, item) in ups {
            match item {
                Item::PortFilter { port_id, rules } => {
                    let port = self.alloc_port(port_id)?;
                    out.push(ovs::Update::Filter {
                        port,
                        filter: Some(port_filter(rules)),
                    });
                }
                Item::GroupMembers { group_id, addrs } => {
                    out.push(ovs::Update::GroupMembers {
                        group: members_group(key, group_id)?,
                        addrs: Some(addrs.clone()),
                    });
                }
                Item::Interface {
                    port_id,
                    admin_up: false,
                    attachment: Attachment::Ovs { .. },
                    ..
                } => {
                    // OVS's dead VLAN: the port exists, nothing forwards.
                    let port = self.alloc_port(port_id)?;
                    out.push(ovs::Update::RemoveAccess { port });
                }
                Item::Interface {
                    port_id,
                    mac: m,
                    ips,
                    pairs,
                    port_security,
                    attachment: Attachment::Ovs { vlan, .. },
                    ..
                } => {
                    let port = self.alloc_port(port_id)?;
                    out.push(ovs::Update::Access(AccessPort {
                        port,
                        vlan: *vlan,
                        security: security(m, ips, pairs, *port_security)?,
                    }));
                }
                other => return Err(format!("an OVS bridge cannot run {other:?}")),
            }
        }
        Ok(out)
    }

    fn sriov_updates(
        &mut self,
        ups: &[(&String, &Item)],
        rems: &[&String],
    ) -> Result<Vec<sriov::Update>, String> {
        let mut out = Vec::new();
        for k in rems {
            if let Some(port) = self.iface_port(k) {
                out.push(sriov::Update::RemoveVf { port });
            }
        }
        for (_, item) in ups {
            match item {
                Item::Interface {
                    port_id,
                    admin_up: false,
                    attachment: Attachment::HwVeb { .. },
                    ..
                } => {
                    // A VF whose link is set down.
                    let port = self.alloc_port(port_id)?;
                    out.push(sriov::Update::RemoveVf { port });
                }
                Item::Interface {
                    port_id,
                    mac: m,
                    port_security,
                    attachment: Attachment::HwVeb { vlan, .. },
                    ..
                } => {
                    let port = self.alloc_port(port_id)?;
                    out.push(sriov::Update::Vf(Vf {
                        port,
                        mac: mac(m)?,
                        vlan: *vlan,
                        spoof_check: *port_security,
                    }));
                }
                other => return Err(format!("an SR-IOV NIC cannot run {other:?}")),
            }
        }
        Ok(out)
    }

    fn gateway_updates(
        &mut self,
        ups: &[(&String, &Item)],
        rems: &[&String],
    ) -> Result<Vec<gateway::Update>, String> {
        let mut out = Vec::new();
        for k in rems {
            let k = k.as_str();
            if let Some(rest) = k.strip_prefix("remote/") {
                let (vni, mac) = number_and_mac(rest)?;
                out.push(gateway::Update::RemoveRemoteMac { vni, mac });
            } else if let Some(rest) = k.strip_prefix("dhcp/") {
                let (vlan, mac) = number_and_mac(rest)?;
                out.push(gateway::Update::RemoveDhcpPort { vlan, mac });
            } else if let Some(vni) = k.strip_prefix("bd/") {
                out.push(gateway::Update::RemoveBridgeDomain {
                    vni: vni.parse().map_err(|_| "bad vni")?,
                });
            } else if let Some(id) = k.strip_prefix("rif/") {
                out.push(gateway::Update::RemoveRouterInterface { id: id.to_string() });
            } else if let Some(old) = self.items.get(k) {
                out.extend(remove_router_item(old));
            }
        }
        for (key, item) in ups {
            let key: &str = key.as_str();
            match item {
                Item::BridgeDomain {
                    vni, vlan, flood, ..
                } => {
                    out.push(gateway::Update::BridgeDomain {
                        vlan: *vlan,
                        vni: *vni,
                        flood: flood.clone(),
                    });
                }
                Item::RemoteMac {
                    vni,
                    mac: m,
                    ips,
                    vtep,
                } => {
                    out.push(gateway::Update::RemoteMac(RemoteMac {
                        vni: *vni,
                        mac: mac(m)?,
                        ips: ips.clone(),
                        vtep: *vtep,
                    }));
                }
                Item::DhcpPort {
                    vlan,
                    mac: m,
                    lease: l,
                } => {
                    out.push(gateway::Update::DhcpPort(DhcpPort {
                        vlan: *vlan,
                        mac: mac(m)?,
                        lease: l.clone(),
                    }));
                }
                Item::RouterInterface {
                    router,
                    vni,
                    ip,
                    prefix_len,
                    mac: m,
                } => {
                    let id = key.strip_prefix("rif/").unwrap_or(key).to_string();
                    out.push(gateway::Update::RouterInterface(gateway::RouterInterface {
                        id,
                        router: router.clone(),
                        vni: *vni,
                        ip: *ip,
                        prefix_len: *prefix_len,
                        mac: mac(m)?,
                    }));
                }
                Item::Snat { .. }
                | Item::FloatingIp { .. }
                | Item::Route { .. }
                | Item::RouterGateway { .. } => {
                    // Keyed by address in the pipeline: a changed address
                    // replaces the old rule rather than adding a second one.
                    if let Some(old) = self.items.get(key).map(|v| &**v)
                        && old != *item
                    {
                        out.extend(remove_router_item(old));
                    }
                    out.extend(add_router_item(item));
                }
                other => return Err(format!("a gateway cannot run {other:?}")),
            }
        }
        Ok(out)
    }
}

/// The group an `sgm/{group}` item's set is for: its key's, which its
/// removal will name, so an item naming another group is refused.
fn members_group(key: &str, group_id: &str) -> Result<String, String> {
    match key.strip_prefix("sgm/") {
        Some(g) if g == group_id => Ok(g.to_string()),
        _ => Err(format!("{key} holds the members of group {group_id}")),
    }
}

/// A port's filter as the controller compiled it, as the pipeline runs it.
/// A rule naming a remote group refers to the node's `sgm/` set of it.
fn port_filter(
    rules: &[switchyard_proto::FilterRule],
) -> switchyard_dataplane::secgroup::PortFilter {
    use switchyard_dataplane::secgroup::{Direction, Ethertype, PortFilter, Remote, Rule};
    PortFilter {
        rules: rules
            .iter()
            .map(|r| Rule {
                direction: if r.ingress {
                    Direction::Ingress
                } else {
                    Direction::Egress
                },
                ethertype: if r.ipv6 { Ethertype::V6 } else { Ethertype::V4 },
                protocol: r.protocol,
                port_min: r.port_min,
                port_max: r.port_max,
                remote: match (&r.remote_group, &r.remote) {
                    (Some(g), _) => Remote::Group(g.clone()),
                    (None, None) => Remote::Any,
                    (None, Some(p)) => Remote::Prefixes(p.clone()),
                },
            })
            .collect(),
    }
}
