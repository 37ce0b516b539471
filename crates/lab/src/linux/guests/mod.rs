//! Guests in Linux mode: a network namespace with the kernel's own stack per
//! guest (`PREFIX-g-NAME`, its NIC `eth0` with the port's MAC, its address by
//! DHCP from switchyard's DHCP service via busybox `udhcpc`; pings are the
//! real `ping`), and beside it the guest's "VMM" namespace (`PREFIX-v-NAME`,
//! what QEMU is to a VM): `eth0`'s peer `nic` on a bridge `br0` with the leg
//! that reaches the node the guest runs on. The node end is plugged as
//! os-vif plugs a VM for the binding's `vif_type`:
//!
//! * `vrouter`: the leg's node end, named like Nova's TAP (`tap` + the port
//!   id's first 11 characters), handed to the vRouter agent, which attaches
//!   to it with an AF_PACKET socket when it appears, as to a QEMU VM's TAP;
//!   it stays in the node, so a restarted agent finds it;
//! * `ovs`: the leg's node end, named like the TAP, added to `br-int` with
//!   os-vif's `external_ids` (`iface-id`, `attached-mac`, `iface-status`,
//!   `vm-uuid`);
//! * `hw_veb`: the VF the SR-IOV agent gave the port (its local port 100 + k
//!   is VF `vfk`), joined to the leg the same way (`vbrk`, `vvbk`): the
//!   emulated NIC lives in the agent's process, so its VF netdevs stay in
//!   the node, where PCI passthrough would hand the VF itself to the VM.
//!
//! Live migration is Nova's sequence on these parts: `pre_live_migration`
//! plugs a second leg on the destination as its binding says and waits for
//! the destination's agent to report the device; the switch-over moves the
//! VMM's bridge from the old leg to the new one (two `ip link` calls, no
//! pause of the guest: an idealised move); the source's plug is removed and
//! the guest announces itself (gratuitous ARP, as QEMU's announce rounds do).
//! The guest's `eth0` never changes: its MAC, address, routes and neighbour
//! entries stay in its kernel.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use switchyard_api::App;

use super::console::{Console, Output};
use super::image::Image;
use super::netns::{self, NetnsError};
use super::qmp::Qmp;
use super::vm::{Vm, VmSpec};

mod qemu;

/// The udhcpc event script: applies the lease as a DHCP client would.
const UDHCPC_SCRIPT: &str = r#"#!/bin/sh
case "$1" in
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/$mask" dev "$interface"
    [ -n "$mtu" ] && ip link set "$interface" mtu "$mtu"
    [ -n "$router" ] && ip route replace default via "${router%% *}" dev "$interface"
    echo "lease $ip/$mask router $router" ;;
esac
exit 0
"#;

#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    #[error("guest name must be 1 to 63 characters of letters, digits, '-', '_' and '.'")]
    BadName,
    #[error("guest {0} already exists")]
    Exists(String),
    #[error("guest {0} not found")]
    NotFound(String),
    #[error("port {0} could not be found")]
    PortNotFound(String),
    #[error("port {0} is not bound (binding:host_id and a successful binding are needed)")]
    NotBound(String),
    #[error("port {0} is already used by guest {1}")]
    PortInUse(String, String),
    #[error("host {0} is not a node of this lab")]
    HostNotInLab(String),
    #[error("vif_type {0} cannot be plugged here")]
    VifType(String),
    #[error("port {port} did not become ACTIVE on {host} within {secs} s")]
    NotPlugged {
        port: String,
        host: String,
        secs: u64,
    },
    #[error("guest {0} got no DHCP lease: {1}")]
    NoLease(String, String),
    #[error("the VF of port {0} is not known to its agent")]
    NoVf(String),
    #[error("guest {0} has no destination plugged on {1} (pre_live_migration first)")]
    NotPrepared(String, String),
    #[error("QEMU for guest {0}: {1}")]
    Vm(String, String),
    #[error("guest {0}'s console: {1}")]
    Console(String, String),
    #[error("live migration of guest {0} failed: {1}; it keeps running on {2}")]
    Migration(String, String, String),
    #[error(transparent)]
    Netns(#[from] NetnsError),
}

/// What runs a guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GuestKind {
    /// A network namespace with the kernel's stack, behind a VMM namespace.
    Netns,
    /// A QEMU VM of the guest image, its NIC a TAP in the node.
    Qemu,
}

/// What QEMU reported of the guest's last live migration.
#[derive(Debug, Clone, Serialize)]
pub struct VmMigration {
    pub from: String,
    pub to: String,
    /// QEMU's `total-time`.
    pub total_ms: u64,
    /// QEMU's `downtime`: the VM paused on the source until it ran on the
    /// destination.
    pub downtime_ms: u64,
}

/// Memory of a QEMU guest.
const VM_MEMORY_MB: u32 = 128;
/// QEMU's `downtime-limit` for a migration: what it aims the final pause at.
const DOWNTIME_LIMIT_MS: u64 = 50;
/// A migration that has not converged by then is cancelled (Nova's
/// `live_migration_completion_timeout`), the VM still on the source.
const MIGRATION_TIMEOUT: Duration = Duration::from_secs(120);
/// From QEMU's start to the guest's console answering (TCG boots in ~3 s;
/// a loaded machine takes longer).
const BOOT_TIMEOUT: Duration = Duration::from_secs(90);

/// Reads a ping stream's output in the VM (busybox `ping`, sequence numbers
/// from 0): `sent N`, then `lost A B` for each run of unanswered requests
/// (numbered from 1), so the answer stays small whatever the stream's length.
const STREAM_AWK: &str = "/ seq=/ { n = $0; sub(/.* seq=/, \"\", n); sub(/ .*/, \"\", n); got[n + 1] = 1 } \
/packets transmitted/ { sent = $1 } \
END { if (sent > 0 && !(sent in got)) sent--; print \"sent \" sent; a = 0; \
for (i = 1; i <= sent + 1; i++) { if (i <= sent && !(i in got)) { if (!a) a = i; continue } \
if (a) { print \"lost \" a \" \" i - 1; a = 0 } } }";

/// A QEMU guest's processes: the VM, and the destination of a migration
/// being prepared.
struct VmSlot {
    vm: Vm,
    pending: Option<Vm>,
    /// One console session at a time (QEMU's serial socket takes one client).
    console: Arc<tokio::sync::Mutex<()>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Guest {
    pub name: String,
    pub kind: GuestKind,
    pub port_id: String,
    pub host: String,
    pub vif_type: String,
    /// The guest's namespace and its NIC there.
    pub netns: String,
    pub dev: String,
    /// The namespace of the guest's VMM (its NIC's backend).
    pub vmm: String,
    pub mac: String,
    pub ip: Option<String>,
    /// The VF it is on (`hw_veb`).
    pub vf: Option<u32>,
    /// A QEMU guest's last live migration, as QEMU reported it.
    pub last_migration: Option<VmMigration>,
    /// The VMM's leg to the node it runs on.
    #[serde(skip)]
    leg: String,
    /// A destination plugged for a live migration, not yet switched to.
    #[serde(skip)]
    pending: Option<Plug>,
    /// The source's plug after a QEMU migration, removed once the port is
    /// active on the destination (Nova unplugs the source after activating).
    #[serde(skip)]
    retired: Option<Plug>,
    /// Legs made so far (each plug gets a new name).
    #[serde(skip)]
    legs: u32,
}

/// A guest's NIC plugged on a node: the node, how, and the VMM's leg there.
#[derive(Debug, Clone)]
struct Plug {
    host: String,
    vif_type: String,
    /// The VMM's leg (a namespace guest) or QEMU's TAP in the node.
    leg: String,
    vf: Option<u32>,
    qemu: bool,
}

/// The controller the lab runs now (a restarted controller is a new one).
pub type AppCell = Arc<std::sync::RwLock<App>>;

/// A ping run's report (the shape of the emulated lab's).
#[derive(Debug, Clone, Serialize)]
pub struct PingResult {
    pub from: String,
    pub target: Ipv4Addr,
    pub interval_ms: u64,
    pub sent: u64,
    pub answered: u64,
    pub rtt_ms: Option<serde_json::Value>,
}

/// A stream's report: what a `ping -i 0.01` saw.
#[derive(Debug, Clone, Serialize)]
pub struct StreamReport {
    pub from: String,
    pub target: Ipv4Addr,
    pub interval_ms: u64,
    pub sent: u64,
    pub answered: u64,
    /// Sequence numbers never answered.
    pub lost: Vec<u64>,
    /// The longest run of unanswered requests × the interval.
    pub outage_ms: u64,
}

/// A running `ping` stream.
struct Stream {
    /// The `ping` process (a namespace guest's); a QEMU guest's runs inside it.
    child: Option<std::process::Child>,
    target: Ipv4Addr,
    interval_ms: u64,
}

#[derive(Clone)]
pub struct Guests {
    app: AppCell,
    inner: Arc<Mutex<BTreeMap<String, Guest>>>,
    streams: Arc<Mutex<BTreeMap<String, Stream>>>,
    prefix: String,
    dir: PathBuf,
    /// Guests are QEMU VMs of this image (else namespaces).
    image: Option<Image>,
    vms: Arc<Mutex<BTreeMap<String, VmSlot>>>,
}

/// Reads a finished `ping` stream's output: (sent, answered seqs).
fn stream_result(out: &str) -> (u64, Vec<u64>) {
    let (sent, _) = ping_counts(out);
    let mut seqs: Vec<u64> = out
        .lines()
        .filter(|l| l.contains("bytes from"))
        .filter_map(|l| l.split("icmp_seq=").nth(1))
        .filter_map(|t| t.split_whitespace().next()?.parse().ok())
        .collect();
    seqs.sort_unstable();
    seqs.dedup();
    (sent, seqs)
}

/// The requests never answered (seq 1..=sent) and the longest gap, in requests.
fn gaps(sent: u64, answered: &[u64]) -> (Vec<u64>, u64) {
    let got: std::collections::BTreeSet<u64> = answered.iter().copied().collect();
    let lost: Vec<u64> = (1..=sent).filter(|s| !got.contains(s)).collect();
    let (mut best, mut run, mut prev) = (0u64, 0u64, 0u64);
    for s in &lost {
        run = if *s == prev + 1 && run > 0 {
            run + 1
        } else {
            1
        };
        prev = *s;
        best = best.max(run);
    }
    (lost, best)
}

fn valid(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// (min, median, max) of the RTTs in `ping`'s per-reply lines.
fn rtts(out: &str) -> Vec<f64> {
    out.lines()
        .filter_map(|l| l.split("time=").nth(1))
        .filter_map(|t| t.split_whitespace().next()?.parse::<f64>().ok())
        .collect()
}

/// "N packets transmitted, M received" from `ping`'s summary.
pub fn ping_counts(out: &str) -> (u64, u64) {
    let line = out
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or("");
    let num = |key: &str| {
        line.split(',')
            .find(|p| p.contains(key))
            .and_then(|p| p.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (num("transmitted"), num("received"))
}

impl Guests {
    pub fn new(prefix: &str, dir: &Path, app: AppCell) -> Self {
        Guests {
            app,
            inner: Arc::default(),
            streams: Arc::default(),
            prefix: prefix.to_string(),
            dir: dir.to_path_buf(),
            image: None,
            vms: Arc::default(),
        }
    }

    /// Guests booted from now on are QEMU VMs of `image`.
    pub fn with_qemu(mut self, image: Image) -> Self {
        self.image = Some(image);
        self
    }

    /// What boots a guest here.
    pub fn kind(&self) -> GuestKind {
        match self.image {
            Some(_) => GuestKind::Qemu,
            None => GuestKind::Netns,
        }
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, VmSlot>> {
        self.vms.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn app(&self) -> App {
        self.app
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Guest>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn list(&self) -> Vec<Guest> {
        self.lock().values().cloned().collect()
    }

    pub fn get(&self, name: &str) -> Result<Guest, GuestError> {
        self.lock()
            .get(name)
            .cloned()
            .ok_or_else(|| GuestError::NotFound(name.to_string()))
    }

    fn port_status(&self, port: &str) -> String {
        self.app()
            .shared
            .read(|_, st| Ok(st.ports.get(port).map(|p| p.status.as_str().to_string())))
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    async fn wait_active(
        &self,
        port: &str,
        host: &str,
        timeout: Duration,
    ) -> Result<(), GuestError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.port_status(port) == "ACTIVE" {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(GuestError::NotPlugged {
                    port: port.to_string(),
                    host: host.to_string(),
                    secs: timeout.as_secs(),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The interface `host`'s agent runs for `port_id`, as it answers now.
    pub async fn device(
        &self,
        host: &str,
        port_id: &str,
    ) -> Option<switchyard_proto::introspect::InterfaceState> {
        let (app, h, p) = (self.app(), host.to_string(), port_id.to_string());
        tokio::task::spawn_blocking(move || {
            let state = app.shared.introspect(&h, Duration::from_secs(3)).ok()?;
            state.interfaces.into_iter().find(|i| i.port_id == p)
        })
        .await
        .ok()
        .flatten()
    }

    /// Waits until `host`'s agent has the device of `port_id` attached;
    /// returns its local port.
    async fn wait_plugged(
        &self,
        host: &str,
        port_id: &str,
        timeout: Duration,
    ) -> Result<u32, GuestError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(i) = self.device(host, port_id).await
                && i.plugged
            {
                return Ok(i.local_port);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(GuestError::NotPlugged {
                    port: port_id.to_string(),
                    host: host.to_string(),
                    secs: timeout.as_secs(),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The binding of `port_id` for `host` (the active one when `host` is
    /// `None`): (host, vif_type, MAC).
    fn binding(
        &self,
        port_id: &str,
        host: Option<&str>,
    ) -> Result<(String, String, String), GuestError> {
        let found = self
            .app()
            .shared
            .read(|_, st| {
                Ok(st.ports.get(port_id).map(|p| {
                    let b = match host {
                        Some(h) => p.binding_for(h),
                        None => Some(p.active_binding()),
                    };
                    (
                        b.map(|b| (b.host.clone(), b.vif_type.clone())),
                        p.mac_address.to_string(),
                    )
                }))
            })
            .ok()
            .flatten()
            .ok_or_else(|| GuestError::PortNotFound(port_id.to_string()))?;
        match found {
            (Some((h, vif)), mac)
                if !h.is_empty() && vif != "unbound" && vif != "binding_failed" =>
            {
                Ok((h, vif, mac))
            }
            _ => Err(GuestError::NotBound(port_id.to_string())),
        }
    }

    /// Boots guest `name` on Neutron port `port_id`, on the node it is bound to.
    pub async fn boot(
        &self,
        name: &str,
        port_id: &str,
        timeout: Duration,
    ) -> Result<Guest, GuestError> {
        if !valid(name) {
            return Err(GuestError::BadName);
        }
        {
            let g = self.lock();
            if g.contains_key(name) {
                return Err(GuestError::Exists(name.to_string()));
            }
            if let Some(o) = g.values().find(|o| o.port_id == port_id) {
                return Err(GuestError::PortInUse(port_id.to_string(), o.name.clone()));
            }
        }
        if let Some(image) = self.image.clone() {
            return self.boot_vm(image, name, port_id, timeout).await;
        }
        let (host, vif_type, mac) = self.binding(port_id, None)?;
        if !netns::list().contains(&super::ns_name(&self.prefix, &host)) {
            return Err(GuestError::HostNotInLab(host));
        }
        let gns = super::ns_name(&self.prefix, &format!("g-{name}"));
        let vns = super::ns_name(&self.prefix, &format!("v-{name}"));
        netns::add(&gns).map_err(|_| GuestError::Exists(name.to_string()))?;
        // The VMM is plumbing, not a host: it speaks no IPv6 of its own.
        let vmm = netns::add(&vns).and_then(|()| {
            netns::exec(
                &vns,
                &[
                    "sh",
                    "-c",
                    "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6; \
                     echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6",
                ],
            )
        });
        if let Err(e) = vmm {
            netns::del(&gns);
            netns::del(&vns);
            return Err(e.into());
        }
        let made = async {
            netns::wire((&vns, "nic", None), (&gns, "eth0", None))?;
            netns::bridge(&vns, "br0")?;
            netns::enslave(&vns, "nic", "br0")?;
            netns::ip_in(&gns, &["link", "set", "eth0", "address", &mac])?;
            let plug = self
                .plug(&host, &vif_type, port_id, &mac, &vns, "l0", timeout)
                .await?;
            if let Err(e) = netns::enslave(&vns, "l0", "br0") {
                self.unplug(port_id, &plug);
                return Err(e.into());
            }
            if let Err(e) = self.wait_active(port_id, &host, timeout).await {
                self.unplug(port_id, &plug);
                return Err(e);
            }
            Ok(plug)
        }
        .await;
        let plug = match made {
            Ok(p) => p,
            Err(e) => {
                netns::del(&gns);
                netns::del(&vns);
                return Err(e);
            }
        };
        let guest = Guest {
            name: name.to_string(),
            kind: GuestKind::Netns,
            port_id: port_id.to_string(),
            host,
            vif_type,
            netns: gns.clone(),
            dev: "eth0".to_string(),
            vmm: vns,
            mac,
            ip: None,
            vf: plug.vf,
            last_migration: None,
            leg: plug.leg,
            pending: None,
            retired: None,
            legs: 1,
        };
        self.lock().insert(name.to_string(), guest);
        match self.dhcp(&gns, "eth0").await {
            Ok(ip) => {
                if let Some(g) = self.lock().get_mut(name) {
                    g.ip = Some(ip);
                }
            }
            Err(e) => tracing::warn!(guest = %name, error = %e, "no DHCP lease yet"),
        }
        self.get(name)
    }

    /// Plugs a VMM leg `leg` (in namespace `vns`, not yet on its bridge) on
    /// `host` for `vif_type`, and waits for the node's agent to have the
    /// device. Nothing is left on the node when it fails.
    #[allow(clippy::too_many_arguments)]
    async fn plug(
        &self,
        host: &str,
        vif_type: &str,
        port_id: &str,
        mac: &str,
        vns: &str,
        leg: &str,
        timeout: Duration,
    ) -> Result<Plug, GuestError> {
        let node = super::ns_name(&self.prefix, host);
        if !netns::list().contains(&node) {
            return Err(GuestError::HostNotInLab(host.to_string()));
        }
        let mut plug = Plug {
            host: host.to_string(),
            vif_type: vif_type.to_string(),
            leg: leg.to_string(),
            vf: None,
            qemu: false,
        };
        let tap = switchyard_agent::linux::tap_name(port_id);
        // The leg's node end, on bridge `br` with the agent's device `dev`.
        let hybrid = |dev: &str, br: &str, node_leg: &str| -> Result<(), GuestError> {
            netns::bridge(&node, br)?;
            netns::enslave(&node, dev, br)?;
            netns::wire((&node, node_leg, None), (vns, leg, None))?;
            netns::enslave(&node, node_leg, br)?;
            Ok(())
        };
        let r = match vif_type {
            "vrouter" => {
                async {
                    // The leg's node end is the VM's interface, named like
                    // Nova's TAP; the agent attaches to it (AF_PACKET), as
                    // to a QEMU VM's TAP.
                    netns::wire((&node, &tap, None), (vns, leg, None))?;
                    self.wait_plugged(host, port_id, timeout).await.map(|_| ())
                }
                .await
            }
            "ovs" => {
                async {
                    netns::wire((&node, &tap, None), (vns, leg, None))?;
                    // The guest's NIC keeps its offloads (TSO, checksum left
                    // to the device), as a virtio NIC does for vhost; the
                    // leg into Open vSwitch has none, so the kernel cuts and
                    // checksums frames before they reach OVS: its userspace
                    // datapath forwards a frame as it is, and would carry
                    // TCP with unfilled checksums to peers that drop it.
                    tx_off(vns, leg)?;
                    self.ovs_add_port(host, &tap, port_id, mac, vns)?;
                    self.wait_plugged(host, port_id, timeout).await.map(|_| ())
                }
                .await
            }
            "hw_veb" => {
                async {
                    let k = self.vf_of(host, port_id, timeout).await?;
                    plug.vf = Some(k);
                    hybrid(&format!("vf{k}"), &format!("vbr{k}"), &format!("vvb{k}"))
                }
                .await
            }
            other => return Err(GuestError::VifType(other.to_string())),
        };
        match r {
            Ok(()) => Ok(plug),
            Err(e) => {
                self.unplug(port_id, &plug);
                Err(e)
            }
        }
    }

    /// The VF `host`'s SR-IOV agent gave `port_id` (its local port 100 + k
    /// is VF `vfk`), once it has.
    async fn vf_of(&self, host: &str, port_id: &str, timeout: Duration) -> Result<u32, GuestError> {
        let local = self.wait_plugged(host, port_id, timeout).await?;
        local
            .checked_sub(switchyard_agent::SRIOV_VFS)
            .ok_or_else(|| GuestError::NoVf(port_id.to_string()))
    }

    /// Nova's `pre_live_migration` for guest `name`: plugs its NIC on `dest`
    /// as the port's binding for `dest` says, and waits for `dest`'s agent
    /// to have the device. Returns its local port there.
    pub async fn prepare_move(
        &self,
        name: &str,
        dest: &str,
        timeout: Duration,
    ) -> Result<u32, GuestError> {
        self.abort_move(name);
        let (g, leg) = {
            let mut all = self.lock();
            let g = all
                .get_mut(name)
                .ok_or_else(|| GuestError::NotFound(name.to_string()))?;
            g.legs += 1;
            (g.clone(), format!("l{}", g.legs - 1))
        };
        let (_, vif_type, _) = self.binding(&g.port_id, Some(dest))?;
        let (plug, local) = match g.kind {
            GuestKind::Qemu => {
                self.vm_prepare_move(&g, dest, &vif_type, g.legs, timeout)
                    .await?
            }
            GuestKind::Netns => {
                let plug = self
                    .plug(dest, &vif_type, &g.port_id, &g.mac, &g.vmm, &leg, timeout)
                    .await?;
                let local = self
                    .device(dest, &g.port_id)
                    .await
                    .map(|i| i.local_port)
                    .unwrap_or_default();
                (plug, local)
            }
        };
        match self.lock().get_mut(name) {
            Some(g) => g.pending = Some(plug),
            None => {
                // Deleted meanwhile.
                self.vm_stop(name);
                self.unplug(&g.port_id, &plug);
                return Err(GuestError::NotFound(name.to_string()));
            }
        }
        Ok(local)
    }

    /// Removes a destination plugged for a migration that will not happen.
    pub fn abort_move(&self, name: &str) {
        let pending = self
            .lock()
            .get_mut(name)
            .and_then(|g| g.pending.take().map(|p| (g.port_id.clone(), p)));
        self.vm_stop_pending(name);
        if let Some((port, plug)) = pending {
            self.unplug(&port, &plug);
        }
    }

    /// The switch-over: a QEMU guest's state moves to the QEMU waiting on
    /// `dest` (QEMU's live migration); a namespace guest's VMM leaves its
    /// leg to the source and takes the one to `dest`. The source's plug goes.
    pub async fn complete_move(&self, name: &str, dest: &str) -> Result<(), GuestError> {
        let (g, plug) = {
            let mut all = self.lock();
            let g = all
                .get_mut(name)
                .ok_or_else(|| GuestError::NotFound(name.to_string()))?;
            match g.pending.take() {
                Some(p) if p.host == dest => (g.clone(), p),
                other => {
                    g.pending = other;
                    return Err(GuestError::NotPrepared(name.to_string(), dest.to_string()));
                }
            }
        };
        if g.kind == GuestKind::Qemu {
            return self.vm_complete_move(&g, plug).await;
        }
        // Off the old leg first: never two ways out at once (a loop through
        // the network for a moment).
        let _ = netns::ip_in(&g.vmm, &["link", "set", &g.leg, "nomaster"]);
        if let Err(e) = netns::enslave(&g.vmm, &plug.leg, "br0") {
            let _ = netns::enslave(&g.vmm, &g.leg, "br0");
            self.unplug(&g.port_id, &plug);
            return Err(e.into());
        }
        let old = Plug {
            host: g.host.clone(),
            vif_type: g.vif_type.clone(),
            leg: g.leg.clone(),
            vf: g.vf,
            qemu: false,
        };
        if let Some(r) = self.lock().get_mut(name) {
            r.host = plug.host.clone();
            r.vif_type = plug.vif_type.clone();
            r.vf = plug.vf;
            r.leg = plug.leg.clone();
        }
        self.unplug(&g.port_id, &old);
        Ok(())
    }

    /// After the port is active on the guest's new node: the guest
    /// announces itself there (QEMU's `announce-self`; a gratuitous ARP from
    /// a namespace guest), so switches that learnt its MAC elsewhere learn
    /// where it is now.
    pub async fn announce(&self, name: &str) -> Result<(), GuestError> {
        let g = self.get(name)?;
        match g.kind {
            GuestKind::Qemu => {
                let r = self.vm_announce(name).await;
                let retired = self.lock().get_mut(name).and_then(|g| g.retired.take());
                if let Some(p) = retired {
                    self.unplug(&g.port_id, &p);
                }
                r
            }
            GuestKind::Netns => {
                if let Some(ip) = g.ip.clone() {
                    announce(&g.netns, &ip);
                }
                Ok(())
            }
        }
    }

    /// Runs one shell command line in guest `name` (a QEMU guest's serial
    /// console; a namespace guest's `sh` in its namespace).
    pub async fn exec(
        &self,
        name: &str,
        command: &str,
        timeout: Duration,
    ) -> Result<Output, GuestError> {
        let g = self.get(name)?;
        if g.kind == GuestKind::Qemu {
            return self.vm_exec(name, command, timeout).await;
        }
        let (ns, cmd) = (g.netns.clone(), command.to_string());
        let run = tokio::task::spawn_blocking(move || {
            let out = std::process::Command::new("timeout")
                .arg(timeout.as_secs().max(1).to_string())
                .args(["ip", "netns", "exec", &ns, "sh", "-c", &cmd])
                .stdin(std::process::Stdio::null())
                .output()
                .map_err(|e| NetnsError::Spawn("sh".into(), e))?;
            let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&out.stderr));
            Ok::<_, NetnsError>(Output {
                status: out.status.code().unwrap_or(-1),
                text,
            })
        });
        run.await
            .map_err(|e| GuestError::Console(name.to_string(), e.to_string()))?
            .map_err(Into::into)
    }

    async fn dhcp(&self, gns: &str, dev: &str) -> Result<String, GuestError> {
        let script = self.dir.join("udhcpc.sh");
        if !script.exists() {
            std::fs::write(&script, UDHCPC_SCRIPT)
                .map_err(|e| GuestError::NoLease(gns.into(), e.to_string()))?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| GuestError::NoLease(gns.into(), e.to_string()))?;
        }
        let (gns2, dev2, s) = (
            gns.to_string(),
            dev.to_string(),
            script.display().to_string(),
        );
        let (ok, out) = tokio::task::spawn_blocking(move || {
            netns::exec(
                &gns2,
                &[
                    "busybox", "udhcpc", "-f", "-q", "-n", "-t", "5", "-T", "1", "-i", &dev2, "-s",
                    &s,
                ],
            )
        })
        .await
        .map_err(|e| GuestError::NoLease(gns.into(), e.to_string()))??;
        let ip = out
            .lines()
            .find_map(|l| l.strip_prefix("lease "))
            .and_then(|l| l.split('/').next())
            .map(str::to_string);
        match (ok, ip) {
            (true, Some(ip)) => Ok(ip),
            _ => Err(GuestError::NoLease(gns.to_string(), out)),
        }
    }

    /// Deletes guest `name`: its namespaces (NIC and VMM) go, and what its
    /// plugs made in their nodes.
    pub fn delete(&self, name: &str) -> Result<(), GuestError> {
        if let Some(mut s) = self
            .streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name)
            && let Some(c) = s.child.as_mut()
        {
            let _ = c.kill();
            let _ = c.wait();
        }
        let g = self
            .lock()
            .remove(name)
            .ok_or_else(|| GuestError::NotFound(name.to_string()))?;
        let qemu = g.kind == GuestKind::Qemu;
        if qemu {
            self.vm_stop(name);
        } else {
            netns::del(&g.netns);
            netns::del(&g.vmm);
        }
        let here = Plug {
            host: g.host.clone(),
            vif_type: g.vif_type.clone(),
            leg: g.leg.clone(),
            vf: g.vf,
            qemu,
        };
        self.unplug(&g.port_id, &here);
        for p in g.pending.iter().chain(&g.retired) {
            self.unplug(&g.port_id, p);
        }
        Ok(())
    }

    /// Removes what a plug made in its node (the VM is gone from there; the
    /// agent sees its device go and reports the port down) and its leg.
    fn unplug(&self, port_id: &str, plug: &Plug) {
        if plug.qemu {
            return self.unplug_tap(port_id, plug);
        }
        let node = super::ns_name(&self.prefix, &plug.host);
        let tap = switchyard_agent::linux::tap_name(port_id);
        match plug.vif_type.as_str() {
            "vrouter" => {
                let _ = netns::ip_in(&node, &["link", "del", &tap]);
            }
            "hw_veb" => {
                if let Some(k) = plug.vf {
                    let _ = netns::ip_in(&node, &["link", "del", &format!("vbr{k}")]);
                    let _ = netns::ip_in(&node, &["link", "del", &format!("vvb{k}")]);
                }
            }
            "ovs" => {
                self.ovs_del_port(&plug.host, &tap);
                let _ = netns::ip_in(&node, &["link", "del", &tap]);
            }
            _ => {}
        }
    }

    /// Starts a ping stream from guest `name` to `target` every `interval_ms`
    /// (the real `ping`, running until [`Guests::stop_stream`]).
    pub async fn start_stream(
        &self,
        name: &str,
        target: Ipv4Addr,
        interval_ms: u64,
    ) -> Result<(), GuestError> {
        let g = self.get(name)?;
        let old = self
            .streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name);
        if let Some(mut c) = old.and_then(|o| o.child) {
            let _ = c.kill();
            let _ = c.wait();
        }
        if g.kind == GuestKind::Qemu {
            // The VM's own `ping`, in its background (one at a time).
            self.vm_start_stream(name, target, interval_ms).await?;
            self.streams
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(
                    name.to_string(),
                    Stream {
                        child: None,
                        target,
                        interval_ms,
                    },
                );
            return Ok(());
        }
        let mut streams = self.streams.lock().unwrap_or_else(PoisonError::into_inner);
        let interval = format!("{:.3}", interval_ms as f64 / 1000.0);
        let child = std::process::Command::new("ip")
            .args([
                "netns", "exec", &g.netns, "ping", "-n", "-i", &interval, "-W", "1",
            ])
            .arg(target.to_string())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| NetnsError::Spawn("ping".into(), e))?;
        streams.insert(
            name.to_string(),
            Stream {
                child: Some(child),
                target,
                interval_ms,
            },
        );
        Ok(())
    }

    /// Stops guest `name`'s stream (as Ctrl-C would: `ping` prints its summary)
    /// and reports it; `None` when none runs.
    pub async fn stop_stream(&self, name: &str) -> Result<Option<StreamReport>, GuestError> {
        let Some(s) = self
            .streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name)
        else {
            return Ok(None);
        };
        let Some(child) = s.child else {
            return self
                .vm_stop_stream(name, s.target, s.interval_ms)
                .await
                .map(Some);
        };
        let out = tokio::task::spawn_blocking(move || -> Result<_, GuestError> {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGINT,
                );
            }
            child
                .wait_with_output()
                .map_err(|e| NetnsError::Spawn("ping".into(), e).into())
        })
        .await
        .map_err(|e| GuestError::Console(name.to_string(), e.to_string()))??;
        let text = String::from_utf8_lossy(&out.stdout);
        let (mut sent, answered) = stream_result(&text);
        // The last request was still in flight when the stream stopped.
        if sent > 0 && !answered.contains(&sent) {
            sent -= 1;
        }
        let (lost, run) = gaps(sent, &answered);
        Ok(Some(StreamReport {
            from: name.to_string(),
            target: s.target,
            interval_ms: s.interval_ms,
            sent,
            answered: answered.len() as u64,
            lost,
            outage_ms: run * s.interval_ms,
        }))
    }

    /// Stops every stream (the lab is going: a process in a removed namespace
    /// would keep it alive).
    pub fn stop_all(&self) {
        let streams =
            std::mem::take(&mut *self.streams.lock().unwrap_or_else(PoisonError::into_inner));
        for mut c in streams.into_values().filter_map(|s| s.child) {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.vm_stop_all();
    }

    /// `count` real pings from guest `name` to `target`, `interval_ms` apart.
    pub async fn ping(
        &self,
        name: &str,
        target: Ipv4Addr,
        count: u64,
        interval_ms: u64,
    ) -> Result<PingResult, GuestError> {
        let g = self.get(name)?;
        if g.kind == GuestKind::Qemu {
            return self.vm_ping(name, target, count, interval_ms).await;
        }
        let interval = format!("{:.3}", interval_ms as f64 / 1000.0);
        let (ns, t, c) = (g.netns.clone(), target.to_string(), count.to_string());
        let (_, out) = tokio::task::spawn_blocking(move || {
            netns::exec(
                &ns,
                &["ping", "-n", "-c", &c, "-i", &interval, "-W", "1", &t],
            )
        })
        .await
        .map_err(|e| GuestError::NoLease(name.into(), e.to_string()))??;
        Ok(ping_result(name, target, interval_ms, &out))
    }
}

/// A ping run's report from `ping`'s output (iputils' or busybox's).
fn ping_result(name: &str, target: Ipv4Addr, interval_ms: u64, out: &str) -> PingResult {
    {
        let (sent, answered) = ping_counts(out);
        let mut r = rtts(out);
        r.sort_by(f64::total_cmp);
        let rtt = (!r.is_empty()).then(|| {
            let median = if r.len() % 2 == 1 {
                r[r.len() / 2]
            } else {
                (r[r.len() / 2 - 1] + r[r.len() / 2]) / 2.0
            };
            serde_json::json!({"min": r[0], "median": median, "max": r[r.len() - 1],
                "avg": r.iter().sum::<f64>() / r.len() as f64})
        });
        PingResult {
            from: name.to_string(),
            target,
            interval_ms,
            sent,
            answered,
            rtt_ms: rtt,
        }
    }
}

/// No transmit offloads on `dev` of `ns`: the kernel segments and checksums
/// what leaves through it (for Open vSwitch's userspace datapath, which
/// forwards a frame as it is).
fn tx_off(ns: &str, dev: &str) -> Result<(), GuestError> {
    let (ok, out) = netns::exec(ns, &["ethtool", "-K", dev, "tx", "off"])?;
    if !ok {
        return Err(NetnsError::Command(format!("ethtool -K {dev} tx off"), out).into());
    }
    Ok(())
}

/// Gratuitous ARP from the guest's NIC (in the background, as QEMU's
/// announce rounds run after a migration): switches that learnt the guest's
/// MAC elsewhere learn where it is now.
fn announce(gns: &str, ip: &str) {
    let (gns, ip) = (gns.to_string(), ip.to_string());
    std::thread::spawn(move || {
        let r = netns::exec(
            &gns,
            &[
                "busybox", "arping", "-U", "-c", "3", "-w", "3", "-I", "eth0", &ip,
            ],
        );
        if let Ok((false, out)) = r {
            tracing::debug!(guest = %gns, %out, "announcing after the move");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::{gaps, ping_counts, rtts, stream_result};

    #[test]
    fn streams_report_what_was_lost_and_the_longest_outage() {
        let out = "64 bytes from 10.0.0.3: icmp_seq=1 ttl=64 time=0.4 ms\n\
            64 bytes from 10.0.0.3: icmp_seq=2 ttl=64 time=0.4 ms\n\
            64 bytes from 10.0.0.3: icmp_seq=6 ttl=64 time=0.4 ms\n\
            64 bytes from 10.0.0.3: icmp_seq=8 ttl=64 time=0.4 ms\n\
            --- 10.0.0.3 ping statistics ---\n\
            8 packets transmitted, 4 received, 50% packet loss, time 70ms\n";
        let (sent, got) = stream_result(out);
        assert_eq!((sent, got.clone()), (8, vec![1, 2, 6, 8]));
        assert_eq!(gaps(sent, &got), (vec![3, 4, 5, 7], 3));
        assert_eq!(gaps(3, &[1, 2, 3]), (vec![], 0));
    }

    #[test]
    fn ping_output_is_read() {
        let out = "PING 10.0.0.3 (10.0.0.3) 56(84) bytes of data.\n\
            64 bytes from 10.0.0.3: icmp_seq=1 ttl=64 time=0.412 ms\n\
            64 bytes from 10.0.0.3: icmp_seq=3 ttl=64 time=1.05 ms\n\n\
            --- 10.0.0.3 ping statistics ---\n\
            3 packets transmitted, 2 received, 33.3333% packet loss, time 2003ms\n";
        assert_eq!(ping_counts(out), (3, 2));
        assert_eq!(rtts(out), vec![0.412, 1.05]);
        assert_eq!(ping_counts("ping: connect: Network is unreachable"), (0, 0));
    }
}
